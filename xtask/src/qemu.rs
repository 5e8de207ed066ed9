//! Running the system in QEMU: the machine from qemu/virt.args, the boot
//! bundle, a timeout, and the status line the hyp prints at power-off.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::image::{self, GuestSpec};
use crate::options::{parse_size, RunArgs};
use crate::paths::workspace_root;

/// Guest RAM base IPA and the window reserved for the guest DTB.
pub const GUEST_RAM_BASE: u64 = 0x4000_0000;
pub const GUEST_DTB_SIZE: u64 = 0x1_0000;

/// Exit statuses of `cargo xtask run` besides the hyp's own (README.md).
pub mod code {
    /// The host asked for a reset (PSCI SYSTEM_RESET); the hyp's status 5.
    pub const HOST_RESET: i32 = 5;
    /// The Linux host panicked ("Kernel panic - not syncing" on the console).
    pub const HOST_PANIC: i32 = 6;
    pub const TIMEOUT: i32 = 124;
    /// QEMU ended without the hyp's status line.
    pub const NO_STATUS: i32 = 125;
}

/// What Linux prints when it panics; the line ends in the reason.
const LINUX_PANIC: &str = "Kernel panic - not syncing: ";
/// The last line of a Linux panic.
const LINUX_PANIC_END: &str = "---[ end Kernel panic - not syncing";
/// How long a panicked Linux may take to end the run itself (panic=N).
const PANIC_GRACE: Duration = Duration::from_secs(3);

pub struct Outcome {
    /// The hyp's final status, if it printed one.
    pub status: Option<i32>,
    pub timed_out: bool,
    /// The Linux host's panic message, if it panicked.
    pub host_panic: Option<String>,
    pub output: String,
}

impl Outcome {
    /// The exit status `cargo xtask run` reports.
    pub fn code(&self) -> i32 {
        // The hyp's own failures (boot, fatal exception, invariant, panic)
        // outrank what the host did.
        let hyp_failed = self.status.is_some_and(|s| !matches!(s, 0 | 1 | code::HOST_RESET));
        match (self.status, self.timed_out, &self.host_panic) {
            (Some(s), _, _) if hyp_failed => s,
            (_, _, Some(_)) => code::HOST_PANIC,
            (_, true, _) => code::TIMEOUT,
            (Some(s), _, _) => s,
            (None, _, _) => code::NO_STATUS,
        }
    }

    /// What ended the run, in words (None when it ended well).
    pub fn explain(&self) -> Option<String> {
        let c = self.code();
        Some(match c {
            0 => return None,
            code::HOST_PANIC => {
                format!("the Linux host panicked: {}", self.host_panic.as_deref().unwrap_or("?"))
            }
            code::HOST_RESET => "the host asked for a reset (PSCI SYSTEM_RESET); the hyp powered off".into(),
            code::TIMEOUT => "timed out".into(),
            code::NO_STATUS => "QEMU ended without the hyp's status line".into(),
            1 => "the host reported a failure".into(),
            2 => "the hyp could not boot the host".into(),
            3 => "unexpected exception in the hyp".into(),
            4 => "the hyp's invariant checker found a violation".into(),
            101 => "the hyp panicked".into(),
            _ => format!("status {c}"),
        })
    }
}

/// The module directory of a QEMU unpacked outside the system (PKVM_QEMU =
/// `<root>/usr/bin/qemu-system-aarch64` with `<root>/usr/lib/<triple>/qemu`),
/// unless QEMU_MODULE_DIR is set already.
fn module_dir(bin: &str) -> Option<std::path::PathBuf> {
    if std::env::var_os("QEMU_MODULE_DIR").is_some() || !bin.contains('/') {
        return None;
    }
    let lib = Path::new(bin).parent()?.parent()?.join("lib");
    std::fs::read_dir(lib).ok()?.flatten().map(|e| e.path().join("qemu")).find(|p| p.is_dir())
}

/// Checks a guest ELF before QEMU starts: AArch64, fits in guest RAM, clear
/// of the DTB window.
pub fn check_guest(path: &Path, elf: &[u8], mem: u64) -> Result<()> {
    use object::{Object, ObjectSegment};
    let f = object::File::parse(elf).map_err(|_| anyhow::anyhow!("{}: not an ELF file", path.display()))?;
    if f.architecture() != object::Architecture::Aarch64 {
        bail!("{}: not an AArch64 ELF ({:?})", path.display(), f.architecture());
    }
    let end = GUEST_RAM_BASE + mem;
    for s in f.segments() {
        let (a, len) = (s.address(), s.size());
        if len == 0 {
            continue;
        }
        if a < GUEST_RAM_BASE || a.checked_add(len).is_none_or(|e| e > end) {
            bail!(
                "{}: segment {:#x}..{:#x} does not fit guest memory {:#x}..{:#x}",
                path.display(),
                a,
                a + len,
                GUEST_RAM_BASE,
                end
            );
        }
        if a < GUEST_RAM_BASE + GUEST_DTB_SIZE {
            bail!(
                "{}: segment at {:#x} overlaps the guest DTB at {:#x}..{:#x}",
                path.display(),
                a,
                GUEST_RAM_BASE,
                GUEST_RAM_BASE + GUEST_DTB_SIZE
            );
        }
    }
    if f.entry() < GUEST_RAM_BASE || f.entry() >= end {
        bail!("{}: entry point {:#x} outside guest memory", path.display(), f.entry());
    }
    Ok(())
}

/// A Linux guest's memory unless --guest-mem says otherwise.
pub const LINUX_GUEST_MEM: &str = "128M";
/// The restricted DMA pool of a Linux guest (vmm-devices platform.rs).
const DMA_POOL_SIZE: u64 = 4 << 20;

/// Checks a Linux guest's Image before QEMU starts, as the host shim will:
/// a valid arm64 Image header, and the kernel, initramfs and DMA pool fit.
pub fn check_linux_guest(image: &[u8], mem: u64, initrd_len: u64) -> Result<()> {
    let h = hyp_abi::arm64_image::parse(image).map_err(|e| anyhow::anyhow!("Linux guest Image: {e}"))?;
    if hyp_abi::arm64_image::layout(mem, GUEST_DTB_SIZE, &h, initrd_len, DMA_POOL_SIZE).is_none() {
        bail!(
            "Linux guest: the kernel ({} KiB), initramfs ({} KiB) and DMA pool ({} KiB) do not fit in {} MiB \
             of guest memory (--guest-mem)",
            h.image_size / 1024,
            initrd_len / 1024,
            DMA_POOL_SIZE / 1024,
            mem >> 20
        );
    }
    Ok(())
}

/// The run's Linux guests: the xtask's kernel (built on first use) or the
/// user's (`--guest-kernel`, one per guest, the last for the guests after),
/// each Image checked; the xtask's initramfs or `--guest-initrd`; each
/// guest its own copy of the disk image; `--guest-append`.
fn linux_guests(args: &RunArgs) -> Result<Vec<GuestSpec>> {
    let n = args.linux_guests();
    if n == 0 {
        return Ok(Vec::new());
    }
    let l = crate::linux_guest::prepare(args.guest_kernel.is_empty())?;
    let initrd_path = args.guest_initrd.clone().unwrap_or(l.initramfs.clone());
    let initrd = std::fs::read(&initrd_path).with_context(|| format!("reading {}", initrd_path.display()))?;
    let disk = std::fs::read(&l.disk)?;
    let mut out = Vec::new();
    for i in 0..n {
        let path = match args.guest_kernel.get(i).or(args.guest_kernel.last()) {
            Some(p) => p.clone(),
            None => l.image.clone().context("the xtask's guest kernel")?,
        };
        let image = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        match args.guest_kernel.is_empty() {
            true => eprintln!("xtask: Linux guest {}: Linux {} ({})", i + 1, l.version, path.display()),
            false => eprintln!("xtask: Linux guest {}: {}", i + 1, path.display()),
        }
        let mem = parse_size(args.guest_mem.get(i).map(String::as_str).unwrap_or(LINUX_GUEST_MEM))?;
        check_linux_guest(&image, mem, initrd.len() as u64)
            .with_context(|| format!("Linux guest {} ({})", i + 1, path.display()))?;
        out.push(GuestSpec {
            name: if n == 1 { "linux".into() } else { format!("linux{}", i + 1) },
            elf: image,
            mem,
            vcpus: args.guest_vcpus.get(i).copied().unwrap_or(1),
            kind: hyp_abi::guests::KIND_LINUX,
            initrd: initrd.clone(),
            disk: disk.clone(),
            cmdline: args.guest_append.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Builds everything and boots; `echo` copies the console to stdout.
pub fn run_system(args: &RunArgs, echo: bool) -> Result<Outcome> {
    run_system_watched(args, echo, &mut |_| {})
}

/// [`run_system`], with `watch` called on every console line as it comes.
pub fn run_system_watched(args: &RunArgs, echo: bool, watch: &mut dyn FnMut(&str)) -> Result<Outcome> {
    crate::options::check(args)?;
    crate::qemu_install::ensure_qemu()?;
    let a = crate::build::build_with(args.release, args.hyp_features.as_deref())?;
    // --linux: Debian's kernel and the busybox initramfs stand in for
    // --host and --host-initrd.
    let (host, host_initrd_file, linux_args) = if args.linux {
        // With the host driver, the VMM and the --guest programs.
        let l = crate::linux::prepare_with(|image| crate::linux_vmm::initramfs_files(image, args))?;
        eprintln!("xtask: Linux host: {} ({})", l.package, l.image.display());
        (Some(l.image), Some(l.initramfs), Some(crate::linux::BOOTARGS))
    } else {
        (args.host.clone(), args.host_initrd.clone(), None)
    };
    let host_image = match &host {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => std::fs::read(&a.shim_image)?,
    };
    if host_image.len() < 64 || &host_image[56..60] != b"ARM\x64" {
        bail!("host image has no arm64 Image header (ARM\\x64 magic at offset 56)");
    }
    let mut guests = linux_guests(args)?;
    let paths: Vec<_> = if args.guest.is_empty() && host.is_none() && args.linux_guests() == 0 {
        vec![a.guest_test.clone()]
    } else {
        args.guest.clone()
    };
    for (i, p) in paths.iter().enumerate() {
        let mem = parse_size(args.guest_mem.get(i).map(String::as_str).unwrap_or("64M"))?;
        let elf = std::fs::read(p).with_context(|| format!("reading guest {}", p.display()))?;
        check_guest(p, &elf, mem)?;
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let vcpus = args.guest_vcpus.get(i).copied().unwrap_or(1);
        guests.push(GuestSpec::elf(name, elf, mem, vcpus));
    }
    let host_initrd = match host_initrd_file.as_ref().or(args.guest_bundle.as_ref()) {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None if host.is_some() && guests.is_empty() => Vec::new(),
        None => image::guest_bundle(&guests),
    };
    let bundle = image::boot_bundle(&host_image, &host_initrd);
    let out_dir = a.hyp_image.parent().unwrap().to_path_buf();
    let bundle_path = out_dir.join("boot-bundle.img");
    std::fs::write(&bundle_path, bundle)?;

    let mut cmdline = format!("hyp.log={}", args.log);
    let scenario = args.scenario.clone().or_else(|| {
        // The Linux host runs --guest programs with its own VMM.
        ((!args.guest.is_empty() || args.linux_guests() > 0) && !args.linux).then(|| "guests".to_string())
    });
    if let Some(t) = scenario {
        cmdline += &format!(" shim.test={t}");
    }
    if let Some(t) = &args.trace {
        cmdline += &format!(" hyp.trace={t}");
    }
    if let Some(v) = args.trace_vm {
        cmdline += &format!(" hyp.trace_vm={v}");
    }
    if let Some(n) = args.trace_buf {
        cmdline += &format!(" hyp.trace_buf={n}");
    }
    if let Some(d) = &args.trace_dump {
        if args.trace.is_none() {
            cmdline += " hyp.trace=all";
        }
        cmdline += &format!(" hyp.trace_quiet shim.trace_dump={d}");
    }
    if args.dump_s2 {
        cmdline += " shim.dump_s2";
        // Transition records let `cargo xtask trace --map` caption each dump.
        if args.trace.is_none() && args.trace_dump.is_none() {
            cmdline += " hyp.trace=transitions";
        }
    }
    if let Some(l) = linux_args {
        cmdline += " ";
        cmdline += l;
    }
    if let Some(extra) = &args.append {
        cmdline += " ";
        cmdline += extra;
    }
    let machine = std::fs::read_to_string(workspace_root().join("qemu/virt.args"))?;
    let mut qargs: Vec<String> = machine
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.replace("{mem}", &args.mem)
                .replace("{smp}", &args.smp.to_string())
                .replace("{cpu}", &crate::options::qemu_cpu(args.cpu.as_deref()))
        })
        .collect();
    if args.icount {
        qargs.extend(["-icount".into(), "shift=0,align=off,sleep=off".into()]);
    }
    if let Some(extra) = &args.qemu_args {
        qargs.extend(extra.split_whitespace().map(String::from));
    }
    qargs.extend(["-kernel".into(), a.hyp_image.display().to_string()]);
    qargs.extend(["-initrd".into(), bundle_path.display().to_string()]);
    qargs.extend(["-append".into(), cmdline]);
    if args.gdb {
        qargs.extend(["-s".into(), "-S".into()]);
        eprintln!("xtask: QEMU halted with a gdb stub on localhost:1234; attach with:");
        eprintln!("  gdb-multiarch {} -ex 'target remote :1234'", a.hyp_elf.display());
    }
    run_qemu(&qargs, args.timeout.map(Duration::from_secs), echo, watch)
}

pub fn run_qemu(
    qargs: &[String],
    timeout: Option<Duration>,
    echo: bool,
    watch: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    let bin = crate::qemu_install::qemu_binary();
    let mut cmd = Command::new(&bin);
    if let Some(dir) = module_dir(&bin) {
        // An unpacked QEMU loads its own modules, not the system's.
        cmd.env("QEMU_MODULE_DIR", dir);
    }
    let mut child = cmd
        .args(qargs)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let line = line.trim_end_matches('\r').to_string();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut output = String::new();
    let mut status = None;
    let mut timed_out = false;
    let mut host_panic: Option<String> = None;
    // When a panicked host has to be stopped (it would hang or reboot).
    let mut panic_deadline: Option<Instant> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                if echo {
                    println!("{line}");
                    let _ = std::io::stdout().flush();
                }
                watch(&line);
                if let Some(s) = line.strip_prefix("[hyp] system off: status ") {
                    status = s.split_whitespace().next().and_then(|n| n.parse().ok());
                }
                if let Some(i) = line.find(LINUX_PANIC).filter(|_| host_panic.is_none()) {
                    host_panic = Some(line[i + LINUX_PANIC.len()..].trim().to_string());
                    panic_deadline = Some(Instant::now() + PANIC_GRACE);
                }
                if line.contains(LINUX_PANIC_END) {
                    // Give the hyp a moment to print its status if the host resets.
                    panic_deadline = Some(Instant::now() + Duration::from_millis(500));
                }
                output.push_str(&line);
                output.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if status.is_none() && panic_deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            break;
        }
        if timeout.is_some_and(|t| start.elapsed() > t) {
            timed_out = true;
            let _ = child.kill();
            break;
        }
    }
    let _ = child.wait();
    let _ = reader.join();
    Ok(Outcome { status, timed_out, host_panic, output })
}

pub fn run_cmd(args: &RunArgs) -> Result<i32> {
    let o = run_system(args, true)?;
    if let Some(why) = o.explain() {
        eprintln!("xtask: {why} (exit status {})", o.code());
    }
    Ok(o.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: Option<i32>, timed_out: bool, panic: Option<&str>) -> Outcome {
        Outcome { status, timed_out, host_panic: panic.map(String::from), output: String::new() }
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(outcome(Some(0), false, None).code(), 0);
        assert_eq!(outcome(Some(0), false, None).explain(), None);
        assert_eq!(outcome(Some(5), false, None).code(), code::HOST_RESET);
        assert!(outcome(Some(5), false, None).explain().unwrap().contains("SYSTEM_RESET"));
        assert_eq!(outcome(None, false, None).code(), code::NO_STATUS);
        assert_eq!(outcome(None, true, None).code(), code::TIMEOUT);
        // A Linux panic is what it is, whether Linux then reset (panic=-1),
        // hung (the xtask stopped it) or ran into the timeout.
        for (status, timed_out) in [(Some(5), false), (None, false), (None, true), (Some(1), false)] {
            let o = outcome(status, timed_out, Some("VFS: Unable to mount root fs"));
            assert_eq!(o.code(), code::HOST_PANIC);
            assert_eq!(o.explain().unwrap(), "the Linux host panicked: VFS: Unable to mount root fs");
        }
        // The hyp's own failures outrank the host's.
        for s in [2, 3, 4, 101] {
            assert_eq!(outcome(Some(s), false, Some("x")).code(), s);
        }
    }
}
