//! The one-page forms of the transitions and of the host's fault
//! (`Stage2::entry` / `prepare_entry` / `commit_entry`) against the range
//! forms: the same results, tables, counters and hardware events (writes,
//! TLB invalidations under the right tree, barriers); their fallbacks
//! (blocks, merges, no hint) and refusals that change nothing.

use proptest::prelude::*;
use std::vec::Vec;
use std::{format, vec};

use super::helpers::check_hints;
use super::mem_protect::{World, G, K4, M2, RAM};
use super::model_ownership::{apply, op};
use crate::mm::mem_protect::*;
use crate::mm::pgtable::{Stats, ENTRY_COMMITS};
use crate::mm::prot::{Attrs, Leaf, Owner, PageState};
use crate::mm::testenv::Event;
use crate::mm::{pte, Error};

/// One operation on a world.
type Step<'a> = &'a dyn Fn(&mut World) -> Result<(), Error>;

fn commits() -> u64 {
    ENTRY_COMMITS.with(|c| c.get())
}

/// Runs `f` with every transition forced to its range form.
fn by_range<T>(f: impl FnOnce() -> T) -> T {
    RANGE_ONLY.with(|c| c.set(true));
    let r = f();
    RANGE_ONLY.with(|c| c.set(false));
    r
}

/// An event with the table pages' addresses (which differ between two
/// worlds) left out: kind, tree (VMID, SMMU or not), IPA, level, and the
/// descriptors of leaf writes (a table descriptor reads as `u64::MAX`).
fn norm(e: &Event) -> (u8, u16, bool, u64, u8, u64, u64) {
    let d = |v: u64, level: u8| if pte::is_table(v, level) { u64::MAX } else { v };
    match *e {
        Event::Write { s2, ipa, level, old, new, .. } => {
            (1, s2.vmid, s2.iommu, ipa, level, d(old, level), d(new, level))
        }
        Event::TlbiIpa { s2, ipa, level } => (2, s2.vmid, s2.iommu, ipa, level, 0, 0),
        Event::TlbiVmid { s2 } => (3, s2.vmid, s2.iommu, 0, 0, 0, 0),
        Event::Barrier => (4, 0, false, 0, 0, 0, 0),
        Event::Init { .. } => (5, 0, false, 0, 0, 0, 0),
        Event::AllocTable { .. } => (6, 0, false, 0, 0, 0, 0),
        Event::FreeTable { .. } => (7, 0, false, 0, 0, 0, 0),
        Event::TableFilled { s2, .. } => (8, s2.vmid, s2.iommu, 0, 0, 0, 0),
        Event::AllocRoot { pages, .. } => (9, 0, false, pages as u64, 0, 0, 0),
        Event::FreeRoot { pages, .. } => (10, 0, false, pages as u64, 0, 0, 0),
        Event::Scrub { pa, size } => (11, 0, false, pa, 0, size, 0),
        Event::CleanInvalPoc { pa, size } => (12, 0, false, pa, 0, size, 0),
        Event::IcacheInval { pa, size } => (13, 0, false, pa, 0, size, 0),
    }
}

fn stats(w: &World) -> Vec<Stats> {
    let mut v = vec![w.host.pgt.stats, w.hyp.pgt.stats];
    v.extend(w.host.dma.as_ref().map(|d| d.stats));
    v.extend(w.guests.iter().map(|g| g.pgt.stats));
    v
}

fn all_hints(w: &mut World) {
    let World { env, host, hyp, guests } = w;
    check_hints(env, &host.pgt);
    check_hints(env, &hyp.pgt);
    for g in guests.iter() {
        check_hints(env, &g.pgt);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    /// Two worlds take the same random operations, one with the one-page
    /// forms, one by range walks only: every step gives the same result,
    /// the same leaves in every tree, the same counters and the same
    /// sequence of hardware events; the hints stay exact.
    #[test]
    fn one_page_forms_match_the_range_forms(ops in proptest::collection::vec(op(), 240)) {
        let (mut a, mut b) = (World::new(), World::new());
        // A prologue that meets the one-page forms for sure: a page given
        // to guest 0, shared and unshared, shared with the hyp and back, a
        // fault in a 2M block.
        let pa = RAM + 40 * K4;
        let (c0, mut fast) = (commits(), 0);
        for w in [&mut a, &mut b] {
            w.check();
        }
        let mut step = |a: &mut World, b: &mut World, f: Step, what: &str| {
            let before = commits();
            let ra = f(a);
            fast += commits() - before;
            let rb = by_range(|| f(b));
            prop_assert_eq!(ra, rb, "{}", what);
            let (ea, eb): (Vec<_>, Vec<_>) = (a.env.log.iter().map(norm).collect(), b.env.log.iter().map(norm).collect());
            prop_assert_eq!(ea, eb, "events of {}", what);
            prop_assert_eq!(a.snapshot(), b.snapshot(), "tables after {}", what);
            prop_assert_eq!(stats(a), stats(b), "counters after {}", what);
            a.check();
            b.check();
            all_hints(a);
            Ok(())
        };
        let prologue: [(&str, Step); 6] = [
            ("donate", &|w| { let World { env, host, guests, .. } = w; host_donate_guest(env, host, &mut guests[0], pa, G, K4) }),
            ("share", &|w| { let World { env, host, guests, .. } = w; guest_share_host(env, host, &mut guests[0], G, K4).map(|_| ()) }),
            ("unshare", &|w| { let World { env, host, guests, .. } = w; guest_unshare_host(env, host, &mut guests[0], G, K4).map(|_| ()) }),
            ("share_hyp", &|w| { let World { env, host, hyp, .. } = w; host_share_hyp(env, host, hyp, pa + K4, K4) }),
            ("unshare_hyp", &|w| { let World { env, host, hyp, .. } = w; host_unshare_hyp(env, host, hyp, pa + K4, K4) }),
            ("fault", &|w| w.host.handle_fault(&mut w.env, RAM + 5 * M2 + 8).map(|_| ())),
        ];
        for (what, f) in prologue {
            step(&mut a, &mut b, f, what)?;
        }
        for o in &ops {
            step(&mut a, &mut b, &|w| apply(w, o).0, &format!("{o:?}"))?;
        }
        prop_assert!(fast >= 9, "the one-page forms ran {} times", fast);
        prop_assert!(commits() - c0 >= fast);
        a.finish();
        b.finish();
    }
}

fn borrowed(pa: u64) -> Leaf {
    Leaf::Mapped { pa, attrs: Attrs::NORMAL_RW, state: PageState::SharedBorrowed }
}

fn guest_page(pa: u64, state: PageState) -> Leaf {
    Leaf::Mapped { pa, attrs: GUEST_RAM, state }
}

/// A world with one page donated to guest 0 (handle 1) at `G`, both
/// sides' entries page entries; its log checked and cleared.
fn one_page_world(pa: u64) -> World {
    let mut w = World::new();
    let World { env, host, guests, .. } = &mut w;
    host_donate_guest(env, host, &mut guests[0], pa, G, K4).unwrap();
    w.check();
    w
}

#[test]
fn share_and_unshare_one_page_write_one_entry_each() {
    let pa = RAM + 40 * K4;
    let mut w = one_page_world(pa);
    let (host_s2, guest_s2) = (w.host.pgt.s2_id().unwrap(), w.guests[0].pgt.s2_id().unwrap());
    let c = commits();
    let World { env, host, guests, .. } = &mut w;
    assert_eq!(guest_host_page(env, host, &mut guests[0], G, PageState::Owned), Some(Ok(pa)));
    assert_eq!(commits(), c + 2);
    // Invalid → valid on the host (no TLB holds an invalid entry), the
    // software bits alone on the guest: a write each, no invalidation.
    let want = [
        (host_s2, pa, pte::encode_owner(Owner::Guest(1)), pte::encode(borrowed(pa), 3)),
        (
            guest_s2,
            G,
            pte::encode(guest_page(pa, PageState::Owned), 3),
            pte::encode(guest_page(pa, PageState::SharedOwned), 3),
        ),
    ];
    assert_eq!(w.env.log.len(), 2, "{:?}", w.env.log);
    for (e, (s2, ipa, old, new)) in w.env.log.iter().zip(want) {
        assert!(
            matches!(*e, Event::Write { s2: s, ipa: i, level: 3, old: o, new: n, .. } if s == s2 && i == ipa && o == old && n == new),
            "{e:?}"
        );
    }
    assert_eq!(w.host_leaf(pa), borrowed(pa));
    w.check();
    all_hints(&mut w);

    // Unshare: the host's valid entry becomes invalid, then a TLBI by IPA
    // under the host's own tree (root and VMID), before the guest's write.
    let World { env, host, guests, .. } = &mut w;
    assert_eq!(guest_host_page(env, host, &mut guests[0], G, PageState::SharedOwned), Some(Ok(pa)));
    assert_eq!(commits(), c + 4);
    let log = &w.env.log;
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        matches!(log[0], Event::Write { s2, ipa, level: 3, old, new, .. } if s2 == host_s2 && ipa == pa && old == pte::encode(borrowed(pa), 3) && new == pte::encode_owner(Owner::Guest(1))),
        "{log:?}"
    );
    assert_eq!(log[1], Event::TlbiIpa { s2: host_s2, ipa: pa, level: 3 });
    assert!(
        matches!(log[2], Event::Write { s2, ipa: G, new, .. } if s2 == guest_s2 && new == pte::encode(guest_page(pa, PageState::Owned), 3))
    );
    w.check();
    all_hints(&mut w);
    w.finish();
}

/// Runs the one-page form `f`, which must give `want` and change nothing
/// (no table, no event, no counter).
fn untouched<T: PartialEq + core::fmt::Debug>(w: &mut World, want: T, f: impl FnOnce(&mut World) -> T) {
    let (before, st, c) = (w.snapshot(), stats(w), commits());
    assert!(w.env.log.is_empty());
    assert_eq!(f(w), want);
    assert_eq!(w.snapshot(), before, "a refused or declined one-page form changed the tables");
    assert_eq!(stats(w), st);
    assert_eq!(commits(), c);
    assert!(w.env.log.is_empty(), "{:?}", w.env.log);
}

#[test]
fn one_page_refusals_change_nothing() {
    let pa = RAM + 40 * K4;
    let mut w = one_page_world(pa);
    // Not the guest's page / not shared: declined; the range form refuses.
    let g = |w: &mut World, ipa, from| {
        let World { env, host, guests, .. } = w;
        guest_host_page(env, host, &mut guests[0], ipa, from)
    };
    untouched(&mut w, None, |w| g(w, G + K4, PageState::Owned));
    untouched(&mut w, None, |w| g(w, G, PageState::SharedOwned));
    untouched(&mut w, None, |w| g(w, G + 8, PageState::Owned));
    let World { env, host, guests, .. } = &mut w;
    assert_eq!(guest_share_host(env, host, &mut guests[0], G + K4, K4), Err(Error::Perm));
    assert_eq!(guest_unshare_host(env, host, &mut guests[0], G, K4), Err(Error::Perm));
    assert_eq!(guest_share_host(env, host, &mut guests[0], G + 8, K4), Err(Error::Inval));
    w.check();
    // Shared twice: the second is declined, then refused.
    let World { env, host, guests, .. } = &mut w;
    guest_share_host(env, host, &mut guests[0], G, K4).unwrap();
    w.check();
    untouched(&mut w, None, |w| g(w, G, PageState::Owned));
    // Pinned by the host: the one-page form refuses with Busy itself.
    w.host.pin(&mut w.env, pa, false).unwrap();
    w.check();
    untouched(&mut w, Some(Err(Error::Busy)), |w| g(w, G, PageState::SharedOwned));
    // The host's side does not match (its entry corrupted to the host's
    // own page): declined, and the range form refuses.
    let ptep = w.host.pgt.leaf_ptep(&mut w.env, pa);
    // SAFETY: a live descriptor of the host's tree, restored below.
    let saved = unsafe { ptep.read() };
    // SAFETY: as above.
    unsafe { ptep.write(pte::encode(Leaf::Mapped { pa, attrs: Attrs::NORMAL_RWX, state: PageState::Owned }, 3)) };
    untouched(&mut w, None, |w| g(w, G, PageState::SharedOwned));
    // SAFETY: as above.
    unsafe { ptep.write(saved) };
    w.host.unpin(&mut w.env, pa).unwrap();
    w.check();
    // SHARE_HYP of a page the guest has: declined on the host's side.
    let c = commits();
    let World { env, host, hyp, .. } = &mut w;
    assert_eq!(host_share_hyp(env, host, hyp, pa, K4), Err(Error::Perm));
    assert_eq!(commits(), c);
    w.check();
    w.finish();
}

/// SHARE_HYP / UNSHARE_HYP with the hyp's side of the page not what the
/// host's side implies (its bookkeeping entry corrupted): the one-page
/// form must check the hyp's entry too, and decline; the range form then
/// refuses, changing nothing.
#[test]
fn host_hyp_one_page_checks_the_hyps_side() {
    let pa = RAM + 40 * K4;
    let mut w = one_page_world(pa);
    // Pages around `pa` in 4K tables on both sides, shared with the hyp
    // (the neighbours keep the hyp's table from being uniform).
    for i in 1..4 {
        let World { env, host, hyp, .. } = &mut w;
        host_share_hyp(env, host, hyp, pa + i * K4, K4).unwrap();
    }
    let World { env, host, hyp, .. } = &mut w;
    host_unshare_hyp(env, host, hyp, pa + 3 * K4, K4).unwrap();
    w.check();
    w.env.log.clear();
    let hyp_leaf = |pa| Leaf::Mapped { pa, attrs: Attrs::NORMAL_RW, state: PageState::SharedBorrowed };
    // (page, what its hyp entry is corrupted to, the call): the hyp's
    // entry of a page the host shares with it says the hyp owns it, or is
    // empty; that of a page the host owns is not empty.
    type Call = fn(&mut World, u64) -> Result<(), Error>;
    let unshare: Call = |w, pa| {
        let World { env, host, hyp, .. } = w;
        host_unshare_hyp(env, host, hyp, pa, K4)
    };
    let share: Call = |w, pa| {
        let World { env, host, hyp, .. } = w;
        host_share_hyp(env, host, hyp, pa, K4)
    };
    let cases: [(u64, Leaf, Call); 4] = [
        (pa + K4, Leaf::Mapped { pa: pa + K4, attrs: Attrs::NORMAL_RW, state: PageState::Owned }, unshare),
        (pa + K4, Leaf::Invalid(Owner::None), unshare),
        (pa + 3 * K4, hyp_leaf(pa + 3 * K4), share),
        (pa + 3 * K4, Leaf::Invalid(Owner::Hyp), share),
    ];
    for (page, corrupt, call) in cases {
        let ptep = w.hyp.pgt.leaf_ptep(&mut w.env, page);
        // SAFETY: a live descriptor of the hyp's tree, restored below.
        let saved = unsafe { ptep.read() };
        // SAFETY: as above.
        unsafe { ptep.write(pte::encode(corrupt, 3)) };
        untouched(&mut w, Err(Error::Perm), |w| call(w, page));
        // SAFETY: as above.
        unsafe { ptep.write(saved) };
        w.check();
    }
    w.finish();
}

#[test]
fn blocks_and_merges_take_the_range_form() {
    let mut w = World::new();
    let (pa, ipa) = (RAM + 2 * M2, G + 2 * M2);
    let World { env, host, guests, .. } = &mut w;
    host_donate_guest(env, host, &mut guests[0], pa, ipa, M2).unwrap();
    w.check();
    // A 2M block on both sides: the first share splits (range form).
    let g = |w: &mut World, i: u64| {
        let World { env, host, guests, .. } = w;
        guest_host_page(env, host, &mut guests[0], ipa + i * K4, PageState::Owned)
    };
    untouched(&mut w, None, |w| g(w, 0));
    let s = (w.host.pgt.stats.splits, w.guests[0].pgt.stats.splits);
    let World { env, host, guests, .. } = &mut w;
    guest_share_host(env, host, &mut guests[0], ipa, K4).unwrap();
    assert_eq!((w.host.pgt.stats.splits, w.guests[0].pgt.stats.splits), (s.0 + 1, s.1 + 1));
    w.check();
    // The pages between: one entry each side.
    for i in 1..511 {
        let c = commits();
        assert_eq!(g(&mut w, i), Some(Ok(pa + i * K4)));
        assert_eq!(commits(), c + 2);
        w.check();
    }
    all_hints(&mut w);
    // The last one makes both tables uniform: declined (the hint says so),
    // and the range form merges them back into blocks.
    untouched(&mut w, None, |w| g(w, 511));
    let m = (w.host.pgt.stats.merges, w.guests[0].pgt.stats.merges);
    let World { env, host, guests, .. } = &mut w;
    guest_share_host(env, host, &mut guests[0], ipa + 511 * K4, K4).unwrap();
    assert_eq!((w.host.pgt.stats.merges, w.guests[0].pgt.stats.merges), (m.0 + 1, m.1 + 1));
    assert_eq!(w.host.pgt.lookup(&mut w.env, pa).unwrap().level, 2);
    assert_eq!(w.guest_leaf(0, ipa), (guest_page(pa, PageState::SharedOwned), 2));
    w.check();
    // Without hints the one-page forms decline (no cheap way to know a
    // merge is due) and the range forms do the work.
    w.env.hints = false;
    let World { env, host, guests, .. } = &mut w;
    let c = commits();
    guest_unshare_host(env, host, &mut guests[0], ipa, K4).unwrap();
    guest_unshare_host(env, host, &mut guests[0], ipa + K4, K4).unwrap();
    assert_eq!(commits(), c);
    w.check();
    w.finish();
}

#[test]
fn host_fault_writes_one_entry_or_takes_the_range_form() {
    let mut w = World::new();
    w.check();
    // An invalid 2M entry inside RAM: one write, no table, no TLBI.
    let c = commits();
    let r = w.host.handle_fault(&mut w.env, RAM + 5 * M2 + 123).unwrap();
    assert_eq!(r, HostFault::Mapped { level: 2, base: RAM + 5 * M2, device: false });
    assert_eq!(commits(), c + 1);
    let host_s2 = w.host.pgt.s2_id().unwrap();
    assert!(
        matches!(w.env.log[..], [Event::Write { s2, ipa, level: 2, old: 0, new, .. }] if s2 == host_s2 && ipa == RAM + 5 * M2 && new == pte::encode(Leaf::Mapped { pa: RAM + 5 * M2, attrs: Attrs::NORMAL_RWX, state: PageState::Owned }, 2)),
        "{:?}",
        w.env.log
    );
    w.check();
    // Mapped already: spurious, nothing written.
    untouched(&mut w, Some(Ok(HostFault::Spurious)), |w| w.host.fault_entry(&mut w.env, RAM + 5 * M2 + 4 * K4));
    // The device page lies in an invalid 1G entry: a split, so the range
    // form (declined here, nothing changed).
    untouched(&mut w, None, |w| w.host.fault_entry(&mut w.env, 0x0900_0000));
    let r = w.host.handle_fault(&mut w.env, 0x0900_0010).unwrap();
    assert_eq!(r, HostFault::Mapped { level: 3, base: 0x0900_0000, device: true });
    w.check();
    // The hyp's own page: declined, then refused.
    let own = super::mem_protect::HYP_OWN[0].0;
    let _ = w.host.handle_fault(&mut w.env, own + M2);
    w.check();
    untouched(&mut w, None, |w| w.host.fault_entry(&mut w.env, own));
    assert_eq!(w.host.handle_fault(&mut w.env, own), Err(Error::Perm));
    w.check();
    w.finish();
}
