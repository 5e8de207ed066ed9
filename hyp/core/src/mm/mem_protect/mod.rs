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
//! This file holds the owners' state ([`HostMm`], [`HypMm`], [`GuestMm`])
//! and what every transition shares: the attributes per kind of page, the
//! checks, the two-tree commit, the one-page form's side check, the DMA
//! view's leaves. The transitions themselves are by pair of owners:
//! `host.rs` (the host's own faults, pins and DMA view), `host_hyp.rs`,
//! `host_guest.rs`.

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
/// it (`pgtable::commit::Commit::split`).
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

mod host;
pub mod host_guest;
pub mod host_hyp;
pub mod pin_range;
