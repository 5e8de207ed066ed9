//! The host's side of ownership: its stage-2 faults (the lazy identity map
//! of its RAM and devices), its pins on pages guests share with it, and
//! its DMA view.

use alloc::vec::Vec;

use super::vm_tables::tables_for_split;
use super::{dma_leaf, owned, range_only, HostFault, HostMm, Pa, Refused, Side, HOST_RAM};
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
                    if let Some(d) = dma_leaf(p, l, self.pins.is_mapped(p)) {
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

    /// The table pages the host's stage-2 can ever need: split down to
    /// pages over all RAM ([`tables_for_split`]), and at both ends of each
    /// device region (the lazy map uses the largest blocks inside one),
    /// one table per level below the root.
    pub fn tables_needed(start_level: u8, ram: &[Region], devices: &[Region]) -> u64 {
        let ram: u64 = ram.iter().map(|r| tables_for_split(start_level, r.base, r.size)).sum();
        ram + devices.len() as u64 * 2 * (3 - start_level as u64)
    }

    /// The table pages the host's DMA view can ever need: the same split
    /// down to pages over all RAM (the view maps nothing else).
    pub fn dma_tables_needed(start_level: u8, ram: &[Region]) -> u64 {
        ram.iter().map(|r| tables_for_split(start_level, r.base, r.size)).sum()
    }

    /// Sets the host's table reserves aside (at boot, after the DMA view
    /// was built): from now on the host's stage-2 takes its tables only
    /// from [`HostMm::tables_needed`] pages of its own, and its DMA view
    /// only from [`HostMm::dma_tables_needed`] less those it holds; merges
    /// give theirs back there. No guest's use of its memory (its shares,
    /// the pages it gives back, its teardown) can then make the host's
    /// calls fail for want of a table, nor take a table page from the
    /// pool, which other VMs need. A DMA view that maps pages only was
    /// built split down to pages over all the host's RAM and keeps every
    /// table, so it needs no more: it gets none (an update that would is
    /// refused, `NoMem`). One with blocks (BBML2) splits them as the host
    /// and guests change what devices may reach. `NoMem` if the
    /// environment has too few pages (what it took stays set aside).
    pub fn reserve_tables<E: MmEnv>(&mut self, env: &mut E) -> Result<(), Error> {
        self.reserve_tables_with(env, |e| e.alloc_table_for_fill())
    }

    /// The pages [`HostMm::reserve_tables`] takes, asked before it runs.
    pub fn reserve_pages_needed(&self) -> u64 {
        let dma =
            self.dma.as_ref().filter(|d| !d.pages_only()).map_or(0, |d| {
                Self::dma_tables_needed(d.start_level(), &self.ram).saturating_sub(d.table_pages() as u64)
            });
        Self::tables_needed(self.pgt.start_level(), &self.ram, &self.devices) + dma
    }

    /// [`HostMm::reserve_tables`] with the pages `next` gives (as
    /// [`MmEnv::alloc_table_for_fill`] does): boot takes them one after
    /// the other from memory it set aside for them, at most
    /// [`HostMm::tables_needed`] + [`HostMm::dma_tables_needed`].
    pub fn reserve_tables_with<E: MmEnv>(
        &mut self,
        env: &mut E,
        mut next: impl FnMut(&mut E) -> Option<u64>,
    ) -> Result<(), Error> {
        let n = Self::tables_needed(self.pgt.start_level(), &self.ram, &self.devices);
        self.pgt.use_own_tables();
        self.pgt.fill_own_tables_with(env, n as usize, &mut next)?;
        if let Some(dma) = self.dma.as_mut() {
            dma.use_own_tables();
            if !dma.pages_only() {
                let n = Self::dma_tables_needed(dma.start_level(), &self.ram);
                dma.fill_own_tables_with(env, (n as usize).saturating_sub(dma.table_pages()), next)?;
            }
        }
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

    /// Does the DMA view map the page at `pa` (the host's devices may DMA
    /// there: the host's own RAM, and a page a guest shares with the host
    /// from its first pin until a conversion takes it)? False without a
    /// DMA view (`PAGE_STATE` x6). Out of line: rarely asked.
    #[inline(never)]
    pub fn dma_maps<E: MmEnv>(&self, env: &mut E, pa: u64) -> bool {
        let page = pa & !(PAGE_SIZE - 1);
        let m = self.dma.as_ref().and_then(|t| t.lookup(env, page).ok());
        m.is_some_and(|m| matches!(m.at(page), Leaf::Mapped { .. }))
    }

    /// Takes a host pin on a page a guest shared with the host:
    /// [`HostMm::pin_range`] of one page.
    pub fn pin<E: MmEnv>(&mut self, env: &mut E, pa: Pa, exclusive: bool) -> Result<(), Refused> {
        self.pin_range(env, pa, 1, exclusive)
    }

    /// Drops one host pin: [`HostMm::unpin_range`] of one page. The DMA
    /// view keeps the page until a conversion takes it.
    pub fn unpin<E: MmEnv>(&mut self, env: &mut E, pa: Pa) -> Result<(), Refused> {
        self.unpin_range(env, pa, 1)
    }
}
