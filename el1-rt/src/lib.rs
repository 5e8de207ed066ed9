//! Runtime for EL1 bare-metal payloads: the host shim and guest tests.
//!
//! Provides start-up (Image header, self-relocation, stack, bss), an
//! identity-mapped MMU, exception vectors with a payload hook, the PL011
//! console named by the DTB, SMCCC calls, and power-off; the register
//! table and shared page of the isolation tests.
#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod asm_seq;
pub mod bench;
pub mod console;
pub mod gic;
pub mod image;
pub mod isolation;
pub mod mmu;
pub mod pmu;
pub mod probe;
pub mod rand;
pub mod regs_probe;
pub mod smccc;
pub mod smp;
pub mod sysregs;
pub mod trap;

use core::sync::atomic::{AtomicU64, Ordering};

use buddy_system_allocator::LockedHeap;

core::arch::global_asm!(include_str!("start.S"));
core::arch::global_asm!(include_str!("vectors.S"));

pub use hyp_abi as abi;

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();
const HEAP_SIZE: usize = 512 * 1024;
#[repr(align(4096))]
struct HeapArea(#[allow(dead_code)] [u8; HEAP_SIZE]);
static mut HEAP_AREA: HeapArea = HeapArea([0; HEAP_SIZE]);

/// What the payload gets at start.
pub struct BootInfo {
    pub dtb: u64,
    pub fdt: fdt::Fdt<'static>,
}

extern "Rust" {
    /// The payload's entry point.
    fn el1_main(info: BootInfo) -> !;
}

static DTB: AtomicU64 = AtomicU64::new(0);

#[no_mangle]
extern "C" fn el1_rt_start(dtb: u64) -> ! {
    mmu::enable();
    // SAFETY: the heap area is used only by the allocator from here on.
    unsafe {
        let area = core::ptr::addr_of_mut!(HEAP_AREA);
        HEAP.lock().init(area as usize, HEAP_SIZE);
    }
    DTB.store(dtb, Ordering::Relaxed);
    // SAFETY: x0 at entry is the DTB, in RAM the identity map covers.
    let fdt = match unsafe { fdt::Fdt::from_ptr(dtb as *const u8) } {
        Ok(f) => f,
        Err(_) => smccc::psci_system_off_any(),
    };
    console::init(&fdt);
    smccc::init(&fdt);
    // SAFETY: provided by the payload crate.
    unsafe { el1_main(BootInfo { dtb, fdt }) }
}

/// Current exception level (1 for payloads).
pub fn current_el() -> u64 {
    let el: u64;
    // SAFETY: reading CurrentEL has no side effects.
    unsafe { core::arch::asm!("mrs {}, CurrentEL", out(reg) el) };
    (el >> 2) & 3
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::emergency(format_args!("PANIC: {}\n", info));
    smccc::fail(101)
}
