//! Whether an update's leaf fits an entry: as one entry at its level
//! ([`blockable`]), or already there ([`already`]: nothing to write).

use crate::mm::prot::Leaf;
use crate::mm::pte;
use crate::mm::walker::Entry;
use crate::mm::{is_aligned, level_size};

/// True when `leaf` may be written as one entry at `level` (a valid one
/// only at level 3 in a tree of `pages_only`).
#[inline]
pub(super) fn blockable(leaf: Leaf, level: u8, pages_only: bool) -> bool {
    match leaf {
        Leaf::Invalid(_) => true,
        Leaf::Mapped { pa, .. } => level >= 1 && is_aligned(pa, level_size(level)) && (!pages_only || level == 3),
    }
}

/// Does the existing leaf `e` already hold `new` (given at `start`) over
/// the part of it inside the range? Compared as raw descriptors: every
/// descriptor the engine writes is `pte::encode_in` of its leaf in the
/// tree's encoding (`fwb`: [`Stage2::fwb`]).
#[inline]
pub(super) fn already(e: &Entry, start: u64, new: Leaf, fwb: bool) -> bool {
    let at_base = match new {
        Leaf::Invalid(_) => new,
        Leaf::Mapped { pa, attrs, state } => {
            if e.base >= start {
                new.offset(e.base - start)
            } else {
                match pa.checked_sub(start - e.base) {
                    Some(pa) => Leaf::Mapped { pa, attrs, state },
                    None => return false,
                }
            }
        }
    };
    pte::encode_in(at_base, e.level, fwb) == e.pte
}
