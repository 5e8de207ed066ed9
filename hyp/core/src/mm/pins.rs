//! Host pin counts per physical page, with exclusive-pinning semantics:
//! any number of shared pins, or one exclusive pin and nothing else; and
//! per page whether the host's DMA view maps it as a pinned page
//! ([`Pins::is_mapped`]): from its first pin until a conversion takes the
//! page from the host (`mem_protect`: the mapping of a page no pin holds
//! any more is torn down by the conversion that needs it, not by the
//! unpin).

use alloc::vec::Vec;

use super::{Error, PAGE_SHIFT};

const EXCLUSIVE: u32 = 1 << 31;
/// The DMA view maps the page (set with its first pin, kept after its
/// last unpin until [`Pins::unmap`]).
const MAPPED: u32 = 1 << 30;
/// The shared pins' count (and most shared pins a page takes).
const COUNT: u32 = MAPPED - 1;

/// Pin counts for the pages of one physical range (like a vmemmap).
#[derive(Debug)]
pub struct Pins {
    base_pfn: u64,
    counts: Vec<u32>,
    /// Pages with at least one pin.
    pinned: u64,
    /// Pages the DMA view maps ([`MAPPED`]): every pinned page, and pages
    /// whose last pin went while no conversion took them yet.
    mapped: u64,
}

impl Pins {
    /// Counts for `[base, base + size)`; allocated once, at boot.
    pub fn new(base: u64, size: u64) -> Self {
        let n = (size >> PAGE_SHIFT) as usize;
        let counts = alloc::vec![0; n];
        Pins { base_pfn: base >> PAGE_SHIFT, counts, pinned: 0, mapped: 0 }
    }

    #[inline(always)]
    fn slot(&self, pa: u64) -> Option<usize> {
        let pfn = pa >> PAGE_SHIFT;
        let i = pfn.checked_sub(self.base_pfn)? as usize;
        (i < self.counts.len()).then_some(i)
    }

    /// Pages with at least one pin.
    pub fn pinned_pages(&self) -> u64 {
        self.pinned
    }

    /// Pages the DMA view maps as pinned pages ([`Pins::is_mapped`]).
    pub fn mapped_pages(&self) -> u64 {
        self.mapped
    }

    /// Pins held on the word `c` of a page (an exclusive pin counts as one).
    #[inline(always)]
    fn pins_of(c: u32) -> u32 {
        if c & EXCLUSIVE != 0 {
            1
        } else {
            c & COUNT
        }
    }

    /// Pins held on the page at `pa` (an exclusive pin counts as one).
    #[inline]
    pub fn count(&self, pa: u64) -> u32 {
        self.slot(pa).map_or(0, |i| Self::pins_of(self.counts[i]))
    }

    pub fn is_exclusive(&self, pa: u64) -> bool {
        self.slot(pa).is_some_and(|i| self.counts[i] & EXCLUSIVE != 0)
    }

    /// Does the DMA view map the page at `pa` as a pinned page (it took a
    /// pin, and no [`Pins::unmap`] since)?
    #[inline]
    pub fn is_mapped(&self, pa: u64) -> bool {
        self.slot(pa).is_some_and(|i| self.counts[i] & MAPPED != 0)
    }

    /// True when any page of `[pa, pa + size)` is pinned.
    #[inline]
    pub fn any_pinned(&self, pa: u64, size: u64) -> bool {
        if self.pinned == 0 {
            return false;
        }
        self.words(pa, size).iter().any(|&c| Self::pins_of(c) != 0)
    }

    /// True when any page of `[pa, pa + size)` is pinned or mapped in the
    /// DMA view (every pinned page is): what a conversion of the range
    /// must look at. As cheap as [`Pins::any_pinned`] while no page is.
    #[inline(always)]
    pub fn any_mapped(&self, pa: u64, size: u64) -> bool {
        if self.mapped == 0 {
            return false;
        }
        self.words(pa, size).iter().any(|&c| c != 0)
    }

    /// The words of the pages of `[pa, pa + size)` inside the counted
    /// range.
    #[inline]
    fn words(&self, pa: u64, size: u64) -> &[u32] {
        let Some(first) = self.slot(pa) else {
            return &[];
        };
        let n = (size >> PAGE_SHIFT) as usize;
        let last = first.saturating_add(n).min(self.counts.len());
        &self.counts[first..last]
    }

    /// Takes a pin and marks the page mapped ([`Pins::is_mapped`]: the
    /// caller maps it in the DMA view unless it was). The caller has
    /// checked that the page may be pinned.
    pub fn pin(&mut self, pa: u64, exclusive: bool) -> Result<(), Error> {
        let i = self.slot(pa).ok_or(Error::Inval)?;
        let c = self.counts[i];
        let n = c & !MAPPED;
        if n & EXCLUSIVE != 0 || (exclusive && n != 0) || n == COUNT {
            return Err(Error::Busy);
        }
        self.counts[i] = MAPPED | if exclusive { EXCLUSIVE } else { n + 1 };
        self.pinned += (n == 0) as u64;
        self.mapped += (c & MAPPED == 0) as u64;
        Ok(())
    }

    /// The counts of `n` pages from `pa`, or `None` if any lies outside.
    #[inline]
    fn run(&self, pa: u64, n: u64) -> Option<&[u32]> {
        let first = self.slot(pa)?;
        let last = first.checked_add(usize::try_from(n).ok()?)?;
        self.counts.get(first..last)
    }

    /// Could every page of the `n` from `pa` take a pin ([`Pins::pin`]'s
    /// rules)? `Inval` outside the counted range, `Busy` for a page
    /// pinned exclusively, or pinned at all when `exclusive`, or at its
    /// most pins. `Ok(true)` when every page is mapped in the DMA view
    /// already ([`Pins::is_mapped`]).
    #[inline]
    pub fn check_pin_range(&self, pa: u64, n: u64, exclusive: bool) -> Result<bool, Error> {
        let run = self.run(pa, n).ok_or(Error::Inval)?;
        let mut refused = false;
        let mut mapped = true;
        for &c in run {
            let n = c & !MAPPED;
            refused |= n & EXCLUSIVE != 0 || (exclusive && n != 0) || n == COUNT;
            mapped &= c & MAPPED != 0;
        }
        if refused {
            return Err(Error::Busy);
        }
        Ok(mapped)
    }

    /// Does every page of the `n` from `pa` hold a pin? (`false` outside
    /// the counted range.)
    #[inline]
    pub fn all_pinned(&self, pa: u64, n: u64) -> bool {
        if self.pinned == 0 {
            return false;
        }
        self.run(pa, n).is_some_and(|r| r.iter().all(|&c| Self::pins_of(c) != 0))
    }

    /// Drops one pin (the exclusive one, if held). The page stays mapped
    /// ([`Pins::is_mapped`]) until [`Pins::unmap`].
    pub fn unpin(&mut self, pa: u64) -> Result<(), Error> {
        let i = self.slot(pa).ok_or(Error::Inval)?;
        let c = self.counts[i];
        let n = match c & !MAPPED {
            0 => return Err(Error::Inval),
            EXCLUSIVE => 0,
            n => n - 1,
        };
        self.counts[i] = (c & MAPPED) | n;
        self.pinned -= (n == 0) as u64;
        Ok(())
    }

    /// Takes one pin on each of the `n` pages from `pa` (checked by the
    /// caller with [`Pins::check_pin_range`]) and marks them mapped.
    #[inline]
    pub fn pin_run(&mut self, pa: u64, n: u64, exclusive: bool) {
        let Some(first) = self.slot(pa) else {
            return;
        };
        let (mut pinned, mut mapped) = (0, 0);
        for c in self.counts[first..first + n as usize].iter_mut() {
            let k = *c & !MAPPED;
            debug_assert!(k & EXCLUSIVE == 0 && !(exclusive && k != 0) && k != COUNT, "checked");
            pinned += (k == 0) as u64;
            mapped += (*c & MAPPED == 0) as u64;
            *c = MAPPED | if exclusive { EXCLUSIVE } else { k + 1 };
        }
        self.pinned += pinned;
        self.mapped += mapped;
    }

    /// Drops one pin from each of the `n` pages from `pa`, each of which
    /// holds one (checked by the caller with [`Pins::all_pinned`]).
    #[inline]
    pub fn unpin_run(&mut self, pa: u64, n: u64) {
        let Some(first) = self.slot(pa) else {
            return;
        };
        let mut gone = 0;
        for c in self.counts[first..first + n as usize].iter_mut() {
            let k = match *c & !MAPPED {
                0 | EXCLUSIVE => 0,
                k => k - 1,
            };
            debug_assert!(*c & !MAPPED != 0, "checked: every page pinned");
            *c = (*c & MAPPED) | k;
            gone += (k == 0) as u64;
        }
        self.pinned -= gone;
    }

    /// [`Pins::unmap`] of every page of `[pa, pa + size)` (none pinned).
    pub fn unmap_range(&mut self, pa: u64, size: u64) {
        for i in 0..size >> PAGE_SHIFT {
            self.unmap(pa + (i << PAGE_SHIFT));
        }
    }

    /// The page at `pa`, which holds no pin, is no longer mapped in the
    /// DMA view (a conversion tore the mapping down, or the first pin's
    /// mapping failed).
    pub fn unmap(&mut self, pa: u64) {
        if let Some(i) = self.slot(pa) {
            debug_assert_eq!(Self::pins_of(self.counts[i]), 0, "unmap of a pinned page");
            self.mapped -= (self.counts[i] & MAPPED != 0) as u64;
            self.counts[i] &= !MAPPED;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 1 << 30;
    const P: u64 = 1 << PAGE_SHIFT;

    /// The counters follow the words: pins and mapped marks, a page's
    /// mark kept after its last unpin until `unmap`, and the range forms
    /// doing what the one-page ones do page by page.
    #[test]
    fn marks_outlive_pins_until_unmapped() {
        let mut p = Pins::new(BASE, 64 * P);
        assert!(!p.any_mapped(BASE, 64 * P));
        p.pin(BASE, false).unwrap();
        p.pin(BASE, false).unwrap();
        assert_eq!((p.count(BASE), p.is_mapped(BASE), p.pinned_pages(), p.mapped_pages()), (2, true, 1, 1));
        assert_eq!(p.pin(BASE, true), Err(Error::Busy));
        p.unpin(BASE).unwrap();
        p.unpin(BASE).unwrap();
        assert_eq!(p.unpin(BASE), Err(Error::Inval));
        assert_eq!((p.count(BASE), p.is_mapped(BASE), p.pinned_pages(), p.mapped_pages()), (0, true, 0, 1));
        assert!(!p.any_pinned(BASE, P) && p.any_mapped(BASE, P));
        // Exclusive on a mapped page: the mark stays, one pin counted.
        p.pin(BASE, true).unwrap();
        assert!(p.is_exclusive(BASE) && p.count(BASE) == 1 && p.mapped_pages() == 1);
        assert_eq!(p.pin(BASE, false), Err(Error::Busy));
        p.unpin(BASE).unwrap();
        p.unmap(BASE);
        assert_eq!((p.is_mapped(BASE), p.mapped_pages()), (false, 0));
        // Ranges: checked, then taken and dropped as one-page calls would.
        assert_eq!(p.check_pin_range(BASE, 4, false), Ok(false));
        p.pin_run(BASE, 4, false);
        assert_eq!(p.check_pin_range(BASE, 4, false), Ok(true));
        assert_eq!(p.check_pin_range(BASE, 4, true), Err(Error::Busy));
        assert_eq!(p.check_pin_range(BASE + 62 * P, 4, false), Err(Error::Inval));
        p.pin_run(BASE, 2, false);
        p.pin_run(BASE + 4 * P, 2, true);
        assert_eq!(p.check_pin_range(BASE + 3 * P, 2, false), Err(Error::Busy));
        assert_eq!((p.pinned_pages(), p.mapped_pages()), (6, 6));
        assert!(p.all_pinned(BASE, 6) && !p.all_pinned(BASE, 7));
        p.unpin_run(BASE, 6);
        assert_eq!((p.pinned_pages(), p.mapped_pages()), (2, 6));
        assert_eq!((p.count(BASE), p.count(BASE + 4 * P), p.is_exclusive(BASE + 4 * P)), (1, 0, false));
        p.unpin_run(BASE, 2);
        p.unmap_range(BASE, 6 * P);
        assert_eq!((p.pinned_pages(), p.mapped_pages()), (0, 0));
        assert!(!p.any_mapped(BASE, 64 * P));
    }
}
