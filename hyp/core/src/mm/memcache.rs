//! A stack of preallocated table pages threaded through the pages
//! themselves, so phase two of an update takes pages without allocating.
//! Every page goes to a split, which writes all its entries: the pages are
//! not zeroed ([`MmEnv::alloc_table_for_fill`]).

use super::env::MmEnv;

/// Pages allocated in phase one of an update and consumed in phase two,
/// in the order they were allocated: the environment hands out the table
/// pages merges gave back last first, and a walk splits top down what its
/// merges freed bottom up, so each split takes back the page its merge
/// left (whose entries it may then not need to write: see
/// `pgtable::commit::Commit::split`).
#[derive(Debug, Default)]
pub struct Memcache {
    head: u64,
    count: usize,
}

impl Memcache {
    pub const fn new() -> Self {
        Memcache { head: 0, count: 0 }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Fills the cache up to `n` pages; on failure gives back what it took in
    /// this call and reports `false`.
    pub fn topup<E: MmEnv>(&mut self, env: &mut E, n: usize) -> bool {
        let start = self.count;
        while self.count < n {
            match env.alloc_table_for_fill() {
                Some(pa) => self.push(env, pa),
                None => {
                    while self.count > start {
                        let pa = self.pop(env).expect("counted page");
                        env.free_table(pa);
                    }
                    return false;
                }
            }
        }
        if self.count - start > 1 {
            self.reverse(env);
        }
        true
    }

    /// Reverses the list: pushed at the head, pages pop in allocation
    /// order after this.
    fn reverse<E: MmEnv>(&mut self, env: &mut E) {
        let (mut prev, mut cur) = (0, self.head);
        for _ in 0..self.count {
            let p = env.table_ptr(cur);
            // SAFETY: pages on the list are owned by the cache; word 0 of
            // each links to the next (of the last: anything, never read).
            let next = unsafe { core::ptr::read(p) };
            // SAFETY: as above.
            unsafe { core::ptr::write(p, prev) };
            (prev, cur) = (cur, next);
        }
        self.head = prev;
    }

    /// Puts one page on the stack (its first word becomes the link).
    #[inline]
    pub fn push<E: MmEnv>(&mut self, env: &mut E, pa: u64) {
        // SAFETY: `pa` is a page just handed to us by the allocator; nobody
        // else references it, and its first word holds the list link.
        unsafe { core::ptr::write(env.table_ptr(pa), self.head) };
        self.head = pa;
        self.count += 1;
    }

    /// Takes one page, its contents unspecified: the caller writes every
    /// entry before it installs it ([`MmEnv::alloc_table_for_fill`]).
    #[inline]
    pub fn pop<E: MmEnv>(&mut self, env: &E) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let pa = self.head;
        self.count -= 1;
        // SAFETY: pages on the list are owned by the cache; word 0 links
        // to the next.
        self.head = unsafe { core::ptr::read(env.table_ptr(pa)) };
        Some(pa)
    }

    /// Moves `n` pages from `src` (which holds at least `n`) onto this
    /// cache, so that they pop here in the order they would have popped
    /// there (as [`Memcache::topup`] keeps the allocator's order).
    pub fn take_from<E: MmEnv>(&mut self, env: &mut E, src: &mut Memcache, n: usize) {
        let start = self.count;
        for _ in 0..n {
            let pa = src.pop(env).expect("counted pages");
            env.table_taken(pa);
            self.push(env, pa);
        }
        if self.count - start > 1 {
            self.reverse(env);
        }
    }

    /// Calls `f` with every page on the stack, top first (checks).
    pub fn for_each<E: MmEnv>(&self, env: &E, mut f: impl FnMut(u64)) {
        let mut pa = self.head;
        for _ in 0..self.count {
            f(pa);
            // SAFETY: pages on the list are owned by the cache; word 0
            // links to the next.
            pa = unsafe { core::ptr::read(env.table_ptr(pa)) };
        }
    }

    /// Returns every cached page to the allocator.
    pub fn drain<E: MmEnv>(&mut self, env: &mut E) {
        while let Some(pa) = self.pop(env) {
            env.free_table(pa);
        }
    }
}
