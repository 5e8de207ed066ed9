//! Typed addresses of the core's API: a guest's intermediate physical
//! address ([`Ipa`]) and a physical address ([`Pa`]). The host's stage-2 is
//! an identity map, so its input addresses are PAs; a guest's are IPAs.
//! Both are plain `u64`s underneath (`#[repr(transparent)]`, no cost):
//! the type says which space a number lives in, where a raw `u64` said so
//! only in its name.

use core::fmt;

/// A physical address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Pa(pub u64);

/// A guest's intermediate physical address (the input of its stage-2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Ipa(pub u64);

impl Pa {
    /// The address as a number.
    #[inline(always)]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl Ipa {
    /// The address as a number.
    #[inline(always)]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Pa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PA {:#x}", self.0)
    }
}

impl fmt::Display for Ipa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IPA {:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{Ipa, Pa};
    use std::format;

    #[test]
    fn addresses_say_their_space() {
        assert_eq!(format!("{}", Pa(0x4000_1000)), "PA 0x40001000");
        assert_eq!(format!("{}", Ipa(0x8000)), "IPA 0x8000");
        assert_eq!(Pa(7).get(), 7);
        assert_eq!(Ipa(9).get(), 9);
        assert_eq!(core::mem::size_of::<Pa>(), 8);
    }
}
