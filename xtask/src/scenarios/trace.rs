//! Observing a run: trace records streamed live or drained by the host, and
//! stage-2 dumps.

use super::spec::{Lines, Run, Scenario};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "trace",
        about: "faults, splits, merges and transitions stream live with exact records",
        run: Run { trace: Some("faults,splits,transitions,hypercalls"), ..Run::shim("guest-tests") },
        lines: Lines::Are(&[
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
            "[host] result: 99 passed, 0 failed",
        ]),
        absent: &["FAIL", "PANIC"],
        anywhere: &[],
        code: 0,
        timeout: 120,
        verify: None,
    },
    Scenario {
        name: "trace-overflow",
        about: "a small ring overflows, the loss is counted, the host drains it",
        run: Run {
            trace_dump: Some("text"),
            trace_buf: Some(8),
            append: Some("shim.expect_trace_overflow"),
            ..Run::shim("boot")
        },
        lines: Lines::Are(&[
            "[trace-dump] * | split  host ipa=0x40000000 level 1 -> 2",
            "[trace-dump] * | split  hyp ipa=0x40000000 level 1 -> 2",
            "[host] trace: drained 8 records, 9 lost to overflow",
            "[host] PASS a small trace ring overflows and the loss is counted",
        ]),
        absent: &["FAIL", "PANIC", "[hyp] trace "],
        anywhere: &[],
        code: 0,
        timeout: 60,
        verify: None,
    },
    Scenario {
        name: "dump-s2",
        about: "every stage-2 as ranges; the split and the merge are visible",
        run: Run { dump_s2: true, ..Run::DEFAULT },
        lines: Lines::Are(&[
            "[hyp] s2 host: 0x0040000000..0x0042200000 hyp-owned (unmapped) L2",
            "[hyp] s2 host: 0x0042c03000..0x0042c04000 -> 0x42c03000 shared-borrowed Normal rw- L3",
            "[hyp] s2 vm 1: 0x0040803000..0x0040804000 -> 0x42c03000 shared-owned Normal rwx L3",
            "[hyp] s2 vm 1: 2 table pages",
            "[hyp] s2 vm 1: 0x0040000000..0x0044000000 -> 0x42400000 owned Normal rwx L2",
            "[hyp] s2 vm 1: 1 table pages",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: &["FAIL", "PANIC"],
        anywhere: &[],
        code: 0,
        timeout: 90,
        verify: None,
    },
];
