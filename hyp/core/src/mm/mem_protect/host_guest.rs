//! Transitions between the host and a guest: donation (DONATE_GUEST), the
//! guest's share and unshare with the host (MEM_SHARE / MEM_UNSHARE), its
//! relinquish (MEM_RELINQUISH) and the VM's teardown. A 4K share or unshare
//! takes its one-page form first ([`guest_host_page`], then
//! [`guest_host_path`]); the range form decides everything else.

use super::*;
use crate::mm::cmo;

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
    cmo::before_guest_maps(env, pa, size, GUEST_RAM.perm.x);
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
pub(in crate::mm) fn guest_host_page<E: MmEnv>(
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
        is_page(d, owned(pa, GUEST_RAM, from)).then(|| pte::with_state(d, to))
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
fn guest_share_host_range<E: MmEnv>(
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
fn guest_unshare_host_range<E: MmEnv>(
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
    cmo::scrub_for_host(env, pa, size);
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
            return Err(Error::Perm);
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
