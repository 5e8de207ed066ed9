//! What the Linux host's initramfs carries to run protected guests: the
//! host driver (`linux_kmod`), the VMM (`linux-host/vmm`, a static
//! `aarch64-unknown-linux-musl` binary linked with rust-lld), the
//! `--guest` programs and `/pkvm/run`, the command line `/init` runs.
//!
//! ```text
//! /pkvm/pkvm_host.ko   /init loads it with insmod
//! /pkvm/vmm            pkvm-vmm
//! /pkvm/*.ko.xz        Debian's null_blk and configfs (the memory-file
//!                      test's slow disk)
//! /pkvm/guestN.elf     the --guest programs, in order
//! /pkvm/linux-guest.*  --linux-guest: its Image, initramfs and disk (a file
//!                      the guest reads and writes through virtio-blk)
//! /pkvm/run            sourced by /init: the VMM with every guest
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::linux::{InitramfsFile, S_IFDIR, S_IFREG};
use crate::options::RunArgs;

/// The VMM's target: static, no C toolchain needed (Rust ships musl's
/// libc and crt objects for it, and rust-lld links).
pub const VMM_TARGET: &str = "aarch64-unknown-linux-musl";

/// Builds the VMM (release, stripped: it goes into every initramfs).
pub fn build_vmm() -> Result<PathBuf> {
    let root = crate::paths::workspace_root();
    crate::toolchain::ensure(&root, &[VMM_TARGET.to_string()], None)?;
    let bin = crate::paths::target_dir().join(VMM_TARGET).join("release/pkvm-vmm");
    if !bin.exists() {
        eprintln!("xtask: building the Linux host's VMM (pkvm-vmm, {VMM_TARGET}, linked with rust-lld)");
    }
    let var = format!("CARGO_TARGET_{}_LINKER", VMM_TARGET.to_uppercase().replace('-', "_"));
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", crate::paths::target_dir())
        .env(var, "rust-lld")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .args(["build", "--quiet", "--release", "-p", "pkvm-vmm", "--target", VMM_TARGET])
        .status()
        .context("running cargo build for the VMM")?;
    if !st.success() {
        bail!("building the VMM (pkvm-vmm) failed");
    }
    Ok(bin)
}

/// Where the Linux guest's pieces go in the host's initramfs.
const LINUX_GUEST: [(&str, &str); 3] =
    [("Image", "pkvm/linux-guest.Image"), ("initramfs", "pkvm/linux-guest.cpio"), ("disk", "pkvm/linux-guest.disk")];

/// `/pkvm/run`: the VMM with each `--guest` (its memory and vCPUs) or the
/// Linux guest, then its exit status.
pub fn run_script(args: &RunArgs) -> String {
    let mut cmd = String::from("/pkvm/vmm");
    if args.linux_guests() > 0 {
        let mem = args.guest_mem.first().map_or("128M", String::as_str);
        let vcpus = args.guest_vcpus.first().copied().unwrap_or(1);
        let [(_, image), (_, initrd), (_, disk)] = LINUX_GUEST;
        cmd += &format!(
            " --linux-guest /{image} --initrd /{initrd} --disk /{disk} --guest-mem {mem} --guest-vcpus {vcpus}"
        );
    }
    for i in 0..args.guest.len() {
        let mem = args.guest_mem.get(i).map_or("64M", String::as_str);
        let vcpus = args.guest_vcpus.get(i).copied().unwrap_or(1);
        cmd += &format!(" --guest /pkvm/guest{i}.elf --guest-mem {mem} --guest-vcpus {vcpus}");
        if let Some(a) = args.guest_args.get(i) {
            cmd += &format!(" --args '{}'", a.replace('\'', "'\\''"));
        }
    }
    let mut script = format!(
        "# Written by cargo xtask for this run: the guests the Linux host runs.\n{cmd}\n\
         echo \"linux-host: pkvm-vmm exit status $?\"\n"
    );
    if args.linux_guests() > 0 {
        // What the guest wrote through virtio-blk is in the file.
        let disk = LINUX_GUEST[2].1;
        script += &format!(
            "echo \"linux-host: the disk file's sector 2047: \
             $(dd if=/{disk} bs=512 skip=2047 count=1 2>/dev/null | head -n 1)\"\n"
        );
    }
    script
}

/// The files above, for a run with `args`, the driver built for the
/// kernel at `image`.
pub fn initramfs_files(image: &Path, args: &RunArgs) -> Result<Vec<InitramfsFile>> {
    let ko = crate::linux_kmod::build(image)?;
    let vmm = build_vmm()?;
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut files = vec![
        ("pkvm".to_string(), S_IFDIR | 0o755, Vec::new()),
        (format!("pkvm/{}", crate::linux_kmod::MODULE), S_IFREG | 0o644, read(&ko)?),
        ("pkvm/vmm".to_string(), S_IFREG | 0o755, read(&vmm)?),
    ];
    for (name, p) in crate::linux::null_blk()? {
        files.push((format!("pkvm/{name}"), S_IFREG | 0o644, read(&p)?));
    }
    for (i, g) in args.guest.iter().enumerate() {
        files.push((format!("pkvm/guest{i}.elf"), S_IFREG | 0o644, read(g)?));
    }
    if args.linux_guests() > 0 {
        let l = crate::linux_guest::prepare(true)?;
        let image = l.image.as_ref().expect("prepare(true) builds or finds the kernel");
        for (p, (_, name)) in [image, &l.initramfs, &l.disk].into_iter().zip(LINUX_GUEST) {
            files.push((name.to_string(), S_IFREG | 0o644, read(p)?));
        }
    }
    if !args.guest.is_empty() || args.linux_guests() > 0 {
        files.push(("pkvm/run".to_string(), S_IFREG | 0o644, run_script(args).into_bytes()));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_script_names_each_guest() {
        let args = RunArgs {
            guest: vec!["a.elf".into(), "b.elf".into()],
            guest_mem: vec!["32M".into()],
            guest_vcpus: vec![1, 2],
            guest_args: vec!["test=all it's".into()],
            ..Default::default()
        };
        let s = run_script(&args);
        assert!(s.contains(
            "\n/pkvm/vmm --guest /pkvm/guest0.elf --guest-mem 32M --guest-vcpus 1 --args 'test=all it'\\''s' \
             --guest /pkvm/guest1.elf --guest-mem 64M --guest-vcpus 2\n"
        ));
        assert!(s.ends_with("echo \"linux-host: pkvm-vmm exit status $?\"\n"));
        let linux = RunArgs { linux_guest: 1, guest_vcpus: vec![2], ..Default::default() };
        assert!(run_script(&linux).contains(
            "\n/pkvm/vmm --linux-guest /pkvm/linux-guest.Image --initrd /pkvm/linux-guest.cpio \
             --disk /pkvm/linux-guest.disk --guest-mem 128M --guest-vcpus 2\n"
        ));
    }
}
