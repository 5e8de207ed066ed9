//! Transitions between the host and the hyp: share and unshare
//! (SHARE_HYP / UNSHARE_HYP), donate and reclaim (DONATE_HYP /
//! RECLAIM_HYP), and the hyp's claim on its own memory at boot. One shape
//! for all ([`host_hyp`]): both sides checked over the whole range, then
//! both committed, or nothing.

use super::*;

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
    // (The hyp's bookkeeping tree is in the classic MemAttr encoding:
    // `Stage2::fwb`.)
    let (hb, yb) = ([pte::encode(hb[0], 3), pte::encode(hb[1], 3)], pte::encode_in(yb, 3, false));
    let (host_new, hyp_new) = (pte::encode((t.host_after)(pa), 3), pte::encode_in((t.hyp_after)(pa), 3, false));
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
