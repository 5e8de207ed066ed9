//! Page ownership and the transitions between owners.
//!
//! Three kinds of component own pages: the host, the hyp, and guests. Each
//! has a stage-2 (the hyp's is a bookkeeping tree no hardware walks) whose
//! leaves say, per page, OWNED / SHARED_OWNED / SHARED_BORROWED, or (invalid)
//! who else owns it. Every transition has the same shape: the caller holds the
//! locks (host, then hyp, then VM, in that order: the `&mut` arguments), the
//! whole range is checked on both sides, all table pages are allocated, then
//! both sides are committed. A refused call changes nothing.
//!
//! The hyp holds two kinds of page, told apart in the host's stage-2 and
//! recorded independently in [`HypMm::own`]: its own memory
//! ([`Owner::Hyp`]: image, stacks, page pool, tables, per-CPU data), which
//! never leaves it, and pages the host donated ([`Owner::HypDonated`]), the
//! only ones it gives back.
//!
//! Memory a guest gets is cleaned (and invalidated) to the point of
//! coherency, and the instruction cache invalidated, after the host lost it
//! and before the guest can see it: a guest may run with its caches off.
//! Memory the host gets back from a guest is zeroed and cleaned to the point
//! of coherency after the guest lost it and before the host can see it.

use alloc::vec::Vec;

use super::env::MmEnv;
use super::pgtable::{Counted, EntryUpdate, Found, Mapping, Stage2, Update};
use super::pins::Pins;
use super::prot::{Attrs, Leaf, Owner, PageState};
use super::region::Region;
use super::{is_aligned, level_size, pte, Error, PAGE_SIZE};

/// The host: its stage-2 (an identity map built lazily on faults), the
/// memory it may map, and its pins on pages guests share with it.
#[derive(Debug)]
pub struct HostMm {
    pub pgt: Stage2,
    pub pins: Pins,
    /// RAM (the hyp's own part is annotated [`Owner::Hyp`] in `pgt`).
    pub ram: Vec<Region>,
    /// Device MMIO regions the host may map.
    pub devices: Vec<Region>,
    /// The host's DMA view ([`HostMm::enable_dma`]): the stage-2 the SMMU
    /// walks for every host stream; `None` without an SMMU.
    pub dma: Option<Stage2>,
}

/// The hyp's own view: its own memory, pages donated to it or shared with it.
#[derive(Debug)]
pub struct HypMm {
    pub pgt: Stage2,
    /// The hyp's own memory ([`hyp_claim_own`]): never given to anyone.
    pub own: Vec<Region>,
}

impl HypMm {
    pub fn new(pgt: Stage2) -> Self {
        HypMm { pgt, own: Vec::new() }
    }

    /// Does `[pa, pa + size)` overlap the hyp's own memory?
    pub fn overlaps_own(&self, pa: u64, size: u64) -> bool {
        let end = pa.saturating_add(size);
        self.own.iter().any(|r| pa < r.end() && r.base < end)
    }
}

/// One guest's memory: IPA → PA.
#[derive(Debug)]
pub struct GuestMm {
    pub pgt: Stage2,
    pub handle: u16,
}

/// What a host stage-2 fault was resolved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostFault {
    /// Identity-mapped a block or page at this level.
    Mapped { level: u8, base: u64, device: bool },
    /// Already mapped (another CPU got there first).
    Spurious,
}

/// Attributes the host's own RAM is mapped with.
const HOST_RAM: Attrs = Attrs::NORMAL_RWX;
/// Attributes of a guest page the host borrows.
const HOST_BORROWED: Attrs = Attrs::NORMAL_RW;
/// Attributes of guest memory.
pub const GUEST_RAM: Attrs = Attrs::NORMAL_RWX;
/// Attributes of a page the hyp holds.
const HYP_MEM: Attrs = Attrs::NORMAL_RW;

#[inline(always)]
fn owned(pa: u64, attrs: Attrs, state: PageState) -> Leaf {
    Leaf::Mapped { pa, attrs, state }
}

/// Is this host leaf a page the host owns exclusively (mapped or not)?
fn host_owns(l: Leaf) -> bool {
    matches!(l, Leaf::Invalid(Owner::None) | Leaf::Mapped { attrs: HOST_RAM, state: PageState::Owned, .. })
}

/// The DMA view's leaf for a host page whose host leaf is `l` (the leaf as
/// seen at that page) and that the host pins (`pinned`), or `None` when no
/// device of the host may reach it: devices reach the host's own RAM (also
/// while shared with the hyp) and pages a guest shared with the host only
/// while the host pins them; never the hyp's pages, guest-private pages or
/// borrowed pages without a pin.
pub fn dma_leaf(pa: u64, l: Leaf, pinned: bool) -> Option<Leaf> {
    match l {
        // RAM the host has not faulted in yet is the host's own.
        Leaf::Invalid(Owner::None) => Some(dma_owned(pa)),
        Leaf::Mapped { attrs, .. } if attrs.mem != super::prot::MemType::Normal => None,
        Leaf::Mapped { state: PageState::Owned | PageState::SharedOwned, .. } => Some(dma_owned(pa)),
        Leaf::Mapped { state: PageState::SharedBorrowed, .. } if pinned => Some(dma_pinned(pa)),
        _ => None,
    }
}

/// The DMA view's leaf for the host's own page at `pa`.
pub const fn dma_owned(pa: u64) -> Leaf {
    Leaf::Mapped { pa, attrs: DMA_ATTRS, state: PageState::Owned }
}

/// The DMA view's leaf for a pinned page a guest shares with the host.
pub const fn dma_pinned(pa: u64) -> Leaf {
    Leaf::Mapped { pa, attrs: DMA_ATTRS, state: PageState::SharedBorrowed }
}

/// What devices may do with a page of the DMA view: read and write.
pub const DMA_ATTRS: Attrs = Attrs::NORMAL_RW;

/// Phase one of a DMA-view update (nothing without a DMA view).
fn dma_prepare<E: MmEnv>(
    env: &mut E,
    dma: &Option<Stage2>,
    pa: u64,
    size: u64,
    new: Leaf,
) -> Result<Option<Update>, Error> {
    match dma {
        Some(t) => t.prepare(env, pa, size, new).map(Some),
        None => Ok(None),
    }
}

/// Phase two: with an access removed, the SMMU's TLB is invalidated (and
/// the invalidation completed, CMD_SYNC) inside the commit.
fn dma_commit<E: MmEnv>(env: &mut E, dma: &mut Option<Stage2>, u: Option<Update>) {
    if let (Some(t), Some(u)) = (dma.as_mut(), u) {
        t.commit(env, u);
    }
}

fn dma_cancel<E: MmEnv>(env: &mut E, u: Option<Update>) {
    if let Some(u) = u {
        u.cancel(env);
    }
}

/// Checks every page of `[start, start + size)` in `pgt` with `ok`.
fn check_all<E: MmEnv>(
    env: &mut E,
    pgt: &Stage2,
    start: u64,
    size: u64,
    mut ok: impl FnMut(Leaf) -> bool,
) -> Result<(), Error> {
    let end = pgt.check_range(start, size)?;
    pgt.for_each_leaf(env, start, end, |m: Mapping, a, _| if ok(m.at(a)) { Ok(()) } else { Err(Error::Perm) })
}

/// A guest range as [`guest_range`] found it.
struct GuestRange {
    /// PA of the first page, the attributes and the state of all.
    pa: u64,
    attrs: Attrs,
    state: PageState,
    /// Where the walk went (the update of the range starts there).
    found: Found,
}

/// Checks that a guest range is mapped in `state`, with one attribute set and
/// physically contiguous; returns the PA of `ipa` and the attributes.
fn guest_range<E: MmEnv>(
    env: &mut E,
    guest: &GuestMm,
    ipa: u64,
    size: u64,
    state: impl Fn(PageState) -> bool,
) -> Result<GuestRange, Error> {
    let end = guest.pgt.check_range(ipa, size)?;
    let mut first: Option<(u64, Attrs, PageState)> = None;
    let found = guest.pgt.for_each_leaf_found(env, ipa, end, |m, a, _| match (m.at(a), first) {
        (Leaf::Mapped { pa, attrs, state: s }, None) if state(s) => {
            first = Some((pa, attrs, s));
            Ok(())
        }
        (Leaf::Mapped { pa, attrs, state: s }, Some((pa0, attrs0, s0)))
            if attrs == attrs0 && s == s0 && pa == pa0 + (a - ipa) =>
        {
            Ok(())
        }
        _ => Err(Error::Perm),
    })?;
    let (pa, attrs, state) = first.ok_or(Error::Perm)?;
    Ok(GuestRange { pa, attrs, state, found })
}

/// The end of phase one for two trees: allocates what both counted, or
/// nothing. `b` first: the table pages its commit's merges freed (it
/// commits last) are the first the environment hands out again, and a
/// split that gets back the page of the same block's merge need not fill
/// it (`pgtable::SetVisitor::split`).
#[inline(always)]
fn reserve_pair<E: MmEnv>(env: &mut E, a: Counted, b: Counted) -> Result<(Update, Update), Error> {
    let ub = b.reserve(env)?;
    match a.reserve(env) {
        Ok(ua) => Ok((ua, ub)),
        Err(e) => {
            ub.cancel(env);
            Err(e)
        }
    }
}

/// Ends phase one for both sides (allocation), then commits both; or
/// changes nothing.
#[inline(always)]
fn commit_counted<E: MmEnv>(env: &mut E, a: (&mut Stage2, Counted), b: (&mut Stage2, Counted)) -> Result<(), Error> {
    let (ua, ub) = reserve_pair(env, a.1, b.1)?;
    a.0.commit(env, ua);
    b.0.commit(env, ub);
    Ok(())
}

/// Phase one of one side of a one-page transition: the page at `addr` in
/// `pgt` is a page entry whose descriptor `change` accepts, giving the new
/// one, and the write needs no table page and no merge. `change` accepts
/// only `pte::encode`s of leaves the range path's check accepts, and gives
/// `pte::encode` of the leaf the range path writes: the one-page form then
/// writes what the range path would. `None`: the range path decides.
#[inline(always)]
fn page_side<E: MmEnv>(
    env: &mut E,
    pgt: &Stage2,
    addr: u64,
    change: impl FnOnce(u64) -> Option<u64>,
) -> Option<EntryUpdate> {
    let s = pgt.page_entry(env, addr)?;
    let new = change(s.pte)?;
    pgt.prepare_entry(env, &s, new)
}

/// Does an operation on `size` bytes try its one-page form first? Tests
/// can force the range form ([`RANGE_ONLY`]) to compare the two.
#[inline(always)]
fn one_page(size: u64) -> bool {
    size == PAGE_SIZE && !range_only()
}

#[cfg(not(test))]
#[inline(always)]
fn range_only() -> bool {
    false
}

#[cfg(test)]
fn range_only() -> bool {
    RANGE_ONLY.with(|c| c.get())
}

#[cfg(test)]
std::thread_local! {
    /// Tests: every transition and fault takes the range form.
    pub static RANGE_ONLY: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// `d` is the page descriptor of `leaf`: `change`'s test in [`page_side`].
#[inline(always)]
fn is_page(d: u64, leaf: Leaf) -> bool {
    d == pte::encode(leaf, 3)
}

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
    /// device can use it. On `Err` (`NoMem`) nothing is kept.
    pub fn enable_dma<E: MmEnv>(&mut self, env: &mut E, mut pgt: Stage2) -> Result<(), Error> {
        pgt.set_iommu();
        pgt.set_who(hyp_abi::trace::WHO_DMA);
        pgt.keep_invalid_tables();
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
    pub(super) fn fault_entry<E: MmEnv>(&mut self, env: &mut E, ipa: u64) -> Option<Result<HostFault, Error>> {
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
    pub(super) fn fault_range<E: MmEnv>(&mut self, env: &mut E, ipa: u64) -> Result<HostFault, Error> {
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

/// One host ↔ hyp transition: what both sides must hold over the whole
/// range, and what they hold afterwards.
struct HostHyp {
    host_before: fn(Leaf) -> bool,
    hyp_before: fn(Leaf) -> bool,
    host_after: fn(u64) -> Leaf,
    hyp_after: fn(u64) -> Leaf,
    /// The DMA view afterwards (`None`: unchanged).
    dma_after: Option<fn(u64) -> Leaf>,
    /// For one page (at `pa`), the host leaves (either) and the hyp leaf
    /// that `host_before` and `hyp_before` accept and that the one-page
    /// form ([`host_hyp_page`]) takes; any other goes the range way.
    /// `None`: always the range way (the DMA view changes too).
    page_before: Option<([Leaf; 2], Leaf)>,
}

/// The shape every host ↔ hyp transition shares: range check, both sides
/// checked over the whole range, both committed or neither. One page
/// takes the one-page form when it applies ([`host_hyp_page`]).
#[inline(always)]
fn host_hyp<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    hyp: &mut HypMm,
    pa: u64,
    size: u64,
    t: HostHyp,
) -> Result<(), Error> {
    host.check_ram(pa, size)?;
    if one_page(size) && host_hyp_page(env, host, hyp, pa, &t).is_some() {
        return Ok(());
    }
    host_hyp_range(env, host, hyp, pa, size, t)
}

/// The one-page form of [`host_hyp`] (the range checked): both sides'
/// page entries checked against the leaves `t.page_before` names, then
/// both written in one entry each. `None` (nothing changed): the range
/// way decides, refusals included.
#[inline(always)]
fn host_hyp_page<E: MmEnv>(env: &mut E, host: &mut HostMm, hyp: &mut HypMm, pa: u64, t: &HostHyp) -> Option<()> {
    let (hb, yb) = t.page_before?;
    debug_assert!((t.host_before)(hb[0]) && (t.host_before)(hb[1]) && (t.hyp_before)(yb));
    // Every descriptor worked out before the walks: the leaves are
    // constants but for `pa`, so each test below is one comparison.
    let (hb, yb) = ([pte::encode(hb[0], 3), pte::encode(hb[1], 3)], pte::encode(yb, 3));
    let (host_new, hyp_new) = (pte::encode((t.host_after)(pa), 3), pte::encode((t.hyp_after)(pa), 3));
    let uh = page_side(env, &host.pgt, pa, |d| (d == hb[0] || d == hb[1]).then_some(host_new))?;
    let uy = page_side(env, &hyp.pgt, pa, |d| (d == yb).then_some(hyp_new))?;
    host.pgt.commit_entry(env, uh);
    hyp.pgt.commit_entry(env, uy);
    Some(())
}

/// [`host_hyp`] by range walks.
#[inline(never)]
fn host_hyp_range<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    hyp: &mut HypMm,
    pa: u64,
    size: u64,
    t: HostHyp,
) -> Result<(), Error> {
    // Each side is checked in the walk that counts its update.
    let ch = host.pgt.count_checked(env, pa, size, (t.host_after)(pa), Some(t.host_before))?;
    let cy = hyp.pgt.count_checked(env, pa, size, (t.hyp_after)(pa), Some(t.hyp_before))?;
    let ud = match t.dma_after {
        Some(f) => dma_prepare(env, &host.dma, pa, size, f(pa))?,
        None => None,
    };
    if let Err(e) = commit_counted(env, (&mut host.pgt, ch), (&mut hyp.pgt, cy)) {
        dma_cancel(env, ud);
        return Err(e);
    }
    dma_commit(env, &mut host.dma, ud);
    Ok(())
}

fn dma_none(_: u64) -> Leaf {
    Leaf::Invalid(Owner::None)
}

fn nothing(l: Leaf) -> bool {
    l == Leaf::Invalid(Owner::None)
}

/// host → hyp share: host OWNED → SHARED_OWNED, hyp gets SHARED_BORROWED.
pub fn host_share_hyp<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    hyp: &mut HypMm,
    pa: u64,
    size: u64,
) -> Result<(), Error> {
    let t = HostHyp {
        host_before: host_owns,
        hyp_before: nothing,
        host_after: |pa| owned(pa, HOST_RAM, PageState::SharedOwned),
        hyp_after: |pa| owned(pa, HYP_MEM, PageState::SharedBorrowed),
        dma_after: None,
        page_before: Some((
            [Leaf::Invalid(Owner::None), owned(pa, HOST_RAM, PageState::Owned)],
            Leaf::Invalid(Owner::None),
        )),
    };
    host_hyp(env, host, hyp, pa, size, t)
}

/// Undoes [`host_share_hyp`].
pub fn host_unshare_hyp<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    hyp: &mut HypMm,
    pa: u64,
    size: u64,
) -> Result<(), Error> {
    let t = HostHyp {
        host_before: |l| matches!(l, Leaf::Mapped { state: PageState::SharedOwned, .. }),
        hyp_before: |l| matches!(l, Leaf::Mapped { state: PageState::SharedBorrowed, .. }),
        host_after: |pa| owned(pa, HOST_RAM, PageState::Owned),
        hyp_after: |_| Leaf::Invalid(Owner::None),
        dma_after: None,
        page_before: Some((
            [owned(pa, HOST_RAM, PageState::SharedOwned); 2],
            owned(pa, HYP_MEM, PageState::SharedBorrowed),
        )),
    };
    host_hyp(env, host, hyp, pa, size, t)
}

/// host → hyp donation: the host loses the pages.
pub fn host_donate_hyp<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    hyp: &mut HypMm,
    pa: u64,
    size: u64,
) -> Result<(), Error> {
    let t = HostHyp {
        host_before: host_owns,
        hyp_before: nothing,
        host_after: |_| Leaf::Invalid(Owner::HypDonated),
        hyp_after: |pa| owned(pa, HYP_MEM, PageState::Owned),
        dma_after: Some(dma_none),
        page_before: None,
    };
    host_hyp(env, host, hyp, pa, size, t)
}

/// hyp → host donation (RECLAIM_HYP): only pages the host donated come back
/// (unmapped; the host faults them in). The hyp's own memory is refused
/// (`Perm`) twice over: its host-side annotation is [`Owner::Hyp`], not
/// [`Owner::HypDonated`], and it lies in [`HypMm::own`].
pub fn hyp_donate_host<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    hyp: &mut HypMm,
    pa: u64,
    size: u64,
) -> Result<(), Error> {
    host.check_ram(pa, size)?;
    if hyp.overlaps_own(pa, size) {
        return Err(Error::Perm);
    }
    let t = HostHyp {
        host_before: |l| l == Leaf::Invalid(Owner::HypDonated),
        hyp_before: |l| matches!(l, Leaf::Mapped { state: PageState::Owned, .. }),
        host_after: |_| Leaf::Invalid(Owner::None),
        hyp_after: |_| Leaf::Invalid(Owner::None),
        dma_after: Some(dma_owned),
        page_before: None,
    };
    host_hyp(env, host, hyp, pa, size, t)
}

/// Records `[pa, pa + size)` (host RAM the host has not been given yet) as
/// the hyp's own memory, for good: [`Owner::Hyp`] in the host's stage-2,
/// owned in the hyp's table, and in [`HypMm::own`]. Boot records the
/// carve-out this way.
pub fn hyp_claim_own<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    hyp: &mut HypMm,
    pa: u64,
    size: u64,
) -> Result<(), Error> {
    host.check_ram(pa, size)?;
    if hyp.own.try_reserve(1).is_err() {
        return Err(Error::NoMem);
    }
    let t = HostHyp {
        host_before: host_owns,
        hyp_before: nothing,
        host_after: |_| Leaf::Invalid(Owner::Hyp),
        hyp_after: |pa| owned(pa, HYP_MEM, PageState::Owned),
        dma_after: Some(dma_none),
        page_before: None,
    };
    host_hyp(env, host, hyp, pa, size, t)?;
    hyp.own.push(Region { base: pa, size });
    Ok(())
}

/// host → guest donation of `[pa, pa + size)` at guest `ipa`: the guest owns
/// it (mapped with blocks where aligned); the host's table records the VM.
pub fn host_donate_guest<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    pa: u64,
    ipa: u64,
    size: u64,
) -> Result<(), Error> {
    host.check_ram(pa, size)?;
    guest.pgt.check_range(ipa, size)?;
    if host.pins.any_pinned(pa, size) {
        return Err(Error::Busy);
    }
    check_all(env, &host.pgt, pa, size, host_owns)?;
    check_all(env, &guest.pgt, ipa, size, |l| l == Leaf::Invalid(Owner::None))?;
    let h = guest.handle;
    let uh = host.pgt.prepare(env, pa, size, Leaf::Invalid(Owner::Guest(h)))?;
    let ug = match guest.pgt.prepare(env, ipa, size, owned(pa, GUEST_RAM, PageState::Owned)) {
        Ok(u) => u,
        Err(e) => {
            uh.cancel(env);
            return Err(e);
        }
    };
    let ud = match dma_prepare(env, &host.dma, pa, size, Leaf::Invalid(Owner::None)) {
        Ok(u) => u,
        Err(e) => {
            uh.cancel(env);
            ug.cancel(env);
            return Err(e);
        }
    };
    // The host loses the pages (and its TLB entries, the CPUs' and the
    // SMMU's: no device can write them either) first; then whatever it
    // wrote is pushed to memory and no line of it stays cached; only then
    // can the guest, perhaps with its caches off, see them.
    host.pgt.commit(env, uh);
    dma_commit(env, &mut host.dma, ud);
    env.dcache_clean_inval_poc(pa, size);
    if GUEST_RAM.perm.x {
        env.icache_inval_pou(pa, size);
    }
    guest.pgt.commit(env, ug);
    Ok(())
}

/// guest → host share (MEM_SHARE): guest OWNED → SHARED_OWNED in place; the
/// host maps the same pages SHARED_BORROWED.
#[inline]
pub fn guest_share_host<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    ipa: u64,
    size: u64,
) -> Result<u64, Error> {
    if one_page(size) {
        if let Some(r) = guest_host_page(env, host, guest, ipa, PageState::Owned) {
            return r;
        }
    }
    guest_share_host_range(env, host, guest, ipa, size)
}

/// The one-page form of [`guest_share_host`] (`from` OWNED) and
/// [`guest_unshare_host`] (`from` SHARED_OWNED): the guest's page entry
/// and the host's entry of its PA checked against the one leaf each that
/// the range way's checks accept and a one-page form takes, the host's
/// pins (unshare), then both written in one entry each. `None` (nothing
/// changed): the range way decides, refusals included.
#[inline(always)]
pub(super) fn guest_host_page<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    ipa: u64,
    from: PageState,
) -> Option<Result<u64, Error>> {
    let to = if from == PageState::Owned { PageState::SharedOwned } else { PageState::Owned };
    let mut pa = 0;
    let ug = page_side(env, &guest.pgt, ipa, |d| {
        pa = pte::oa(d);
        is_page(d, owned(pa, GUEST_RAM, from)).then(|| pte::encode(owned(pa, GUEST_RAM, to), 3))
    })?;
    let lent = pte::encode_owner(Owner::Guest(guest.handle));
    let borrowed = pte::encode(owned(pa, HOST_BORROWED, PageState::SharedBorrowed), 3);
    let (before, after) = if from == PageState::Owned { (lent, borrowed) } else { (borrowed, lent) };
    let uh = page_side(env, &host.pgt, pa, |d| (d == before).then_some(after))?;
    if from == PageState::SharedOwned && host.pins.any_pinned(pa, PAGE_SIZE) {
        return Some(Err(Error::Busy));
    }
    host.pgt.commit_entry(env, uh);
    guest.pgt.commit_entry(env, ug);
    Some(Ok(pa))
}

/// [`guest_host_page`] where it declines for a block or a merge: the
/// guest's leaf and the host's leaf of its PA, each found by one descent
/// that records its path ([`Stage2::page_path`]), checked against the one
/// leaf each that the range way's checks accept and this form takes (the
/// descriptor of the whole entry at its level), the host's pins
/// (unshare), then counted and committed by the page form of the range
/// update ([`Stage2::count_page`]): splits down to the page, merges up
/// from it, as the range way makes them. `None` (nothing changed): the
/// range way decides, refusals included.
#[inline(always)]
fn guest_host_path<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    ipa: u64,
    from: PageState,
) -> Option<Result<u64, Error>> {
    let share = from == PageState::Owned;
    let to = if share { PageState::SharedOwned } else { PageState::Owned };
    let g = guest.pgt.page_path(env, ipa)?;
    let base = pte::oa(g.pte);
    if g.pte != pte::encode(owned(base, GUEST_RAM, from), g.level) {
        return None;
    }
    let pa = base + (ipa - g.base);
    let hp = host.pgt.page_path(env, pa)?;
    let lent = Leaf::Invalid(Owner::Guest(guest.handle));
    let (before, after) = if share {
        (lent, owned(pa, HOST_BORROWED, PageState::SharedBorrowed))
    } else {
        (owned(hp.base, HOST_BORROWED, PageState::SharedBorrowed), lent)
    };
    if hp.pte != pte::encode(before, hp.level) {
        return None;
    }
    if !share && host.pins.any_pinned(pa, PAGE_SIZE) {
        return Some(Err(Error::Busy));
    }
    let ch = host.pgt.count_page(&hp, pa, after);
    let cg = guest.pgt.count_page(&g, ipa, owned(pa, GUEST_RAM, to));
    Some(commit_counted(env, (&mut host.pgt, ch), (&mut guest.pgt, cg)).map(|()| pa))
}

/// [`guest_share_host`] by range walks.
#[inline(never)]
pub(super) fn guest_share_host_range<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    ipa: u64,
    size: u64,
) -> Result<u64, Error> {
    if one_page(size) {
        if let Some(r) = guest_host_path(env, host, guest, ipa, PageState::Owned) {
            return r;
        }
    }
    let g = guest_range(env, guest, ipa, size, |s| s == PageState::Owned)?;
    let h = guest.handle;
    // The host side is checked in the walk that counts its update; the
    // guest side's count starts where guest_range's walk ended.
    let ch = host.pgt.count_checked(
        env,
        g.pa,
        size,
        owned(g.pa, HOST_BORROWED, PageState::SharedBorrowed),
        Some(|l| l == Leaf::Invalid(Owner::Guest(h))),
    )?;
    let cg = guest.pgt.count_found(env, &g.found, ipa, size, owned(g.pa, g.attrs, PageState::SharedOwned))?;
    commit_counted(env, (&mut host.pgt, ch), (&mut guest.pgt, cg))?;
    Ok(g.pa)
}

/// guest → host unshare (MEM_UNSHARE): the host mapping goes (with TLB
/// invalidation) before the guest sees the pages private. `Err(Busy)` while
/// the host holds a pin on any of them.
#[inline]
pub fn guest_unshare_host<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    ipa: u64,
    size: u64,
) -> Result<u64, Error> {
    if one_page(size) {
        if let Some(r) = guest_host_page(env, host, guest, ipa, PageState::SharedOwned) {
            return r;
        }
    }
    guest_unshare_host_range(env, host, guest, ipa, size)
}

/// [`guest_unshare_host`] by range walks.
#[inline(never)]
pub(super) fn guest_unshare_host_range<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    ipa: u64,
    size: u64,
) -> Result<u64, Error> {
    if one_page(size) {
        if let Some(r) = guest_host_path(env, host, guest, ipa, PageState::SharedOwned) {
            return r;
        }
    }
    let g = guest_range(env, guest, ipa, size, |s| s == PageState::SharedOwned)?;
    let h = guest.handle;
    let ch = host.pgt.count_checked(
        env,
        g.pa,
        size,
        Leaf::Invalid(Owner::Guest(h)),
        Some(|l| matches!(l, Leaf::Mapped { state: PageState::SharedBorrowed, .. })),
    )?;
    if host.pins.any_pinned(g.pa, size) {
        return Err(Error::Busy);
    }
    let cg = guest.pgt.count_found(env, &g.found, ipa, size, owned(g.pa, g.attrs, PageState::Owned))?;
    commit_counted(env, (&mut host.pgt, ch), (&mut guest.pgt, cg))?;
    Ok(g.pa)
}

/// guest gives pages back (MEM_RELINQUISH): scrubbed, then host-owned.
/// Shared pages may be relinquished unless the host pins them.
pub fn guest_relinquish<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    ipa: u64,
    size: u64,
) -> Result<u64, Error> {
    let g = guest_range(env, guest, ipa, size, |s| matches!(s, PageState::Owned | PageState::SharedOwned))?;
    reclaim(env, host, guest, ipa, g.pa, size, g.state)?;
    Ok(g.pa)
}

/// Checks the host side of guest pages in `state`, then scrubs them and gives
/// them to the host.
fn reclaim<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    ipa: u64,
    pa: u64,
    size: u64,
    state: PageState,
) -> Result<(), Error> {
    let h = guest.handle;
    if state == PageState::SharedOwned {
        check_all(env, &host.pgt, pa, size, |l| matches!(l, Leaf::Mapped { state: PageState::SharedBorrowed, .. }))?;
        if host.pins.any_pinned(pa, size) {
            return Err(Error::Busy);
        }
    } else {
        check_all(env, &host.pgt, pa, size, |l| l == Leaf::Invalid(Owner::Guest(h)))?;
    }
    let ug = guest.pgt.prepare(env, ipa, size, Leaf::Invalid(Owner::None))?;
    let uh = match host.pgt.prepare(env, pa, size, Leaf::Invalid(Owner::None)) {
        Ok(u) => u,
        Err(e) => {
            ug.cancel(env);
            return Err(e);
        }
    };
    let ud = match dma_prepare(env, &host.dma, pa, size, dma_owned(pa)) {
        Ok(u) => u,
        Err(e) => {
            ug.cancel(env);
            uh.cancel(env);
            return Err(e);
        }
    };
    // Unmap from the guest first, so nobody can see the page while it is
    // scrubbed; the zeroes reach memory before the host (perhaps with its
    // caches off) or its devices can see the page.
    guest.pgt.commit(env, ug);
    env.scrub(pa, size);
    env.dcache_clean_inval_poc(pa, size);
    host.pgt.commit(env, uh);
    dma_commit(env, &mut host.dma, ud);
    Ok(())
}

/// VM teardown: scrubs every page of the guest and returns it to the host.
/// All-or-nothing per leaf: on `Err` (a pinned shared page: `Busy`; no table
/// memory: `NoMem`) the pages reclaimed so far stay reclaimed and the call
/// can be repeated. Returns the bytes reclaimed.
pub fn guest_teardown<E: MmEnv>(env: &mut E, host: &mut HostMm, guest: &mut GuestMm) -> Result<u64, Error> {
    let limit = guest.pgt.ipa_limit();
    let mut cursor = 0;
    let mut total = 0;
    loop {
        let mut next: Option<(u64, u64, u64, PageState)> = None;
        let r = guest.pgt.for_each_leaf(env, cursor, limit, |m, a, b| match m.at(a) {
            Leaf::Mapped { pa, state, .. } => {
                next = Some((a, pa, b - a, state));
                Err(Error::NoEnt)
            }
            Leaf::Invalid(_) => Ok(()),
        });
        let Some((ipa, pa, size, state)) = next else {
            r?;
            return Ok(total);
        };
        if state == PageState::SharedBorrowed {
            // Guests never borrow; treat as corruption-free refusal.
            return Err(Error::Perm);
        }
        reclaim(env, host, guest, ipa, pa, size, state)?;
        total += size;
        cursor = ipa + size;
    }
}
