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
            $crate::callee_save!("sp"),
            "    str x0, [sp, #96]",
            "    ldr x1, [x0, #{nzcv}]",
            "    msr nzcv, x1",
            $crate::x_load_all!("x0"),
            concat!("    ", $insn),
            "    stp x0, x1, [sp, #-16]!",
            "    mrs x1, nzcv",
            "    ldr x0, [sp, #(16 + 96)]",
            "    str x1, [x0, #({nzcv} + 8)]",
            $crate::x_store_x2_x30!("x0"),
            "    ldp x2, x3, [sp], #16",
            "    stp x2, x3, [x0]",
            $crate::callee_restore!("sp"),
            "    add sp, sp, #112",
            "    ret",
            nzcv = const $crate::regs_probe::NZCV,
        );
    };
}
