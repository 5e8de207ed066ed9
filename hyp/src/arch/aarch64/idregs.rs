//! Reading an ID register (op0 3, op1 0, CRn 0, CRm 1..7) by its encoding,
//! for the guests' trapped ID-register reads (HCR_EL2.TID3). Unallocated
//! encodings in this space are RAZ, architecturally.

macro_rules! id_reads {
    ($crm:expr, $op2:expr; $($c:literal),*) => {
        match ($crm, $op2) {
            $(
                ($c, 0) => id_reads!(@r $c, 0),
                ($c, 1) => id_reads!(@r $c, 1),
                ($c, 2) => id_reads!(@r $c, 2),
                ($c, 3) => id_reads!(@r $c, 3),
                ($c, 4) => id_reads!(@r $c, 4),
                ($c, 5) => id_reads!(@r $c, 5),
                ($c, 6) => id_reads!(@r $c, 6),
                ($c, 7) => id_reads!(@r $c, 7),
            )*
            _ => 0,
        }
    };
    (@r $c:literal, $o:literal) => {{
        let v: u64;
        // SAFETY: reads an ID register (no side effect); the whole ID space
        // is readable at EL2.
        unsafe {
            core::arch::asm!(concat!("mrs {}, s3_0_c0_c", stringify!($c), "_", stringify!($o)), out(reg) v, options(nomem, nostack))
        };
        v
    }};
}

/// The real value of ID register (CRm, op2).
pub fn read(crm: u8, op2: u8) -> u64 {
    id_reads!(crm, op2; 1, 2, 3, 4, 5, 6, 7)
}

/// `SMCCC_ARCH_FEATURES` of a Spectre workaround call (`ARCH_WORKAROUND_1/2/3`)
/// on this CPU, from its ID_AA64PFR0_EL1 and ID_AA64MMFR1_EL1
/// (`hyp_core::emul::spectre`); `None` for any other function ID.
pub fn workaround_answer(fid: u32) -> Option<i64> {
    hyp_core::emul::spectre::workaround_answer(fid, read(4, 0), read(7, 1))
}
