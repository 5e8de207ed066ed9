//! VMSAv8-64 stage-2 descriptors, 4 KiB granule.
//!
//! Valid leaf: bit 0 valid, bit 1 page (level 3) / block (0, levels 1-2),
//! MemAttr[5:2], S2AP[7:6], SH[9:8], AF[10], output address [47:12],
//! XN[54:53], software bits [56:55] = [`PageState`].
//! Invalid entry (bit 0 clear): bits [9:2] owner id (0 none, 1 the hyp's own
//! memory, 2 a guest, 3 donated to the hyp by the host), bits [31:16] VM
//! handle.

use super::prot::{Attrs, Leaf, MemType, Owner, PageState, Perm};

pub const VALID: u64 = 1 << 0;
/// Table descriptor at levels 0-2, page descriptor at level 3.
pub const TABLE_OR_PAGE: u64 = 1 << 1;
const MEMATTR_SHIFT: u32 = 2;
/// Stage-2 MemAttr: Normal, outer WB, inner WB.
const MEMATTR_NORMAL_WB: u64 = 0b1111;
/// Stage-2 MemAttr: Device-nGnRE.
const MEMATTR_DEVICE_NGNRE: u64 = 0b0001;
const MEMATTR_MASK: u64 = 0b1111 << MEMATTR_SHIFT;
const S2AP_R: u64 = 1 << 6;
const S2AP_W: u64 = 1 << 7;
const SH_INNER: u64 = 0b11 << 8;
const AF: u64 = 1 << 10;
/// XN[1:0] = 0b10: not executable at EL1 or EL0.
const XN: u64 = 0b10 << 53;
const XN_MASK: u64 = 0b11 << 53;
pub const OA_MASK: u64 = 0x0000_ffff_ffff_f000;
const SW_STATE_SHIFT: u32 = 55;
const SW_STATE_MASK: u64 = 0b11 << SW_STATE_SHIFT;

const OWNER_SHIFT: u32 = 2;
const OWNER_MASK: u64 = 0xff << OWNER_SHIFT;
const HANDLE_SHIFT: u32 = 16;
const HANDLE_MASK: u64 = 0xffff << HANDLE_SHIFT;
const OWNER_ID_HYP: u64 = 1;
const OWNER_ID_GUEST: u64 = 2;
const OWNER_ID_HYP_DONATED: u64 = 3;

#[inline]
pub const fn is_valid(pte: u64) -> bool {
    pte & VALID != 0
}

/// `old` and `new` are both valid and differ only in the software bits
/// (the page state): the walker ignores those bits, so no TLB entry or
/// walk can depend on them and the change needs neither break-before-make
/// nor a TLB invalidation (Arm ARM: break-before-make is required for a
/// change of output address, memory type, shareability or block size, and
/// a TLB holds only what the walk used).
#[inline]
pub const fn sw_bits_only(old: u64, new: u64) -> bool {
    is_valid(old) && is_valid(new) && (old ^ new) & !SW_STATE_MASK == 0
}

/// A table descriptor (only meaningful at levels 0-2).
#[inline]
pub const fn is_table(pte: u64, level: u8) -> bool {
    level < 3 && pte & (VALID | TABLE_OR_PAGE) == (VALID | TABLE_OR_PAGE)
}

#[inline]
pub const fn table_pa(pte: u64) -> u64 {
    pte & OA_MASK
}

/// The output address of a valid leaf.
#[inline]
pub const fn oa(pte: u64) -> u64 {
    pte & OA_MASK
}

#[inline]
pub const fn make_table(pa: u64) -> u64 {
    (pa & OA_MASK) | VALID | TABLE_OR_PAGE
}

/// Encodes a leaf for `level`.
#[inline(always)]
pub fn encode(leaf: Leaf, level: u8) -> u64 {
    match leaf {
        Leaf::Invalid(owner) => encode_owner(owner),
        Leaf::Mapped { pa, attrs, state } => {
            let mut d = (pa & OA_MASK) | VALID | AF | SH_INNER;
            if level == 3 {
                d |= TABLE_OR_PAGE;
            }
            d |= match attrs.mem {
                MemType::Normal => MEMATTR_NORMAL_WB,
                MemType::Device => MEMATTR_DEVICE_NGNRE,
            } << MEMATTR_SHIFT;
            if attrs.perm.r {
                d |= S2AP_R;
            }
            if attrs.perm.w {
                d |= S2AP_W;
            }
            if !attrs.perm.x {
                d |= XN;
            }
            d | ((state as u64) << SW_STATE_SHIFT)
        }
    }
}

pub const fn encode_owner(owner: Owner) -> u64 {
    match owner {
        Owner::None => 0,
        Owner::Hyp => OWNER_ID_HYP << OWNER_SHIFT,
        Owner::HypDonated => OWNER_ID_HYP_DONATED << OWNER_SHIFT,
        Owner::Guest(h) => (OWNER_ID_GUEST << OWNER_SHIFT) | ((h as u64) << HANDLE_SHIFT),
    }
}

/// Decodes a non-table entry.
pub fn decode(pte: u64) -> Leaf {
    if !is_valid(pte) {
        let owner = match (pte & OWNER_MASK) >> OWNER_SHIFT {
            OWNER_ID_HYP => Owner::Hyp,
            OWNER_ID_HYP_DONATED => Owner::HypDonated,
            OWNER_ID_GUEST => Owner::Guest(((pte & HANDLE_MASK) >> HANDLE_SHIFT) as u16),
            _ => Owner::None,
        };
        return Leaf::Invalid(owner);
    }
    let mem =
        if (pte & MEMATTR_MASK) >> MEMATTR_SHIFT == MEMATTR_DEVICE_NGNRE { MemType::Device } else { MemType::Normal };
    let perm = Perm { r: pte & S2AP_R != 0, w: pte & S2AP_W != 0, x: pte & XN_MASK == 0 };
    let state = match (pte & SW_STATE_MASK) >> SW_STATE_SHIFT {
        1 => PageState::SharedOwned,
        2 => PageState::SharedBorrowed,
        _ => PageState::Owned,
    };
    Leaf::Mapped { pa: pte & OA_MASK, attrs: Attrs { mem, perm }, state }
}

/// The same leaf re-encoded one level down (a block entry becomes a page
/// entry at level 3), offset by `off` bytes.
#[inline]
pub const fn child_of(pte: u64, child_level: u8, off: u64) -> u64 {
    if !is_valid(pte) {
        return pte;
    }
    let d = pte + off;
    if child_level == 3 {
        d | TABLE_OR_PAGE
    } else {
        d & !TABLE_OR_PAGE
    }
}

/// Fills a table page with `ENTRIES` descriptors `first + i * step` (a
/// block's children: `step` the child size for valid ones, 0 for invalid
/// ones) with plain stores, eight a round from registers set up once (the
/// compiler pairs them into STPs).
///
/// # Safety
/// `p` points at a table page of `ENTRIES` descriptors that no walker can
/// reach and nothing else references.
#[inline]
pub unsafe fn fill(p: *mut u64, first: u64, step: u64) {
    // SAFETY: per the function contract.
    let t = unsafe { core::slice::from_raw_parts_mut(p, super::ENTRIES) };
    if step == 0 {
        for c in t.chunks_exact_mut(8) {
            c.copy_from_slice(&[first; 8]);
        }
        return;
    }
    let (s2, s4) = (step * 2, step * 4);
    let (s3, s5, s6, s7) = (s2 + step, s4 + step, s4 + s2, s4 + s2 + step);
    let mut v = first;
    for c in t.chunks_exact_mut(8) {
        c.copy_from_slice(&[v, v + step, v + s2, v + s3, v + s4, v + s5, v + s6, v + s7]);
        v += step * 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let leaves = [
            Leaf::Invalid(Owner::None),
            Leaf::Invalid(Owner::Hyp),
            Leaf::Invalid(Owner::HypDonated),
            Leaf::Invalid(Owner::Guest(0xbeef)),
            Leaf::Mapped { pa: 0x4020_0000, attrs: Attrs::NORMAL_RWX, state: PageState::Owned },
            Leaf::Mapped { pa: 0x9000_0000, attrs: Attrs::DEVICE_RW, state: PageState::SharedOwned },
            Leaf::Mapped {
                pa: 0xffff_ffff_f000,
                attrs: Attrs { mem: MemType::Normal, perm: Perm::R },
                state: PageState::SharedBorrowed,
            },
        ];
        for l in leaves {
            for level in 1..=3 {
                let d = encode(l, level);
                assert_eq!(decode(d), l);
                assert!(!is_table(d, level) || level == 3);
            }
        }
    }

    #[test]
    fn fill_writes_a_run() {
        let mut t = std::vec![0xdead_u64; super::super::ENTRIES];
        for (first, step) in
            [(0x4020_0000 | 0x7c3, 0x1000), (encode_owner(Owner::Guest(7)), 0), (0x4000_0701, 0x20_0000)]
        {
            // SAFETY: a private buffer of ENTRIES descriptors.
            unsafe { fill(t.as_mut_ptr(), first, step) };
            for (i, d) in t.iter().enumerate() {
                assert_eq!(*d, first + i as u64 * step, "entry {i}");
            }
        }
    }

    #[test]
    fn exact_bits() {
        // 4K page, normal WB, RW, XN, shared-owned.
        let d = encode(Leaf::Mapped { pa: 0x4000_1000, attrs: Attrs::NORMAL_RW, state: PageState::SharedOwned }, 3);
        assert_eq!(
            d,
            0x4000_1000 | 0b11 | (0xf << 2) | (0b11 << 6) | (0b11 << 8) | (1 << 10) | (0b10 << 53) | (1 << 55)
        );
        // 2M block has bit 1 clear.
        let b = encode(Leaf::Mapped { pa: 0x4020_0000, attrs: Attrs::NORMAL_RWX, state: PageState::Owned }, 2);
        assert_eq!(b & 0b11, 0b01);
        assert_eq!(child_of(b, 3, 0x1000) & 0b11, 0b11);
        assert_eq!(child_of(b, 3, 0x1000) & OA_MASK, 0x4020_1000);
        assert_eq!(encode_owner(Owner::Guest(3)), (2 << 2) | (3 << 16));
        // The hyp's own memory and pages donated to it are told apart.
        assert_eq!(encode_owner(Owner::Hyp), 1 << 2);
        assert_eq!(encode_owner(Owner::HypDonated), 3 << 2);
    }
}
