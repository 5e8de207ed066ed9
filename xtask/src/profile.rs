//! `cargo xtask profile`: where the hyp's EL2 instructions go, per function.
//!
//! QEMU runs a scenario (by default one bench row) with one guest
//! instruction per translation block (`-singlestep` on QEMU < 8.1,
//! `-accel tcg,one-insn-per-tb=on` after), no block chaining and
//! `-d exec` limited by `-dfilter` to the hyp's text: every executed hyp
//! instruction is one `Trace` line. The log goes through a FIFO and is
//! counted as it streams (no file of gigabytes); lines whose TB flags say
//! the CPU was not at EL2 (a lower EL running code at the same virtual
//! address) are dropped. PCs are mapped to functions with the hyp ELF's
//! symbols.
//!
//! With `--row WORD` the bench scenario runs only the rows whose name
//! contains WORD (`shim.bench_only=`), twice: with N and 2N repetitions
//! (`shim.bench_n=`). The difference divided by N is one operation, with
//! boot, setup and teardown cancelled out.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::options::RunArgs;
use crate::paths::target_dir;
use crate::qemu::run_system;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct ProfileArgs {
    #[arg(long)]
    pub release: bool,
    /// Profile one bench row (rows whose name contains this, e.g. "mmio",
    /// "host hvc", "HYP_MEMINFO", "vm_create"): N and 2N repetitions, diffed.
    #[arg(long)]
    pub row: Option<String>,
    /// Repetitions of the first run with --row (the second runs 2N).
    #[arg(long, default_value_t = 50)]
    pub n: u64,
    /// Profile a whole scenario instead (counts for the entire run).
    #[arg(long, conflicts_with = "row")]
    pub scenario: Option<String>,
    /// Print the instructions of the hottest PCs of these functions too
    /// (a substring of the function name; repeatable).
    #[arg(long)]
    pub pcs: Vec<String>,
    /// Extra hyp/shim command-line options.
    #[arg(long)]
    pub append: Option<String>,
}

/// One symbol of the hyp's text.
#[derive(Clone, Debug, PartialEq)]
pub struct Sym {
    pub addr: u64,
    pub size: u64,
    pub name: String,
}

/// The hyp's text range and its function symbols, sorted by address.
pub struct Symbols {
    pub text: (u64, u64),
    syms: Vec<Sym>,
}

impl Symbols {
    pub fn from_elf(data: &[u8]) -> Result<Symbols> {
        use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};
        let f = object::File::parse(data).context("parsing the hyp ELF")?;
        let (mut lo, mut hi) = (u64::MAX, 0);
        for s in f.sections().filter(|s| s.kind() == SectionKind::Text && s.size() > 0) {
            lo = lo.min(s.address());
            hi = hi.max(s.address() + s.size());
        }
        if lo >= hi {
            bail!("no text section in the hyp ELF");
        }
        let syms = f
            .symbols()
            .filter(|s| matches!(s.kind(), SymbolKind::Text | SymbolKind::Label | SymbolKind::Unknown))
            .filter(|s| (lo..hi).contains(&s.address()))
            .filter_map(|s| {
                let name = s.name().ok()?;
                // Mapping symbols ($x, $d) and compiler-local labels say nothing.
                if name.is_empty() || name.starts_with('$') || name.starts_with(".L") {
                    return None;
                }
                Some(Sym { addr: s.address(), size: s.size(), name: demangle(name) })
            })
            .collect();
        Ok(Symbols::new((lo, hi), syms))
    }

    pub fn new(text: (u64, u64), mut syms: Vec<Sym>) -> Symbols {
        // Sized symbols first at an address, so an alias label does not hide them.
        syms.sort_by(|a, b| a.addr.cmp(&b.addr).then(b.size.cmp(&a.size)));
        syms.dedup_by(|b, a| a.addr == b.addr);
        Symbols { text, syms }
    }

    /// The function holding `pc`: the last symbol at or below it, if `pc` is
    /// inside its size (a size-0 symbol, an assembly label, reaches to the
    /// next symbol).
    pub fn lookup(&self, pc: u64) -> Option<&Sym> {
        if !(self.text.0..self.text.1).contains(&pc) {
            return None;
        }
        let i = self.syms.partition_point(|s| s.addr <= pc);
        let s = self.syms.get(i.checked_sub(1)?)?;
        (s.size == 0 || pc < s.addr + s.size).then_some(s)
    }
}

/// Rust's legacy mangling (`_ZN...E`) to a path, hash dropped; anything
/// else unchanged.
pub fn demangle(name: &str) -> String {
    let Some(mut rest) = name.strip_prefix("_ZN") else { return name.to_string() };
    let mut parts = Vec::new();
    while !rest.starts_with('E') {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let Ok(len) = rest[..digits].parse::<usize>() else { return name.to_string() };
        let Some(part) = rest.get(digits..digits + len) else { return name.to_string() };
        parts.push(part);
        rest = &rest[digits + len..];
    }
    if parts.last().is_some_and(|p| p.len() == 17 && p.starts_with('h')) {
        parts.pop();
    }
    let mut out = parts.join("::");
    for (from, to) in [
        ("$LT$", "<"),
        ("$GT$", ">"),
        ("$RF$", "&"),
        ("$BP$", "*"),
        ("$C$", ","),
        ("$u20$", " "),
        ("$u27$", "'"),
        ("$u5b$", "["),
        ("$u5d$", "]"),
        ("$u7b$", "{"),
        ("$u7d$", "}"),
        ("$u3b$", ";"),
        ("$u7e$", "~"),
        ("$LP$", "("),
        ("$RP$", ")"),
        ("..", "::"),
    ] {
        out = out.replace(from, to);
    }
    out.strip_prefix('_').filter(|s| s.starts_with('$')).map(str::to_string).unwrap_or(out)
}

/// PC and TB flags of a QEMU `-d exec` line:
/// `Trace 0: 0x7f.. [00000000/0000000040201234/00000065/ff000000] sym`.
pub fn parse_exec_line(line: &str) -> Option<(u64, u32)> {
    let rest = line.strip_prefix("Trace ")?;
    let inner = &rest[rest.find('[')? + 1..];
    let inner = &inner[..inner.find(']')?];
    let mut f = inner.split('/');
    let _cs_base = f.next()?;
    let pc = u64::from_str_radix(f.next()?, 16).ok()?;
    let flags = u32::from_str_radix(f.next()?, 16).ok()?;
    Some((pc, flags))
}

/// QEMU's Arm TB flags: MMU index in bits [7:4] (TBFLAG_ANY.MMUIDX); the
/// non-VHE EL2 regime is core MMU index 6 (ARMMMUIdx_E2).
pub fn at_el2(flags: u32) -> bool {
    (flags >> 4) & 0xf == 6
}

fn qemu_version() -> (u32, u32) {
    let out = Command::new("qemu-system-aarch64").arg("--version").output().ok();
    let s = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let v = s.split_whitespace().skip_while(|w| *w != "version").nth(1).unwrap_or("0.0");
    let mut it = v.split('.').map(|x| x.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Executions per PC of one run.
type Counts = HashMap<u64, u64>;

struct Run {
    counts: Counts,
    /// Lines at the hyp's addresses but not at EL2 (dropped).
    other_el: u64,
    output: String,
}

fn profile_run(args: &RunArgs, text: (u64, u64), tag: &str) -> Result<Run> {
    let fifo = target_dir().join(format!("profile-{}-{tag}.fifo", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    let st = Command::new("mkfifo").arg(&fifo).status().context("running mkfifo")?;
    if !st.success() {
        bail!("mkfifo {} failed", fifo.display());
    }
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || -> Result<(Counts, u64)> {
            let f = std::fs::File::open(&fifo)?;
            let mut counts = Counts::new();
            let mut other = 0;
            let mut r = BufReader::with_capacity(1 << 20, f);
            let mut line = String::new();
            while r.read_line(&mut line)? > 0 {
                if let Some((pc, flags)) = parse_exec_line(&line) {
                    if at_el2(flags) {
                        *counts.entry(pc).or_default() += 1;
                    } else {
                        other += 1;
                    }
                }
                line.clear();
            }
            Ok((counts, other))
        })
    };
    let (major, minor) = qemu_version();
    let mut a = args.clone();
    let one_insn = if (major, minor) >= (8, 1) { "-accel tcg,one-insn-per-tb=on" } else { "-singlestep" };
    // The FIFO's path is under the target directory: no whitespace expected.
    if fifo.display().to_string().contains(char::is_whitespace) {
        bail!("the target directory's path has whitespace: {}", fifo.display());
    }
    a.qemu_args = Some(format!(
        "{} {one_insn} -d exec,nochain -dfilter {:#x}+{:#x} -D {}",
        a.qemu_args.as_deref().unwrap_or(""),
        text.0,
        text.1 - text.0,
        fifo.display()
    ));
    let out = run_system(&a, false);
    if !reader.is_finished() {
        // QEMU never opened the log (it failed early): open the FIFO's
        // writing end once so the reader sees the end of the file.
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new().write(true).custom_flags(0o4000 /* O_NONBLOCK */).open(&fifo);
    }
    let counted = reader.join().map_err(|_| anyhow::anyhow!("log reader panicked"))?;
    let _ = std::fs::remove_file(&fifo);
    let out = out?;
    if out.code() != 0 {
        println!("{}", out.output);
        bail!("profiled run failed (exit {})", out.code());
    }
    let (counts, other_el) = counted?;
    Ok(Run { counts, other_el, output: out.output })
}

/// Per-function totals: name → (instructions, distinct PCs).
pub fn per_function(syms: &Symbols, counts: &HashMap<u64, f64>) -> Vec<(String, f64, usize)> {
    let mut by: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for (&pc, &n) in counts {
        let name = syms.lookup(pc).map_or_else(|| format!("?{pc:#x}"), |s| s.name.clone());
        let e = by.entry(name).or_default();
        e.0 += n;
        e.1 += 1;
    }
    let mut v: Vec<_> = by.into_iter().map(|(k, (n, p))| (k, n, p)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

fn bench_el2(output: &str, row: &str) -> Vec<(String, f64)> {
    crate::bench::parse(output).ops.into_iter().filter(|(k, _)| k.contains(row)).map(|(k, o)| (k, o.el2)).collect()
}

fn disassembly(elf: &Path) -> HashMap<u64, String> {
    let mut m = HashMap::new();
    for tool in ["llvm-objdump", "aarch64-linux-gnu-objdump", "objdump"] {
        let Ok(o) = Command::new(tool).args(["-d", "--no-show-raw-insn"]).arg(elf).output() else { continue };
        if !o.status.success() {
            continue;
        }
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            let Some((a, rest)) = l.trim_start().split_once(':') else { continue };
            if let Ok(pc) = u64::from_str_radix(a.trim(), 16) {
                m.insert(pc, rest.trim().to_string());
            }
        }
        if !m.is_empty() {
            break;
        }
    }
    m
}

pub fn profile_cmd(p: &ProfileArgs) -> Result<i32> {
    let elf_path: PathBuf = crate::build::build(p.release)?.hyp_elf;
    let syms = Symbols::from_elf(&std::fs::read(&elf_path)?)?;
    let mut args = RunArgs {
        release: p.release,
        mem: "20G".into(),
        smp: 1,
        log: "warn".into(),
        timeout: Some(3600),
        icount: true,
        ..Default::default()
    };
    let mut append = p.append.clone().unwrap_or_default();
    let per_op: HashMap<u64, f64>;
    let (divisor, title);
    match (&p.row, &p.scenario) {
        (Some(row), _) => {
            if row.contains(char::is_whitespace) {
                // The shim's command line splits at spaces.
                bail!("--row takes one word of the row's name (e.g. mmio, HYP_MEMINFO, vm_create)");
            }
            args.scenario = Some("bench".into());
            let n = p.n.max(1);
            let mut runs = Vec::new();
            for k in [n, 2 * n] {
                args.append = Some(format!("hyp.bench_pmu shim.bench_only={row} shim.bench_n={k} {append}"));
                eprintln!("xtask: profiling bench rows matching '{row}' with {k} repetitions");
                runs.push(profile_run(&args, syms.text, &k.to_string())?);
            }
            let rows = bench_el2(&runs[1].output, row);
            if rows.is_empty() {
                bail!("no bench row matches '{row}'");
            }
            for (name, el2) in &rows {
                println!("bench row: {name}: {el2:.1} EL2 instructions per operation (PMU)");
            }
            let mut d: HashMap<u64, f64> = HashMap::new();
            for (pc, &c2) in &runs[1].counts {
                let c1 = runs[0].counts.get(pc).copied().unwrap_or(0);
                d.insert(*pc, (c2 as f64 - c1 as f64) / n as f64);
            }
            for (pc, &c1) in &runs[0].counts {
                d.entry(*pc).or_insert(-(c1 as f64) / n as f64);
            }
            d.retain(|_, v| v.abs() > 1e-9);
            per_op = d;
            divisor = n;
            title = format!("EL2 instructions per operation (runs of {n} and {} repetitions, difference / {n})", 2 * n);
            if runs.iter().any(|r| r.other_el > 0) {
                println!("(dropped {} lines at the hyp's addresses from lower ELs)", runs[1].other_el);
            }
        }
        (None, scenario) => {
            args.scenario = Some(scenario.clone().unwrap_or_else(|| "boot".into()));
            if !append.is_empty() {
                args.append = Some(std::mem::take(&mut append));
            }
            let r = profile_run(&args, syms.text, "all")?;
            per_op = r.counts.iter().map(|(&k, &v)| (k, v as f64)).collect();
            divisor = 1;
            title = format!("EL2 instructions in the whole '{}' run", args.scenario.as_deref().unwrap_or(""));
        }
    }
    let funcs = per_function(&syms, &per_op);
    let total: f64 = funcs.iter().map(|f| f.1).sum();
    println!("{title}");
    println!("{:>10} {:>6} {:>5}  function", "instr", "%", "PCs");
    for (name, n, pcs) in &funcs {
        if n.abs() < 0.05 {
            continue;
        }
        println!("{:>10.1} {:>6.1} {:>5}  {}", n, 100.0 * n / total.max(1e-9), pcs, name);
    }
    println!("{total:>10.1}  total");
    if !p.pcs.is_empty() {
        let dis = disassembly(&elf_path);
        for want in &p.pcs {
            let mut v: Vec<_> = per_op
                .iter()
                .filter(|(pc, _)| syms.lookup(**pc).is_some_and(|s| s.name.contains(want.as_str())))
                .collect();
            v.sort_by_key(|(pc, _)| **pc);
            println!("-- PCs of functions matching '{want}' (executions per operation)");
            for (pc, n) in v {
                println!("{:>8.2}  {:#x}  {}", n, pc, dis.get(pc).map_or("", String::as_str));
            }
        }
    }
    let _ = divisor;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_lines() {
        let l = "Trace 0: 0x7f12a4000100 [00000000/0000000040201234/00000065/ff000000] hyp_trap\n";
        assert_eq!(parse_exec_line(l), Some((0x4020_1234, 0x65)));
        assert!(at_el2(0x65));
        assert!(!at_el2(0x25));
        assert_eq!(parse_exec_line("Linking TBs 0x1 [0000000040201234] index 0 -> 0x2"), None);
        assert_eq!(parse_exec_line("Trace 0: 0x1 [garbage]"), None);
    }

    #[test]
    fn demangles() {
        assert_eq!(demangle("_ZN3hyp2vm3run8vcpu_run17h0123456789abcdefE"), "hyp::vm::run::vcpu_run");
        assert_eq!(
            demangle("_ZN4core3ptr47drop_in_place$LT$alloc..sync..Arc$LT$u8$GT$$GT$17h0123456789abcdefE"),
            "core::ptr::drop_in_place<alloc::sync::Arc<u8>>"
        );
        assert_eq!(demangle("hyp_trap"), "hyp_trap");
        assert_eq!(demangle("_ZN3bad"), "_ZN3bad");
    }

    #[test]
    fn attribution() {
        let s = Symbols::new(
            (0x1000, 0x2000),
            vec![
                Sym { addr: 0x1000, size: 0x40, name: "a".into() },
                // An assembly label (size 0) reaches to the next symbol.
                Sym { addr: 0x1100, size: 0, name: "__label".into() },
                Sym { addr: 0x1100, size: 0x20, name: "b".into() },
                Sym { addr: 0x1200, size: 0, name: "__vectors".into() },
            ],
        );
        assert_eq!(s.lookup(0x1000).unwrap().name, "a");
        assert_eq!(s.lookup(0x103c).unwrap().name, "a");
        assert!(s.lookup(0x1040).is_none(), "a gap after a sized symbol");
        assert_eq!(s.lookup(0x1104).unwrap().name, "b", "the sized symbol wins at a shared address");
        assert_eq!(s.lookup(0x1fff).unwrap().name, "__vectors");
        assert!(s.lookup(0x2000).is_none() && s.lookup(0xfff).is_none(), "outside the text");
        let mut counts = HashMap::new();
        counts.insert(0x1000, 3.0);
        counts.insert(0x1004, 2.0);
        counts.insert(0x1300, 7.0);
        counts.insert(0x1050, 1.0);
        let f = per_function(&s, &counts);
        assert_eq!(f[0], ("__vectors".to_string(), 7.0, 1));
        assert_eq!(f[1], ("a".to_string(), 5.0, 2));
        assert_eq!(f[2], ("?0x1050".to_string(), 1.0, 1));
    }
}
