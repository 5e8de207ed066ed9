//! System registers that `aarch64-cpu` does not describe, as typed
//! registers with the same `Readable`/`Writeable` interface, so the rest of
//! the hyp names every register by type, never by a string.
//!
//! Registers whose name the assembler only accepts with an architecture
//! extension enabled (SVE, SME, RAS, GICv3 EL2) are spelled with their
//! generic `S<op0>_<op1>_C<n>_C<m>_<op2>` encoding.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;

/// Defines `pub const $name: $ty` for a 64-bit system register with
/// `Readable` and `Writeable` (or only `Readable` with `ro`).
macro_rules! sysreg {
    ($(#[$m:meta])* $name:ident, $ty:ident, $asm:literal, $long:ty) => {
        $(#[$m])*
        pub struct $ty;
        impl Readable for $ty {
            type T = u64;
            type R = $long;
            #[inline]
            fn get(&self) -> u64 {
                let v: u64;
                // SAFETY: reading a system register has no side effect; the
                // hyp only names registers the CPU implements (callers check
                // the feature first where one is needed).
                unsafe { core::arch::asm!(concat!("mrs {}, ", $asm), out(reg) v, options(nomem, nostack)) };
                v
            }
        }
        impl Writeable for $ty {
            type T = u64;
            type R = $long;
            #[inline]
            fn set(&self, v: u64) {
                // SAFETY: the hyp writes EL2-owned registers, or lower-EL
                // registers that belong to the context being loaded.
                unsafe { core::arch::asm!(concat!("msr ", $asm, ", {}"), in(reg) v, options(nomem, nostack)) };
            }
        }
        $(#[$m])*
        pub const $name: $ty = $ty;
    };
    ($(#[$m:meta])* $name:ident, $ty:ident, $asm:literal) => {
        sysreg!($(#[$m])* $name, $ty, $asm, ());
    };
}

// EL1/EL0 state without an `aarch64-cpu` type.
sysreg!(AMAIR_EL1, AmairEl1, "amair_el1");
sysreg!(CONTEXTIDR_EL1, ContextidrEl1, "contextidr_el1");
sysreg!(AFSR0_EL1, Afsr0El1, "afsr0_el1");
sysreg!(AFSR1_EL1, Afsr1El1, "afsr1_el1");
sysreg!(MDSCR_EL1, MdscrEl1, "mdscr_el1");
sysreg!(ID_AA64ISAR2_EL1, IdAa64isar2El1, "s3_0_c0_c6_2");
sysreg!(CTR_EL0, CtrEl0, "ctr_el0");
// Interrupt status (bit 8: an SError is pending) and the deferred-SError
// record ESB fills (FEAT_RAS), by encoding.
sysreg!(ISR_EL1, IsrEl1, "s3_0_c12_c1_0");
sysreg!(DISR_EL1, DisrEl1, "s3_0_c12_c1_1");
sysreg!(DCZID_EL0, DczidEl0, "dczid_el0");
// SME's thread pointer (exists when ID_AA64PFR1_EL1.SME != 0).
sysreg!(TPIDR2_EL0, Tpidr2El0, "s3_3_c13_c0_5");
// SME's streaming-mode and ZA enables (exists when ID_AA64PFR1_EL1.SME != 0).
sysreg!(SVCR, Svcr, "s3_3_c4_c2_2");
sysreg!(PMCR_EL0, PmcrEl0, "pmcr_el0");
sysreg!(PMCNTENSET_EL0, PmcntensetEl0, "pmcntenset_el0");
sysreg!(PMCNTENCLR_EL0, PmcntenclrEl0, "pmcntenclr_el0");
sysreg!(ICC_PMR_EL1, IccPmrEl1, "s3_0_c4_c6_0");
sysreg!(ICC_IGRPEN1_EL1, IccIgrpen1El1, "s3_0_c12_c12_7");

// Pointer-authentication keys (FEAT_PAuth), by encoding: the assembler
// only knows their names with the extension enabled.
sysreg!(APIAKEYLO_EL1, ApiaKeyLoEl1, "s3_0_c2_c1_0");
sysreg!(APIAKEYHI_EL1, ApiaKeyHiEl1, "s3_0_c2_c1_1");
sysreg!(APIBKEYLO_EL1, ApibKeyLoEl1, "s3_0_c2_c1_2");
sysreg!(APIBKEYHI_EL1, ApibKeyHiEl1, "s3_0_c2_c1_3");
sysreg!(APDAKEYLO_EL1, ApdaKeyLoEl1, "s3_0_c2_c2_0");
sysreg!(APDAKEYHI_EL1, ApdaKeyHiEl1, "s3_0_c2_c2_1");
sysreg!(APDBKEYLO_EL1, ApdbKeyLoEl1, "s3_0_c2_c2_2");
sysreg!(APDBKEYHI_EL1, ApdbKeyHiEl1, "s3_0_c2_c2_3");
sysreg!(APGAKEYLO_EL1, ApgaKeyLoEl1, "s3_0_c2_c3_0");
sysreg!(APGAKEYHI_EL1, ApgaKeyHiEl1, "s3_0_c2_c3_1");

// EL2 registers (the GICv3 ICH_*, CPTR_EL2 and CNTHP_CTL_EL2 come from
// `aarch64-cpu`; CPTR_EL2's fields from [`CPTR`] below).
sysreg!(VPIDR_EL2, VpidrEl2, "vpidr_el2");
// Fine-grained traps (FEAT_FGT: ID_AA64MMFR0_EL1.FGT != 0) and the extended
// hypervisor controls (FEAT_HCX: ID_AA64MMFR1_EL1.HCX != 0), by encoding.
sysreg!(HFGRTR_EL2, HfgrtrEl2, "s3_4_c1_c1_4");
sysreg!(HFGWTR_EL2, HfgwtrEl2, "s3_4_c1_c1_5");
sysreg!(HFGITR_EL2, HfgitrEl2, "s3_4_c1_c1_6");
sysreg!(HDFGRTR_EL2, HdfgrtrEl2, "s3_4_c3_c1_4");
sysreg!(HDFGWTR_EL2, HdfgwtrEl2, "s3_4_c3_c1_5");
sysreg!(HCRX_EL2, HcrxEl2, "s3_4_c1_c2_2");
sysreg!(VMPIDR_EL2, VmpidrEl2, "vmpidr_el2");
// Virtual DISR: what a guest reads as DISR_EL1 while HCR_EL2.AMO is set
// (exists with FEAT_RAS).
sysreg!(VDISR_EL2, VdisrEl2, "s3_4_c12_c1_1");
// EL2 physical timer: the hyp's preemption timer.
sysreg!(CNTHP_CVAL_EL2, CnthpCvalEl2, "cnthp_cval_el2");
sysreg!(MDCR_EL2, MdcrEl2, "mdcr_el2", MDCR::Register);
// FEAT_TRF: the EL1&0 trace filter (the host's; 0 while a guest runs).
sysreg!(TRFCR_EL1, TrfcrEl1, "s3_0_c1_c2_1");
// FEAT_MPAM: EL2's partition and the traps of the EL1/EL0 MPAM registers;
// MPAMIDR_EL1 says whether MPAMHCR_EL2 exists.
sysreg!(MPAM2_EL2, Mpam2El2, "s3_4_c10_c5_0", MPAM2::Register);
sysreg!(MPAMIDR_EL1, MpamidrEl1, "s3_0_c10_c4_4", MPAMIDR::Register);
sysreg!(MPAMHCR_EL2, MpamhcrEl2, "s3_4_c10_c4_0");

register_bitfields! {u64,
    /// MDCR_EL2 (Arm ARM D19.2): debug and PMU traps of EL1/EL0.
    pub MDCR [
        /// Event counters EL1 and EL0 may use.
        HPMN OFFSET(0) NUMBITS(5) [],
        /// Trap PMCR_EL0 accesses.
        TPMCR OFFSET(5) NUMBITS(1) [],
        /// Trap all PMU register accesses.
        TPM OFFSET(6) NUMBITS(1) [],
        /// Trap debug register accesses (DBGB*, DBGW*, MDSCR_EL1, ...).
        TDA OFFSET(9) NUMBITS(1) [],
        /// Trap OS-lock and power-down register accesses.
        TDOSA OFFSET(10) NUMBITS(1) [],
        /// Trap debug ROM address register accesses.
        TDRA OFFSET(11) NUMBITS(1) [],
        /// Trap statistical profiling register accesses.
        TPMS OFFSET(14) NUMBITS(1) [],
        /// Prohibit event counting at EL2.
        HPMD OFFSET(17) NUMBITS(1) [],
        /// Trap trace filter register accesses.
        TTRF OFFSET(19) NUMBITS(1) [],
        /// Prohibit cycle counting at EL2 (FEAT_PMUv3p5).
        HCCD OFFSET(23) NUMBITS(1) []
    ],
    /// CPTR_EL2 with HCR_EL2.E2H = 0 (Arm ARM D19.2).
    pub CPTR [
        /// Trap SVE (ZCR_EL1 and SVE instructions).
        TZ OFFSET(8) NUMBITS(1) [],
        /// Trap FP/SIMD.
        TFP OFFSET(10) NUMBITS(1) [],
        /// Trap SME (SMCR_EL1, SVCR, SME instructions); RES1 without SME.
        TSM OFFSET(12) NUMBITS(1) [],
        /// Trap trace register accesses.
        TTA OFFSET(20) NUMBITS(1) [],
        /// Trap activity monitor accesses.
        TAM OFFSET(30) NUMBITS(1) [],
        /// Trap CPACR_EL1 accesses.
        TCPAC OFFSET(31) NUMBITS(1) []
    ]
}

register_bitfields! {u64,
    /// MPAM2_EL2 (FEAT_MPAM): the traps of lower-EL MPAM accesses (the
    /// partition fields stay 0: EL2 uses the default partition).
    pub MPAM2 [
        /// Trap EL1 accesses to MPAM1_EL1 (and MPAMSM_EL1).
        TRAPMPAM1EL1 OFFSET(48) NUMBITS(1) [],
        /// Trap EL1 accesses to MPAM0_EL1.
        TRAPMPAM0EL1 OFFSET(49) NUMBITS(1) [],
        /// Trap EL1 reads of MPAMIDR_EL1 (MPAM v0.1/v1.1; RES0 before).
        TIDR OFFSET(58) NUMBITS(1) []
    ],
    /// MPAMIDR_EL1: the MPAM implementation.
    pub MPAMIDR [
        /// MPAMHCR_EL2 is implemented.
        HAS_HCR OFFSET(17) NUMBITS(1) []
    ]
}

register_bitfields! {u64,
    /// The HCR_EL2 fields `aarch64-cpu` leaves out.
    pub HCR_EXTRA [
        /// Trap EL0/EL1 WFI.
        TWI OFFSET(13) NUMBITS(1) [],
        /// Trap EL0/EL1 WFE.
        TWE OFFSET(14) NUMBITS(1) []
    ]
}

/// CPTR_EL2 bits that are RES1 with E2H = 0: 0-7, 9, 13.
pub const CPTR_EL2_RES1: u64 = 0x22ff;
