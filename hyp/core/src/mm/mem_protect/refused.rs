//! What a refused transition says: why (an [`Error`], whose errno the
//! hypercall returns), in whose tree, at which address, and what it found
//! there. The hypercall boundary turns it into the ABI's errno
//! ([`Refused::errno`]) and may log it whole.

use core::fmt;
use core::num::NonZeroU64;

use crate::mm::prot::{Leaf, Owner};
use crate::mm::{pte, Error};

/// Whose view a refusal is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The call's own arguments (a range outside RAM or a tree, unaligned).
    Args,
    /// The host's stage-2 (input addresses are PAs).
    Host,
    /// The hyp's bookkeeping tree, or its own memory (PAs).
    Hyp,
    /// The guest's stage-2 (IPAs; the caller knows which VM).
    Guest,
    /// The host's DMA view (PAs).
    Dma,
    /// The host's pins (PAs).
    Pins,
}

/// A refused transition or host fault: why ([`Refused::error`]), in whose
/// view ([`Refused::side`]), at which address there ([`Refused::at`]), and
/// the page's state there when that state is why ([`Refused::found`]).
/// Nothing changed.
///
/// Two words, so that a `Result` of it (and of a [`super::Pa`]) comes back
/// in registers on the hot paths: the address, and the found leaf's page
/// descriptor (bits 0-56, `pte::encode`) with a found bit (57), the side
/// (58-60) and the error (61-63, never zero).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    at: u64,
    what: NonZeroU64,
}

const FOUND: u64 = 1 << 57;
const DESC_MASK: u64 = FOUND - 1;
const SIDE_SHIFT: u32 = 58;
const ERROR_SHIFT: u32 = 61;

const fn error_code(e: Error) -> u64 {
    match e {
        Error::Perm => 1,
        Error::Inval => 2,
        Error::NoMem => 3,
        Error::Busy => 4,
        Error::NoEnt => 5,
    }
}

impl Refused {
    #[inline(always)]
    const fn pack(error: Error, side: Side, at: u64, desc: u64) -> Self {
        let what = (error_code(error) << ERROR_SHIFT) | ((side as u64) << SIDE_SHIFT) | desc;
        match NonZeroU64::new(what) {
            Some(what) => Refused { at, what },
            // The error code is never zero.
            None => unreachable!(),
        }
    }

    /// `error` at `at` in `side`'s view, with nothing found.
    #[inline]
    pub const fn new(error: Error, side: Side, at: u64) -> Self {
        Self::pack(error, side, at, 0)
    }

    /// A page of `side` at `at` not in the state the transition needs:
    /// `found` is what it holds.
    #[inline]
    pub fn state(side: Side, at: u64, found: Leaf) -> Self {
        let desc = pte::encode(found, 3);
        debug_assert_eq!(desc & !DESC_MASK, 0);
        Self::pack(Error::Perm, side, at, FOUND | (desc & DESC_MASK))
    }

    /// Why, as the ABI reports it.
    #[inline(always)]
    pub const fn error(&self) -> Error {
        match self.what.get() >> ERROR_SHIFT {
            1 => Error::Perm,
            2 => Error::Inval,
            3 => Error::NoMem,
            4 => Error::Busy,
            _ => Error::NoEnt,
        }
    }

    /// In whose view.
    pub const fn side(&self) -> Side {
        match (self.what.get() >> SIDE_SHIFT) & 7 {
            0 => Side::Args,
            1 => Side::Host,
            2 => Side::Hyp,
            3 => Side::Guest,
            4 => Side::Dma,
            _ => Side::Pins,
        }
    }

    /// The address in that view (a PA, or a guest's IPA).
    pub const fn at(&self) -> u64 {
        self.at
    }

    /// The page's state there, when that state is why.
    pub fn found(&self) -> Option<Leaf> {
        let w = self.what.get();
        (w & FOUND != 0).then(|| pte::decode(w & DESC_MASK))
    }

    /// The positive errno of the ABI.
    #[inline(always)]
    pub const fn errno(&self) -> i64 {
        self.error().errno()
    }
}

impl fmt::Debug for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refused")
            .field("error", &self.error())
            .field("side", &self.side())
            .field("at", &format_args!("{:#x}", self.at))
            .field("found", &self.found())
            .finish()
    }
}

impl From<Refused> for Error {
    #[inline(always)]
    fn from(r: Refused) -> Error {
        r.error()
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Side::Args => f.write_str("arguments"),
            Side::Host => f.write_str("host"),
            Side::Hyp => f.write_str("hyp"),
            Side::Guest => f.write_str("guest"),
            Side::Dma => f.write_str("DMA view"),
            Side::Pins => f.write_str("host pins"),
        }
    }
}

/// A leaf in words: `owned`, `shared-owned PA 0x..`, `guest 3's`.
struct LeafName(Leaf);

impl fmt::Display for LeafName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Leaf::Mapped { pa, state, .. } => write!(f, "{} PA {pa:#x}", state.name()),
            Leaf::Invalid(Owner::None) => f.write_str("unmapped, no owner recorded"),
            Leaf::Invalid(Owner::Hyp) => f.write_str("the hyp's own"),
            Leaf::Invalid(Owner::HypDonated) => f.write_str("donated to the hyp"),
            Leaf::Invalid(Owner::Guest(h)) => write!(f, "guest {h}'s"),
            Leaf::Invalid(Owner::VmTables(h)) => write!(f, "VM {h}'s table memory"),
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let space = match self.side() {
            Side::Guest => "IPA",
            Side::Args => "address",
            _ => "PA",
        };
        write!(f, "{}: {} {space} {:#x}", self.error().name(), self.side(), self.at)?;
        match self.found() {
            Some(l) => write!(f, " is {}", LeafName(l)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Refused, Side};
    use crate::mm::prot::{Attrs, Leaf, Owner, PageState};
    use crate::mm::Error;
    use std::format;

    #[test]
    fn a_refusal_says_what_and_where() {
        let l = Leaf::Mapped { pa: 0x4020_0000, attrs: Attrs::NORMAL_RWX, state: PageState::SharedOwned };
        let r = Refused::state(Side::Guest, 0x8000_1000, l);
        assert_eq!(format!("{r}"), "EPERM: guest IPA 0x80001000 is shared-owned PA 0x40200000");
        assert_eq!((r.error(), r.side(), r.at(), r.found()), (Error::Perm, Side::Guest, 0x8000_1000, Some(l)));
        assert_eq!(r.errno(), 1);
        for e in [Error::Perm, Error::Inval, Error::NoMem, Error::Busy, Error::NoEnt] {
            for side in [Side::Args, Side::Host, Side::Hyp, Side::Guest, Side::Dma, Side::Pins] {
                let r = Refused::new(e, side, u64::MAX);
                assert_eq!((r.error(), r.side(), r.at(), r.found()), (e, side, u64::MAX, None));
            }
        }
        // Two words: a result of it comes back in registers.
        assert_eq!(core::mem::size_of::<Result<crate::mm::addr::Pa, Refused>>(), 16);
        assert_eq!(core::mem::size_of::<Result<(), Refused>>(), 16);
        let r = Refused::new(Error::Busy, Side::Pins, 0x4000_0000);
        assert_eq!(format!("{r}"), "EBUSY: host pins PA 0x40000000");
        assert_eq!(Error::from(r), Error::Busy);
        let r = Refused::state(Side::Host, 0x4000_0000, Leaf::Invalid(Owner::Guest(2)));
        assert_eq!(format!("{r}"), "EPERM: host PA 0x40000000 is guest 2's");
    }
}
