//! A tree's own table pages ([`Stage2::use_own_tables`]): a VM's memcache
//! (pages its host donated for it) or the host's reserve. A tree with them
//! takes every table from there, counted in phase one and taken at its
//! commit (`update.rs`), and puts back there what its merges and its
//! teardown free (`give_back` in `mod.rs`).

use super::{hint, Stage2};
use crate::mm::env::MmEnv;
use crate::mm::memcache::Memcache;
use crate::mm::Error;

impl Stage2 {
    /// From now on the tree's table pages come only from its own
    /// ([`Stage2::give_table`]), and those its merges free go back there:
    /// a VM's stage-2 (its memcache, pages the host donated for it) and the
    /// host's (a reserve set aside at boot). Tables it already has from
    /// the environment go to its own pages when they are freed.
    pub fn use_own_tables(&mut self) {
        self.own = Some(Memcache::new());
    }

    /// The own table pages not in use (`None`: the tree has none of its own).
    pub fn own_tables(&self) -> Option<usize> {
        self.own.as_ref().map(Memcache::len)
    }

    /// Adds the page at `pa` to the tree's own table pages (ignored
    /// without [`Stage2::use_own_tables`]: the caller checked). The page
    /// is the hyp's, reachable through [`MmEnv::table_ptr`], no walker's,
    /// and nobody else's any more. Whatever it held goes: it is zeroed
    /// ([`MmEnv::zero_page`]) and its uniformity hint set to what a zeroed
    /// table's is (every entry the invalid one before it), so the split of
    /// an entry with no owner recorded (a new VM's donation) takes it
    /// without writing its entries, as a page a merge left
    /// ([`MmEnv::alloc_table_for_fill`]), and no split takes anything the
    /// host left in it for a table's contents.
    pub fn give_table<E: MmEnv>(&mut self, env: &mut E, pa: u64) {
        if let Some(own) = self.own.as_mut() {
            env.zero_page(pa);
            let p = env.table_ptr(pa);
            if let Some(h) = env.table_hint(p) {
                *h = hint::CHAINED_ALL;
            }
            own.push(env, pa);
        }
    }

    /// Calls `f` with every own table page not in use (checks).
    pub fn for_each_own_table<E: MmEnv>(&self, env: &E, f: impl FnMut(u64)) {
        if let Some(own) = self.own.as_ref() {
            own.for_each(env, f);
        }
    }

    /// Takes back one own table page not in use (the tree's teardown).
    pub fn take_table<E: MmEnv>(&mut self, env: &mut E) -> Option<u64> {
        self.own.as_mut()?.pop(env)
    }

    /// Fills the tree's own table pages up to `n` from the environment (the
    /// host's reserve at boot); `NoMem` (with what it took kept) if it runs out.
    pub fn fill_own_tables<E: MmEnv>(&mut self, env: &mut E, n: usize) -> Result<(), Error> {
        self.fill_own_tables_with(env, n, |e| e.alloc_table_for_fill())
    }

    /// [`Stage2::fill_own_tables`] from `next`, which gives a page of the
    /// hyp's on each call, as [`MmEnv::alloc_table_for_fill`] does (boot:
    /// the pages it set aside for the reserves, one after the other).
    pub fn fill_own_tables_with<E: MmEnv>(
        &mut self,
        env: &mut E,
        n: usize,
        mut next: impl FnMut(&mut E) -> Option<u64>,
    ) -> Result<(), Error> {
        let Some(own) = self.own.as_mut() else {
            return Err(Error::Inval);
        };
        while own.len() < n {
            let pa = next(env).ok_or(Error::NoMem)?;
            own.push(env, pa);
        }
        Ok(())
    }

    /// How many own table pages the last update this tree refused with
    /// `NoMem` lacked (at least).
    pub fn tables_short(&self) -> usize {
        self.short.get() as usize
    }

    /// The own pages a counted update of `pages` finds (`None`: the tree
    /// has none), noting a shortfall.
    #[inline(always)]
    pub(super) fn own_for(&self, pages: usize) -> Option<usize> {
        let have = self.own.as_ref()?.len();
        if pages > have {
            self.short.set(u32::try_from(pages - have).unwrap_or(u32::MAX));
        }
        Some(have)
    }
}
