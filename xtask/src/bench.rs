//! `cargo xtask bench`: exact instruction counts per hypervisor operation.
//!
//! QEMU runs with `-icount shift=0,align=off,sleep=off`; the host shim and a
//! bench guest program the PMU (event 0x08, instructions retired) with one
//! counter filtered to EL2 and one counting every level, and print
//! `[bench]` lines: totals over N repetitions plus the hyp's software
//! counters. This module turns them into a table and bench/results.json, and
//! compares two result files. The numbers are instructions, not time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::qemu::run_system;
use crate::{workspace_root, RunArgs};

/// Per-operation figures (per repetition).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Op {
    pub n: u64,
    pub el2: f64,
    pub all: f64,
    pub pte_writes: f64,
    pub tlbis: f64,
    pub tables_allocated: f64,
    pub tables_freed: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub git_revision: String,
    pub hyp_elf_sha256: String,
    pub unit: String,
    pub ops: BTreeMap<String, Op>,
    pub table_pages_1gib_guest: BTreeMap<String, u64>,
}

/// Targets from the issue (EL2 instructions per operation), for the table.
fn target(name: &str) -> Option<u64> {
    Some(match name {
        n if n.starts_with("host hvc") => 48,
        n if n.starts_with("host lazy fault") => 400,
        "host share_hyp 4K (no split)" | "host unshare_hyp 4K" => 400,
        n if n.starts_with("mem_share 4K (already 4K") || n.starts_with("mem_unshare 4K (already 4K") => 400,
        n if n.starts_with("mmio exit") => 1000,
        "mem_share 4K (2M split/merge)" => 2000,
        "mem_unshare 4K (2M split/merge)" => 2000,
        n if n.starts_with("vm_create+vcpu_create") => 5000,
        _ => return None,
    })
}

pub fn parse(log: &str) -> Results {
    let mut r = Results { unit: "instructions per operation (QEMU icount)".into(), ..Default::default() };
    for line in log.lines() {
        if let Some(rest) = line.split("[bench-pages] ").nth(1) {
            for kv in rest.split_whitespace().filter(|w| w.contains('=')) {
                let (k, v) = kv.split_once('=').unwrap();
                if let Ok(v) = v.parse() {
                    r.table_pages_1gib_guest.insert(k.into(), v);
                }
            }
            continue;
        }
        let Some(rest) = line.split("[bench] ").nth(1) else { continue };
        let Some(at) = rest.find(" n=") else { continue };
        let name = rest[..at].to_string();
        let mut kv = BTreeMap::new();
        for w in rest[at + 1..].split_whitespace() {
            if let Some((k, v)) = w.split_once('=') {
                kv.insert(k, v.parse::<u64>().unwrap_or(0));
            }
        }
        let n = kv.get("n").copied().unwrap_or(1).max(1);
        let per = |k: &str| kv.get(k).copied().unwrap_or(0) as f64 / n as f64;
        r.ops.insert(
            name,
            Op {
                n,
                el2: per("el2"),
                all: per("all"),
                pte_writes: per("pte"),
                tlbis: per("tlbi"),
                tables_allocated: per("alloc"),
                tables_freed: per("free"),
            },
        );
    }
    r
}

pub fn table(r: &Results) -> String {
    let mut s = format!(
        "{:<44} {:>10} {:>10} {:>7} {:>6} {:>6} {:>6} {:>8}\n",
        "operation", "EL2 instr", "all instr", "PTE wr", "TLBI", "alloc", "free", "target"
    );
    for (name, o) in &r.ops {
        let t = target(name).map(|t| format!("≤{t}")).unwrap_or_default();
        s += &format!(
            "{:<44} {:>10.1} {:>10.1} {:>7.2} {:>6.2} {:>6.2} {:>6.2} {:>8}\n",
            name, o.el2, o.all, o.pte_writes, o.tlbis, o.tables_allocated, o.tables_freed, t
        );
    }
    for (k, v) in &r.table_pages_1gib_guest {
        s += &format!("table pages below the root, 1 GiB guest, {k}: {v}\n");
    }
    s
}

fn git_rev() -> String {
    Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub fn compare(new: &Results, old_path: &Path) -> Result<String> {
    let old: Results = serde_json::from_str(&std::fs::read_to_string(old_path)?).context("parsing old results")?;
    let mut s = format!("comparing with {} (rev {})\n", old_path.display(), old.git_revision);
    s += &format!("{:<44} {:>10} {:>10} {:>8}\n", "operation", "old EL2", "new EL2", "new/old");
    for (name, o) in &new.ops {
        match old.ops.get(name) {
            Some(p) if p.el2 > 0.0 => {
                s += &format!("{:<44} {:>10.1} {:>10.1} {:>8.3}\n", name, p.el2, o.el2, o.el2 / p.el2)
            }
            _ => s += &format!("{:<44} {:>10} {:>10.1} {:>8}\n", name, "-", o.el2, "new"),
        }
    }
    Ok(s)
}

pub fn bench_cmd(
    release: bool,
    compare_with: Option<PathBuf>,
    out: Option<PathBuf>,
    hyp_features: Option<String>,
    append: Option<String>,
) -> Result<i32> {
    let args = RunArgs {
        release,
        mem: "20G".into(),
        smp: 1,
        log: "warn".into(),
        scenario: Some("bench".into()),
        timeout: Some(1800),
        icount: true,
        hyp_features: hyp_features.clone(),
        // The bench counts EL2 instructions with the PMU: the hyp isolates
        // the PMU unless told this run is a bench (docs/isolation.md).
        append: Some(match append {
            Some(a) => format!("hyp.bench_pmu {a}"),
            None => "hyp.bench_pmu".into(),
        }),
        ..Default::default()
    };
    let o = run_system(&args, false)?;
    if o.code() != 0 {
        println!("{}", o.output);
        bail!("bench run failed (exit {})", o.code());
    }
    let mut r = parse(&o.output);
    if r.ops.is_empty() {
        bail!("no [bench] lines in the output");
    }
    let elf = crate::build_with(release, hyp_features.as_deref())?.hyp_elf;
    r.git_revision = git_rev();
    r.hyp_elf_sha256 = format!("{:x}", Sha256::digest(std::fs::read(&elf)?));
    print!("{}", table(&r));
    let out = out.unwrap_or_else(|| workspace_root().join("bench/results.json"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&r)? + "\n")?;
    println!("results: {} (rev {}, hyp sha256 {})", out.display(), r.git_revision, &r.hyp_elf_sha256[..16]);
    if let Some(old) = compare_with {
        print!("{}", compare(&r, &old)?);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bench_lines() {
        let log =
            "[vm 1] [bench] mem_share 4K (already 4K) n=1000 el2=300000 all=350000 pte=2000 tlbi=1000 alloc=0 free=0\n\
                   [bench-pages] table pages below the root for a 1 GiB guest: blocks=0 4k-only=513\n";
        let r = parse(log);
        let o = &r.ops["mem_share 4K (already 4K)"];
        assert_eq!((o.n, o.el2, o.pte_writes, o.tlbis), (1000, 300.0, 2.0, 1.0));
        assert_eq!(r.table_pages_1gib_guest["4k-only"], 513);
        assert!(table(&r).contains("≤400"));
    }
}
