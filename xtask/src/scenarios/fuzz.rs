//! The fuzz: a hostile host and two hostile guests, DMA by eight edu
//! devices mixed in; the full invariant checker after every hypercall, and
//! after every refused call the hyp's proof that it changed nothing. The
//! hyp records SMMU events as `dma` trace records (`hyp.trace=dma`, not
//! streamed): the fuzzer tells a batch's events apart by them. The table
//! runs 1,000 calls; `cargo xtask test --fuzz` runs [`long`].

use super::spec::{Lines, Run, Scenario, EDU_DEVICES_8};

pub const SCENARIOS: &[Scenario] = &[Scenario {
    name: "fuzz",
    about: "hostile host and guests, invariants checked after every hypercall",
    run: Run {
        append: Some("hyp.check_invariants=1 hyp.trace=dma hyp.trace_quiet shim.seed=1 shim.calls=1000"),
        qemu_args: Some(EDU_DEVICES_8),
        ..Run::shim("fuzz")
    },
    lines: Lines::Are(&[
        "[host] fuzz: seed * calls * (replay: cargo xtask test --fuzz --seed * --calls *)",
        "[host] PASS no vCPU could be added to a VM that has run",
        "[host] PASS the hyp still answers after the fuzz run",
        "[host] fuzz: seed *: * host calls, * guest runs, * guest calls, * invariant checks, * refused calls proven to change nothing, * VMs created and destroyed, * guests recycled, results *",
        "[host] PASS the invariant checker ran during the fuzz run",
        "[host] PASS every guest run made its 20 random calls",
        "[host] fuzz: * DMAs by 8 edu devices in * batches (* staged data first; * s): * landed in the fuzzer's own pages (data read back), * landed writing back a page's own data, * read the shim's own pages, * blocked with SMMU events naming the device and the page",
        "[host] PASS the fuzz run mixed in DMA that landed and DMA that was blocked",
        "[hyp] system off: status 0 (Ok)",
    ]),
    absent: &["FAIL", "PANIC", "INVARIANT"],
    anywhere: &[],
    code: 0,
    timeout: 300,
    verify: None,
}];

/// `cargo xtask test --fuzz`: the table's checks for `calls` host calls
/// from `seed` (release build, up to four hours); the invariant checker
/// runs after every 8th hypercall from 10,000 calls on. Returns the
/// scenario and its `--append`.
pub fn long(seed: u64, calls: u64) -> (Scenario, String) {
    let every = if calls >= 10_000 { 8 } else { 1 };
    let (name, about) = if calls >= 100_000 { ("fuzz (long)", "") } else { (SCENARIOS[0].name, SCENARIOS[0].about) };
    let s = Scenario { name, about, timeout: 4 * 3600, ..SCENARIOS[0] };
    (s, format!("hyp.check_invariants={every} hyp.trace=dma hyp.trace_quiet shim.seed={seed} shim.calls={calls}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_runs_the_short_fuzz() {
        // The table's entry is what `long` gives for seed 1 and 1,000 calls.
        let (s, append) = long(1, 1000);
        assert_eq!(Some(append.as_str()), SCENARIOS[0].run.append);
        assert_eq!(s.title(), SCENARIOS[0].title());
        assert_eq!(
            long(7, 100_000).1,
            "hyp.check_invariants=8 hyp.trace=dma hyp.trace_quiet shim.seed=7 shim.calls=100000"
        );
        assert_eq!(long(7, 100_000).0.title(), "fuzz (long)");
    }
}
