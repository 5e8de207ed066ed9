//! MMIO_GUARD (guest call 0xC6000007, Linux 6.12's single-call form): the
//! granules of the MMIO window a guest asked to have treated as MMIO.
//!
//! Until a guest guards a granule every access to its MMIO window exits to
//! the host as MMIO; once it has guarded one, only guarded granules exit and
//! an access anywhere else gets an abort injected, so the host cannot make
//! the guest talk to a device it did not ask for.
//!
//! The set is a sorted vector of granule numbers, bounded so a guest cannot
//! make the hyp allocate without limit; a lookup is a binary search.

use alloc::vec::Vec;

/// The guest's MMIO window: IPAs below its RAM.
pub const WINDOW_END: u64 = 0x4000_0000;
/// The granule: HYP_MEMINFO's answer.
pub const GRANULE: u64 = 4096;
/// Granules one VM may guard (16 MiB of MMIO).
pub const MAX_GRANULES: usize = 4096;

/// Why a guard request is refused (INVALID_PARAMETER to the guest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not granule aligned.
    Unaligned,
    /// Not in the MMIO window (guest RAM, or beyond).
    NotMmio,
    /// The VM already guards [`MAX_GRANULES`], or the hyp has no memory.
    Full,
}

#[derive(Default)]
pub struct Guards {
    /// Granule numbers, ascending, no duplicates.
    granules: Vec<u32>,
    /// Successful MMIO_GUARD calls (repeats included).
    pub calls: u64,
}

impl Guards {
    pub const fn new() -> Guards {
        Guards { granules: Vec::new(), calls: 0 }
    }

    /// Has the guest enrolled (guarded at least one granule)?
    pub fn active(&self) -> bool {
        !self.granules.is_empty()
    }

    /// Granules guarded now.
    pub fn len(&self) -> usize {
        self.granules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.granules.is_empty()
    }

    /// Guards the granule at `ipa`; guarding it again is no error (Linux
    /// may ioremap one region twice). A refusal changes nothing.
    pub fn guard(&mut self, ipa: u64) -> Result<(), Refused> {
        if !ipa.is_multiple_of(GRANULE) {
            return Err(Refused::Unaligned);
        }
        if ipa >= WINDOW_END {
            return Err(Refused::NotMmio);
        }
        let g = (ipa / GRANULE) as u32;
        if let Err(at) = self.granules.binary_search(&g) {
            if self.granules.len() >= MAX_GRANULES || self.granules.try_reserve(1).is_err() {
                return Err(Refused::Full);
            }
            self.granules.insert(at, g);
        }
        self.calls += 1;
        Ok(())
    }

    /// May an access at `ipa` exit to the host as MMIO?
    pub fn allows(&self, ipa: u64) -> bool {
        if ipa >= WINDOW_END {
            return false;
        }
        !self.active() || self.granules.binary_search(&((ipa / GRANULE) as u32)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_any_guard_the_whole_window_is_mmio() {
        let g = Guards::new();
        assert!(!g.active());
        assert!(g.allows(0x0900_0000) && g.allows(0x0a00_0100) && g.allows(0));
        assert!(!g.allows(WINDOW_END), "guest RAM is never MMIO");
    }

    #[test]
    fn once_enrolled_only_guarded_granules_are_mmio() {
        let mut g = Guards::new();
        assert_eq!(g.guard(0x0900_0000), Ok(()));
        assert!(g.active());
        assert!(g.allows(0x0900_0000) && g.allows(0x0900_0ff8));
        assert!(!g.allows(0x0900_1000), "the next granule is not guarded");
        assert!(!g.allows(0x08ff_fff8), "the previous granule is not guarded");
        assert!(!g.allows(0x0800_0000));
    }

    #[test]
    fn repeats_succeed_and_are_counted_once_as_granules() {
        let mut g = Guards::new();
        for _ in 0..3 {
            assert_eq!(g.guard(0x0a00_0000), Ok(()));
        }
        assert_eq!((g.len(), g.calls), (1, 3));
    }

    #[test]
    fn refusals_change_nothing() {
        let mut g = Guards::new();
        assert_eq!(g.guard(0x0900_0008), Err(Refused::Unaligned));
        assert_eq!(g.guard(WINDOW_END), Err(Refused::NotMmio));
        assert_eq!(g.guard(!(GRANULE - 1)), Err(Refused::NotMmio));
        assert!(!g.active());
        assert_eq!(g.calls, 0);
        assert!(g.allows(0x0900_0000), "still not enrolled: everything in the window exits");
    }

    #[test]
    fn the_set_is_bounded() {
        let mut g = Guards::new();
        for i in 0..MAX_GRANULES as u64 {
            assert_eq!(g.guard(i * GRANULE), Ok(()));
        }
        assert_eq!(g.guard(MAX_GRANULES as u64 * GRANULE), Err(Refused::Full));
        assert_eq!(g.guard(0), Ok(()), "a granule already guarded is still fine");
        assert_eq!(g.len(), MAX_GRANULES);
    }

    #[test]
    fn matches_a_model_in_any_order() {
        // Guards in a scrambled order; the set answers as a plain list would.
        let mut g = Guards::new();
        let mut model = std::vec::Vec::new();
        let mut x: u64 = 12345;
        for _ in 0..500 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let ipa = ((x >> 20) % 0x4000) * GRANULE;
            g.guard(ipa).unwrap();
            model.push(ipa / GRANULE);
        }
        for gr in 0..0x4000u64 {
            assert_eq!(g.allows(gr * GRANULE + 8), model.contains(&gr));
        }
    }
}
