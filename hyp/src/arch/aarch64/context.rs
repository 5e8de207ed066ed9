//! The state of a lower-EL context (the host on a CPU, or a guest vCPU):
//! one type for both, and one table of the system registers that are
//! switched between contexts. A register is added to the switch in exactly
//! one place: [`regs!`] below. Everything a context can reach that is not in
//! this table is trapped by the EL2 controls (`el1.rs`) or is safe to share;
//! `docs/isolation.md` lists the decision for every register.

use aarch64_cpu::registers::*;
use tock_registers::interfaces::{Readable, Writeable};

use super::fpsimd::FpRegs;
use super::frame::TrapFrame;
use super::sysreg as sr;

/// SPSR_EL2 for a first entry at EL1h with D, A, I, F masked (the host's
/// boot, a vCPU's reset).
pub const SPSR_EL1H_DAIF_MASKED: u64 = 0x3c5;

/// Optional architecture features whose registers are switched only when
/// the CPU has them (accessing a missing register is UNDEF at EL2).
pub mod feat {
    /// Always present.
    pub const BASE: u32 = 1 << 0;
    /// FEAT_PAuth: the ten key registers.
    pub const PAUTH: u32 = 1 << 1;
    /// FEAT_SME: TPIDR2_EL0.
    pub const SME: u32 = 1 << 2;
    /// FEAT_RAS: VDISR_EL2 (a guest's DISR_EL1).
    pub const RAS: u32 = 1 << 3;
    /// List register 0 (with [`VGIC`]). (The AArch32 EL1 registers,
    /// DACR32_EL2, IFSR32_EL2 and FPEXC32_EL2, are not switched: no context
    /// reaches them, every EL1 runs in AArch64 (HCR_EL2.RW);
    /// docs/isolation.md.)
    pub const VGIC_LR: u32 = 1 << 4;
    /// GICv3 virtual CPU interface: ICH_VMCR_EL2 and the first active-priority registers.
    pub const VGIC: u32 = 1 << 5;
    /// A second pair of active-priority registers (6+ priority bits).
    pub const VGIC_AP1: u32 = 1 << 6;
    /// Third and fourth pairs (7 priority bits).
    pub const VGIC_AP23: u32 = 1 << 7;
    /// SVE (trapped for guests; recorded for the ID-register view).
    pub const SVE: u32 = 1 << 8;
    /// A PMUv3 the host may program (ID_AA64DFR0_EL1.PMUVer 1..14).
    pub const PMU: u32 = 1 << 9;
    /// List registers used (ICH_VTR_EL2.ListRegs + 1, rounded down to a
    /// power of two): LR1 with 2 or more, LR2-3 with 4, LR4-7 with 8,
    /// LR8-15 with 16 (LR0: [`VGIC_LR`]).
    pub const VGIC_LR2: u32 = 1 << 10;
    pub const VGIC_LR4: u32 = 1 << 11;
    pub const VGIC_LR8: u32 = 1 << 12;
    pub const VGIC_LR16: u32 = 1 << 13;
    /// FEAT_TRF (ID_AA64DFR0_EL1.TraceFilt): TRFCR_EL1, the host's trace
    /// filter, set to 0 (no trace) while a guest runs (`vm::switch`);
    /// guests' accesses trap (MDCR_EL2.TTRF) and are UNDEF.
    pub const TRF: u32 = 1 << 14;
    /// FEAT_MPAM (ID_AA64PFR0_EL1.MPAM or ID_AA64PFR1_EL1.MPAM_frac):
    /// MPAM2_EL2 traps guests' MPAM accesses (`el1.rs`).
    pub const MPAM: u32 = 1 << 15;
    /// Every feature above: one bit each.
    pub const ALL: [u32; 16] = [
        BASE, PAUTH, SME, RAS, VGIC_LR, VGIC, VGIC_AP1, VGIC_AP23, SVE, PMU, VGIC_LR2, VGIC_LR4, VGIC_LR8, VGIC_LR16,
        TRF, MPAM,
    ];
    const _: () = {
        let mut seen = 0;
        let mut i = 0;
        while i < ALL.len() {
            assert!(ALL[i].count_ones() == 1 && seen & ALL[i] == 0, "feature bits must be distinct");
            seen |= ALL[i];
            i += 1;
        }
    };
    /// Registers a guest reaches only through EL2 (the virtual GIC and
    /// VDISR): switched into guests only; the host never sees them.
    pub const GUEST_ONLY: u32 = RAS | VGIC | VGIC_AP1 | VGIC_AP23 | LRS;
    /// The list registers the CPU has (and the hyp uses).
    pub const LRS: u32 = VGIC_LR | VGIC_LR2 | VGIC_LR4 | VGIC_LR8 | VGIC_LR16;
    /// Registers switched only in the runs that need them. The PAuth keys:
    /// for a vCPU that has used them, trapped for it until then
    /// (HCR_EL2.API/APK), loaded by that trap, switched at every entry and
    /// exit from then on (`vm::switch`). The list registers: only in a run
    /// that has an interrupt in one (some list register valid at the
    /// entry, or one written while it runs); the CPU's are all zero
    /// otherwise (cleared at boot and after every run that had them), which
    /// is what a vCPU with every list register empty would load.
    pub const LAZY: u32 = PAUTH | LRS;
}

static FEATURES: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(feat::BASE);

/// The optional features of this CPU (all CPUs of the machine are alike).
#[inline(always)]
pub fn features() -> u32 {
    FEATURES.load(core::sync::atomic::Ordering::Relaxed)
}

fn field(v: u64, shift: u32) -> u64 {
    (v >> shift) & 0xf
}

/// Reads the ID registers once, at boot, on the boot CPU.
pub fn detect_features() {
    let mut f = feat::BASE;
    let isar1 = ID_AA64ISAR1_EL1.get();
    let isar2 = sr::ID_AA64ISAR2_EL1.get();
    // APA [7:4], API [11:8], GPA [27:24], GPI [31:28]; ISAR2 GPA3 [11:8], APA3 [15:12].
    if field(isar1, 4) | field(isar1, 8) | field(isar1, 24) | field(isar1, 28) | field(isar2, 8) | field(isar2, 12) != 0
    {
        f |= feat::PAUTH;
    }
    let pfr0 = ID_AA64PFR0_EL1.get();
    let pfr1 = ID_AA64PFR1_EL1.get();
    if field(pfr1, 24) != 0 {
        f |= feat::SME;
    }
    if field(pfr0, 28) != 0 {
        f |= feat::RAS;
    }
    if field(pfr0, 32) != 0 {
        f |= feat::SVE;
    }
    let pmuver = field(ID_AA64DFR0_EL1.get(), 8);
    if pmuver != 0 && pmuver != 0xf {
        f |= feat::PMU;
    }
    if ID_AA64DFR0_EL1.read(ID_AA64DFR0_EL1::TraceFilt) != 0 {
        f |= feat::TRF;
    }
    // MPAM [43:40]; MPAM_frac [19:16] (v0.1 has MPAM 0).
    if field(pfr0, 40) != 0 || field(pfr1, 16) != 0 {
        f |= feat::MPAM;
    }
    // GIC system registers implemented: PFR0.GIC [27:24].
    if field(pfr0, 24) != 0 {
        f |= feat::VGIC | feat::VGIC_LR;
        // ICH_VTR_EL2.PREbits [28:26] = preemption bits - 1: 5 → 1 APR per
        // group, 6 → 2, 7 → 4.
        let pre = ((ICH_VTR_EL2.get() >> 26) & 7) + 1;
        if pre >= 6 {
            f |= feat::VGIC_AP1;
        }
        if pre >= 7 {
            f |= feat::VGIC_AP23;
        }
        let lrs = ICH_VTR_EL2.read(ICH_VTR_EL2::ListRegs) + 1;
        for (n, bit) in [(2, feat::VGIC_LR2), (4, feat::VGIC_LR4), (8, feat::VGIC_LR8), (16, feat::VGIC_LR16)] {
            if lrs >= n {
                f |= bit;
            }
        }
    }
    log::info!(
        "CPU: FEAT_TRF {}, FEAT_MPAM {}, CSV2 {}, ECBHB {}",
        f & feat::TRF != 0,
        f & feat::MPAM != 0,
        field(pfr0, 56),
        field(ID_AA64MMFR1_EL1.get(), 60)
    );
    FEATURES.store(f, core::sync::atomic::Ordering::Relaxed);
    for (slot, v) in MASKS.iter().zip([f & !feat::LAZY, f & !feat::LAZY, f & feat::LAZY]) {
        slot.store(v, core::sync::atomic::Ordering::Relaxed);
    }
    NR_LRS.store(count_lrs(), core::sync::atomic::Ordering::Relaxed);
}

/// [`nr_lrs`], computed once by [`detect_features`] (read on every entry
/// and exit).
static NR_LRS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// List registers this CPU has that the hyp uses (0 without a virtual GIC).
#[inline(always)]
pub fn nr_lrs() -> usize {
    NR_LRS.load(core::sync::atomic::Ordering::Relaxed)
}

fn count_lrs() -> usize {
    let f = features();
    if f & feat::VGIC == 0 {
        return 0;
    }
    [(feat::VGIC_LR16, 16), (feat::VGIC_LR8, 8), (feat::VGIC_LR4, 4), (feat::VGIC_LR2, 2)]
        .iter()
        .find(|(b, _)| f & b != 0)
        .map_or(1, |&(_, n)| n)
}

/// SCTLR_EL1 RES1 bits (11, 20, 22, 23, 28, 29) with the MMU and caches off,
/// as the Linux boot protocol wants.
pub const SCTLR_EL1_RESET: u64 = 0x30d0_0800;

/// Saves the registers `$reg` into `$r[R::$idx]` two at a time: both read,
/// then both stored, so that the stores are adjacent and become one store
/// pair (a system-register read is ordered with memory accesses: reading
/// and storing one at a time leaves single stores).
macro_rules! save_pairs {
    ($r:ident;) => {};
    ($r:ident; $a:ident $ra:expr) => {
        $r[R::$a as usize] = $ra.get();
    };
    ($r:ident; $a:ident $ra:expr, $b:ident $rb:expr $(, $idx:ident $reg:expr)*) => {
        let (va, vb) = ($ra.get(), $rb.get());
        $r[R::$a as usize] = va;
        $r[R::$b as usize] = vb;
        save_pairs!($r; $($idx $reg),*);
    };
}

/// The register table, in groups of one feature each: `FEATURE => {
/// Index: REGISTER = reset value; ... }`. Generates the index enum [`R`],
/// the reset values and the straight-line save and restore code, with one
/// feature test per group (none for [`feat::BASE`]).
macro_rules! regs {
    ($($gfeat:expr => { $($idx:ident : $reg:expr => $reset:expr;)* })*) => {
        /// Index of a switched system register in [`Context::sys`].
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum R { $($($idx,)*)* }

        /// Number of switched system registers.
        pub const NR: usize = [$($(R::$idx,)*)*].len();

        /// Values of a context that has not run yet.
        pub const RESET: [u64; NR] = [$($($reset,)*)*];

        // Registers every CPU has (feature BASE) are moved without a test:
        // the condition folds to true at compile time.
        #[inline(always)]
        fn save_regs(r: &mut [u64; NR], f: u32) {
            $( if $gfeat == feat::BASE || $gfeat & f != 0 {
                save_pairs!(r; $($idx $reg),*);
            } )*
        }

        #[inline(always)]
        fn restore_regs(r: &[u64; NR], f: u32) {
            $( if $gfeat == feat::BASE || $gfeat & f != 0 {
                $( $reg.set(r[R::$idx as usize]); )*
            } )*
        }

        // Only the registers of one feature (a constant: the rest folds
        // away).
        #[inline(always)]
        fn save_group(r: &mut [u64; NR], only: u32) {
            $( if $gfeat == only {
                save_pairs!(r; $($idx $reg),*);
            } )*
        }

        #[inline(always)]
        fn restore_group(r: &[u64; NR], only: u32) {
            $( if $gfeat == only {
                $( $reg.set(r[R::$idx as usize]); )*
            } )*
        }

        // The groups in `f` only (none without a test).
        #[inline(always)]
        fn save_only(r: &mut [u64; NR], f: u32) {
            $( if $gfeat & f != 0 {
                save_pairs!(r; $($idx $reg),*);
            } )*
        }

        #[inline(always)]
        fn restore_only(r: &[u64; NR], f: u32) {
            $( if $gfeat & f != 0 {
                $( $reg.set(r[R::$idx as usize]); )*
            } )*
        }

        // Zeroes the registers of the groups in `f`.
        #[inline(always)]
        fn zero_regs(f: u32) {
            $( if $gfeat & f != 0 {
                $( $reg.set(0); )*
            } )*
        }
    };
}

regs! {
    feat::BASE => {
        SCTLR_EL1: SCTLR_EL1 => SCTLR_EL1_RESET;
        TTBR0_EL1: TTBR0_EL1 => 0;
        TTBR1_EL1: TTBR1_EL1 => 0;
        TCR_EL1: TCR_EL1 => 0;
        MAIR_EL1: MAIR_EL1 => 0;
        AMAIR_EL1: sr::AMAIR_EL1 => 0;
        VBAR_EL1: VBAR_EL1 => 0;
        CONTEXTIDR_EL1: sr::CONTEXTIDR_EL1 => 0;
        TPIDR_EL1: TPIDR_EL1 => 0;
        TPIDR_EL0: TPIDR_EL0 => 0;
        TPIDRRO_EL0: TPIDRRO_EL0 => 0;
        SP_EL0: SP_EL0 => 0;
        SP_EL1: SP_EL1 => 0;
        ELR_EL1: ELR_EL1 => 0;
        SPSR_EL1: SPSR_EL1 => 0;
        ESR_EL1: ESR_EL1 => 0;
        FAR_EL1: FAR_EL1 => 0;
        AFSR0_EL1: sr::AFSR0_EL1 => 0;
        AFSR1_EL1: sr::AFSR1_EL1 => 0;
        PAR_EL1: PAR_EL1 => 0;
        CPACR_EL1: CPACR_EL1 => 0;
        CNTKCTL_EL1: CNTKCTL_EL1 => 0;
        CSSELR_EL1: CSSELR_EL1 => 0;
        MDSCR_EL1: sr::MDSCR_EL1 => 0;
        CNTV_CVAL_EL0: CNTV_CVAL_EL0 => 0;
        CNTV_CTL_EL0: CNTV_CTL_EL0 => 0;
    }
    feat::PAUTH => {
        APIAKEYLO_EL1: sr::APIAKEYLO_EL1 => 0;
        APIAKEYHI_EL1: sr::APIAKEYHI_EL1 => 0;
        APIBKEYLO_EL1: sr::APIBKEYLO_EL1 => 0;
        APIBKEYHI_EL1: sr::APIBKEYHI_EL1 => 0;
        APDAKEYLO_EL1: sr::APDAKEYLO_EL1 => 0;
        APDAKEYHI_EL1: sr::APDAKEYHI_EL1 => 0;
        APDBKEYLO_EL1: sr::APDBKEYLO_EL1 => 0;
        APDBKEYHI_EL1: sr::APDBKEYHI_EL1 => 0;
        APGAKEYLO_EL1: sr::APGAKEYLO_EL1 => 0;
        APGAKEYHI_EL1: sr::APGAKEYHI_EL1 => 0;
    }
    feat::SME => {
        TPIDR2_EL0: sr::TPIDR2_EL0 => 0;
    }
    feat::RAS => {
        VDISR_EL2: sr::VDISR_EL2 => 0;
    }
    feat::VGIC => {
        ICH_VMCR_EL2: ICH_VMCR_EL2 => 0;
        ICH_AP0R0_EL2: ICH_AP0R0_EL2 => 0;
        ICH_AP1R0_EL2: ICH_AP1R0_EL2 => 0;
    }
    feat::VGIC_LR => {
        ICH_LR0_EL2: ICH_LR0_EL2 => 0;
    }
    feat::VGIC_LR2 => {
        ICH_LR1_EL2: ICH_LR1_EL2 => 0;
    }
    feat::VGIC_LR4 => {
        ICH_LR2_EL2: ICH_LR2_EL2 => 0;
        ICH_LR3_EL2: ICH_LR3_EL2 => 0;
    }
    feat::VGIC_LR8 => {
        ICH_LR4_EL2: ICH_LR4_EL2 => 0;
        ICH_LR5_EL2: ICH_LR5_EL2 => 0;
        ICH_LR6_EL2: ICH_LR6_EL2 => 0;
        ICH_LR7_EL2: ICH_LR7_EL2 => 0;
    }
    feat::VGIC_LR16 => {
        ICH_LR8_EL2: ICH_LR8_EL2 => 0;
        ICH_LR9_EL2: ICH_LR9_EL2 => 0;
        ICH_LR10_EL2: ICH_LR10_EL2 => 0;
        ICH_LR11_EL2: ICH_LR11_EL2 => 0;
        ICH_LR12_EL2: ICH_LR12_EL2 => 0;
        ICH_LR13_EL2: ICH_LR13_EL2 => 0;
        ICH_LR14_EL2: ICH_LR14_EL2 => 0;
        ICH_LR15_EL2: ICH_LR15_EL2 => 0;
    }
    feat::VGIC_AP1 => {
        ICH_AP0R1_EL2: ICH_AP0R1_EL2 => 0;
        ICH_AP1R1_EL2: ICH_AP1R1_EL2 => 0;
    }
    feat::VGIC_AP23 => {
        ICH_AP0R2_EL2: ICH_AP0R2_EL2 => 0;
        ICH_AP1R2_EL2: ICH_AP1R2_EL2 => 0;
        ICH_AP0R3_EL2: ICH_AP0R3_EL2 => 0;
        ICH_AP1R3_EL2: ICH_AP1R3_EL2 => 0;
    }
}

/// Everything of one lower-EL context that is switched: general registers,
/// PC and PSTATE (the trap frame), the system-register table, FP/SIMD.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Context {
    // FP/SIMD first: 16-byte aligned, it leaves no padding between the
    // fields whatever the table's length (a hole makes the compiler copy a
    // new context in pieces, with a memcpy call).
    pub fp: FpRegs,
    pub gp: TrapFrame,
    pub sys: [u64; NR],
    /// The [`feat::LAZY`] groups this context uses; the others are not
    /// switched for it. [`feat::PAUTH`]: used since its reset.
    /// [`feat::LRS`]: a saved list register may hold an interrupt; clear,
    /// every one is invalid (set by an exit that had them loaded, cleared
    /// by an entry whose flush leaves them all invalid; nothing else makes
    /// an invalid list register valid, and a reset zeroes them all).
    pub used: u32,
}

// The list registers are consecutive in the table (`lrs_mut`).
const _: () = assert!(R::ICH_LR15_EL2 as usize == R::ICH_LR0_EL2 as usize + 15);

// No padding inside a context (see the field order above).
const _: () = assert!(
    core::mem::size_of::<Context>()
        == (core::mem::size_of::<FpRegs>() + core::mem::size_of::<TrapFrame>() + 8 * NR + 4).next_multiple_of(16)
);

/// Which side of the switch a context is: the host never has the
/// guest-only registers loaded for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Host,
    Guest,
}

/// [`features`] without the [`feat::LAZY`] groups (for [`Kind::Host`] and
/// [`Kind::Guest`]), and the lazy groups this CPU has; set by
/// [`detect_features`] (the world switch only loads them).
static MASKS: [core::sync::atomic::AtomicU32; 3] = [const { core::sync::atomic::AtomicU32::new(feat::BASE) }; 3];

/// The registers switched for `kind`; `lazy`: which [`feat::LAZY`] groups
/// are switched this time. The guest-only groups are cleared by a mask that
/// is a constant once `kind` is (the callers are inlined): their tests fold
/// away on the host's side.
#[inline(always)]
fn mask(kind: Kind, lazy: u32) -> u32 {
    use core::sync::atomic::Ordering::Relaxed;
    let f = MASKS[kind as usize].load(Relaxed) | (lazy & MASKS[2].load(Relaxed));
    match kind {
        Kind::Host => f & !feat::GUEST_ONLY,
        Kind::Guest => f,
    }
}

/// ISR_EL1.A: a physical SError is pending.
const ISR_A: u64 = 1 << 8;
/// DISR_EL1.A: ESB deferred an SError.
const DISR_A: u64 = 1 << 31;

/// Is a physical SError pending (masked) now? A host calling VCPU_RUN with
/// one must not have it taken, and blamed, in the guest.
#[inline(always)]
pub fn serror_pending() -> bool {
    sr::ISR_EL1.get() & ISR_A != 0
}

/// Before a guest runs: the host's DISR_EL1 (the physical register: the
/// guest reaches VDISR_EL2) is set aside and cleared, so a record found
/// there at the exit is the guest's. Returns the host's value.
#[inline(always)]
pub fn park_host_disr() -> u64 {
    if features() & feat::RAS == 0 {
        return 0;
    }
    let v = sr::DISR_EL1.get();
    sr::DISR_EL1.set(0);
    v
}

/// After [`take_deferred_serror`]: the host's DISR_EL1 back.
#[inline(always)]
pub fn unpark_host_disr(v: u64) {
    if features() & feat::RAS != 0 {
        sr::DISR_EL1.set(v);
    }
}

/// On an exit from a guest: an SError the guest caused may still be in
/// flight. With FEAT_RAS, ESB (at EL2, SErrors masked) defers it into
/// DISR_EL1; returns its syndrome (and clears the record) so the exit can
/// stop the guest instead of handing the SError to the host.
#[inline(always)]
pub fn take_deferred_serror() -> Option<u64> {
    if features() & feat::RAS == 0 {
        return None;
    }
    // SAFETY: ESB (HINT #16) only synchronizes and defers a pending SError.
    unsafe { core::arch::asm!("hint #16", options(nostack)) };
    let disr = sr::DISR_EL1.get();
    if disr & DISR_A == 0 {
        return None;
    }
    sr::DISR_EL1.set(0);
    Some(disr)
}

/// Is the CPU in SME streaming mode or with ZA on? The world switch's
/// FP/SIMD save and restore cannot run then (Advanced SIMD instructions are
/// illegal in streaming mode), and ZA is not switched.
#[inline(always)]
pub fn sme_live() -> bool {
    features() & feat::SME != 0 && sr::SVCR.get() & 0b11 != 0
}

/// `p`, as a value the compiler must take from a register: the table's
/// accesses are then made from its own base (offsets 0..8 * NR), within
/// the range of the load/store-pair instructions, not from the base of
/// whatever holds the context (a `PerCpu` puts the host's hundreds of bytes
/// in, where only single loads and stores reach).
#[inline(always)]
fn in_reg<T>(mut p: *mut T) -> *mut T {
    // SAFETY: an empty instruction sequence: the pointer comes out as it
    // went in.
    unsafe { core::arch::asm!("/* {0} */", inout(reg) p, options(pure, readonly, nostack, preserves_flags)) };
    p
}

/// Zeroes the CPU's list registers (those the table switches: the others
/// stay zero from boot), after a run that had them ([`feat::LAZY`]).
#[inline(always)]
pub fn zero_cpu_lrs() {
    zero_regs(MASKS[2].load(core::sync::atomic::Ordering::Relaxed) & feat::LRS);
}

impl Context {
    /// A context that has not run yet: every register at its reset value.
    pub const fn reset() -> Context {
        Context {
            gp: TrapFrame { x: [0; 31], elr: 0, spsr: 0, _pad: 0 },
            sys: RESET,
            fp: FpRegs { q: [0; 32], fpsr: 0, fpcr: 0 },
            used: 0,
        }
    }

    /// Saves the CPU's lower-EL system registers into this context (the
    /// general registers come from the trap frame; FP/SIMD moves lazily:
    /// `vm::switch`).
    /// `lazy`: the [`feat::LAZY`] groups switched this time.
    #[inline(always)]
    pub fn save_cpu(&mut self, kind: Kind, lazy: u32) {
        // SAFETY: `in_reg` returns the address of `self.sys`, borrowed
        // exclusively here.
        let r = unsafe { &mut *in_reg(&mut self.sys) };
        let m = mask(kind, lazy);
        // The list registers under one test (their groups' own tests fold
        // away in both calls: the masks are constants).
        save_regs(r, m & !feat::LRS);
        if m & feat::LRS != 0 {
            save_only(r, m & feat::LRS);
        }
    }

    /// Loads this context's system registers into the CPU.
    #[inline(always)]
    pub fn restore_cpu(&self, kind: Kind, lazy: u32) {
        // SAFETY: `in_reg` returns the address of `self.sys`, borrowed
        // here and only read.
        let r = unsafe { &*in_reg(self.sys.as_ptr().cast_mut().cast()) };
        let m = mask(kind, lazy);
        restore_regs(r, m & !feat::LRS);
        if m & feat::LRS != 0 {
            restore_only(r, m & feat::LRS);
        }
    }

    /// Saves the CPU's PAuth keys into this context (the host's, when a
    /// vCPU's come in: see [`feat::LAZY`]).
    pub fn save_pauth(&mut self) {
        save_group(&mut self.sys, feat::PAUTH);
    }

    /// Loads this context's PAuth keys.
    pub fn restore_pauth(&self) {
        restore_group(&self.sys, feat::PAUTH);
    }

    #[inline(always)]
    pub fn get(&self, r: R) -> u64 {
        self.sys[r as usize]
    }

    /// The saved list registers (ICH_LR0_EL2.. in table order), the ones
    /// this CPU has.
    #[inline(always)]
    pub fn lrs_mut(&mut self) -> &mut [u64] {
        let first = R::ICH_LR0_EL2 as usize;
        &mut self.sys[first..first + nr_lrs()]
    }
}

impl Default for Context {
    fn default() -> Self {
        Context::reset()
    }
}
