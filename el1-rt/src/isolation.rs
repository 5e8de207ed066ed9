//! What the isolation tests' guest and host shim agree on: the page the
//! guest shares to show its patterns and readings, the exit kinds tried,
//! and the test-only host services (function IDs at the top of the
//! forwarded host-service range, private to these payloads).

use crate::sysregs::EntryRegs;

/// Host services of the isolation tests (forwarded as HYPERCALL exits).
pub mod svc {
    /// x1 = IPA of the [`super::Page`]: the guest's readings are in it.
    pub const READINGS: u32 = 0xc600_02f0;
    /// The hypercall exit under test (x1..x4 = 0).
    pub const EXIT: u32 = 0xc600_02f1;
    /// x1 = the exit kind just tried, x2 = 1 if the window ended as it
    /// should (spin: stopped by the host, not by its deadline).
    pub const KIND_DONE: u32 = 0xc600_02f2;
    /// The preemption guest is about to spin with interrupts masked.
    pub const SPIN_START: u32 = 0xc600_02f3;
    /// x1 = CNTVCT ticks spun: the spin ended by its own deadline.
    pub const SPIN_TIMEOUT: u32 = 0xc600_02f4;
}

/// Exit kinds of the `leaks` test, in the order the guest tries them.
pub mod kind {
    pub const MMIO_READ: u64 = 1;
    pub const MMIO_WRITE: u64 = 2;
    pub const HYPERCALL: u64 = 3;
    pub const ABORT: u64 = 4;
    pub const PREEMPT: u64 = 5;
    pub const POWER_OFF: u64 = 6;
    pub const ALL: [u64; 6] = [MMIO_READ, MMIO_WRITE, HYPERCALL, ABORT, PREEMPT, POWER_OFF];

    pub fn name(k: u64) -> &'static str {
        match k {
            MMIO_READ => "MMIO read",
            MMIO_WRITE => "MMIO write",
            HYPERCALL => "host-service hypercall",
            ABORT => "abort (IPA with no memory)",
            PREEMPT => "timer preemption",
            POWER_OFF => "power-off",
            _ => "?",
        }
    }
}

/// The IPA the MMIO exits touch (no device there: reads return the host's reply).
pub const MMIO_IPA: u64 = 0x0a00_0000;
/// An IPA with no memory behind it (beyond every test guest's RAM).
pub const NO_MEMORY_IPA: u64 = 0x8000_0000;
/// The value of the MMIO write exit (not a pattern: writes carry their value).
pub const MMIO_WRITE_VALUE: u64 = 0x5afe_0000_0000_0001;
pub const MAGIC: u64 = 0x5ea1_ed00_1eaf_0001;

/// Number of registers in [`crate::sysregs::REGS`].
pub const NREGS: usize = 62;

/// The guest's shared page(s): patterns it loaded, values it read back,
/// its readings at start, and the save area of its window code.
#[repr(C, align(4096))]
pub struct Page {
    pub magic: u64,
    /// The exit kind under test (0: none).
    pub kind: u64,
    /// Host → guest: stop spinning.
    pub stop: u64,
    /// x0 after the window (the MMIO read's value).
    pub result: u64,
    /// Window registers (sysregs::WINDOW order): value to load, value read back.
    pub win: [u64; 6],
    pub win_got: [u64; 6],
    /// SP_EL1 in the window.
    pub sp: u64,
    /// Bit n set: x<n> holds a pattern (else an operational value).
    pub gpr_pattern: u64,
    /// x0..x30 in the window.
    pub gpr: [u64; 32],
    /// V0..V31 (low, high), FPCR, FPSR in the window.
    pub v: [u64; 64],
    pub fpcr: u64,
    pub fpsr: u64,
    /// FPCR and FPSR read back after the window wrote them.
    pub fp_got: [u64; 2],
    /// V0..V31, FPCR, FPSR read first thing after the exit, back in the
    /// window: no FP/SIMD instruction ran since they were loaded, so with
    /// the hyp's lazy switch this read is the vCPU's first FP/SIMD access
    /// of its new run. They must be the window's values: the guest's own,
    /// not the host's (the host loaded its own patterns meanwhile).
    pub v_back: [u64; 64],
    pub fp_back: [u64; 2],
    /// The window code's save area.
    pub save: [u64; 32],
    /// Value of each register after the guest wrote its pattern.
    pub got: [u64; NREGS],
    /// Bit i: register i could be written (no exception) and read back.
    pub got_ok: u64,
    /// The guest's readings of every register at start (before writing).
    pub reads: [u64; NREGS],
    /// Bit i: reading register i took an exception (ESR in `read_esr[i]`).
    pub read_undef: u64,
    pub read_esr: [u64; NREGS],
    /// Entry state (start.S) of the guest.
    pub entry: EntryRegs,
}

/// Offsets used by the guest's window code.
pub mod off {
    use super::Page;
    use core::mem::offset_of;
    pub const RESULT: usize = offset_of!(Page, result);
    pub const WIN: usize = offset_of!(Page, win);
    pub const WIN_GOT: usize = offset_of!(Page, win_got);
    pub const SP: usize = offset_of!(Page, sp);
    pub const GPR: usize = offset_of!(Page, gpr);
    pub const V: usize = offset_of!(Page, v);
    pub const FPCR: usize = offset_of!(Page, fpcr);
    pub const V_BACK: usize = offset_of!(Page, v_back);
    pub const SAVE: usize = offset_of!(Page, save);
}

const _: () = assert!(core::mem::size_of::<Page>() <= 8192);
const _: () = assert!(off::V.is_multiple_of(16));
const _: () = assert!(off::V_BACK.is_multiple_of(16) && off::V_BACK < 4096);
const _: () = assert!(off::FPCR + 16 == core::mem::offset_of!(Page, fp_got));
const _: () = assert!(off::V_BACK + 512 == core::mem::offset_of!(Page, fp_back));

/// The guest's pattern for x<n> during exit `k`.
pub const fn gpr_pattern(k: u64, n: usize) -> u64 {
    crate::sysregs::GUEST_MARK | (0x6000 << 32) | (k << 8) | n as u64
}
/// The guest's pattern for half `h` (0 low, 1 high) of V<n> during exit `k`.
pub const fn v_pattern(k: u64, n: usize, h: usize) -> u64 {
    crate::sysregs::GUEST_MARK | ((0xf000 + h as u64) << 32) | (k << 8) | n as u64
}
/// The guest's SP_EL1 in the window of exit `k`.
pub const fn sp_pattern(k: u64) -> u64 {
    crate::sysregs::GUEST_MARK | (0x5e01 << 16) | (k << 8)
}
/// The guest's FPCR (AHP, DN, FZ, RMode = towards zero, FZ16) and FPSR
/// (NZCV, QC, IDC and the cumulative flags) patterns.
pub const FPCR_GUEST: u64 = 0x07c8_0000;
pub const FPSR_GUEST: u64 = 0xf800_009f;
/// The host's: FZ, RMode = towards +infinity; QC, IXC, IOC.
pub const FPCR_HOST: u64 = 0x0140_0000;
pub const FPSR_HOST: u64 = 0x0800_0011;
