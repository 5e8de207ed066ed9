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
//! With stage-2 forced write-back (FEAT_S2FWB) the cleans are left out
//! where no observer can read around the caches (`mm::cmo`).
//!
//! Every transition is written once, as one function: the locks taken by
//! the caller in the fixed order, phase one (both sides checked over the
//! range and their updates counted), then the change (table pages
//! allocated for both or neither, both committed). A one-page call is the
//! same function specialised by its descent (`Descent`): one descent
//! per side that compares the leaf with the descriptors the range check
//! accepts, then the entry rewritten in place (`InPlaceOnly`, the hot
//! path) or the update counted from that leaf (`FromLeaf`); any other
//! leaf (and every refusal) takes the range check, whose walks say what
//! and where ([`Refused`]). The change is one (`PairChange`).
//!
//! This file holds the owners' state ([`HostMm`], [`HypMm`], [`GuestMm`])
//! and what every transition shares: the attributes per kind of page, the
//! checks, the one-page side check, the two-tree commit, the DMA view's
//! leaves. The transitions themselves are by pair of owners: `host.rs`
//! (the host's own faults, pins and DMA view), `host_hyp.rs`,
//! `host_guest.rs`; `refused.rs` what a refusal says.

use alloc::vec::Vec;

use super::env::MmEnv;
use super::pgtable::{Counted, Found, InPlace, Mapping, PagePath, Stage2, Update};
use super::pins::Pins;
use super::prot::{Attrs, Leaf, MemType, Owner, PageState};
use super::region::Region;
use super::{Error, PAGE_SIZE};

mod host;
pub mod host_guest;
pub mod host_hyp;
pub mod pin_range;
mod refused;
pub mod vm_tables;

pub use super::addr::{Ipa, Pa};
pub use refused::{Refused, Side};

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
    pub fn overlaps_own(&self, pa: Pa, size: u64) -> bool {
        let (pa, end) = (pa.0, pa.0.saturating_add(size));
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
/// seen at that page) and that the view maps as pinned (`pinned`: it took
/// a pin and no conversion took it since, [`Pins::is_mapped`]), or `None`
/// when no device of the host may reach it: devices reach the host's own
/// RAM (also while shared with the hyp) and pages a guest shared with the
/// host from their first pin until a conversion takes them from the host;
/// never the hyp's pages, guest-private pages or borrowed pages never
/// pinned.
pub fn dma_leaf(pa: u64, l: Leaf, pinned: bool) -> Option<Leaf> {
    match l {
        // RAM the host has not faulted in yet is the host's own.
        Leaf::Invalid(Owner::None) => Some(dma_owned(pa)),
        Leaf::Mapped { attrs, .. } if attrs.mem != MemType::Normal => None,
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
) -> Result<Option<Update>, Refused> {
    match dma {
        Some(t) => t.prepare(env, pa, size, new).map(Some).map_err(|e| Refused::new(e, Side::Dma, pa)),
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

/// Checks every page of `[start, start + size)` in `side`'s tree `pgt`
/// with `ok`: the first page it refuses says where and what.
fn check_all<E: MmEnv>(
    env: &mut E,
    pgt: &Stage2,
    side: Side,
    start: u64,
    size: u64,
    mut ok: impl FnMut(Leaf) -> bool,
) -> Result<(), Refused> {
    let end = pgt.check_range(start, size).map_err(|e| Refused::new(e, Side::Args, start))?;
    let mut bad = None;
    let r = pgt.for_each_leaf(env, start, end, |m: Mapping, a, _| {
        if ok(m.at(a)) {
            Ok(())
        } else {
            bad = Some((a, m.at(a)));
            Err(Error::Perm)
        }
    });
    match (r, bad) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some((a, l))) => Err(Refused::state(side, a, l)),
        (Err(e), None) => Err(Refused::new(e, side, start)),
    }
}

/// The refusal of a range check that the walk counting the update folded
/// in ([`Stage2::count_checked`]): on `Perm`, a walk finds the first page
/// `ok` refuses (the error path only).
#[cold]
fn refusal<E: MmEnv>(
    env: &mut E,
    pgt: &Stage2,
    side: Side,
    start: u64,
    size: u64,
    e: Error,
    ok: impl FnMut(Leaf) -> bool,
) -> Refused {
    match (e, check_all(env, pgt, side, start, size, ok)) {
        (Error::Perm, Err(r)) => r,
        (e, _) => Refused::new(e, side, start),
    }
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
) -> Result<GuestRange, Refused> {
    let side = Side::Guest;
    let end = guest.pgt.check_range(ipa, size).map_err(|e| Refused::new(e, Side::Args, ipa))?;
    let mut first: Option<(u64, Attrs, PageState)> = None;
    let mut bad = None;
    let r = guest.pgt.for_each_leaf_found(env, ipa, end, |m, a, _| match (m.at(a), first) {
        (Leaf::Mapped { pa, attrs, state: s }, None) if state(s) => {
            first = Some((pa, attrs, s));
            Ok(())
        }
        (Leaf::Mapped { pa, attrs, state: s }, Some((pa0, attrs0, s0)))
            if attrs == attrs0 && s == s0 && pa == pa0 + (a - ipa) =>
        {
            Ok(())
        }
        (l, _) => {
            bad = Some((a, l));
            Err(Error::Perm)
        }
    });
    let found = match (r, bad) {
        (Ok(f), _) => f,
        (Err(_), Some((a, l))) => return Err(Refused::state(side, a, l)),
        (Err(e), None) => return Err(Refused::new(e, side, ipa)),
    };
    let (pa, attrs, state) = first.ok_or(Refused::new(Error::Perm, side, ipa))?;
    Ok(GuestRange { pa, attrs, state, found })
}

/// Both sides' phase one of a transition, and the change that follows:
/// both entries rewritten in place, or both updates counted (table pages
/// allocated for both or neither, then both committed). `a` is changed
/// first, then `b`; `at` is the first address of the range on each side,
/// for a refusal (`NoMem`).
trait PairChange {
    fn commit<E: MmEnv>(
        self,
        env: &mut E,
        a: (&mut Stage2, Side, u64),
        b: (&mut Stage2, Side, u64),
    ) -> Result<(), Refused>;
}

impl PairChange for (InPlace, InPlace) {
    #[inline(always)]
    fn commit<E: MmEnv>(
        self,
        env: &mut E,
        a: (&mut Stage2, Side, u64),
        b: (&mut Stage2, Side, u64),
    ) -> Result<(), Refused> {
        a.0.commit_in_place(env, self.0);
        b.0.commit_in_place(env, self.1);
        Ok(())
    }
}

impl PairChange for (Counted, Counted) {
    /// `b` is reserved first: the table pages its commit's merges freed
    /// (it commits last) are the first the environment hands out again,
    /// and a split that gets back the page of the same block's merge need
    /// not fill it (`pgtable::commit::Commit::split`).
    #[inline(always)]
    fn commit<E: MmEnv>(
        self,
        env: &mut E,
        a: (&mut Stage2, Side, u64),
        b: (&mut Stage2, Side, u64),
    ) -> Result<(), Refused> {
        let ub = self.1.reserve(env).map_err(|e| Refused::new(e, b.1, b.2))?;
        let ua = match self.0.reserve(env) {
            Ok(ua) => ua,
            Err(e) => {
                ub.cancel(env);
                return Err(Refused::new(e, a.1, a.2));
            }
        };
        a.0.commit(env, ua);
        b.0.commit(env, ub);
        Ok(())
    }
}

/// How a one-page check descends and what its change is: [`InPlaceOnly`]
/// on the hot path, [`FromLeaf`] when that declines.
trait Descent {
    type Change;
    /// Phase one of one side of a one-page transition: the page at `addr`
    /// in `pgt`, found by one descent, whose leaf entry `change` accepts
    /// (given the descent), giving the page's new leaf. `change` accepts
    /// only `pte::encode`s of leaves the range check accepts: the one-page
    /// form then writes what the range form would. `None`: a later form
    /// decides, refusals included.
    fn side<E: MmEnv>(
        env: &mut E,
        pgt: &Stage2,
        addr: u64,
        change: impl FnOnce(&PagePath) -> Option<Leaf>,
    ) -> Option<Self::Change>;
}

/// A page entry whose table stays not uniform, rewritten in place
/// ([`Stage2::page_entry`]: no path recorded; [`Stage2::prepare_in_place`]).
struct InPlaceOnly;

/// Any leaf, its update counted from it ([`Stage2::page_path`],
/// [`Stage2::count_page`]: the splits and merges the range commit would
/// make).
struct FromLeaf;

impl Descent for InPlaceOnly {
    type Change = InPlace;
    #[inline(always)]
    fn side<E: MmEnv>(
        env: &mut E,
        pgt: &Stage2,
        addr: u64,
        change: impl FnOnce(&PagePath) -> Option<Leaf>,
    ) -> Option<InPlace> {
        let p = pgt.page_entry(env, addr)?;
        let new = change(&p)?;
        pgt.prepare_in_place(env, &p, pgt.encode(new, 3))
    }
}

impl Descent for FromLeaf {
    type Change = Counted;
    #[inline(always)]
    fn side<E: MmEnv>(
        env: &mut E,
        pgt: &Stage2,
        addr: u64,
        change: impl FnOnce(&PagePath) -> Option<Leaf>,
    ) -> Option<Counted> {
        let p = pgt.page_path(env, addr)?;
        let new = change(&p)?;
        Some(pgt.count_page(&p, addr, new))
    }
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

/// `p` (of `pgt`: the host's or a guest's stage-2) is the entry of `leaf`
/// (given at the entry's first address) at its level, in the tree's own
/// MemAttr encoding ([`Stage2::encode`]): a one-page check's test
/// ([`Descent::side`]). A page entry's descriptor is worked out with its
/// level a constant.
#[inline(always)]
fn is_entry(pgt: &Stage2, p: &PagePath, leaf: Leaf) -> bool {
    if p.level == 3 {
        p.pte == pgt.encode(leaf, 3)
    } else {
        p.pte == block_entry(pgt, leaf, p.level)
    }
}

/// The descriptor of `leaf` at block `level` of `pgt` (out of line: blocks
/// only).
#[inline(never)]
fn block_entry(pgt: &Stage2, leaf: Leaf, level: u8) -> u64 {
    pgt.encode(leaf, level)
}
