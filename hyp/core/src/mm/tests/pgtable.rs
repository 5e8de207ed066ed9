//! Unit tests of the stage-2 engine: geometry, blocks, split, merge, BBM,
//! two-phase failure.

use std::vec::Vec;

use super::helpers::*;
use crate::mm::pgtable::{geometry_for, Stage2};
use crate::mm::prot::{Attrs, Leaf, Owner, PageState};
use crate::mm::testenv::{Event, TestEnv};
use crate::mm::Error;

const G: u64 = 1 << 30;
const M2: u64 = 2 << 20;
const K4: u64 = 4096;

pub(super) fn map(pa: u64) -> Leaf {
    Leaf::Mapped { pa, attrs: Attrs::NORMAL_RWX, state: PageState::Owned }
}

#[test]
fn geometry_matches_vtcr_rules() {
    assert_eq!(geometry_for(40), Some((1, 2)));
    assert_eq!(geometry_for(39), Some((1, 1)));
    assert_eq!(geometry_for(42), Some((1, 8)));
    assert_eq!(geometry_for(43), Some((1, 16)));
    assert_eq!(geometry_for(44), Some((0, 1)));
    assert_eq!(geometry_for(48), Some((0, 1)));
    assert_eq!(geometry_for(33), Some((2, 8)));
    assert_eq!(geometry_for(31), None);
    assert_eq!(geometry_for(49), None);
    let mut env = TestEnv::new();
    let s = Stage2::new(&mut env, 40, Some(1)).unwrap();
    assert_eq!((s.t0sz(), s.sl0(), s.root_pages()), (24, 1, 2));
    s.destroy(&mut env);
    let s = Stage2::new(&mut env, 48, Some(1)).unwrap();
    assert_eq!((s.t0sz(), s.sl0(), s.start_level()), (16, 2, 0));
    // The top of a 48-bit space is reachable.
    let mut s = s;
    s.set(&mut env, (1 << 48) - G, G, map(G)).unwrap();
    assert_eq!(s.lookup(&mut env, (1 << 48) - 1).unwrap().level, 1);
    assert_eq!(s.set(&mut env, (1 << 48) - K4, 2 * K4, map(0)), Err(Error::Inval));
    s.destroy(&mut env);
}

#[test]
fn largest_blocks_are_used() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(1)).unwrap();
    // 1G + 2M + 4K, all aligned: one 1G block, one 2M block, one page.
    s.set(&mut env, G, G + M2 + K4, map(G)).unwrap();
    let l = leaves(&mut env, &s, G, 2 * G + M2 + K4);
    assert_eq!(l.iter().map(|x| x.2).collect::<std::vec::Vec<_>>(), [1, 2, 3]);
    // Level-1 table for the 2M block, level-2 table for the page... 2 pages.
    assert_eq!(s.table_pages(), 2);
    // PA misaligned to 2M: pages only.
    s.set(&mut env, 4 * G, M2, map(G + K4)).unwrap();
    assert!(leaves(&mut env, &s, 4 * G, 4 * G + M2).iter().all(|x| x.2 == 3));
    check_structure(&mut env, &s);
    check_alloc(&env, &[&s]);
    env.check_log();
    s.destroy(&mut env);
}

#[test]
fn split_only_as_deep_as_needed_and_merge_back() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(7)).unwrap();
    s.set(&mut env, G, G, map(G)).unwrap();
    assert_eq!(s.table_pages(), 0);
    env.check_log();
    // A 2M change inside the 1G block: one table (1G → 2M), no 4K tables.
    let shared = Leaf::Mapped { pa: G + 4 * M2, attrs: Attrs::NORMAL_RWX, state: PageState::SharedOwned };
    s.set(&mut env, G + 4 * M2, M2, shared).unwrap();
    assert_eq!((s.table_pages(), s.stats.splits), (1, 1));
    // BBM order for the split: invalidate, TLBI, install table.
    let pos = |f: &dyn Fn(&Event) -> bool| env.log.iter().position(f).unwrap();
    let inval = pos(&|e| matches!(e, Event::Write { new: 0, .. }));
    let tlbi = pos(&|e| matches!(e, Event::TlbiIpa { s2, ipa, level: 1 } if s2.vmid == 7 && *ipa == G));
    assert!(inval < tlbi);
    env.check_log();
    // A 4K change: one more table (2M → 4K).
    let page = Leaf::Mapped { pa: G + 8 * M2 + K4, attrs: Attrs::NORMAL_RWX, state: PageState::SharedOwned };
    s.set(&mut env, G + 8 * M2 + K4, K4, page).unwrap();
    assert_eq!(s.table_pages(), 2);
    // Undo both: everything merges back to one 1G block, pages freed.
    s.set(&mut env, G + 8 * M2 + K4, K4, map(G + 8 * M2 + K4)).unwrap();
    assert_eq!(s.table_pages(), 1);
    s.set(&mut env, G + 4 * M2, M2, map(G + 4 * M2)).unwrap();
    assert_eq!(s.table_pages(), 0);
    assert_eq!(s.stats.merges, 2);
    assert_eq!(s.lookup(&mut env, G + 12345).unwrap().level, 1);
    env.check_log();
    check_alloc(&env, &[&s]);
    s.destroy(&mut env);
}

/// One commit that makes two 4K tables uniform merges both and then their
/// parent (the merge check of a table is skipped only right after its
/// last child table stayed: nothing else may stop the parent's merge).
#[test]
fn one_commit_merges_two_tables_and_their_parent() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(3)).unwrap();
    s.set(&mut env, G, G, map(G)).unwrap();
    let shared = |pa| Leaf::Mapped { pa, attrs: Attrs::NORMAL_RWX, state: PageState::SharedOwned };
    let (a, b) = (G + 5 * K4, G + M2 + 7 * K4);
    s.set(&mut env, a, K4, shared(a)).unwrap();
    s.set(&mut env, b, K4, shared(b)).unwrap();
    assert_eq!(s.table_pages(), 3, "1G -> 2M, two 2M -> 4K");
    let merges = s.stats.merges;
    // Back to owned over both pages in one update.
    s.set(&mut env, a, b + K4 - a, map(a)).unwrap();
    assert_eq!((s.table_pages(), s.stats.merges - merges), (0, 3));
    assert_eq!(s.lookup(&mut env, b).unwrap().level, 1);
    // The same with the second table kept (one page still shared): the
    // first merges, the parent stays.
    s.set(&mut env, a, K4, shared(a)).unwrap();
    s.set(&mut env, b, K4, shared(b)).unwrap();
    let merges = s.stats.merges;
    s.set(&mut env, a, K4, map(a)).unwrap();
    assert_eq!((s.table_pages(), s.stats.merges - merges), (2, 1));
    assert_eq!(s.lookup(&mut env, a).unwrap().level, 2);
    assert_eq!(s.lookup(&mut env, b).unwrap().level, 3);
    check_structure(&mut env, &s);
    env.check_log();
    check_alloc(&env, &[&s]);
    s.destroy(&mut env);
}

#[test]
fn one_gig_split_to_4k_takes_two_tables() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(1)).unwrap();
    s.set(&mut env, G, G, map(G)).unwrap();
    let u = s.prepare(&mut env, G + 5 * K4, K4, Leaf::Invalid(Owner::Hyp)).unwrap();
    assert_eq!(u.pages(), 2);
    s.commit(&mut env, u);
    let m = s.lookup(&mut env, G + 5 * K4).unwrap();
    assert_eq!((m.level, m.leaf), (3, Leaf::Invalid(Owner::Hyp)));
    assert_eq!(s.lookup(&mut env, G + 6 * K4).unwrap().at(G + 6 * K4), map(G + 6 * K4));
    assert_eq!(s.lookup(&mut env, G + M2).unwrap().level, 2);
    check_structure(&mut env, &s);
    s.destroy(&mut env);
}

#[test]
fn out_of_memory_changes_nothing() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(1)).unwrap();
    s.set(&mut env, G, G, map(G)).unwrap();
    let before = leaves(&mut env, &s, 0, 8 * G);
    env.budget = Some(1); // the 4K change needs two pages
    assert_eq!(s.set(&mut env, G + K4, K4, Leaf::Invalid(Owner::Hyp)), Err(Error::NoMem));
    assert_eq!(leaves(&mut env, &s, 0, 8 * G), before);
    assert_eq!(env.tables_live(), 0);
    env.budget = None;
    s.destroy(&mut env);
}

#[test]
fn overwriting_tables_frees_them() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(1)).unwrap();
    for i in 0..10 {
        s.set(&mut env, G + i * 3 * M2 + K4, K4, map(i * K4)).unwrap();
    }
    assert!(s.table_pages() > 5);
    s.set(&mut env, G, G, Leaf::Invalid(Owner::Guest(3))).unwrap();
    assert_eq!(s.table_pages(), 0);
    assert_eq!(env.tables_live(), 0);
    assert!(env.log.iter().any(|e| matches!(e, Event::TlbiVmid { s2 } if s2.vmid == 1)));
    env.check_log();
    s.destroy(&mut env);
}

#[test]
fn bad_ranges_rejected() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(1)).unwrap();
    assert_eq!(s.set(&mut env, 1, K4, map(0)), Err(Error::Inval));
    assert_eq!(s.set(&mut env, 0, 0, map(0)), Err(Error::Inval));
    assert_eq!(s.set(&mut env, 0, 100, map(0)), Err(Error::Inval));
    assert_eq!(s.set(&mut env, u64::MAX - K4 + 1, K4, map(0)), Err(Error::Inval));
    assert_eq!(s.set(&mut env, 1 << 40, K4, map(0)), Err(Error::Inval));
    assert_eq!(s.set(&mut env, 0, K4, map(123)), Err(Error::Inval));
    assert_eq!(s.set(&mut env, 0, 2 * K4, map((1 << 48) - K4)), Err(Error::Inval));
    assert_eq!(s.lookup(&mut env, 1 << 40), Err(Error::Inval));
    s.destroy(&mut env);
}

#[test]
fn bookkeeping_tree_issues_no_tlbi() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, None).unwrap();
    s.set(&mut env, G, G, map(G)).unwrap();
    s.set(&mut env, G, K4, Leaf::Invalid(Owner::None)).unwrap();
    assert!(!env.log.iter().any(|e| matches!(e, Event::TlbiIpa { .. } | Event::TlbiVmid { .. })));
    s.destroy(&mut env);
}

/// The events of `log` in order, as indices of the first matching each
/// predicate (panics if one is missing).
fn first(log: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    log.iter().position(f).expect("event missing from the log")
}

#[test]
fn new_tables_are_ordered_before_they_are_installed() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(3)).unwrap();
    s.set(&mut env, G, G, map(G)).unwrap();
    env.check_log();
    // 1G → 2M → 4K: two new tables, each filled, then a barrier, then installed.
    s.set(&mut env, G + 5 * K4, K4, Leaf::Invalid(Owner::Hyp)).unwrap();
    let log = env.log.clone();
    let mut installs = 0;
    for (i, e) in log.iter().enumerate() {
        let Event::Write { new, level, .. } = *e else { continue };
        if !crate::mm::pte::is_table(new, level) {
            continue;
        }
        installs += 1;
        let t = crate::mm::pte::table_pa(new);
        let last_init =
            log[..i].iter().rposition(|e| matches!(e, Event::Init { ptep, .. } if ptep & !(K4 - 1) == t)).unwrap();
        let alloc = log[..i].iter().position(|e| *e == Event::AllocTable { pa: t }).unwrap();
        assert!(alloc < last_init, "filled after it was allocated");
        assert!(log[last_init..i].contains(&Event::Barrier), "no barrier between filling {t:#x} and installing it");
    }
    assert_eq!(installs, 2);
    env.check_log();
    s.destroy(&mut env);
    env.check_log();
}

#[test]
fn every_tlbi_names_its_tree_and_ipa() {
    let mut env = TestEnv::new();
    let mut a = Stage2::new(&mut env, 40, Some(1)).unwrap();
    let mut b = Stage2::new(&mut env, 40, Some(2)).unwrap();
    let (sa, sb) = (a.s2_id().unwrap(), b.s2_id().unwrap());
    assert_eq!((sa.vmid, sa.root, sa.t0sz, sa.sl0), (1, a.root_pa(), 24, 1));
    a.set(&mut env, G, M2, map(G)).unwrap();
    b.set(&mut env, G, M2, map(G)).unwrap();
    env.check_log();
    a.set(&mut env, G, M2, Leaf::Invalid(Owner::None)).unwrap();
    assert!(env.log.contains(&Event::TlbiIpa { s2: sa, ipa: G, level: 2 }));
    env.check_log();
    b.set(&mut env, G + 3 * K4, K4, Leaf::Invalid(Owner::None)).unwrap();
    // The split of b's block: break, TLBI of b at the block, then the table.
    assert!(env.log.contains(&Event::TlbiIpa { s2: sb, ipa: G, level: 2 }));
    assert!(env.log.iter().all(|e| !matches!(e, Event::TlbiIpa { s2, .. } | Event::TlbiVmid { s2 } if *s2 == sa)));
    env.check_log();
    a.destroy(&mut env);
    b.destroy(&mut env);
    env.check_log();
}

#[test]
fn tables_are_freed_only_after_an_invalidation() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(4)).unwrap();
    let s2 = s.s2_id().unwrap();
    s.set(&mut env, G, G, map(G)).unwrap();
    s.set(&mut env, G + K4, K4, Leaf::Invalid(Owner::None)).unwrap();
    env.check_log();
    // Filling the hole merges both tables away: each is freed after the
    // VMID-wide TLBI that follows its removal.
    s.set(&mut env, G + K4, K4, map(G + K4)).unwrap();
    let log = env.log.clone();
    let frees: Vec<usize> = (0..log.len()).filter(|&i| matches!(log[i], Event::FreeTable { .. })).collect();
    assert_eq!(frees.len(), 2);
    for i in frees {
        let Event::FreeTable { pa } = log[i] else { unreachable!() };
        let detach = first(
            &log,
            |e| matches!(e, Event::Write { old, level, .. } if crate::mm::pte::is_table(*old, *level) && crate::mm::pte::table_pa(*old) == pa),
        );
        assert!(log[detach..i].contains(&Event::TlbiVmid { s2 }), "table {pa:#x} freed before a TLBI");
    }
    env.check_log();
    s.destroy(&mut env);
    env.check_log();
}

#[test]
fn destroy_invalidates_the_vmid_before_freeing() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(9)).unwrap();
    let s2 = s.s2_id().unwrap();
    s.set(&mut env, G + K4, K4, map(G)).unwrap();
    env.check_log();
    s.destroy(&mut env);
    assert_eq!(env.log[0], Event::TlbiVmid { s2 });
    assert_eq!(env.log.iter().filter(|e| matches!(e, Event::FreeTable { .. })).count(), 2);
    assert!(matches!(env.log.last(), Some(Event::FreeRoot { pa, .. }) if *pa == s2.root));
    env.check_log();
    env.assert_no_leaks();
    // A bookkeeping tree has no VMID: nothing to invalidate.
    let mut h = Stage2::new(&mut env, 40, None).unwrap();
    h.set(&mut env, G + K4, K4, map(G)).unwrap();
    h.destroy(&mut env);
    assert!(!env.log.iter().any(|e| matches!(e, Event::TlbiIpa { .. } | Event::TlbiVmid { .. })));
    env.check_log();
}

#[test]
fn software_bits_only_means_nothing_else_changes() {
    use crate::mm::pte::{encode, sw_bits_only};
    let state = |s| Leaf::Mapped { pa: M2, attrs: Attrs::NORMAL_RWX, state: s };
    let owned = encode(state(PageState::Owned), 3);
    assert!(sw_bits_only(owned, encode(state(PageState::SharedOwned), 3)));
    assert!(sw_bits_only(owned, encode(state(PageState::SharedBorrowed), 3)));
    assert!(sw_bits_only(owned, owned));
    // Another PA, other permissions, another level, or an invalid side.
    assert!(!sw_bits_only(
        owned,
        encode(Leaf::Mapped { pa: 2 * M2, attrs: Attrs::NORMAL_RWX, state: PageState::Owned }, 3)
    ));
    let ro = Leaf::Mapped {
        pa: M2,
        attrs: Attrs { perm: crate::mm::prot::Perm { w: false, ..Attrs::NORMAL_RWX.perm }, ..Attrs::NORMAL_RWX },
        state: PageState::SharedOwned,
    };
    assert!(!sw_bits_only(owned, encode(ro, 3)));
    assert!(!sw_bits_only(owned, encode(state(PageState::SharedOwned), 2)));
    assert!(!sw_bits_only(encode(Leaf::Invalid(Owner::None), 3), owned));
    assert!(!sw_bits_only(owned, encode(Leaf::Invalid(Owner::None), 3)));
}

/// The check folded into `prepare_checked` sees every leaf, also below a
/// table the new leaf would replace whole (where a plain count skips), and
/// a failed check allocates and changes nothing.
#[test]
fn prepare_checked_sees_every_leaf_and_changes_nothing_on_refusal() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(7)).unwrap();
    // A 2M range of 4K pages with one page of another state in the middle.
    for i in 0..512 {
        s.set(&mut env, G + i * K4, K4, map(G + i * K4)).unwrap();
    }
    let odd = Leaf::Mapped { pa: G + 77 * K4, attrs: Attrs::NORMAL_RWX, state: PageState::SharedOwned };
    s.set(&mut env, G + 77 * K4, K4, odd).unwrap();
    let (tables, log) = (s.table_pages(), env.log.len());
    let owned = |l: Leaf| matches!(l, Leaf::Mapped { state: PageState::Owned, .. });
    // Unmapping the whole 2M replaces the 4K table by one entry: the walk
    // must still visit the 512 leaves to check them.
    let r = s.prepare_checked(&mut env, G, M2, Leaf::Invalid(Owner::None), Some(owned));
    assert_eq!(r.map(|u| u.cancel(&mut env)), Err(Error::Perm));
    assert_eq!((s.table_pages(), env.log.len()), (tables, log), "a refused prepare changes nothing");
    let mut seen = Vec::new();
    let u = s
        .prepare_checked(
            &mut env,
            G,
            M2,
            Leaf::Invalid(Owner::None),
            Some(|l: Leaf| {
                seen.push(l);
                true
            }),
        )
        .unwrap();
    assert_eq!(seen.len(), 512);
    assert_eq!(seen[77], odd);
    s.commit(&mut env, u);
    env.check_log();
    s.destroy(&mut env);
}

/// A tree that keeps all-invalid tables (the DMA view) does not merge a
/// table whose entries all became invalid, so the next 4K map inside needs
/// no table page; valid uniform tables still merge; an ordinary tree merges
/// both.
#[test]
fn kept_invalid_tables_are_not_merged() {
    let mut env = TestEnv::new();
    let g = 1u64 << 30;
    for keep in [false, true] {
        let mut s = Stage2::new(&mut env, 40, Some(3)).unwrap();
        if keep {
            s.keep_invalid_tables();
        }
        s.set(&mut env, g + 0x5000, 0x1000, map(g + 0x5000)).unwrap();
        assert_eq!(s.table_pages(), 2, "1G -> 2M -> 4K");
        s.set(&mut env, g + 0x5000, 0x1000, Leaf::Invalid(Owner::None)).unwrap();
        assert_eq!(s.table_pages(), if keep { 2 } else { 0 });
        let u = s.prepare(&mut env, g + 0x6000, 0x1000, map(g + 0x6000)).unwrap();
        assert_eq!(u.pages(), if keep { 0 } else { 2 });
        s.commit(&mut env, u);
        // A valid uniform table merges in both.
        s.set(&mut env, g, 2 << 20, map(g)).unwrap();
        assert_eq!(s.table_pages(), 1, "the 2M table merged into a block");
        check_structure(&mut env, &s);
        env.check_log();
        s.destroy(&mut env);
    }
    env.assert_no_leaks();
}

pub(super) fn shared(pa: u64) -> Leaf {
    Leaf::Mapped { pa, attrs: Attrs::NORMAL_RWX, state: PageState::SharedOwned }
}

/// A 4K update inside an already split block: phase one records the path
/// to the leaf and commit writes through it, entering only the tables its
/// merge checks read; with the tree changed in between (another commit),
/// commit walks from the root again. Same result either way.
#[test]
fn one_leaf_update_commits_through_the_recorded_path() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(7)).unwrap();
    s.set(&mut env, G, M2, map(G)).unwrap();
    // Page 0 shared: the block stays split into pages.
    s.set(&mut env, G, K4, shared(G)).unwrap();
    env.check_log();
    let u = s.prepare(&mut env, G + 5 * K4, K4, shared(G + 5 * K4)).unwrap();
    let t0 = env.table_ptrs.get();
    s.commit(&mut env, u);
    let fast = env.table_ptrs.get() - t0;
    assert_eq!(s.lookup(&mut env, G + 5 * K4).unwrap().leaf, shared(G + 5 * K4));
    // The path of `u` is stale once another update of the tree commits.
    let u = s.prepare(&mut env, G + 5 * K4, K4, map(G + 5 * K4)).unwrap();
    s.set(&mut env, G + 9 * K4, K4, shared(G + 9 * K4)).unwrap();
    let t0 = env.table_ptrs.get();
    s.commit(&mut env, u);
    let slow = env.table_ptrs.get() - t0;
    assert_eq!(s.lookup(&mut env, G + 5 * K4).unwrap().leaf, map(G + 5 * K4));
    assert_eq!(s.lookup(&mut env, G + 9 * K4).unwrap().leaf, shared(G + 9 * K4));
    // Root, level-2 and level-3 tables entered from the root by the walk.
    assert_eq!(slow, fast + 3, "fast {fast}, slow {slow}");
    // Undo both shares through recorded paths: the table merges back.
    for p in [G, G + 9 * K4] {
        let u = s.prepare(&mut env, p, K4, map(p)).unwrap();
        s.commit(&mut env, u);
    }
    assert_eq!((s.lookup(&mut env, G).unwrap().level, s.table_pages()), (2, 1));
    check_structure(&mut env, &s);
    check_hints(&mut env, &s);
    env.check_log();
    s.destroy(&mut env);
    env.assert_no_leaks();
}

/// What a walk of one tree found is never used for another tree: the count
/// walks the other tree from its root (here: a block to split).
#[test]
fn a_path_found_in_one_tree_is_not_used_in_another() {
    let mut env = TestEnv::new();
    let mut a = Stage2::new(&mut env, 40, Some(1)).unwrap();
    let mut b = Stage2::new(&mut env, 40, Some(2)).unwrap();
    a.set(&mut env, G, M2, map(G)).unwrap();
    a.set(&mut env, G, K4, shared(G)).unwrap();
    b.set(&mut env, G, M2, map(G)).unwrap();
    let (_, found) = a.lookup_found(&mut env, G + 5 * K4).unwrap();
    let c = b.count_found(&mut env, &found, G + 5 * K4, K4, shared(G + 5 * K4)).unwrap();
    let u = c.reserve(&mut env).unwrap();
    assert_eq!(u.pages(), 1, "b's 2M block must be split");
    b.commit(&mut env, u);
    assert_eq!(b.lookup(&mut env, G + 5 * K4).unwrap().leaf, shared(G + 5 * K4));
    assert_eq!(a.lookup(&mut env, G + 5 * K4).unwrap().leaf, map(G + 5 * K4), "a untouched");
    // Found in the same tree but for a leaf that does not hold the range.
    let (_, found) = a.lookup_found(&mut env, G + 5 * K4).unwrap();
    let u = a.count_found(&mut env, &found, G + 6 * K4, K4, shared(G + 6 * K4)).unwrap().reserve(&mut env).unwrap();
    a.commit(&mut env, u);
    assert_eq!(a.lookup(&mut env, G + 6 * K4).unwrap().leaf, shared(G + 6 * K4));
    assert_eq!(a.lookup(&mut env, G + 5 * K4).unwrap().leaf, map(G + 5 * K4));
    for s in [&a, &b] {
        check_structure(&mut env, s);
        check_hints(&mut env, s);
    }
    env.check_log();
    a.destroy(&mut env);
    b.destroy(&mut env);
    env.assert_no_leaks();
}

/// The raw descent of the one-page forms (`Stage2::page_path`, one copy per
/// start level) finds the leaf the walker finds, at every start level
/// (2, 1 and 0: 33, 40 and 48 IPA bits), for pages inside a page, a 2M
/// block, a 1G block, an invalid entry at each level, and the first and
/// last pages of the (concatenated) root.
#[test]
fn entry_finds_the_walkers_leaf_at_every_start_level() {
    let mut env = TestEnv::new();
    for bits in [33u8, 40, 48] {
        let mut s = Stage2::new(&mut env, bits, Some(1)).unwrap();
        let top = 1u64 << bits;
        // A 1G block (not for 33 bits: its root is at level 2), a 2M block
        // and a page, in the first and the last gigabyte.
        if bits > 33 {
            s.set(&mut env, G, G, map(G)).unwrap();
        }
        s.set(&mut env, top - G + 4 * M2, M2, map(8 * M2)).unwrap();
        s.set(&mut env, top - K4, K4, map(3 * K4)).unwrap();
        s.set(&mut env, 5 * K4, K4, map(7 * K4)).unwrap();
        let mut probes =
            std::vec![0, K4, 5 * K4, 6 * K4, M2, top - G, top - G + 4 * M2 + 3 * K4, top - 2 * K4, top - K4];
        if bits > 33 {
            probes.extend([G, G + 77 * K4, 2 * G - K4, 2 * G]);
        }
        for ipa in probes {
            let m = s.lookup(&mut env, ipa).unwrap();
            let e = s.page_path(&env, ipa).unwrap();
            assert_eq!((e.base, e.level), (m.base, m.level), "{bits} bits, IPA {ipa:#x}");
            assert_eq!(e.pte, crate::mm::pte::encode(m.leaf, m.level), "{bits} bits, IPA {ipa:#x}");
        }
        // Outside the tree or unaligned: no entry.
        assert!(s.page_path(&env, top).is_none());
        assert!(s.page_path(&env, K4 + 8).is_none());
        s.destroy(&mut env);
    }
}

#[test]
fn next_mapped_finds_what_a_walk_finds() {
    let mut env = TestEnv::new();
    for bits in [40u8, 48, 33] {
        let mut s = Stage2::new(&mut env, bits, Some(1)).unwrap();
        let limit = s.ipa_limit();
        // Blocks, pages, an owner annotation (invalid, not a mapping) and
        // the top of the space.
        s.set(&mut env, G, M2, map(G)).unwrap();
        s.set(&mut env, G + 3 * M2 + 5 * K4, 2 * K4, map(8 * G)).unwrap();
        s.set(&mut env, G + 7 * M2, K4, Leaf::Invalid(Owner::Guest(3))).unwrap();
        s.set(&mut env, limit - K4, K4, map(2 * G)).unwrap();
        let mut starts = std::vec![0, G - K4, G, G + K4, G + M2, G + 3 * M2 + 6 * K4, G + 3 * M2 + 7 * K4, limit - K4];
        starts.retain(|&a| a < limit);
        for start in starts {
            for end in [start + K4, start + M2, limit] {
                let end = end.min(limit);
                let mut want = None;
                let _ = s.for_each_leaf(&mut env, start, end, |m, _, _| {
                    if m.leaf.is_valid() {
                        want = Some(m);
                        return Err(Error::NoEnt);
                    }
                    Ok(())
                });
                assert_eq!(s.next_mapped(&env, start, end), want, "{bits} bits [{start:#x}, {end:#x})");
            }
        }
        s.destroy(&mut env);
    }
}
