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
/// `pgtable::SetVisitor::split`).
#[derive(Debug, Default)]
pub struct Memcache {
    head: u64,
    tail: u64,
    count: usize,
}

impl Memcache {
    pub const fn new() -> Self {
        Memcache { head: 0, tail: 0, count: 0 }
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
        true
    }

    /// Appends `pa` (the list runs head to tail through word 0 of each
    /// page; pops take the head).
    fn push<E: MmEnv>(&mut self, env: &mut E, pa: u64) {
        if self.count == 0 {
            self.head = pa;
        } else {
            // SAFETY: the tail is a page of the list, owned by the cache;
            // its first word holds the link.
            unsafe { core::ptr::write(env.table_ptr(self.tail), pa) };
        }
        self.tail = pa;
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
        if self.count > 0 {
            // SAFETY: pages on the list are owned by the cache; word 0 of
            // every page but the tail links to the next.
            self.head = unsafe { core::ptr::read(env.table_ptr(pa)) };
        }
        Some(pa)
    }

    /// Returns every cached page to the allocator.
    pub fn drain<E: MmEnv>(&mut self, env: &mut E) {
        while let Some(pa) = self.pop(env) {
            env.free_table(pa);
        }
    }
}
