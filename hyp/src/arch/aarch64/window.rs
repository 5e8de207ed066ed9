//! The per-CPU window: the only way the hyp reaches memory it does not own
//! (pages it scrubs or cleans for the host and guests, host buffers shared
//! with it), one piece at a time, mapped read-write never-executable only
//! while it uses them.
//!
//! Each CPU has its own two 2 MiB VA slots (`hyp_core::mm::stage1::window_block_va`,
//! `window_pages_va`): a block slot (one level-2 block descriptor) for an
//! aligned 2 MiB, and a page slot (a level-3 table) for up to 512 pages.
//! The tables are made once, with the final map ([`prepare`]); at run time
//! only leaf descriptors in them change: written into invalid entries
//! (break-before-make: every unmap invalidates and flushes before the slot
//! can be used again), and after use set invalid, then `TLBI VAE2` per page
//! and `DSB NSH`.
//!
//! Local invalidation is enough: a slot's VA is only ever accessed by its
//! own CPU (the slot is chosen by MPIDR, the hyp runs with exceptions masked
//! and never moves between CPUs inside a call), so only that CPU's TLB can
//! hold an entry that is used for it. Another CPU may at most have cached
//! one speculatively from the shared tables; it never makes an access
//! through that VA, and its own slot has other entries.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Readable, MPIDR_EL1};

pub use hyp_core::mm::stage1::WINDOW_CPUS;
use hyp_core::mm::stage1::{self, Chunk, MapError, Perm, TableAlloc, Tables, PAGE, WINDOW_SLOT};

/// The level-2 table holding every CPU's block slot.
static L2: AtomicU64 = AtomicU64::new(0);
/// Each CPU's page-slot level-3 table.
static L3: [AtomicU64; WINDOW_CPUS] = [const { AtomicU64::new(0) }; WINDOW_CPUS];
/// A slot in use (catches nested use, a bug).
static BUSY: [AtomicBool; WINDOW_CPUS] = [const { AtomicBool::new(false) }; WINDOW_CPUS];

/// Makes the window's tables in `t` (the final map, before it is live).
pub fn prepare<A: TableAlloc>(t: &mut Tables, a: &mut A) -> Result<(), MapError> {
    for (cpu, l3) in L3.iter().enumerate() {
        L2.store(t.table_for(a, stage1::window_block_va(cpu), 2)?, Ordering::Relaxed);
        l3.store(t.table_for(a, stage1::window_pages_va(cpu), 3)?, Ordering::Relaxed);
    }
    Ok(())
}

/// This CPU's slot pair, held until dropped.
struct Slot {
    cpu: usize,
}

impl Slot {
    fn take() -> Slot {
        let cpu = (MPIDR_EL1.get() & 0xff) as usize % WINDOW_CPUS;
        if BUSY[cpu].swap(true, Ordering::Acquire) {
            panic!("window: nested use on CPU {cpu}");
        }
        Slot { cpu }
    }

    /// Entry `i` of a window table (pool pages: identity-mapped).
    fn entry(table: u64, i: usize) -> *mut u64 {
        (table as *mut u64).wrapping_add(i)
    }

    /// Writes a leaf into an invalid entry (break-before-make).
    fn set(p: *mut u64, desc: u64) {
        // SAFETY: `p` is an entry of this CPU's window tables (identity-
        // mapped pool pages); no other CPU writes them.
        unsafe {
            assert!(core::ptr::read_volatile(p) == 0, "window: entry still live");
            core::ptr::write_volatile(p, desc);
        }
    }

    fn clear(p: *mut u64) {
        // SAFETY: as in `set`.
        unsafe { core::ptr::write_volatile(p, 0) };
    }

    fn make_visible() {
        barrier::dsb(barrier::ISHST);
        barrier::isb(barrier::SY);
    }

    /// Invalidates this CPU's TLB entries for `n` pages from `va` (the
    /// entries are already invalid in the table).
    fn flush(va: u64, n: u64) {
        // Descriptor writes, and any cache maintenance by VA through the
        // slot, complete before the invalidation.
        barrier::dsb(barrier::ISH);
        for i in 0..n {
            // SAFETY: TLB maintenance only; the operand is VA[55:12].
            unsafe { core::arch::asm!("tlbi vae2, {}", in(reg) (va + i * PAGE) >> 12, options(nostack)) };
        }
        // SAFETY: barriers only.
        unsafe { core::arch::asm!("dsb nsh", "isb", options(nostack)) };
    }

    /// Maps `n` pages from `first` (page-aligned) at the page slot.
    fn map_pages(&self, first: u64, n: u64) -> u64 {
        let l3 = L3[self.cpu].load(Ordering::Relaxed);
        for i in 0..n {
            Self::set(Self::entry(l3, i as usize), stage1::leaf(first + i * PAGE, Perm::ReadWrite, 3));
        }
        Self::make_visible();
        stage1::window_pages_va(self.cpu)
    }

    fn unmap_pages(&self, n: u64) {
        let l3 = L3[self.cpu].load(Ordering::Relaxed);
        for i in 0..n {
            Self::clear(Self::entry(l3, i as usize));
        }
        Self::flush(stage1::window_pages_va(self.cpu), n);
    }

    fn block_entry(&self) -> *mut u64 {
        let va = stage1::window_block_va(self.cpu);
        Self::entry(L2.load(Ordering::Relaxed), ((va / stage1::SIZE_2M) % 512) as usize)
    }

    /// Maps the 2 MiB at `pa` (aligned) at the block slot.
    fn map_block(&self, pa: u64) -> u64 {
        Self::set(self.block_entry(), stage1::leaf(pa, Perm::ReadWrite, 2));
        Self::make_visible();
        stage1::window_block_va(self.cpu)
    }

    fn unmap_block(&self) {
        Self::clear(self.block_entry());
        Self::flush(stage1::window_block_va(self.cpu), 1);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        BUSY[self.cpu].store(false, Ordering::Release);
    }
}

/// Maps `[pa, pa + len)` contiguously at this CPU's page slot, calls `f`
/// with the VA of `pa`, unmaps, returns what `f` did. At most 512 pages
/// (any `len` up to 2 MiB - 4 KiB fits). `f` must not keep the VA, nor use
/// the window itself.
pub fn with_mapped<R>(pa: u64, len: u64, f: impl FnOnce(u64) -> R) -> R {
    let n = stage1::pages_spanned(pa, len);
    assert!(n <= WINDOW_SLOT / PAGE, "window: {len:#x} bytes at {pa:#x} at once");
    let slot = Slot::take();
    let va = slot.map_pages(pa & !(PAGE - 1), n) + (pa & (PAGE - 1));
    let r = f(va);
    slot.unmap_pages(n);
    r
}

/// Calls `f(va, len)` for each piece of `[pa, pa + len)`, mapped one at a
/// time: aligned 2 MiB as one block, the rest as pages (`stage1::chunks`).
pub fn for_each_chunk(pa: u64, len: u64, mut f: impl FnMut(u64, u64)) {
    for c in stage1::chunks(pa, len) {
        match c {
            Chunk::Block { pa } => {
                let slot = Slot::take();
                let va = slot.map_block(pa);
                f(va, stage1::SIZE_2M);
                slot.unmap_block();
            }
            Chunk::Pages { pa, len } => with_mapped(pa, len, |va| f(va, len)),
        }
    }
}
