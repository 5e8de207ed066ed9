//! Guest memory on demand (host call `MEM_ON_DEMAND`, exit `MEM_FAULT`):
//! the IPA range a host declared as the guest's memory, which it donates
//! as the guest touches it instead of all before the first run (as pKVM
//! does). A stage-2 translation fault in the range on an IPA with no
//! memory exits to the host with a suggested donation ([`Demand::hint`]);
//! outside it the guest gets the abort it always got. The range only
//! decides which exit a fault is: what gets mapped is still only what
//! `DONATE_GUEST` donated, with all its checks.

/// The granule of the range and of a page's hint.
pub const PAGE: u64 = 4096;
/// The block the hint prefers: one level-2 entry of the guest's stage-2.
pub const BLOCK: u64 = 2 << 20;

/// The declared range `[start, end)` (empty: none declared).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    start: u64,
    end: u64,
}

/// Why a declaration is refused (EINVAL to the host; nothing changes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// IPA or size not a multiple of 4 KiB.
    Unaligned,
    /// Size 0.
    Empty,
    /// Not inside guest RAM: below it (the MMIO window) or past the end
    /// of the VM's IPA space (or the sum overflows).
    OutsideRam,
}

impl Demand {
    /// No range: every fault on an IPA with no memory is a guest abort.
    pub const NONE: Demand = Demand { start: 0, end: 0 };

    /// The range `[ipa, ipa + size)` for a VM whose RAM starts at
    /// `ram_base` and whose IPA space ends at `ipa_end` (exclusive).
    pub fn declare(ipa: u64, size: u64, ram_base: u64, ipa_end: u64) -> Result<Demand, Refused> {
        if !ipa.is_multiple_of(PAGE) || !size.is_multiple_of(PAGE) {
            return Err(Refused::Unaligned);
        }
        if size == 0 {
            return Err(Refused::Empty);
        }
        let end = ipa.checked_add(size).ok_or(Refused::OutsideRam)?;
        if ipa < ram_base || end > ipa_end {
            return Err(Refused::OutsideRam);
        }
        Ok(Demand { start: ipa, end })
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Is `ipa` in the range?
    #[inline(always)]
    pub fn contains(&self, ipa: u64) -> bool {
        ipa >= self.start && ipa < self.end
    }

    /// The donation to suggest for a fault at `ipa` (in the range) whose
    /// stage-2 leaf is an invalid entry over `[leaf_base, leaf_base +
    /// leaf_size)`: the 2 MiB block around `ipa`, clipped to the range,
    /// when the leaf covers all of it (nothing of the block is mapped);
    /// else the page of `ipa`. Returns (IPA, size).
    pub fn hint(&self, ipa: u64, leaf_base: u64, leaf_size: u64) -> (u64, u64) {
        let block = ipa & !(BLOCK - 1);
        let covered = leaf_base <= block && leaf_base.saturating_add(leaf_size) >= block + BLOCK;
        if covered {
            let (from, to) = (block.max(self.start), (block + BLOCK).min(self.end));
            if from <= ipa && ipa < to {
                return (from, to - from);
            }
        }
        (ipa & !(PAGE - 1), PAGE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 0x4000_0000;
    const END: u64 = 1 << 40;

    #[test]
    fn declarations_are_checked() {
        assert_eq!(Demand::declare(RAM, 64 << 20, RAM, END), Ok(Demand { start: RAM, end: RAM + (64 << 20) }));
        assert_eq!(Demand::declare(RAM + 1, 4096, RAM, END), Err(Refused::Unaligned));
        assert_eq!(Demand::declare(RAM, 4095, RAM, END), Err(Refused::Unaligned));
        assert_eq!(Demand::declare(RAM, 0, RAM, END), Err(Refused::Empty));
        assert_eq!(Demand::declare(RAM - 4096, 8192, RAM, END), Err(Refused::OutsideRam));
        assert_eq!(Demand::declare(END - 4096, 8192, RAM, END), Err(Refused::OutsideRam));
        assert_eq!(Demand::declare(!0xfff, 4096, RAM, u64::MAX), Err(Refused::OutsideRam));
        // The whole of the IPA space above the window is fine.
        assert!(Demand::declare(RAM, END - RAM, RAM, END).is_ok());
    }

    #[test]
    fn contains_is_half_open() {
        let d = Demand::declare(RAM, 8192, RAM, END).unwrap();
        assert!(!d.contains(RAM - 1));
        assert!(d.contains(RAM) && d.contains(RAM + 8191));
        assert!(!d.contains(RAM + 8192));
        assert!(!Demand::NONE.contains(0) && Demand::NONE.is_empty());
    }

    #[test]
    fn hint_is_the_empty_block_clipped_to_the_range() {
        let d = Demand::declare(RAM, 64 << 20, RAM, END).unwrap();
        // Nothing mapped in the 1 GiB around it: the whole block.
        assert_eq!(d.hint(RAM + 0x30_1234, RAM, 1 << 30), (RAM + 0x20_0000, BLOCK));
        // An invalid 2 MiB entry: the block.
        assert_eq!(d.hint(RAM + 0x20_0008, RAM + 0x20_0000, BLOCK), (RAM + 0x20_0000, BLOCK));
        // An invalid page entry (the block has other pages mapped): the page.
        assert_eq!(d.hint(RAM + 0x20_5008, RAM + 0x20_5000, PAGE), (RAM + 0x20_5000, PAGE));
        // A range that ends and starts inside blocks: clipped.
        let d = Demand::declare(RAM + 0x10_0000, 0x28_0000, RAM, END).unwrap();
        assert_eq!(d.hint(RAM + 0x10_0000, RAM, 1 << 30), (RAM + 0x10_0000, 0x10_0000));
        assert_eq!(d.hint(RAM + 0x37_f000, RAM, 1 << 30), (RAM + 0x20_0000, 0x18_0000));
    }

    #[test]
    fn hint_never_leaves_the_range_nor_misses_the_ipa() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..10_000 {
            let start = RAM + (next() % 4096) * PAGE;
            let size = (1 + next() % 4096) * PAGE;
            let d = Demand::declare(start, size, RAM, END).unwrap();
            let ipa = start + next() % size;
            let level_size = [1u64 << 30, BLOCK, PAGE][(next() % 3) as usize];
            let leaf = ipa & !(level_size - 1);
            let (at, len) = d.hint(ipa, leaf, level_size);
            assert!(at <= ipa && ipa < at + len, "{ipa:#x} in {at:#x}+{len:#x}");
            assert!(d.contains(at) && d.contains(at + len - 1));
            assert!(at >= leaf && at + len <= leaf + level_size, "inside the invalid leaf");
            assert!(at.is_multiple_of(PAGE) && len.is_multiple_of(PAGE) && len <= BLOCK);
        }
    }
}
