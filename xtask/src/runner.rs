//! `cargo xtask test`: the host-side unit tests, then the scenarios of the
//! table (`crate::scenarios`), each a QEMU run with a timeout whose console
//! lines and exit status are checked; prints "N passed, N failed".

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::packages::{HOST_TESTED, HOST_TESTED_ABOUT};
use crate::paths::workspace_root;
use crate::pattern::matches_bound;
use crate::progress::{self, Progress, Total};
use crate::qemu::run_system_watched;
use crate::scenarios::{self, spec::known_words, Scenario};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct TestArgs {
    /// Run only these scenarios (no host tests); `--list` shows the names.
    pub names: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    #[arg(long)]
    pub release: bool,
    /// Only scenarios whose name or description contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Skip the host-side `cargo test`.
    #[arg(long)]
    pub no_host: bool,
    /// Run only the long fuzz scenario (default 100,000 host calls, release build).
    #[arg(long)]
    pub fuzz: bool,
    /// Fuzz seed (a failing run replays from it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fuzz host calls.
    #[arg(long)]
    pub calls: Option<u64>,
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

/// Checks a run's output: Err(reason) on mismatch.
pub fn check(s: &Scenario, output: &str, code: i32) -> std::result::Result<(), String> {
    let mut lines = output.lines();
    let mut vars = known_words();
    for want in &s.lines.expand() {
        if !lines.any(|l| matches_bound(want, l, &mut vars)) {
            return Err(format!("missing (in order): {want}"));
        }
    }
    for want in s.anywhere {
        if !output.lines().any(|l| matches_bound(want, l, &mut vars)) {
            return Err(format!("missing: {want}"));
        }
    }
    for bad in s.absent {
        if let Some(l) = output.lines().find(|l| l.contains(bad) && !l.starts_with("[host] fuzz: seed")) {
            return Err(format!("unexpected line: {l}"));
        }
    }
    if code != s.code {
        return Err(format!("exit code {code}, want {}", s.code));
    }
    if let Some(verify) = s.verify {
        verify(output)?;
    }
    Ok(())
}

/// (passed, failed) of `cargo test` output's "test result:" lines.
fn count_results(text: &str) -> (u32, u32) {
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
    }
    (p, f)
}

fn host_tests() -> (u32, u32) {
    println!("== host: cargo test ({HOST_TESTED_ABOUT})");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root()).arg("test");
    for p in HOST_TESTED {
        cmd.args(["-p", p]);
    }
    let Ok(out) = cmd.arg("--release").output() else {
        println!("FAIL host tests: could not run cargo test");
        return (0, 1);
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let (p, mut f) = count_results(&text);
    for l in text.lines().filter(|l| l.starts_with("test ") && l.ends_with("FAILED")) {
        println!("{l}");
    }
    if !out.status.success() && f == 0 {
        println!("{text}");
        f = 1;
    }
    println!("host tests: {p} passed, {f} failed");
    (p, f)
}

/// A fuzz run, its progress followed: the host shim prints the calls to make
/// and every 500th call done.
fn fuzz_run(run: &crate::options::RunArgs) -> Result<crate::qemu::Outcome> {
    let mut p = Progress::new("fuzz", Total::Unknown, progress::CALLS);
    let o = run_system_watched(run, false, &mut |l| {
        if let Some((total, done)) = fuzz_progress(l) {
            if let Some(t) = total {
                p.set_total(Total::Exact(t));
            }
            p.set(done.unwrap_or(p.done()), "");
        }
    })?;
    p.finish("");
    Ok(o)
}

/// From a fuzz line: (the calls to make, the calls done).
fn fuzz_progress(l: &str) -> Option<(Option<u64>, Option<u64>)> {
    let rest = l.strip_prefix("[host] fuzz: ")?;
    if let Some(n) = rest.strip_suffix(" calls").and_then(|n| n.parse().ok()) {
        return Some((None, Some(n)));
    }
    // "seed S calls C (replay: ...)"
    let calls = rest.strip_prefix("seed ")?.split_once(" calls ")?.1.split_whitespace().next()?.parse().ok()?;
    Some((Some(calls), Some(0)))
}

/// Checks `names` against the scenario list; the error lists valid names.
pub fn select(list: Vec<Scenario>, names: &[String]) -> Result<Vec<Scenario>> {
    let unknown: Vec<&str> = names.iter().map(String::as_str).filter(|n| !list.iter().any(|s| s.name == *n)).collect();
    if !unknown.is_empty() {
        let valid: Vec<&str> = list.iter().map(|s| s.name).collect();
        bail!("unknown scenario(s) {}; valid: {}", unknown.join(", "), valid.join(", "));
    }
    Ok(list.into_iter().filter(|s| names.is_empty() || names.iter().any(|n| n == s.name)).collect())
}

pub fn test_cmd(args: &TestArgs) -> Result<i32> {
    if args.list {
        for s in scenarios::all() {
            println!("{:<16} {}", s.name, s.about);
        }
        return Ok(0);
    }
    if args.fuzz && !args.names.is_empty() {
        bail!("--fuzz runs the long fuzz scenario only: give no scenario names with it");
    }
    if (args.seed.is_some() || args.calls.is_some()) && !args.fuzz {
        bail!("--seed and --calls go with --fuzz");
    }
    if args.calls == Some(0) {
        bail!("--calls must be at least 1");
    }
    let selected = select(scenarios::all(), &args.names)?;
    crate::fixtures::write()?;
    let host = !(args.no_host || args.fuzz || !args.names.is_empty());
    let (mut passed, mut failed) = if host { host_tests() } else { (0, 0) };
    let release = args.release || args.fuzz;
    let runs: Vec<(Scenario, Option<String>)> = if args.fuzz {
        let seed = args.seed.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1)
        });
        println!("fuzz seed {seed}");
        let (s, append) = scenarios::long_fuzz(seed, args.calls.unwrap_or(100_000));
        vec![(s, Some(append))]
    } else {
        selected.into_iter().map(|s| (s, None)).collect()
    };
    for (s, append) in runs {
        let title = s.title();
        if args.filter.as_ref().is_some_and(|f| !title.contains(f.as_str())) {
            continue;
        }
        let mut run = s.run.args(release);
        if append.is_some() {
            run.append = append;
        }
        run.timeout = Some(s.timeout);
        let t = Instant::now();
        let o = if s.run.scenario == Some("fuzz") {
            fuzz_run(&run)?
        } else {
            run_system_watched(&run, false, &mut |_| {})?
        };
        match check(&s, &o.output, o.code()) {
            Ok(()) => {
                passed += 1;
                println!("PASS {title} ({:.1}s)", t.elapsed().as_secs_f64());
                // Figures worth keeping from a passing run.
                for l in o.output.lines().filter(|l| FIGURES.iter().any(|p| l.starts_with(p))) {
                    println!("     {l}");
                }
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {title}: {why}");
                let lines: Vec<&str> = o.output.lines().collect();
                let tail = &lines[lines.len().saturating_sub(200)..];
                println!("---- output (last {} lines) ----\n{}\n----------------", tail.len(), tail.join("\n"));
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::spec::{Lines, Run};

    fn scenario(lines: &'static [&'static str], absent: &'static [&'static str], code: i32) -> Scenario {
        Scenario {
            name: "t",
            about: "",
            run: Run::DEFAULT,
            lines: Lines::Are(lines),
            absent,
            anywhere: &[],
            code,
            timeout: 1,
            verify: None,
        }
    }

    #[test]
    fn check_binds_across_lines() {
        let s = scenario(&["at {a}", "FAR {a}"], &[], 3);
        assert!(check(&s, "at 0x10\nFAR 0x10\n", 3).is_ok());
        assert!(check(&s, "at 0x10\nFAR 0x14\n", 3).is_err());
    }

    #[test]
    fn check_catches_failures() {
        let s = scenario(&["one", "two"], &["FAIL"], 0);
        assert!(check(&s, "one\ntwo\n", 0).is_ok());
        assert!(check(&s, "two\none\n", 0).is_err(), "order matters");
        assert!(check(&s, "one\ntwo\nFAIL x\n", 0).is_err());
        assert!(check(&s, "one\ntwo\n", 101).is_err());
    }

    #[test]
    fn known_words_are_bound_before_the_check() {
        let s = scenario(&["sha256 {disk_sha256}"], &[], 0);
        let sha = crate::linux_guest::disk_sha256();
        assert!(check(&s, &format!("sha256 {sha}\n"), 0).is_ok());
        assert!(check(&s, "sha256 0123\n", 0).is_err(), "a word other than the disk's hash");
    }

    #[test]
    fn fuzz_lines_give_progress() {
        let start = "[host] fuzz: seed 7 calls 100000 (replay: cargo xtask test --fuzz --seed 7 --calls 100000)";
        assert_eq!(fuzz_progress(start), Some((Some(100_000), Some(0))));
        assert_eq!(fuzz_progress("[host] fuzz: 1500 calls"), Some((None, Some(1500))));
        assert_eq!(fuzz_progress("[host] fuzz: seed 7: 1000 host calls, 12 guest runs"), None);
        let dma = "[host] fuzz: 709 DMAs by 8 edu devices in 101 batches (2 staged data first; 11 s): 258 landed in the fuzzer's own pages (data read back), 10 landed writing back a page's own data, 1 read the shim's own pages, 440 blocked with SMMU events naming the device and the page";
        assert_eq!(fuzz_progress(dma), None);
    }

    #[test]
    fn host_test_counts() {
        let out = "test result: ok. 36 passed; 0 failed; 0 ignored\nrunning 2 tests\n\
                   test result: FAILED. 5 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(count_results(out), (41, 2));
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = select(scenarios::all(), &["boot".into(), "nope".into()]).unwrap_err().to_string();
        assert!(e.contains("unknown scenario(s) nope") && e.contains("boot, demo"), "{e}");
        let picked = select(scenarios::all(), &["tlb".into(), "boot".into()]).unwrap();
        assert_eq!(picked.iter().map(|s| s.name).collect::<Vec<_>>(), ["boot", "tlb"], "in table order");
    }
}
