//! The hyp's own memory: one buddy allocator over the carve-out serves both
//! the heap and 4 KiB table pages (the global allocator), the per-page hint
//! words of table pages, and the table pages merges give back, kept for the
//! next split. (The ownership state behind locks is `owners.rs`.)

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use buddy_system_allocator::LockedHeap;
use spin::Mutex;

use hyp_core::mm::PAGE_SIZE;

use crate::arch::aarch64::tlb;

#[global_allocator]
static HEAP: Pool = Pool(LockedHeap::empty());

/// The buddy allocator, with zeroed allocations cleared a cache-line block
/// per instruction (DC ZVA) instead of the byte-wise default: the pin
/// counts of all RAM (`vec![0; pages]`, 21 MB for 20 GiB) were three
/// quarters of the boot's EL2 instructions, a stage-2's root most of
/// VM_CREATE.
struct Pool(LockedHeap<33>);

// SAFETY: every allocation is the buddy allocator's; alloc_zeroed only
// adds the clearing of the block it returned.
unsafe impl GlobalAlloc for Pool {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: per the caller's contract.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: per the caller's contract.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: per the caller's contract.
        let p = unsafe { self.0.alloc(layout) };
        if p.is_null() {
            return p;
        }
        let (start, end) = (p as u64, p as u64 + layout.size() as u64);
        // Whole pages by DC ZVA, the partial pages at either end by stores.
        let (a, b) = (start.next_multiple_of(PAGE_SIZE), end & !(PAGE_SIZE - 1));
        if a < b {
            // SAFETY: [start, end) was just allocated from the pool: hyp
            // memory only this caller has; [a, b) are whole pages of it.
            unsafe {
                core::ptr::write_bytes(p, 0, (a - start) as usize);
                tlb::zero(a, b - a);
                core::ptr::write_bytes(b as *mut u8, 0, (end - b) as usize);
            }
        } else {
            // SAFETY: as above.
            unsafe { core::ptr::write_bytes(p, 0, layout.size()) };
        }
        p
    }
}

/// An allocation of whole pages from the buddy allocator; if it fails,
/// tried once more after the table pages kept for splits went back to it.
/// (Heap allocations of objects go to the buddy allocator alone: the
/// check would cost every one of them a few instructions; they find at
/// most [`TABLE_PAGES_MAX`] pages fewer.)
///
/// # Safety
/// As [`GlobalAlloc::alloc`].
#[inline(always)]
unsafe fn heap_alloc(layout: Layout) -> *mut u8 {
    // SAFETY: per the function contract.
    let p = unsafe { HEAP.0.alloc(layout) };
    if p.is_null() {
        // SAFETY: as above.
        return unsafe { heap_alloc_again(layout) };
    }
    p
}

/// [`heap_alloc`] once the pool alone could not serve it.
///
/// # Safety
/// As [`GlobalAlloc::alloc`].
#[cold]
#[inline(never)]
unsafe fn heap_alloc_again(layout: Layout) -> *mut u8 {
    if !release_table_pages() {
        return core::ptr::null_mut();
    }
    // SAFETY: per the function contract.
    unsafe { HEAP.0.alloc(layout) }
}

/// One 16-bit word per page of RAM (pool pages and the pages hosts donate
/// for VMs' tables: VM_TOPUP): the core's per-table-page hint
/// (`MmEnv::table_hint`), allocated from the pool at boot: RAM's base,
/// the slot array and its length (0 until boot sets them, so every lookup
/// before finds nothing). One array over all RAM: a lookup costs what it
/// did over the pool alone. Plain statics: a lookup is on every stage-2
/// change, a one-time-init check on each cost ~12 instructions.
static HINT_BASE: AtomicU64 = AtomicU64::new(0);
static HINT_SLOTS: AtomicPtr<u16> = AtomicPtr::new(core::ptr::null_mut());
static HINT_LEN: AtomicUsize = AtomicUsize::new(0);

/// The pool is `[start, start + size)`, inside `ram` (`[base, end)`: the
/// span of all RAM banks), whose pages get hint words.
///
/// # Safety
/// `[start, start + size)` is memory only the hyp uses, mapped normal.
/// Runs once, on the boot CPU, before any other CPU or stage-2 change.
pub unsafe fn init(start: u64, size: u64, ram: (u64, u64)) {
    // SAFETY: per the function contract.
    unsafe { HEAP.0.lock().init(start as usize, size as usize) };
    debug_assert!(ram.0 <= start && start + size <= ram.1);
    let slots = alloc::vec![0u16; ((ram.1 - ram.0) / PAGE_SIZE) as usize].leak();
    HINT_BASE.store(ram.0, Ordering::Relaxed);
    HINT_SLOTS.store(slots.as_mut_ptr(), Ordering::Relaxed);
    // Release: a CPU that sees the length sees the base and the slots.
    HINT_LEN.store(slots.len(), Ordering::Release);
}

/// The hint word of the RAM page at `pa` (`None` outside RAM).
///
/// # Safety
/// The caller holds the lock of the tree the table page at `pa` belongs
/// to, and drops the reference before releasing it.
#[inline]
pub unsafe fn hint(pa: u64) -> Option<&'static mut u16> {
    // Boot set these before any stage-2 lock was taken; the lock the
    // caller holds orders them before this read.
    let len = HINT_LEN.load(Ordering::Relaxed);
    let i = (pa.wrapping_sub(HINT_BASE.load(Ordering::Relaxed)) / PAGE_SIZE) as usize;
    // SAFETY: i < len, inside the slot array boot leaked (fixed after
    // boot); per the function contract nobody else uses this page's slot
    // now.
    (i < len).then(|| unsafe { &mut *HINT_SLOTS.load(Ordering::Relaxed).add(i) })
}

/// `n` zeroed pages, contiguous and aligned to their total size. Zeroed
/// with DC ZVA (a cache-line block per instruction) where the CPU allows
/// it: a stage-2's concatenated root zeroed by bytes was most of VM_CREATE.
/// Not inlined: the zeroing loop inlined into the host's fault and pin
/// paths, which rarely allocate, cost them ~18 instructions each.
#[inline(never)]
pub fn alloc_pages(n: usize) -> Option<u64> {
    let layout = Layout::from_size_align(n * PAGE_SIZE as usize, n * PAGE_SIZE as usize).ok()?;
    // SAFETY: layout is non-zero.
    let p = unsafe { heap_alloc(layout) };
    if p.is_null() {
        return None;
    }
    // Whole pages: straight to DC ZVA (alloc_zeroed's edge checks cost
    // VM_CREATE ~30 instructions).
    // SAFETY: pool memory just allocated, page-aligned, only the hyp's,
    // identity-mapped normal.
    unsafe { tlb::zero(p as u64, layout.size() as u64) };
    Some(p as u64)
}

/// `n` pages, contiguous and aligned to their total size, not zeroed:
/// table pages whose every entry the core writes before a walker can see
/// them (boot's fill of the host's table reserves, 2 MiB at a time).
pub fn alloc_pages_unzeroed(n: usize) -> Option<u64> {
    let layout = Layout::from_size_align(n * PAGE_SIZE as usize, n * PAGE_SIZE as usize).ok()?;
    // SAFETY: layout is non-zero.
    let p = unsafe { heap_alloc(layout) };
    (!p.is_null()).then_some(p as u64)
}

/// Stage-2 table pages given back by merges, kept (up to
/// [`TABLE_PAGES_MAX`]) for the next split: a push and a pop on a stack
/// threaded through the pages' first words instead of a buddy free (a
/// search of the free lists for the buddy, level by level) and a buddy
/// allocation, and no zeroing either way: a page handed out from here is
/// one whose 512 entries the caller writes before installing it
/// ([`alloc_table_page`]). A kept page keeps its hint and every entry but
/// the first (the link): a split of the block a merge just made takes its
/// page back and finds its children there (`MmEnv::alloc_table_for_fill`).
/// A page leaves the stack for the pool zeroed, its hint cleared, so no
/// descriptor goes back to general use.
struct TablePages {
    head: u64,
    count: usize,
}

/// Table pages kept at most: enough for the splits of a few updates (a 4K
/// change inside a 1 GiB block takes two per tree), 64 KiB of the pool.
const TABLE_PAGES_MAX: usize = 16;

static TABLE_PAGES: Mutex<TablePages> = Mutex::new(TablePages { head: 0, count: 0 });

/// A page for a stage-2 table whose every entry the caller writes before
/// the table becomes reachable (a split block's children): its contents
/// are unspecified (a recycled table page, not zeroed again).
#[inline]
pub fn alloc_table_page() -> Option<u64> {
    {
        let mut t = TABLE_PAGES.lock();
        if t.count > 0 {
            let pa = t.head;
            // SAFETY: pages on the stack are pool pages only the stack
            // references (identity-mapped); word 0 links to the next.
            t.head = unsafe { core::ptr::read(pa as *const u64) };
            t.count -= 1;
            return Some(pa);
        }
    }
    let layout = Layout::from_size_align(PAGE_SIZE as usize, PAGE_SIZE as usize).ok()?;
    // SAFETY: layout is non-zero. Not zeroed: the caller writes every entry.
    let p = unsafe { heap_alloc(layout) };
    (!p.is_null()).then_some(p as u64)
}

/// Gives back a table page from [`alloc_table_page`]: onto the stack while
/// it has room, else zeroed into the pool. The caller has made the page
/// unreachable and invalidated every TLB that could hold it.
#[inline]
pub fn free_table_page(pa: u64) {
    {
        let mut t = TABLE_PAGES.lock();
        if t.count < TABLE_PAGES_MAX {
            // SAFETY: a table page the caller gave up: hyp memory nobody
            // else references; word 0 becomes the link.
            unsafe { core::ptr::write(pa as *mut u64, t.head) };
            t.head = pa;
            t.count += 1;
            return;
        }
    }
    pool_free_table(pa);
}

/// A table page back to the pool, zeroed so that it carries no descriptor,
/// its hint cleared: a pool page's hint is 0 (the core trusts a hint that
/// says a page handed out for a table holds a chain of entries).
fn pool_free_table(pa: u64) {
    // SAFETY: the page is nobody's now: its hint slot is ours to clear.
    if let Some(h) = unsafe { hint(pa) } {
        *h = 0;
    }
    // SAFETY: a table page nobody references any more: hyp memory.
    unsafe { tlb::zero(pa, PAGE_SIZE) };
    free_pages(pa, 1)
}

/// Gives every kept table page back to the pool (an allocation that the
/// pool alone could not serve is retried after this); true if there were
/// any.
fn release_table_pages() -> bool {
    let (mut pa, n) = {
        let mut t = TABLE_PAGES.lock();
        let taken = (t.head, t.count);
        (t.head, t.count) = (0, 0);
        taken
    };
    for _ in 0..n {
        // SAFETY: the pages were on the stack, which no longer holds them:
        // only this loop references them; word 0 links to the next.
        let next = unsafe { core::ptr::read(pa as *const u64) };
        pool_free_table(pa);
        pa = next;
    }
    n > 0
}

pub fn free_pages(pa: u64, n: usize) {
    let layout = Layout::from_size_align(n * PAGE_SIZE as usize, n * PAGE_SIZE as usize).expect("valid layout");
    // SAFETY: pa came from alloc_pages(n) with the same layout.
    unsafe { HEAP.dealloc(pa as *mut u8, layout) };
}

/// (bytes in use, bytes total) of the hyp's pool. Table pages kept for
/// the next split count as free: the pool gets them back when it runs out.
pub fn usage() -> (usize, usize) {
    let kept = TABLE_PAGES.lock().count * PAGE_SIZE as usize;
    let h = HEAP.0.lock();
    (h.stats_alloc_actual().saturating_sub(kept), h.stats_total_bytes())
}

/// Table pages for the EL2 stage-1, from the pool (identity-mapped).
pub struct PoolPages;

impl hyp_core::mm::stage1::TableAlloc for PoolPages {
    fn alloc(&mut self) -> Option<u64> {
        alloc_pages(1)
    }
    fn ptr(&self, pa: u64) -> *mut u64 {
        pa as *mut u64
    }
}
