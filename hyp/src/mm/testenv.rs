//! A recording [`MmEnv`] for host tests: table pages from the host heap
//! (their addresses serve as PAs), an optional allocation limit, and a log of
//! descriptor writes and TLB invalidations for break-before-make checks.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::BTreeMap;
use std::vec::Vec;

use super::env::{MmEnv, Vmid};
use super::pte;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Write { ptep: u64, old: u64, new: u64 },
    TlbiIpa { vmid: Vmid, ipa: u64, level: u8 },
    TlbiVmid { vmid: Vmid },
    Scrub { pa: u64, size: u64 },
}

pub struct TestEnv {
    /// Live allocations: pa → pages.
    pub live: BTreeMap<u64, usize>,
    /// Allocations still allowed (None: unlimited).
    pub budget: Option<usize>,
    pub log: Vec<Event>,
    pub record: bool,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> Self {
        TestEnv { live: BTreeMap::new(), budget: None, log: Vec::new(), record: true }
    }
    /// Non-root table pages alive.
    pub fn tables_live(&self) -> usize {
        self.live.values().filter(|&&n| n == 1).count()
    }
    fn take(&mut self) -> bool {
        match &mut self.budget {
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
            None => true,
        }
    }
    /// Checks the break-before-make rule over the log, then clears it: no
    /// valid entry is replaced by a different valid one, and an entry made
    /// invalid is not made valid again before a TLB invalidation.
    pub fn check_bbm(&mut self) {
        let mut pending: BTreeMap<u64, ()> = BTreeMap::new();
        for ev in self.log.drain(..) {
            match ev {
                Event::Write { ptep, old, new } => {
                    if pte::is_valid(old) && pte::is_valid(new) && old != new {
                        panic!("valid→valid at {ptep:#x}: {old:#x} → {new:#x}");
                    }
                    if pte::is_valid(old) && !pte::is_valid(new) {
                        pending.insert(ptep, ());
                    }
                    if pte::is_valid(new) && pending.contains_key(&ptep) {
                        panic!("entry {ptep:#x} made valid before TLBI");
                    }
                }
                Event::TlbiIpa { .. } | Event::TlbiVmid { .. } => pending.clear(),
                Event::Scrub { .. } => {}
            }
        }
    }
}

impl MmEnv for TestEnv {
    fn alloc_table(&mut self) -> Option<u64> {
        self.alloc_root(1)
    }
    fn free_table(&mut self, pa: u64) {
        self.free_root(pa, 1)
    }
    fn alloc_root(&mut self, pages: usize) -> Option<u64> {
        if !self.take() {
            return None;
        }
        let layout = Layout::from_size_align(pages * 4096, pages * 4096).unwrap();
        // SAFETY: layout has non-zero size.
        let p = unsafe { alloc_zeroed(layout) } as u64;
        assert!(p != 0 && p & pte::OA_MASK == p);
        self.live.insert(p, pages);
        Some(p)
    }
    fn free_root(&mut self, pa: u64, pages: usize) {
        assert_eq!(self.live.remove(&pa), Some(pages), "double or bad free of {pa:#x}");
        let layout = Layout::from_size_align(pages * 4096, pages * 4096).unwrap();
        // SAFETY: allocated above with this layout.
        unsafe { dealloc(pa as *mut u8, layout) };
    }
    fn table_ptr(&self, pa: u64) -> *mut u64 {
        pa as *mut u64
    }
    unsafe fn write_pte(&mut self, ptep: *mut u64, val: u64) {
        // SAFETY: ptep points into a live test table page.
        let old = unsafe { core::ptr::read(ptep) };
        if self.record {
            self.log.push(Event::Write { ptep: ptep as u64, old, new: val });
        }
        // SAFETY: as above.
        unsafe { core::ptr::write(ptep, val) };
    }
    fn tlbi_ipa(&mut self, vmid: Vmid, ipa: u64, level: u8) {
        if self.record {
            self.log.push(Event::TlbiIpa { vmid, ipa, level });
        }
    }
    fn tlbi_vmid(&mut self, vmid: Vmid) {
        if self.record {
            self.log.push(Event::TlbiVmid { vmid });
        }
    }
    fn scrub(&mut self, pa: u64, size: u64) {
        self.log.push(Event::Scrub { pa, size });
    }
}

impl TestEnv {
    /// Every page handed out has come back.
    pub fn assert_no_leaks(&self) {
        assert!(self.live.is_empty(), "leaked pages: {:?}", self.live);
    }
}
