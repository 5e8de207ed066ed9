//! Exceptions taken to the payload's EL1: a hook decides, else the payload
//! fails with the syndrome printed.

use core::sync::atomic::{AtomicUsize, Ordering};

#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    pub _pad: u64,
}

/// Synchronous exception details.
#[derive(Clone, Copy, Debug)]
pub struct Sync {
    pub esr: u64,
    pub far: u64,
}

/// Returns true when it handled the exception (the frame is resumed).
pub type Hook = fn(kind: u64, sync: Sync, frame: &mut Frame) -> bool;
static HOOK: AtomicUsize = AtomicUsize::new(0);

pub fn set_hook(h: Hook) {
    HOOK.store(h as usize, Ordering::SeqCst);
}

#[no_mangle]
extern "C" fn el1_trap(kind: u64, frame: &mut Frame) {
    let (esr, far): (u64, u64);
    // SAFETY: reading syndrome registers has no side effects.
    unsafe { core::arch::asm!("mrs {}, esr_el1", "mrs {}, far_el1", out(reg) esr, out(reg) far) };
    let h = HOOK.load(Ordering::SeqCst);
    if h != 0 {
        // SAFETY: only set_hook stores here, from a `Hook`.
        let h: Hook = unsafe { core::mem::transmute(h) };
        if h(kind, Sync { esr, far }, frame) {
            return;
        }
    }
    crate::console::emergency(format_args!(
        "unexpected exception kind {} ESR_EL1 {:#x} FAR_EL1 {:#x} ELR_EL1 {:#x}\n",
        kind, esr, far, frame.elr
    ));
    crate::smccc::fail(3)
}
