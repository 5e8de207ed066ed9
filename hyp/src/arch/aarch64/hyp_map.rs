//! The final EL2 stage-1 at run time: the pages hosts donate for VMs'
//! tables (VM_TOPUP) are identity-mapped, normal read-write
//! never-executable, while the hyp holds them, so the mm core reaches them
//! by PA as it reaches the pool's pages; they are unmapped before they go
//! back to their host (VM_DESTROY). Nothing else changes in the final map
//! after boot.
//!
//! A new entry only ever replaces an invalid one (no TLB holds an invalid
//! entry: no invalidation needed), and a new table is zeroed and published
//! (`DSB ISHST`) before the descriptor that makes it reachable; an unmap
//! invalidates every CPU's EL2 TLB (`TLBI ALLE2IS`, `DSB ISH`) before the
//! pages can change hands. Tables made here (from the allocator the caller
//! passes: the pool) stay for the next pages in their region.

use aarch64_cpu::asm::barrier;
use spin::Mutex;

use hyp_core::mm::stage1::{MapError, Perm, TableAlloc, Tables, PAGE};

/// The final map, from [`super::mmu::install_final`] on.
static FINAL: Mutex<Option<Tables>> = Mutex::new(None);

/// Keeps the final map's tables for run-time changes (boot, once).
pub fn keep(t: Tables) {
    *FINAL.lock() = Some(t);
}

/// Table pages from the caller's allocator, each published before it is
/// installed.
struct Published<'a, A: TableAlloc>(&'a mut A);

impl<A: TableAlloc> TableAlloc for Published<'_, A> {
    fn alloc(&mut self) -> Option<u64> {
        let t = self.0.alloc()?;
        // The zeroes before the descriptor that installs the table.
        barrier::dsb(barrier::ISHST);
        Some(t)
    }
    fn ptr(&self, pa: u64) -> *mut u64 {
        self.0.ptr(pa)
    }
}

/// Identity-maps `[pa, pa + size)` (pages the hyp now holds, outside its
/// own memory) read-write, with page entries. On `Err` nothing new is mapped (tables made on
/// the way stay).
pub fn map<A: TableAlloc>(a: &mut A, pa: u64, size: u64) -> Result<(), MapError> {
    let mut g = FINAL.lock();
    let t = g.as_mut().ok_or(MapError::Range)?;
    // Page by page: page entries only, so that any part can be unmapped
    // (the pages go back in runs that need not match the top-ups').
    let mut r = Ok(());
    let mut at = pa;
    while r.is_ok() && at < pa.saturating_add(size) {
        r = t.map(&mut Published(a), at, at, PAGE, Perm::ReadWrite);
        at += PAGE;
    }
    if r.is_err() {
        // What was mapped before the failure goes again.
        let _ = t.unmap(a, pa, size);
        flush();
    }
    // The new entries before this CPU's next access through them.
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
    r
}

/// Unmaps `[pa, pa + size)` (mapped by [`map`], whole), every CPU's TLB
/// invalidated before it returns.
pub fn unmap<A: TableAlloc>(a: &mut A, pa: u64, size: u64) -> Result<(), MapError> {
    let mut g = FINAL.lock();
    let t = g.as_mut().ok_or(MapError::Range)?;
    let r = t.unmap(a, pa, size);
    flush();
    r
}

/// Every CPU's EL2 TLB entries go, after the descriptor writes.
fn flush() {
    // SAFETY: TLB maintenance only; no memory is accessed.
    unsafe { core::arch::asm!("dsb ishst", "tlbi alle2is", "dsb ish", "isb", options(nostack)) };
}
