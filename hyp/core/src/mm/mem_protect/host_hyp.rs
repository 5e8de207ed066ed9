//! Transitions between the host and the hyp: share and unshare
//! (SHARE_HYP / UNSHARE_HYP), donate and reclaim (DONATE_HYP /
//! RECLAIM_HYP), and the hyp's claim on its own memory at boot. One
//! function for all ([`host_hyp`]): both sides checked over the whole
//! range, then both committed, or nothing; each transition is a
//! description ([`HostHyp`]).

use super::{
    dma_cancel, dma_commit, dma_owned, dma_prepare, host_owns, one_page, owned, refusal, Descent, FromLeaf, HostMm,
    HypMm, InPlaceOnly, Pa, PairChange, Refused, Side, HOST_RAM, HYP_MEM,
};
use crate::mm::env::MmEnv;
use crate::mm::prot::{Leaf, Owner, PageState};
use crate::mm::region::Region;
use crate::mm::Error;

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
    /// check takes (page entries); any other goes the range way. `None`:
    /// always the range way (the DMA view changes too).
    page_before: Option<([Leaf; 2], Leaf)>,
}

/// The host ↔ hyp transition `t` of `[pa, pa + size)`, the locks held (the
/// host's, then the hyp's: the `&mut`s): the range checked, phase one of
/// both sides (one descent each for one page when `t` names the leaves it
/// takes, page entries: [`page_plan`]; range walks otherwise, every refusal), then the
/// change of both, the DMA view's with them.
#[inline(always)]
fn host_hyp<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    hyp: &mut HypMm,
    pa: u64,
    size: u64,
    t: HostHyp,
) -> Result<(), Refused> {
    host.check_ram(Pa(pa), size)?;
    if one_page(size) {
        if let Some(c) = page_plan::<InPlaceOnly, E>(env, host, hyp, pa, &t) {
            return change(env, host, hyp, pa, size, &t, c);
        }
    }
    host_hyp_checked(env, host, hyp, pa, size, t)
}

/// [`host_hyp`] out of line: one page by one descent per side recording
/// its path (`page_plan::<FromLeaf>`: a merge due), anything else by range walks, each
/// side checked in the walk that counts its update; the same change.
#[inline(never)]
fn host_hyp_checked<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    hyp: &mut HypMm,
    pa: u64,
    size: u64,
    t: HostHyp,
) -> Result<(), Refused> {
    if one_page(size) {
        if let Some(c) = page_plan::<FromLeaf, E>(env, host, hyp, pa, &t) {
            return change(env, host, hyp, pa, size, &t, c);
        }
    }
    let ch = host
        .pgt
        .count_checked(env, pa, size, (t.host_after)(pa), Some(t.host_before))
        .map_err(|e| refusal(env, &host.pgt, Side::Host, pa, size, e, t.host_before))?;
    let cy = hyp
        .pgt
        .count_checked(env, pa, size, (t.hyp_after)(pa), Some(t.hyp_before))
        .map_err(|e| refusal(env, &hyp.pgt, Side::Hyp, pa, size, e, t.hyp_before))?;
    change(env, host, hyp, pa, size, &t, (ch, cy))
}

/// Phase one of [`host_hyp`] for the page at `pa`: both sides' entries,
/// found by one descent each, checked against the leaves
/// `t.page_before` names, each counted from there. `None` (nothing
/// done): the range way decides, refusals included.
#[inline(always)]
fn page_plan<D: Descent, E: MmEnv>(
    env: &mut E,
    host: &HostMm,
    hyp: &HypMm,
    pa: u64,
    t: &HostHyp,
) -> Option<(D::Change, D::Change)> {
    let (hb, yb) = t.page_before?;
    debug_assert!((t.host_before)(hb[0]) && (t.host_before)(hb[1]) && (t.hyp_before)(yb));
    // Every descriptor worked out before the descents, each in its tree's
    // MemAttr encoding (`Stage2::encode`: the hyp's bookkeeping tree is in
    // the classic one): the leaves are constants but for `pa`, so each
    // test below is one comparison.
    let (hb, yb) = ([host.pgt.encode(hb[0], 3), host.pgt.encode(hb[1], 3)], hyp.pgt.encode(yb, 3));
    let ch = D::side(
        env,
        &host.pgt,
        pa,
        #[inline(always)]
        |p| (p.level == 3 && (p.pte == hb[0] || p.pte == hb[1])).then(|| (t.host_after)(pa)),
    )?;
    let cy = D::side(
        env,
        &hyp.pgt,
        pa,
        #[inline(always)]
        |p| (p.level == 3 && p.pte == yb).then(|| (t.hyp_after)(pa)),
    )?;
    Some((ch, cy))
}

/// The change of [`host_hyp`] after phase one: the DMA view's phase one,
/// then both sides' and its table pages and commits.
#[inline(always)]
fn change<E: MmEnv, C: PairChange>(
    env: &mut E,
    host: &mut HostMm,
    hyp: &mut HypMm,
    pa: u64,
    size: u64,
    t: &HostHyp,
    c: C,
) -> Result<(), Refused> {
    let ud = match t.dma_after {
        Some(f) => dma_prepare(env, &host.dma, pa, size, f(pa))?,
        None => None,
    };
    if let Err(e) = c.commit(env, (&mut host.pgt, Side::Host, pa), (&mut hyp.pgt, Side::Hyp, pa)) {
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
    pa: Pa,
    size: u64,
) -> Result<(), Refused> {
    let t = HostHyp {
        host_before: host_owns,
        hyp_before: nothing,
        host_after: |pa| owned(pa, HOST_RAM, PageState::SharedOwned),
        hyp_after: |pa| owned(pa, HYP_MEM, PageState::SharedBorrowed),
        dma_after: None,
        page_before: Some((
            [Leaf::Invalid(Owner::None), owned(pa.0, HOST_RAM, PageState::Owned)],
            Leaf::Invalid(Owner::None),
        )),
    };
    host_hyp(env, host, hyp, pa.0, size, t)
}

/// Undoes [`host_share_hyp`].
pub fn host_unshare_hyp<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    hyp: &mut HypMm,
    pa: Pa,
    size: u64,
) -> Result<(), Refused> {
    let t = HostHyp {
        host_before: |l| matches!(l, Leaf::Mapped { state: PageState::SharedOwned, .. }),
        hyp_before: |l| matches!(l, Leaf::Mapped { state: PageState::SharedBorrowed, .. }),
        host_after: |pa| owned(pa, HOST_RAM, PageState::Owned),
        hyp_after: |_| Leaf::Invalid(Owner::None),
        dma_after: None,
        page_before: Some((
            [owned(pa.0, HOST_RAM, PageState::SharedOwned); 2],
            owned(pa.0, HYP_MEM, PageState::SharedBorrowed),
        )),
    };
    host_hyp(env, host, hyp, pa.0, size, t)
}

/// host → hyp donation: the host loses the pages.
pub fn host_donate_hyp<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    hyp: &mut HypMm,
    pa: Pa,
    size: u64,
) -> Result<(), Refused> {
    let t = HostHyp {
        host_before: host_owns,
        hyp_before: nothing,
        host_after: |_| Leaf::Invalid(Owner::HypDonated),
        hyp_after: |pa| owned(pa, HYP_MEM, PageState::Owned),
        dma_after: Some(dma_none),
        page_before: None,
    };
    host_hyp(env, host, hyp, pa.0, size, t)
}

/// hyp → host donation (RECLAIM_HYP): only pages the host donated come back
/// (unmapped; the host faults them in). The hyp's own memory is refused
/// (`Perm`) twice over: its host-side annotation is [`Owner::Hyp`], not
/// [`Owner::HypDonated`], and it lies in [`HypMm::own`].
pub fn hyp_donate_host<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    hyp: &mut HypMm,
    pa: Pa,
    size: u64,
) -> Result<(), Refused> {
    host.check_ram(pa, size)?;
    if hyp.overlaps_own(pa, size) {
        return Err(Refused::new(Error::Perm, Side::Hyp, pa.0));
    }
    let t = HostHyp {
        host_before: |l| l == Leaf::Invalid(Owner::HypDonated),
        hyp_before: |l| matches!(l, Leaf::Mapped { state: PageState::Owned, .. }),
        host_after: |_| Leaf::Invalid(Owner::None),
        hyp_after: |_| Leaf::Invalid(Owner::None),
        dma_after: Some(dma_owned),
        page_before: None,
    };
    host_hyp(env, host, hyp, pa.0, size, t)
}

/// Records `[pa, pa + size)` (host RAM the host has not been given yet) as
/// the hyp's own memory, for good: [`Owner::Hyp`] in the host's stage-2,
/// owned in the hyp's table, and in [`HypMm::own`]. Boot records the
/// carve-out this way.
pub fn hyp_claim_own<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    hyp: &mut HypMm,
    pa: Pa,
    size: u64,
) -> Result<(), Refused> {
    host.check_ram(pa, size)?;
    if hyp.own.try_reserve(1).is_err() {
        return Err(Refused::new(Error::NoMem, Side::Hyp, pa.0));
    }
    let t = HostHyp {
        host_before: host_owns,
        hyp_before: nothing,
        host_after: |_| Leaf::Invalid(Owner::Hyp),
        hyp_after: |pa| owned(pa, HYP_MEM, PageState::Owned),
        dma_after: Some(dma_none),
        page_before: None,
    };
    host_hyp(env, host, hyp, pa.0, size, t)?;
    hyp.own.push(Region { base: pa.0, size });
    Ok(())
}
