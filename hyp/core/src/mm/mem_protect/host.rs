//! The host's side of ownership: its stage-2 faults (the lazy identity map
//! of its RAM and devices), its pins on pages guests share with it, and
//! its DMA view.

use alloc::vec::Vec;

use super::*;

impl HostMm {
    pub fn new(pgt: Stage2, ram: Vec<Region>, devices: Vec<Region>) -> Self {
        let (lo, hi) = ram.iter().fold((u64::MAX, 0), |(lo, hi), r| (lo.min(r.base), hi.max(r.end())));
        let pins = if lo < hi { Pins::new(lo, hi - lo) } else { Pins::new(0, 0) };
        HostMm { pgt, pins, ram, devices, dma: None }
    }

    /// Builds the host's DMA view in `pgt` (an empty tree the SMMU will
    /// walk) from the host's stage-2 and pins as they are now, and keeps it
    /// in step from then on: every transition below updates it in the same
    /// all-or-nothing step as the CPU stage-2s. Called at boot, before any
    /// device can use it. On `Err` (`NoMem`) nothing is kept. `bbml2`:
    /// the SMMU has break-before-make level 2 (SMMU_IDR3.BBML = 2), so
    /// the view may map blocks and split them live; without it every
    /// valid leaf is a page ([`Stage2::no_transient_faults`]: no device
    /// ever faults on a page it may reach).
    pub fn enable_dma<E: MmEnv>(&mut self, env: &mut E, mut pgt: Stage2, bbml2: bool) -> Result<(), Error> {
        pgt.set_iommu();
        pgt.set_who(hyp_abi::trace::WHO_DMA);
        pgt.keep_invalid_tables();
        pgt.no_transient_faults(bbml2);
        let mut pieces: Vec<(u64, u64, Leaf)> = Vec::new();
        for r in &self.ram {
            let r = self.pgt.for_each_leaf(env, r.base, r.end(), |m, a, b| {
                let mut p = a;
                while p < b {
                    // Borrowed pages are decided page by page (pins).
                    let l = m.at(p);
                    let step = if matches!(l, Leaf::Mapped { state: PageState::SharedBorrowed, .. }) {
                        PAGE_SIZE
                    } else {
                        b - p
                    };
                    if let Some(d) = dma_leaf(p, l, self.pins.count(p) != 0) {
                        if pieces.try_reserve(1).is_err() {
                            return Err(Error::NoMem);
                        }
                        pieces.push((p, step, d));
                    }
                    p += step;
                }
                Ok(())
            });
            if let Err(e) = r {
                pgt.destroy(env);
                return Err(e);
            }
        }
        for (a, size, l) in pieces {
            if let Err(e) = pgt.set(env, a, size, l) {
                pgt.destroy(env);
                return Err(e);
            }
        }
        self.dma = Some(pgt);
        Ok(())
    }

    /// Is `[pa, pa + size)` a page-aligned non-empty range inside one RAM region?
    #[inline]
    pub fn check_ram(&self, pa: u64, size: u64) -> Result<(), Error> {
        if size == 0 || !is_aligned(pa, PAGE_SIZE) || !is_aligned(size, PAGE_SIZE) {
            return Err(Error::Inval);
        }
        if self.ram.iter().any(|r| r.contains(pa, size)) {
            Ok(())
        } else {
            Err(Error::Inval)
        }
    }

    /// Resolves a host stage-2 fault at `ipa`: identity-maps the largest
    /// block around it that lies in one RAM or device region and that the
    /// host owns. `Err(Perm)`: the page belongs to the hyp or a guest;
    /// `Err(Inval)`: no memory or device there. Either way the caller
    /// injects an abort into the host.
    #[inline]
    pub fn handle_fault<E: MmEnv>(&mut self, env: &mut E, ipa: u64) -> Result<HostFault, Error> {
        match if one_page(PAGE_SIZE) { self.fault_entry(env, ipa) } else { None } {
            Some(r) => r,
            None => self.fault_range(env, ipa),
        }
    }

    /// The one-entry form of [`HostMm::handle_fault`]: the invalid entry
    /// holding `ipa` becomes the mapping, when it is the block the range
    /// form would map (one entry written, no table page, no merge).
    /// `None`: the range form decides.
    #[inline(always)]
    pub(in crate::mm) fn fault_entry<E: MmEnv>(&mut self, env: &mut E, ipa: u64) -> Option<Result<HostFault, Error>> {
        let s = self.pgt.entry(env, ipa & !(PAGE_SIZE - 1))?;
        if pte::is_valid(s.pte) {
            return Some(Ok(HostFault::Spurious));
        }
        if s.pte != pte::encode_owner(Owner::None) || s.level == 0 {
            return None;
        }
        let (region, attrs, device) = self.fault_region(ipa)?;
        // The range form maps the first level from the entry's down whose
        // block lies in the region: this entry's, or a split.
        if !region.contains(s.base, level_size(s.level)) {
            return None;
        }
        // Encoded per kind of region: each a constant but for PA and level.
        let new = if device {
            pte::encode(owned(s.base, Attrs::DEVICE_RW, PageState::Owned), s.level)
        } else {
            pte::encode(owned(s.base, HOST_RAM, PageState::Owned), s.level)
        };
        debug_assert_eq!(new, pte::encode(owned(s.base, attrs, PageState::Owned), s.level));
        let u = self.pgt.prepare_entry(env, &s, new)?;
        self.pgt.commit_entry(env, u);
        Some(Ok(HostFault::Mapped { level: s.level, base: s.base, device }))
    }

    /// The RAM or device region holding `ipa`, the attributes the host maps
    /// it with, and whether it is a device.
    #[inline(always)]
    fn fault_region(&self, ipa: u64) -> Option<(Region, Attrs, bool)> {
        if let Some(r) = self.ram.iter().find(|r| r.contains(ipa, 1)) {
            Some((*r, HOST_RAM, false))
        } else {
            self.devices.iter().find(|r| r.contains(ipa, 1)).map(|r| (*r, Attrs::DEVICE_RW, true))
        }
    }

    /// [`HostMm::handle_fault`] by range walks.
    #[inline(never)]
    pub(in crate::mm) fn fault_range<E: MmEnv>(&mut self, env: &mut E, ipa: u64) -> Result<HostFault, Error> {
        let (m, found) = self.pgt.lookup_found(env, ipa)?;
        match m.leaf {
            Leaf::Mapped { .. } => return Ok(HostFault::Spurious),
            Leaf::Invalid(Owner::None) => {}
            Leaf::Invalid(_) => return Err(Error::Perm),
        }
        let (region, attrs, device) = self.fault_region(ipa).ok_or(Error::Inval)?;
        for level in m.level.max(1)..=3 {
            let size = level_size(level);
            let base = ipa & !(size - 1);
            if region.contains(base, size) {
                // The update starts at the leaf the lookup found.
                let u = self.pgt.count_found(env, &found, base, size, owned(base, attrs, PageState::Owned))?;
                let u = u.reserve(env)?;
                self.pgt.commit(env, u);
                return Ok(HostFault::Mapped { level, base, device });
            }
        }
        Err(Error::Inval)
    }

    /// The host's view of the page at `pa`.
    pub fn leaf_at<E: MmEnv>(&self, env: &mut E, pa: u64) -> Result<Leaf, Error> {
        Ok(self.pgt.lookup(env, pa)?.at(pa & !(PAGE_SIZE - 1)))
    }

    /// Takes a host pin on a page a guest shared with the host.
    pub fn pin<E: MmEnv>(&mut self, env: &mut E, pa: u64, exclusive: bool) -> Result<(), Error> {
        if !is_aligned(pa, PAGE_SIZE) {
            return Err(Error::Inval);
        }
        self.check_ram(pa, PAGE_SIZE)?;
        if !matches!(self.leaf_at(env, pa)?, Leaf::Mapped { state: PageState::SharedBorrowed, .. }) {
            return Err(Error::Perm);
        }
        // The first pin maps the page in the DMA view: a pin is what makes
        // a borrowed page reachable by the host's devices.
        let ud =
            if self.pins.count(pa) == 0 { dma_prepare(env, &self.dma, pa, PAGE_SIZE, dma_pinned(pa))? } else { None };
        if let Err(e) = self.pins.pin(pa, exclusive) {
            dma_cancel(env, ud);
            return Err(e);
        }
        dma_commit(env, &mut self.dma, ud);
        Ok(())
    }

    /// Drops one host pin. The last one unmaps the page from the DMA view
    /// and completes the SMMU's TLB invalidation before it returns: no
    /// device can reach the page any more. `Err(NoMem)` only when that needs
    /// a table page (the page lies in a block of pinned pages) and none is
    /// left; nothing changes then.
    pub fn unpin<E: MmEnv>(&mut self, env: &mut E, pa: u64) -> Result<(), Error> {
        if !is_aligned(pa, PAGE_SIZE) {
            return Err(Error::Inval);
        }
        self.check_ram(pa, PAGE_SIZE)?;
        let ud = if self.pins.count(pa) == 1 {
            dma_prepare(env, &self.dma, pa, PAGE_SIZE, Leaf::Invalid(Owner::None))?
        } else {
            None
        };
        if let Err(e) = self.pins.unpin(pa) {
            dma_cancel(env, ud);
            return Err(e);
        }
        dma_commit(env, &mut self.dma, ud);
        Ok(())
    }
}
