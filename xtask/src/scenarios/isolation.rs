//! Isolation of the CPU state: no register crosses the world switch, trapped
//! registers read as the guest should see them, the PMU, and preemption.

use super::spec::{Lines, Run, Scenario};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "leaks",
        about: "no register crosses the world switch (every exit kind, host -> guest, guest -> fresh guest)",
        run: Run { smp: 1, ..Run::shim("leaks") },
        lines: Lines::Made(leaks_lines),
        absent: &["FAIL", "PANIC"],
        // The guest's own check after each exit it comes back from
        // (the hyp moves FP/SIMD lazily: its first access after it).
        anywhere: &[
            "[vm 1] PASS leaks: MMIO read exit: the guest's FP/SIMD registers are its own after it",
            "[vm 1] PASS leaks: MMIO write exit: the guest's FP/SIMD registers are its own after it",
            "[vm 1] PASS leaks: host-service hypercall exit: the guest's FP/SIMD registers are its own after it",
            "[vm 1] PASS leaks: abort (IPA with no memory) exit: the guest's FP/SIMD registers are its own after it",
            "[vm 1] PASS leaks: timer preemption exit: the guest's FP/SIMD registers are its own after it",
            "[vm *] PASS leaks: fresh VM: PACGA as its first use of PAuth uses its own keys",
        ],
        code: 0,
        timeout: 60,
        verify: None,
    },
    Scenario {
        name: "traps",
        about: "PMU, debug, physical timer, SVE/SME, set/way, ACTLR, LOR, RAS, trace filter, MPAM, SCXTNUM, SGIs, ID registers",
        // icount: the host's PMU check counts instructions retired.
        run: Run { icount: true, ..Run::shim("traps") },
        lines: Lines::Join(&[
            &[
                "[host] PASS traps: the host's PMU counts its own instructions",
                "[host] PASS traps: the host cannot count the hyp's instructions (EL2 counting prohibited)",
            ],
            TRAPS_ROWS,
            &[
                "[vm 1] guest: 73 passed, 0 failed",
                "[host] result: 81 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
        ]),
        absent: &["FAIL", "PANIC"],
        anywhere: &[],
        code: 0,
        timeout: 60,
        verify: None,
    },
    Scenario {
        name: "pmu-owned",
        about: "hyp.bench_pmu leaves the PMU to the host and guests, EL2 counting on",
        run: Run { icount: true, append: Some("hyp.bench_pmu"), ..Run::shim("pmu-owned") },
        lines: Lines::Are(&[
            "[host] PASS pmu-owned: with hyp.bench_pmu the host counts the hyp's instructions",
            "[vm 1] PASS pmu-owned: ID_AA64DFR0_EL1.PMUVer is not 0",
            "[vm 1] PASS pmu-owned: PMCCFILTR_EL0 keeps what the guest writes",
            "[host] result: 9 passed, 0 failed",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: &["FAIL", "PANIC"],
        anywhere: &[],
        code: 0,
        timeout: 60,
        verify: None,
    },
    Scenario {
        name: "preempt",
        about: "a guest spinning with interrupts masked is preempted within its time slice",
        // icount: CNTPCT follows the instructions run, not the loaded host's clock.
        run: Run { smp: 1, icount: true, ..Run::shim("preempt") },
        lines: Lines::Are(&[
            "[host] preempt: vm 1 spins with interrupts masked; slice 10000 us",
            "[host] PASS preempt: 20 runs of a guest spinning with interrupts masked all end in IRQ exits with x3 = 1",
            "[host] preempt: 20 runs: min * us, median * us, max * us (slice 10000 us)",
            "[host] PASS preempt: every run ends within its slice + 1%",
            "[host] PASS preempt: every preempted run had its whole slice",
            "[host] PASS preempt: the host's own timer deadline (a tenth of the slice) ends the run at that deadline",
            "[host] PASS preempt: the spinning VM is destroyed",
            "[host] result: 8 passed, 0 failed",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: &["FAIL", "PANIC"],
        anywhere: &[],
        code: 0,
        timeout: 60,
        verify: None,
    },
];

/// Register groups of the isolation tests (el1_rt::sysregs::Group names).
const SWITCHED_GROUPS: [&str; 9] = [
    "stage-1 MMU registers",
    "exception registers",
    "thread and context IDs",
    "EL1 controls (CPACR, CSSELR, CNTKCTL)",
    "virtual timer",
    "pointer-authentication keys",
    "TPIDR2_EL0",
    "GIC CPU interface",
    "DISR_EL1",
];
const TRAPPED_GROUPS: [&str; 3] = ["physical timer", "debug registers", "PMU registers"];
/// Exit kinds of the leaks test (el1_rt::isolation::kind names), in order.
const EXIT_KINDS: [&str; 6] = [
    "MMIO read",
    "MMIO write",
    "host-service hypercall",
    "abort (IPA with no memory)",
    "timer preemption",
    "power-off",
];

/// The host's checks of a guest's readings at start (`who`: first/fresh VM).
fn readings_lines(who: &str) -> Vec<String> {
    let mut v = vec![
        format!("[host] PASS leaks: {who}: the host reads the guest's report page"),
        format!("[host] PASS leaks: {who}: general-purpose registers and SP start from reset values"),
        format!("[host] PASS leaks: {who}: general-purpose registers and SP: none of the host's"),
        format!("[host] PASS leaks: {who}: FP/SIMD registers start from reset values"),
        format!("[host] PASS leaks: {who}: FP/SIMD registers: none of the host's"),
    ];
    for g in SWITCHED_GROUPS {
        v.push(format!("[host] PASS leaks: {who}: {g}: start from reset values"));
        v.push(format!("[host] PASS leaks: {who}: {g}: none of the host's"));
    }
    for g in TRAPPED_GROUPS {
        v.push(format!("[host] PASS leaks: {who}: {g}: read as 0 or UNDEF"));
        v.push(format!("[host] PASS leaks: {who}: {g}: none of the host's"));
    }
    v
}

/// The leaks scenario: every PASS line, in order, and the total.
fn leaks_lines() -> Vec<String> {
    let mut v: Vec<String> = ["NOP", "unknown function", "PIN with bad flags", "VCPU_RUN of no VM"]
        .into_iter()
        .map(|c| format!("[host] PASS leaks: host call {c}: every register but the results intact"))
        .collect();
    v.extend(readings_lines("first VM"));
    for k in EXIT_KINDS {
        if k == "timer preemption" {
            v.push("[host] PASS leaks: timer preemption exit: IRQ with x3 = 1 (the time slice ran out)".into());
        }
        let groups = ["general-purpose registers and SP", "FP/SIMD registers"].into_iter();
        for g in groups.chain(SWITCHED_GROUPS).chain(TRAPPED_GROUPS) {
            v.push(format!("[host] PASS leaks: {k} exit: {g}: the host's values intact, none of the guest's"));
        }
        if k != "power-off" {
            v.push(format!("[host] PASS leaks: {k} exit: the guest left through it"));
        }
    }
    v.push("[host] PASS leaks: first VM: the guest reported its readings".into());
    for k in EXIT_KINDS {
        v.push(format!("[host] PASS leaks: {k} exit: seen by the host"));
    }
    v.extend(readings_lines("fresh VM"));
    v.push("[host] PASS leaks: fresh VM: the guest reported its readings".into());
    // The boot scenario's three checks come first.
    let n = v.iter().filter(|l| l.starts_with("[host] PASS")).count() + 3;
    v.push(format!("[host] result: {n} passed, 0 failed"));
    v.push("[hyp] system off: status 0 (Ok)".into());
    v
}

/// Every row of the guest's `traps` test, in order.
const TRAPS_ROWS: &[&str] = &[
    "[vm 1] PASS traps: ID_AA64DFR0_EL1.PMUVer reads 0",
    "[vm 1] PASS traps: ID_DFR0_EL1.PerfMon reads 0",
    "[vm 1] PASS traps: PMCR_EL0 reads 0 after a write of 0x48 (RAZ/WI)",
    "[vm 1] PASS traps: PMSELR_EL0 reads 0 after a write of 0x3 (RAZ/WI)",
    "[vm 1] PASS traps: PMCNTENSET_EL0 reads 0 after a write of 0x1 (RAZ/WI)",
    "[vm 1] PASS traps: PMCNTENCLR_EL0 reads 0 after a write of 0x0 (RAZ/WI)",
    "[vm 1] PASS traps: PMINTENSET_EL1 reads 0 after a write of 0x1 (RAZ/WI)",
    "[vm 1] PASS traps: PMINTENCLR_EL1 reads 0 after a write of 0x0 (RAZ/WI)",
    "[vm 1] PASS traps: PMOVSSET_EL0 reads 0 after a write of 0x2 (RAZ/WI)",
    "[vm 1] PASS traps: PMOVSCLR_EL0 reads 0 after a write of 0x0 (RAZ/WI)",
    "[vm 1] PASS traps: PMUSERENR_EL0 reads 0 after a write of 0xf (RAZ/WI)",
    "[vm 1] PASS traps: PMCCFILTR_EL0 reads 0 after a write of 0x80000000 (RAZ/WI)",
    "[vm 1] PASS traps: PMEVTYPER0_EL0 reads 0 after a write of 0x11 (RAZ/WI)",
    "[vm 1] PASS traps: PMEVCNTR0_EL0 reads 0 after a write of 0x1234 (RAZ/WI)",
    "[vm 1] PASS traps: PMXEVTYPER_EL0 reads 0 after a write of 0x8 (RAZ/WI)",
    "[vm 1] PASS traps: PMXEVCNTR_EL0 reads 0 after a write of 0x77 (RAZ/WI)",
    "[vm 1] PASS traps: PMCCNTR_EL0 reads 0 after a write of 0x10000 (RAZ/WI)",
    "[vm 1] PASS traps: PMSWINC_EL0 write is ignored without a fault",
    "[vm 1] PASS traps: PMCEID0_EL0 reads 0",
    "[vm 1] PASS traps: PMCEID1_EL0 reads 0",
    "[vm 1] PASS traps: MDSCR_EL1 reads 0 after a write of 0x1000 (RAZ/WI)",
    "[vm 1] PASS traps: DBGBVR0_EL1 reads 0 after a write of 0x1000 (RAZ/WI)",
    "[vm 1] PASS traps: DBGBCR0_EL1 reads 0 after a write of 0x1e0 (RAZ/WI)",
    "[vm 1] PASS traps: DBGWVR0_EL1 reads 0 after a write of 0x2000 (RAZ/WI)",
    "[vm 1] PASS traps: DBGWCR0_EL1 reads 0 after a write of 0x1fe0 (RAZ/WI)",
    "[vm 1] PASS traps: OSLSR_EL1 (after OSLAR_EL1 = 1) reads 0 after a write of 0x1 (RAZ/WI)",
    "[vm 1] PASS traps: OSDLR_EL1 reads 0 after a write of 0x1 (RAZ/WI)",
    "[vm 1] PASS traps: MDCCINT_EL1 reads 0 after a write of 0x40000000 (RAZ/WI)",
    "[vm 1] PASS traps: MDRAR_EL1 reads 0",
    "[vm 1] PASS traps: CNTP_CTL_EL0 read is UNDEF",
    "[vm 1] PASS traps: CNTP_CTL_EL0 write is UNDEF",
    "[vm 1] PASS traps: CNTP_CVAL_EL0 read is UNDEF",
    "[vm 1] PASS traps: CNTP_CVAL_EL0 write is UNDEF",
    "[vm 1] PASS traps: CNTP_TVAL_EL0 read is UNDEF",
    "[vm 1] PASS traps: CNTP_TVAL_EL0 write is UNDEF",
    "[vm 1] PASS traps: CNTPCT_EL0 is readable and counts",
    "[vm 1] PASS traps: CNTVCT_EL0 is readable and counts",
    "[vm 1] PASS traps: ID_AA64PFR0_EL1.SVE reads 0",
    "[vm 1] PASS traps: ID_AA64ZFR0_EL1 reads 0",
    "[vm 1] PASS traps: ZCR_EL1 read is UNDEF",
    "[vm 1] PASS traps: ZCR_EL1 write is UNDEF",
    "[vm 1] PASS traps: RDVL (an SVE instruction) is UNDEF",
    "[vm 1] PASS traps: ID_AA64PFR1_EL1.SME reads 0",
    "[vm 1] PASS traps: ID_AA64SMFR0_EL1 reads 0",
    "[vm 1] PASS traps: SMCR_EL1 read is UNDEF",
    "[vm 1] PASS traps: SMCR_EL1 write is UNDEF",
    "[vm 1] PASS traps: RDSVL (an SME instruction) is UNDEF",
    "[vm 1] PASS traps: SMSTART SM (MSR SVCRSM, #1) is UNDEF",
    "[vm 1] PASS traps: SMSTART (MSR SVCRSMZA, #1) is UNDEF",
    "[vm 1] PASS traps: DC ISW is a NOP (trapped, no fault)",
    "[vm 1] PASS traps: DC CSW is a NOP (trapped, no fault)",
    "[vm 1] PASS traps: DC CISW is a NOP (trapped, no fault)",
    "[vm 1] PASS traps: ACTLR_EL1 reads 0 after a write of 0x1 (RAZ/WI)",
    "[vm 1] PASS traps: ID_AA64MMFR1_EL1.LO reads 0",
    "[vm 1] PASS traps: LORSA_EL1 read is UNDEF",
    "[vm 1] PASS traps: LORSA_EL1 write is UNDEF",
    "[vm 1] PASS traps: LOREA_EL1 read is UNDEF",
    "[vm 1] PASS traps: LORN_EL1 read is UNDEF",
    "[vm 1] PASS traps: LORC_EL1 write is UNDEF",
    "[vm 1] PASS traps: LORID_EL1 read is UNDEF",
    "[vm 1] PASS traps: ERRIDR_EL1 reads 0",
    "[vm 1] PASS traps: ID_AA64DFR0_EL1.TraceFilt reads 0",
    "[vm 1] PASS traps: TRFCR_EL1 read is UNDEF",
    "[vm 1] PASS traps: TRFCR_EL1 write is UNDEF",
    "[vm 1] PASS traps: ID_AA64PFR0_EL1.MPAM reads 0",
    "[vm 1] PASS traps: MPAM1_EL1 read is UNDEF",
    "[vm 1] PASS traps: MPAM1_EL1 write is UNDEF",
    "[vm 1] PASS traps: MPAM0_EL1 write is UNDEF",
    "[vm 1] PASS traps: SCXTNUM_EL0 read is UNDEF",
    "[vm 1] PASS traps: SCXTNUM_EL1 write is UNDEF",
    "[vm 1] PASS traps: ICC_SGI1R_EL1 write to no vCPU completes (SGIs reach only the guest's vCPUs)",
    "[vm 1] PASS traps: ICC_SGI0R_EL1 write is UNDEF",
    "[vm 1] PASS traps: ICC_ASGI1R_EL1 write is UNDEF",
];
