//! Access to system registers that `aarch64-cpu` does not describe.

/// Reads a system register by name.
#[macro_export]
macro_rules! read_sysreg {
    ($name:literal) => {{
        let v: u64;
        // SAFETY: reading a system register has no side effect at EL2.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack)) };
        v
    }};
}

/// Writes a system register by name.
#[macro_export]
macro_rules! write_sysreg {
    ($name:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: the caller writes an EL2-owned or saved/restored EL1
        // register with a value that keeps the hyp's own state intact.
        unsafe { core::arch::asm!(concat!("msr ", $name, ", {}"), in(reg) v, options(nomem, nostack)) };
    }};
}
