//! A VM's table memory (VM_TOPUP) and the host's table reserve: a guest's
//! use of its memory is paid by the pages its host donated for it, never
//! by the pool, the host or another VM.
//!
//! These worlds back host RAM with real memory (32 MiB of the test's heap,
//! whose addresses are its PAs, under 48-bit trees): the pages the host
//! donates for a VM's tables are written as tables.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::vec;
use std::vec::Vec;

use super::helpers::*;
use crate::mm::mem_protect::host_guest::*;
use crate::mm::mem_protect::host_hyp::*;
use crate::mm::mem_protect::vm_tables::*;
use crate::mm::mem_protect::*;
use crate::mm::pgtable::Stage2;
use crate::mm::prot::{Leaf, Owner, PageState};
use crate::mm::region::Region;
use crate::mm::testenv::{Event, TestEnv};
use crate::mm::Error;

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
const RAM_SIZE: u64 = 32 << 20;
const BITS: u8 = 48;

/// Host RAM backed by the heap, a host with (or without) its table
/// reserve, a DMA view, and VMs whose stage-2s take their tables from
/// their memcaches (or, `own` false, from the pool: the model before).
struct VmWorld {
    env: TestEnv,
    host: HostMm,
    hyp: HypMm,
    guests: Vec<GuestMm>,
    ram: Ram,
}

impl VmWorld {
    fn new(own: bool) -> Self {
        Self::with(own, false, own)
    }

    /// `bbml2`: the DMA view maps blocks (an SMMU with BBML2). `dma_own`:
    /// with `own`, the DMA view has its reserve too ([`HostMm::reserve_tables`];
    /// false: the host's reserve alone, as before the view had one).
    fn with(own: bool, bbml2: bool, dma_own: bool) -> Self {
        let layout = Layout::from_size_align(RAM_SIZE as usize, M2 as usize).unwrap();
        // SAFETY: non-zero size; freed in Drop with the same layout.
        let ram = unsafe { alloc_zeroed(layout) } as u64;
        assert!(ram != 0 && ram >> BITS == 0);
        let mut env = TestEnv::new();
        env.backed = Some((ram, RAM_SIZE));
        env.smmu_bbml2 = bbml2;
        let host_pgt = Stage2::new(&mut env, BITS, Some(0)).unwrap();
        let mut hyp = HypMm::new(Stage2::new(&mut env, BITS, None).unwrap());
        let mut host = HostMm::new(host_pgt, vec![Region { base: ram, size: RAM_SIZE }], vec![]);
        let dma = Stage2::new(&mut env, BITS, Some(1)).unwrap();
        host.enable_dma(&mut env, dma, bbml2).unwrap();
        // The hyp's own memory: the first 2 MiB (as boot claims its carve-out).
        hyp_claim_own(&mut env, &mut host, &mut hyp, Pa(ram), M2).plain().unwrap();
        if own && dma_own {
            host.reserve_tables(&mut env).unwrap();
        } else if own {
            let n = HostMm::tables_needed(host.pgt.start_level(), &host.ram, &host.devices);
            host.pgt.use_own_tables();
            host.pgt.fill_own_tables(&mut env, n as usize).unwrap();
        }
        let guests = (1..=2u16)
            .map(|h| {
                let mut pgt = Stage2::new(&mut env, BITS, Some(h + 1)).unwrap();
                if own {
                    pgt.use_own_tables();
                }
                GuestMm { pgt, handle: h }
            })
            .collect();
        VmWorld { env, host, hyp, guests, ram: Ram(ram) }
    }

    /// The host tops up VM `g` with `pages` pages at RAM offset `off`.
    fn topup(&mut self, g: usize, off: u64, pages: u64) -> Result<(), Error> {
        let VmWorld { env, host, guests, ram, .. } = self;
        host_topup_vm(env, host, &mut guests[g], Pa(ram.0 + off), pages).plain()
    }

    fn donate(&mut self, g: usize, off: u64, ipa: u64, size: u64) -> Result<(), Error> {
        let VmWorld { env, host, guests, ram, .. } = self;
        host_donate_guest(env, host, &mut guests[g], Pa(ram.0 + off), Ipa(ipa), size).plain()
    }

    fn share(&mut self, g: usize, ipa: u64) -> Result<u64, Refused> {
        let VmWorld { env, host, guests, .. } = self;
        guest_share_host(env, host, &mut guests[g], Ipa(ipa), K4).map(Pa::get)
    }

    fn check(&mut self) {
        let VmWorld { env, host, hyp, guests, .. } = self;
        check_structure(env, &host.pgt);
        for g in guests.iter() {
            check_structure(env, &g.pgt);
        }
        env.check_log();
        let gs: Vec<&GuestMm> = guests.iter().collect();
        if let Err(v) = crate::mm::invariants::check(env, host, hyp, &gs) {
            panic!("invariant violated: {} at {:#x}", v.what, v.addr);
        }
    }

    fn host_leaf(&mut self, pa: u64) -> Leaf {
        self.host.leaf_at(&mut self.env, Pa(pa)).plain().unwrap()
    }

    /// Tears VM `g` down and destroys it: its memory and its table memory
    /// back to the host. Returns (bytes, table pages) given back.
    fn destroy(&mut self, g: usize) -> (u64, u64) {
        let VmWorld { env, host, guests, .. } = self;
        let mut guest = guests.remove(g);
        let bytes = guest_teardown(env, host, &mut guest).plain().unwrap();
        let handle = guest.handle;
        let mut own = guest.pgt.destroy_keeping_own(env).expect("a VM's stage-2 has a memcache");
        let pages = vm_tables_return(env, host, handle, &mut own).plain().unwrap();
        assert!(own.is_empty());
        (bytes, pages)
    }

    fn finish(mut self) {
        while let Some(g) = self.guests.len().checked_sub(1) {
            if self.guests[g].pgt.own_tables().is_some() {
                self.destroy(g);
            } else {
                let VmWorld { env, host, guests, .. } = &mut self;
                let mut guest = guests.pop().unwrap();
                guest_teardown(env, host, &mut guest).plain().unwrap();
                guest.pgt.destroy(env);
            }
            self.check();
        }
        let VmWorld { mut env, host, hyp, ram: _ram, .. } = self;
        host.pgt.destroy(&mut env);
        if let Some(d) = host.dma {
            d.destroy(&mut env);
        }
        hyp.pgt.destroy(&mut env);
        env.check_log();
        env.assert_no_leaks();
    }
}

/// The test's host RAM, freed last.
struct Ram(u64);

impl Drop for Ram {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(RAM_SIZE as usize, M2 as usize).unwrap();
        // SAFETY: allocated by VmWorld::new with this layout; nothing uses it now.
        unsafe { dealloc(self.0 as *mut u8, layout) };
    }
}

/// Every host leaf and every guest leaf, and each memcache's size: a
/// refused call changes none of them.
fn snapshot(w: &mut VmWorld) -> Vec<Vec<(u64, u64, u8, Leaf)>> {
    let mut v = vec![leaves(&mut w.env, &w.host.pgt, 0, 1 << BITS)];
    if let Some(d) = &w.host.dma {
        v.push(leaves(&mut w.env, d, 0, 1 << BITS));
    }
    for g in &w.guests {
        v.push(leaves(&mut w.env, &g.pgt, 0, 1 << BITS));
        v.push(vec![(
            g.pgt.own_tables().unwrap_or(0) as u64,
            g.pgt.table_pages() as u64,
            0,
            Leaf::Invalid(Owner::None),
        )]);
    }
    v
}

/// Guest 1's shares, what the others tried and how it went, pool pages left.
type Starved = (Vec<Result<u64, Error>>, Vec<(&'static str, Result<(), Error>)>, usize);

/// What the host and the other VM try once guest 1 has shared page 0 of
/// every 2 MiB of its 16 MiB, with 2 pages left in the pool: guest 1's
/// shares, then a share by VM 2, the host's pin of it, a fault of the
/// host's, a donation to VM 2 and a new VM.
fn starve(own: bool) -> Starved {
    let mut w = VmWorld::new(own);
    if own {
        // What the host's helper says the donations can need.
        let (a, b) = (tables_for_split(0, 0, 16 << 20), tables_for_split(0, 0, M2));
        assert_eq!((a, b), (10, 3));
        w.topup(0, M2, a).unwrap();
        w.topup(1, M2 + a * K4, b).unwrap();
    }
    w.donate(0, 4 * M2, 0, 16 << 20).unwrap();
    w.donate(1, 12 * M2, 0, M2).unwrap();
    w.check();
    w.env.budget = Some(2);
    let shares: Vec<_> = (0..8).map(|i| w.share(0, i * M2).map_err(Error::from)).collect();
    let mut after = Vec::new();
    let shared = w.share(1, K4).map_err(Error::from);
    after.push(("VM 2 shares a page", shared.map(|_| ())));
    if let Ok(pa) = shared {
        let VmWorld { env, host, .. } = &mut w;
        after.push(("the host pins it", host.pin(env, Pa(pa), false).plain()));
    }
    let fault = w.ram.0 + 14 * M2 + K4;
    let VmWorld { env, host, .. } = &mut w;
    after.push(("the host faults its RAM in", host.handle_fault(env, Pa(fault)).plain().map(|_| ())));
    if own {
        after.push(("the host tops VM 2 up", w.topup(1, M2 + 13 * K4, tables_for_split(0, M2, M2))));
    }
    after.push(("DONATE_GUEST to VM 2", w.donate(1, 13 * M2, M2, M2)));
    let vm3 = Stage2::new(&mut w.env, BITS, Some(9));
    after.push(("VM_CREATE", vm3.as_ref().map(|_| ()).map_err(|e| *e)));
    if let Ok(t) = vm3 {
        t.destroy(&mut w.env);
    }
    let left = w.env.budget.unwrap();
    w.env.budget = None;
    w.check();
    // Unshare and unpin everything, so the world tears down.
    if let Ok(pa) = shared {
        if after[1].1.is_ok() {
            let VmWorld { env, host, .. } = &mut w;
            host.unpin(env, Pa(pa)).plain().unwrap();
        }
    }
    w.finish();
    (shares, after, left)
}

/// Issue 25, item 2: a guest sharing page 0 of every 2 MiB of its memory
/// splits its own stage-2 and the host's at every 2 MiB. With every table
/// from one pool (the control: VMs without a memcache, the host without
/// its reserve, as before) it empties the pool and the host and the other
/// VM get ENOMEM; with its tables from its memcache and the host's from
/// the host's reserve, nothing of the pool goes and everyone else succeeds.
#[test]
fn a_guest_sharing_page_0_of_every_2m_starves_nobody() {
    let (shares, after, left) = starve(false);
    assert!(shares.contains(&Err(Error::NoMem)), "the control: one pool runs dry");
    assert!(after.iter().any(|(_, r)| *r == Err(Error::NoMem)), "the control: others starve: {after:?}");

    let (shares, after, left_own) = starve(true);
    assert!(shares.iter().all(Result::is_ok), "the guest's shares, paid by its memcache: {shares:?}");
    for (what, r) in &after {
        assert_eq!(*r, Ok(()), "{what}");
    }
    // The pool paid for the new VM's root only.
    assert_eq!(left_own, 1);
    let _ = left;
}

/// What a guest's giving back page 0 of every 2 MiB of its 16 MiB does
/// with one page left in the pool, where the host's DMA view maps blocks
/// (BBML2): each page back is a page devices may reach again in a region
/// the view had as one invalid block, so the view splits it. With
/// `dma_own` false (the view's tables from the pool, as before it had a
/// reserve). Returns the results of the eight MEM_RELINQUISHes, then of
/// a new VM's root, and the pool pages left.
fn give_back(dma_own: bool) -> (Vec<Result<(), Error>>, Result<(), Error>, usize) {
    let mut w = VmWorld::with(true, true, dma_own);
    w.topup(0, M2, tables_for_split(0, 0, 16 << 20)).unwrap();
    w.donate(0, 4 * M2, 0, 16 << 20).unwrap();
    w.check();
    w.env.budget = Some(1);
    let gave: Vec<_> = (0..8)
        .map(|i| {
            let VmWorld { env, host, guests, .. } = &mut w;
            guest_relinquish(env, host, &mut guests[0], Ipa(i * M2), K4).map(|_| ()).map_err(Error::from)
        })
        .collect();
    let vm3 = Stage2::new(&mut w.env, BITS, Some(9));
    let created = vm3.as_ref().map(|_| ()).map_err(|e| *e);
    if let Ok(t) = vm3 {
        t.destroy(&mut w.env);
    }
    let left = w.env.budget.unwrap();
    w.env.budget = None;
    w.check();
    // What went back is the host's, for its devices too.
    let ram = w.ram.0;
    for (i, r) in gave.iter().enumerate() {
        if r.is_ok() {
            let pa = ram + 4 * M2 + i as u64 * M2;
            assert_eq!(w.host_leaf(pa), Leaf::Invalid(Owner::None), "page {i}");
            let d = w.host.dma.as_ref().unwrap();
            let view = leaves(&mut w.env, d, pa, pa + K4);
            assert!(
                matches!(view[..], [(s, e, 3, Leaf::Mapped { .. })] if (s, e) == (pa, pa + K4)),
                "page {i} in the DMA view: {view:?}"
            );
        }
    }
    w.finish();
    (gave, created, left)
}

/// Issue 25, item 2, the DMA view: a guest's giving pages back splits
/// the host's DMA view where it maps blocks (an SMMU with BBML2), a table
/// per 2 MiB region. Taken from the pool (the control, as before the view
/// had a reserve), the second page back finds none and a new VM none for
/// its root; from the view's reserve, set aside at boot for a view split
/// down to pages over all RAM, every page goes back and the pool is
/// untouched.
#[test]
fn a_guest_giving_back_page_0_of_every_2m_starves_nobody() {
    let (gave, created, left) = give_back(false);
    assert_eq!(gave[0], Ok(()));
    assert!(gave[1..].iter().all(|r| *r == Err(Error::NoMem)), "the control: the pool runs dry: {gave:?}");
    assert_eq!((created, left), (Err(Error::NoMem), 0));

    let (gave, created, left) = give_back(true);
    assert!(gave.iter().all(Result::is_ok), "every page back, the view's tables from its reserve: {gave:?}");
    assert_eq!((created, left), (Ok(()), 0));
}

/// The DMA view's reserve: with blocks (BBML2), its tables and its own
/// pages are a view split down to pages over all RAM; a view of pages,
/// split so at boot, gets none.
#[test]
fn the_dma_views_reserve_covers_a_view_split_down_to_pages() {
    for bbml2 in [false, true] {
        let w = VmWorld::with(true, bbml2, true);
        let d = w.host.dma.as_ref().unwrap();
        let held = (d.table_pages() + d.own_tables().unwrap()) as u64;
        if bbml2 {
            assert_eq!(held, HostMm::dma_tables_needed(d.start_level(), &w.host.ram));
        } else {
            assert_eq!(d.own_tables(), Some(0), "a view of pages gets no reserve");
        }
        w.finish();
    }
}

#[test]
fn topup_refusals_are_precise_and_change_nothing() {
    let mut w = VmWorld::new(true);
    w.topup(0, M2, 3).unwrap();
    w.donate(0, 4 * M2, 0, M2).unwrap();
    let ram = w.ram.0;
    // A page the guest shares, pinned by the host; a page shared with the hyp.
    let borrowed = w.share(0, 0).unwrap();
    {
        let VmWorld { env, host, hyp, .. } = &mut w;
        host.pin(env, Pa(borrowed), false).plain().unwrap();
        host_share_hyp(env, host, hyp, Pa(ram + 6 * M2), K4).plain().unwrap();
    }
    w.check();
    let before = snapshot(&mut w);
    let cases: Vec<(&str, u64, u64, Error)> = vec![
        ("no pages", M2 + 3 * K4, 0, Error::Inval),
        ("unaligned", M2 + 3 * K4 + 8, 1, Error::Inval),
        ("beyond RAM", RAM_SIZE - K4, 2, Error::Inval),
        ("a page count that overflows", M2, u64::MAX / K4 + 1, Error::Inval),
        ("the end wraps", M2, u64::MAX / K4, Error::Inval),
        ("the hyp's own memory", 0, 1, Error::Perm),
        ("the guest's memory (first page)", 5 * M2 - K4, 2, Error::Perm),
        ("a page shared with the hyp", 6 * M2 - K4, 2, Error::Perm),
        ("a page the host borrows and pins", borrowed - ram, 1, Error::Busy),
        ("its own table memory again", M2, 1, Error::Perm),
    ];
    for (what, off, pages, e) in cases {
        assert_eq!(w.topup(0, off, pages), Err(e), "{what}");
        assert_eq!(snapshot(&mut w), before, "{what}: nothing changed");
    }
    // A VM whose stage-2 has no memcache (the model's old kind).
    let VmWorld { env, host, .. } = &mut w;
    let mut plain = GuestMm { pgt: Stage2::new(env, BITS, Some(7)).unwrap(), handle: 7 };
    assert_eq!(host_topup_vm(env, host, &mut plain, Pa(ram + M2 + 3 * K4), 1).plain(), Err(Error::Inval));
    plain.pgt.destroy(env);
    // The hyp cannot map the pages (its stage-1 tables): NoMem, nothing changed.
    w.env.hyp_map_budget = Some(0);
    assert_eq!(w.topup(0, M2 + 3 * K4, 4), Err(Error::NoMem));
    assert_eq!(snapshot(&mut w), before);
    w.env.hyp_map_budget = None;
    w.topup(0, M2 + 3 * K4, 4).unwrap();
    // 3 topped up, 2 taken by the donation, 1 by the share's split.
    assert_eq!(w.guests[0].pgt.own_tables(), Some(4));
    let l = w.host_leaf(ram + M2 + 3 * K4);
    assert_eq!(l, Leaf::Invalid(Owner::VmTables(1)));
    w.check();
    let VmWorld { env, host, hyp, .. } = &mut w;
    host.unpin(env, Pa(borrowed)).plain().unwrap();
    host_unshare_hyp(env, host, hyp, Pa(ram + 6 * M2), K4).plain().unwrap();
    w.finish();
}

#[test]
fn donate_guest_takes_its_tables_from_the_memcache_only() {
    let mut w = VmWorld::new(true);
    w.env.budget = Some(0);
    let before = snapshot(&mut w);
    // A 2 MiB block at IPA 2 MiB: a level-1 and a level-2 table.
    assert_eq!(w.donate(0, 4 * M2, M2, M2), Err(Error::NoMem));
    assert_eq!(w.guests[0].pgt.tables_short(), 2);
    assert_eq!(snapshot(&mut w), before, "nothing changed");
    w.topup(0, M2, 1).unwrap();
    assert_eq!(w.donate(0, 4 * M2, M2, M2), Err(Error::NoMem));
    assert_eq!(w.guests[0].pgt.tables_short(), 1);
    w.topup(0, M2 + K4, 1).unwrap();
    w.env.check_log();
    w.donate(0, 4 * M2, M2, M2).unwrap();
    // The memcache's pages come zeroed, their hints saying so: each of
    // the two new tables (splits of entries with no owner) is installed
    // with one entry written, its first (the memcache's link), not 512.
    let inits = w.env.log.iter().filter(|e| matches!(e, Event::Init { .. })).count();
    assert_eq!(inits, 2);
    assert_eq!(w.guests[0].pgt.own_tables(), Some(0));
    assert_eq!(w.guests[0].pgt.table_pages(), 2);
    // A guest call that needs a table (splitting its block) with the
    // memcache empty: refused on the guest's side, how many short said,
    // nothing changed; after a top-up the same call succeeds.
    let before = snapshot(&mut w);
    let r = w.share(0, M2 + 5 * K4).unwrap_err();
    assert_eq!((r.error(), r.side()), (Error::NoMem, Side::Guest));
    assert_eq!(w.guests[0].pgt.tables_short(), 1);
    assert_eq!(snapshot(&mut w), before);
    w.topup(0, M2 + 2 * K4, 1).unwrap();
    let pa = w.share(0, M2 + 5 * K4).unwrap();
    assert_eq!(pa, w.ram.0 + 4 * M2 + 5 * K4);
    assert_eq!(w.guests[0].pgt.own_tables(), Some(0));
    w.check();
    // The unshare merges the block back: its table returns to the memcache.
    {
        let VmWorld { env, host, guests, .. } = &mut w;
        guest_unshare_host(env, host, &mut guests[0], Ipa(M2 + 5 * K4), K4).plain().unwrap();
    }
    assert_eq!(w.guests[0].pgt.own_tables(), Some(1));
    assert_eq!(w.env.budget, Some(0), "nothing from the pool");
    w.check();
    w.env.budget = None;
    w.finish();
}

#[test]
fn destroy_gives_every_table_page_back_zeroed() {
    let mut w = VmWorld::new(true);
    // Two top-ups apart, one of them joining a later one.
    w.topup(0, M2, 5).unwrap();
    w.topup(0, 3 * M2, 4).unwrap();
    w.topup(0, 3 * M2 + 4 * K4, 2).unwrap();
    w.donate(0, 4 * M2, 0, 4 * M2).unwrap();
    for i in 0..4 {
        w.share(0, i * M2 + K4).unwrap();
    }
    w.check();
    assert_eq!(w.guests[0].pgt.table_pages() + w.guests[0].pgt.own_tables().unwrap(), 11);
    let (bytes, pages) = w.destroy(0);
    assert_eq!((bytes, pages), (4 * M2, 11));
    let ram = w.ram.0;
    let scrubbed: Vec<(u64, u64)> = w
        .env
        .log
        .iter()
        .filter_map(|e| match *e {
            Event::Scrub { pa, size } => Some((pa, size)),
            _ => None,
        })
        .collect();
    for p in (0..5).map(|i| ram + M2 + i * K4).chain((0..6).map(|i| ram + 3 * M2 + i * K4)) {
        assert!(scrubbed.iter().any(|&(a, n)| a <= p && p < a + n), "page {p:#x} zeroed");
        assert!(matches!(w.host_leaf(p), Leaf::Invalid(Owner::None) | Leaf::Mapped { state: PageState::Owned, .. }));
    }
    assert!(w.env.hyp_mapped.is_empty(), "the hyp reaches none of them");
    w.check();
    w.finish();
}

#[test]
fn the_checker_accounts_for_every_memcache_page() {
    let mut w = VmWorld::new(true);
    w.topup(0, M2, 4).unwrap();
    w.donate(0, 4 * M2, 0, M2).unwrap();
    w.check();
    let VmWorld { env, host, hyp, guests, .. } = &mut w;
    let pa = guests[0].pgt.take_table(env).unwrap();
    let gs: Vec<&GuestMm> = guests.iter().collect();
    let v = crate::mm::invariants::check(env, host, hyp, &gs).unwrap_err();
    assert_eq!(v.what, "a VM's table memory: host record and its tables differ in size");
    guests[0].pgt.give_table(env, pa);
    w.check();
    w.finish();
}

#[test]
fn the_host_reserve_pays_for_the_hosts_tables() {
    let mut w = VmWorld::new(true);
    let n = HostMm::tables_needed(0, &w.host.ram, &[]);
    // One table per 512 GiB, per 1 GiB and per 2 MiB of the 32 MiB.
    assert_eq!(n, 1 + 1 + 16);
    // A page of every 2 MiB to a VM (its three tables paid by it), after
    // the host faulted the 2 MiB in: the host's stage-2 split at each.
    w.topup(0, M2, 3).unwrap();
    w.env.budget = Some(0);
    let ram = w.ram.0;
    for i in 2..16 {
        let VmWorld { env, host, .. } = &mut w;
        host.handle_fault(env, Pa(ram + i * M2)).plain().unwrap();
        w.donate(0, i * M2 + 7 * K4, i * K4, K4).unwrap();
    }
    w.check();
    // The VM's teardown merges them back, the tables back to the reserve.
    let (bytes, pages) = w.destroy(0);
    assert_eq!((bytes, pages), (14 * K4, 3));
    assert_eq!(w.env.budget, Some(0));
    w.env.budget = None;
    w.check();
    w.finish();
}

#[test]
fn tables_for_split_counts_every_level_below_the_root() {
    assert_eq!(tables_for_split(1, 0, 0), 0);
    assert_eq!(tables_for_split(1, 0, M2), 2);
    assert_eq!(tables_for_split(1, 0, 1 << 30), 1 + 512);
    assert_eq!(tables_for_split(1, M2 - K4, 2 * K4), 1 + 2);
    assert_eq!(tables_for_split(1, (1 << 30) - K4, 2 * K4), 2 + 2);
    assert_eq!(tables_for_split(0, 0, K4), 3);
    assert_eq!(tables_for_split(2, 0, 4 * M2), 4);
    assert_eq!(tables_for_split(1, !(K4 - 1), K4), 2);
}
