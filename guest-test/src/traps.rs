//! `test=traps`: what a guest gets when it touches what the hyp does not
//! switch (docs/isolation.md): RAZ/WI registers read 0 after a write and
//! never fault, UNDEF ones raise an undefined-instruction exception at the
//! guest's EL1 (ESR_EL1.EC = 0), hidden features read 0 in the ID
//! registers, set/way maintenance is a NOP. One PASS/FAIL line per row.
//!
//! Not here because QEMU 7.2 does not implement them (an access is UNDEF
//! at EL1 before any EL2 trap applies, so RAZ/WI cannot be observed):
//! DBGPRCR_EL1, DBGCLAIMSET/CLR_EL1, ERRSELR_EL1 and the ERX* registers.

use alloc::format;

use el1_rt::println;
use el1_rt::probe::{ec, try_insns, EC_UNKNOWN};

use crate::tests::Tally;

macro_rules! mrs {
    ($r:literal) => {{
        let v: u64;
        // SAFETY: a system-register read; an exception is caught by the probe.
        unsafe { core::arch::asm!("mov {0}, #0", concat!("mrs {0}, ", $r), out(reg) v, options(nomem, nostack)) };
        v
    }};
}

macro_rules! msr {
    ($r:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: a system-register write of a harmless value (nothing here
        // enables a debug event, an interrupt or a counter); an exception is
        // caught by the probe.
        unsafe { core::arch::asm!(concat!("msr ", $r, ", {}"), "isb", in(reg) v, options(nostack)) };
    }};
}

/// `f` must raise an undefined-instruction exception (EC 0).
fn undef(t: &mut Tally, what: &str, f: impl FnOnce()) {
    let r = try_insns(f);
    match r {
        Err(esr) if ec(esr) == EC_UNKNOWN => {}
        Err(esr) => println!("  took EC {:#x} (ESR_EL1 {:#x}), want 0", ec(esr), esr),
        Ok(()) => println!("  no exception: it executed"),
    }
    t.check(matches!(r, Err(esr) if ec(esr) == EC_UNKNOWN), &format!("traps: {what} is UNDEF"));
}

/// A write of `v` is ignored without a fault and the register reads 0.
fn raz_wi(t: &mut Tally, name: &str, v: u64, write: impl FnOnce(u64), read: impl FnOnce() -> u64) {
    let w = try_insns(|| write(v));
    let mut got = 0;
    let r = try_insns(|| got = read());
    if w.is_err() || r.is_err() || got != 0 {
        println!("  write {:?}, read {:?}, value {:#x}", w, r, got);
    }
    t.check(w.is_ok() && r.is_ok() && got == 0, &format!("traps: {name} reads 0 after a write of {v:#x} (RAZ/WI)"));
}

/// A read-only register reads 0 without a fault.
fn raz(t: &mut Tally, name: &str, read: impl FnOnce() -> u64) {
    let mut got = 0;
    let r = try_insns(|| got = read());
    if r.is_err() || got != 0 {
        println!("  read {:?}, value {:#x}", r, got);
    }
    t.check(r.is_ok() && got == 0, &format!("traps: {name} reads 0"));
}

/// `f` runs without a fault.
fn no_fault(t: &mut Tally, what: &str, f: impl FnOnce()) {
    let r = try_insns(f);
    if let Err(esr) = r {
        println!("  took ESR_EL1 {:#x}", esr);
    }
    t.check(r.is_ok(), &format!("traps: {what}"));
}

fn id_field(t: &mut Tally, reg: &str, value: u64, field: &str, shift: u32) {
    let f = (value >> shift) & 0xf;
    if f != 0 {
        println!("  {reg} = {value:#x}: {field} = {f}");
    }
    t.check(f == 0, &format!("traps: {reg}.{field} reads 0"));
}

fn pmu(t: &mut Tally) {
    id_field(t, "ID_AA64DFR0_EL1", mrs!("id_aa64dfr0_el1"), "PMUVer", 8);
    id_field(t, "ID_DFR0_EL1", mrs!("id_dfr0_el1"), "PerfMon", 24);
    raz_wi(t, "PMCR_EL0", 0x48, |v| msr!("pmcr_el0", v), || mrs!("pmcr_el0"));
    raz_wi(t, "PMSELR_EL0", 3, |v| msr!("pmselr_el0", v), || mrs!("pmselr_el0"));
    raz_wi(t, "PMCNTENSET_EL0", 1, |v| msr!("pmcntenset_el0", v), || mrs!("pmcntenset_el0"));
    // A CLR register shows the bits the SET register just set, unless RAZ.
    raz_wi(t, "PMCNTENCLR_EL0", 0, |v| msr!("pmcntenclr_el0", v), || mrs!("pmcntenclr_el0"));
    raz_wi(t, "PMINTENSET_EL1", 1, |v| msr!("pmintenset_el1", v), || mrs!("pmintenset_el1"));
    raz_wi(t, "PMINTENCLR_EL1", 0, |v| msr!("pmintenclr_el1", v), || mrs!("pmintenclr_el1"));
    raz_wi(t, "PMOVSSET_EL0", 2, |v| msr!("pmovsset_el0", v), || mrs!("pmovsset_el0"));
    raz_wi(t, "PMOVSCLR_EL0", 0, |v| msr!("pmovsclr_el0", v), || mrs!("pmovsclr_el0"));
    raz_wi(t, "PMUSERENR_EL0", 0xf, |v| msr!("pmuserenr_el0", v), || mrs!("pmuserenr_el0"));
    raz_wi(t, "PMCCFILTR_EL0", 0x8000_0000, |v| msr!("pmccfiltr_el0", v), || mrs!("pmccfiltr_el0"));
    raz_wi(t, "PMEVTYPER0_EL0", 0x11, |v| msr!("pmevtyper0_el0", v), || mrs!("pmevtyper0_el0"));
    raz_wi(t, "PMEVCNTR0_EL0", 0x1234, |v| msr!("pmevcntr0_el0", v), || mrs!("pmevcntr0_el0"));
    raz_wi(t, "PMXEVTYPER_EL0", 0x8, |v| msr!("pmxevtyper_el0", v), || mrs!("pmxevtyper_el0"));
    raz_wi(t, "PMXEVCNTR_EL0", 0x77, |v| msr!("pmxevcntr_el0", v), || mrs!("pmxevcntr_el0"));
    raz_wi(t, "PMCCNTR_EL0", 0x1_0000, |v| msr!("pmccntr_el0", v), || mrs!("pmccntr_el0"));
    no_fault(t, "PMSWINC_EL0 write is ignored without a fault", || msr!("pmswinc_el0", 1));
    raz(t, "PMCEID0_EL0", || mrs!("pmceid0_el0"));
    raz(t, "PMCEID1_EL0", || mrs!("pmceid1_el0"));
    // Leave nothing enabled behind (no effect where the PMU is RAZ/WI).
    let _ = try_insns(|| {
        msr!("pmcntenclr_el0", !0);
        msr!("pmintenclr_el1", !0);
        msr!("pmovsclr_el0", !0);
        msr!("pmcr_el0", 0);
        msr!("pmuserenr_el0", 0);
    });
}

fn debug(t: &mut Tally) {
    raz_wi(t, "MDSCR_EL1", 1 << 12, |v| msr!("mdscr_el1", v), || mrs!("mdscr_el1"));
    raz_wi(t, "DBGBVR0_EL1", 0x1000, |v| msr!("dbgbvr0_el1", v), || mrs!("dbgbvr0_el1"));
    raz_wi(t, "DBGBCR0_EL1", 0x1e0, |v| msr!("dbgbcr0_el1", v), || mrs!("dbgbcr0_el1"));
    raz_wi(t, "DBGWVR0_EL1", 0x2000, |v| msr!("dbgwvr0_el1", v), || mrs!("dbgwvr0_el1"));
    raz_wi(t, "DBGWCR0_EL1", 0x1fe0, |v| msr!("dbgwcr0_el1", v), || mrs!("dbgwcr0_el1"));
    // OSLAR is write-only: the lock it sets shows in OSLSR.
    raz_wi(t, "OSLSR_EL1 (after OSLAR_EL1 = 1)", 1, |v| msr!("oslar_el1", v), || mrs!("oslsr_el1"));
    raz_wi(t, "OSDLR_EL1", 1, |v| msr!("osdlr_el1", v), || mrs!("osdlr_el1"));
    raz_wi(t, "MDCCINT_EL1", 1 << 30, |v| msr!("mdccint_el1", v), || mrs!("mdccint_el1"));
    raz(t, "MDRAR_EL1", || mrs!("mdrar_el1"));
    let _ = try_insns(|| {
        msr!("oslar_el1", 0);
        msr!("osdlr_el1", 0);
        msr!("mdscr_el1", 0);
        msr!("mdccint_el1", 0);
    });
}

fn timers(t: &mut Tally) {
    undef(t, "CNTP_CTL_EL0 read", || {
        mrs!("cntp_ctl_el0");
    });
    undef(t, "CNTP_CTL_EL0 write", || msr!("cntp_ctl_el0", 0));
    undef(t, "CNTP_CVAL_EL0 read", || {
        mrs!("cntp_cval_el0");
    });
    undef(t, "CNTP_CVAL_EL0 write", || msr!("cntp_cval_el0", !0));
    undef(t, "CNTP_TVAL_EL0 read", || {
        mrs!("cntp_tval_el0");
    });
    undef(t, "CNTP_TVAL_EL0 write", || msr!("cntp_tval_el0", 0x7fff_ffff));
    for (name, read) in [("CNTPCT_EL0", (|| mrs!("cntpct_el0")) as fn() -> u64), ("CNTVCT_EL0", || mrs!("cntvct_el0"))]
    {
        let (mut a, mut b) = (0, 0);
        let r = try_insns(|| {
            a = read();
            for _ in 0..1000 {
                core::hint::spin_loop();
            }
            b = read();
        });
        t.check(r.is_ok() && b > a && a != 0, &format!("traps: {name} is readable and counts"));
    }
}

fn sve_sme(t: &mut Tally) {
    // The guest turns its own EL1 controls on (CPACR_EL1.ZEN and SMEN =
    // 0b11): whatever still traps is the hyp's doing.
    msr!("cpacr_el1", mrs!("cpacr_el1") | (3 << 16) | (3 << 24));
    id_field(t, "ID_AA64PFR0_EL1", mrs!("id_aa64pfr0_el1"), "SVE", 32);
    raz(t, "ID_AA64ZFR0_EL1", || mrs!("S3_0_C0_C4_4"));
    undef(t, "ZCR_EL1 read", || {
        mrs!("S3_0_C1_C2_0");
    });
    undef(t, "ZCR_EL1 write", || msr!("S3_0_C1_C2_0", 0));
    undef(t, "RDVL (an SVE instruction)", || {
        // SAFETY: RDVL only writes its register; UNDEF is caught by the probe.
        unsafe {
            core::arch::asm!("mov x0, #0", ".inst 0x04bf5020 // rdvl x0, #1", out("x0") _, options(nomem, nostack))
        };
    });
    id_field(t, "ID_AA64PFR1_EL1", mrs!("id_aa64pfr1_el1"), "SME", 24);
    raz(t, "ID_AA64SMFR0_EL1", || mrs!("S3_0_C0_C4_5"));
    undef(t, "SMCR_EL1 read", || {
        mrs!("S3_0_C1_C2_6");
    });
    undef(t, "SMCR_EL1 write", || msr!("S3_0_C1_C2_6", 0));
    undef(t, "RDSVL (an SME instruction)", || {
        // SAFETY: as for RDVL.
        unsafe {
            core::arch::asm!("mov x0, #0", ".inst 0x04bf5820 // rdsvl x0, #1", out("x0") _, options(nomem, nostack))
        };
    });
    // If SMSTART works, SMSTOP right after it leaves streaming mode before
    // any Rust code (NEON) runs again.
    undef(t, "SMSTART SM (MSR SVCRSM, #1)", || {
        // SAFETY: enters and leaves streaming mode, touching no memory.
        unsafe {
            core::arch::asm!(".inst 0xd503437f // smstart sm", ".inst 0xd503427f // smstop sm", options(nomem, nostack))
        };
    });
    undef(t, "SMSTART (MSR SVCRSMZA, #1)", || {
        // SAFETY: as above, for streaming mode and ZA.
        unsafe {
            core::arch::asm!(".inst 0xd503477f // smstart", ".inst 0xd503467f // smstop", options(nomem, nostack))
        };
    });
    msr!("cpacr_el1", mrs!("cpacr_el1") & !((3 << 16) | (3 << 24)));
}

fn misc(t: &mut Tally) {
    // Set/way maintenance by a guest would reach caches it does not own.
    no_fault(t, "DC ISW is a NOP (trapped, no fault)", || {
        // SAFETY: set/way maintenance of set 0 way 0 level 1.
        unsafe { core::arch::asm!("dc isw, {}", in(reg) 0u64, options(nostack)) };
    });
    no_fault(t, "DC CSW is a NOP (trapped, no fault)", || {
        // SAFETY: as above.
        unsafe { core::arch::asm!("dc csw, {}", in(reg) 0u64, options(nostack)) };
    });
    no_fault(t, "DC CISW is a NOP (trapped, no fault)", || {
        // SAFETY: as above.
        unsafe { core::arch::asm!("dc cisw, {}", in(reg) 0u64, options(nostack)) };
    });
    raz_wi(t, "ACTLR_EL1", 1, |v| msr!("actlr_el1", v), || mrs!("actlr_el1"));
    id_field(t, "ID_AA64MMFR1_EL1", mrs!("id_aa64mmfr1_el1"), "LO", 16);
    undef(t, "LORSA_EL1 read", || {
        mrs!("S3_0_C10_C4_0");
    });
    undef(t, "LORSA_EL1 write", || msr!("S3_0_C10_C4_0", 0));
    undef(t, "LOREA_EL1 read", || {
        mrs!("S3_0_C10_C4_1");
    });
    undef(t, "LORN_EL1 read", || {
        mrs!("S3_0_C10_C4_2");
    });
    undef(t, "LORC_EL1 write", || msr!("S3_0_C10_C4_3", 0));
    undef(t, "LORID_EL1 read", || {
        mrs!("S3_0_C10_C4_7");
    });
    raz(t, "ERRIDR_EL1", || mrs!("S3_0_C5_C3_0"));
    // No self-hosted trace (MDCR_EL2.TTRF; TraceFilt hidden) and no MPAM
    // (MPAM2_EL2 traps where the CPU has it; MPAM hidden).
    id_field(t, "ID_AA64DFR0_EL1", mrs!("id_aa64dfr0_el1"), "TraceFilt", 40);
    undef(t, "TRFCR_EL1 read", || {
        mrs!("S3_0_C1_C2_1");
    });
    undef(t, "TRFCR_EL1 write", || msr!("S3_0_C1_C2_1", 3));
    id_field(t, "ID_AA64PFR0_EL1", mrs!("id_aa64pfr0_el1"), "MPAM", 40);
    undef(t, "MPAM1_EL1 read", || {
        mrs!("S3_0_C10_C5_0");
    });
    undef(t, "MPAM1_EL1 write", || msr!("S3_0_C10_C5_0", 1));
    undef(t, "MPAM0_EL1 write", || msr!("S3_0_C10_C5_1", 1));
    undef(t, "SCXTNUM_EL0 read", || {
        mrs!("S3_3_C13_C0_7");
    });
    undef(t, "SCXTNUM_EL1 write", || msr!("S3_0_C13_C0_7", 0x1eaf));
    // Group 1 SGIs go to the guest's own vCPUs (the irq-smp scenario);
    // TargetList 0 and a target at Aff1 = 1 reach nobody.
    no_fault(t, "ICC_SGI1R_EL1 write to no vCPU completes (SGIs reach only the guest's vCPUs)", || {
        msr!("S3_0_C12_C11_5", 0);
        msr!("S3_0_C12_C11_5", (1 << 16) | 1)
    });
    undef(t, "ICC_SGI0R_EL1 write", || msr!("S3_0_C12_C11_7", 0));
    undef(t, "ICC_ASGI1R_EL1 write", || msr!("S3_0_C12_C11_6", 0));
}

pub fn traps(t: &mut Tally) {
    pmu(t);
    debug(t);
    timers(t);
    sve_sme(t);
    misc(t);
}

/// `test=pmu-owned` (the host booted the hyp with `hyp.bench_pmu`): the
/// PMU is the guest's.
pub fn pmu_owned(t: &mut Tally) {
    let ver = (mrs!("id_aa64dfr0_el1") >> 8) & 0xf;
    t.check(ver != 0, "pmu-owned: ID_AA64DFR0_EL1.PMUVer is not 0");
    let mut got = 0;
    let r = try_insns(|| {
        msr!("pmccfiltr_el0", 0x8000_0000);
        got = mrs!("pmccfiltr_el0");
        msr!("pmccfiltr_el0", 0);
    });
    t.check(r.is_ok() && got == 0x8000_0000, "pmu-owned: PMCCFILTR_EL0 keeps what the guest writes");
}
