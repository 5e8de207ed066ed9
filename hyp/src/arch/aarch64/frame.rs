//! The Rust side of the exception vectors (vectors.S): the trap frame they
//! build, the short entries' call registers, what a handler returns to them
//! ([`Next`]), the first entry to a lower EL, the stage-2 fault address.

/// IPA and FAR of the stage-2 fault being handled.
pub fn fault_ipa() -> (u64, u64) {
    use aarch64_cpu::registers::{FAR_EL2, HPFAR_EL2};
    use tock_registers::interfaces::Readable;
    let far = FAR_EL2.get();
    (hyp_abi::esr::fault_ipa(HPFAR_EL2.get(), far), far)
}

/// Registers saved by the vectors (layout fixed by vectors.S).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    pub _pad: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 272);
const _: () = assert!(core::mem::align_of::<TrapFrame>() >= 8);

extern "C" {
    fn __hyp_copy_frame(dst: *mut TrapFrame, src: *const TrapFrame);
}

impl TrapFrame {
    /// `*self = *src`, with 17 pairs of loads and stores (vectors.S)
    /// instead of a call to memcpy: the world switch moves four frames.
    #[inline(always)]
    pub fn copy_from(&mut self, src: &TrapFrame) {
        // SAFETY: both are valid, distinct (one is &mut) TrapFrames of 272
        // bytes; the routine reads src and writes dst only, clobbering
        // x2-x9 (caller-saved, as for any call).
        unsafe { __hyp_copy_frame(self, src) }
    }
}

/// What the vectors restore once a handler returns (vectors.S,
/// `__hyp_next`).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Next(usize);

impl Next {
    /// The context that trapped goes on, from its frame.
    pub const RESUME: Next = Next(0);
    /// The guest that trapped has exited: the host goes on, from its frame
    /// above the guest's at the top of the EL2 stack.
    pub const HOST: Next = Next(1);

    /// Enter the guest vCPU whose registers are in `frame` (its context,
    /// off the stack), the host's frame staying on the stack.
    pub fn enter(frame: &TrapFrame) -> Next {
        Next(frame as *const TrapFrame as usize)
    }
}

/// The registers the short host-call entry saves (vectors.S): x0-x18, in
/// the first slots of a TrapFrame.
pub type CallRegs = [u64; 19];

impl TrapFrame {
    /// x0-x18, as the short host-call entry sees them.
    pub fn call_regs(&mut self) -> &mut CallRegs {
        let Some(x) = self.x.first_chunk_mut() else { unreachable!() };
        x
    }
}

pub const KIND_NAMES: [&str; 16] = [
    "sync from EL2t",
    "irq from EL2t",
    "fiq from EL2t",
    "serror from EL2t",
    "sync from EL2h",
    "irq from EL2h",
    "fiq from EL2h",
    "serror from EL2h",
    "sync from lower EL (AArch64)",
    "irq from lower EL (AArch64)",
    "fiq from lower EL (AArch64)",
    "serror from lower EL (AArch64)",
    "sync from lower EL (AArch32)",
    "irq from lower EL (AArch32)",
    "fiq from lower EL (AArch32)",
    "serror from lower EL (AArch32)",
];

extern "C" {
    fn __hyp_enter_lower(frame: *const TrapFrame, stack_top: u64) -> !;
}

/// Enters a lower EL with a copy of `frame` placed at `stack_top` (this
/// CPU's stack top, where later traps build their frames). Abandons the
/// current stack.
pub fn enter_lower(frame: &TrapFrame, stack_top: u64) -> ! {
    // SAFETY: frame is a fully initialised TrapFrame outside the stack; the
    // assembly copies it below stack_top, restores it and erets.
    unsafe { __hyp_enter_lower(frame, stack_top) }
}
