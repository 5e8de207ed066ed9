//! The EL2 controls each kind of lower-EL context runs with: what is
//! trapped for the host and for guests. With the register table in
//! `context.rs` this decides every register a lower EL can reach;
//! `docs/isolation.md` is the written form.

use aarch64_cpu::registers::*;
use tock_registers::interfaces::{Readable, Writeable};

use super::context::{self, feat, Kind};
use super::sysreg::*;

/// PMU left to lower ELs and EL2 counting allowed (`hyp.bench_pmu`, for the
/// bench only): then the PMU is shared, not isolated.
static BENCH_PMU: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

pub fn set_bench_pmu(on: bool) {
    BENCH_PMU.store(on, core::sync::atomic::Ordering::Relaxed);
}

#[inline(always)]
pub fn bench_pmu() -> bool {
    BENCH_PMU.load(core::sync::atomic::Ordering::Relaxed)
}

/// HCR_EL2 for the host: stage-2 on, EL1 AArch64, SMC trapped (PSCI is
/// relayed), pointer authentication not trapped, physical interrupts routed
/// to EL1 (IMO/FMO/AMO clear). SCXTNUM (EnSCXT clear) traps.
pub fn hcr_host() -> u64 {
    (HCR_EL2::VM::Enable
        + HCR_EL2::SWIO::SET
        + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
        + HCR_EL2::RW::EL1IsAarch64
        + HCR_EL2::API::DisableTrapPointerAuthInstToEl2
        + HCR_EL2::APK::DisableTrapPointerAuthKeyRegsToEl2)
        .value
}

/// FEAT_S2FWB: ID_AA64MMFR2_EL1.FWB says HCR_EL2.FWB exists.
pub fn has_s2fwb() -> bool {
    ID_AA64MMFR2_EL1.read(ID_AA64MMFR2_EL1::FWB) != 0
}

/// HCR_EL2.FWB for every lower-EL context when the boot chose forced
/// write-back ([`hyp_core::mm::pte::fwb`]: the stage-2 descriptors are in
/// its MemAttr encoding), else nothing.
fn hcr_fwb() -> u64 {
    if hyp_core::mm::pte::fwb() {
        HCR_EL2::FWB::Enabled.value
    } else {
        0
    }
}

/// HCR_EL2.API and APK: pointer-authentication instructions and key
/// registers not trapped.
const PAUTH_UNTRAPPED: u64 =
    HCR_EL2::API::DisableTrapPointerAuthInstToEl2.value | HCR_EL2::APK::DisableTrapPointerAuthKeyRegsToEl2.value;

/// HCR_EL2 for a guest: as the host, but pointer authentication trapped
/// until the vCPU first uses it (its keys are loaded then, and switched
/// from then on: `context::feat::LAZY`), plus physical IRQ/FIQ/SError taken to
/// EL2 (they belong to the host; the guest's GIC accesses go to the virtual
/// CPU interface), TLB and cache maintenance broadcast (a vCPU may move
/// between CPUs), and traps: set/way cache maintenance, ID registers,
/// ACTLR_EL1, implementation-defined registers, LORegions, RAS error
/// records, and WFI/WFE (an idle vCPU gives its CPU back to the host).
pub fn hcr_guest() -> u64 {
    (hcr_host() & !PAUTH_UNTRAPPED)
        | (HCR_EL2::IMO::EnableVirtualIRQ
            + HCR_EL2::FMO::EnableVirtualFIQ
            + HCR_EL2::AMO::SET
            + HCR_EL2::FB::SET
            + HCR_EL2::BSU::InnerShareable
            + HCR_EL2::TSW::SET
            + HCR_EL2::TID3::SET
            + HCR_EL2::TACR::SET
            + HCR_EL2::TIDCP::SET
            + HCR_EL2::TLOR::SET
            + HCR_EL2::TERR::SET)
            .value
        | (HCR_EXTRA::TWI::SET + HCR_EXTRA::TWE::SET).value
}

/// MDCR_EL2 of the host and of guests, computed once per boot by
/// [`init_el2_controls`] (the world switch only loads them).
static MDCR_VALUES: [core::sync::atomic::AtomicU64; 2] =
    [core::sync::atomic::AtomicU64::new(0), core::sync::atomic::AtomicU64::new(0)];

/// MDCR_EL2: the host keeps debug and the PMU; guests trap both (RAZ/WI,
/// see the guest trap handler), plus trace filter and profiling registers.
/// EL2 counting is prohibited unless `hyp.bench_pmu`.
fn compute_mdcr(kind: Kind) -> u64 {
    let n = (PMCR_EL0.get() >> 11) & 0x1f;
    let bench = bench_pmu();
    let mut v = MDCR::HPMN.val(n);
    if !bench {
        v += MDCR::HPMD::SET;
        // PMUVer [11:8] >= 6: FEAT_PMUv3p5, which has HCCD.
        let pmuver = (ID_AA64DFR0_EL1.get() >> 8) & 0xf;
        if (6..0xf).contains(&pmuver) {
            v += MDCR::HCCD::SET;
        }
    }
    if kind == Kind::Guest {
        v += MDCR::TDA::SET + MDCR::TDOSA::SET + MDCR::TDRA::SET + MDCR::TTRF::SET + MDCR::TPMS::SET;
        if !bench {
            v += MDCR::TPM::SET + MDCR::TPMCR::SET;
        }
    }
    v.value
}

/// CPTR_EL2: FP/SIMD free for the host; guests trap FP/SIMD until they
/// first use it in a run (the world switch moves it lazily: `vm::switch`), and
/// SVE, SME, trace, activity monitors.
pub fn cptr(kind: Kind) -> u64 {
    // Bit 12 is TSM with SME, RES1 without.
    let res1 = if context::features() & feat::SME == 0 { CPTR_EL2_RES1 | CPTR::TSM::SET.value } else { CPTR_EL2_RES1 };
    match kind {
        Kind::Host => res1,
        Kind::Guest => (CPTR::TFP::SET + CPTR::TZ::SET + CPTR::TSM::SET + CPTR::TTA::SET + CPTR::TAM::SET).value | res1,
    }
}

/// CNTHCTL_EL2: both may read the physical counter; only the host may use
/// the physical timer (a guest's CNTP_* accesses trap).
pub fn cnthctl(kind: Kind) -> u64 {
    match kind {
        Kind::Host => (CNTHCTL_EL2::EL1PCEN::SET + CNTHCTL_EL2::EL1PCTEN::SET).value,
        Kind::Guest => CNTHCTL_EL2::EL1PCTEN::SET.value,
    }
}

/// MPAM2_EL2 (with FEAT_MPAM): the host may use MPAM (it owns resource
/// partitioning: a guest runs in whatever partition the host's MPAM1_EL1
/// and MPAM0_EL1 name); a guest's accesses to MPAM1_EL1, MPAM0_EL1,
/// MPAMSM_EL1 and (where TIDR exists) MPAMIDR_EL1 trap and are UNDEF, as
/// its ID registers hide MPAM. EL2 itself uses partition 0.
pub fn mpam2(kind: Kind) -> u64 {
    match kind {
        Kind::Host => 0,
        Kind::Guest => (MPAM2::TRAPMPAM1EL1::SET + MPAM2::TRAPMPAM0EL1::SET + MPAM2::TIDR::SET).value,
    }
}

/// HCR_EL2, CPTR_EL2 and CNTHCTL_EL2 of the host and of guests, computed
/// once per boot with MDCR_EL2 (the world switch only loads them).
static CONTROLS: [[core::sync::atomic::AtomicU64; 3]; 2] =
    [[const { core::sync::atomic::AtomicU64::new(0) }; 3], [const { core::sync::atomic::AtomicU64::new(0) }; 3]];

/// A guest's FP/SIMD became live: CPTR_EL2 stops trapping it (the caller
/// synchronizes the context before touching FP/SIMD).
pub fn untrap_guest_fp() {
    use core::sync::atomic::Ordering::Relaxed;
    CPTR_EL2.set(CONTROLS[Kind::Guest as usize][1].load(Relaxed) & !CPTR::TFP::SET.value);
}

/// The running vCPU's PAuth keys are loaded: PAuth stops trapping (the
/// caller synchronizes the context).
pub fn untrap_guest_pauth() {
    use core::sync::atomic::Ordering::Relaxed;
    HCR_EL2.set(CONTROLS[Kind::Guest as usize][0].load(Relaxed) | PAUTH_UNTRAPPED);
}

/// Loads the EL2 controls of `kind` (stage-2 registers are the caller's),
/// its vector table included.
#[inline(always)]
pub fn enter_controls(kind: Kind) {
    use core::sync::atomic::Ordering::Relaxed;
    let [hcr, cptr, cnthctl] = &CONTROLS[kind as usize];
    VBAR_EL2.set(vectors(kind));
    HCR_EL2.set(hcr.load(Relaxed));
    MDCR_EL2.set(MDCR_VALUES[kind as usize].load(Relaxed));
    CPTR_EL2.set(cptr.load(Relaxed));
    CNTHCTL_EL2.set(cnthctl.load(Relaxed));
    if context::features() & feat::MPAM != 0 {
        MPAM2_EL2.set(mpam2(kind));
    }
}

/// HFGRTR_EL2/HFGWTR_EL2 nTPIDR2_EL0 [55] and nSMPRI_EL1 [54]: the
/// negative-polarity fine-grained traps (0 = trapped) of registers that are
/// switched (TPIDR2_EL0) or trapped otherwise (SMPRI_EL1: CPTR_EL2.TSM for
/// guests). Every other negative bit stays 0: GCS, POR, PIR, RCWMASK,
/// ACCDATA, MAIR2/AMAIR2 (not switched) trap to EL2 and are UNDEF.
pub const FGT_PASS: u64 = (1 << 55) | (1 << 54);
/// HCRX_EL2.MSCEn [11]: FEAT_MOPS instructions are usable at EL1/EL0 (they
/// are UNDEF with it clear); the rest 0 (TCR2/SCTLR2, GCS, FPMR ... trap).
pub const HCRX_MSCEN: u64 = 1 << 11;

/// The fine-grained trap value (with FEAT_FGT) and HCRX_EL2 (with FEAT_HCX)
/// from ID_AA64MMFR0_EL1.FGT [59:56], ID_AA64MMFR1_EL1.HCX [43:40] and
/// ID_AA64ISAR2_EL1.MOPS [19:16]. Both registers have no architectural
/// reset value: left as they are, QEMU's 0 traps TPIDR2_EL0 (FGT) and makes
/// MOPS UNDEF (HCRX), which a Linux host's libc uses when ISAR2 says so.
pub fn fgt_hcrx(mmfr0: u64, mmfr1: u64, isar2: u64) -> (Option<u64>, Option<u64>) {
    let fgt = ((mmfr0 >> 56) & 0xf != 0).then_some(FGT_PASS);
    let mops = (isar2 >> 16) & 0xf != 0;
    let hcrx = ((mmfr1 >> 40) & 0xf != 0).then_some(if mops { HCRX_MSCEN } else { 0 });
    (fgt, hcrx)
}

/// EL2 controls set once per CPU: virtual counter offset 0, the GICv3
/// system-register interface enabled for EL1 (the virtual CPU interface off
/// until the interrupts work), virtual ID registers = real ones, the host's
/// controls loaded.
pub fn init_el2_controls() {
    // DACR32_EL2, IFSR32_EL2 and FPEXC32_EL2 are not switched because every
    // lower-EL context runs with EL1 in AArch64 (docs/isolation.md).
    let rw = HCR_EL2::RW::EL1IsAarch64.value;
    assert!(hcr_host() & rw != 0 && hcr_guest() & rw != 0, "EL1 must be AArch64 for every context");
    for kind in [Kind::Host, Kind::Guest] {
        MDCR_VALUES[kind as usize].store(compute_mdcr(kind), core::sync::atomic::Ordering::Relaxed);
        let hcr = (if kind == Kind::Host { hcr_host() } else { hcr_guest() }) | hcr_fwb();
        for (slot, v) in CONTROLS[kind as usize].iter().zip([hcr, cptr(kind), cnthctl(kind)]) {
            slot.store(v, core::sync::atomic::Ordering::Relaxed);
        }
    }
    if context::features() & feat::VGIC != 0 {
        // ICC_SRE_EL2: SRE | Enable (EL1 may use ICC_SRE_EL1), DFB, DIB.
        ICC_SRE_EL2.set(0b1111);
        ICH_HCR_EL2.set(0);
        super::vgic_sr::clear_all_lrs();
    }
    let (fgt, hcrx) = fgt_hcrx(ID_AA64MMFR0_EL1.get(), ID_AA64MMFR1_EL1.get(), ID_AA64ISAR2_EL1.get());
    if let Some(pass) = fgt {
        HFGRTR_EL2.set(pass);
        HFGWTR_EL2.set(pass);
        HFGITR_EL2.set(0);
        HDFGRTR_EL2.set(0);
        HDFGWTR_EL2.set(0);
    }
    if let Some(v) = hcrx {
        HCRX_EL2.set(v);
    }
    if context::features() & feat::MPAM != 0 && MPAMIDR_EL1.is_set(MPAMIDR::HAS_HCR) {
        // No virtual-PARTID mapping, no MPAMIDR trap: MPAM2_EL2.TIDR traps
        // guests' reads where the CPU has it.
        MPAMHCR_EL2.set(0);
    }
    CNTVOFF_EL2.set(0);
    CNTHP_CTL_EL2.set(0);
    VPIDR_EL2.set(MIDR_EL1.get());
    VMPIDR_EL2.set(MPIDR_EL1.get());
    enter_controls(Kind::Host);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

extern "C" {
    static __hyp_vectors: u8;
    static __hyp_guest_vectors: u8;
}

/// The vector table of a kind of context (vectors.S: they differ in the
/// lower-EL sync entry: only the host's has the short host-call entry).
pub fn vectors(kind: Kind) -> u64 {
    // Linker symbols: only their addresses are taken.
    match kind {
        Kind::Host => core::ptr::addr_of!(__hyp_vectors) as u64,
        Kind::Guest => core::ptr::addr_of!(__hyp_guest_vectors) as u64,
    }
}
