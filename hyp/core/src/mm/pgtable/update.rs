//! Range updates of a stage-2, in two phases: phase one walks the range,
//! checks it and counts the table pages it needs ([`CountVisitor`]),
//! [`Counted::reserve`] allocates them; phase two ([`Stage2::commit`])
//! writes the range by the rules of `commit.rs` and cannot fail.

use super::commit::{Commit, Due, SetVisitor, NONE_KEPT};
use super::fit::{already, blockable};
use super::{Counted, Found, Stage2, Update};
use crate::mm::env::MmEnv;
use crate::mm::memcache::Memcache;
use crate::mm::prot::Leaf;
use crate::mm::pte;
use crate::mm::walker::{walk, walk_path, Entry, Path, Visitor, Walk};
use crate::mm::{is_aligned, level_size, Error, PAGE_SIZE};

impl Stage2 {
    /// Phase one of setting `[ipa, ipa + size)` to `new` (a valid `new`
    /// gives the PA for `ipa`; following pages follow it). Allocates every
    /// table page the update will need; changes nothing.
    pub fn prepare<E: MmEnv>(&self, env: &mut E, ipa: u64, size: u64, new: Leaf) -> Result<Update, Error> {
        self.prepare_checked(env, ipa, size, new, None::<fn(Leaf) -> bool>)
    }

    /// The walk of `prepare_checked` without the allocation: checks and
    /// counts; [`Counted::reserve`] allocates.
    #[inline]
    pub fn count_checked<E: MmEnv, F: FnMut(Leaf) -> bool>(
        &self,
        env: &mut E,
        ipa: u64,
        size: u64,
        new: Leaf,
        ok: Option<F>,
    ) -> Result<Counted, Error> {
        self.count_from(env, None, ipa, size, new, ok)
    }

    /// `prepare`, in the same walk checking every page of the range with
    /// `ok` (the leaf at each leaf entry's first page in the range, as
    /// `for_each_leaf` sees it): `Err(Perm)` and nothing allocated if one
    /// fails. One walk for the check and the count.
    #[inline]
    pub fn prepare_checked<E: MmEnv, F: FnMut(Leaf) -> bool>(
        &self,
        env: &mut E,
        ipa: u64,
        size: u64,
        new: Leaf,
        ok: Option<F>,
    ) -> Result<Update, Error> {
        self.count_from(env, None, ipa, size, new, ok)?.reserve(env)
    }

    /// `prepare` of a range an earlier walk of this tree found
    /// ([`Stage2::for_each_leaf_found`]): when it lies in one leaf and the
    /// tree has not changed since, the count starts at that leaf rather
    /// than at the root (the same visitor either way).
    #[inline]
    pub fn count_found<E: MmEnv>(
        &self,
        env: &mut E,
        found: &Found,
        ipa: u64,
        size: u64,
        new: Leaf,
    ) -> Result<Counted, Error> {
        self.count_from(env, Some(found), ipa, size, new, None::<fn(Leaf) -> bool>)
    }

    #[inline(always)]
    fn count_from<E: MmEnv, F: FnMut(Leaf) -> bool>(
        &self,
        env: &mut E,
        from: Option<&Found>,
        ipa: u64,
        size: u64,
        new: Leaf,
        ok: Option<F>,
    ) -> Result<Counted, Error> {
        let end = self.check_range(ipa, size)?;
        if let Leaf::Mapped { pa, .. } = new {
            if !is_aligned(pa, PAGE_SIZE) || pa.checked_add(size).is_none_or(|e| e > pte::OA_MASK + PAGE_SIZE) {
                return Err(Error::Inval);
            }
        }
        let mut counter = CountVisitor {
            start: ipa,
            end,
            new,
            pages: 0,
            ok,
            path: Path::new(),
            pages_only: self.pages_only,
            fwb: self.fwb,
        };
        match from {
            Some(f) if f.usable(self, ipa, end) => {
                counter.path = f.0.restart();
                walk_path(env, &f.0, ipa, end, &mut counter)?
            }
            _ => walk(env, &self.geo, ipa, end, &mut counter)?,
        }
        let own = self.own_for(counter.pages);
        Ok(Counted { start: ipa, end, new, pages: counter.pages, found: self.found(counter.path), own })
    }

    /// Phase two: applies a prepared update. Cannot fail.
    pub fn commit<E: MmEnv>(&mut self, env: &mut E, mut u: Update) {
        if u.take != 0 {
            let own = self.own.as_mut().expect("counted from own pages");
            u.cache.take_from(env, own, u.take);
        }
        // `u.found` is the path phase one's own walk of the range recorded
        // (Counted is made only by count_from and count_page): with the
        // tree unchanged it still leads to the range level by level.
        let leaf = u.found.still_in(self, u.start, u.end);
        let from_leaf = leaf.is_some();
        debug_assert_eq!(from_leaf, u.found.usable(self, u.start, u.end));
        if let (Some(leaf), true) = (leaf, u.found.0.by_descent()) {
            debug_assert_eq!(u.end - u.start, PAGE_SIZE);
            self.commit_page(env, &mut u, leaf);
        } else {
            let geo = self.geo;
            let c = self.commit_state(&mut u.cache);
            let mut v = SetVisitor { start: u.start, end: u.end, new: u.new, kept: NONE_KEPT, c };
            // With the tree as phase one left it, a range inside one leaf is
            // written from that leaf up (the same visitor as the full walk).
            let r = if from_leaf {
                walk_path(env, &u.found.0, u.start, u.end, &mut v)
            } else {
                walk(env, &geo, u.start, u.end, &mut v)
            };
            v.c.finish(env);
            debug_assert!(r.is_ok(), "commit: {r:?}");
        }
        self.gen = self.gen.wrapping_add(1);
        // Only the test environment looks (kept out of the EL2 build's
        // code: the hook moved its inlining, +169 instructions on VM_CREATE).
        #[cfg(test)]
        if let Some(s2) = self.s2_id() {
            env.commit_done(&s2);
        }
        debug_assert!(u.cache.is_empty(), "commit: {} pages left", u.cache.len());
        while let Some(pa) = u.cache.pop(env) {
            super::give_back(env, &mut self.own, pa);
        }
    }

    /// The state of one commit to this tree, taking its table pages from
    /// `cache`.
    #[inline(always)]
    pub(super) fn commit_state<'a>(&'a mut self, cache: &'a mut Memcache) -> Commit<'a> {
        Commit {
            s2: self.s2_id(),
            who: self.who,
            cache,
            own: &mut self.own,
            stats: &mut self.stats,
            tables: &mut self.tables,
            keep_invalid: self.keep_invalid,
            keep_valid: self.keep_valid,
            pages_only: self.pages_only,
            fwb: self.fwb,
            root_level: self.geo.start_level,
            due: Due::new(),
        }
    }

    /// Prepare and commit in one step (single-table updates).
    pub fn set<E: MmEnv>(&mut self, env: &mut E, ipa: u64, size: u64, new: Leaf) -> Result<(), Error> {
        let u = self.prepare(env, ipa, size, new)?;
        self.commit(env, u);
        Ok(())
    }
}

/// Phase one: counts the table pages an update needs, checking every leaf
/// with `ok` if given.
struct CountVisitor<F> {
    start: u64,
    end: u64,
    new: Leaf,
    pages: usize,
    ok: Option<F>,
    path: Path,
    /// Valid leaves at level 3 only ([`Stage2::no_transient_faults`]).
    pages_only: bool,
    /// The tree's MemAttr encoding ([`Stage2::fwb`]).
    fwb: bool,
}

impl<F> CountVisitor<F> {
    #[inline]
    fn covers(&self, base: u64, level: u8) -> bool {
        base >= self.start && base + level_size(level) <= self.end
    }

    /// Pages needed to split a uniform block at (`base`, `level`) so that the
    /// range can be written into it.
    fn split_cost(&self, base: u64, level: u8) -> usize {
        let child = level + 1;
        if child == 3 {
            return 1;
        }
        let csize = level_size(child);
        let mut n = 1;
        let mut a = base.max(self.start) & !(csize - 1);
        let stop = (base + level_size(level)).min(self.end);
        while a < stop {
            if !(self.covers(a, child) && blockable(self.new.offset(a - self.start), child, self.pages_only)) {
                n += self.split_cost(a, child);
            }
            a += csize;
        }
        n
    }
}

impl<E: MmEnv, F: FnMut(Leaf) -> bool> Visitor<E> for CountVisitor<F> {
    fn leaf(&mut self, _env: &mut E, e: &Entry) -> Result<(), Error> {
        self.path.leaf(e);
        if let Some(ok) = &mut self.ok {
            let from = e.base.max(self.start);
            if !ok(pte::decode(e.pte).offset(from - e.base)) {
                return Err(Error::Perm);
            }
        }
        // Written in place, or already there: no table page either way.
        if self.covers(e.base, e.level) && blockable(self.new.offset(e.base - self.start), e.level, self.pages_only) {
            return Ok(());
        }
        if already(e, self.start, self.new, self.fwb) {
            return Ok(());
        }
        self.pages += self.split_cost(e.base, e.level);
        Ok(())
    }

    fn table_pre(&mut self, _env: &mut E, e: &Entry) -> Result<Walk, Error> {
        self.path.table(e);
        // A check visits every leaf; below a table the new leaf replaces
        // whole, every leaf is covered and blockable (costs nothing).
        if self.ok.is_none()
            && self.covers(e.base, e.level)
            && blockable(self.new.offset(e.base - self.start), e.level, self.pages_only)
        {
            Ok(Walk::Skip)
        } else {
            Ok(Walk::Continue)
        }
    }
}
