//! The host's pins (PIN_RANGE / UNPIN_RANGE, and PIN / UNPIN as their
//! one-page calls): one call pins or unpins `n` consecutive pages, all of
//! them or none. A page's first pin maps it in the DMA view (one update
//! for the pages of a call that need it); its last unpin leaves that
//! mapping in place: the page is still one the guest shares with the
//! host, which reaches it anyway. The conversion that takes the page from
//! the host (MEM_UNSHARE, MEM_RELINQUISH, the VM's teardown) tears the
//! mapping down first, its SMMU invalidations completed by one CMD_SYNC,
//! before the guest or anyone else gets the page ([`HostMm::dma_unmap`],
//! [`crate::mm::pins::Pins::is_mapped`]); docs/isolation.md says why that is enough.

use alloc::vec::Vec;

use super::{
    check_all, dma_commit, dma_pinned, dma_prepare, owned, range_only, HostMm, Pa, Refused, Side, HOST_BORROWED,
};
use crate::mm::env::MmEnv;
use crate::mm::pgtable::{Stage2, Update};
use crate::mm::prot::{Leaf, Owner, PageState};
use crate::mm::{is_aligned, Error, PAGE_SIZE};

/// Most pages one range call takes: 1 MiB. Fewer than a 2 MiB block, so
/// pinned pages are always page entries of the DMA view (no update of at
/// most 256 pages covers a whole aligned 2 MiB) and a teardown never needs
/// a table page.
pub const PIN_RANGE_MAX: u64 = hyp_abi::host::PIN_RANGE_MAX;

impl HostMm {
    /// Takes one host pin (shared, or exclusive) on each of the `n` pages
    /// from `pa`, every one a page a guest shared with the host, or none:
    /// on `Err` nothing changed. The pages the DMA view does not map yet
    /// are mapped by one update.
    pub fn pin_range<E: MmEnv>(&mut self, env: &mut E, pa: Pa, n: u64, exclusive: bool) -> Result<(), Refused> {
        let size = range_size(pa.0, n)?;
        self.check_ram(pa, size)?;
        let pa = pa.0;
        // The pages' entries first (a borrowed page is a page entry of
        // this descriptor unless a run of them merged into a block), else
        // the range check, which says what and where.
        let borrowed = self.pgt.encode(owned(pa, HOST_BORROWED, PageState::SharedBorrowed), 3);
        if !self.pgt.page_entries_are(env, pa, n, borrowed) {
            check_all(env, &self.pgt, Side::Host, pa, size, |l| {
                matches!(l, Leaf::Mapped { state: PageState::SharedBorrowed, .. })
            })?;
        }
        if n == 1 {
            return self.pin_one(env, pa, exclusive);
        }
        let mapped = self.pins.check_pin_range(pa, n, exclusive).map_err(|e| Refused::new(e, Side::Pins, pa))?;
        if !mapped {
            let pins = &self.pins;
            let first = |i: u64| !pins.is_mapped(pa + i * PAGE_SIZE);
            if !dma_pages(env, &mut self.dma, pa, n, first, Leaf::Invalid(Owner::None), dma_pinned) {
                // One update over the range: a page mapped already is
                // mapped as this leaf already, and stays as it is.
                let ud = dma_prepare(env, &self.dma, pa, size, dma_pinned(pa))?;
                dma_commit(env, &mut self.dma, ud);
            }
        }
        self.pins.pin_run(pa, n, exclusive);
        Ok(())
    }

    /// Drops one host pin from each of the `n` pages from `pa`, each of
    /// which holds one, or none: on `Err` (`Inval`: a page without a pin,
    /// or outside RAM) nothing changed. The DMA view keeps mapping the
    /// pages (they are still shared with the host) until a conversion
    /// takes them ([`HostMm::dma_unmap`]). Never `NoMem`.
    pub fn unpin_range<E: MmEnv>(&mut self, _env: &mut E, pa: Pa, n: u64) -> Result<(), Refused> {
        let size = range_size(pa.0, n)?;
        self.check_ram(pa, size)?;
        let pa = pa.0;
        if !self.pins.all_pinned(pa, n) {
            return Err(Refused::new(Error::Inval, Side::Pins, pa));
        }
        self.pins.unpin_run(pa, n);
        Ok(())
    }

    /// [`HostMm::pin_range`] of one page, its page checked: the pin taken
    /// first (its refusal changes nothing), then the DMA view unless it
    /// maps the page already; should that fail (`NoMem`) the pin is
    /// dropped again.
    #[inline(always)]
    fn pin_one<E: MmEnv>(&mut self, env: &mut E, pa: u64, exclusive: bool) -> Result<(), Refused> {
        let first = !self.pins.is_mapped(pa);
        self.pins.pin(pa, exclusive).map_err(|e| Refused::new(e, Side::Pins, pa))?;
        if first && !dma_page(env, &mut self.dma, pa, Leaf::Invalid(Owner::None), dma_pinned(pa)) {
            match dma_prepare(env, &self.dma, pa, PAGE_SIZE, dma_pinned(pa)) {
                Ok(ud) => dma_commit(env, &mut self.dma, ud),
                Err(e) => {
                    let r = self.pins.unpin(pa);
                    debug_assert!(r.is_ok(), "just taken: {r:?}");
                    self.pins.unmap(pa);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Tears down the DMA view's mapping of the pages of `[pa, pa + size)`
    /// that no pin holds but the view still maps ([`crate::mm::pins::Pins::is_mapped`]):
    /// each written invalid, every SMMU invalidation this needs completed
    /// (one CMD_SYNC) before it returns. `Busy` (nothing changed) when a
    /// page holds a pin. For a conversion that takes the pages from the
    /// host (MEM_UNSHARE): it calls this before the guest can see them.
    /// Never `NoMem` (mapped pages are page entries: [`PIN_RANGE_MAX`]),
    /// else nothing changed.
    #[cold]
    #[inline(never)]
    pub(super) fn dma_unmap<E: MmEnv>(&mut self, env: &mut E, pa: u64, size: u64) -> Result<(), Refused> {
        if self.pins.any_pinned(pa, size) {
            return Err(super::host_guest::pinned(self, pa, size));
        }
        let n = size / PAGE_SIZE;
        let pins = &self.pins;
        let mapped = |i: u64| pins.is_mapped(pa + i * PAGE_SIZE);
        env.dma_batch();
        let none = Leaf::Invalid(Owner::None);
        let done = if n == 1 {
            dma_page(env, &mut self.dma, pa, dma_pinned(pa), none)
        } else {
            dma_pages(env, &mut self.dma, pa, n, mapped, dma_pinned(pa), |_| none)
        };
        if !done {
            if let Err(e) = dma_unmap_runs(env, &mut self.dma, pa, n, mapped) {
                env.dma_sync();
                return Err(e);
            }
        }
        env.dma_sync();
        for i in 0..n {
            self.pins.unmap(pa + i * PAGE_SIZE);
        }
        Ok(())
    }
}

/// The range form of [`HostMm::dma_unmap`]'s DMA-view change: each run of
/// pages `mapped(i)` selects written invalid by one update; all updates
/// prepared (table pages, none in practice) before any is committed.
fn dma_unmap_runs<E: MmEnv>(
    env: &mut E,
    dma: &mut Option<Stage2>,
    pa: u64,
    n: u64,
    mapped: impl Fn(u64) -> bool,
) -> Result<(), Refused> {
    let mut runs: Vec<Update> = Vec::new();
    let mut i = 0;
    while i < n {
        if !mapped(i) {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < n && mapped(j) {
            j += 1;
        }
        let (a, len) = (pa + i * PAGE_SIZE, (j - i) * PAGE_SIZE);
        let u = if runs.try_reserve(1).is_ok() {
            dma_prepare(env, dma, a, len, Leaf::Invalid(Owner::None))
        } else {
            Err(Refused::new(Error::NoMem, Side::Dma, a))
        };
        match u {
            Ok(Some(u)) => runs.push(u),
            Ok(None) => {}
            Err(e) => {
                for u in runs {
                    u.cancel(env);
                }
                return Err(e);
            }
        }
        i = j;
    }
    for u in runs {
        dma_commit(env, dma, Some(u));
    }
    Ok(())
}

/// The one-entry form of a DMA-view change of the pages `i` of the `n`
/// from `pa` that `which(i)` selects, each from the page entry of `from`
/// to that of `to(pa + i * PAGE_SIZE)`: when every selected page is a page
/// entry (level 3) holding `from`'s descriptor, each is written in place
/// (`Stage2::prepare_in_place` / `commit_in_place`: no walk of the range, no
/// table page, a TLBI where an access is removed) and `true` is returned;
/// else nothing is changed and the range path decides (`false`). Without
/// a DMA view there is nothing to do (`true`).
fn dma_pages<E: MmEnv>(
    env: &mut E,
    dma: &mut Option<Stage2>,
    pa: u64,
    n: u64,
    which: impl Fn(u64) -> bool,
    from: Leaf,
    to: impl Fn(u64) -> Leaf,
) -> bool {
    let Some(t) = dma.as_mut() else {
        return true;
    };
    if range_only() {
        return false;
    }
    // (The DMA view's descriptors are in the classic MemAttr encoding:
    // `Stage2::encode`.)
    let enc = |t: &Stage2, l: Leaf, a: u64| t.encode(l.offset(a - pa), 3);
    let fits = (0..n).filter(|&i| which(i)).all(|i| {
        let a = pa + i * PAGE_SIZE;
        t.page_entry(env, a).is_some_and(|s| s.pte == enc(t, from, a))
    });
    if !fits {
        return false;
    }
    for i in (0..n).filter(|&i| which(i)) {
        let a = pa + i * PAGE_SIZE;
        let Some(s) = t.page_entry(env, a) else { continue };
        let new = t.encode(to(a), 3);
        match t.prepare_in_place(env, &s, new) {
            Some(u) => t.commit_in_place(env, u),
            None => {
                // No uniformity hint to keep: the range path for this
                // page (a page entry already: no table page needed).
                if let Ok(u) = t.prepare(env, a, PAGE_SIZE, to(a)) {
                    t.commit(env, u);
                }
            }
        }
    }
    true
}

/// [`dma_pages`] of the one page at `pa`, from `from` to `to`: the slot
/// found is the one written.
#[inline(always)]
fn dma_page<E: MmEnv>(env: &mut E, dma: &mut Option<Stage2>, pa: u64, from: Leaf, to: Leaf) -> bool {
    let Some(t) = dma.as_mut() else {
        return true;
    };
    if range_only() {
        return false;
    }
    // Both descriptors worked out before the descent, in the view's own
    // encoding (`Stage2::encode`), so that the test is one comparison.
    let (from, to) = (t.encode(from, 3), t.encode(to, 3));
    let Some(s) = t.page_entry(env, pa) else {
        return false;
    };
    if s.pte != from {
        return false;
    }
    let Some(u) = t.prepare_in_place(env, &s, to) else {
        return false;
    };
    t.commit_in_place(env, u);
    true
}

/// The bytes of `n` pages from `pa`: `Inval` unless `pa` is page-aligned
/// and `n` is 1..=[`PIN_RANGE_MAX`].
fn range_size(pa: u64, n: u64) -> Result<u64, Refused> {
    if !is_aligned(pa, PAGE_SIZE) || n == 0 || n > PIN_RANGE_MAX {
        return Err(Refused::new(Error::Inval, Side::Args, pa));
    }
    Ok(n * PAGE_SIZE)
}
