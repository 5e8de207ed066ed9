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
    /// Expected exit code of the run (124 = timeout).
    pub code: i32,
    pub timeout: u64,
}

fn base(scenario: &str) -> RunArgs {
    RunArgs {
        mem: "1G".into(),
        smp: 1,
        log: "info".into(),
        scenario: Some(scenario.into()),
        ..Default::default()
    }
}

fn selftest(what: &str) -> RunArgs {
    RunArgs {
        append: Some(format!("hyp.selftest={what}")),
        ..base("boot")
    }
}

pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "boot: hyp at EL2, host shim at EL1 under stage-2, hyp memory aborts",
            args: base("boot"),
            lines: vec![
                "[hyp] pkvm-rs hyp: running at EL2, loaded at 0x40200000 (*",
                "[hyp]   memory  0x0040000000..0x0080000000 (1024 MiB)",
                "[hyp]   uart    0x0009000000 (pl011)",
                "[hyp]   psci    method smc",
                "[hyp] hyp memory: 0x40000000..0x42200000 (34 MiB*",
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
            code: 0,
            timeout: 60,
        },
        Scenario {
            name: "runner: a hyp panic is a failure with file:line",
            args: selftest("panic"),
            lines: vec!["[hyp] PANIC at hyp/src/boot/mod.rs:*: selftest: deliberate panic", "[hyp] system off: status 101 (Panic)"],
            absent: vec!["[host]"],
            code: 101,
            timeout: 60,
        },
        Scenario {
            name: "runner: an unexpected EL2 exception is decoded and fails",
            args: selftest("fault"),
            lines: vec![
                "[hyp] ERROR: unexpected exception: sync from EL2h",
                "[hyp] ERROR:   ESR_EL2 0x*: EC=0x25 (data abort (EL2)) FSC=0x04 translation fault level 0 read*",
                "[hyp] system off: status 3 (Fatal)",
            ],
            absent: vec!["[host]"],
            code: 3,
            timeout: 60,
        },
        Scenario {
            name: "runner: a hang is caught by the timeout",
            args: selftest("hang"),
            lines: vec!["[hyp] selftest: hanging"],
            absent: vec!["[hyp] system off"],
            code: 124,
            timeout: 8,
        },
    ]
}

/// Matches `line` against a pattern where `*` stands for any text.
pub fn matches(pat: &str, line: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    if parts.len() == 1 {
        return pat == line;
    }
    let mut rest = line;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(p) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            let Some(pos) = rest.find(p) else {
                return false;
            };
            rest = &rest[pos + p.len()..];
        }
    }
    true
}

/// Checks a run's output: Err(reason) on mismatch.
pub fn check(s: &Scenario, output: &str, code: i32) -> std::result::Result<(), String> {
    let mut lines = output.lines();
    for want in &s.lines {
        if !lines.any(|l| matches(want, l)) {
            return Err(format!("missing (in order): {want}"));
        }
    }
    for bad in &s.absent {
        if let Some(l) = output.lines().find(|l| l.contains(bad)) {
            return Err(format!("unexpected line: {l}"));
        }
    }
    if code != s.code {
        return Err(format!("exit code {code}, want {}", s.code));
    }
    Ok(())
}

fn host_tests() -> (u32, u32) {
    println!("== host: cargo test (arch-independent core, xtask)");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args([
            "test",
            "-p",
            "hyp",
            "-p",
            "hyp-abi",
            "-p",
            "xtask",
            "--release",
        ])
        .output();
    let Ok(out) = out else {
        println!("FAIL host tests: could not run cargo test");
        return (0, 1);
    };
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let (mut p, mut f) = (0, 0);
    for l in text.lines() {
        if let Some(r) = l.strip_prefix("test result: ") {
            let num = |key: &str| {
                r.split(';').find_map(|s| {
                    s.trim()
                        .strip_suffix(key)
                        .and_then(|n| n.trim().rsplit(' ').next()?.parse::<u32>().ok())
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

pub fn test_cmd(args: &TestArgs) -> Result<i32> {
    let (mut passed, mut failed) = if args.no_host { (0, 0) } else { host_tests() };
    for mut s in all() {
        if args
            .filter
            .as_ref()
            .is_some_and(|f| !s.name.contains(f.as_str()))
        {
            continue;
        }
        s.args.release = args.release;
        s.args.timeout = Some(s.timeout);
        let t = std::time::Instant::now();
        let o = run_system(&s.args, false)?;
        match check(&s, &o.output, o.code()) {
            Ok(()) => {
                passed += 1;
                println!("PASS {} ({:.1}s)", s.name, t.elapsed().as_secs_f64());
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {}: {}", s.name, why);
                println!("---- output ----\n{}----------------", o.output);
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
    }

    #[test]
    fn check_catches_failures() {
        let s = Scenario {
            name: "t",
            args: RunArgs::default(),
            lines: vec!["one", "two"],
            absent: vec!["FAIL"],
            code: 0,
            timeout: 1,
        };
        assert!(check(&s, "one\ntwo\n", 0).is_ok());
        assert!(check(&s, "two\none\n", 0).is_err(), "order matters");
        assert!(check(&s, "one\ntwo\nFAIL x\n", 0).is_err());
        assert!(check(&s, "one\ntwo\n", 101).is_err());
    }
}
