//! Shared checks for the core's tests.

use std::collections::BTreeSet;
use std::vec::Vec;

use crate::mm::env::MmEnv;
use crate::mm::mem_protect::{HostFault, Pa, Refused};
use crate::mm::pgtable::{Mapping, Stage2};
use crate::mm::prot::Leaf;
use crate::mm::testenv::TestEnv;
use crate::mm::{pte, Error, ENTRIES};

/// Every leaf over `[start, end)` as (from, to, level, leaf at from).
pub fn leaves(env: &mut TestEnv, s2: &Stage2, start: u64, end: u64) -> Vec<(u64, u64, u8, Leaf)> {
    let mut v = Vec::new();
    s2.for_each_leaf(env, start, end, |m: Mapping, a, b| {
        v.push((a, b, m.level, m.at(a)));
        Ok(())
    })
    .unwrap();
    v
}

/// Structural invariants: each table reachable once, table count matches
/// the allocator and the tree's own count, nothing left mergeable (all-invalid
/// or all-valid tables excepted in a tree that keeps them).
pub fn check_structure(env: &mut TestEnv, s2: &Stage2) {
    let mut seen = BTreeSet::new();
    let mut tables = Vec::new();
    s2.for_each_table(env, |pa, level| {
        assert!(seen.insert(pa), "table {pa:#x} reachable twice");
        tables.push((pa, level));
    });
    assert_eq!(tables.len(), s2.table_pages(), "tree's own count");
    for (pa, level) in tables {
        // A table at `level` hangs off an entry at level-1; blocks exist at 1 and 2.
        if level < 2 {
            continue;
        }
        let p = env.table_ptr(pa);
        // SAFETY: live table page.
        let e: Vec<u64> = (0..ENTRIES).map(|i| unsafe { *p.add(i) }).collect();
        if pte::is_table(e[0], level) {
            continue;
        }
        let valid = pte::is_valid(e[0]);
        if !valid && s2.keeps_invalid_tables() || valid && s2.keeps_valid_tables() {
            continue;
        }
        let csize = crate::mm::level_size(level);
        let aligned = !valid || crate::mm::is_aligned(pte::table_pa(e[0]), crate::mm::level_size(level - 1));
        let uniform = (0..ENTRIES).all(|i| e[i] == if valid { e[0] + i as u64 * csize } else { e[0] });
        assert!(!(aligned && uniform), "mergeable table left at level {level} ({pa:#x})");
    }
}

pub fn check_alloc(env: &TestEnv, tables: &[&Stage2]) {
    let n: usize = tables.iter().map(|s| s.table_pages()).sum();
    assert_eq!(env.tables_live(), n, "allocator vs trees");
}

/// Every table page's uniformity hint equals a recount: the entries that
/// continue the one before (the next PA with the same attributes, or the
/// same invalid annotation; a table descriptor continues nothing).
pub fn check_hints(env: &mut TestEnv, s2: &Stage2) {
    let mut tables = Vec::new();
    s2.for_each_table(env, |pa, level| tables.push((pa, level)));
    for (pa, level) in tables {
        let p = env.table_ptr(pa);
        // SAFETY: live table page.
        let e: Vec<u64> = (0..ENTRIES).map(|i| unsafe { *p.add(i) }).collect();
        let size = crate::mm::level_size(level);
        let n = (1..ENTRIES)
            .filter(|&i| {
                let step = if pte::is_valid(e[i - 1]) { size } else { 0 };
                !pte::is_table(e[i - 1], level) && e[i] == e[i - 1].wrapping_add(step)
            })
            .count();
        assert_eq!(env.hint_of(pa), Some(n as u16), "hint of the level-{level} table {pa:#x}");
    }
}

/// A transition's result as the errno-level tests compare it: the PA as a
/// number and the refusal's [`Error`] (its address and state are checked
/// where a test says so).
pub trait Plain {
    type Out;
    fn plain(self) -> Self::Out;
}

impl Plain for Result<Pa, Refused> {
    type Out = Result<u64, Error>;
    fn plain(self) -> Self::Out {
        self.map(Pa::get).map_err(Error::from)
    }
}

impl Plain for Result<(), Refused> {
    type Out = Result<(), Error>;
    fn plain(self) -> Self::Out {
        self.map_err(Error::from)
    }
}

impl Plain for Result<u64, Refused> {
    type Out = Result<u64, Error>;
    fn plain(self) -> Self::Out {
        self.map_err(Error::from)
    }
}

impl Plain for Result<HostFault, Refused> {
    type Out = Result<HostFault, Error>;
    fn plain(self) -> Self::Out {
        self.map_err(Error::from)
    }
}

impl Plain for Result<Leaf, Refused> {
    type Out = Result<Leaf, Error>;
    fn plain(self) -> Self::Out {
        self.map_err(Error::from)
    }
}

/// Index of the first event of `log` matching `f` (panics if none).
pub fn first(log: &[crate::mm::testenv::Event], f: impl Fn(&crate::mm::testenv::Event) -> bool) -> usize {
    log.iter().position(f).expect("event missing from the log")
}
