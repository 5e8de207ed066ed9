//! The host's side of ownership: its stage-2 faults (the lazy identity map
//! of its RAM and devices), its pins on pages guests share with it, and
//! its DMA view.

use alloc::vec::Vec;

use super::{
    dma_cancel, dma_commit, dma_leaf, dma_pinned, dma_prepare, owned, range_only, HostFault, HostMm, Pa, Refused, Side,
    HOST_RAM,
};
use crate::mm::env::MmEnv;
use crate::mm::pgtable::Stage2;
use crate::mm::pins::Pins;
use crate::mm::prot::{Attrs, Leaf, Owner, PageState};
use crate::mm::region::Region;
use crate::mm::{is_aligned, level_size, pte, Error, PAGE_SIZE};

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
    pub fn check_ram(&self, pa: Pa, size: u64) -> Result<(), Refused> {
        let pa = pa.0;
        if size != 0
            && is_aligned(pa, PAGE_SIZE)
            && is_aligned(size, PAGE_SIZE)
            && self.ram.iter().any(|r| r.contains(pa, size))
        {
            Ok(())
        } else {
            Err(Refused::new(Error::Inval, Side::Args, pa))
        }
    }

    /// Resolves a host stage-2 fault at `ipa` (the host's IPA is the PA):
    /// identity-maps the largest block around it that lies in one RAM or
    /// device region and that the host owns. `Perm`: the page belongs to
    /// the hyp or a guest; `Inval`: no memory or device there. Either way
    /// the caller injects an abort into the host.
    ///
    /// One descent finds the leaf ([`Stage2::page_leaf`]); the block to
    /// map is decided from it; when the leaf is that block's entry its
    /// descriptor is written in place ([`Stage2::prepare_in_place`]),
    /// otherwise (a split, a merge due, no hint) the update is counted
    /// from the same leaf, its path recorded by a second descent
    /// (out of line). Inlined into the hyp's two fault entries (the short
    /// one and the full frame's): left to the compiler's choice it moved
    /// out of line with unrelated changes, +14 instructions a fault.
    #[inline(always)]
    pub fn handle_fault<E: MmEnv>(&mut self, env: &mut E, ipa: Pa) -> Result<HostFault, Refused> {
        let ipa = ipa.0;
        let page = ipa & !(PAGE_SIZE - 1);
        let p = self.pgt.page_leaf(env, page).ok_or(Refused::new(Error::Inval, Side::Args, ipa))?;
        if pte::is_valid(p.pte) {
            return Ok(HostFault::Spurious);
        }
        if p.pte != pte::encode_owner(Owner::None) {
            return Err(Refused::state(Side::Host, page, pte::decode(p.pte)));
        }
        let (region, device) = self.fault_region(ipa).ok_or(Refused::new(Error::Inval, Side::Args, ipa))?;
        // The first level from the entry's down whose block lies in the
        // region: this entry's, or a split.
        for level in p.level.max(1)..=3 {
            let size = level_size(level);
            let base = ipa & !(size - 1);
            if !region.contains(base, size) {
                continue;
            }
            // Encoded per kind of region: each a constant but for PA and level.
            let new = if device {
                owned(base, Attrs::DEVICE_RW, PageState::Owned)
            } else {
                owned(base, HOST_RAM, PageState::Owned)
            };
            if level == p.level && !range_only() {
                if let Some(u) = self.pgt.prepare_in_place(env, &p, self.pgt.encode(new, level)) {
                    self.pgt.commit_in_place(env, u);
                    return Ok(HostFault::Mapped { level, base, device });
                }
            }
            self.fault_commit(env, base, size, new)?;
            return Ok(HostFault::Mapped { level, base, device });
        }
        Err(Refused::new(Error::Inval, Side::Args, ipa))
    }

    /// [`HostMm::handle_fault`]'s update counted from the leaf its descent
    /// found (a split, or a merge due), then committed: out of line.
    #[inline(never)]
    fn fault_commit<E: MmEnv>(&mut self, env: &mut E, base: u64, size: u64, new: Leaf) -> Result<(), Refused> {
        // The descent again, recording its path this time.
        let p = self.pgt.page_path(env, base).ok_or(Refused::new(Error::Inval, Side::Args, base))?;
        let c = self.pgt.count_found(env, p.found(), base, size, new).map_err(|e| Refused::new(e, Side::Host, base))?;
        let u = c.reserve(env).map_err(|e| Refused::new(e, Side::Host, base))?;
        self.pgt.commit(env, u);
        Ok(())
    }

    /// The RAM or device region holding `ipa`, and whether it is a device.
    #[inline(always)]
    fn fault_region(&self, ipa: u64) -> Option<(Region, bool)> {
        if let Some(r) = self.ram.iter().find(|r| r.contains(ipa, 1)) {
            Some((*r, false))
        } else {
            self.devices.iter().find(|r| r.contains(ipa, 1)).map(|r| (*r, true))
        }
    }

    /// The host's view of the page at `pa`.
    pub fn leaf_at<E: MmEnv>(&self, env: &mut E, pa: Pa) -> Result<Leaf, Refused> {
        let m = self.pgt.lookup(env, pa.0).map_err(|e| Refused::new(e, Side::Args, pa.0))?;
        Ok(m.at(pa.0 & !(PAGE_SIZE - 1)))
    }

    /// Takes a host pin on a page a guest shared with the host.
    pub fn pin<E: MmEnv>(&mut self, env: &mut E, pa: Pa, exclusive: bool) -> Result<(), Refused> {
        self.check_ram(pa, PAGE_SIZE)?;
        let l = self.leaf_at(env, pa)?;
        let pa = pa.0;
        if !matches!(l, Leaf::Mapped { state: PageState::SharedBorrowed, .. }) {
            return Err(Refused::state(Side::Host, pa, l));
        }
        // The first pin maps the page in the DMA view: a pin is what makes
        // a borrowed page reachable by the host's devices.
        let ud =
            if self.pins.count(pa) == 0 { dma_prepare(env, &self.dma, pa, PAGE_SIZE, dma_pinned(pa))? } else { None };
        if let Err(e) = self.pins.pin(pa, exclusive) {
            dma_cancel(env, ud);
            return Err(Refused::new(e, Side::Pins, pa));
        }
        dma_commit(env, &mut self.dma, ud);
        Ok(())
    }

    /// Drops one host pin. The last one unmaps the page from the DMA view
    /// and completes the SMMU's TLB invalidation before it returns: no
    /// device can reach the page any more. `Err(NoMem)` only when that needs
    /// a table page (the page lies in a block of pinned pages) and none is
    /// left; nothing changes then.
    pub fn unpin<E: MmEnv>(&mut self, env: &mut E, pa: Pa) -> Result<(), Refused> {
        self.check_ram(pa, PAGE_SIZE)?;
        let pa = pa.0;
        let ud = if self.pins.count(pa) == 1 {
            dma_prepare(env, &self.dma, pa, PAGE_SIZE, Leaf::Invalid(Owner::None))?
        } else {
            None
        };
        if let Err(e) = self.pins.unpin(pa) {
            dma_cancel(env, ud);
            return Err(Refused::new(e, Side::Pins, pa));
        }
        dma_commit(env, &mut self.dma, ud);
        Ok(())
    }
}
