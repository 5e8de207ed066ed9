//! A VM's table memory: the pages its host donates for its stage-2 tables
//! (VM_TOPUP), held by the hyp on the VM's behalf in the VM's memcache
//! (the own pages of its stage-2: [`Stage2::use_own_tables`]) until the
//! VM is destroyed, and given back then ([`vm_tables_return`]). A VM's
//! stage-2 takes its tables from nowhere else, so what a guest does to its
//! tables is paid by the memory its host gave it, never by the hyp's pool,
//! the host or another VM.
//!
//! [`Stage2::use_own_tables`]: crate::mm::pgtable::Stage2::use_own_tables

use alloc::vec::Vec;

use super::{dma_cancel, dma_commit, dma_owned, dma_prepare, host_owns, refusal, GuestMm, HostMm, Pa, Refused, Side};
use crate::mm::cmo;
use crate::mm::env::MmEnv;
use crate::mm::memcache::Memcache;
use crate::mm::prot::{Leaf, Owner};
use crate::mm::{Error, PAGE_SIZE};

/// host → hyp on behalf of VM `guest` (VM_TOPUP): `[pa, pa + pages * 4 KiB)`,
/// pages the host owns exclusively (not shared, not pinned), become the
/// hyp's for the VM's tables: gone from the host's stage-2 (annotated
/// [`Owner::VmTables`]) and its DMA view (tables hold PAs: no device may
/// write them), reachable by the hyp ([`MmEnv::hyp_map`]), then on the
/// VM's memcache. All or nothing; refused for a VM whose stage-2 has no
/// memcache (`Inval`).
pub fn host_topup_vm<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    guest: &mut GuestMm,
    pa: Pa,
    pages: u64,
) -> Result<(), Refused> {
    let pa = pa.0;
    let args = |e| Refused::new(e, Side::Args, pa);
    if guest.pgt.own_tables().is_none() {
        return Err(args(Error::Inval));
    }
    let size = pages.checked_mul(PAGE_SIZE).ok_or(args(Error::Inval))?;
    host.check_ram(Pa(pa), size)?;
    if host.pins.any_pinned(pa, size) {
        let first = (0..pages).map(|i| pa + i * PAGE_SIZE).find(|&p| host.pins.count(p) != 0);
        return Err(Refused::new(Error::Busy, Side::Pins, first.unwrap_or(pa)));
    }
    let new = Leaf::Invalid(Owner::VmTables(guest.handle));
    let uh = host
        .pgt
        .count_checked(env, pa, size, new, Some(host_owns))
        .map_err(|e| refusal(env, &host.pgt, Side::Host, pa, size, e, host_owns))?
        .reserve(env)
        .map_err(|e| Refused::new(e, Side::Host, pa))?;
    let ud = match dma_prepare(env, &host.dma, pa, size, Leaf::Invalid(Owner::None)) {
        Ok(u) => u,
        Err(e) => {
            uh.cancel(env);
            return Err(e);
        }
    };
    if let Err(e) = env.hyp_map(pa, size) {
        uh.cancel(env);
        dma_cancel(env, ud);
        return Err(Refused::new(e, Side::Hyp, pa));
    }
    // The host (and its devices) lose the pages, TLBs invalidated, before
    // the hyp writes them.
    host.pgt.commit(env, uh);
    dma_commit(env, &mut host.dma, ud);
    for i in 0..pages {
        guest.pgt.give_table(env, pa + i * PAGE_SIZE);
    }
    Ok(())
}

/// Gives the host back the pages it donated for VM `handle`'s tables, all
/// of them (`own`: the memcache of the VM's destroyed stage-2, every table
/// page back on it: [`crate::mm::pgtable::Stage2::destroy_keeping_own`]):
/// unreachable by the hyp ([`MmEnv::hyp_unmap`]), zeroed and cleaned to
/// the point of coherency (tables hold PAs), then the host's again in its
/// stage-2 and DMA view. Returns how many. Contiguous pages go back as one
/// range: every page the host's stage-2 records as the VM's table memory
/// is in `own` (the invariant checker's rule), so a run of them covers
/// every block of that annotation it touches and the host's tree needs no
/// split. `Err` (a table page lacking, never with the host's reserve) with
/// the pages not returned yet back in `own`.
pub fn vm_tables_return<E: MmEnv>(
    env: &mut E,
    host: &mut HostMm,
    handle: u16,
    own: &mut Memcache,
) -> Result<u64, Refused> {
    let mut pages: Vec<u64> = Vec::new();
    let sorted = pages.try_reserve_exact(own.len()).is_ok();
    if sorted {
        while let Some(pa) = own.pop(env) {
            pages.push(pa);
        }
        pages.sort_unstable();
    }
    let mut n = 0u64;
    let mut i = 0;
    loop {
        // The next run: from the sorted pages, or (no memory to sort them)
        // one page at a time.
        let (pa, len) = if sorted {
            let Some(&start) = pages.get(i) else {
                return Ok(n);
            };
            let mut len = 1;
            while pages.get(i + len) == Some(&(start + len as u64 * PAGE_SIZE)) {
                len += 1;
            }
            (start, len)
        } else {
            match own.pop(env) {
                Some(pa) => (pa, 1),
                None => return Ok(n),
            }
        };
        let size = len as u64 * PAGE_SIZE;
        if let Err(e) = give_back(env, host, handle, pa, size) {
            if sorted {
                for &p in &pages[i..] {
                    own.push(env, p);
                }
            } else {
                own.push(env, pa);
            }
            return Err(e);
        }
        n += len as u64;
        i += len;
    }
}

/// One run of [`vm_tables_return`].
fn give_back<E: MmEnv>(env: &mut E, host: &mut HostMm, handle: u16, pa: u64, size: u64) -> Result<(), Refused> {
    let mine = |l| l == Leaf::Invalid(Owner::VmTables(handle));
    let uh = host
        .pgt
        .count_checked(env, pa, size, Leaf::Invalid(Owner::None), Some(mine))
        .map_err(|e| refusal(env, &host.pgt, Side::Host, pa, size, e, mine))?
        .reserve(env)
        .map_err(|e| Refused::new(e, Side::Host, pa))?;
    let ud = match dma_prepare(env, &host.dma, pa, size, dma_owned(pa)) {
        Ok(u) => u,
        Err(e) => {
            uh.cancel(env);
            return Err(e);
        }
    };
    env.hyp_unmap(pa, size);
    cmo::scrub_for_host(env, pa, size);
    host.pgt.commit(env, uh);
    dma_commit(env, &mut host.dma, ud);
    Ok(())
}

/// The table pages a stage-2 whose root is at `start_level` can need over
/// `[ipa, ipa + size)`, split down to pages: one per region of each level
/// below the root that the range touches (per 2 MiB, per 1 GiB, per
/// 512 GiB below a level-0 root): `hyp_abi::host::split_tables`. A VM's
/// memcache holding this much for all its memory never runs short; the
/// host's reserve is this over all RAM (and the ends of its device
/// regions).
pub const fn tables_for_split(start_level: u8, ipa: u64, size: u64) -> u64 {
    hyp_abi::host::split_tables(start_level, ipa, size)
}
