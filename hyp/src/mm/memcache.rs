//! A stack of preallocated table pages threaded through the pages
//! themselves, so phase two of an update takes pages without allocating.

use super::env::MmEnv;

/// Pages allocated in phase one of an update and consumed in phase two.
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
            match env.alloc_table() {
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

    fn push<E: MmEnv>(&mut self, env: &mut E, pa: u64) {
        // SAFETY: `pa` is a page just handed to us by the allocator; nobody
        // else references it, and its first word holds the list link.
        unsafe { core::ptr::write(env.table_ptr(pa), self.head) };
        self.head = pa;
        self.count += 1;
    }

    /// Takes one zeroed page.
    pub fn pop<E: MmEnv>(&mut self, env: &E) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let pa = self.head;
        let p = env.table_ptr(pa);
        // SAFETY: pages on the list are owned by the cache; word 0 is the link,
        // the rest is still zero from the allocator.
        unsafe {
            self.head = core::ptr::read(p);
            core::ptr::write(p, 0);
        }
        self.count -= 1;
        Some(pa)
    }

    /// Returns every cached page to the allocator.
    pub fn drain<E: MmEnv>(&mut self, env: &mut E) {
        while let Some(pa) = self.pop(env) {
            env.free_table(pa);
        }
    }
}
