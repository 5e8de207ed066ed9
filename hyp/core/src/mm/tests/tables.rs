//! Unit tests of the stage-2 engine's table pages: a split writes its new
//! table whole, a merge's page goes back to the next split of the same
//! block, merges of one commit share one invalidation, and every table's
//! uniformity hint follows every write.

use std::vec::Vec;

use super::helpers::*;
use super::pgtable::{map, shared};
use crate::mm::pgtable::Stage2;
use crate::mm::prot::{Leaf, Owner};
use crate::mm::testenv::{Event, TestEnv};

const G: u64 = 1 << 30;
const M2: u64 = 2 << 20;
const K4: u64 = 4096;

/// Splits take their pages unzeroed ([`MmEnv::alloc_table_for_fill`],
/// full of POISON in the test env) and write all 512 entries: nothing of
/// the poison survives in a split table, valid block or invalid one.
#[test]
fn split_tables_are_written_whole() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(7)).unwrap();
    s.set(&mut env, 0, G, map(G)).unwrap();
    s.set(&mut env, 2 * G, G, Leaf::Invalid(Owner::Guest(3))).unwrap();
    s.set(&mut env, K4, K4, Leaf::Invalid(Owner::None)).unwrap();
    s.set(&mut env, 2 * G + M2 + K4, K4, map(0)).unwrap();
    env.check_log();
    assert_eq!(s.stats.splits, 4);
    let mut tables = Vec::new();
    s.for_each_table(&mut env, |t, _| tables.push(t));
    assert_eq!(tables.len(), 4);
    for t in tables {
        for i in 0..crate::mm::ENTRIES {
            // SAFETY: a live table page of the tree.
            let d = unsafe { core::ptr::read((t as *const u64).add(i)) };
            assert_ne!(d, crate::mm::testenv::POISON, "table {t:#x} entry {i}");
        }
    }
    assert_eq!(s.lookup(&mut env, G - K4).unwrap().at(G - K4), map(2 * G - K4));
    assert_eq!(s.lookup(&mut env, 3 * G - K4).unwrap().leaf, Leaf::Invalid(Owner::Guest(3)));
    s.destroy(&mut env);
    env.check_log();
    env.assert_no_leaks();
}

/// The entries a split wrote into its new table page (`Init` events).
fn inits(env: &TestEnv) -> usize {
    env.log.iter().filter(|e| matches!(e, Event::Init { .. })).count()
}

/// A merge gives its table page back with its hint; the next split of the
/// same block gets it back (last freed, first handed out) and writes only
/// its first entry, for a valid block and an invalid one, one level or
/// two. The result is the same tree as with fresh pages.
#[test]
fn a_split_after_the_merge_of_the_same_block_reuses_its_table() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(3)).unwrap();
    s.set(&mut env, G, G, map(G)).unwrap();
    s.set(&mut env, 2 * G, G, Leaf::Invalid(Owner::Guest(5))).unwrap();
    env.check_log();
    for (ipa, pages, leaf) in [(G + M2 + K4, 2, map(0)), (2 * G + 3 * M2, 1, Leaf::Invalid(Owner::None))] {
        let old = s.lookup(&mut env, ipa).unwrap().at(ipa);
        let size = if pages == 2 { K4 } else { M2 };
        // First time: fresh pages, every entry written.
        s.set(&mut env, ipa, size, leaf).unwrap();
        assert_eq!(inits(&env), pages * crate::mm::ENTRIES);
        env.check_log();
        s.set(&mut env, ipa, size, old).unwrap();
        assert_eq!(s.table_pages(), 0, "merged back");
        env.check_log();
        // Again: the merged pages come back holding the children.
        s.set(&mut env, ipa, size, leaf).unwrap();
        assert_eq!(inits(&env), pages, "one entry written per reused table");
        env.check_log();
        check_structure(&mut env, &s);
        assert_eq!(s.lookup(&mut env, ipa).unwrap().at(ipa), leaf);
        assert_eq!(s.lookup(&mut env, ipa + size).unwrap().at(ipa + size), old.offset(size));
        let before = match old {
            Leaf::Mapped { pa, attrs, state } => Leaf::Mapped { pa: pa - K4, attrs, state },
            inv => inv,
        };
        assert_eq!(s.lookup(&mut env, ipa - K4).unwrap().at(ipa - K4), before);
        s.set(&mut env, ipa, size, old).unwrap();
        env.check_log();
    }
    s.destroy(&mut env);
    env.check_log();
    env.assert_no_leaks();
}

/// Tables that merge into invalid blocks in one commit (a 4K table and
/// the 2M table above it, at both ends of the range) share one VMID-wide
/// invalidation, issued before the commit returns; every page is freed
/// after it, none before.
#[test]
fn invalid_merges_of_one_commit_share_one_invalidation() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(6)).unwrap();
    let s2 = s.s2_id().unwrap();
    s.set(&mut env, G, 2 * G, Leaf::Invalid(Owner::Guest(1))).unwrap();
    s.set(&mut env, 2 * G - K4, 2 * K4, map(0)).unwrap();
    assert_eq!(s.table_pages(), 4);
    env.check_log();
    s.set(&mut env, 2 * G - K4, 2 * K4, Leaf::Invalid(Owner::Guest(1))).unwrap();
    assert_eq!((s.table_pages(), s.stats.merges, s.stats.tables_freed), (0, 4, 4));
    let log = env.log.clone();
    let vmid: Vec<usize> = (0..log.len()).filter(|&i| log[i] == Event::TlbiVmid { s2 }).collect();
    assert_eq!(vmid.len(), 1, "one VMID-wide invalidation: {log:?}");
    let frees: Vec<usize> = (0..log.len()).filter(|&i| matches!(log[i], Event::FreeTable { .. })).collect();
    assert_eq!(frees.len(), 4);
    assert!(frees.iter().all(|&f| f > vmid[0]), "a page freed before the invalidation: {log:?}");
    // The last table descriptor replaced comes before it too.
    let last_detach = log
        .iter()
        .rposition(|e| matches!(e, Event::Write { old, level, .. } if crate::mm::pte::is_table(*old, *level)))
        .unwrap();
    assert!(last_detach < vmid[0]);
    env.check_log();
    assert_eq!(leaves(&mut env, &s, G, 3 * G).len(), 2, "two invalid 1G blocks again");
    s.destroy(&mut env);
    env.check_log();
    env.assert_no_leaks();
}

/// A kept page whose chain is not the block's children (another block's,
/// the same PA one level down, an invalid run) is filled whole.
#[test]
fn a_kept_table_of_another_block_is_filled() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(3)).unwrap();
    s.set(&mut env, G, M2, map(G)).unwrap();
    s.set(&mut env, G + M2, M2, map(4 * G)).unwrap();
    s.set(&mut env, 2 * G, G, map(G)).unwrap();
    s.set(&mut env, 3 * G, M2, Leaf::Invalid(Owner::Guest(1))).unwrap();
    env.check_log();
    // Another block (other PA), a 1G block (2M children from the same PA
    // as the kept 4K chain's), an invalid block: each filled in full.
    for (ipa, splits) in [(G + M2, 1), (2 * G + K4, 2), (3 * G, 1)] {
        // Split and merge back the 2M block at G (PA G): its page is kept.
        s.set(&mut env, G, K4, Leaf::Invalid(Owner::None)).unwrap();
        s.set(&mut env, G, K4, map(G)).unwrap();
        assert_eq!(env.recycled().len(), 1);
        env.check_log();
        let want = s.lookup(&mut env, ipa + 5 * K4).unwrap().at(ipa + 5 * K4);
        s.set(&mut env, ipa, K4, Leaf::Invalid(Owner::Hyp)).unwrap();
        assert_eq!(inits(&env), splits * crate::mm::ENTRIES, "split at {ipa:#x}");
        env.check_log();
        check_structure(&mut env, &s);
        assert_eq!(s.lookup(&mut env, ipa + 5 * K4).unwrap().at(ipa + 5 * K4), want);
    }
    s.destroy(&mut env);
    env.check_log();
    env.assert_no_leaks();
}

/// A small deterministic generator for the sequences below.
fn lcg(x: &mut u64) -> u64 {
    *x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *x >> 33
}

/// Random updates over 3 x 2M (pages, blocks, states, owners, a whole 1G):
/// after each, every table's uniformity hint equals a recount, nothing
/// mergeable is left, and a tree that keeps no hints (the scan instead)
/// ends up with exactly the same leaves and the same splits and merges.
#[test]
fn uniformity_hints_follow_every_write_and_agree_with_scanning() {
    for keep in [false, true] {
        let mut envs = [TestEnv::new(), TestEnv::new()];
        envs[1].hints = false;
        let mut trees: Vec<Stage2> = envs.iter_mut().map(|e| Stage2::new(e, 40, Some(5)).unwrap()).collect();
        let mut x = 42u64;
        for step in 0..400 {
            let page = lcg(&mut x) % (3 * 512);
            let block = (G + page * K4) & !(M2 - 1);
            let leaf_at = |kind: u64, ipa: u64| match kind {
                0 => Leaf::Invalid(Owner::None),
                1 => Leaf::Invalid(Owner::Guest(3)),
                2 => shared(ipa),
                _ => map(ipa),
            };
            let kind = lcg(&mut x) % 6;
            // Some steps heal a whole block 64K at a time (the last write
            // makes its table uniform), the others scatter.
            let ops: Vec<(u64, u64, Leaf)> = match lcg(&mut x) % 8 {
                0 => std::vec![(block, M2, leaf_at(kind, block))],
                1 if step % 50 == 0 => std::vec![(G, G, map(G))],
                2 | 3 => (0..32).map(|i| (block + i * 16 * K4, 16 * K4, leaf_at(kind, block + i * 16 * K4))).collect(),
                _ => {
                    let ipa = G + page * K4;
                    std::vec![(ipa, K4 * (1 + lcg(&mut x) % 3), leaf_at(kind, ipa))]
                }
            };
            for (ipa, size, leaf) in ops {
                for (env, s) in envs.iter_mut().zip(trees.iter_mut()) {
                    if keep {
                        s.keep_invalid_tables();
                    }
                    s.set(env, ipa, size, leaf).unwrap();
                }
            }
            check_hints(&mut envs[0], &trees[0]);
            let l0 = leaves(&mut envs[0], &trees[0], G, 2 * G);
            let l1 = leaves(&mut envs[1], &trees[1], G, 2 * G);
            assert_eq!(l0, l1, "step {step}");
            assert_eq!(trees[0].stats, trees[1].stats, "step {step}");
        }
        assert!(trees[0].stats.merges > 10 && trees[0].stats.splits > 10, "{:?}", trees[0].stats);
        for (env, s) in envs.iter_mut().zip(trees) {
            check_structure(env, &s);
            env.check_log();
            s.destroy(env);
            env.assert_no_leaks();
        }
    }
}
