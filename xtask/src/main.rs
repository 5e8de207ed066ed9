//! `cargo xtask`: build, run and test the hypervisor under QEMU.

mod bench;
mod fixtures;
mod image;
mod linux;
mod linux_guest;
mod linux_host_scenarios;
mod linux_kmod;
mod linux_vmm;
mod options;
mod profile;
mod qemu;
mod scenarios;
mod sys;
mod toolchain;
mod trace;

use std::path::PathBuf;
use std::process::{exit, Command};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test the pKVM-style hypervisor under QEMU")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the hyp, the host shim and the guest payloads; print their paths.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Boot the system in QEMU, console on stdio; exits with the system's status.
    Run(Box<RunArgs>),
    /// Host unit tests plus the QEMU scenarios; prints "N passed, N failed".
    Test(TestArgs),
    /// Exact instruction counts per hypervisor operation (QEMU icount + PMU).
    Bench {
        #[arg(long)]
        release: bool,
        /// Print new/old ratios against an earlier results file.
        #[arg(long)]
        compare: Option<PathBuf>,
        /// Where to write the results (default bench/results.json).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Extra cargo features for the hyp build (notrace: trace points compiled out).
        #[arg(long)]
        hyp_features: Option<String>,
        /// Hyp command-line options for the run (e.g. "hyp.trace=all hyp.trace_quiet").
        #[arg(long)]
        append: Option<String>,
    },
    /// Build (or find in target/linux-guest/) the Linux guest's kernel,
    /// initramfs and disk image; print their paths.
    LinuxGuest,
    /// EL2 instructions per hyp function, for a bench row (N vs 2N
    /// repetitions, diffed) or a whole scenario (QEMU -d exec, one
    /// instruction per TB).
    Profile(profile::ProfileArgs),
    /// Decode trace records from a console log: table, summary, Chrome JSON;
    /// or render its stage-2 dumps as an SVG map.
    Trace {
        /// A captured console log (`cargo xtask run ... > log`).
        file: PathBuf,
        /// Also write a Chrome trace-event JSON (opens in ui.perfetto.dev).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Render the log's stage-2 dumps (`--dump-s2`) as SVG into this file.
        #[arg(long)]
        map: Option<PathBuf>,
    },
}

#[derive(Args, Clone, Debug, Default)]
pub struct RunArgs {
    #[arg(long)]
    pub release: bool,
    /// Start QEMU halted with a gdb stub on :1234.
    #[arg(long)]
    pub gdb: bool,
    /// Hyp log level.
    #[arg(long, default_value = "info", value_parser = options::LOG_LEVELS)]
    pub log: String,
    /// CPUs (1..=8).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=options::MAX_CPUS as i64))]
    pub smp: u32,
    /// Machine memory, 128M..255G (e.g. 1G, 4096M).
    #[arg(long, default_value = "1G", value_parser = options::parse_mem)]
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
    #[arg(long)]
    pub linux_guest: bool,
    /// Give the host shim this file as its guest bundle (tests: bundles the
    /// xtask's own checks would refuse).
    #[arg(long, hide = true)]
    pub guest_bundle: Option<PathBuf>,
    /// Run this AArch64 ELF as a protected guest (repeatable).
    #[arg(long)]
    pub guest: Vec<PathBuf>,
    /// Guest memory for each --guest, in order (default 64M).
    #[arg(long, value_parser = options::parse_guest_mem)]
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
    #[arg(long, value_parser = options::SHIM_SCENARIOS)]
    pub scenario: Option<String>,
    /// Kill QEMU after this many seconds (exit status 124).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// Trace and stream stage-2 events: faults,splits,merges,transitions,hypercalls,injects (or all).
    #[arg(long, value_parser = options::parse_trace)]
    pub trace: Option<String>,
    /// Trace only this VM (needs --trace or --trace-dump).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub trace_vm: Option<u32>,
    /// Trace ring size per CPU, in records (1..=2048; needs --trace or --trace-dump).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=options::MAX_TRACE_BUF as i64))]
    pub trace_buf: Option<u32>,
    /// Record without streaming; the host shim drains and prints at the end.
    #[arg(long, value_parser = options::TRACE_DUMP)]
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
}

#[derive(Args, Clone, Debug, Default)]
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

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the current
/// directory, as cargo takes it) or `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(d) => std::env::current_dir().map(|c| c.join(&d)).unwrap_or_else(|_| PathBuf::from(d)),
        None => workspace_root().join("target"),
    }
}

/// Paths of the built artefacts.
pub struct Artifacts {
    pub hyp_elf: PathBuf,
    pub hyp_image: PathBuf,
    pub shim_elf: PathBuf,
    pub shim_image: PathBuf,
    pub guest_test: PathBuf,
}

pub const HYP_TARGET: &str = "aarch64-unknown-none-softfloat";
pub const PAYLOAD_TARGET: &str = "aarch64-unknown-none";

pub fn build(release: bool) -> Result<Artifacts> {
    build_with(release, None)
}

/// Builds with extra cargo features for the hyp (e.g. "notrace").
pub fn build_with(release: bool, hyp_features: Option<&str>) -> Result<Artifacts> {
    let root = workspace_root();
    toolchain::ensure_targets()?;
    // The hyp is built without FP/SIMD (softfloat): lower-EL FP state then
    // survives every trap and only moves on world switches.
    for (target, pkgs) in [
        (HYP_TARGET, &["-p", "hyp", "--bin", "hyp"][..]),
        (PAYLOAD_TARGET, &["-p", "host-shim", "-p", "guest-test"][..]),
    ] {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(&root).env("CARGO_TARGET_DIR", target_dir());
        cmd.args(["build", "--quiet", "--target", target]).args(pkgs);
        if let (HYP_TARGET, Some(f)) = (target, hyp_features) {
            cmd.args(["--features", f]);
        }
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().context("running cargo build")?;
        if !st.success() {
            bail!("cargo build failed");
        }
    }
    let profile = if release { "release" } else { "debug" };
    let hyp_dir = target_dir().join(HYP_TARGET).join(profile);
    let dir = target_dir().join(PAYLOAD_TARGET).join(profile);
    let a = Artifacts {
        hyp_elf: hyp_dir.join("hyp"),
        hyp_image: hyp_dir.join("hyp.bin"),
        shim_elf: dir.join("host-shim"),
        shim_image: dir.join("host-shim.bin"),
        guest_test: dir.join("guest-test"),
    };
    for (elf, img) in [(&a.hyp_elf, &a.hyp_image), (&a.shim_elf, &a.shim_image)] {
        let data = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
        std::fs::write(img, image::elf_to_image(&data).with_context(|| elf.display().to_string())?)?;
    }
    Ok(a)
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Build { release } => build(release).map(|a| {
            println!("hyp        {} (Image {})", a.hyp_elf.display(), a.hyp_image.display());
            println!("host-shim  {} (Image {})", a.shim_elf.display(), a.shim_image.display());
            println!("guest-test {}", a.guest_test.display());
            0
        }),
        Cmd::Run(args) => qemu::run_cmd(&args),
        Cmd::Test(args) => scenarios::test_cmd(&args),
        Cmd::Bench { release, compare, out, hyp_features, append } => {
            bench::bench_cmd(release, compare, out, hyp_features, append)
        }
        Cmd::Profile(p) => profile::profile_cmd(&p),
        Cmd::Trace { file, json, map } => trace::trace_cmd(&file, json, map),
        Cmd::LinuxGuest => linux_guest::build_cmd(),
    };
    match r {
        Ok(code) => exit(code),
        Err(e) => {
            eprintln!("xtask: {e:#}");
            exit(1)
        }
    }
}
