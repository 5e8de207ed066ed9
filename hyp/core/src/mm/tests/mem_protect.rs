//! Unit tests of every ownership transition: the success path and each
//! failure path, with "nothing changed" checked on failure.

use super::helpers::Plain;
use crate::mm::addr::{Ipa, Pa};
use std::vec::Vec;

use super::world::*;
use crate::mm::env::S2Id;
use crate::mm::mem_protect::host_guest::*;
use crate::mm::mem_protect::host_hyp::*;
use crate::mm::mem_protect::*;
use crate::mm::prot::{Attrs, Leaf, Owner, PageState};
use crate::mm::region::Region;
use crate::mm::testenv::Event;
use crate::mm::Error;

/// Runs `f`, which must fail with `want` and change nothing.
macro_rules! refused {
    ($w:expr, $want:expr, $call:expr) => {{
        let before = $w.snapshot();
        let got = $call;
        assert_eq!(got.err(), Some($want), "{}", stringify!($call));
        assert_eq!($w.snapshot(), before, "refused call changed something: {}", stringify!($call));
    }};
}

fn borrowed(pa: u64) -> Leaf {
    Leaf::Mapped { pa, attrs: Attrs::NORMAL_RW, state: PageState::SharedBorrowed }
}

#[test]
fn host_faults_map_largest_block() {
    let mut w = World::new();
    let r = w.host.handle_fault(&mut w.env, Pa(RAM + 5 * M2 + 123)).plain().unwrap();
    assert_eq!(r, HostFault::Mapped { level: 2, base: RAM + 5 * M2, device: false });
    let r = w.host.handle_fault(&mut w.env, Pa(0x0900_0010)).plain().unwrap();
    assert_eq!(r, HostFault::Mapped { level: 3, base: 0x0900_0000, device: true });
    assert_eq!(w.host.handle_fault(&mut w.env, Pa(RAM + 5 * M2)).plain().unwrap(), HostFault::Spurious);
    refused!(w, Error::Inval, w.host.handle_fault(&mut w.env, Pa(0x2000_0000)).plain());
    refused!(w, Error::Inval, w.host.handle_fault(&mut w.env, Pa(1 << 45)).plain());
    // Hyp-owned pages refuse the host and force 4K around them.
    host_donate_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(RAM + 9 * M2 + K4), K4).plain().unwrap();
    refused!(w, Error::Perm, w.host.handle_fault(&mut w.env, Pa(RAM + 9 * M2 + K4)).plain());
    let r = w.host.handle_fault(&mut w.env, Pa(RAM + 9 * M2)).plain().unwrap();
    assert_eq!(r, HostFault::Mapped { level: 3, base: RAM + 9 * M2, device: false });
    w.check();
    w.finish();
}

#[test]
fn share_and_unshare_with_hyp() {
    let mut w = World::new();
    let pa = RAM + 3 * M2;
    host_share_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(pa), 2 * K4).plain().unwrap();
    assert!(matches!(w.host_leaf(pa), Leaf::Mapped { state: PageState::SharedOwned, .. }));
    let hl = w.hyp.pgt.lookup(&mut w.env, pa + K4).unwrap().at(pa + K4);
    assert_eq!(hl, Leaf::Mapped { pa: pa + K4, attrs: Attrs::NORMAL_RW, state: PageState::SharedBorrowed });
    refused!(w, Error::Perm, host_share_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(pa + K4), K4).plain());
    refused!(w, Error::Inval, host_share_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(pa + 1), K4).plain());
    refused!(w, Error::Inval, host_share_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(pa), 0).plain());
    refused!(w, Error::Inval, host_share_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(RAM + RAM_SIZE), K4).plain());
    refused!(
        w,
        Error::Inval,
        host_share_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(RAM + RAM_SIZE - K4), 2 * K4).plain()
    );
    refused!(w, Error::Inval, host_share_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(!0xfff_u64), 2 * K4).plain());
    refused!(w, Error::Perm, host_unshare_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(pa), 3 * K4).plain());
    host_unshare_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(pa), 2 * K4).plain().unwrap();
    assert!(matches!(w.host_leaf(pa), Leaf::Mapped { state: PageState::Owned, .. }));
    assert_eq!(w.hyp.pgt.lookup(&mut w.env, pa).unwrap().leaf, Leaf::Invalid(Owner::None));
    refused!(w, Error::Perm, host_unshare_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(pa), K4).plain());
    w.check();
    w.finish();
}

#[test]
fn donate_to_hyp_and_back() {
    let mut w = World::new();
    let pa = RAM + M2;
    let tables = w.host.pgt.table_pages();
    host_donate_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(pa), M2).plain().unwrap();
    assert_eq!(w.host_leaf(pa + K4), Leaf::Invalid(Owner::HypDonated));
    // A 2M-aligned donation is one entry in each table.
    assert_eq!(w.host.pgt.lookup(&mut w.env, pa).unwrap().level, 2);
    refused!(w, Error::Perm, host_donate_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(pa), K4).plain());
    refused!(w, Error::Perm, host_share_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(pa), K4).plain());
    refused!(w, Error::Perm, hyp_donate_host(&mut w.env, &mut w.host, &mut w.hyp, Pa(pa + M2), K4).plain());
    refused!(w, Error::Perm, hyp_donate_host(&mut w.env, &mut w.host, &mut w.hyp, Pa(pa), M2 + K4).plain());
    hyp_donate_host(&mut w.env, &mut w.host, &mut w.hyp, Pa(pa), M2).plain().unwrap();
    assert_eq!(w.host_leaf(pa), Leaf::Invalid(Owner::None));
    assert_eq!(w.host.pgt.table_pages(), tables, "merged back");
    w.check();
    w.finish();
}

#[test]
fn donate_to_guest_uses_blocks() {
    let mut w = World::new();
    let pa = RAM + 8 * M2;
    let [g, ..] = &mut w.guests[..] else { unreachable!() };
    host_donate_guest(&mut w.env, &mut w.host, g, Pa(pa), Ipa(G), 4 * M2).plain().unwrap();
    assert_eq!(w.host_leaf(pa + K4), Leaf::Invalid(Owner::Guest(1)));
    let (l, level) = w.guest_leaf(0, G + M2 + K4);
    assert_eq!((l, level), (Leaf::Mapped { pa: pa + M2 + K4, attrs: GUEST_RAM, state: PageState::Owned }, 2));
    // Failures: already donated (to the same or another VM), IPA occupied,
    // bad ranges, hyp memory.
    refused!(w, Error::Perm, host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[1], Pa(pa), Ipa(G), K4).plain());
    refused!(
        w,
        Error::Perm,
        host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(pa + 8 * M2), Ipa(G + K4), K4).plain()
    );
    refused!(
        w,
        Error::Inval,
        host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(pa + 8 * M2), Ipa(1 << 40), K4).plain()
    );
    refused!(
        w,
        Error::Inval,
        host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(pa + 8 * M2 + 1), Ipa(2 * G), K4).plain()
    );
    refused!(
        w,
        Error::Inval,
        host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(0x0900_0000), Ipa(2 * G), K4).plain()
    );
    host_donate_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(pa + 9 * M2), K4).plain().unwrap();
    refused!(
        w,
        Error::Perm,
        host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(pa + 9 * M2), Ipa(2 * G), K4).plain()
    );
    w.check();
    w.finish();
}

fn guest_with_memory(w: &mut World) -> u64 {
    let pa = RAM + 8 * M2;
    host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(pa), Ipa(G), 4 * M2).plain().unwrap();
    pa
}

#[test]
fn guest_share_unshare_and_pins() {
    let mut w = World::new();
    let pa = guest_with_memory(&mut w);
    let ipa = G + M2 + 5 * K4;
    let got = guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(ipa), K4).plain().unwrap();
    assert_eq!(got, pa + M2 + 5 * K4);
    assert_eq!(w.host_leaf(got), borrowed(got));
    assert_eq!(w.guest_leaf(0, ipa), (Leaf::Mapped { pa: got, attrs: GUEST_RAM, state: PageState::SharedOwned }, 3));
    refused!(w, Error::Perm, guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(ipa), K4).plain());
    refused!(w, Error::Perm, guest_share_host(&mut w.env, &mut w.host, &mut w.guests[1], Ipa(ipa), K4).plain());
    refused!(w, Error::Inval, guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(ipa + 8), K4).plain());
    refused!(w, Error::Perm, guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + 8 * M2), K4).plain());
    refused!(w, Error::Perm, guest_unshare_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(ipa + K4), K4).plain());
    // Pins.
    refused!(w, Error::Perm, w.host.pin(&mut w.env, Pa(pa), false).plain());
    refused!(w, Error::Inval, w.host.pin(&mut w.env, Pa(got + 8), false).plain());
    w.host.pin(&mut w.env, Pa(got), true).plain().unwrap();
    assert_eq!(w.host.pin(&mut w.env, Pa(got), false).plain(), Err(Error::Busy));
    assert_eq!(w.host.pin(&mut w.env, Pa(got), true).plain(), Err(Error::Busy));
    refused!(w, Error::Busy, guest_unshare_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(ipa), K4).plain());
    refused!(w, Error::Busy, guest_relinquish(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(ipa), K4).plain());
    w.host.unpin(&mut w.env, Pa(got)).plain().unwrap();
    w.host.pin(&mut w.env, Pa(got), false).plain().unwrap();
    w.host.pin(&mut w.env, Pa(got), false).plain().unwrap();
    assert_eq!(w.host.pin(&mut w.env, Pa(got), true).plain(), Err(Error::Busy));
    w.host.unpin(&mut w.env, Pa(got)).plain().unwrap();
    w.host.unpin(&mut w.env, Pa(got)).plain().unwrap();
    assert_eq!(w.host.unpin(&mut w.env, Pa(got)).plain(), Err(Error::Inval));
    // Unshare: host mapping gone (with TLBI) before the guest sees it private.
    w.env.check_log();
    guest_unshare_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(ipa), K4).plain().unwrap();
    let host_s2 = w.host.pgt.s2_id().unwrap();
    let tlbi_host = w.env.log.iter().position(|e| *e == Event::TlbiIpa { s2: host_s2, ipa: got, level: 3 }).unwrap();
    let guest_write = w.env.log.iter().rposition(|e| matches!(e, Event::Write { .. })).unwrap();
    assert!(tlbi_host < guest_write);
    assert_eq!(w.host_leaf(got), Leaf::Invalid(Owner::Guest(1)));
    // The guest's 2M block is whole again.
    assert_eq!(w.guest_leaf(0, ipa).1, 2);
    w.check();
    w.finish();
}

#[test]
fn relinquish_scrubs_and_returns() {
    let mut w = World::new();
    let pa = guest_with_memory(&mut w);
    let ipa = G + 3 * K4;
    w.env.check_log();
    assert_eq!(guest_relinquish(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(ipa), K4).plain(), Ok(pa + 3 * K4));
    assert!(w.env.log.contains(&Event::Scrub { pa: pa + 3 * K4, size: K4 }));
    assert_eq!(w.host_leaf(pa + 3 * K4), Leaf::Invalid(Owner::None));
    assert_eq!(w.guest_leaf(0, ipa).0, Leaf::Invalid(Owner::None));
    refused!(w, Error::Perm, guest_relinquish(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(ipa), K4).plain());
    refused!(w, Error::Perm, guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(ipa), K4).plain());
    // The host can fault it in now, as a 4K page (its neighbours are the guest's).
    let r = w.host.handle_fault(&mut w.env, Pa(pa + 3 * K4)).plain().unwrap();
    assert_eq!(r, HostFault::Mapped { level: 3, base: pa + 3 * K4, device: false });
    w.check();
    w.finish();
}

#[test]
fn teardown_reclaims_everything_and_respects_pins() {
    let mut w = World::new();
    let host_tables = w.host.pgt.table_pages();
    let pa = guest_with_memory(&mut w);
    let shared = guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + 7 * K4), K4).plain().unwrap();
    w.host.pin(&mut w.env, Pa(shared), false).plain().unwrap();
    let before_pages = w.guests[0].pgt.table_pages();
    let r = guest_teardown(&mut w.env, &mut w.host, &mut w.guests[0]).plain();
    assert_eq!(r, Err(Error::Busy));
    assert!(w.guests[0].pgt.table_pages() <= before_pages);
    w.host.unpin(&mut w.env, Pa(shared)).plain().unwrap();
    let done = guest_teardown(&mut w.env, &mut w.host, &mut w.guests[0]).plain().unwrap();
    assert!(done > 0 && done <= 4 * M2);
    for a in (pa..pa + 4 * M2).step_by(K4 as usize) {
        assert_eq!(w.host_leaf(a), Leaf::Invalid(Owner::None), "{a:#x}");
    }
    let scrubbed: u64 = w.env.log.iter().map(|e| if let Event::Scrub { size, .. } = e { *size } else { 0 }).sum();
    assert_eq!(scrubbed, 4 * M2);
    // Each scrubbed range is cleaned to the point of coherency right away,
    // before the host's stage-2 changes.
    for (i, e) in w.env.log.iter().enumerate() {
        if let Event::Scrub { pa, size } = *e {
            assert_eq!(w.env.log[i + 1], Event::CleanInvalPoc { pa, size });
        }
    }
    assert_eq!(w.host.pgt.table_pages(), host_tables);
    assert_eq!(guest_teardown(&mut w.env, &mut w.host, &mut w.guests[0]).plain(), Ok(0));
    w.check();
    w.finish();
}

#[test]
fn two_table_transitions_are_all_or_nothing_under_oom() {
    for budget in 0..4 {
        let mut w = World::new();
        guest_with_memory(&mut w);
        let before = w.snapshot();
        w.env.budget = Some(budget);
        // Needs a table page on each side (guest split, host split).
        let r = guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + 5 * K4), K4).plain();
        w.env.budget = None;
        if budget < 2 {
            assert_eq!(r, Err(Error::NoMem));
            assert_eq!(w.snapshot(), before);
        } else {
            assert!(r.is_ok());
        }
        w.check();
        w.finish();
    }
}

#[test]
fn one_gib_guest_needs_no_tables_until_a_share() {
    let mut w = World::new();
    // Host RAM in World is 64 MiB; give this test a 1 GiB-aligned RAM bank.
    w.host.ram.push(Region { base: 4 * G, size: G });
    // (The host's tables so far record the carve-out.)
    let t = w.host.pgt.table_pages();
    host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(4 * G), Ipa(G), G).plain().unwrap();
    assert_eq!((w.guests[0].pgt.table_pages(), w.guest_leaf(0, G + 123 * K4).1), (0, 1));
    assert_eq!(w.host.pgt.table_pages(), t, "the host records the donation in one 1G entry");
    guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + 5 * K4), K4).plain().unwrap();
    assert_eq!((w.guests[0].pgt.table_pages(), w.host.pgt.table_pages()), (2, t + 2));
    guest_unshare_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + 5 * K4), K4).plain().unwrap();
    assert_eq!((w.guests[0].pgt.table_pages(), w.host.pgt.table_pages()), (0, t));
    w.check();
    w.finish();
}

#[test]
fn invariant_checker_catches_corruption() {
    use crate::mm::invariants::check;
    use crate::mm::pte;
    let mut w = World::new();
    let pa = guest_with_memory(&mut w);
    let got = guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + 5 * K4), K4).plain().unwrap();
    w.host.pin(&mut w.env, Pa(got), false).plain().unwrap();
    w.check();
    let corrupt = |w: &mut World, tree: usize, at: u64, leaf: Leaf| -> &'static str {
        let pgt = if tree == 0 { &w.host.pgt } else { &w.guests[0].pgt };
        assert_eq!(pgt.lookup(&mut w.env, at).unwrap().level, 3, "corrupt a page entry");
        let ptep = pgt.leaf_ptep(&mut w.env, at) as u64;
        // SAFETY: ptep is a descriptor in a live test table.
        let old = unsafe { *(ptep as *const u64) };
        // SAFETY: as above; the corruption the checker must find.
        unsafe { *(ptep as *mut u64) = pte::encode(leaf, 3) };
        let gs: Vec<&GuestMm> = w.guests.iter().collect();
        let what = check(&mut w.env, &w.host, &w.hyp, &gs).err().map(|v| v.what).unwrap_or("nothing found");
        // SAFETY: as above; restore.
        unsafe { *(ptep as *mut u64) = old };
        what
    };
    // The host maps a guest-private page.
    let private = pa + 6 * K4;
    let host_map = Leaf::Mapped { pa: private, attrs: Attrs::NORMAL_RWX, state: PageState::Owned };
    assert_ne!(corrupt(&mut w, 0, private, host_map), "nothing found");
    // The guest's shared page loses its shared state on the guest side only.
    let one_sided = Leaf::Mapped { pa: got, attrs: GUEST_RAM, state: PageState::Owned };
    assert_ne!(corrupt(&mut w, 1, G + 5 * K4, one_sided), "nothing found");
    // The host's borrowed page becomes host-owned: the pin is now illegal.
    let stolen = Leaf::Mapped { pa: got, attrs: Attrs::NORMAL_RWX, state: PageState::Owned };
    assert_ne!(corrupt(&mut w, 0, got, stolen), "nothing found");
    w.check();
    w.host.unpin(&mut w.env, Pa(got)).plain().unwrap();
    w.finish();
}

#[test]
fn hyp_own_memory_never_goes_to_the_host() {
    let mut w = World::new();
    let (small, small_size) = HYP_OWN[0];
    let (block, block_size) = HYP_OWN[1];
    assert_eq!(w.host_leaf(small + K4), Leaf::Invalid(Owner::Hyp));
    assert_eq!(w.host_leaf(block + M2 - K4), Leaf::Invalid(Owner::Hyp));
    // RECLAIM_HYP of the hyp's own pages: EPERM, whole or in part.
    for (pa, size) in [(small, K4), (small + K4, K4), (small, small_size), (block, block_size), (block + 5 * K4, K4)] {
        refused!(w, Error::Perm, hyp_donate_host(&mut w.env, &mut w.host, &mut w.hyp, Pa(pa), size).plain());
    }
    // Nor does any other transition hand them out.
    refused!(w, Error::Perm, w.host.handle_fault(&mut w.env, Pa(block + 123)).plain());
    refused!(w, Error::Perm, host_share_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(small), K4).plain());
    refused!(w, Error::Perm, host_donate_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(block), K4).plain());
    refused!(
        w,
        Error::Perm,
        host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(small), Ipa(G), K4).plain()
    );
    refused!(w, Error::Perm, hyp_claim_own(&mut w.env, &mut w.host, &mut w.hyp, Pa(block), K4).plain());
    // Donated pages right next to them still make the round trip.
    let donated = small + small_size;
    host_donate_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(donated), 2 * K4).plain().unwrap();
    assert_eq!(w.host_leaf(donated + K4), Leaf::Invalid(Owner::HypDonated));
    w.check();
    refused!(w, Error::Perm, hyp_donate_host(&mut w.env, &mut w.host, &mut w.hyp, Pa(small + K4), 3 * K4).plain());
    hyp_donate_host(&mut w.env, &mut w.host, &mut w.hyp, Pa(donated), 2 * K4).plain().unwrap();
    assert_eq!(w.host_leaf(donated), Leaf::Invalid(Owner::None));
    assert_eq!(w.host_leaf(small + K4), Leaf::Invalid(Owner::Hyp));
    assert_eq!(w.hyp.own.len(), 2);
    w.check();
    w.finish();
}

#[test]
fn checker_reports_hyp_memory_handed_to_the_host() {
    use crate::mm::invariants::check;
    fn run(w: &mut World) -> Option<&'static str> {
        let gs: Vec<&GuestMm> = w.guests.iter().collect();
        check(&mut w.env, &w.host, &w.hyp, &gs).err().map(|v| v.what)
    }
    // What the old hyp_donate_host did with a carve-out page (it took any
    // page hyp-owned on both sides): neither view says the hyp's any more.
    let mut w = World::new();
    assert_eq!(run(&mut w), None);
    let pa = HYP_OWN[1].0 + 3 * K4;
    w.host.pgt.set(&mut w.env, pa, K4, Leaf::Invalid(Owner::None)).unwrap();
    w.hyp.pgt.set(&mut w.env, pa, K4, Leaf::Invalid(Owner::None)).unwrap();
    assert_eq!(run(&mut w), Some("the hyp's own memory is not the hyp's in the host's view"));
    // ... and the host then mapping it, as it could.
    assert!(w.host.handle_fault(&mut w.env, Pa(pa)).plain().is_ok());
    assert_eq!(run(&mut w), Some("the hyp's own memory is not the hyp's in the host's view"));
    w.env.check_log();
    w.finish();

    let mut w = World::new();
    let own = HYP_OWN[0].0;
    // A carve-out page annotated as donated (so RECLAIM_HYP would take it).
    w.host.pgt.set(&mut w.env, own, K4, Leaf::Invalid(Owner::HypDonated)).unwrap();
    assert_eq!(run(&mut w), Some("a page donated to the hyp lies in the hyp's own memory"));
    w.host.pgt.set(&mut w.env, own, K4, Leaf::Invalid(Owner::Hyp)).unwrap();
    assert_eq!(run(&mut w), None);
    // The hyp's table loses one of its own pages.
    w.hyp.pgt.set(&mut w.env, own, K4, Leaf::Invalid(Owner::None)).unwrap();
    assert_eq!(run(&mut w), Some("the hyp's own memory is not owned in the hyp's table"));
    let hyp_page = Leaf::Mapped { pa: own, attrs: Attrs::NORMAL_RW, state: PageState::Owned };
    w.hyp.pgt.set(&mut w.env, own, K4, hyp_page).unwrap();
    assert_eq!(run(&mut w), None);
    // The hyp's own annotation on a page outside its regions.
    let out = RAM + 40 * K4;
    w.host.pgt.set(&mut w.env, out, K4, Leaf::Invalid(Owner::Hyp)).unwrap();
    let hyp_page = Leaf::Mapped { pa: out, attrs: Attrs::NORMAL_RW, state: PageState::Owned };
    w.hyp.pgt.set(&mut w.env, out, K4, hyp_page).unwrap();
    assert_eq!(run(&mut w), Some("the host's stage-2 records the hyp's own memory outside its regions"));
    w.host.pgt.set(&mut w.env, out, K4, Leaf::Invalid(Owner::HypDonated)).unwrap();
    assert_eq!(run(&mut w), Some("the DMA view maps a page the host's devices may not reach"));
    w.host.dma.as_mut().unwrap().set(&mut w.env, out, K4, Leaf::Invalid(Owner::None)).unwrap();
    assert_eq!(run(&mut w), None, "a donated page there is fine");
    w.env.check_log();
    w.finish();
}

/// A loop to profile (`valgrind --tool=callgrind ... --ignored profile_`).
#[test]
#[ignore]
fn profile_share_unshare_4k() {
    let mut w = World::new();
    guest_with_memory(&mut w);
    w.env.record = false;
    guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + M2), K4).plain().unwrap();
    for _ in 0..20000 {
        guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + M2 + 7 * K4), K4).plain().unwrap();
        guest_unshare_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + M2 + 7 * K4), K4).plain().unwrap();
    }
    guest_unshare_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + M2), K4).plain().unwrap();
    w.finish();
}

/// MEM_SHARE / MEM_UNSHARE of a 4K page whose block is already split: the
/// guest's entry changes only its software bits (one write, no TLBI, no
/// break-before-make); the host's goes invalid → valid (one write, no
/// TLBI) and back valid → invalid (one write, one TLBI).
#[test]
fn share_of_a_split_page_writes_each_side_once() {
    let mut w = World::new();
    guest_with_memory(&mut w);
    // Splits the 2M block; the next page of the block is then a 4K leaf.
    guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + M2), K4).plain().unwrap();
    let (host_s2, guest_s2) = (w.host.pgt.s2_id().unwrap(), w.guests[0].pgt.s2_id().unwrap());
    let count = |log: &[Event]| {
        let writes = |s: S2Id| log.iter().filter(|e| matches!(e, Event::Write { s2, .. } if *s2 == s)).count();
        let tlbis = |s: S2Id| {
            log.iter().filter(|e| matches!(e, Event::TlbiIpa { s2, .. } | Event::TlbiVmid { s2 } if *s2 == s)).count()
        };
        (writes(host_s2), tlbis(host_s2), writes(guest_s2), tlbis(guest_s2))
    };
    let from = w.env.log.len();
    guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + M2 + K4), K4).plain().unwrap();
    assert_eq!(count(&w.env.log[from..]), (1, 0, 1, 0), "share: (host writes, host TLBIs, guest writes, guest TLBIs)");
    let from = w.env.log.len();
    guest_unshare_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + M2 + K4), K4).plain().unwrap();
    assert_eq!(
        count(&w.env.log[from..]),
        (1, 1, 1, 0),
        "unshare: (host writes, host TLBIs, guest writes, guest TLBIs)"
    );
    w.env.check_log();
    w.check();
    w.finish();
}

/// The DMA view follows ownership and pins: a donation takes the page out
/// (the SMMU's TLB invalidated, naming the DMA view, before the cache clean
/// and the guest's mapping), a share without a pin leaves it out, the first
/// pin maps it, the last unpin leaves it, the unshare removes it
/// (invalidated, CMD_SYNC completed, before the guest's page is private
/// again), a relinquish brings it back; refused pins change nothing.
#[test]
fn dma_view_follows_ownership_and_pins() {
    let mut w = World::new();
    let dma_s2 = w.host.dma.as_ref().unwrap().s2_id().unwrap();
    assert!(dma_s2.iommu);
    let pa = RAM + 64 * K4;
    let dma_at = |w: &mut World, pa: u64| w.host.dma.as_ref().unwrap().lookup(&mut w.env, pa).unwrap().at(pa);
    assert_eq!(dma_at(&mut w, pa), dma_owned(pa));
    // The hyp's own memory is not in the view.
    assert_eq!(dma_at(&mut w, HYP_OWN[1].0), Leaf::Invalid(Owner::None));

    w.env.log.clear();
    host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(pa), Ipa(G), K4).plain().unwrap();
    assert_eq!(dma_at(&mut w, pa), Leaf::Invalid(Owner::None));
    let log = &w.env.log;
    let smmu_tlbi = log
        .iter()
        .position(|e| matches!(e, Event::TlbiIpa { s2, .. } | Event::TlbiVmid { s2 } if *s2 == dma_s2))
        .expect("the SMMU's TLB is invalidated");
    let clean = log.iter().position(|e| matches!(e, Event::CleanInvalPoc { .. })).unwrap();
    assert!(smmu_tlbi < clean, "devices lose the page before it is cleaned for the guest");
    w.check();

    // Shared, not pinned: still out of reach of devices.
    guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G), K4).plain().unwrap();
    assert_eq!(dma_at(&mut w, pa), Leaf::Invalid(Owner::None));
    w.check();
    // Pinned: mapped; a second pin changes nothing in the view.
    w.host.pin(&mut w.env, Pa(pa), false).plain().unwrap();
    assert_eq!(dma_at(&mut w, pa), dma_pinned(pa));
    w.host.pin(&mut w.env, Pa(pa), false).plain().unwrap();
    refused!(w, Error::Busy, w.host.pin(&mut w.env, Pa(pa), true).plain());
    w.check();
    // The unshare waits for the pins (they are the DMA mappings).
    refused!(w, Error::Busy, guest_unshare_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G), K4).plain());
    w.host.unpin(&mut w.env, Pa(pa)).plain().unwrap();
    assert_eq!(dma_at(&mut w, pa), dma_pinned(pa));
    w.env.log.clear();
    w.host.unpin(&mut w.env, Pa(pa)).plain().unwrap();
    assert_eq!(dma_at(&mut w, pa), dma_pinned(pa), "the last unpin leaves the mapping");
    assert!(w.env.log.is_empty(), "an unpin writes nothing: {:?}", w.env.log);
    w.check();
    // A pin again finds it mapped: no write either.
    w.host.pin(&mut w.env, Pa(pa), false).plain().unwrap();
    w.host.unpin(&mut w.env, Pa(pa)).plain().unwrap();
    assert!(w.env.log.is_empty(), "{:?}", w.env.log);
    guest_unshare_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G), K4).plain().unwrap();
    assert_eq!(dma_at(&mut w, pa), Leaf::Invalid(Owner::None));
    let log = &w.env.log;
    let smmu_tlbi = log.iter().position(|e| matches!(e, Event::TlbiIpa { s2, ipa, .. } if *s2 == dma_s2 && *ipa == pa));
    let sync = log.iter().position(|e| *e == Event::DmaSync);
    let guest_s2 = w.guests[0].pgt.s2_id().unwrap();
    let guest = log.iter().position(|e| matches!(e, Event::Write { s2, .. } if *s2 == guest_s2));
    assert!(smmu_tlbi < sync && sync < guest && smmu_tlbi.is_some(), "unmapped, synced, then private: {log:?}");
    w.check();
    // Relinquished: the host's again, devices included.
    guest_relinquish(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G), K4).plain().unwrap();
    assert_eq!(dma_at(&mut w, pa), dma_owned(pa));
    w.check();
    // A pin that cannot get the DMA view's table page changes nothing.
    let pa2 = RAM + 200 * K4;
    host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[1], Pa(pa2), Ipa(G), K4).plain().unwrap();
    guest_share_host(&mut w.env, &mut w.host, &mut w.guests[1], Ipa(G), K4).plain().unwrap();
    w.env.budget = Some(0);
    let before = w.snapshot();
    let r = w.host.pin(&mut w.env, Pa(pa2), false).plain();
    w.env.budget = None;
    if r.is_err() {
        assert_eq!(r, Err(Error::NoMem));
        assert_eq!(w.host.pins.count(pa2), 0);
        assert_eq!(before, w.snapshot());
    }
    w.check();
    w.finish();
}

#[test]
fn checker_reports_dma_view_mismatches() {
    use crate::mm::invariants::check;
    fn run(w: &mut World) -> Option<&'static str> {
        let gs: Vec<&GuestMm> = w.guests.iter().collect();
        check(&mut w.env, &w.host, &w.hyp, &gs).err().map(|v| v.what)
    }
    let mut w = World::new();
    let pa = RAM + 64 * K4;
    host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(pa), Ipa(G), K4).plain().unwrap();
    assert_eq!(run(&mut w), None);
    // A guest-private page mapped for DMA.
    w.host.dma.as_mut().unwrap().set(&mut w.env, pa, K4, dma_owned(pa)).unwrap();
    assert_eq!(run(&mut w), Some("the DMA view maps a page the host's devices may not reach"));
    w.host.dma.as_mut().unwrap().set(&mut w.env, pa, K4, Leaf::Invalid(Owner::None)).unwrap();
    assert_eq!(run(&mut w), None);
    // A shared page mapped without a pin.
    guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G), K4).plain().unwrap();
    w.host.dma.as_mut().unwrap().set(&mut w.env, pa, K4, dma_pinned(pa)).unwrap();
    assert_eq!(run(&mut w), Some("the DMA view maps a page the host's devices may not reach"));
    // A pinned page left out.
    w.host.dma.as_mut().unwrap().set(&mut w.env, pa, K4, Leaf::Invalid(Owner::None)).unwrap();
    w.host.pins.pin(pa, false).unwrap();
    assert_eq!(run(&mut w), Some("the DMA view misses pinned pages"));
    w.host.pins.unpin(pa).unwrap();
    assert_eq!(run(&mut w), Some("the DMA view misses pinned pages"), "still marked mapped");
    w.host.pins.unmap(pa);
    assert_eq!(run(&mut w), None);
    // One of the host's own pages left out.
    let own = RAM + 300 * K4;
    w.host.dma.as_mut().unwrap().set(&mut w.env, own, K4, Leaf::Invalid(Owner::None)).unwrap();
    assert_eq!(run(&mut w), Some("the DMA view misses pages the host owns"));
    // (Each corruption from and back to invalid: a valid page changed in
    // place would be a transient DMA fault, which check_log refuses.)
    w.env.check_log();
    // Or mapped somewhere else, or writable device memory.
    w.host.dma.as_mut().unwrap().set(&mut w.env, own, K4, dma_owned(own + K4)).unwrap();
    assert_eq!(run(&mut w), Some("the DMA view is not a read/write identity map"));
    w.host.dma.as_mut().unwrap().set(&mut w.env, own, K4, Leaf::Invalid(Owner::None)).unwrap();
    w.env.check_log();
    w.host.dma.as_mut().unwrap().set(&mut w.env, own, K4, dma_owned(own)).unwrap();
    assert_eq!(run(&mut w), None);
    w.host.dma.as_mut().unwrap().set(&mut w.env, 0x0900_0000, K4, dma_owned(0x0900_0000)).unwrap();
    assert_eq!(run(&mut w), Some("the DMA view maps something that is not RAM"));
    w.host.dma.as_mut().unwrap().set(&mut w.env, 0x0900_0000, K4, Leaf::Invalid(Owner::None)).unwrap();
    w.env.check_log();
    w.finish();
}
