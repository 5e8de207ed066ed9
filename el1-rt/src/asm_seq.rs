//! Assembly sequences the register-probing routines share (the routines
//! of [`regs_probe!`](crate::regs_probe), the guest's and the host's
//! `leaks` windows). Each macro expands to one string literal, so it can
//! stand as a template line of `asm!`/`global_asm!`; the base register is
//! a string such as `"x0"` or `"sp"`.

/// Loads x2..x30 from `[base + 8 * n]`, then x0 and x1 from `[base]`
/// (so the base may be x0 or x1: it is overwritten last).
#[macro_export]
macro_rules! x_load_all {
    ($b:literal) => {
        concat!(
            "ldp x2, x3, [",
            $b,
            ", #16]\n",
            "ldp x4, x5, [",
            $b,
            ", #32]\n",
            "ldp x6, x7, [",
            $b,
            ", #48]\n",
            "ldp x8, x9, [",
            $b,
            ", #64]\n",
            "ldp x10, x11, [",
            $b,
            ", #80]\n",
            "ldp x12, x13, [",
            $b,
            ", #96]\n",
            "ldp x14, x15, [",
            $b,
            ", #112]\n",
            "ldp x16, x17, [",
            $b,
            ", #128]\n",
            "ldp x18, x19, [",
            $b,
            ", #144]\n",
            "ldp x20, x21, [",
            $b,
            ", #160]\n",
            "ldp x22, x23, [",
            $b,
            ", #176]\n",
            "ldp x24, x25, [",
            $b,
            ", #192]\n",
            "ldp x26, x27, [",
            $b,
            ", #208]\n",
            "ldp x28, x29, [",
            $b,
            ", #224]\n",
            "ldr x30, [",
            $b,
            ", #240]\n",
            "ldp x0, x1, [",
            $b,
            "]\n",
        )
    };
}

/// Stores x2..x30 to `[base + 8 * n]` (x0 and x1 are the caller's: one of
/// them holds the base).
#[macro_export]
macro_rules! x_store_x2_x30 {
    ($b:literal) => {
        concat!(
            "stp x2, x3, [",
            $b,
            ", #16]\n",
            "stp x4, x5, [",
            $b,
            ", #32]\n",
            "stp x6, x7, [",
            $b,
            ", #48]\n",
            "stp x8, x9, [",
            $b,
            ", #64]\n",
            "stp x10, x11, [",
            $b,
            ", #80]\n",
            "stp x12, x13, [",
            $b,
            ", #96]\n",
            "stp x14, x15, [",
            $b,
            ", #112]\n",
            "stp x16, x17, [",
            $b,
            ", #128]\n",
            "stp x18, x19, [",
            $b,
            ", #144]\n",
            "stp x20, x21, [",
            $b,
            ", #160]\n",
            "stp x22, x23, [",
            $b,
            ", #176]\n",
            "stp x24, x25, [",
            $b,
            ", #192]\n",
            "stp x26, x27, [",
            $b,
            ", #208]\n",
            "stp x28, x29, [",
            $b,
            ", #224]\n",
            "str x30, [",
            $b,
            ", #240]\n",
        )
    };
}

/// Loads q0..q31 from `[ptr]` onwards (512 bytes); `ptr` ends past them.
#[macro_export]
macro_rules! q_load_all {
    ($p:literal) => {
        concat!(
            "ldp q0, q1, [",
            $p,
            "], #32\n",
            "ldp q2, q3, [",
            $p,
            "], #32\n",
            "ldp q4, q5, [",
            $p,
            "], #32\n",
            "ldp q6, q7, [",
            $p,
            "], #32\n",
            "ldp q8, q9, [",
            $p,
            "], #32\n",
            "ldp q10, q11, [",
            $p,
            "], #32\n",
            "ldp q12, q13, [",
            $p,
            "], #32\n",
            "ldp q14, q15, [",
            $p,
            "], #32\n",
            "ldp q16, q17, [",
            $p,
            "], #32\n",
            "ldp q18, q19, [",
            $p,
            "], #32\n",
            "ldp q20, q21, [",
            $p,
            "], #32\n",
            "ldp q22, q23, [",
            $p,
            "], #32\n",
            "ldp q24, q25, [",
            $p,
            "], #32\n",
            "ldp q26, q27, [",
            $p,
            "], #32\n",
            "ldp q28, q29, [",
            $p,
            "], #32\n",
            "ldp q30, q31, [",
            $p,
            "], #32\n",
        )
    };
}

/// Stores q0..q31 to `[ptr]` onwards (512 bytes); `ptr` ends past them.
#[macro_export]
macro_rules! q_store_all {
    ($p:literal) => {
        concat!(
            "stp q0, q1, [",
            $p,
            "], #32\n",
            "stp q2, q3, [",
            $p,
            "], #32\n",
            "stp q4, q5, [",
            $p,
            "], #32\n",
            "stp q6, q7, [",
            $p,
            "], #32\n",
            "stp q8, q9, [",
            $p,
            "], #32\n",
            "stp q10, q11, [",
            $p,
            "], #32\n",
            "stp q12, q13, [",
            $p,
            "], #32\n",
            "stp q14, q15, [",
            $p,
            "], #32\n",
            "stp q16, q17, [",
            $p,
            "], #32\n",
            "stp q18, q19, [",
            $p,
            "], #32\n",
            "stp q20, q21, [",
            $p,
            "], #32\n",
            "stp q22, q23, [",
            $p,
            "], #32\n",
            "stp q24, q25, [",
            $p,
            "], #32\n",
            "stp q26, q27, [",
            $p,
            "], #32\n",
            "stp q28, q29, [",
            $p,
            "], #32\n",
            "stp q30, q31, [",
            $p,
            "], #32\n",
        )
    };
}

/// Saves the callee-saved x19..x30 to `[base, #0..#88]`.
#[macro_export]
macro_rules! callee_save {
    ($b:literal) => {
        concat!(
            "stp x19, x20, [",
            $b,
            ", #0]\n",
            "stp x21, x22, [",
            $b,
            ", #16]\n",
            "stp x23, x24, [",
            $b,
            ", #32]\n",
            "stp x25, x26, [",
            $b,
            ", #48]\n",
            "stp x27, x28, [",
            $b,
            ", #64]\n",
            "stp x29, x30, [",
            $b,
            ", #80]\n",
        )
    };
}

/// Restores x19..x30 from `[base, #0..#88]` ([`callee_save!`]'s layout).
#[macro_export]
macro_rules! callee_restore {
    ($b:literal) => {
        concat!(
            "ldp x19, x20, [",
            $b,
            ", #0]\n",
            "ldp x21, x22, [",
            $b,
            ", #16]\n",
            "ldp x23, x24, [",
            $b,
            ", #32]\n",
            "ldp x25, x26, [",
            $b,
            ", #48]\n",
            "ldp x27, x28, [",
            $b,
            ", #64]\n",
            "ldp x29, x30, [",
            $b,
            ", #80]\n",
        )
    };
}
