//! The Rust side of the exception vectors.

use aarch64_cpu::registers::Readable;
use hyp::esr::Esr;

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

const KIND_NAMES: [&str; 16] = [
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

#[no_mangle]
extern "C" fn hyp_trap(kind: u64, frame: &mut TrapFrame) {
    match kind {
        8 => crate::exit::handle_sync(frame),
        9 | 10 => crate::exit::handle_irq(frame),
        _ => fatal(kind, frame),
    }
}

/// An exception the hyp cannot have caused legitimately: print everything
/// and stop the machine with a failure status.
fn fatal(kind: u64, frame: &TrapFrame) -> ! {
    let esr = Esr(aarch64_cpu::registers::ESR_EL2.get());
    let far = crate::read_sysreg!("far_el2");
    log::error!("unexpected exception: {}", KIND_NAMES[(kind & 15) as usize]);
    log::error!("  ESR_EL2 {:#018x}: {}", esr.0, esr);
    log::error!("  FAR_EL2 {:#018x}  ELR_EL2 {:#018x}  SPSR_EL2 {:#x}", far, frame.elr, frame.spsr);
    for (i, pair) in frame.x.chunks(4).enumerate() {
        let mut line = Line::new();
        for (j, v) in pair.iter().enumerate() {
            use core::fmt::Write;
            let _ = write!(line, "x{:<2} {:#018x}  ", i * 4 + j, v);
        }
        log::error!("  {}", line.as_str());
    }
    crate::shutdown(crate::Status::Fatal)
}

/// A small fixed buffer for formatting without the heap.
pub struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Line {
    pub const fn new() -> Line {
        Line { buf: [0; 160], len: 0 }
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
