//! Unit tests of the stage-2 engine: geometry, blocks, split, merge, BBM,
//! two-phase failure.

use super::helpers::*;
use crate::mm::pgtable::{geometry_for, Stage2};
use crate::mm::prot::{Attrs, Leaf, Owner, PageState};
use crate::mm::testenv::{Event, TestEnv};
use crate::mm::Error;

const G: u64 = 1 << 30;
const M2: u64 = 2 << 20;
const K4: u64 = 4096;

fn map(pa: u64) -> Leaf {
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
    env.check_bbm();
    s.destroy(&mut env);
}

#[test]
fn split_only_as_deep_as_needed_and_merge_back() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(7)).unwrap();
    s.set(&mut env, G, G, map(G)).unwrap();
    assert_eq!(s.table_pages(), 0);
    env.log.clear();
    // A 2M change inside the 1G block: one table (1G → 2M), no 4K tables.
    let shared = Leaf::Mapped { pa: G + 4 * M2, attrs: Attrs::NORMAL_RWX, state: PageState::SharedOwned };
    s.set(&mut env, G + 4 * M2, M2, shared).unwrap();
    assert_eq!((s.table_pages(), s.stats.splits), (1, 1));
    // BBM order for the split: invalidate, TLBI, install table.
    let pos = |f: &dyn Fn(&Event) -> bool| env.log.iter().position(f).unwrap();
    let inval = pos(&|e| matches!(e, Event::Write { new: 0, .. }));
    let tlbi = pos(&|e| matches!(e, Event::TlbiIpa { vmid: 7, ipa, level: 1 } if *ipa == G));
    assert!(inval < tlbi);
    env.check_bbm();
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
    env.check_bbm();
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
    assert!(env.log.iter().any(|e| matches!(e, Event::TlbiVmid { vmid: 1 })));
    env.check_bbm();
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
