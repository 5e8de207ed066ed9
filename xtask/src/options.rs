//! The options of `cargo xtask run` ([`RunArgs`], also what scenarios and
//! the bench give a run), checked before anything is built or started:
//! every value, range and combination, with the valid values in the error.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct RunArgs {
    #[arg(long)]
    pub release: bool,
    /// Start QEMU halted with a gdb stub on :1234.
    #[arg(long)]
    pub gdb: bool,
    /// Hyp log level.
    #[arg(long, default_value = "info", value_parser = LOG_LEVELS)]
    pub log: String,
    /// CPUs (1..=8).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_CPUS as i64))]
    pub smp: u32,
    /// Machine memory, 128M..255G (e.g. 1G, 4096M).
    #[arg(long, default_value = "1G", value_parser = parse_mem)]
    pub mem: String,
    /// Boot this arm64 Image as the host instead of the host shim.
    #[arg(long)]
    pub host: Option<PathBuf>,
    /// An initramfs for the --host (or --linux) kernel (through the boot bundle and /chosen).
    #[arg(long)]
    pub host_initrd: Option<PathBuf>,
    /// Boot Debian's arm64 Linux 6.12 with a busybox initramfs as the host
    /// (fetched with apt on first use, cached under target/linux-host/).
    #[arg(long)]
    pub linux: bool,
    /// Host command line (goes into /chosen/bootargs).
    #[arg(long)]
    pub append: Option<String>,
    /// Run Linux as a protected guest: a kernel built from Debian's Linux
    /// 6.12 source with guest-linux/config (on first use; cached under
    /// target/linux-guest/), a busybox initramfs around guest-linux/init
    /// and a disk image. --guest-mem (default 128M) and --guest-vcpus apply.
    /// Repeat it for several Linux guests at once, each with its disk.
    #[arg(long, action = clap::ArgAction::Count)]
    pub linux_guest: u8,
    /// Run this arm64 Linux Image as the Linux guest instead of the one the
    /// xtask builds (any kernel with CONFIG_ARM_PKVM_GUEST; README "Bring
    /// your own guest kernel"). Repeatable: one per Linux guest, in order
    /// (the last one for the guests after). Implies --linux-guest.
    #[arg(long)]
    pub guest_kernel: Vec<PathBuf>,
    /// The Linux guests' initramfs instead of the xtask's (busybox and
    /// guest-linux/init).
    #[arg(long)]
    pub guest_initrd: Option<PathBuf>,
    /// Added to the Linux guests' command line (after the VMM's
    /// `console=ttyAMA0 panic=-1`; at most 1024 bytes).
    #[arg(long, allow_hyphen_values = true)]
    pub guest_append: Option<String>,
    /// Give the host shim this file as its guest bundle (tests: bundles the
    /// xtask's own checks would refuse).
    #[arg(long, hide = true)]
    pub guest_bundle: Option<PathBuf>,
    /// Run this AArch64 ELF as a protected guest (repeatable).
    #[arg(long)]
    pub guest: Vec<PathBuf>,
    /// Guest memory for each --guest, in order (default 64M).
    #[arg(long, value_parser = parse_guest_mem)]
    pub guest_mem: Vec<String>,
    /// vCPUs of each --guest, in order (default 1, at most 8): all in its
    /// DTB; vCPU 0 starts, the guest starts the others with PSCI CPU_ON.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub guest_vcpus: Vec<u32>,
    /// The Linux host only: bootargs of each --guest, in order (its DTB's
    /// /chosen/bootargs; the guest-test payload picks its test with
    /// test=NAME).
    #[arg(long)]
    pub guest_args: Vec<String>,
    /// Host-shim scenario (shim.test=NAME); default: the demo.
    #[arg(long, value_parser = SHIM_SCENARIOS)]
    pub scenario: Option<String>,
    /// Kill QEMU after this many seconds (exit status 124).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// Trace and stream stage-2 events: faults,splits,merges,transitions,hypercalls,injects (or all).
    #[arg(long, value_parser = parse_trace)]
    pub trace: Option<String>,
    /// Trace only this VM (needs --trace or --trace-dump).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub trace_vm: Option<u32>,
    /// Trace ring size per CPU, in records (1..=2048; needs --trace or --trace-dump).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_TRACE_BUF as i64))]
    pub trace_buf: Option<u32>,
    /// Record without streaming; the host shim drains and prints at the end.
    #[arg(long, value_parser = TRACE_DUMP)]
    pub trace_dump: Option<String>,
    /// Print every stage-2 (host and VMs) as ranges at the interesting points.
    #[arg(long)]
    pub dump_s2: bool,
    /// Run QEMU with -icount shift=0,align=off,sleep=off (exact instruction counts).
    #[arg(long)]
    pub icount: bool,
    /// Extra cargo features for the hyp build (e.g. notrace).
    #[arg(long)]
    pub hyp_features: Option<String>,
    /// Extra QEMU arguments, whitespace-separated, after the machine's
    /// (e.g. devices to attach: "-device edu,dma_mask=0xffffffffffffffff").
    #[arg(long, allow_hyphen_values = true)]
    pub qemu_args: Option<String>,
    /// The CPU model QEMU emulates (default max, every feature QEMU has).
    #[arg(long, value_parser = CPU_MODELS)]
    pub cpu: Option<String>,
}

/// QEMU CPU models the suite runs on (`--cpu`); all have EL2. `max` has
/// every feature QEMU implements (FEAT_S2FWB, PAuth, SVE, SME, 48-bit PA);
/// Cortex-A53/A57/A72 are ARMv8.0 (no PAN, no VHE, no PAuth, 40/44-bit
/// PA); A55/A76/Neoverse-N1 ARMv8.2; Neoverse-V1 ARMv8.4 with SVE;
/// Neoverse-N2 ARMv9 with SVE2.
pub const CPU_MODELS: [&str; 9] = [
    "max",
    "cortex-a53",
    "cortex-a55",
    "cortex-a57",
    "cortex-a72",
    "cortex-a76",
    "neoverse-n1",
    "neoverse-n2",
    "neoverse-v1",
];

/// QEMU's `-cpu` value for a model (`max` with the cheap implementation-
/// defined pointer authentication, which QEMU's architected one is not).
pub fn qemu_cpu(model: Option<&str>) -> String {
    match model {
        None | Some("max") => "max,pauth-impdef=on".into(),
        Some(m) => m.into(),
    }
}

/// Hyp log levels (`hyp.log=`).
pub const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
/// The host shim's scenarios (`shim.test=NAME`, host-shim/src/scenarios/mod.rs).
pub const SHIM_SCENARIOS: [&str; 25] = [
    "boot",
    "demo",
    "guests",
    "guest-tests",
    "block1g",
    "two-vms",
    "hostile",
    "devices",
    "aborts",
    "leaks",
    "preempt",
    "traps",
    "pmu-owned",
    "bench",
    "smp",
    "tlb",
    "fuzz",
    "irq",
    "irq-smp",
    "bench-irq",
    "bench-scale",
    "virtio",
    "virtio-race",
    "edu",
    "demand",
];
/// `--trace` words (hyp_abi::trace::parse_mask).
pub const TRACE_WORDS: [&str; 8] =
    ["faults", "splits", "merges", "transitions", "hypercalls", "injects", "irqs", "dma"];
/// `--trace-dump` formats.
pub const TRACE_DUMP: [&str; 2] = ["text", "bin"];
/// CPUs the hyp supports (hyp/src/percpu.rs MAX_CPUS).
pub const MAX_CPUS: u32 = 8;
/// Trace ring records per CPU (hyp/src/tracebuf.rs CAPACITY).
pub const MAX_TRACE_BUF: u32 = 2048;
/// Machine memory: the hyp's carve-out (34 MiB and up) plus room for the
/// host; at most what QEMU virt models below the 40-bit IPA limit.
pub const MIN_MEM: u64 = 128 << 20;
pub const MAX_MEM: u64 = 255 << 30;
/// Guest memory: the 64 KiB DTB window plus the program.
pub const MIN_GUEST_MEM: u64 = 1 << 20;

/// Parses "64M", "1G", "4096" (bytes) etc.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num.parse().with_context(|| format!("bad size '{s}'"))?;
    n.checked_mul(mul).context("size overflows")
}

fn size_error(what: &str, s: &str) -> String {
    format!("bad {what} '{s}': a number of bytes with an optional K, M or G suffix (e.g. 512M, 2G)")
}

/// `--mem`: QEMU's syntax limited to what the hyp and QEMU virt support.
pub fn parse_mem(s: &str) -> Result<String, String> {
    let n = parse_size(s).map_err(|_| size_error("memory size", s))?;
    if !(MIN_MEM..=MAX_MEM).contains(&n) {
        return Err(format!("memory size '{s}' out of range: 128M..255G"));
    }
    if !n.is_multiple_of(1 << 20) {
        return Err(format!("memory size '{s}' is not a whole number of MiB"));
    }
    Ok(s.to_string())
}

/// `--guest-mem`: whole pages, at least 1 MiB.
pub fn parse_guest_mem(s: &str) -> Result<String, String> {
    let n = parse_size(s).map_err(|_| size_error("guest memory size", s))?;
    if n < MIN_GUEST_MEM || !n.is_multiple_of(4096) {
        return Err(format!("guest memory '{s}' must be a multiple of 4K and at least 1M"));
    }
    Ok(s.to_string())
}

/// `--trace`: comma-separated words, or `all`.
pub fn parse_trace(s: &str) -> Result<String, String> {
    let words: Vec<&str> = s.split(',').collect();
    let ok = |w: &&str| w == &"all" || TRACE_WORDS.iter().any(|t| t == w || t.strip_suffix('s') == Some(w));
    if let Some(bad) = words.iter().find(|w| !ok(w)) {
        return Err(format!(
            "unknown trace kind '{bad}'; valid: {}, all (comma-separated, e.g. faults,splits)",
            TRACE_WORDS.join(", ")
        ));
    }
    debug_assert!(hyp_abi::trace::parse_mask(s).is_some());
    Ok(s.to_string())
}

/// Linux guests at most in one run.
pub const MAX_LINUX_GUESTS: usize = 4;

impl RunArgs {
    /// How many Linux guests the run has (`--linux-guest` repeated, or one
    /// per `--guest-kernel`).
    pub fn linux_guests(&self) -> usize {
        usize::from(self.linux_guest).max(self.guest_kernel.len())
    }
}

/// Combinations and files: checked before anything is built.
pub fn check(a: &RunArgs) -> Result<()> {
    if a.trace_vm.is_some() && a.trace.is_none() && a.trace_dump.is_none() {
        bail!("--trace-vm filters traced events: give --trace KINDS or --trace-dump FORMAT with it");
    }
    if a.trace_buf.is_some() && a.trace.is_none() && a.trace_dump.is_none() {
        bail!("--trace-buf sizes the trace ring: give --trace KINDS or --trace-dump FORMAT with it");
    }
    if a.linux && a.host.is_some() {
        bail!("--linux boots Debian's kernel as the host; --host boots yours: give one of them");
    }
    let other_host = a.linux || a.host.is_some();
    if a.host_initrd.is_some() && !other_host {
        bail!("--host-initrd goes with --host IMAGE (the host shim takes its guests as its initrd)");
    }
    if a.host_initrd.is_some() && !a.guest.is_empty() {
        bail!("--host-initrd and --guest both fill the host's initrd: give one of them");
    }
    if a.linux && a.host_initrd.is_some() {
        bail!("--linux brings its own initramfs; use --host IMAGE --host-initrd FILE for yours");
    }
    if a.linux && a.scenario.is_some() {
        bail!("--scenario picks a host-shim scenario; the Linux host (--linux) does not run them");
    }
    if a.dump_s2 && a.linux {
        bail!("--dump-s2 is done by the host shim; the Linux host (--linux) does not do it");
    }
    let linux_guests = a.linux_guests();
    if linux_guests > MAX_LINUX_GUESTS {
        bail!("{linux_guests} Linux guests: at most {MAX_LINUX_GUESTS} in one run");
    }
    if linux_guests == 0 && (a.guest_initrd.is_some() || a.guest_append.is_some()) {
        bail!("--guest-initrd and --guest-append are for Linux guests: give --linux-guest or --guest-kernel IMAGE");
    }
    if a.guest_append.as_ref().is_some_and(|s| s.len() > hyp_abi::guests::MAX_CMDLINE) {
        bail!("--guest-append: at most {} bytes", hyp_abi::guests::MAX_CMDLINE);
    }
    if linux_guests > 0 && a.host.is_some() {
        bail!("--linux-guest runs under the host shim or the Linux host (--linux); --host replaces them: give one");
    }
    if linux_guests > 1 && a.linux {
        bail!("{linux_guests} Linux guests: the Linux host's VMM runs one (several run under the host shim)");
    }
    if a.linux && (!a.guest_kernel.is_empty() || a.guest_initrd.is_some() || a.guest_append.is_some()) {
        bail!("--guest-kernel, --guest-initrd and --guest-append are the host shim's; the Linux host's VMM runs the xtask's guest kernel");
    }
    if linux_guests > 0 && !a.guest.is_empty() {
        bail!("--linux-guest and --guest: give one of them (--guest-mem and --guest-vcpus apply to either)");
    }
    if linux_guests > 0 && a.scenario.as_deref().is_some_and(|s| s != "guests") {
        bail!("--linux-guest runs in the host shim's guests scenario; --scenario picks another one");
    }
    if a.guest_bundle.is_some() && (other_host || linux_guests > 0 || !a.guest.is_empty()) {
        bail!(
            "--guest-bundle is the host shim's whole guest bundle: give no --host, --linux, --linux-guest or --guest"
        );
    }
    let guests = (a.guest.len() + linux_guests).max(usize::from(!other_host));
    if !a.guest_args.is_empty() && !a.linux {
        bail!("--guest-args gives the Linux host's VMM each guest's bootargs: it goes with --linux --guest");
    }
    if a.guest_args.len() > a.guest.len() {
        bail!("{} --guest-args value(s) for {} guest(s): one per --guest, in order", a.guest_args.len(), a.guest.len());
    }
    if a.guest_mem.len() > guests {
        bail!("{} --guest-mem value(s) for {} guest(s): one per --guest, in order", a.guest_mem.len(), guests);
    }
    if a.guest_vcpus.len() > guests {
        bail!("{} --guest-vcpus value(s) for {} guest(s): one per --guest, in order", a.guest_vcpus.len(), guests);
    }
    for (what, p) in a
        .host
        .iter()
        .map(|p| ("--host", p))
        .chain(a.host_initrd.iter().map(|p| ("--host-initrd", p)))
        .chain(a.guest.iter().map(|p| ("--guest", p)))
        .chain(a.guest_kernel.iter().map(|p| ("--guest-kernel", p)))
        .chain(a.guest_initrd.iter().map(|p| ("--guest-initrd", p)))
        .chain(a.guest_bundle.iter().map(|p| ("--guest-bundle", p)))
    {
        if !p.is_file() {
            bail!("{what} {}: no such file", p.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    /// Parses and checks `cargo xtask run ARGS`; the error text on failure.
    fn run(args: &str) -> Result<RunArgs, String> {
        let cli =
            Cli::try_parse_from(std::iter::once("run").chain(args.split_whitespace())).map_err(|e| e.to_string())?;
        check(&cli.run).map_err(|e| e.to_string())?;
        Ok(cli.run)
    }

    fn err(args: &str) -> String {
        run(args).map(|_| ()).expect_err(args)
    }

    #[test]
    fn defaults_pass() {
        let a = run("").unwrap();
        assert_eq!((a.smp, a.mem.as_str(), a.log.as_str()), (1, "1G", "info"));
        run("--smp 8 --mem 20G --log debug --trace faults,splits --trace-vm 1 --trace-buf 2048").unwrap();
        run("--trace all --scenario guest-tests --guest-mem 1G").unwrap();
        run("--trace-dump text --trace-vm 2").unwrap();
    }

    #[test]
    fn bad_values_name_the_valid_ones() {
        let e = err("--trace bogus");
        assert!(e.contains("unknown trace kind 'bogus'") && e.contains("faults, splits"), "{e}");
        let e = err("--scenario nope");
        assert!(e.contains("nope") && e.contains("guest-tests") && e.contains("hostile"), "{e}");
        let e = err("--smp 0");
        assert!(e.contains("1..=8"), "{e}");
        assert!(err("--smp 9").contains("1..=8"));
        let e = err("--mem 3x");
        assert!(e.contains("bad memory size '3x'") && e.contains("512M"), "{e}");
        assert!(err("--mem 64M").contains("128M..255G"));
        assert!(err("--mem 300G").contains("128M..255G"));
        assert!(err("--mem 200000000").contains("MiB"));
        let e = err("--log loud");
        assert!(e.contains("loud") && e.contains("debug"), "{e}");
        assert!(err("--trace-dump json").contains("text"));
        assert!(err("--trace-buf 0 --trace all").contains("1..=2048"));
        assert!(err("--trace-buf 4096 --trace all").contains("1..=2048"));
        assert!(err("--guest-mem 100K").contains("at least 1M"));
        assert!(err("--timeout 0").contains("0"));
        assert!(err("--trace-vm 0 --trace all").contains("1.."));
        assert!(err("--guest-vcpus 0").contains("1..=8"));
        assert!(err("--guest-vcpus 9").contains("1..=8"));
    }

    #[test]
    fn bad_combinations_are_refused() {
        assert!(err("--trace-vm 1").contains("--trace KINDS"));
        assert!(err("--trace-buf 8").contains("--trace KINDS"));
        assert!(err("--host-initrd Cargo.toml").contains("goes with --host"));
        assert!(err("--linux --host Cargo.toml").contains("give one of them"));
        // The Linux host runs --guest programs with its VMM.
        run("--linux --guest Cargo.toml --guest-mem 32M --guest-vcpus 2 --guest-args test=all").unwrap();
        assert!(err("--guest Cargo.toml --guest-args test=all").contains("goes with --linux"));
        assert!(err("--linux --guest Cargo.toml --guest-args a --guest-args b").contains("one per --guest"));
        assert!(err("--linux --scenario boot").contains("does not run them"));
        assert!(err("--guest-mem 8M --guest-mem 8M").contains("one per --guest"));
        assert!(err("--guest-vcpus 2 --guest-vcpus 2").contains("one per --guest"));
        assert!(err("--host /nonexistent/Image").contains("no such file"));
        assert!(err("--linux-guest --host Cargo.toml").contains("give one"));
        run("--linux-guest --linux --guest-vcpus 2 --smp 2").unwrap();
        assert!(err("--linux-guest --guest Cargo.toml").contains("give one of them"));
        assert!(err("--linux-guest --scenario boot").contains("guests scenario"));
        assert!(err("--linux-guest --guest-mem 64M --guest-mem 64M").contains("one per --guest"));
        run("--linux-guest --guest-mem 256M --guest-vcpus 2 --smp 2").unwrap();
        assert!(err("--guest-append quiet").contains("for Linux guests"));
        assert!(err("--guest-initrd Cargo.toml").contains("for Linux guests"));
        assert!(err("--guest-kernel /nonexistent/Image").contains("--guest-kernel /nonexistent/Image: no such file"));
        assert!(err("--guest-kernel Cargo.toml --guest-initrd /nonexistent").contains("no such file"));
        assert!(err("--guest-kernel Cargo.toml --linux").contains("are the host shim's"));
        assert!(err("--linux --linux-guest --linux-guest").contains("the Linux host's VMM runs one"));
        let long = format!("--linux-guest --guest-append {}", "x".repeat(1025));
        assert!(err(&long).contains("at most 1024 bytes"));
        assert!(err("--linux-guest --linux-guest --linux-guest --linux-guest --linux-guest").contains("at most 4"));
        assert!(err("--linux-guest --linux-guest --guest-mem 64M --guest-mem 64M --guest-mem 64M")
            .contains("one per --guest"));
    }

    #[test]
    fn linux_guests_count() {
        let a = run("--guest-kernel Cargo.toml --guest-append quiet --guest-initrd Cargo.toml").unwrap();
        assert_eq!((a.linux_guests(), a.guest_append.as_deref()), (1, Some("quiet")));
        let a = run("--linux-guest --linux-guest --guest-mem 64M --guest-mem 64M --smp 2").unwrap();
        assert_eq!(a.linux_guests(), 2);
        let a = run("--linux-guest --guest-kernel Cargo.toml --guest-kernel Cargo.toml").unwrap();
        assert_eq!(a.linux_guests(), 2);
        assert_eq!(run("").unwrap().linux_guests(), 0);
    }

    /// The scenario list follows the host shim's dispatch.
    #[test]
    fn shim_scenarios_match_the_shim() {
        let src =
            std::fs::read_to_string(crate::paths::workspace_root().join("host-shim/src/scenarios/mod.rs")).unwrap();
        let mut names: Vec<&str> =
            src.lines().filter_map(|l| l.trim().strip_prefix('"')?.split_once("\" =>").map(|(n, _)| n)).collect();
        let mut ours = SHIM_SCENARIOS.to_vec();
        names.sort();
        ours.sort();
        assert_eq!(ours, names);
    }

    /// The limits follow the hyp's constants.
    #[test]
    fn limits_match_the_hyp() {
        let root = crate::paths::workspace_root();
        let percpu = std::fs::read_to_string(root.join("hyp/src/percpu.rs")).unwrap();
        assert!(percpu.contains(&format!("pub const MAX_CPUS: usize = {MAX_CPUS};")));
        let tracebuf = std::fs::read_to_string(root.join("hyp/src/tracebuf.rs")).unwrap();
        assert!(tracebuf.contains(&format!("pub const CAPACITY: usize = {MAX_TRACE_BUF};")));
        for w in TRACE_WORDS {
            assert!(hyp_abi::trace::parse_mask(w).is_some_and(|m| m != 0), "{w}");
        }
    }
}
