//! The scenario table: every QEMU run `cargo xtask test` makes and what it
//! must print, one constant table per group of scenarios, one row (a
//! [`Scenario`] literal) per run. `spec` says what a row is; the runner
//! (`crate::runner`) boots and checks them, in the order of [`GROUPS`].
//!
//! A new scenario is a new row in the group it belongs to.

mod bench;
mod boot;
mod cpus;
mod devices;
mod fuzz;
mod guests;
mod irq;
mod isolation;
mod linux;
mod linux_checks;
mod linux_host;
mod memory;
pub mod spec;
mod trace;

pub use fuzz::long as long_fuzz;
pub use spec::Scenario;

/// The groups, in the order they run: the quick, basic ones first, Linux
/// (which builds a kernel on first use) last.
pub const GROUPS: &[&[Scenario]] = &[
    boot::SCENARIOS,
    memory::SCENARIOS,
    isolation::SCENARIOS,
    irq::SCENARIOS,
    devices::SCENARIOS,
    trace::SCENARIOS,
    guests::SCENARIOS,
    bench::SCENARIOS,
    fuzz::SCENARIOS,
    linux::SCENARIOS,
    linux::SEVERAL,
    linux_host::SCENARIOS,
    cpus::SCENARIOS,
];

/// Every scenario, in order.
pub fn all() -> Vec<Scenario> {
    GROUPS.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_words() {
        let all = all();
        let mut names: Vec<&str> = all.iter().map(|s| s.name).collect();
        for n in &names {
            assert!(!n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{n}");
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len(), "two scenarios share a name");
    }

    /// Every row's options pass the checks `cargo xtask run` makes (a row
    /// with more --guest-mem values than guests would fail only when run).
    #[test]
    fn every_row_is_a_valid_run() {
        for s in all() {
            match crate::options::check(&s.run.args(false)) {
                // Files the run builds or writes first exist only then.
                Err(e) if e.to_string().ends_with(": no such file") => {}
                Err(e) => panic!("{}: {e}", s.name),
                Ok(()) => {}
            }
        }
    }

    #[test]
    fn every_row_checks_something() {
        for s in all() {
            assert!(!s.about.is_empty() && s.timeout > 0, "{}", s.name);
            assert!(!s.lines.expand().is_empty(), "{}: no expected lines", s.name);
        }
    }
}
