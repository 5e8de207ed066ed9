//! Transitions between the host and a guest: donation (DONATE_GUEST), the
//! guest's share and unshare with the host (MEM_SHARE / MEM_UNSHARE: one
//! function, [`guest_host`]), its relinquish (MEM_RELINQUISH) and the VM's
//! teardown (both [`reclaim`]).

use super::{
    check_all, dma_cancel, dma_commit, dma_owned, dma_prepare, guest_range, host_owns, is_entry, one_page, owned,
    refusal, Descent, FromLeaf, GuestMm, HostMm, InPlaceOnly, Ipa, Pa, PairChange, Refused, Side, GUEST_RAM,
    HOST_BORROWED,
};
use crate::mm::cmo;
use crate::mm::env::MmEnv;
use crate::mm::pgtable::Counted;
use crate::mm::prot::{Leaf, Owner, PageState};
use crate::mm::{pte, Error, PAGE_SIZE};

/// host → guest donation of `[pa, pa + size)` at guest `ipa`: the guest owns
/// it (mapped with blocks where aligned); the host's table records the VM.
/// Phase one checks each side in the walk that counts its update (the
/// first page refused, on the error path only, by a second walk:
/// [`refusal`]), then the DMA view's; table pages for all three or none.
pub fn host_donate_guest<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    pa: Pa,
    ipa: Ipa,
    size: u64,
) -> Result<(), Refused> {
    let (pa, ipa) = (pa.0, ipa.0);
    let g = Side::Guest;
    host.check_ram(Pa(pa), size)?;
    guest.pgt.check_range(ipa, size).map_err(|e| Refused::new(e, Side::Args, ipa))?;
    if host.pins.any_pinned(pa, size) {
        return Err(pinned(host, pa, size));
    }
    let h = guest.handle;
    let free = |l| l == Leaf::Invalid(Owner::None);
    let ch = host
        .pgt
        .count_checked(env, pa, size, Leaf::Invalid(Owner::Guest(h)), Some(host_owns))
        .map_err(|e| refusal(env, &host.pgt, Side::Host, pa, size, e, host_owns))?;
    let cg = guest
        .pgt
        .count_checked(env, ipa, size, owned(pa, GUEST_RAM, PageState::Owned), Some(free))
        .map_err(|e| refusal(env, &guest.pgt, g, ipa, size, e, free))?;
    let ud = dma_prepare(env, &host.dma, pa, size, Leaf::Invalid(Owner::None))?;
    let ug = match cg.reserve(env) {
        Ok(u) => u,
        Err(e) => {
            dma_cancel(env, ud);
            return Err(Refused::new(e, g, ipa));
        }
    };
    let uh = match ch.reserve(env) {
        Ok(u) => u,
        Err(e) => {
            ug.cancel(env);
            dma_cancel(env, ud);
            return Err(Refused::new(e, Side::Host, pa));
        }
    };
    // The host loses the pages (and its TLB entries, the CPUs' and the
    // SMMU's: no device can write them either) first; then whatever it
    // wrote is pushed to memory and no line of it stays cached; only then
    // can the guest, perhaps with its caches off, see them.
    host.pgt.commit(env, uh);
    dma_commit(env, &mut host.dma, ud);
    cmo::before_guest_maps(env, pa, size, GUEST_RAM.perm.x);
    guest.pgt.commit(env, ug);
    Ok(())
}

/// The refusal of a range of which the host pins a page: the first one.
#[cold]
pub(super) fn pinned(host: &HostMm, pa: u64, size: u64) -> Refused {
    let first = (0..size / PAGE_SIZE).map(|i| pa + i * PAGE_SIZE).find(|&p| host.pins.count(p) != 0);
    Refused::new(Error::Busy, Side::Pins, first.unwrap_or(pa))
}

/// A guest ↔ host transition of pages the guest owns and lends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GuestHost {
    /// MEM_SHARE: guest OWNED → SHARED_OWNED in place; the host maps the
    /// same pages SHARED_BORROWED.
    Share,
    /// MEM_UNSHARE: back; refused while the host pins a page; a DMA
    /// mapping a page's last unpin left is torn down first.
    Unshare,
}

impl GuestHost {
    /// The guest's pages' state before and after.
    #[inline(always)]
    fn guest(self) -> (PageState, PageState) {
        match self {
            GuestHost::Share => (PageState::Owned, PageState::SharedOwned),
            GuestHost::Unshare => (PageState::SharedOwned, PageState::Owned),
        }
    }

    /// The host's leaf of guest `h`'s page at `pa` afterwards.
    #[inline(always)]
    fn host_after(self, h: u16, pa: u64) -> Leaf {
        match self {
            GuestHost::Share => owned(pa, HOST_BORROWED, PageState::SharedBorrowed),
            GuestHost::Unshare => Leaf::Invalid(Owner::Guest(h)),
        }
    }

    /// Does the host's leaf `l` of guest `h`'s page fit before (the range
    /// check)?
    #[inline(always)]
    fn host_before(self, h: u16, l: Leaf) -> bool {
        match self {
            GuestHost::Share => l == Leaf::Invalid(Owner::Guest(h)),
            GuestHost::Unshare => matches!(l, Leaf::Mapped { state: PageState::SharedBorrowed, .. }),
        }
    }

    /// The one leaf (given at the entry's first address `base`) of the
    /// host's entry that the one-page check takes: one the range check
    /// accepts.
    #[inline(always)]
    fn host_entry(self, h: u16, base: u64) -> Leaf {
        match self {
            GuestHost::Share => Leaf::Invalid(Owner::Guest(h)),
            GuestHost::Unshare => owned(base, HOST_BORROWED, PageState::SharedBorrowed),
        }
    }
}

/// guest → host share (MEM_SHARE) of `[ipa, ipa + size)`: the PA of `ipa`.
#[inline]
pub fn guest_share_host<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    ipa: Ipa,
    size: u64,
) -> Result<Pa, Refused> {
    guest_host(env, host, guest, ipa.0, size, GuestHost::Share)
}

/// guest → host unshare (MEM_UNSHARE): the host mapping goes (with TLB
/// invalidation) before the guest sees the pages private. `Busy` while
/// the host holds a pin on any of them.
#[inline]
pub fn guest_unshare_host<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    ipa: Ipa,
    size: u64,
) -> Result<Pa, Refused> {
    guest_host(env, host, guest, ipa.0, size, GuestHost::Unshare)
}

/// Both sides' phase one of a guest ↔ host transition: the PA of the
/// range, the host's change and the guest's.
type Plan<C> = (u64, C);

/// The guest ↔ host transition `t` of `[ipa, ipa + size)`, the locks held
/// (the host's, then the guest's: the `&mut`s). Phase one checks and
/// counts both sides: for one page by one descent each ([`page_plan`]),
/// which takes the leaves the range check accepts that it knows; by range
/// walks otherwise ([`range_plan`]: every refusal). Then the host's pins
/// (unshare) and the change of both sides ([`change`]). Inlined into the
/// caller: the one-page check specialised to page entries rewritten in
/// place (`page_plan::<InPlaceOnly>`); anything else out of line.
#[inline(always)]
fn guest_host<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    ipa: u64,
    size: u64,
    t: GuestHost,
) -> Result<Pa, Refused> {
    if one_page(size) {
        if let Some(plan) = page_plan::<InPlaceOnly, E>(env, host, guest, ipa, t) {
            return change(env, host, guest, ipa, PAGE_SIZE, t, plan);
        }
    }
    // One instance per transition: `t` a constant in each.
    match t {
        GuestHost::Share => guest_host_checked::<E, true>(env, host, guest, ipa, size),
        GuestHost::Unshare => guest_host_checked::<E, false>(env, host, guest, ipa, size),
    }
}

/// [`guest_host`] out of line: one page by one descent per side recording
/// its path (`page_plan::<FromLeaf>`: blocks split, merges due), anything
/// else by range walks; the same change.
#[inline(never)]
fn guest_host_checked<E: MmEnv, const SHARE: bool>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    ipa: u64,
    size: u64,
) -> Result<Pa, Refused> {
    let t = if SHARE { GuestHost::Share } else { GuestHost::Unshare };
    let plan = if one_page(size) { page_plan::<FromLeaf, E>(env, host, guest, ipa, t) } else { None };
    let plan = match plan {
        Some(p) => p,
        None => range_plan(env, host, guest, ipa, size, t)?,
    };
    change(env, host, guest, ipa, size, t, plan)
}

/// The change of [`guest_host`] after phase one: the host's pins
/// (unshare), then both sides' table pages and commits, the host first.
#[inline(always)]
fn change<E: MmEnv, C: PairChange>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    ipa: u64,
    size: u64,
    t: GuestHost,
    (pa, c): Plan<C>,
) -> Result<Pa, Refused> {
    if t == GuestHost::Unshare && host.pins.any_mapped(pa, size) {
        return unshare_unmapping(env, host, guest, ipa, pa, size);
    }
    c.commit(env, (&mut host.pgt, Side::Host, pa), (&mut guest.pgt, Side::Guest, ipa))?;
    Ok(Pa(pa))
}

/// [`change`] of an unshare over pages the host pins or its DMA view
/// maps (at `pa`): refused while a page holds a pin; else the DMA
/// mappings the last unpins left are torn down ([`HostMm::dma_unmap`]:
/// one CMD_SYNC), then the unshare runs again from phase one (the CPU
/// trees unchanged, the pages no longer mapped: its one-page form again). Out of line, and
/// keeping nothing of the first phase one: the hot path holds no value
/// across a call (as when this was a plain refusal).
#[cold]
#[inline(never)]
fn unshare_unmapping<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    ipa: u64,
    pa: u64,
    size: u64,
) -> Result<Pa, Refused> {
    host.dma_unmap(env, pa, size)?;
    debug_assert!(!host.pins.any_mapped(pa, size));
    guest_host(env, host, guest, ipa, size, GuestHost::Unshare)
}

/// Phase one of [`guest_host`] for the page at `ipa`: the guest's leaf
/// and the host's leaf of its PA, each found by one descent, each the one
/// entry (page or block) that the range check accepts and this form takes
/// (the guest's attributes [`GUEST_RAM`]), each counted from there.
/// `None` (nothing done): the range form decides.
#[inline(always)]
fn page_plan<D: Descent, E: MmEnv>(
    env: &mut E,
    host: &HostMm,
    guest: &GuestMm,
    ipa: u64,
    t: GuestHost,
) -> Option<Plan<(D::Change, D::Change)>> {
    let (from, to) = t.guest();
    let mut pa = 0;
    let cg = D::side(
        env,
        &guest.pgt,
        ipa,
        #[inline(always)]
        |g| {
            let base = pte::oa(g.pte);
            pa = base + (ipa - g.base);
            is_entry(&guest.pgt, g, owned(base, GUEST_RAM, from)).then(|| owned(pa, GUEST_RAM, to))
        },
    )?;
    // Read once the guest's side is known (not live across its descent).
    let h = guest.handle;
    let ch = D::side(
        env,
        &host.pgt,
        pa,
        #[inline(always)]
        |p| is_entry(&host.pgt, p, t.host_entry(h, p.base)).then(|| t.host_after(h, pa)),
    )?;
    Some((pa, (ch, cg)))
}

/// Phase one of [`guest_host`] by range walks: the guest's range in one
/// state, attribute set and physically contiguous ([`guest_range`]), the
/// host's side checked in the walk that counts its update, the guest's
/// count from where its check's walk ended.
fn range_plan<E: MmEnv>(
    env: &mut E,
    host: &HostMm,
    guest: &GuestMm,
    ipa: u64,
    size: u64,
    t: GuestHost,
) -> Result<Plan<(Counted, Counted)>, Refused> {
    let (from, to) = t.guest();
    let g = guest_range(env, guest, ipa, size, |s| s == from)?;
    let h = guest.handle;
    let ok = |l| t.host_before(h, l);
    let ch = host
        .pgt
        .count_checked(env, g.pa, size, t.host_after(h, g.pa), Some(ok))
        .map_err(|e| refusal(env, &host.pgt, Side::Host, g.pa, size, e, ok))?;
    let cg = guest
        .pgt
        .count_found(env, &g.found, ipa, size, owned(g.pa, g.attrs, to))
        .map_err(|e| Refused::new(e, Side::Guest, ipa))?;
    Ok((g.pa, (ch, cg)))
}

/// guest gives pages back (MEM_RELINQUISH): scrubbed, then host-owned.
/// Shared pages may be relinquished unless the host pins them.
pub fn guest_relinquish<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    ipa: Ipa,
    size: u64,
) -> Result<Pa, Refused> {
    let ipa = ipa.0;
    let g = guest_range(env, guest, ipa, size, |s| matches!(s, PageState::Owned | PageState::SharedOwned))?;
    reclaim(env, host, guest, ipa, g.pa, size, g.state)?;
    Ok(Pa(g.pa))
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
) -> Result<(), Refused> {
    let h = guest.handle;
    if state == PageState::SharedOwned {
        let borrowed = |l| matches!(l, Leaf::Mapped { state: PageState::SharedBorrowed, .. });
        check_all(env, &host.pgt, Side::Host, pa, size, borrowed)?;
        if host.pins.any_pinned(pa, size) {
            return Err(pinned(host, pa, size));
        }
    } else {
        check_all(env, &host.pgt, Side::Host, pa, size, |l| l == Leaf::Invalid(Owner::Guest(h)))?;
    }
    let ug =
        guest.pgt.prepare(env, ipa, size, Leaf::Invalid(Owner::None)).map_err(|e| Refused::new(e, Side::Guest, ipa))?;
    let uh = match host.pgt.prepare(env, pa, size, Leaf::Invalid(Owner::None)) {
        Ok(u) => u,
        Err(e) => {
            ug.cancel(env);
            return Err(Refused::new(e, Side::Host, pa));
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
    cmo::scrub_for_host(env, pa, size);
    host.pgt.commit(env, uh);
    // A shared page whose last unpin left it in the DMA view: its entry
    // goes from pinned to the host's own (software bits only, in place).
    dma_commit(env, &mut host.dma, ud);
    if state == PageState::SharedOwned && host.pins.any_mapped(pa, size) {
        host.pins.unmap_range(pa, size);
    }
    Ok(())
}

/// VM teardown: scrubs every page of the guest and returns it to the host.
/// All-or-nothing per leaf: on `Err` (a pinned shared page: `Busy`; no table
/// memory: `NoMem`) the pages reclaimed so far stay reclaimed and the call
/// can be repeated. Returns the bytes reclaimed.
pub fn guest_teardown<E: MmEnv>(env: &mut E, host: &mut HostMm, guest: &mut GuestMm) -> Result<u64, Refused> {
    let limit = guest.pgt.ipa_limit();
    let mut cursor = 0;
    let mut total = 0;
    loop {
        // What is left, found by raw descriptors (most of a guest's IPA
        // space is invalid root entries).
        let m = match cursor < limit {
            true => guest.pgt.next_mapped(env, cursor, limit),
            false => None,
        };
        let Some(m) = m else {
            return Ok(total);
        };
        let ipa = m.base.max(cursor);
        let size = (m.base + m.size()).min(limit) - ipa;
        // (Always valid: next_mapped skips invalid entries.)
        let Leaf::Mapped { pa, state, .. } = m.at(ipa) else {
            return Err(Refused::new(Error::Perm, Side::Guest, ipa));
        };
        if state == PageState::SharedBorrowed {
            // Guests never borrow; treat as corruption-free refusal.
            return Err(Refused::state(Side::Guest, ipa, owned(pa, GUEST_RAM, state)));
        }
        reclaim(env, host, guest, ipa, pa, size, state)?;
        total += size;
        cursor = ipa + size;
    }
}
