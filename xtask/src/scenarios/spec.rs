//! What a row of the scenario table is: the options of one QEMU run and
//! what the run must print. Every part is a constant, so the tables in the
//! sibling files are data; [`Run::args`] turns a row's options into the
//! `cargo xtask run` options the runner boots with.

use std::path::PathBuf;

use crate::options::RunArgs;
use crate::paths::payload_dir;

/// A check of a run's whole output: Err(the reason) on failure.
pub type Verify = fn(&str) -> Result<(), String>;

/// One QEMU run and what it must print.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// The short name: `cargo xtask test NAME`.
    pub name: &'static str,
    /// What the scenario shows (`--list`, the PASS/FAIL line).
    pub about: &'static str,
    /// The options of the run.
    pub run: Run,
    /// Lines that must appear, in this order, each exactly; `*` stands for
    /// any text, `{name}` for a word that is the same wherever `name`
    /// appears (`crate::pattern`; [`known_words`] are bound before).
    pub lines: Lines,
    /// Text that must not appear in any line.
    pub absent: &'static [&'static str],
    /// Lines that must appear somewhere, in any order (concurrent CPUs).
    pub anywhere: &'static [&'static str],
    /// The run's expected exit status (`cargo xtask run`'s: 124 = timeout).
    pub code: i32,
    /// Seconds before QEMU is stopped.
    pub timeout: u64,
    /// A check of the whole output that lines cannot express (counts that
    /// must agree, addresses in ranges): Err(reason) on failure.
    pub verify: Option<Verify>,
}

impl Scenario {
    /// "name: about", as the runner prints it.
    pub fn title(&self) -> String {
        if self.about.is_empty() {
            self.name.to_string()
        } else {
            format!("{}: {}", self.name, self.about)
        }
    }
}

/// The expected lines of a scenario, in order.
#[derive(Clone, Copy, Debug)]
pub enum Lines {
    /// These lines.
    Are(&'static [&'static str]),
    /// These lists one after the other (lists several scenarios share).
    Join(&'static [&'static [&'static str]]),
    /// Lines made from lists of names (one check per register group and
    /// exit kind, say), too many to write out one by one.
    Made(fn() -> Vec<String>),
}

impl Lines {
    pub fn expand(&self) -> Vec<String> {
        match self {
            Lines::Are(l) => l.iter().map(|s| s.to_string()).collect(),
            Lines::Join(parts) => parts.iter().flat_map(|p| p.iter()).map(|s| s.to_string()).collect(),
            Lines::Made(f) => f(),
        }
    }
}

/// Words the expected lines may name as `{word}`, bound before the check:
/// values the xtask computes itself.
pub fn known_words() -> Vec<(String, String)> {
    // The Linux guest's /init prints the SHA-256 of the disk it read.
    vec![("disk_sha256".into(), crate::linux_guest::disk_sha256())]
}

/// A file a run is given, found when the run starts (in the build profile
/// the run uses).
#[derive(Clone, Copy, Debug)]
pub enum File {
    /// The test guest (`guest-test`, an ELF).
    GuestTest,
    /// The host shim as an arm64 Image.
    HostShimImage,
    /// A file `crate::fixtures` writes (malformed inputs).
    Fixture(&'static str),
}

impl File {
    pub fn path(self, release: bool) -> PathBuf {
        match self {
            File::GuestTest => payload_dir(release).join("guest-test"),
            File::HostShimImage => payload_dir(release).join("host-shim.bin"),
            File::Fixture(name) => crate::fixtures::path(name),
        }
    }
}

/// The kernels of a run's Linux guests.
#[derive(Clone, Copy, Debug)]
pub enum GuestKernels {
    /// The one the xtask builds (no `--guest-kernel`).
    Built,
    /// Every kernel built and cached for guest-linux/config, each version
    /// once, oldest first: one Linux guest each (`--guest-kernel` each).
    Cached,
}

impl GuestKernels {
    pub fn paths(self) -> Vec<PathBuf> {
        match self {
            GuestKernels::Built => Vec::new(),
            GuestKernels::Cached => crate::linux_guest::cached_kernels().into_iter().map(|(_, p)| p).collect(),
        }
    }
}

/// The `cargo xtask run` options a scenario sets; see [`RunArgs`] for
/// each. The rest are the defaults (log level info, debug build).
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// The host shim's scenario (`shim.test=`); None: its default (the
    /// demo, or the guests of `--guest` and `--linux-guest`).
    pub scenario: Option<&'static str>,
    pub smp: u32,
    pub mem: &'static str,
    pub append: Option<&'static str>,
    pub icount: bool,
    pub trace: Option<&'static str>,
    pub trace_buf: Option<u32>,
    pub trace_dump: Option<&'static str>,
    pub dump_s2: bool,
    pub qemu_args: Option<&'static str>,
    /// The QEMU CPU model (`--cpu`); None: max.
    pub cpu: Option<&'static str>,
    pub host: Option<File>,
    pub linux: bool,
    /// Linux guests (`--linux-guest` this many times).
    pub linux_guest: u8,
    /// Their kernels (`--guest-kernel`).
    pub guest_kernel: GuestKernels,
    /// Added to their command line (`--guest-append`).
    pub guest_append: Option<&'static str>,
    pub guest: &'static [File],
    pub guest_mem: &'static [&'static str],
    pub guest_vcpus: &'static [u32],
    /// The Linux host's VMM only: each guest's bootargs (`--guest-args`).
    pub guest_args: &'static [&'static str],
    pub guest_bundle: Option<File>,
}

impl Run {
    /// A run with every option at its default: one CPU, 1 GiB.
    pub const DEFAULT: Run = Run {
        scenario: None,
        smp: 1,
        mem: "1G",
        append: None,
        icount: false,
        trace: None,
        trace_buf: None,
        trace_dump: None,
        dump_s2: false,
        qemu_args: None,
        cpu: None,
        host: None,
        linux: false,
        linux_guest: 0,
        guest_kernel: GuestKernels::Built,
        guest_append: None,
        guest: &[],
        guest_mem: &[],
        guest_vcpus: &[],
        guest_args: &[],
        guest_bundle: None,
    };

    /// The host shim's scenario `name` (`--scenario NAME`).
    pub const fn shim(name: &'static str) -> Run {
        Run { scenario: Some(name), ..Run::DEFAULT }
    }

    /// The options of `cargo xtask run`, files in the build profile.
    pub fn args(&self, release: bool) -> RunArgs {
        let s = |v: Option<&str>| v.map(String::from);
        let paths = |f: &[File]| f.iter().map(|f| f.path(release)).collect();
        RunArgs {
            release,
            log: "info".into(),
            smp: self.smp,
            mem: self.mem.into(),
            scenario: s(self.scenario),
            append: s(self.append),
            icount: self.icount,
            trace: s(self.trace),
            trace_buf: self.trace_buf,
            trace_dump: s(self.trace_dump),
            dump_s2: self.dump_s2,
            qemu_args: s(self.qemu_args),
            cpu: s(self.cpu),
            host: self.host.map(|f| f.path(release)),
            linux: self.linux,
            linux_guest: self.linux_guest,
            guest_kernel: self.guest_kernel.paths(),
            guest_append: s(self.guest_append),
            guest: paths(self.guest),
            guest_mem: self.guest_mem.iter().map(|m| m.to_string()).collect(),
            guest_vcpus: self.guest_vcpus.to_vec(),
            guest_args: self.guest_args.iter().map(|a| a.to_string()).collect(),
            guest_bundle: self.guest_bundle.map(|f| f.path(release)),
            ..Default::default()
        }
    }
}

/// QEMU's `edu` PCI device with a 64-bit DMA mask (its default, 28 bits,
/// cannot reach RAM at 1 GiB).
pub const EDU_DEVICE: &str = "-device edu,dma_mask=0xffffffffffffffff";

/// Eight of them (PCI 00:01.0 to 00:08.0, SMMU streams 0x8 to 0x40): the
/// fuzzer starts a DMA on each at once, so one of edu's 100 ms DMA timers
/// covers eight DMAs.
pub const EDU_DEVICES_8: &str = "-device edu,dma_mask=0xffffffffffffffff -device edu,dma_mask=0xffffffffffffffff \
     -device edu,dma_mask=0xffffffffffffffff -device edu,dma_mask=0xffffffffffffffff \
     -device edu,dma_mask=0xffffffffffffffff -device edu,dma_mask=0xffffffffffffffff \
     -device edu,dma_mask=0xffffffffffffffff -device edu,dma_mask=0xffffffffffffffff";

/// A virtio-serial PCI device whose console port is the machine's console
/// chardev (`con`, qemu/virt.args): Linux's hvc0 and the PL011 share stdout.
pub const VIRTIO_CONSOLE: &str = "-device virtio-serial-pci -device virtconsole,chardev=con";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_follow_the_profile() {
        let run = Run { guest: &[File::GuestTest], host: Some(File::HostShimImage), ..Run::DEFAULT };
        let (d, r) = (run.args(false), run.args(true));
        assert!(d.guest[0].ends_with("aarch64-unknown-none/debug/guest-test"), "{:?}", d.guest);
        assert!(r.guest[0].ends_with("aarch64-unknown-none/release/guest-test"), "{:?}", r.guest);
        assert!(r.host.unwrap().ends_with("release/host-shim.bin") && r.release && !d.release);
        assert_eq!((d.log.as_str(), d.mem.as_str(), d.smp), ("info", "1G", 1));
    }

    #[test]
    fn the_fuzz_attaches_eight_edu_devices() {
        let devs: Vec<&str> = EDU_DEVICES_8.split_whitespace().collect();
        assert_eq!(devs.len(), 16);
        assert!(devs.chunks(2).all(|d| d.join(" ") == EDU_DEVICE), "{devs:?}");
    }

    #[test]
    fn lines_expand_in_order() {
        const A: &[&str] = &["a", "b"];
        assert_eq!(Lines::Join(&[A, &["c"], A]).expand(), ["a", "b", "c", "a", "b"]);
        assert_eq!(Lines::Are(A).expand(), ["a", "b"]);
        assert_eq!(Lines::Made(|| vec!["x".into()]).expand(), ["x"]);
    }
}
