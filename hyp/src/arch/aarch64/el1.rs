//! EL1 system-register state of a lower-EL context (host or guest vCPU), and
//! the EL2 controls each context runs with.

use aarch64_cpu::registers::*;

/// EL1/EL0 registers switched between the host and guest vCPUs.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct El1Regs {
    pub sctlr: u64,
    pub ttbr0: u64,
    pub ttbr1: u64,
    pub tcr: u64,
    pub mair: u64,
    pub amair: u64,
    pub vbar: u64,
    pub contextidr: u64,
    pub tpidr_el1: u64,
    pub tpidr_el0: u64,
    pub tpidrro_el0: u64,
    pub sp_el0: u64,
    pub sp_el1: u64,
    pub elr_el1: u64,
    pub spsr_el1: u64,
    pub esr_el1: u64,
    pub far_el1: u64,
    pub afsr0: u64,
    pub afsr1: u64,
    pub par: u64,
    pub cpacr: u64,
    pub cntkctl: u64,
    pub csselr: u64,
    pub mdscr: u64,
    pub cntv_ctl: u64,
    pub cntv_cval: u64,
}

/// SCTLR_EL1 RES1 bits (11, 20, 22, 23, 28, 29) with the MMU and caches off,
/// as the Linux boot protocol wants.
pub const SCTLR_EL1_RESET: u64 = 0x30d0_0800;

impl El1Regs {
    /// State of an EL1 context that has not run yet.
    pub fn reset() -> Self {
        El1Regs { sctlr: SCTLR_EL1_RESET, ..Default::default() }
    }

    pub fn save() -> Self {
        El1Regs {
            sctlr: crate::read_sysreg!("sctlr_el1"),
            ttbr0: crate::read_sysreg!("ttbr0_el1"),
            ttbr1: crate::read_sysreg!("ttbr1_el1"),
            tcr: crate::read_sysreg!("tcr_el1"),
            mair: crate::read_sysreg!("mair_el1"),
            amair: crate::read_sysreg!("amair_el1"),
            vbar: crate::read_sysreg!("vbar_el1"),
            contextidr: crate::read_sysreg!("contextidr_el1"),
            tpidr_el1: crate::read_sysreg!("tpidr_el1"),
            tpidr_el0: crate::read_sysreg!("tpidr_el0"),
            tpidrro_el0: crate::read_sysreg!("tpidrro_el0"),
            sp_el0: crate::read_sysreg!("sp_el0"),
            sp_el1: crate::read_sysreg!("sp_el1"),
            elr_el1: crate::read_sysreg!("elr_el1"),
            spsr_el1: crate::read_sysreg!("spsr_el1"),
            esr_el1: crate::read_sysreg!("esr_el1"),
            far_el1: crate::read_sysreg!("far_el1"),
            afsr0: crate::read_sysreg!("afsr0_el1"),
            afsr1: crate::read_sysreg!("afsr1_el1"),
            par: crate::read_sysreg!("par_el1"),
            cpacr: crate::read_sysreg!("cpacr_el1"),
            cntkctl: crate::read_sysreg!("cntkctl_el1"),
            csselr: crate::read_sysreg!("csselr_el1"),
            mdscr: crate::read_sysreg!("mdscr_el1"),
            cntv_ctl: crate::read_sysreg!("cntv_ctl_el0"),
            cntv_cval: crate::read_sysreg!("cntv_cval_el0"),
        }
    }

    pub fn restore(&self) {
        crate::write_sysreg!("sctlr_el1", self.sctlr);
        crate::write_sysreg!("ttbr0_el1", self.ttbr0);
        crate::write_sysreg!("ttbr1_el1", self.ttbr1);
        crate::write_sysreg!("tcr_el1", self.tcr);
        crate::write_sysreg!("mair_el1", self.mair);
        crate::write_sysreg!("amair_el1", self.amair);
        crate::write_sysreg!("vbar_el1", self.vbar);
        crate::write_sysreg!("contextidr_el1", self.contextidr);
        crate::write_sysreg!("tpidr_el1", self.tpidr_el1);
        crate::write_sysreg!("tpidr_el0", self.tpidr_el0);
        crate::write_sysreg!("tpidrro_el0", self.tpidrro_el0);
        crate::write_sysreg!("sp_el0", self.sp_el0);
        crate::write_sysreg!("sp_el1", self.sp_el1);
        crate::write_sysreg!("elr_el1", self.elr_el1);
        crate::write_sysreg!("spsr_el1", self.spsr_el1);
        crate::write_sysreg!("esr_el1", self.esr_el1);
        crate::write_sysreg!("far_el1", self.far_el1);
        crate::write_sysreg!("afsr0_el1", self.afsr0);
        crate::write_sysreg!("afsr1_el1", self.afsr1);
        crate::write_sysreg!("par_el1", self.par);
        crate::write_sysreg!("cpacr_el1", self.cpacr);
        crate::write_sysreg!("cntkctl_el1", self.cntkctl);
        crate::write_sysreg!("csselr_el1", self.csselr);
        crate::write_sysreg!("mdscr_el1", self.mdscr);
        crate::write_sysreg!("cntv_cval_el0", self.cntv_cval);
        crate::write_sysreg!("cntv_ctl_el0", self.cntv_ctl);
    }
}

/// HCR_EL2 for the host: stage-2 on, EL1 AArch64, SMC trapped (PSCI is
/// relayed), pointer authentication not trapped, physical interrupts routed
/// to EL1 (IMO/FMO/AMO clear).
pub fn hcr_host() -> u64 {
    (HCR_EL2::VM::Enable
        + HCR_EL2::SWIO::SET
        + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
        + HCR_EL2::RW::EL1IsAarch64
        + HCR_EL2::API::DisableTrapPointerAuthInstToEl2
        + HCR_EL2::APK::DisableTrapPointerAuthKeyRegsToEl2)
        .value
}

/// HCR_EL2 for a guest: as the host, plus physical IRQ/FIQ/SError taken to
/// EL2 (they belong to the host) and WFI/WFE not trapped.
pub fn hcr_guest() -> u64 {
    hcr_host() | (HCR_EL2::IMO::EnableVirtualIRQ + HCR_EL2::FMO::EnableVirtualFIQ + HCR_EL2::AMO::SET).value
}

/// EL2 controls set once per CPU: timers and counters usable at EL1, FP/SIMD
/// not trapped, PMU counters given to EL1, the GICv3 system-register
/// interface enabled for EL1, virtual ID registers = real ones.
pub fn init_el2_controls() {
    CNTHCTL_EL2.write(CNTHCTL_EL2::EL1PCEN::SET + CNTHCTL_EL2::EL1PCTEN::SET);
    CNTVOFF_EL2.set(0);
    // MDCR_EL2.HPMN = PMCR_EL0.N: all event counters accessible from EL1;
    // no debug or PMU traps.
    let pmcr_n = (crate::read_sysreg!("pmcr_el0") >> 11) & 0x1f;
    crate::write_sysreg!("mdcr_el2", pmcr_n);
    crate::write_sysreg!("vpidr_el2", MIDR_EL1.get());
    crate::write_sysreg!("vmpidr_el2", MPIDR_EL1.get());
    // ICC_SRE_EL2: SRE | Enable (EL1 may use ICC_SRE_EL1), DIB/DFB set.
    crate::write_sysreg!("icc_sre_el2", 0b1111);
    crate::write_sysreg!("ich_hcr_el2", 0);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}
