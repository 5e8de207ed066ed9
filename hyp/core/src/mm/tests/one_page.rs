//! The one-page specialisation of each transition and of the host's fault
//! (one descent per side, `Stage2::page_path`; the entry rewritten in
//! place, `Stage2::count_page` / `count_entry`, or the split or merge
//! committed from the leaf, `commit_page`), against the same functions
//! forced to their range checks: the same results, tables, counters and
//! hardware events (writes, TLB invalidations under the right tree,
//! barriers); their fallbacks (no hint) and refusals that change nothing
//! and say where and what.

use super::helpers::Plain;
use crate::mm::addr::{Ipa, Pa};
use proptest::prelude::*;
use std::vec::Vec;
use std::{format, vec};

use super::helpers::check_hints;
use super::model_ownership::{apply, op, Op};
use super::world::{World, G, K4, M2, RAM};
use crate::mm::mem_protect::host_guest::*;
use crate::mm::mem_protect::host_hyp::*;
use crate::mm::mem_protect::*;
use crate::mm::pgtable::{Stats, ENTRY_COMMITS, PAGE_COMMITS};
use crate::mm::prot::{Attrs, Leaf, Owner, PageState};
use crate::mm::testenv::Event;
use crate::mm::{pte, Error};

/// One operation on a world.
type Step<'a> = &'a dyn Fn(&mut World) -> Result<(), Error>;

fn commits() -> u64 {
    ENTRY_COMMITS.with(|c| c.get())
}

/// Page-form commits so far on this thread, and the splits and merges
/// they made.
fn page_commits() -> (u64, u64, u64) {
    PAGE_COMMITS.with(|c| c.get())
}

/// Runs `f` with every transition forced to its range form.
pub(super) fn by_range<T>(f: impl FnOnce() -> T) -> T {
    RANGE_ONLY.with(|c| c.set(true));
    let r = f();
    RANGE_ONLY.with(|c| c.set(false));
    r
}

/// An event with the table pages' addresses (which differ between two
/// worlds) left out: kind, tree (VMID, SMMU or not), IPA, level, and the
/// descriptors of leaf writes (a table descriptor reads as `u64::MAX`).
pub(super) fn norm(e: &Event) -> (u8, u16, bool, u64, u8, u64, u64) {
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
        Event::DmaSync => (14, 0, true, 0, 0, 0, 0),
    }
}

pub(super) fn stats(w: &World) -> Vec<Stats> {
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

/// Runs `f` on `a` (fast forms) and, by range walks only, on `b`: the same
/// result, the same sequence of hardware events, the same leaves in every
/// tree and the same counters; both worlds pass their checks and `a`'s
/// hints are exact. Returns the one-entry commits `a` made.
pub(super) fn same(a: &mut World, b: &mut World, f: Step, what: &str) -> Result<u64, TestCaseError> {
    let before = commits();
    let ra = f(a);
    let fast = commits() - before;
    let rb = by_range(|| f(b));
    prop_assert_eq!(ra, rb, "{}", what);
    let (ea, eb): (Vec<_>, Vec<_>) = (a.env.log.iter().map(norm).collect(), b.env.log.iter().map(norm).collect());
    prop_assert_eq!(ea, eb, "events of {}", what);
    prop_assert_eq!(a.snapshot(), b.snapshot(), "tables after {}", what);
    prop_assert_eq!(stats(a), stats(b), "counters after {}", what);
    a.check();
    b.check();
    all_hints(a);
    Ok(fast)
}

/// The 2M blocks [`blocks_world`] gives the guests: (guest, block index
/// b: PA `RAM + b * M2` at IPA `G + b * M2`).
const BLOCKS: [(usize, u64); 2] = [(0, 2), (1, 4)];

/// A world whose guests hold the 2M [`BLOCKS`] (a block on both sides).
fn blocks_world() -> World {
    let mut w = World::new();
    for (g, b) in BLOCKS {
        let World { env, host, guests, .. } = &mut w;
        host_donate_guest(env, host, &mut guests[g], Pa(RAM + b * M2), Ipa(G + b * M2), M2).plain().unwrap();
    }
    w.check();
    w
}

/// Operations that meet the [`BLOCKS`]: shares and unshares of single
/// pages in them (mostly the first, so that tables keep becoming uniform
/// again), of whole blocks (the host then borrows a
/// valid block, split again by a page's unshare), pins of their pages
/// (a pinned unshare is refused), a relinquish and a donation back, now
/// and then by the wrong guest.
fn block_op() -> impl Strategy<Value = Op> {
    let wrong = prop_oneof![4 => Just(false), 1 => Just(true)];
    let page = prop_oneof![6 => Just(0u64), 2 => Just(511u64), 1 => 1..511u64];
    let at = (0..BLOCKS.len(), wrong, page).prop_map(|(i, wrong, p)| {
        let (owner, b) = BLOCKS[i];
        (if wrong { 1 - owner } else { owner }, b, p)
    });
    prop_oneof![
        10 => at.clone().prop_map(|(g, b, p)| Op::GuestShare(g, G + b * M2 + p * K4, K4)),
        10 => at.clone().prop_map(|(g, b, p)| Op::GuestUnshare(g, G + b * M2 + p * K4, K4)),
        2 => at.clone().prop_map(|(g, b, _)| Op::GuestShare(g, G + b * M2, M2)),
        2 => at.clone().prop_map(|(g, b, _)| Op::GuestUnshare(g, G + b * M2, M2)),
        2 => (at.clone(), any::<bool>()).prop_map(|((_, b, p), e)| Op::Pin(RAM + b * M2 + p * K4, e)),
        4 => at.clone().prop_map(|(_, b, p)| Op::Unpin(RAM + b * M2 + p * K4)),
        1 => at.clone().prop_map(|(g, b, p)| Op::Relinquish(g, G + b * M2 + p * K4, K4)),
        3 => at.prop_map(|(g, b, p)| Op::DonateGuest(g, RAM + b * M2 + p * K4, G + b * M2 + p * K4, K4)),
    ]
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
        // fault in a 2M block; and the page forms: a 2M block given to
        // guest 0, one page of it shared (a split on both sides) and
        // unshared (a merge on both sides).
        let pa = RAM + 40 * K4;
        let (c0, mut fast, p0) = (commits(), 0, page_commits());
        for w in [&mut a, &mut b] {
            w.check();
        }
        let mut step = |a: &mut World, b: &mut World, f: Step, what: &str| {
            fast += same(a, b, f, what)?;
            Ok::<(), TestCaseError>(())
        };
        let prologue: [(&str, Step); 9] = [
            ("donate", &|w| { let World { env, host, guests, .. } = w; host_donate_guest(env, host, &mut guests[0], Pa(pa), Ipa(G), K4).plain() }),
            ("share", &|w| { let World { env, host, guests, .. } = w; guest_share_host(env, host, &mut guests[0], Ipa(G), K4).plain().map(|_| ()) }),
            ("unshare", &|w| { let World { env, host, guests, .. } = w; guest_unshare_host(env, host, &mut guests[0], Ipa(G), K4).plain().map(|_| ()) }),
            ("share_hyp", &|w| { let World { env, host, hyp, .. } = w; host_share_hyp(env, host, hyp, Pa(pa + K4), K4).plain() }),
            ("unshare_hyp", &|w| { let World { env, host, hyp, .. } = w; host_unshare_hyp(env, host, hyp, Pa(pa + K4), K4).plain() }),
            ("fault", &|w| w.host.handle_fault(&mut w.env, Pa(RAM + 5 * M2 + 8)).plain().map(|_| ())),
            ("donate 2M", &|w| { let World { env, host, guests, .. } = w; host_donate_guest(env, host, &mut guests[0], Pa(RAM + 3 * M2), Ipa(G + 3 * M2), M2).plain() }),
            ("share in a block", &|w| { let World { env, host, guests, .. } = w; guest_share_host(env, host, &mut guests[0], Ipa(G + 3 * M2 + 5 * K4), K4).plain().map(|_| ()) }),
            ("unshare with merges", &|w| { let World { env, host, guests, .. } = w; guest_unshare_host(env, host, &mut guests[0], Ipa(G + 3 * M2 + 5 * K4), K4).plain().map(|_| ()) }),
        ];
        for (what, f) in prologue {
            step(&mut a, &mut b, f, what)?;
        }
        for o in &ops {
            step(&mut a, &mut b, &|w| apply(w, o).0, &format!("{o:?}"))?;
        }
        prop_assert!(fast >= 9, "the one-page forms ran {} times", fast);
        prop_assert!(commits() - c0 >= fast);
        // Only the fast world takes the page forms: they ran, split and
        // merged (the prologue's block on both sides at least).
        let p = page_commits();
        let (pages, splits, merges) = (p.0 - p0.0, p.1 - p0.1, p.2 - p0.2);
        prop_assert!(pages >= 2 && splits >= 2 && merges >= 2, "page forms: {} commits, {} splits, {} merges", pages, splits, merges);
        a.finish();
        b.finish();
    }
}

proptest! {
    // Each step checks both worlds' invariants over every guest page (the
    // blocks' 512 each): fewer, shorter cases than the test above.
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 500, ..ProptestConfig::default() })]

    /// The same comparison over operations that split and merge blocks
    /// ([`block_op`]): the page forms (`Stage2::count_page` /
    /// `commit_page`) write what the range commit writes, in the same
    /// order, with the same invalidations under the same trees.
    #[test]
    fn page_forms_match_the_range_forms(ops in proptest::collection::vec(block_op(), 120)) {
        let (mut a, mut b) = (blocks_world(), blocks_world());
        let p0 = page_commits();
        // A prologue that meets every kind of page form for sure, in each
        // block: a page shared (an invalid block split on the host's side,
        // a valid one on the guest's) and unshared (merges into an invalid
        // and a valid block); the whole block shared, a page of it
        // unshared (valid blocks split on both sides) and shared again
        // (valid merges on both sides), the block unshared.
        let mut prologue = Vec::new();
        for (g, blk) in BLOCKS {
            let (ipa, page) = (G + blk * M2, G + blk * M2 + 5 * K4);
            prologue.extend([
                Op::GuestShare(g, page, K4),
                Op::GuestUnshare(g, page, K4),
                Op::GuestShare(g, ipa, M2),
                Op::GuestUnshare(g, page, K4),
                Op::GuestShare(g, page, K4),
                Op::GuestUnshare(g, ipa, M2),
            ]);
        }
        for o in prologue.iter().chain(&ops) {
            same(&mut a, &mut b, &|w| apply(w, o).0, &format!("{o:?}"))?;
        }
        let p = page_commits();
        let (pages, splits, merges) = (p.0 - p0.0, p.1 - p0.1, p.2 - p0.2);
        let n = BLOCKS.len() as u64;
        prop_assert!(pages >= 8 * n && splits >= 4 * n && merges >= 4 * n, "page forms: {} commits, {} splits, {} merges", pages, splits, merges);
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
    host_donate_guest(env, host, &mut guests[0], Pa(pa), Ipa(G), K4).plain().unwrap();
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
    assert_eq!(guest_share_host(env, host, &mut guests[0], Ipa(G), K4).plain(), Ok(pa));
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
    assert_eq!(guest_unshare_host(env, host, &mut guests[0], Ipa(G), K4).plain(), Ok(pa));
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
    // Each refusal says in whose view, where, and what it found there.
    let g = |w: &mut World, ipa, from| {
        let World { env, host, guests, .. } = w;
        if from == PageState::Owned {
            guest_share_host(env, host, &mut guests[0], Ipa(ipa), K4)
        } else {
            guest_unshare_host(env, host, &mut guests[0], Ipa(ipa), K4)
        }
    };
    let guest = Side::Guest;
    let no_page = Err(Refused::state(guest, G + K4, Leaf::Invalid(Owner::None)));
    untouched(&mut w, no_page, |w| g(w, G + K4, PageState::Owned));
    let not_shared = Err(Refused::state(guest, G, guest_page(pa, PageState::Owned)));
    untouched(&mut w, not_shared, |w| g(w, G, PageState::SharedOwned));
    untouched(&mut w, Err(Refused::new(Error::Inval, Side::Args, G + 8)), |w| g(w, G + 8, PageState::Owned));
    let World { env, host, guests, .. } = &mut w;
    assert_eq!(guest_share_host(env, host, &mut guests[0], Ipa(G + K4), K4).plain(), Err(Error::Perm));
    assert_eq!(guest_unshare_host(env, host, &mut guests[0], Ipa(G), K4).plain(), Err(Error::Perm));
    assert_eq!(guest_share_host(env, host, &mut guests[0], Ipa(G + 8), K4).plain(), Err(Error::Inval));
    w.check();
    // Shared twice: the second is declined, then refused.
    let World { env, host, guests, .. } = &mut w;
    guest_share_host(env, host, &mut guests[0], Ipa(G), K4).plain().unwrap();
    w.check();
    let shared = Err(Refused::state(guest, G, guest_page(pa, PageState::SharedOwned)));
    untouched(&mut w, shared, |w| g(w, G, PageState::Owned));
    // Pinned by the host: refused with Busy after both sides' checks.
    w.host.pin(&mut w.env, Pa(pa), false).plain().unwrap();
    w.check();
    untouched(&mut w, Err(Refused::new(Error::Busy, Side::Pins, pa)), |w| g(w, G, PageState::SharedOwned));
    // The host's side does not match (its entry corrupted to the host's
    // own page): declined, and the range form refuses.
    let ptep = w.host.pgt.leaf_ptep(&mut w.env, pa);
    // SAFETY: a live descriptor of the host's tree, restored below.
    let saved = unsafe { ptep.read() };
    // SAFETY: as above.
    unsafe { ptep.write(pte::encode(Leaf::Mapped { pa, attrs: Attrs::NORMAL_RWX, state: PageState::Owned }, 3)) };
    let own = Leaf::Mapped { pa, attrs: Attrs::NORMAL_RWX, state: PageState::Owned };
    untouched(&mut w, Err(Refused::state(Side::Host, pa, own)), |w| g(w, G, PageState::SharedOwned));
    // SAFETY: as above.
    unsafe { ptep.write(saved) };
    w.host.unpin(&mut w.env, Pa(pa)).plain().unwrap();
    w.check();
    // SHARE_HYP of a page the guest has: declined on the host's side.
    let c = commits();
    let World { env, host, hyp, .. } = &mut w;
    assert_eq!(host_share_hyp(env, host, hyp, Pa(pa), K4).plain(), Err(Error::Perm));
    assert_eq!(commits(), c);
    w.check();
    w.finish();
}

/// The writes and invalidations of `log`, in order: (tree's VMID, IPA,
/// level, old, new) for a write (a table descriptor as `u64::MAX`),
/// (VMID, IPA, level) for a TLBI by IPA, (VMID) for a VMID-wide one.
fn maintenance(log: &[Event]) -> Vec<(u16, u64, u8, u64, u64)> {
    log.iter()
        .map(norm)
        .filter_map(|(kind, vmid, _, ipa, level, old, new)| match kind {
            1..=3 => Some((vmid, ipa, level, old, new)),
            _ => None,
        })
        .collect()
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
        host_share_hyp(env, host, hyp, Pa(pa + i * K4), K4).plain().unwrap();
    }
    let World { env, host, hyp, .. } = &mut w;
    host_unshare_hyp(env, host, hyp, Pa(pa + 3 * K4), K4).plain().unwrap();
    w.check();
    w.env.log.clear();
    let hyp_leaf = |pa| Leaf::Mapped { pa, attrs: Attrs::NORMAL_RW, state: PageState::SharedBorrowed };
    // (page, what its hyp entry is corrupted to, the call): the hyp's
    // entry of a page the host shares with it says the hyp owns it, or is
    // empty; that of a page the host owns is not empty.
    type Call = fn(&mut World, u64) -> Result<(), Error>;
    let unshare: Call = |w, pa| {
        let World { env, host, hyp, .. } = w;
        host_unshare_hyp(env, host, hyp, Pa(pa), K4).plain()
    };
    let share: Call = |w, pa| {
        let World { env, host, hyp, .. } = w;
        host_share_hyp(env, host, hyp, Pa(pa), K4).plain()
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
fn blocks_and_merges_take_the_page_form() {
    let mut w = World::new();
    let (pa, ipa) = (RAM + 2 * M2, G + 2 * M2);
    let World { env, host, guests, .. } = &mut w;
    host_donate_guest(env, host, &mut guests[0], Pa(pa), Ipa(ipa), M2).plain().unwrap();
    w.check();
    let (host_vmid, guest_vmid) = (w.host.pgt.vmid().unwrap(), w.guests[0].pgt.vmid().unwrap());
    let block = pte::encode(guest_page(pa, PageState::Owned), 2);
    let lent = pte::encode_owner(Owner::Guest(1));
    // A 2M block on both sides: no entry to write in place, the page form
    // splits both (no table page walked to: one descent each).
    let g = |w: &mut World, i: u64| {
        let World { env, host, guests, .. } = w;
        guest_share_host(env, host, &mut guests[0], Ipa(ipa + i * K4), K4).plain()
    };
    let p0 = page_commits();
    let World { env, host, guests, .. } = &mut w;
    guest_share_host(env, host, &mut guests[0], Ipa(ipa), K4).plain().unwrap();
    assert_eq!(page_commits(), (p0.0 + 2, p0.1 + 2, p0.2));
    // The host's invalid block becomes a table (no TLB holds an invalid
    // entry), then the page; the guest's valid block is broken, its TLB
    // entry invalidated under the guest's tree, then made a table.
    let t = u64::MAX;
    assert_eq!(
        maintenance(&w.env.log),
        [
            (host_vmid, pa, 2, lent, t),
            (host_vmid, pa, 3, lent, pte::encode(borrowed(pa), 3)),
            (guest_vmid, ipa, 2, block, 0),
            (guest_vmid, ipa, 2, 0, 0),
            (guest_vmid, ipa, 2, 0, t),
            (
                guest_vmid,
                ipa,
                3,
                pte::encode(guest_page(pa, PageState::Owned), 3),
                pte::encode(guest_page(pa, PageState::SharedOwned), 3)
            ),
        ]
    );
    w.check();
    // The pages between: one entry each side.
    for i in 1..511 {
        let c = commits();
        assert_eq!(g(&mut w, i), Ok(pa + i * K4));
        assert_eq!(commits(), c + 2);
        w.check();
    }
    all_hints(&mut w);
    // The last one makes both tables uniform: no write in place (the hint
    // says so), the page form writes the page and merges both
    // tables into valid blocks: break-before-make with a VMID-wide
    // invalidation under each tree, then the table page freed.
    let p0 = page_commits();
    let World { env, host, guests, .. } = &mut w;
    let last = ipa + 511 * K4;
    guest_share_host(env, host, &mut guests[0], Ipa(last), K4).plain().unwrap();
    assert_eq!(page_commits(), (p0.0 + 2, p0.1, p0.2 + 2));
    let shared = pte::encode(guest_page(pa, PageState::SharedOwned), 2);
    assert_eq!(
        maintenance(&w.env.log),
        [
            (host_vmid, pa + 511 * K4, 3, lent, pte::encode(borrowed(pa + 511 * K4), 3)),
            (host_vmid, pa, 2, t, 0),
            (host_vmid, 0, 0, 0, 0),
            (host_vmid, pa, 2, 0, pte::encode(borrowed(pa), 2)),
            (
                guest_vmid,
                last,
                3,
                pte::encode(guest_page(pa + 511 * K4, PageState::Owned), 3),
                pte::encode(guest_page(pa + 511 * K4, PageState::SharedOwned), 3)
            ),
            (guest_vmid, ipa, 2, t, 0),
            (guest_vmid, 0, 0, 0, 0),
            (guest_vmid, ipa, 2, 0, shared),
        ]
    );
    assert_eq!(w.env.log.iter().filter(|e| matches!(e, Event::FreeTable { .. })).count(), 2);
    assert_eq!(w.host.pgt.lookup(&mut w.env, pa).unwrap().level, 2);
    assert_eq!(w.guest_leaf(0, ipa), (guest_page(pa, PageState::SharedOwned), 2));
    w.check();
    // Without hints no entry is rewritten in place (no cheap way to know a
    // merge is due) and the page forms do the work, scanning for merges.
    w.env.hints = false;
    let World { env, host, guests, .. } = &mut w;
    let (c, p0) = (commits(), page_commits());
    guest_unshare_host(env, host, &mut guests[0], Ipa(ipa), K4).plain().unwrap();
    guest_unshare_host(env, host, &mut guests[0], Ipa(ipa + K4), K4).plain().unwrap();
    assert_eq!(commits(), c);
    assert_eq!(page_commits(), (p0.0 + 4, p0.1 + 2, p0.2));
    w.check();
    w.finish();
}

/// A pinned page's unshare in the page form (a merge due) is refused
/// after both sides' checks and changes nothing.
#[test]
fn pinned_unshare_with_a_merge_changes_nothing() {
    let mut w = World::new();
    let (pa, ipa) = (RAM + 2 * M2, G + 2 * M2);
    let World { env, host, guests, .. } = &mut w;
    host_donate_guest(env, host, &mut guests[0], Pa(pa), Ipa(ipa), M2).plain().unwrap();
    guest_share_host(env, host, &mut guests[0], Ipa(ipa + 3 * K4), K4).plain().unwrap();
    w.host.pin(&mut w.env, Pa(pa + 3 * K4), false).plain().unwrap();
    w.check();
    let p0 = page_commits();
    untouched(&mut w, Err(Error::Busy), |w| {
        let World { env, host, guests, .. } = w;
        guest_unshare_host(env, host, &mut guests[0], Ipa(ipa + 3 * K4), K4).plain().map(|_| ())
    });
    assert_eq!(page_commits(), p0);
    w.host.unpin(&mut w.env, Pa(pa + 3 * K4)).plain().unwrap();
    let World { env, host, guests, .. } = &mut w;
    assert_eq!(guest_unshare_host(env, host, &mut guests[0], Ipa(ipa + 3 * K4), K4).plain(), Ok(pa + 3 * K4));
    assert_eq!(page_commits(), (p0.0 + 2, p0.1, p0.2 + 2));
    w.check();
    w.finish();
}

#[test]
fn host_fault_writes_one_entry_or_takes_the_range_form() {
    let mut w = World::new();
    w.check();
    // An invalid 2M entry inside RAM: one write, no table, no TLBI.
    let c = commits();
    let r = w.host.handle_fault(&mut w.env, Pa(RAM + 5 * M2 + 123)).plain().unwrap();
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
    untouched(&mut w, Ok(HostFault::Spurious), |w| w.host.handle_fault(&mut w.env, Pa(RAM + 5 * M2 + 4 * K4)));
    // The device page lies in an invalid 1G entry: a split, counted from
    // the leaf the descent found.
    let r = w.host.handle_fault(&mut w.env, Pa(0x0900_0010)).plain().unwrap();
    assert_eq!(r, HostFault::Mapped { level: 3, base: 0x0900_0000, device: true });
    w.check();
    // The hyp's own page: declined, then refused.
    let own = super::world::HYP_OWN[0].0;
    let _ = w.host.handle_fault(&mut w.env, Pa(own + M2)).plain();
    w.check();
    let hyps = Err(Refused::state(Side::Host, own, Leaf::Invalid(Owner::Hyp)));
    untouched(&mut w, hyps, |w| w.host.handle_fault(&mut w.env, Pa(own)));
    assert_eq!(w.host.handle_fault(&mut w.env, Pa(own)).plain(), Err(Error::Perm));
    w.check();
    w.finish();
}
