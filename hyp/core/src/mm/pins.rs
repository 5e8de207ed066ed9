//! Host pin counts per physical page, with exclusive-pinning semantics:
//! any number of shared pins, or one exclusive pin and nothing else.

use alloc::vec::Vec;

use super::{Error, PAGE_SHIFT};

const EXCLUSIVE: u32 = 1 << 31;

/// Pin counts for the pages of one physical range (like a vmemmap).
#[derive(Debug)]
pub struct Pins {
    base_pfn: u64,
    counts: Vec<u32>,
    /// Pages with at least one pin.
    pinned: u64,
}

impl Pins {
    /// Counts for `[base, base + size)`; allocated once, at boot.
    pub fn new(base: u64, size: u64) -> Self {
        let n = (size >> PAGE_SHIFT) as usize;
        let counts = alloc::vec![0; n];
        Pins { base_pfn: base >> PAGE_SHIFT, counts, pinned: 0 }
    }

    fn slot(&self, pa: u64) -> Option<usize> {
        let pfn = pa >> PAGE_SHIFT;
        let i = pfn.checked_sub(self.base_pfn)? as usize;
        (i < self.counts.len()).then_some(i)
    }

    /// Pages with at least one pin.
    pub fn pinned_pages(&self) -> u64 {
        self.pinned
    }

    /// Pins held on the page at `pa` (an exclusive pin counts as one).
    pub fn count(&self, pa: u64) -> u32 {
        match self.slot(pa).map(|i| self.counts[i]) {
            Some(c) if c & EXCLUSIVE != 0 => 1,
            Some(c) => c,
            None => 0,
        }
    }

    pub fn is_exclusive(&self, pa: u64) -> bool {
        self.slot(pa).is_some_and(|i| self.counts[i] & EXCLUSIVE != 0)
    }

    /// True when any page of `[pa, pa + size)` is pinned.
    #[inline]
    pub fn any_pinned(&self, pa: u64, size: u64) -> bool {
        if self.pinned == 0 {
            return false;
        }
        let Some(first) = self.slot(pa) else {
            return false;
        };
        let n = (size >> PAGE_SHIFT) as usize;
        let last = first.saturating_add(n).min(self.counts.len());
        self.counts[first..last].iter().any(|&c| c != 0)
    }

    /// Takes a pin. The caller has checked that the page may be pinned.
    pub fn pin(&mut self, pa: u64, exclusive: bool) -> Result<(), Error> {
        let i = self.slot(pa).ok_or(Error::Inval)?;
        let c = self.counts[i];
        if c & EXCLUSIVE != 0 || (exclusive && c != 0) {
            return Err(Error::Busy);
        }
        if c == EXCLUSIVE - 1 {
            return Err(Error::Busy);
        }
        self.counts[i] = if exclusive { EXCLUSIVE } else { c + 1 };
        self.pinned += (c == 0) as u64;
        Ok(())
    }

    /// The counts of `n` pages from `pa`, or `None` if any lies outside.
    fn run(&self, pa: u64, n: u64) -> Option<&[u32]> {
        let first = self.slot(pa)?;
        let last = first.checked_add(usize::try_from(n).ok()?)?;
        self.counts.get(first..last)
    }

    /// Could every page of the `n` from `pa` take a pin ([`Pins::pin`]'s
    /// rules)? `Inval` outside the counted range, `Busy` for a page
    /// pinned exclusively, or pinned at all when `exclusive`, or at its
    /// most pins.
    pub fn check_pin_range(&self, pa: u64, n: u64, exclusive: bool) -> Result<(), Error> {
        let run = self.run(pa, n).ok_or(Error::Inval)?;
        let refused = |&c: &u32| c & EXCLUSIVE != 0 || (exclusive && c != 0) || c == EXCLUSIVE - 1;
        if run.iter().any(refused) {
            return Err(Error::Busy);
        }
        Ok(())
    }

    /// Does every page of the `n` from `pa` hold a pin? (`false` outside
    /// the counted range.)
    #[inline]
    pub fn all_pinned(&self, pa: u64, n: u64) -> bool {
        if self.pinned == 0 {
            return false;
        }
        self.run(pa, n).is_some_and(|r| r.iter().all(|&c| c != 0))
    }

    /// Drops one pin (the exclusive one, if held).
    pub fn unpin(&mut self, pa: u64) -> Result<(), Error> {
        let i = self.slot(pa).ok_or(Error::Inval)?;
        let c = self.counts[i];
        self.counts[i] = match c {
            0 => return Err(Error::Inval),
            EXCLUSIVE => 0,
            c => c - 1,
        };
        self.pinned -= (self.counts[i] == 0) as u64;
        Ok(())
    }
}
