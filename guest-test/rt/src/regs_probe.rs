//! Every general register and NZCV around one instruction: a record is
//! loaded into them before it and stored from them after, so a test can
//! check that an exception taken to a higher EL (an HVC, a stage-2 abort)
//! gave back what it must. [`regs_probe!`](crate::regs_probe) makes the
//! routine for one instruction.

use core::mem::offset_of;

/// The registers around one instruction (layout fixed by the routines
/// [`regs_probe!`](crate::regs_probe) makes).
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct Regs {
    pub x: [u64; 31],
    pub nzcv_in: u64,
    pub nzcv_out: u64,
    _pad: u64,
}

/// Offset of `nzcv_in` (`nzcv_out` follows), for the routines.
pub const NZCV: usize = offset_of!(Regs, nzcv_in);
const _: () = assert!(NZCV == 248 && offset_of!(Regs, nzcv_out) == 256);

impl Regs {
    /// A distinct pattern per register (`tag` in the top 16 bits), and
    /// `nzcv` (bits 31:28) in NZCV.
    pub fn pattern(tag: u16, nzcv: u64) -> Regs {
        let mut x = [0; 31];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (tag as u64) << 48 | (i as u64) << 32 | (0x1111 * i as u64);
        }
        Regs { x, nzcv_in: nzcv, nzcv_out: 0, _pad: 0 }
    }

    /// Do the registers (but `except`) and NZCV hold what `before` loaded?
    /// `report(name, now, was)` for each that does not.
    pub fn intact(&self, before: &Regs, except: &[usize], mut report: impl FnMut(&str, u64, u64)) -> bool {
        let mut ok = true;
        for i in 0..31 {
            if !except.contains(&i) && self.x[i] != before.x[i] {
                report(&alloc::format!("x{i}"), self.x[i], before.x[i]);
                ok = false;
            }
        }
        if self.nzcv_out != before.nzcv_in {
            report("NZCV", self.nzcv_out, before.nzcv_in);
            ok = false;
        }
        ok
    }
}

/// `regs_probe!("name", "instruction")` defines the routine
/// `extern "C" fn name(p: *mut Regs)`: callee-saved registers on the stack,
/// every general register and NZCV loaded from `*p`, the instruction, every
/// register and NZCV stored back into `*p`, callee-saved registers
/// restored. A `blr` returns to the instruction after it (x30 is then the
/// link, not its pattern).
#[macro_export]
macro_rules! regs_probe {
    ($name:literal, $insn:literal) => {
        core::arch::global_asm!(
            concat!(".global ", $name),
            concat!($name, ":"),
            "    sub sp, sp, #112",
            "    stp x19, x20, [sp, #0]",
            "    stp x21, x22, [sp, #16]",
            "    stp x23, x24, [sp, #32]",
            "    stp x25, x26, [sp, #48]",
            "    stp x27, x28, [sp, #64]",
            "    stp x29, x30, [sp, #80]",
            "    str x0, [sp, #96]",
            "    ldr x1, [x0, #{nzcv}]",
            "    msr nzcv, x1",
            "    ldp x2, x3, [x0, #16]",
            "    ldp x4, x5, [x0, #32]",
            "    ldp x6, x7, [x0, #48]",
            "    ldp x8, x9, [x0, #64]",
            "    ldp x10, x11, [x0, #80]",
            "    ldp x12, x13, [x0, #96]",
            "    ldp x14, x15, [x0, #112]",
            "    ldp x16, x17, [x0, #128]",
            "    ldp x18, x19, [x0, #144]",
            "    ldp x20, x21, [x0, #160]",
            "    ldp x22, x23, [x0, #176]",
            "    ldp x24, x25, [x0, #192]",
            "    ldp x26, x27, [x0, #208]",
            "    ldp x28, x29, [x0, #224]",
            "    ldr x30, [x0, #240]",
            "    ldp x0, x1, [x0]",
            concat!("    ", $insn),
            "    stp x0, x1, [sp, #-16]!",
            "    mrs x1, nzcv",
            "    ldr x0, [sp, #(16 + 96)]",
            "    str x1, [x0, #({nzcv} + 8)]",
            "    stp x2, x3, [x0, #16]",
            "    stp x4, x5, [x0, #32]",
            "    stp x6, x7, [x0, #48]",
            "    stp x8, x9, [x0, #64]",
            "    stp x10, x11, [x0, #80]",
            "    stp x12, x13, [x0, #96]",
            "    stp x14, x15, [x0, #112]",
            "    stp x16, x17, [x0, #128]",
            "    stp x18, x19, [x0, #144]",
            "    stp x20, x21, [x0, #160]",
            "    stp x22, x23, [x0, #176]",
            "    stp x24, x25, [x0, #192]",
            "    stp x26, x27, [x0, #208]",
            "    stp x28, x29, [x0, #224]",
            "    str x30, [x0, #240]",
            "    ldp x2, x3, [sp], #16",
            "    stp x2, x3, [x0]",
            "    ldp x19, x20, [sp, #0]",
            "    ldp x21, x22, [sp, #16]",
            "    ldp x23, x24, [sp, #32]",
            "    ldp x25, x26, [sp, #48]",
            "    ldp x27, x28, [sp, #64]",
            "    ldp x29, x30, [sp, #80]",
            "    add sp, sp, #112",
            "    ret",
            nzcv = const $crate::regs_probe::NZCV,
        );
    };
}
