//! The rows of `cargo xtask bench` that are also checked as scenarios.

use super::spec::{Lines, Run, Scenario};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "bench-scale",
        about: "the scale rows of cargo xtask bench (1, 16 and 255 VMs at once), memory overhead, boot",
        run: Run {
            icount: true,
            append: Some("hyp.bench_pmu shim.bench_n=20"),
            ..Run::shim("bench-scale")
        },
        lines: Lines::Are(&[
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
        ]),
        absent: &["FAIL", "PANIC"],
        anywhere: &[],
        code: 0,
        timeout: 300,
        verify: None,
    },
    Scenario {
        name: "bench-irq",
        about: "the interrupt rows of cargo xtask bench (injection, EOI, timer, SGI between vCPUs)",
        run: Run { icount: true, append: Some("hyp.bench_pmu"), ..Run::shim("bench-irq") },
        lines: Lines::Are(&[
            "[vm 1] [bench] virtual interrupt (SGI to self) to handler entry n=100 el2=* all=* pte=0 tlbi=0 alloc=0 free=0",
            "[vm 1] [bench] guest EOI (edge, no exit) n=100 el2=0 all=*",
            "[vm 1] [bench] device interrupt (VMM line via MMIO exit) to handler entry n=100 el2=*",
            "[vm 1] [bench] guest EOI (level, maintenance interrupt) n=100 el2=*",
            "[vm 1] [bench] virtual timer interrupt round trip (arm to handler entry) n=100 el2=*",
            "[vm 1] [bench] SGI round trip between 2 vCPUs (time-sliced, 2 hops) n=100 el2=*",
            "[vm 1] PASS bench-irq: every measured interrupt arrived",
            "[host] PASS interrupt bench guest ran its measurements",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: &["FAIL", "PANIC"],
        anywhere: &[],
        code: 0,
        timeout: 120,
        verify: None,
    },
];
