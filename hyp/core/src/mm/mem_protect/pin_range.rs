//! The range form of the host's pins (PIN_RANGE / UNPIN_RANGE): one call
//! pins or unpins `n` consecutive pages, all of them or none, with one
//! DMA-view update for the pages whose first pin maps them and, for the
//! pages whose last pin goes, their SMMU invalidations completed by one
//! CMD_SYNC ([`MmEnv::dma_batch`]). Kept apart from the one-page
//! `HostMm::pin` / `unpin`, which it never changes.

use alloc::vec::Vec;

use super::{
    check_all, dma_commit, dma_pinned, dma_prepare, owned, range_only, HostMm, Pa, Refused, Side, HOST_BORROWED,
};
use crate::mm::env::MmEnv;
use crate::mm::pgtable::{Stage2, Update};
use crate::mm::pins::Pins;
use crate::mm::prot::{Leaf, Owner, PageState};
use crate::mm::{is_aligned, Error, PAGE_SIZE};

/// Most pages one range call takes: 1 MiB. Fewer than a 2 MiB block, so
/// pinned pages are always page entries of the DMA view (no update of at
/// most 256 pages covers a whole aligned 2 MiB) and an unpin never needs a
/// table page, as with the one-page form.
pub const PIN_RANGE_MAX: u64 = hyp_abi::host::PIN_RANGE_MAX;

impl HostMm {
    /// Takes one host pin (shared, or exclusive) on each of the `n` pages
    /// from `pa`, every one a page a guest shared with the host, or none:
    /// on `Err` nothing changed. The pages not pinned before are mapped in
    /// the DMA view by one update.
    pub fn pin_range<E: MmEnv>(&mut self, env: &mut E, pa: Pa, n: u64, exclusive: bool) -> Result<(), Refused> {
        let size = range_size(pa.0, n)?;
        self.check_ram(pa, size)?;
        let pa = pa.0;
        // Each page's entry first (a borrowed page is a page entry of this
        // descriptor unless a run of them merged into a block), else a walk.
        let pgt = &self.pgt;
        let borrowed = |a: u64| pgt.encode(owned(a, HOST_BORROWED, PageState::SharedBorrowed), 3);
        let pages = (0..n).all(|i| {
            let a = pa + i * PAGE_SIZE;
            self.pgt.page_entry(env, a).is_some_and(|s| s.pte == borrowed(a))
        });
        if !pages {
            check_all(env, &self.pgt, Side::Host, pa, size, |l| {
                matches!(l, Leaf::Mapped { state: PageState::SharedBorrowed, .. })
            })?;
        }
        if n == 1 {
            return self.pin_one(env, pa, exclusive);
        }
        self.pins.check_pin_range(pa, n, exclusive).map_err(|e| Refused::new(e, Side::Pins, pa))?;
        let first = |p: &Pins, i: u64| p.count(pa + i * PAGE_SIZE) == 0;
        if !self.pins.all_pinned(pa, n) {
            let pins = &self.pins;
            if !dma_pages(env, &mut self.dma, pa, n, |i| first(pins, i), Leaf::Invalid(Owner::None), dma_pinned) {
                // One update over the range: a page pinned already is
                // mapped as this leaf already, and stays as it is.
                let ud = dma_prepare(env, &self.dma, pa, size, dma_pinned(pa))?;
                dma_commit(env, &mut self.dma, ud);
            }
        }
        for i in 0..n {
            let r = self.pins.pin(pa + i * PAGE_SIZE, exclusive);
            debug_assert!(r.is_ok(), "checked: {r:?}");
        }
        Ok(())
    }

    /// Drops one host pin from each of the `n` pages from `pa`, each of
    /// which holds one, or none: on `Err` (`Inval`: a page without a pin,
    /// or outside RAM) nothing changed. The pages whose last pin goes are
    /// unmapped from the DMA view, a run of such pages by one update, and
    /// every SMMU invalidation this needs is complete (one CMD_SYNC)
    /// before the call returns. Never `NoMem` (pinned pages are page
    /// entries: [`PIN_RANGE_MAX`]).
    pub fn unpin_range<E: MmEnv>(&mut self, env: &mut E, pa: Pa, n: u64) -> Result<(), Refused> {
        let size = range_size(pa.0, n)?;
        self.check_ram(pa, size)?;
        let pa = pa.0;
        if n == 1 {
            return self.unpin_one(env, pa);
        }
        if !self.pins.all_pinned(pa, n) {
            return Err(Refused::new(Error::Inval, Side::Pins, pa));
        }
        let batch = n > 1;
        if batch {
            env.dma_batch();
        }
        let pins = &self.pins;
        let last = |i: u64| pins.count(pa + i * PAGE_SIZE) == 1;
        if dma_pages(env, &mut self.dma, pa, n, last, dma_pinned(pa), |_| Leaf::Invalid(Owner::None)) {
            for i in 0..n {
                let r = self.pins.unpin(pa + i * PAGE_SIZE);
                debug_assert!(r.is_ok(), "checked: {r:?}");
            }
            if batch {
                env.dma_sync();
            }
            return Ok(());
        }
        let last = |i: u64| self.pins.count(pa + i * PAGE_SIZE) == 1;
        let mut runs: Vec<Update> = Vec::new();
        let mut i = 0;
        while i < n {
            if !last(i) {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < n && last(j) {
                j += 1;
            }
            let (a, len) = (pa + i * PAGE_SIZE, (j - i) * PAGE_SIZE);
            let u = if runs.try_reserve(1).is_ok() {
                dma_prepare(env, &self.dma, a, len, Leaf::Invalid(Owner::None))
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
                    if batch {
                        env.dma_sync();
                    }
                    return Err(e);
                }
            }
            i = j;
        }
        for i in 0..n {
            let r = self.pins.unpin(pa + i * PAGE_SIZE);
            debug_assert!(r.is_ok(), "checked: {r:?}");
        }
        for u in runs {
            dma_commit(env, &mut self.dma, Some(u));
        }
        if batch {
            env.dma_sync();
        }
        Ok(())
    }

    /// [`HostMm::pin_range`] of one page, its page checked: the pin taken
    /// first (its refusal changes nothing), then the DMA view for a first
    /// pin; should that fail (`NoMem`) the pin is dropped again.
    fn pin_one<E: MmEnv>(&mut self, env: &mut E, pa: u64, exclusive: bool) -> Result<(), Refused> {
        let first = self.pins.count(pa) == 0;
        self.pins.pin(pa, exclusive).map_err(|e| Refused::new(e, Side::Pins, pa))?;
        if first && !dma_page(env, &mut self.dma, pa, Leaf::Invalid(Owner::None), dma_pinned(pa)) {
            match dma_prepare(env, &self.dma, pa, PAGE_SIZE, dma_pinned(pa)) {
                Ok(ud) => dma_commit(env, &mut self.dma, ud),
                Err(e) => {
                    let r = self.pins.unpin(pa);
                    debug_assert!(r.is_ok(), "just taken: {r:?}");
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// [`HostMm::unpin_range`] of one page, its page checked.
    fn unpin_one<E: MmEnv>(&mut self, env: &mut E, pa: u64) -> Result<(), Refused> {
        let pins = self.pins.count(pa);
        if pins == 0 {
            return Err(Refused::new(Error::Inval, Side::Pins, pa));
        }
        if pins == 1 && !dma_page(env, &mut self.dma, pa, dma_pinned(pa), Leaf::Invalid(Owner::None)) {
            let ud = dma_prepare(env, &self.dma, pa, PAGE_SIZE, Leaf::Invalid(Owner::None))?;
            dma_commit(env, &mut self.dma, ud);
        }
        let r = self.pins.unpin(pa);
        debug_assert!(r.is_ok(), "checked: {r:?}");
        Ok(())
    }
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
