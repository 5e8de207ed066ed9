//! Interrupts and several CPUs: the virtual timer, device lines, SGIs between
//! vCPUs, PSCI CPU_ON/CPU_OFF, and VMs running on several host CPUs at once.

use super::spec::{Lines, Run, Scenario};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "irq",
        about: "virtual timer (spinning and in WFI), level re-injection, PL011 interrupt",
        // icount: the latency windows are counter ticks of instructions run.
        run: Run { smp: 1, icount: true, ..Run::shim("irq") },
        lines: Lines::Are(&[
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
        ]),
        absent: &["FAIL", "PANIC"],
        anywhere: &[],
        code: 0,
        timeout: 120,
    },
    Scenario {
        name: "trace-irq",
        about: "interrupt injections stream as trace records (virtual timer, PL011, level device)",
        run: Run { smp: 1, icount: true, trace: Some("irqs"), ..Run::shim("irq") },
        lines: Lines::Are(&["[vm 1] guest: 25 passed, 0 failed", "[hyp] system off: status 0 (Ok)"]),
        absent: &["FAIL", "PANIC"],
        anywhere: &[
            "[hyp] trace * | irq    vm1/vcpu0 injected 1 waiting 0 vtimer in-lrs 27",
            "[hyp] trace * | irq    vm1/vcpu0 injected 1 waiting 0 in-lrs 33",
            "[hyp] trace * | irq    vm1/vcpu0 injected 1 waiting 0 in-lrs 34",
        ],
        code: 0,
        timeout: 120,
    },
// The guest SMP test (test=irq-smp, 4 vCPUs): time-sliced under icount
    // (exact and quick); on 4 host CPUs not: icount runs QEMU's CPUs
    // round-robin, 100 ms of virtual time each, which starves vCPUs that
    // wait for one another.
    Scenario {
        name: "irq-smp",
        about: "4 vCPUs on 4 host CPUs: PSCI CPU_ON/CPU_OFF/AFFINITY_INFO, an SGI ring in WFI",
        run: Run { smp: 4, ..Run::shim("irq-smp") },
        lines: Lines::Join(&[&["[host] vm 1: 4 vCPUs, each on a host CPU of its own"], IRQ_SMP]),
        absent: &["FAIL", "PANIC"],
        anywhere: &[],
        code: 0,
        timeout: 120,
    },
    Scenario {
        name: "irq-smp1",
        about: "the same 4 vCPUs time-sliced on one host CPU",
        run: Run { smp: 1, icount: true, ..Run::shim("irq-smp") },
        lines: Lines::Join(&[&["[host] vm 1: 4 vCPUs time-sliced on 1 host CPU"], IRQ_SMP]),
        absent: &["FAIL", "PANIC"],
        anywhere: &[],
        code: 0,
        timeout: 120,
    },
    Scenario {
        name: "smp",
        about: "4 CPUs run VMs concurrently; invariants hold; end states equal a sequential replay",
        run: Run { smp: 4, append: Some("hyp.check_invariants"), ..Run::shim("smp") },
        lines: Lines::Are(&[
            "[hyp]   cpus    4 (mpidr 0x0..)",
            "[hyp] gicr: 4 redistributor(s); RD_base page 0 emulated for the host (LPIs hidden)",
            "[host] smp: 4 CPUs ran 40 rounds each: * operations, * invariant checks so far",
            "[host] PASS one VM per CPU",
            "[host] PASS each VM ends as in a sequential replay of the same operations",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: &["FAIL", "PANIC", "INVARIANT"],
        anywhere: &[
            "[hyp] cpu 1: up, entering host at *",
            "[hyp] cpu 2: up, entering host at *",
            "[hyp] cpu 3: up, entering host at *",
        ],
        code: 0,
        timeout: 300,
    },
];

/// What the guest SMP test prints after the host's line on how its vCPUs run.
const IRQ_SMP: &[&str] = &[
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
];
