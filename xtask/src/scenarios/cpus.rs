//! The same checks on other CPU models than QEMU's `max`: the guest suite,
//! the hostile host and the Linux guest on an ARMv8.0 part with a 40-bit PA
//! range and no PAN, VHE, PAuth or SVE (Cortex-A53), an ARMv8.2 DynamIQ
//! core (Cortex-A76) and an ARMv8.4 server core with SVE (Neoverse-V1). The
//! hyp detects what the CPU has; every row expects exactly the lines of
//! the row it copies, so nothing may depend on `max`'s features.

use super::spec::{Run, Scenario};
use super::{linux, memory};

/// The models and the scenarios each runs.
pub const SCENARIOS: &[Scenario] = &[
    on("cortex-a53-guest-tests", "cortex-a53", find(memory::SCENARIOS, "guest-tests")),
    on("cortex-a53-hostile", "cortex-a53", find(memory::SCENARIOS, "hostile")),
    on("cortex-a53-linux-guest", "cortex-a53", find(linux::SCENARIOS, "linux-guest")),
    on("cortex-a76-guest-tests", "cortex-a76", find(memory::SCENARIOS, "guest-tests")),
    on("cortex-a76-hostile", "cortex-a76", find(memory::SCENARIOS, "hostile")),
    on("cortex-a76-linux-guest", "cortex-a76", find(linux::SCENARIOS, "linux-guest")),
    on("neoverse-v1-guest-tests", "neoverse-v1", find(memory::SCENARIOS, "guest-tests")),
    on("neoverse-v1-hostile", "neoverse-v1", find(memory::SCENARIOS, "hostile")),
    on("neoverse-v1-linux-guest", "neoverse-v1", find(linux::SCENARIOS, "linux-guest")),
];

/// Row `s` run on CPU model `cpu`, under a name of its own.
const fn on(name: &'static str, cpu: &'static str, s: Scenario) -> Scenario {
    Scenario { name, about: s.about, run: Run { cpu: Some(cpu), ..s.run }, ..s }
}

/// The row named `name` of `group` (a build error if there is none).
const fn find(group: &[Scenario], name: &str) -> Scenario {
    let mut i = 0;
    while i < group.len() {
        if eq(group[i].name, name) {
            return group[i];
        }
        i += 1;
    }
    panic!("no such scenario")
}

const fn eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_is_its_model_and_its_originals_checks() {
        for s in SCENARIOS {
            let cpu = s.run.cpu.expect("a model");
            assert!(crate::options::CPU_MODELS.contains(&cpu) && cpu != "max", "{}", s.name);
            let base = s.name.strip_prefix(cpu).and_then(|n| n.strip_prefix('-')).expect("name = model-scenario");
            let orig =
                memory::SCENARIOS.iter().chain(linux::SCENARIOS).find(|o| o.name == base).expect("the original row");
            assert_eq!(orig.lines.expand(), s.lines.expand(), "{}", s.name);
            assert_eq!((orig.run.cpu, orig.code), (None, s.code));
        }
    }
}
