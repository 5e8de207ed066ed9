//! `cargo xtask`: build, run and test the hypervisor under QEMU.

#![deny(clippy::undocumented_unsafe_blocks)]

// The layers, top to bottom; a module imports only modules below its own
// (the test in `modgraph` checks that the module graph has no cycle):
//   commands:      bench, modgraph (`cycles`), profile, runner (`test`), trace
//   data:          scenarios (the scenario table), fixtures
//   one run:       qemu > build, linux_vmm > linux_kmod, linux_guest > linux, qemu_install
//   below those:   apt, image, options, packages, paths, pattern, sys, toolchain
mod apt;
mod bench;
mod build;
mod fixtures;
mod image;
mod linux;
mod linux_guest;
mod linux_kmod;
mod linux_vmm;
mod modgraph;
mod options;
mod packages;
mod paths;
mod pattern;
mod profile;
mod progress;
mod qemu;
mod qemu_install;
mod runner;
mod scenarios;
#[cfg(test)]
mod switch_order;
mod sys;
mod toolchain;
mod trace;

use std::path::PathBuf;
use std::process::exit;

use clap::{Parser, Subcommand};

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
    Run(Box<options::RunArgs>),
    /// Host unit tests plus the QEMU scenarios; prints "N passed, N failed".
    Test(runner::TestArgs),
    /// Exact instruction counts per hypervisor operation (QEMU icount + PMU),
    /// of the release build unless --debug.
    Bench(bench::BenchArgs),
    /// Build (or find in target/linux-guest/) the Linux guest's kernel,
    /// initramfs and disk image; print their paths.
    LinuxGuest(linux_guest::BuildArgs),
    /// EL2 instructions per hyp function, for a bench row (N vs 2N
    /// repetitions, diffed) or a whole scenario (QEMU -d exec, one
    /// instruction per TB).
    Profile(profile::ProfileArgs),
    /// Print the apt entries the xtask adds when it needs them (QEMU 10 from
    /// bookworm-backports, Debian's Linux source), on the mirror this
    /// machine's apt uses; writes nothing.
    AptEntries,
    /// The workspace's module graph, file by file: its import cycles (exit
    /// status 1 when there is one), or the whole graph for Graphviz (--dot).
    Cycles {
        #[arg(long)]
        dot: bool,
        /// Another checkout to read instead of this one.
        #[arg(long)]
        root: Option<PathBuf>,
    },
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

/// `cargo xtask apt-entries`.
fn apt_entries() -> anyhow::Result<i32> {
    let show = |what: &str, entry: anyhow::Result<Option<(apt::Addition, bool)>>| match entry {
        Ok(Some((a, have))) => {
            let note = if have { " (apt has this suite already: the xtask adds nothing)" } else { "" };
            println!("{what}: {}{note}\n{}", a.file.display(), a.text)
        }
        Ok(None) => println!("{what}: none on this release (QEMU comes from its own suites)\n"),
        Err(e) => println!("{what}: {e:#}\n"),
    };
    show("QEMU 10 (when qemu-system-aarch64 is older)", qemu_install::backports_entry());
    show(
        "the Linux guest's kernel source (when apt has no Linux 6.12 source)",
        linux_guest::deb_src_entry().map(|a| Some((a, false))),
    );
    Ok(0)
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Build { release } => build::build_cmd(release),
        Cmd::Run(args) => qemu::run_cmd(&args),
        Cmd::Test(args) => runner::test_cmd(&args),
        Cmd::Bench(args) => bench::bench_cmd(&args),
        Cmd::Profile(p) => profile::profile_cmd(&p),
        Cmd::Trace { file, json, map } => trace::trace_cmd(&file, json, map),
        Cmd::LinuxGuest(a) => linux_guest::build_cmd(&a),
        Cmd::Cycles { dot, root } => {
            modgraph::run(&root.unwrap_or_else(paths::workspace_root), dot).map(|acyclic| if acyclic { 0 } else { 1 })
        }
        Cmd::AptEntries => apt_entries(),
    };
    match r {
        Ok(code) => exit(code),
        Err(e) => {
            eprintln!("xtask: {e:#}");
            exit(1)
        }
    }
}
