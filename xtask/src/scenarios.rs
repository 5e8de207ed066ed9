//! `cargo xtask test`: the host-side unit tests, then QEMU scenarios that
//! boot the system with a timeout and check exact console lines.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::qemu::run_system;
use crate::{workspace_root, RunArgs, TestArgs};

/// One QEMU run and what it must print.
pub struct Scenario {
    pub name: &'static str,
    pub args: RunArgs,
    /// Lines that must appear, in this order, each exactly.
    pub lines: Vec<&'static str>,
    /// Lines that must not appear.
    pub absent: Vec<&'static str>,
    /// Lines that must appear somewhere, in any order (concurrent CPUs).
    pub anywhere: Vec<&'static str>,
    /// Expected exit code of the run (124 = timeout).
    pub code: i32,
    pub timeout: u64,
}

fn base(scenario: &str) -> RunArgs {
    RunArgs { mem: "1G".into(), smp: 1, log: "info".into(), scenario: Some(scenario.into()), ..Default::default() }
}

/// QEMU's `edu` PCI device with a 64-bit DMA mask (its default, 28 bits,
/// cannot reach RAM at 1 GiB).
pub const EDU_DEVICE: &str = "-device edu,dma_mask=0xffffffffffffffff";

fn guest_elf() -> std::path::PathBuf {
    crate::target_dir().join(crate::PAYLOAD_TARGET).join("debug/guest-test")
}

fn selftest(what: &str) -> RunArgs {
    RunArgs { append: Some(format!("hyp.selftest={what}")), ..base("boot") }
}

/// A `hyp.selftest=` probe of the final EL2 stage-1: it must end in the
/// decoded unexpected-exception report (status 3), before the host runs.
fn el2_probe(name: &'static str, what: &str, mut lines: Vec<&'static str>) -> Scenario {
    let at = lines.iter().position(|l| l.starts_with("[hyp] selftest:")).unwrap_or(0);
    lines.insert(at, "[hyp] EL2 stage-1: final map on (* table pages, WXN), window at 0xff8000000000; boot map gone");
    lines.push("[hyp] system off: status 3 (Fatal)");
    Scenario {
        name,
        args: selftest(what),
        lines,
        absent: vec!["[host]", "did not fault"],
        anywhere: vec![],
        code: 3,
        timeout: 60,
    }
}

/// The fuzz scenario: a hostile host and two hostile guests; the full
/// invariant checker after every hypercall (every 8th in long runs), and
/// after every refused call the hyp's proof that it changed nothing.
pub fn fuzz(seed: u64, calls: u64, timeout: u64) -> Scenario {
    let every = if calls >= 10_000 { 8 } else { 1 };
    Scenario {
        name: if calls >= 100_000 {
            "fuzz (long)"
        } else {
            "fuzz: hostile host and guests, invariants checked after every hypercall"
        },
        args: RunArgs {
            append: Some(format!("hyp.check_invariants={every} shim.seed={seed} shim.calls={calls}")),
            qemu_args: Some(EDU_DEVICE.into()),
            ..base("fuzz")
        },
        lines: vec![
            "[host] fuzz: seed * calls * (replay: cargo xtask test --fuzz --seed * --calls *)",
            "[host] PASS no vCPU could be added to a VM that has run",
            "[host] PASS the hyp still answers after the fuzz run",
            "[host] fuzz: seed *: * host calls, * guest runs, * guest calls, * invariant checks, * refused calls proven to change nothing, * VMs created and destroyed, * guests recycled, results *",
            "[host] PASS the invariant checker ran during the fuzz run",
            "[host] PASS every guest run made its 20 random calls",
            "[host] fuzz: * DMAs by the edu device, each where the host's page state allowed",
            "[host] PASS the fuzz run mixed in DMA",
            "[hyp] system off: status 0 (Ok)",
        ],
        absent: vec!["FAIL", "PANIC", "INVARIANT"],
        anywhere: vec![],
        code: 0,
        timeout,
    }
}

/// A line built at run time, kept for the whole (short) xtask process.
fn line(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

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
fn readings_lines(who: &str) -> Vec<&'static str> {
    let mut v = vec![
        line(format!("[host] PASS leaks: {who}: the host reads the guest's report page")),
        line(format!("[host] PASS leaks: {who}: general-purpose registers and SP start from reset values")),
        line(format!("[host] PASS leaks: {who}: general-purpose registers and SP: none of the host's")),
        line(format!("[host] PASS leaks: {who}: FP/SIMD registers start from reset values")),
        line(format!("[host] PASS leaks: {who}: FP/SIMD registers: none of the host's")),
    ];
    for g in SWITCHED_GROUPS {
        v.push(line(format!("[host] PASS leaks: {who}: {g}: start from reset values")));
        v.push(line(format!("[host] PASS leaks: {who}: {g}: none of the host's")));
    }
    for g in TRAPPED_GROUPS {
        v.push(line(format!("[host] PASS leaks: {who}: {g}: read as 0 or UNDEF")));
        v.push(line(format!("[host] PASS leaks: {who}: {g}: none of the host's")));
    }
    v
}

/// The leaks scenario: every PASS line, in order, and the total.
fn leaks_lines() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = ["NOP", "unknown function", "PIN with bad flags", "VCPU_RUN of no VM"]
        .into_iter()
        .map(|c| line(format!("[host] PASS leaks: host call {c}: every register but the results intact")))
        .collect();
    v.extend(readings_lines("first VM"));
    for k in EXIT_KINDS {
        if k == "timer preemption" {
            v.push("[host] PASS leaks: timer preemption exit: IRQ with x3 = 1 (the time slice ran out)");
        }
        let groups = ["general-purpose registers and SP", "FP/SIMD registers"].into_iter();
        for g in groups.chain(SWITCHED_GROUPS).chain(TRAPPED_GROUPS) {
            v.push(line(format!("[host] PASS leaks: {k} exit: {g}: the host's values intact, none of the guest's")));
        }
        if k != "power-off" {
            v.push(line(format!("[host] PASS leaks: {k} exit: the guest left through it")));
        }
    }
    v.push("[host] PASS leaks: first VM: the guest reported its readings");
    for k in EXIT_KINDS {
        v.push(line(format!("[host] PASS leaks: {k} exit: seen by the host")));
    }
    v.extend(readings_lines("fresh VM"));
    v.push("[host] PASS leaks: fresh VM: the guest reported its readings");
    // The boot scenario's three checks come first.
    let n = v.iter().filter(|l| l.starts_with("[host] PASS")).count() + 3;
    v.push(line(format!("[host] result: {n} passed, 0 failed")));
    v.push("[hyp] system off: status 0 (Ok)");
    v
}

/// Every row of the guest's `traps` test, in order.
const TRAPS_ROWS: [&str; 66] = [
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
    "[vm 1] PASS traps: SCXTNUM_EL0 read is UNDEF",
    "[vm 1] PASS traps: SCXTNUM_EL1 write is UNDEF",
    "[vm 1] PASS traps: ICC_SGI1R_EL1 write to no vCPU completes (SGIs reach only the guest's vCPUs)",
    "[vm 1] PASS traps: ICC_SGI0R_EL1 write is UNDEF",
    "[vm 1] PASS traps: ICC_ASGI1R_EL1 write is UNDEF",
];

/// The guest SMP test (test=irq-smp, 4 vCPUs) on `smp` host CPUs.
fn irq_smp(name: &'static str, smp: u32) -> Scenario {
    let how = if smp >= 4 {
        "[host] vm 1: 4 vCPUs, each on a host CPU of its own"
    } else {
        "[host] vm 1: 4 vCPUs time-sliced on 1 host CPU"
    };
    Scenario {
        name,
        // Time-sliced, under icount (exact and quick); on 4 host CPUs not:
        // icount runs QEMU's CPUs round-robin, 100 ms of virtual time each,
        // which starves vCPUs that wait for one another.
        args: RunArgs { smp, icount: smp == 1, ..base("irq-smp") },
        lines: vec![
            how,
            "[vm 1] PASS irq-smp: the boot vCPU's MPIDR Aff0 is 0",
            "[vm 1] PASS irq-smp: AFFINITY_INFO: vCPU 1 starts powered off",
            "[vm 1] PASS irq-smp: PSCI CPU_ON starts vCPUs 1, 2 and 3",
            "[vm 1] PASS irq-smp: CPU_ON of a running vCPU is ALREADY_ON",
            "[vm 1] PASS irq-smp: CPU_ON of a vCPU the VM does not have is INVALID_PARAMETERS",
            "[vm 1] PASS irq-smp: AFFINITY_INFO: vCPU 2 is on",
            "[vm 1] PASS irq-smp: every secondary vCPU runs and reads its own MPIDR",
            "[vm 1] guest: SGI ring: [25, 25, 25, 25] SGIs taken per vCPU, * us per hop",
            "[vm 1] PASS irq-smp: 25 rounds of an SGI ring over 4 vCPUs, every SGI taken once",
            "[vm 1] PASS irq-smp: after CPU_OFF, AFFINITY_INFO reports vCPUs 1-3 OFF",
            "[vm 1] PASS irq-smp: a vCPU that powered off starts again with CPU_ON",
            "[vm 1] PASS irq-smp: it ran its new entry point and powered off again",
            "[vm 1] guest: SGI to a spinning vCPU: fastest of 5 in * us",
            "[vm 1] PASS irq-smp: an SGI reaches a vCPU spinning in the guest within 5 ms",
            "[vm 1] PASS irq-smp: an SGI pending in vCPU 0's list register is taken by vCPU 0 alone, not by the vCPU run next on its CPU",
            "[vm 1] PASS irq-smp: AFFINITY_INFO: the caller is on",
            "[vm 1] PASS irq-smp: AFFINITY_INFO at Aff1 = 1 is INVALID_PARAMETERS",
            "[vm 1] PASS irq-smp: no unexpected interrupt",
            "[vm 1] guest: 16 passed, 0 failed",
            "[hyp] system off: status 0 (Ok)",
        ],
        absent: vec!["FAIL", "PANIC"],
        anywhere: vec![],
        code: 0,
        timeout: 120,
    }
}

pub fn all() -> Vec<Scenario> {
    let mut v = vec![
        fuzz(1, 1000, 300),
        Scenario {
            name: "smp: 4 CPUs run VMs concurrently; invariants hold; end states equal a sequential replay",
            args: RunArgs { smp: 4, append: Some("hyp.check_invariants".into()), ..base("smp") },
            lines: vec![
                "[hyp]   cpus    4 (mpidr 0x0..)",
                "[hyp] gicr: 4 redistributor(s); RD_base page 0 emulated for the host (LPIs hidden)",
                "[host] smp: 4 CPUs ran 40 rounds each: * operations, * invariant checks so far",
                "[host] PASS one VM per CPU",
                "[host] PASS each VM ends as in a sequential replay of the same operations",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC", "INVARIANT"],
            anywhere: vec![
                "[hyp] cpu 1: up, entering host at *",
                "[hyp] cpu 2: up, entering host at *",
                "[hyp] cpu 3: up, entering host at *",
            ],
            code: 0,
            timeout: 300,
        },
        Scenario {
            name: "tlb: a host that read a page a guest shared aborts on its next read after MEM_UNSHARE, on the CPU that ran the guest and on another",
            args: RunArgs { smp: 2, ..base("tlb") },
            lines: vec![
                "[hyp]   cpus    2 (mpidr 0x0..)",
                "[host] vm 1: 'guest-test' loaded, 16 MiB donated at PA 0x42400000 (IPA 0x40000000), entry 0x40080000",
                "[vm 1] PASS tlb: MEM_SHARE of page 1",
                "[host] PASS tlb: the guest shared page 1 and yielded",
                "[host] PASS tlb: CPU 0 reads the guest's marker in page 1 (its mapping is now in CPU 0's TLB)",
                "[vm 1] PASS tlb: MEM_UNSHARE of page 1",
                "[host] PASS tlb: the guest unshared page 1 and yielded",
                "[hyp] host: read at IPA 0x42e05000 (PC *) refused (EPERM): abort injected",
                "[host] tlb: cpu 0: read of page 1 (PA 0x42e05000, IPA 0x40a05000) after MEM_UNSHARE: data abort, FAR 0x42e05000, ESR 0x96000010, loaded 0x0",
                "[host] PASS tlb: CPU 0's next read of page 1 after MEM_UNSHARE aborts at its address",
                "[host] PASS tlb: the aborted read on CPU 0 loaded nothing of page 1",
                "[vm 1] PASS tlb: page 1 kept its contents through the share, the host's reads and the unshare",
                "[vm 1] PASS tlb: MEM_SHARE of page 2",
                "[host] PASS tlb: the guest shared page 2 and yielded",
                "[hyp] cpu 1: up, entering host at *",
                "[host] PASS tlb: CPU 1 reads the guest's marker in page 2, 4 rounds (its mapping is now in CPU 1's TLB)",
                "[vm 1] PASS tlb: MEM_UNSHARE of page 2",
                "[host] PASS tlb: the guest, run on CPU 0, unshared page 2 and yielded",
                "[hyp] host: read at IPA 0x43007000 (PC *) refused (EPERM): abort injected",
                "[host] tlb: cpu 1: read of page 2 (PA 0x43007000, IPA 0x40c07000) after MEM_UNSHARE: data abort, FAR 0x43007000, ESR 0x96000010, loaded 0x0",
                "[host] PASS tlb: CPU 1's next read of page 2 after MEM_UNSHARE aborts at its address",
                "[host] PASS tlb: the aborted read on CPU 1 loaded nothing of page 2",
                "[host] tlb: longest wait for the other CPU: * spins (bound 536870912)",
                "[vm 1] PASS tlb: page 2 kept its contents through the share, the host's reads and the unshare",
                "[vm 1] guest: 6 passed, 0 failed",
                "[host] PASS tlb: the guest powers off",
                "[host] vm 1: destroyed, 16384 KiB scrubbed and returned to the host",
                "[host] PASS teardown reclaims every page the guest still had",
                "[host] PASS reclaimed pages are zero and the host can use them",
                "[host] PASS tlb: after teardown both pages are the host's and read zero",
                "[host] result: 23 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 60,
        },
        Scenario {
            name: "boot: hyp at EL2, host shim at EL1 under stage-2, hyp memory aborts",
            args: base("boot"),
            lines: vec![
                "[hyp] pkvm-rs hyp: running at EL2, loaded at 0x40200000 (*",
                "[hyp]   memory  0x0040000000..0x0080000000 (1024 MiB)",
                "[hyp]   uart    0x0009000000 (pl011)",
                "[hyp]   psci    method smc",
                "[hyp] hyp memory: 0x40000000..0x42200000 (34 MiB*",
                "[hyp] EL2 stage-1: 0x0009000000..0x0009001000 uart rw- device",
                "[hyp] EL2 stage-1: 0x0040200000..* text r-x",
                "[hyp] EL2 stage-1: final map on (* table pages, WXN), window at 0xff8000000000; boot map gone",
                "[hyp] entering host at 0x42200000 (EL1h, MMU off)*",
                "[host] host-shim: running at EL1, DTB at *",
                "[host] PASS host runs at EL1",
                "[host] hyp memory (reserved, no-map): 0x40000000..0x42200000",
                "[hyp] host: read at IPA 0x41100000 (PC *) refused (EPERM): abort injected",
                "[host] read of hyp memory at 0x41100000: data abort delivered (FAR 0x41100000, ESR 0x96000010)",
                "[host] PASS abort on reading hyp memory reported at the right address",
                "[hyp] host: write at IPA 0x40000000 (PC *) refused (EPERM): abort injected",
                "[host] PASS abort on writing hyp memory (WnR set)",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["[host] FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 60,
        },
        Scenario {
            name: "demo: the default run tells the story",
            args: RunArgs { scenario: None, ..base("demo") },
            lines: vec![
                "[host] --- demo: a protected guest, its memory private by default ---",
                "[host] vm 1: 'guest-test' loaded, 64 MiB donated at PA 0x42400000 (IPA 0x40000000), entry 0x40080000",
                "[hyp] host: read at IPA 0x42800000 (PC *) refused (EPERM): abort injected",
                "[host] host reads guest-private PA 0x42800000: data abort (as Linux would raise SIGBUS), no data",
                "[vm 1] guest: hello from EL1; all 64 MiB of my memory are private",
                "[vm 1] PASS the host cannot read my private page",
                "[vm 1] guest: my stage-2 maps IPA 0x40803000 with a level-2 block (1 table pages)",
                "[vm 1] PASS MEM_SHARE of one 4K page inside a 2M block",
                "[vm 1] guest: after the share: level-3 page, 2 table pages (the 2M block was split)",
                "[vm 1] guest: the host reads my shared page in place: 0x6f6c6c6568",
                "[vm 1] PASS the host takes an exclusive pin on the shared page",
                "[host] vm 1: unshare of IPA 0x40803000 pending on 1 host pin(s) (page still shared: true); unpinning",
                "[vm 1] PASS MEM_UNSHARE completes once the host drops its pin",
                "[vm 1] PASS after MEM_UNSHARE the host cannot read the page",
                "[vm 1] guest: after the unshare: level-2 block, 1 table pages (merged back)",
                "[vm 1] guest: 10 passed, 0 failed",
                "[host] vm 1: destroyed, 65536 KiB scrubbed and returned to the host",
                "[host] PASS reclaimed pages are zero and the host can use them",
                "[host] result: 16 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 90,
        },
        Scenario {
            name: "guest-tests: guest ABI, pins, blocks, relinquish, bad arguments, teardown",
            args: base("guest-tests"),
            lines: vec![
                "[vm 1] PASS VENDOR_HYP_CALL_UID answers the KVM UID",
                "[vm 1] PASS PSCI_FEATURES(SMCCC_VERSION) is supported (Linux's test for SMCCC 1.1)",
                "[vm 1] PASS x1-x30 and NZCV survive HYP_MEMINFO (the hyp's short guest-call entry)",
                "[vm 1] PASS x1-x30 and NZCV survive MEM_SHARE with x2 != 0",
                "[vm 1] PASS MEM_SHARE (every register but x0 and NZCV intact)",
                "[vm 1] PASS host reads the guest's data in place",
                "[vm 1] PASS MEM_SHARE with x2 != 0",
                "[vm 1] PASS shared pin while an exclusive pin is held is EBUSY",
                "[vm 1] PASS exclusive pin while shared pins exist is EBUSY",
                "[host] vm 1: unshare of IPA 0x40c01000 pending on 1 host pin(s) (page still shared: true); unpinning",
                "[vm 1] PASS MEM_UNSHARE of a pinned page completes after the host unpins, every register but x0 and NZCV intact",
                "[vm 1] PASS the page is private after the pinned unshare",
                "[vm 1] PASS the block is merged back and its table page freed",
                "[host] vm 1: guest abort at IPA 0x41203000 (no memory there): abort injected",
                "[vm 1] PASS the host owns the relinquished page, scrubbed to zero",
                "[host] vm 1: guest abort at IPA 0x44010000 (no memory there): abort injected",
                "[vm 1] PASS access where the guest has no memory aborts",
                "[vm 1] PASS the host cannot donate my page to another VM",
                "[vm 1] PASS KVM_FEATURES has MMIO_GUARD (bit 7)",
                "[vm 1] PASS refused guards enrol nothing: an unguarded MMIO read still goes to the host",
                "[vm 1] PASS MMIO_GUARD of the PL011's granule",
                "[vm 1] PASS after a guard, a read of an unguarded MMIO IPA aborts",
                "[vm 1] PASS the granule after the guarded one aborts too",
                "[vm 1] guest: 90 passed, 0 failed",
                "[host] vm 1: the guest made 6 MEM_SHARE, 5 MEM_UNSHARE and 2 MMIO_GUARD calls; 1 granule(s) guarded",
                "[host] vm 1: destroyed, 65528 KiB scrubbed and returned to the host",
                "[host] PASS teardown reclaims every page the guest still had",
                "[host] result: 96 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 120,
        },
        Scenario {
            name: "block1g: a 1 GiB guest block split two levels deep and merged back",
            args: RunArgs { mem: "3G".into(), guest_mem: vec!["1G".into()], ..base("block1g") },
            lines: vec![
                "[host] vm 1: 'guest-test' loaded, 1024 MiB donated at PA 0x80000000 (IPA 0x40000000), entry 0x40080000",
                "[vm 1] PASS 1G-aligned guest memory is mapped with a 1G block",
                "[vm 1] PASS 1G → 2M → 4K: two table pages",
                "[vm 1] PASS merged back to one 1G block",
                "[host] vm 1: destroyed, 1048576 KiB scrubbed and returned to the host",
                "[host] result: 14 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 120,
        },
        Scenario {
            name: "two-vms: two guests cannot reach each other's memory",
            args: base("two-vms"),
            lines: vec![
                "[host] vm 1: 'guest-test' loaded, 32 MiB donated at PA 0x42400000 (IPA 0x40000000), entry 0x40080000",
                "[host] vm 2: 'guest-test' loaded, 32 MiB donated at PA 0x44400000 (IPA 0x40000000), entry 0x40080000",
                "[host] PASS a page of VM A cannot be donated to VM B (EPERM)",
                "[host] PASS a page of VM B cannot be donated to VM A (EPERM)",
                "[vm 1] PASS I cannot reach memory beyond mine (another VM's or anyone's)",
                "[vm 2] PASS I cannot reach memory beyond mine (another VM's or anyone's)",
                "[host] result: 17 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 90,
        },
        Scenario {
            name: "hostile: bad host calls get exact errors and change nothing",
            args: base("hostile"),
            lines: vec![
                "[host] PASS donate: hyp memory is EPERM",
                "[host] PASS donate: the same page twice is EPERM",
                "[host] PASS pin: a guest-private page is EPERM",
                "[host] PASS reclaim_hyp: back to the host",
                "[host] PASS reclaim_hyp: the carve-out base is EPERM",
                "[host] PASS host still cannot read the carve-out base",
                "[host] PASS reclaim_hyp: the hyp image is EPERM",
                "[host] PASS host still cannot read the hyp image",
                "[host] PASS reclaim_hyp: a page-pool page is EPERM",
                "[host] PASS host still cannot read the page-pool page",
                "[host] PASS vcpu_run: a destroyed VM is ENOENT",
                "[host] PASS vcpu_create before the first run",
                "[host] PASS MMIO read exit: x6 is 0, not the guest's register (it held a secret)",
                "[host] PASS vcpu_create after the VM's first run is EPERM",
                "[host] PASS the host reads the page the guest shared",
                "[host] PASS a host instruction fetch from a page a guest shared gets an instruction abort",
                "[host] PASS vcpu_run: the guest powers off",
                "[host] PASS vm_create: 255 VMs exist at once",
                "[host] PASS vcpu_create: 8 vCPUs each fit in the hyp's pool",
                "[host] PASS vm_create: the 256th VM is ENOMEM",
                "[host] PASS vm_create: a refused VM takes no hyp memory",
                "[host] PASS vcpu_create: a stale handle is ENOENT",
                "[host] PASS vm_destroy: all 255, the hyp's pool back to where it was",
                "[host] result: 80 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 60,
        },
        Scenario {
            name: "leaks: no register crosses the world switch (every exit kind, host -> guest, guest -> fresh guest)",
            args: RunArgs { smp: 1, ..base("leaks") },
            lines: leaks_lines(),
            absent: vec!["FAIL", "PANIC"],
            // The guest's own check after each exit it comes back from
            // (the hyp moves FP/SIMD lazily: its first access after it).
            anywhere: EXIT_KINDS
                .iter()
                .filter(|k| **k != "power-off")
                .map(|k| line(format!("[vm 1] PASS leaks: {k} exit: the guest's FP/SIMD registers are its own after it")))
                .chain(["[vm *] PASS leaks: fresh VM: PACGA as its first use of PAuth uses its own keys"])
                .collect(),
            code: 0,
            timeout: 60,
        },
        Scenario {
            name: "preempt: a guest spinning with interrupts masked is preempted within its time slice",
            // icount: CNTPCT follows the instructions run, not the loaded host's clock.
            args: RunArgs { smp: 1, icount: true, ..base("preempt") },
            lines: vec![
                "[host] preempt: vm 1 spins with interrupts masked; slice 10000 us",
                "[host] PASS preempt: 20 runs of a guest spinning with interrupts masked all end in IRQ exits with x3 = 1",
                "[host] preempt: 20 runs: min * us, median * us, max * us (slice 10000 us)",
                "[host] PASS preempt: every run ends within its slice + 1%",
                "[host] PASS preempt: every preempted run had its whole slice",
                "[host] PASS preempt: the host's own timer deadline (a tenth of the slice) ends the run at that deadline",
                "[host] PASS preempt: the spinning VM is destroyed",
                "[host] result: 8 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 60,
        },
        Scenario {
            name: "irq: virtual timer (spinning and in WFI), level re-injection, PL011 interrupt",
            // icount: the latency windows are counter ticks of instructions run.
            args: RunArgs { smp: 1, icount: true, ..base("irq") },
            lines: vec![
                "[vm 1] PASS irq: 50 virtual timer interrupts taken while spinning",
                "[vm 1] PASS irq: each within half a millisecond of its deadline (1 ms apart)",
                "[vm 1] guest: timer while spinning: worst latency * ticks (* us)",
                "[vm 1] PASS irq: 20 virtual timer interrupts taken in WFI",
                "[vm 1] PASS irq: each within half a millisecond of its deadline (2 ms apart)",
                "[vm 1] guest: 20 timer waits in WFI: * WFI exits, * IRQ exits (40 ms idle; a 10 ms slice would be 4)",
                "[vm 1] PASS irq: every WFI wait exits to the host (20..40 WFI exits)",
                "[vm 1] PASS irq: an idle guest is not preempted by its time slice (at most 2 IRQ exits)",
                "[vm 1] PASS irq: PPI 27 disabled at the redistributor holds the timer back; enabled, it arrives",
                "[vm 1] PASS irq: a level interrupt held for 3 acknowledgements is taken 3 times",
                "[vm 1] PASS irq: the device saw 3 acknowledgements",
                "[vm 1] PASS irq: GICD_ISPENDR1 shows the asserted level interrupt pending",
                "[vm 1] PASS irq: GICD_ISACTIVER1 shows it active after the acknowledge",
                "[vm 1] PASS irq: GICD_ICACTIVER1 deactivates it",
                "[vm 1] PASS irq: GICR_ISPENDR0 shows an SGI sent to itself pending",
                "[vm 1] PASS irq: GICR_ICPENDR0 clears it",
                "[vm 1] PASS irq: the cleared SGI is never taken",
                "[vm 1] PASS irq: WFI with an interrupt active waits for one that preempts it (the timer), not one of equal priority",
                "[vm 1] PASS irq: that WFI gave the CPU back to the host once",
                "[vm 1] guest: this line was written by the PL011 transmit interrupt",
                "[vm 1] PASS irq: one PL011 transmit interrupt per character",
                "[vm 1] PASS irq: no unexpected interrupt",
                "[vm 1] PASS irq: the hyp accepted every VCPU_IRQ call of the VMM",
                "[vm 1] guest: 25 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 120,
        },
        Scenario {
            name: "trace-irq: interrupt injections stream as trace records (virtual timer, PL011, level device)",
            args: RunArgs { smp: 1, icount: true, trace: Some("irqs".into()), ..base("irq") },
            lines: vec!["[vm 1] guest: 25 passed, 0 failed", "[hyp] system off: status 0 (Ok)"],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![
                "[hyp] trace * | irq    vm1/vcpu0 injected 1 waiting 0 vtimer in-lrs 27",
                "[hyp] trace * | irq    vm1/vcpu0 injected 1 waiting 0 in-lrs 33",
                "[hyp] trace * | irq    vm1/vcpu0 injected 1 waiting 0 in-lrs 34",
            ],
            code: 0,
            timeout: 120,
        },
        irq_smp("irq-smp: 4 vCPUs on 4 host CPUs: PSCI CPU_ON/CPU_OFF/AFFINITY_INFO, an SGI ring in WFI", 4),
        irq_smp("irq-smp1: the same 4 vCPUs time-sliced on one host CPU", 1),
        Scenario {
            name: "traps: PMU, debug, physical timer, SVE/SME, set/way, ACTLR, LOR, RAS, SCXTNUM, SGIs, ID registers",
            // icount: the host's PMU check counts instructions retired.
            args: RunArgs { icount: true, ..base("traps") },
            lines: {
                let mut v = vec![
                    "[host] PASS traps: the host's PMU counts its own instructions",
                    "[host] PASS traps: the host cannot count the hyp's instructions (EL2 counting prohibited)",
                ];
                v.extend(TRAPS_ROWS);
                v.extend([
                    "[vm 1] guest: 66 passed, 0 failed",
                    "[host] result: 74 passed, 0 failed",
                    "[hyp] system off: status 0 (Ok)",
                ]);
                v
            },
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 60,
        },
        Scenario {
            name: "bench-scale: the scale rows of cargo xtask bench (1, 16 and 255 VMs at once), memory overhead, boot",
            args: RunArgs {
                icount: true,
                append: Some("hyp.bench_pmu shim.bench_n=20".into()),
                ..base("bench-scale")
            },
            lines: vec![
                "[vm 1] [bench] scale: mmio exit round trip (1 VM) n=20 el2=* all=*",
                "[vm 1] [bench] scale: mem_share 4K (1 VM) n=20 el2=* all=* pte=40 tlbi=0 alloc=0 free=0",
                "[vm 1] [bench] scale: mem_unshare 4K (1 VM) n=20 el2=*",
                "[bench] scale: host vcpu_irq state (1 VM) n=20 el2=*",
                "[vm *] [bench] scale: mmio exit round trip (16 VMs) n=20 el2=*",
                "[vm *] [bench] scale: mem_share 4K (16 VMs) n=20 el2=*",
                "[bench] scale: host vcpu_irq state (16 VMs) n=20 el2=*",
                "[bench-size] hyp memory per VM (bytes, 1 vCPU, 1 page donated) = *",
                "[vm *] [bench] scale: mmio exit round trip (255 VMs) n=20 el2=*",
                "[vm *] [bench] scale: mem_unshare 4K (255 VMs) n=20 el2=*",
                "[bench] scale: host vcpu_irq state (255 VMs) n=20 el2=*",
                "[host] PASS scale rows: 255 VMs existed at once, and were destroyed",
                "[bench-size] boot: EL2 instructions from reset to the host's entry = *",
                "[bench-size] hyp memory per VM (bytes, empty stage-2, no vCPU) = *",
                "[bench-size] hyp memory per vCPU (bytes, average of 8) = *",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 300,
        },
        Scenario {
            name: "bench-irq: the interrupt rows of cargo xtask bench (injection, EOI, timer, SGI between vCPUs)",
            args: RunArgs { icount: true, append: Some("hyp.bench_pmu".into()), ..base("bench-irq") },
            lines: vec![
                "[vm 1] [bench] virtual interrupt (SGI to self) to handler entry n=100 el2=* all=* pte=0 tlbi=0 alloc=0 free=0",
                "[vm 1] [bench] guest EOI (edge, no exit) n=100 el2=0 all=*",
                "[vm 1] [bench] device interrupt (VMM line via MMIO exit) to handler entry n=100 el2=*",
                "[vm 1] [bench] guest EOI (level, maintenance interrupt) n=100 el2=*",
                "[vm 1] [bench] virtual timer interrupt round trip (arm to handler entry) n=100 el2=*",
                "[vm 1] [bench] SGI round trip between 2 vCPUs (time-sliced, 2 hops) n=100 el2=*",
                "[vm 1] PASS bench-irq: every measured interrupt arrived",
                "[host] PASS interrupt bench guest ran its measurements",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 120,
        },
        Scenario {
            name: "virtio: virtio-mmio console and blk in the VMM, guest memory through shared pages only; hostile rings and buffers",
            // The invariant checker after every hypercall: the devices' pins
            // stay on shared pages and are all dropped.
            args: RunArgs { append: Some("hyp.check_invariants".into()), ..base("virtio") },
            lines: vec![
                "[host] PASS virtio: a DMA pool outside guest RAM is refused",
                "[host] vm 1: virtio-console at 0xa000000 (INTID 48), virtio-blk at 0xa000200 (INTID 49, 2048 sectors), DMA pool 0x43000000+0x10000",
                "[vm 1] PASS virtio: two virtio,mmio nodes at 0xa000000 and 0xa000200, SPIs 16 and 17 level-high, dma-coherent",
                "[vm 1] PASS virtio: both name the 64 KiB restricted-dma-pool (memory-region); it is not no-map",
                "[vm 1] PASS virtio: MMIO_GUARD of the 50 granules the driver maps (PL011, GIC, virtio)",
                "[vm 1] PASS virtio: MEM_SHARE of the 16 pages of the DMA pool",
                "[vm 1] PASS virtio: console: magic, version 2, device ID 3",
                "[vm 1] PASS virtio: console: offers VERSION_1 and ACCESS_PLATFORM, nothing else",
                "[vm 1] PASS virtio: console: FEATURES_OK kept for VERSION_1 | ACCESS_PLATFORM",
                "[vm 1 hvc0] hello from the guest over virtio-console (2 descriptors)",
                "[vm 1] PASS virtio: console: the transmit chain comes back in the used ring",
                "[vm 1] PASS virtio: console: one used-buffer interrupt (INTID 48); after the ACK InterruptStatus reads 0",
                "[vm 1] PASS virtio: console: the receive queue keeps its buffer (no input)",
                "[vm 1] PASS virtio: blk: device ID 2",
                "[vm 1] PASS virtio: blk: capacity 2048 sectors (config space)",
                "[vm 1] PASS virtio: blk: FEATURES_OK kept",
                "[vm 1] PASS virtio: blk: sectors 0-7 read match the disk",
                "[vm 1] PASS virtio: blk: sectors 1000-1002 read into two chained buffers match",
                "[vm 1] PASS virtio: blk: the last sector reads; one past the end is IOERR",
                "[vm 1] PASS virtio: blk: GET_ID answers \"pkvm-rs virtio-blk\"",
                "[vm 1] PASS virtio: blk: a write of sector 5 reads back",
                "[vm 1] PASS virtio: blk: an unknown request type is UNSUPP",
                "[vm 1] PASS virtio: blk: one used-buffer interrupt (INTID 49) per request",
                "[vm 1] PASS virtio: blk: a read into a private page is IOERR; the page is untouched",
                "[vm 1] PASS virtio: blk: the host counted one request refused for memory not shared",
                "[vm 1] PASS virtio: blk: a buffer running into a private page is IOERR; neither page written",
                "[vm 1] PASS virtio: blk: a chain whose second buffer is private is IOERR; the first is not written",
                "[vm 1] PASS virtio: blk: buffers outside guest RAM (below it, wrapping around) are IOERR",
                "[vm 1] PASS virtio: blk: a write from a private page is IOERR; the sector is unchanged",
                "[vm 1] PASS virtio: blk: a status byte in a private page: returned with length 0, nothing written",
                "[vm 1] PASS virtio: blk: counted as memory not shared",
                "[vm 1] PASS virtio: console: a private transmit buffer prints nothing and is counted",
                "[vm 1] PASS virtio: blk: QueueSel 1 (no such queue): QueueNumMax 0, setup refused and counted",
                "[vm 1] PASS virtio: blk: QueueNotify of queue 7 changes nothing and is counted",
                "[vm 1] PASS virtio: blk: QueueNotify of a queue not set up after a reset is refused and counted",
                "[vm 1] PASS virtio: blk: a descriptor loop: DEVICE_NEEDS_RESET, a configuration interrupt, nothing used",
                "[vm 1] PASS virtio: blk: notifications are refused until the reset",
                "[vm 1] PASS virtio: blk: after a reset the device works again",
                "[vm 1] PASS virtio: blk: a descriptor table in a private page: DEVICE_NEEDS_RESET",
                "[vm 1] PASS virtio: blk: a used ring in a private page: DEVICE_NEEDS_RESET before the request is served",
                "[vm 1] PASS virtio: blk: an available index 9 ahead of an 8-entry queue: DEVICE_NEEDS_RESET",
                "[vm 1] PASS virtio: blk: a head index past the queue: DEVICE_NEEDS_RESET",
                "[vm 1] PASS virtio: blk: FEATURES_OK refused without VERSION_1",
                "[vm 1] PASS virtio: blk: the device still serves reads at the end",
                "[vm 1] guest: virtio: blk counters: [18, 7, 2, 5, 5]",
                "[vm 1] PASS virtio: no unexpected interrupt",
                "[vm 1] PASS virtio: MEM_UNSHARE of the pool: no page left pinned by the host (no UNSHARE_PENDING exit)",
                "[vm 1] guest: 43 passed, 0 failed",
                "[host] vm 1: virtio-console (slot 0): 2 requests, 1 refused for memory not shared, 0 bad requests, 0 ring errors, 0 bad register accesses, status 0xf",
                "[host] vm 1: virtio-blk (slot 1): 18 requests, 7 refused for memory not shared, 2 bad requests, 5 ring errors, 5 bad register accesses, status 0xf",
                "[host] vm 1: virtio: 316 MMIO exits, 170 hypercalls to reach guest memory (PAGE_STATE, PIN, UNPIN)",
                "[host] vm 1: 16 MEM_SHARE, 16 MEM_UNSHARE, 50 MMIO_GUARD calls; 50 granules guarded",
                "[host] PASS virtio: the hyp counted the pool's 16 shares and unshares and the 50 guards",
                "[host] PASS virtio: the invariant checker ran after every hypercall and found nothing",
                "[host] PASS virtio: every pool page is private again and unpinned",
                "[host] PASS virtio: the disk holds the guest's write of sector 5 and nothing else changed",
                "[host] result: 53 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC", "unshare of IPA", "guest abort"],
            anywhere: vec![],
            code: 0,
            timeout: 120,
        },
        Scenario {
            name: "virtio-race: reads into a page another vCPU keeps unsharing (2 vCPUs on 2 host CPUs): OK or IOERR, never a host fault",
            args: RunArgs { smp: 2, append: Some("hyp.check_invariants".into()), ..base("virtio-race") },
            lines: vec![
                "[host] vm 1: 2 vCPUs, each on a host CPU of its own",
                "[vm 1] PASS virtio-race: MEM_SHARE of the 16 pages of the DMA pool",
                "[vm 1] PASS virtio-race: vCPU 1 starts unsharing and sharing the data page",
                "[vm 1] guest: virtio-race: * OK, * IOERR, * unshare/share rounds on vCPU 1, * UNSHARE_PENDING exits",
                "[vm 1] PASS virtio-race: 200 reads into a page vCPU 1 keeps unsharing: each OK with the right data, or IOERR with the page untouched",
                "[vm 1] PASS virtio-race: the host refused exactly the IOERR requests (memory not shared)",
                "[vm 1] PASS virtio-race: every MEM_UNSHARE and MEM_SHARE of vCPU 1 succeeded",
                "[vm 1] PASS virtio-race: the device serves reads afterwards",
                "[vm 1] guest: 6 passed, 0 failed",
                "[host] vm 1: virtio-blk (slot 1): 201 requests, * refused for memory not shared, 0 bad requests, 0 ring errors, 0 bad register accesses, status 0xf",
                "[host] PASS virtio-race: the disk is unchanged",
                "[host] result: 12 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC", "guest abort"],
            anywhere: vec![],
            code: 0,
            timeout: 180,
        },
        Scenario {
            name: "pmu-owned: hyp.bench_pmu leaves the PMU to the host and guests, EL2 counting on",
            args: RunArgs { icount: true, append: Some("hyp.bench_pmu".into()), ..base("pmu-owned") },
            lines: vec![
                "[host] PASS pmu-owned: with hyp.bench_pmu the host counts the hyp's instructions",
                "[vm 1] PASS pmu-owned: ID_AA64DFR0_EL1.PMUVer is not 0",
                "[vm 1] PASS pmu-owned: PMCCFILTR_EL0 keeps what the guest writes",
                "[host] result: 9 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 60,
        },
        Scenario {
            name: "edu: a PCI device DMAs only where the host may: its pages, pinned shared pages; never guest-private, unpinned or hyp pages",
            args: RunArgs {
                qemu_args: Some(EDU_DEVICE.into()),
                trace: Some("dma,transitions".into()),
                append: Some("hyp.check_invariants".into()),
                ..base("edu")
            },
            lines: vec![
                "[hyp]   hidden  0x0009050000..0x0009070000 smmuv3@9050000 (SMMUv3: the hyp's (DMA isolation))",
                "[hyp] SMMUv3 at 0x9050000: IDR0 0xd44101b IDR1 * IDR5 *",
                "[hyp] SMMUv3: 256 streams -> DMA view (VMID 1, 40 bit, root *), coherent, GBPA abort, SMMUEN",
                "[host] PASS the host DTB has no SMMU",
                "[host] PASS no iommu-map or iommus is left (they named the SMMU)",
                "[hyp] host: read at IPA 0x9050000 (PC *) refused (EINVAL): abort injected",
                "[host] PASS a read of the SMMU's registers aborts",
                "[host] PASS a write of SMMU_CR0 (turning it off) aborts",
                "[host] PCIe: ECAM at 0x4010000000, 32-bit window 0x10000000..0x3eff0000",
                "[host] PCIe 00:01.0: edu, BAR0 0x10000000 (1024 KiB), bus mastering on",
                "[host] PASS edu answers through its BAR",
                "[host] dma: edu (stream 0x8) -> PA *: landed, data checked",
                "[host] PASS DMA into a host-owned page lands (data checked)",
                "[hyp] trace * | dma    stream=0x8 write addr=0x40100000 translation fault (event 0x10) -> blocked",
                "[host] dma: edu (stream 0x8) -> PA 0x40100000: blocked, 2 SMMU event(s), the last 0x10 (write) at 0x40100004",
                "[host] PASS DMA into the hyp's memory is blocked",
                "[hyp] trace * | dma    stream=0x8 write addr=* translation fault (event 0x10) -> blocked",
                "[host] dma: edu (stream 0x8) -> PA *: blocked, 2 SMMU event(s), the last 0x10 (write) at *",
                "[vm 1] PASS dma: a DMA into my private page is blocked",
                "[vm 1] PASS dma: my private page still holds my data",
                "[vm 1] PASS dma: MEM_SHARE of a page",
                "[hyp] trace * | dma    stream=0x8 write addr=* translation fault (event 0x10) -> blocked",
                "[host] dma: edu (stream 0x8) -> PA *: blocked, 2 SMMU event(s), the last 0x10 (write) at *",
                "[vm 1] PASS dma: shared but not pinned: the DMA is blocked",
                "[vm 1] PASS dma: my shared page is unchanged",
                "[hyp] trace * | trans  host host_pin addr=* size=0x1000 -> ok",
                "[vm 1] PASS dma: the host pins the shared page",
                "[host] dma: edu (stream 0x8) -> PA *: landed, data checked",
                "[vm 1] PASS dma: shared and pinned: the DMA lands",
                "[vm 1] PASS dma: I read what the device wrote",
                "[hyp] trace * | trans  vm1/vcpu0 guest_unshare_host addr=* size=0x1000 -> unshare pending",
                "[host] vm 1: unshare of IPA * pending on 1 host pin(s) (page still shared: true); unpinning",
                "[hyp] trace * | trans  host host_unpin addr=* size=0x1000 -> ok",
                "[hyp] trace * | trans  vm1/vcpu0 guest_unshare_host addr=* size=0x1000 -> ok",
                "[vm 1] PASS dma: MEM_UNSHARE completes once the host unpins",
                "[vm 1] PASS dma: the unshare waited for the pin (one UNSHARE_PENDING exit)",
                "[hyp] trace * | dma    stream=0x8 write addr=* translation fault (event 0x10) -> blocked",
                "[host] dma: edu (stream 0x8) -> PA *: blocked, 2 SMMU event(s), the last 0x10 (write) at *",
                "[vm 1] PASS dma: after MEM_UNSHARE a DMA into the page is blocked",
                "[vm 1] PASS dma: the page holds my data, private again",
                "[vm 1] guest: 12 passed, 0 failed",
                "[host] dma: 8 SMMU event(s) since boot",
                "[host] PASS every blocked DMA left an SMMU event",
                "[host] PASS no SMMU event record was lost (no event queue overflow)",
                "[host] result: 27 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC", "INVARIANT"],
            anywhere: vec![],
            code: 0,
            timeout: 120,
        },
        Scenario {
            name: "aborts: host stage-2 aborts on the short entry: resolved, refused or declined, every register intact",
            args: base("aborts"),
            lines: vec![
                "[host] PASS aborts: DONATE_HYP + RECLAIM_HYP unmapped the range",
                "[host] PASS aborts: a load that faults and is resolved: the value loaded, every other register and NZCV intact",
                "[host] PASS aborts: the range unmapped again",
                "[host] PASS aborts: a store that faults and is resolved: the value stored, every register and NZCV intact",
                "[host] PASS aborts: the range unmapped once more",
                "[host] PASS aborts: a fetch that faults and is resolved: the code ran, every register (but the link) and NZCV intact",
                "[host] PASS aborts: a page donated to the hyp",
                "[hyp] host: read at IPA * (PC *) refused (EPERM): abort injected",
                "[host] PASS aborts: a refused load gets its abort at its address, the destination and every register and NZCV intact",
                "[hyp] host: write at IPA * (PC *) refused (EPERM): abort injected",
                "[host] PASS aborts: a refused store gets its abort (WnR set), every register and NZCV intact",
                "[host] PASS aborts: the page reclaimed",
                "[host] aborts: GICR_TYPER 0x10 into x9 (plain read: 0x10)",
                "[host] PASS aborts: an emulated GICR load (the full frame): the value in its register, every other register and NZCV intact",
                "[host] result: 14 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "aborts: x", "aborts: NZCV"],
            anywhere: vec![],
            code: 0,
            timeout: 120,
        },
        Scenario {
            name: "devices: the host cannot program a device to write memory (ITS, fw_cfg, LPIs hidden)",
            args: base("devices"),
            lines: vec![
                "[hyp]   hidden  0x0009020000..0x0009020018 fw-cfg@9020000 (fw_cfg: its DMA interface reads and writes any PA)",
                "[hyp]   hidden  0x0008080000..0x00080a0000 its@8080000 (GIC ITS: its tables and command queue live at any PA)",
                "[hyp] gicr: 1 redistributor(s); RD_base page 0 emulated for the host (LPIs hidden)",
                "[host] PASS the host DTB has no GIC ITS",
                "[host] PASS the host DTB has no fw_cfg",
                "[host] PASS no msi-map or msi-parent is left (they named the ITS)",
                "[hyp] host: read at IPA 0x8080100 (PC *) refused (EINVAL): abort injected",
                "[host] PASS a read of GITS_BASER0 aborts at its address",
                "[host] PASS a write of GITS_BASER0 aborts (WnR set)",
                "[host] PASS a read of the fw_cfg data register aborts",
                "[host] PASS a write of the fw_cfg DMA address aborts",
                "[host] GICR_TYPER as the host sees it: 0x10",
                "[host] PASS GICR_TYPER: PLPIS and DirectLPI read 0, Last still reads 1",
                "[host] PASS GICR_PROPBASER ignores a write and reads 0",
                "[host] PASS GICR_PENDBASER ignores a write and reads 0",
                "[host] PASS GICR_CTLR.EnableLPIs stays 0 after a write of 1",
                "[host] PASS GICR_WAKER: ProcessorSleep 1 -> ChildrenAsleep 1, 0 -> 0",
                "[hyp] host: read at IPA 0x80a0070 (PC *) in an emulated GICR page: not a single register access, abort injected",
                "[host] PASS an LDP (no syndrome) to the page aborts",
                "[host] PASS a byte load from the page aborts",
                "[host] PASS GICR_PIDR2 (RD_base, past page 0) reads GICv3 directly",
                "[host] PASS the SGI_base frame is still mapped",
                "[host] result: 19 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 60,
        },
        Scenario {
            name: "guests: run --guest: plain QEMU-virt EL1 programs run as protected guests",
            args: RunArgs {
                guest: vec![guest_elf(), guest_elf()],
                guest_mem: vec!["16M".into(), "8M".into()],
                ..base("guests")
            },
            lines: vec![
                "[host] vm 1: 'guest-test' loaded, 16 MiB donated at PA 0x42400000 (IPA 0x40000000), entry 0x40080000",
                "[vm 1] guest: hello from EL1, 16 MiB of private memory",
                "[host] vm 1: destroyed, 16384 KiB scrubbed and returned to the host",
                "[vm 2] guest: hello from EL1, 8 MiB of private memory",
                "[host] vm 2: destroyed, 8192 KiB scrubbed and returned to the host",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 60,
        },
        Scenario {
            name: "guest-vcpus: --guest-vcpus gives plain --guest programs several vCPUs, started with PSCI CPU_ON (time-sliced and one host CPU each)",
            args: RunArgs {
                smp: 2,
                guest: vec![guest_elf(), guest_elf()],
                guest_mem: vec!["16M".into(), "16M".into()],
                guest_vcpus: vec![3, 2],
                ..base("guests")
            },
            lines: vec![
                "[host] vm 1: 3 vCPUs time-sliced on 1 host CPU",
                "[vm 1] guest: hello from EL1, 16 MiB of private memory",
                "[vm 1] guest: 3 vCPUs in my DTB; vCPUs 1.. came up with MPIDR Aff0 [1, 2]",
                "[host] vm 1: destroyed, 16384 KiB scrubbed and returned to the host",
                "[host] vm 2: 2 vCPUs, each on a host CPU of its own",
                "[vm 2] guest: hello from EL1, 16 MiB of private memory",
                "[vm 2] guest: 2 vCPUs in my DTB; vCPUs 1.. came up with MPIDR Aff0 [1]",
                "[host] vm 2: destroyed, 16384 KiB scrubbed and returned to the host",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 60,
        },
        Scenario {
            name: "trace: faults, splits, merges and transitions stream live with exact records",
            args: RunArgs { trace: Some("faults,splits,transitions,hypercalls".into()), ..base("guest-tests") },
            lines: vec![
                "[hyp] trace * | fault  host write ipa=0x42e07000 far=0x42e07000 pc=* esr=0x93c18046 translation L2 isv size=8 x1 sf=1 -> abort injected",
                "[hyp] trace * | inject host abort far=0x42e07000 pc=* esr=0x93c18046",
                "[hyp] trace * | split  vm1/vcpu0 ipa=0x40a00000 level 2 -> 3",
                "[hyp] trace * | trans  vm1/vcpu0 guest_share_host addr=0x40a07000 size=0x1000 -> ok",
                "[hyp] trace * | trans  vm1/vcpu0 guest_share_host addr=0x40a07000 size=0x1000 -> refused (EPERM)",
                "[hyp] trace * | merge  vm1/vcpu0 ipa=0x40a00000 level 2 <- 3",
                "[hyp] trace * | trans  vm1/vcpu0 guest_unshare_host addr=0x40c01000 size=0x1000 -> unshare pending",
                "[hyp] trace * | trans  vm1/vcpu0 guest_relinquish addr=0x41203000 size=0x1000 -> ok",
                "[hyp] trace * | fault  vm1/vcpu0 read ipa=0x41203000 far=0x41203000 pc=* translation L3 * -> guest abort exit",
                "[hyp] trace * | inject vm1/vcpu0 abort far=0x41203000 pc=*",
                "[hyp] trace * | hvc    vm1/vcpu0 fid=0xc6000007 (MMIO_GUARD) x1=0x9000008 -> ret=0xfffffffffffffffd",
                "[hyp] trace * | hvc    vm1/vcpu0 fid=0xc6000007 (MMIO_GUARD) x1=0x9000000 -> ret=0x0",
                "[hyp] trace * | fault  vm1/vcpu0 read ipa=0x30000000 far=0x30000000 pc=* translation * -> abort injected",
                "[hyp] trace * | inject vm1/vcpu0 abort far=0x30000000 pc=*",
                "[hyp] trace * | trans  vm1/vcpu0 vm_teardown addr=0x0 size=0x3ffe000 -> ok",
                "[host] result: 96 passed, 0 failed",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 120,
        },
        Scenario {
            name: "trace-overflow: a small ring overflows, the loss is counted, the host drains it",
            args: RunArgs {
                trace_dump: Some("text".into()),
                trace_buf: Some(8),
                append: Some("shim.expect_trace_overflow".into()),
                ..base("boot")
            },
            lines: vec![
                "[trace-dump] * | split  host ipa=0x40000000 level 1 -> 2",
                "[trace-dump] * | split  hyp ipa=0x40000000 level 1 -> 2",
                "[host] trace: drained 8 records, 9 lost to overflow",
                "[host] PASS a small trace ring overflows and the loss is counted",
            ],
            absent: vec!["FAIL", "PANIC", "[hyp] trace "],
            anywhere: vec![],
            code: 0,
            timeout: 60,
        },
        Scenario {
            name: "dump-s2: every stage-2 as ranges; the split and the merge are visible",
            args: RunArgs { dump_s2: true, scenario: None, ..base("demo") },
            lines: vec![
                "[hyp] s2 host: 0x0040000000..0x0042200000 hyp-owned (unmapped) L2",
                "[hyp] s2 host: 0x0042c03000..0x0042c04000 -> 0x42c03000 shared-borrowed Normal rw- L3",
                "[hyp] s2 vm 1: 0x0040803000..0x0040804000 -> 0x42c03000 shared-owned Normal rwx L3",
                "[hyp] s2 vm 1: 2 table pages",
                "[hyp] s2 vm 1: 0x0040000000..0x0044000000 -> 0x42400000 owned Normal rwx L2",
                "[hyp] s2 vm 1: 1 table pages",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 90,
        },
        Scenario {
            name: "host-image: run --host IMAGE: any arm64 Image boots as the host, with --append on its command line",
            args: RunArgs {
                host: Some(crate::target_dir().join(crate::PAYLOAD_TARGET).join("debug/host-shim.bin")),
                append: Some("shim.test=boot".into()),
                scenario: None,
                ..base("boot")
            },
            lines: vec![
                "[hyp] host: Image * KiB at 0x42200000, DTB at 0x7fc00000, initrd *",
                "[host] host-shim: running at EL1, DTB at 0x7fc00000",
                "[host] PASS abort on writing hyp memory (WnR set)",
                "[host] result: 3 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: vec!["FAIL", "PANIC"],
            anywhere: vec![],
            code: 0,
            timeout: 60,
        },
        Scenario {
            name: "runner-panic: a hyp panic is a failure with file:line",
            args: selftest("panic"),
            lines: vec!["[hyp] PANIC at hyp/src/boot/mod.rs:*: selftest: deliberate panic", "[hyp] system off: status 101 (Panic)"],
            absent: vec!["[host]"],
            anywhere: vec![],
            code: 101,
            timeout: 60,
        },
        Scenario {
            name: "runner-fault: an unexpected EL2 exception is decoded and fails",
            args: selftest("fault"),
            lines: vec![
                "[hyp] ERROR: unexpected exception: sync from EL2h",
                "[hyp] ERROR:   ESR_EL2 0x*: EC=0x25 (data abort (EL2)) FSC=0x04 translation fault level 0 read*",
                "[hyp] system off: status 3 (Fatal)",
            ],
            absent: vec!["[host]"],
            anywhere: vec![],
            code: 3,
            timeout: 60,
        },
        Scenario {
            name: "runner-hang: a hang is caught by the timeout",
            args: selftest("hang"),
            lines: vec!["[hyp] selftest: hanging"],
            absent: vec!["[hyp] system off"],
            anywhere: vec![],
            code: 124,
            timeout: 8,
        },
        el2_probe(
            "el2-wx: writing the hyp's own .text at EL2 faults (read-only, WXN on)",
            "wx",
            vec![
                "[hyp] EL2 stage-1: 0x0040200000..* text r-x",
                "[hyp] selftest: writing .text at 0x0000000040200000",
                "[hyp] ERROR: unexpected exception: sync from EL2h",
                "[hyp] ERROR:   ESR_EL2 0x*: EC=0x25 (data abort (EL2)) FSC=0x0f permission fault level 3 write*",
                "[hyp] ERROR:   FAR_EL2 0x0000000040200000  ELR_EL2 *",
            ],
        ),
        el2_probe(
            "el2-exec-data: executing from the hyp's .data at EL2 faults (XN)",
            "exec_data",
            vec![
                "[hyp] selftest: executing .data at {data}",
                "[hyp] ERROR: unexpected exception: sync from EL2h",
                "[hyp] ERROR:   ESR_EL2 0x*: EC=0x21 (instruction abort (EL2)) FSC=0x0f permission fault level 3",
                "[hyp] ERROR:   FAR_EL2 {data}  ELR_EL2 {data}  SPSR_EL2 *",
            ],
        ),
        el2_probe(
            "el2-read-host: host RAM is not mapped at EL2: reading it faults",
            "read_host",
            vec![
                "[hyp] host: Image * KiB at 0x42200000, DTB at *",
                "[hyp] selftest: reading host RAM at 0x0000000042200000",
                "[hyp] ERROR: unexpected exception: sync from EL2h",
                "[hyp] ERROR:   ESR_EL2 0x*: EC=0x25 (data abort (EL2)) FSC=0x0* translation fault level * read*",
                "[hyp] ERROR:   FAR_EL2 0x0000000042200000  ELR_EL2 *",
            ],
        ),
        el2_probe(
            "el2-window: a window mapping is gone (TLB invalidated) once it is unmapped",
            "window",
            vec![
                "[hyp] selftest: read host RAM 0x42200000 through the window at {va}; again after the unmap",
                "[hyp] ERROR: unexpected exception: sync from EL2h",
                "[hyp] ERROR:   ESR_EL2 0x*: EC=0x25 (data abort (EL2)) FSC=0x07 translation fault level 3 read*",
                "[hyp] ERROR:   FAR_EL2 {va}  ELR_EL2 *",
            ],
        ),
    ];
    v.extend(linux_host());
    v.push(bad_elf());
    v.extend(linux_guest());
    v.push(bad_image());
    v
}

/// Malformed Linux guests (xtask/src/fixtures.rs) in a bundle of their own:
/// the host shim refuses each with the reason, without a panic.
fn bad_image() -> Scenario {
    Scenario {
        name: "bad-image: the host shim refuses malformed arm64 Images of Linux guests with the reason, and goes on",
        args: RunArgs { guest_bundle: Some(crate::fixtures::path("bad-linux.bundle")), ..base("guests") },
        lines: vec![
            "[host] cannot load Linux guest 'linux-short': bad arm64 Image: shorter than the 64-byte arm64 Image header",
            "[host] cannot load Linux guest 'linux-no-magic': bad arm64 Image: no arm64 Image magic (ARM\\x64 at offset 0x38)",
            "[host] cannot load Linux guest 'linux-no-size': bad arm64 Image: image_size is 0 (a kernel before 3.17 gives no size)",
            "[host] cannot load Linux guest 'linux-big-endian': bad arm64 Image: a big-endian kernel",
            "[host] cannot load Linux guest 'linux-too-big': bad arm64 Image: the kernel, initramfs and DMA pool do not fit in guest memory",
            "[host] cannot load Linux guest 'linux-wraps': bad arm64 Image: the kernel, initramfs and DMA pool do not fit in guest memory",
            "[host] cannot load Linux guest 'linux-odd-offset': bad arm64 Image: text_offset is not a 4 KiB multiple below 2 MiB",
            "[host] result: 3 passed, 7 failed",
            "[hyp] system off: status 1 (HostFailed)",
        ],
        absent: vec!["PANIC", "[vm "],
        anywhere: vec![],
        code: 1,
        timeout: 60,
    }
}

/// Linux as a protected guest (`--linux-guest`): a kernel built from
/// Debian's 6.12 source with guest-linux/config (on first use, cached),
/// its pKVM guest driver against the hyp, and the host's checks after it
/// powered off.
fn linux_guest() -> Vec<Scenario> {
    let run = |smp: u32| RunArgs { linux_guest: true, smp, guest_vcpus: vec![2], scenario: None, ..base("guests") };
    let disk_sha = line(format!("[vm 1] linux-guest: /dev/vda sha256 {}", crate::linux_guest::disk_sha256()));
    let lines = |smp: u32| {
        let mut v = vec![
            "[host] vm 1: Linux guest 'linux' loaded, 128 MiB donated at PA * (IPA 0x40000000), 2 vCPU(s)",
            "[host] vm 1: Image at IPA 0x40200000 (* KiB with BSS), initramfs at IPA * (* KiB), DMA pool at IPA 0x47c00000 (4096 KiB)",
        ];
        v.push(if smp == 2 {
            "[host] vm 1: 2 vCPUs, each on a host CPU of its own"
        } else {
            "[host] vm 1: 2 vCPUs time-sliced on 1 host CPU"
        });
        v.extend([
            "[vm 1] Linux version 6.12.* (pkvm-rs@xtask) (aarch64-linux-gnu-gcc *) #1 SMP Sun Nov 17 00:00:00 UTC 2024",
            "[vm 1] Machine model: linux,dummy-virt",
            "[vm 1] software IO TLB: Reserved memory: created restricted DMA pool at 0x0000000047c00000, size 4 MiB",
            "[vm 1] psci: PSCIv1.1 detected in firmware.",
            "[vm 1] psci: SMC Calling Convention v1.1",
            "[vm 1] smccc: KVM: hypervisor services detected (0x00000000 0x00000000 0x00000000 0x0000029d)",
            "[vm 1] Kernel command line: console=ttyAMA0 panic=-1",
            "[vm 1] GICv3: CPU0: found redistributor 0 region 0:0x00000000080a0000",
            "[vm 1] arch_timer: cp15 timer(s) running at *MHz (virt).",
            "[vm 1] GICv3: CPU1: found redistributor 1 region 0:0x00000000080c0000",
            "[vm 1] CPU1: Booted secondary processor 0x0000000001 [*]",
            "[vm 1] smp: Brought up 1 node, 2 CPUs",
            "[vm 1] DMA: preallocated 128 KiB GFP_KERNEL pool for atomic allocations",
            "[vm 1] 9000000.pl011: ttyAMA0 at MMIO 0x9000000 (irq = *, base_baud = 0) is a PL011 rev3",
            "[vm 1] Run /init as init process",
            "[vm 1] linux-guest: /init running: Linux (none) 6.12.* #1 SMP Sun Nov 17 00:00:00 UTC 2024 aarch64 GNU/Linux",
            "[vm 1] linux-guest: 2 CPU(s) online (0-1)",
            "[vm 1] linux-guest: dmesg: software IO TLB: Reserved memory: created restricted DMA pool at 0x0000000047c00000, size 4 MiB",
            "[vm 1] linux-guest: dmesg: psci: SMC Calling Convention v1.1",
            "[vm 1] linux-guest: dmesg: smccc: KVM: hypervisor services detected (0x00000000 0x00000000 0x00000000 0x0000029d)",
            "[vm 1] linux-guest: dmesg: smp: Brought up 1 node, 2 CPUs",
            "[vm 1] linux-guest: dmesg: virtio-mmio a000000.virtio_mmio: assigned reserved memory node restricted-dma@47c00000",
            "[vm 1] linux-guest: dmesg: virtio-mmio a000200.virtio_mmio: assigned reserved memory node restricted-dma@47c00000",
            "[vm 1] linux-guest: dmesg: virtio_blk virtio1: [vda] 2048 512-byte logical blocks (1.05 MB/1.00 MiB)",
            "[vm 1] linux-guest: /dev/vda: 2048 sectors",
            "[vm 1] linux-guest: sector 0: pkvm-rs virtio-blk test disk, sector 0000 of 2048",
            "[vm 1] linux-guest: sector 1: pkvm-rs virtio-blk test disk, sector 0001 of 2048",
            "[vm 1] linux-guest: sector 1000: pkvm-rs virtio-blk test disk, sector 1000 of 2048",
            "[vm 1] linux-guest: sector 2047: pkvm-rs virtio-blk test disk, sector 2047 of 2048",
            disk_sha,
            "[vm 1 hvc0] linux-guest: hello through the virtio console",
            "[vm 1] linux-guest: wrote a line to /dev/hvc0",
            "[vm 1] linux-guest: poweroff -f",
            "[vm 1] reboot: Power down",
            "[host] vm 1: powered off (* MMIO exits)",
            "[host] PASS the Linux guest powered itself off (PSCI SYSTEM_OFF)",
            "[host] vm 1: virtio-console (slot 0): * requests, 0 refused for memory not shared, 0 bad requests, 0 ring errors, 0 bad register accesses, status 0xf",
            "[host] vm 1: virtio-blk (slot 1): * requests, 0 refused for memory not shared, 0 bad requests, 0 ring errors, 0 bad register accesses, status 0xf",
            "[host] PASS the virtio devices served the Linux guest's requests from shared pages only, with no error",
            "[host] vm 1: the guest's successful calls: MEM_SHARE 1056, MEM_UNSHARE 0, MMIO_GUARD 84 (82 granules guarded now)",
            "[host] vm 1: pages shared with the host now: 1056 (1024 in the restricted DMA pool of 1024 pages, 32 elsewhere)",
            "[host] PASS no page of the Linux guest's DTB or kernel image is shared",
            "[host] PASS the Linux guest shared its whole restricted DMA pool with MEM_SHARE",
            "[host] PASS pages shared now = MEM_SHARE calls - MEM_UNSHARE calls (each call one page)",
            "[hyp] host: read at IPA {kpa} (PC *) refused (EPERM): abort injected",
            "[host] vm 1: host read of the guest kernel's first page (IPA 0x40200000, PA {kpa}): data abort, no data",
            "[host] PASS a Linux guest page outside the DMA pool is private: a host read aborts",
            "[host] PASS a page the Linux guest shared is readable by the host",
            "[host] vm 1: destroyed, 131072 KiB scrubbed and returned to the host",
            "[host] PASS teardown reclaims every page the guest still had",
            "[host] PASS reclaimed pages are zero and the host can use them",
            "[host] result: 12 passed, 0 failed",
            "[hyp] system off: status 0 (Ok)",
        ]);
        v
    };
    let absent = vec![
        "[hyp] PANIC",
        "[hyp] ERROR",
        "FAIL",
        "Kernel panic",
        "Internal error:",
        "WARNING:",
        "BUG:",
        "------------[ cut here ]------------",
        "[host] vm 1: guest abort",
    ];
    vec![
        Scenario {
            name: "linux-guest: Linux 6.12 (built from source) as a protected guest on 2 vCPUs: its pKVM guest \
                   driver finds the hyp, shares its DMA pool and guards its MMIO, CPU1 comes up with PSCI, /init \
                   reads the virtio disk through the bounce buffers and writes to the virtio console; the host \
                   counts its calls and finds its other pages private",
            args: run(2),
            lines: lines(2),
            absent: absent.clone(),
            anywhere: vec![],
            code: 0,
            timeout: 300,
        },
        Scenario {
            name: "linux-guest-trace: the Linux guest's MEM_SHARE and MMIO_GUARD calls stream as hypercall trace records",
            args: RunArgs { linux_guest: true, trace: Some("hypercalls".into()), scenario: None, ..base("guests") },
            lines: vec![
                "[hyp] trace * | hvc    vm1/vcpu0 fid=0x8600ff01 x1=* -> ret=0xb66fb428",
                "[hyp] trace * | hvc    vm1/vcpu0 fid=0x86000000 x1=* -> ret=0x29d",
                "[hyp] trace * | hvc    vm1/vcpu0 fid=0xc6000002 (HYP_MEMINFO) x1=0x0 -> ret=0x1000",
                "[hyp] trace * | hvc    vm1/vcpu0 fid=0xc6000007 (MMIO_GUARD) x1=0x8000000 -> ret=0x0",
                "[hyp] trace * | hvc    vm1/vcpu0 fid=0xc6000007 (MMIO_GUARD) x1=0x80a0000 -> ret=0x0",
                "[hyp] trace * | hvc    vm1/vcpu0 fid=0xc6000003 (MEM_SHARE) x1=* -> ret=0x0",
                "[hyp] trace * | hvc    vm1/vcpu0 fid=0xc6000007 (MMIO_GUARD) x1=0x9000000 -> ret=0x0",
                "[hyp] trace * | hvc    vm1/vcpu0 fid=0xc6000003 (MEM_SHARE) x1=0x47c00000 -> ret=0x0",
                "[hyp] trace * | hvc    vm1/vcpu0 fid=0xc6000003 (MEM_SHARE) x1=0x47fff000 -> ret=0x0",
                "[hyp] trace * | hvc    vm1/vcpu0 fid=0xc6000007 (MMIO_GUARD) x1=0xa000000 -> ret=0x0",
                "[vm 1] linux-guest: poweroff -f",
                "[host] vm 1: the guest's successful calls: MEM_SHARE 1056, MEM_UNSHARE 0, MMIO_GUARD 52 (50 granules guarded now)",
                "[host] result: 12 passed, 0 failed",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: absent.clone(),
            anywhere: vec![],
            code: 0,
            timeout: 300,
        },
        Scenario {
            name: "linux-guest1: the same Linux guest, its 2 vCPUs time-sliced on one host CPU",
            args: run(1),
            lines: lines(1),
            absent,
            anywhere: vec![],
            code: 0,
            timeout: 300,
        },
    ]
}

/// Malformed guest ELFs (xtask/src/fixtures.rs) that only the host shim's
/// loader can catch: refused with the reason; a good guest still runs.
fn bad_elf() -> Scenario {
    Scenario {
        name: "bad-elf: the host shim refuses guest ELFs whose segment sizes and offsets wrap, and goes on",
        args: RunArgs {
            guest: vec![crate::fixtures::path("bad-offset.elf"), crate::fixtures::path("bad-filesz.elf"), guest_elf()],
            guest_mem: vec!["16M".into(), "16M".into(), "16M".into()],
            ..base("guests")
        },
        lines: vec![
            "[host] cannot load guest 'bad-offset.elf': malformed ELF: segment data outside the file",
            "[host] cannot load guest 'bad-filesz.elf': malformed ELF: segment data outside the file",
            "[host] vm 1: 'guest-test' loaded, 16 MiB donated at PA * (IPA 0x40000000), entry 0x40080000",
            "[vm 1] guest: hello from EL1, 16 MiB of private memory",
            "[host] vm 1: destroyed, 16384 KiB scrubbed and returned to the host",
            "[hyp] system off: status 1 (HostFailed)",
        ],
        absent: vec!["PANIC"],
        anywhere: vec![],
        code: 1,
        timeout: 60,
    }
}

/// A virtio-serial PCI device whose console port is the machine's console
/// chardev (`con`, qemu/virt.args): Linux's hvc0 and the PL011 share stdout.
pub const VIRTIO_CONSOLE: &str = "-device virtio-serial-pci -device virtconsole,chardev=con";

/// Real Linux as the host: Debian's 6.12 kernel and a busybox /init
/// (`xtask/linux-host/init`), fetched and cached by `--linux`.
fn linux_host() -> Vec<Scenario> {
    let linux = |append: Option<&str>| RunArgs {
        linux: true,
        smp: 2,
        append: append.map(String::from),
        scenario: None,
        ..base("boot")
    };
    let absent = vec!["[hyp] PANIC", "[hyp] ERROR", "Internal error:", "WARNING: CPU:", "BUG:"];
    vec![
        Scenario {
            name: "linux-host: Debian's Linux 6.12 boots as the host on 2 CPUs to a busybox /init, \
                   sees the hyp's carve-out, gets SIGBUS touching it, powers off",
            args: linux(None),
            lines: vec![
                "[*] Linux version 6.12.*-arm64 *",
                "[*] OF: reserved mem: 0x0000000040000000..0x00000000421fffff (34816 KiB) nomap non-reusable hyp@40000000",
                "[*] psci: PSCIv1.1 detected in firmware.",
                "[*] CPU1: Booted secondary processor 0x0000000001 *",
                "[*] smp: Brought up 1 node, 2 CPUs",
                "[*] Run /init as init process",
                "linux-host: /init running, uname -r 6.12.*-arm64",
                "linux-host: 2 CPUs online (0-1)",
                "linux-host: /proc/cpuinfo: processor : 0",
                "linux-host: reserved-memory: hyp@40000000 reg 0000000040000000 0000000002200000 no-map yes",
                "[hyp] host: read at IPA 0x40000000 (PC *) refused (EPERM): abort injected",
                "linux-host: devmem read of hyp memory at 0x40000000: exit status 135 (SIGBUS is 135)",
                "linux-host: poweroff -f",
                "[hyp] host: PSCI SYSTEM_OFF",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: [&absent[..], &["Kernel panic"]].concat(),
            anywhere: vec!["[hyp] cpu 1: up, entering host at *"],
            code: 0,
            timeout: 240,
        },
        Scenario {
            name: "linux-virtio: Linux's console on a virtio-serial PCI device behind the hyp's SMMU (console=hvc0): \
                   its DMA goes through the DMA view, no SMMU driver of its own",
            args: RunArgs { qemu_args: Some(VIRTIO_CONSOLE.into()), ..linux(Some("console=hvc0")) },
            lines: vec![
                "[*] Kernel command line: console=ttyAMA0 panic=-1 console=hvc0",
                "[*] virtio-pci 0000:00:01.0: enabling device (0000 -> 0003)",
                "[*] printk: legacy console [hvc0] enabled",
                "linux-host: /init running, uname -r 6.12.*-arm64",
                "linux-host: poweroff -f",
                "[hyp] system off: status 0 (Ok)",
            ],
            absent: [&absent[..], &["Kernel panic", "arm-smmu-v3", "iommu: Adding device"]].concat(),
            anywhere: vec![],
            code: 0,
            timeout: 240,
        },
        Scenario {
            name: "linux-reboot: a host PSCI SYSTEM_RESET ends the run as a host reset (status 5)",
            args: linux(Some("linux_host.reboot")),
            lines: vec![
                "linux-host: reboot -f",
                "[hyp] host: PSCI SYSTEM_RESET (the hyp powers off instead)",
                "[hyp] system off: status 5 (HostReset)",
            ],
            absent: [&absent[..], &["Kernel panic"]].concat(),
            anywhere: vec![],
            code: crate::qemu::code::HOST_RESET,
            timeout: 240,
        },
        Scenario {
            name: "linux-panic: a Linux host panic is reported as one (status 6)",
            args: linux(Some("rdinit=/nonexistent")),
            lines: vec![
                "[*] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
                "[hyp] host: PSCI SYSTEM_RESET (the hyp powers off instead)",
                "[hyp] system off: status 5 (HostReset)",
            ],
            absent,
            anywhere: vec![],
            code: crate::qemu::code::HOST_PANIC,
            timeout: 240,
        },
    ]
}

/// Lines a passing scenario prints anyway (fuzz, SMP, preemption and PMU figures).
const FIGURES: [&str; 6] = [
    "[host] fuzz: seed ",
    "[host] smp: ",
    "[host] preempt: ",
    "[host] traps: PMU",
    "[host] pmu-owned: PMU",
    "[host] tlb: longest wait",
];

/// Matches `line` against a pattern where `*` stands for any text.
#[cfg(test)]
fn matches(pat: &str, line: &str) -> bool {
    matches_bound(pat, line, &mut Vec::new())
}

/// A pattern piece: literal text, `*`, or `{name}`.
enum Tok<'a> {
    Lit(&'a str),
    Star,
    Var(&'a str),
}

fn tokens(pat: &str) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let mut rest = pat;
    while !rest.is_empty() {
        let var = rest
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
            .filter(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if let Some((name, r)) = var {
            out.push(Tok::Var(name));
            rest = r;
        } else if let Some(r) = rest.strip_prefix('*') {
            out.push(Tok::Star);
            rest = r;
        } else {
            let end = rest[1..].find(['*', '{']).map_or(rest.len(), |i| i + 1);
            out.push(Tok::Lit(&rest[..end]));
            rest = &rest[end..];
        }
    }
    out
}

fn word_end(s: &str) -> usize {
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len())
}

fn match_toks(toks: &[Tok], s: &str, vars: &mut Vec<(String, String)>) -> bool {
    match toks.first() {
        None => s.is_empty(),
        Some(Tok::Lit(l)) => s.strip_prefix(l).is_some_and(|r| match_toks(&toks[1..], r, vars)),
        Some(Tok::Star) => match toks.get(1) {
            None => true,
            // Only where the next literal occurs.
            Some(Tok::Lit(l)) => s.match_indices(l).any(|(i, _)| match_toks(&toks[1..], &s[i..], vars)),
            Some(_) => (0..=s.len()).filter(|i| s.is_char_boundary(*i)).any(|i| match_toks(&toks[1..], &s[i..], vars)),
        },
        Some(Tok::Var(name)) => {
            if let Some((_, v)) = vars.iter().find(|(n, _)| n == name) {
                let v = v.clone();
                return s.strip_prefix(v.as_str()).is_some_and(|r| word_end(r) == 0 && match_toks(&toks[1..], r, vars));
            }
            let end = word_end(s);
            if end == 0 {
                return false;
            }
            vars.push((name.to_string(), s[..end].to_string()));
            if match_toks(&toks[1..], &s[end..], vars) {
                return true;
            }
            vars.pop();
            false
        }
    }
}

/// Like [`matches`], and `{name}` stands for a word (letters, digits, `_`)
/// that must be the same wherever `name` appears: the first line that
/// matches binds it in `vars` (e.g. an address a run prints twice).
pub fn matches_bound(pat: &str, line: &str, vars: &mut Vec<(String, String)>) -> bool {
    match_toks(&tokens(pat), line, vars)
}

/// Checks a run's output: Err(reason) on mismatch.
pub fn check(s: &Scenario, output: &str, code: i32) -> std::result::Result<(), String> {
    let mut lines = output.lines();
    let mut vars = Vec::new();
    for want in &s.lines {
        if !lines.any(|l| matches_bound(want, l, &mut vars)) {
            return Err(format!("missing (in order): {want}"));
        }
    }
    for want in &s.anywhere {
        if !output.lines().any(|l| matches_bound(want, l, &mut vars)) {
            return Err(format!("missing: {want}"));
        }
    }
    for bad in &s.absent {
        if let Some(l) = output.lines().find(|l| l.contains(bad) && !l.starts_with("[host] fuzz: seed")) {
            return Err(format!("unexpected line: {l}"));
        }
    }
    if code != s.code {
        return Err(format!("exit code {code}, want {}", s.code));
    }
    Ok(())
}

fn host_tests() -> (u32, u32) {
    println!("== host: cargo test (arch-independent core, the VMM's virtio devices, xtask)");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args(["test", "-p", "hyp", "-p", "hyp-core", "-p", "hyp-abi", "-p", "host-shim", "-p", "xtask", "--release"])
        .output();
    let Ok(out) = out else {
        println!("FAIL host tests: could not run cargo test");
        return (0, 1);
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let (mut p, mut f) = (0, 0);
    for l in text.lines() {
        if let Some(r) = l.strip_prefix("test result: ") {
            let num = |key: &str| {
                r.split(';').find_map(|s| {
                    s.trim().strip_suffix(key).and_then(|n| n.trim().rsplit(' ').next()?.parse::<u32>().ok())
                })
            };
            p += num("passed").unwrap_or(0);
            f += num("failed").unwrap_or(0);
        }
        if l.starts_with("test ") && l.ends_with("FAILED") {
            println!("{l}");
        }
    }
    if !out.status.success() && f == 0 {
        println!("{text}");
        f = 1;
    }
    println!("host tests: {p} passed, {f} failed");
    (p, f)
}

impl Scenario {
    /// The short name (`cargo xtask test NAME`): the text before ": ".
    pub fn short(&self) -> &'static str {
        self.name.split_once(": ").map_or(self.name, |(n, _)| n)
    }

    /// What the scenario checks: the text after the short name.
    pub fn about(&self) -> &'static str {
        self.name.split_once(": ").map_or("", |(_, d)| d)
    }
}

/// Checks `names` against the scenario list; the error lists valid names.
pub fn select(list: Vec<Scenario>, names: &[String]) -> Result<Vec<Scenario>> {
    let unknown: Vec<&str> =
        names.iter().map(String::as_str).filter(|n| !list.iter().any(|s| s.short() == *n)).collect();
    if !unknown.is_empty() {
        let valid: Vec<&str> = list.iter().map(Scenario::short).collect();
        anyhow::bail!("unknown scenario(s) {}; valid: {}", unknown.join(", "), valid.join(", "));
    }
    Ok(list.into_iter().filter(|s| names.is_empty() || names.iter().any(|n| n == s.short())).collect())
}

pub fn test_cmd(args: &TestArgs) -> Result<i32> {
    if args.list {
        for s in all() {
            println!("{:<16} {}", s.short(), s.about());
        }
        return Ok(0);
    }
    if args.fuzz && !args.names.is_empty() {
        anyhow::bail!("--fuzz runs the long fuzz scenario only: give no scenario names with it");
    }
    if (args.seed.is_some() || args.calls.is_some()) && !args.fuzz {
        anyhow::bail!("--seed and --calls go with --fuzz");
    }
    if args.calls == Some(0) {
        anyhow::bail!("--calls must be at least 1");
    }
    let selected = select(all(), &args.names)?;
    crate::fixtures::write()?;
    let host = !(args.no_host || args.fuzz || !args.names.is_empty());
    let (mut passed, mut failed) = if host { host_tests() } else { (0, 0) };
    let list = if args.fuzz {
        let seed = args.seed.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1)
        });
        println!("fuzz seed {seed}");
        vec![fuzz(seed, args.calls.unwrap_or(100_000), 4 * 3600)]
    } else {
        selected
    };
    for mut s in list {
        if args.filter.as_ref().is_some_and(|f| !s.name.contains(f.as_str())) {
            continue;
        }
        s.args.release = args.release || args.fuzz;
        if s.args.release {
            // Artefact paths named in scenarios follow the build profile.
            let fix =
                |p: &std::path::PathBuf| std::path::PathBuf::from(p.to_string_lossy().replace("/debug/", "/release/"));
            s.args.host = s.args.host.as_ref().map(fix);
            s.args.guest = s.args.guest.iter().map(fix).collect();
        }
        s.args.timeout = Some(s.timeout);
        let t = std::time::Instant::now();
        let o = run_system(&s.args, false)?;
        match check(&s, &o.output, o.code()) {
            Ok(()) => {
                passed += 1;
                println!("PASS {} ({:.1}s)", s.name, t.elapsed().as_secs_f64());
                // Figures worth keeping from a passing run.
                for l in o.output.lines().filter(|l| FIGURES.iter().any(|p| l.starts_with(p))) {
                    println!("     {l}");
                }
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {}: {}", s.name, why);
                let lines: Vec<&str> = o.output.lines().collect();
                let tail = &lines[lines.len().saturating_sub(200)..];
                println!("---- output (last {} lines) ----\n{}\n----------------", tail.len(), tail.join("\n"));
            }
        }
        let _ = Duration::from_secs(0);
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches("a*c", "abc"));
        assert!(matches("a*", "a"));
        assert!(!matches("a*c", "abd"));
        assert!(matches("x", "x"));
        assert!(!matches("x", "xy"));
        assert!(matches("[hyp] a * b * c", "[hyp] a 1 b 2 c"));
        assert!(matches("a*b*b", "a b b b"), "backtracks to the last literal");
        assert!(!matches("a*b", "a b c"));
    }

    #[test]
    fn bound_words() {
        let mut v = Vec::new();
        assert!(matches_bound("at {a} now", "at 0x4023b104 now", &mut v));
        assert!(matches_bound("FAR {a}  ELR {a} *", "FAR 0x4023b104  ELR 0x4023b104 x", &mut v));
        assert!(!matches_bound("FAR {a}  ELR *", "FAR 0x4023b10  ELR 0", &mut v), "a prefix is not the word");
        assert!(!matches_bound("FAR {a}*", "FAR 0x4023b108", &mut v));
        assert!(!matches_bound("ELR {b} {b}", "ELR 1 2", &mut v));
        assert_eq!(v, [("a".to_string(), "0x4023b104".to_string())], "failed matches bind nothing");
        assert!(matches_bound("{x}", "w0_rd", &mut Vec::new()) && !matches_bound("{x}", "", &mut Vec::new()));
        assert!(matches("a{b c}", "a{b c}"), "braces around non-words are text");
    }

    #[test]
    fn check_binds_across_lines() {
        let s = Scenario {
            name: "t",
            args: RunArgs::default(),
            lines: vec!["at {a}", "FAR {a}"],
            absent: vec![],
            anywhere: vec![],
            code: 3,
            timeout: 1,
        };
        assert!(check(&s, "at 0x10\nFAR 0x10\n", 3).is_ok());
        assert!(check(&s, "at 0x10\nFAR 0x14\n", 3).is_err());
    }

    #[test]
    fn check_catches_failures() {
        let s = Scenario {
            name: "t",
            args: RunArgs::default(),
            lines: vec!["one", "two"],
            absent: vec!["FAIL"],
            anywhere: vec![],
            code: 0,
            timeout: 1,
        };
        assert!(check(&s, "one\ntwo\n", 0).is_ok());
        assert!(check(&s, "two\none\n", 0).is_err(), "order matters");
        assert!(check(&s, "one\ntwo\nFAIL x\n", 0).is_err());
        assert!(check(&s, "one\ntwo\n", 101).is_err());
    }
}
