//! Real Linux as the host: Debian's arm64 6.12 kernel and a busybox
//! initramfs, fetched with apt and cached under `target/linux-host/` (in `CARGO_TARGET_DIR` when set).
//!
//! The kernel comes from Debian's `linux-image-6.12.*-arm64` package and
//! busybox from `busybox-static`, both for arm64 (`dpkg --add-architecture
//! arm64`, `apt-get download`, `dpkg-deb -x`). The initramfs (`/init`, the
//! busybox binary, a console node) is written here as a newc cpio archive.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::sys::{as_root, is_root};

/// The `/init` the initramfs runs: reports what Linux sees under the hyp.
pub const INIT: &str = include_str!("../linux-host/init");

/// Kernel command line every `--linux` run starts with.
pub const BOOTARGS: &str = "console=ttyAMA0 panic=-1";

pub struct LinuxHost {
    /// Uncompressed arm64 Image.
    pub image: PathBuf,
    pub initramfs: PathBuf,
    /// The Debian package the kernel came from.
    pub package: String,
}

fn cache_dir() -> PathBuf {
    crate::paths::target_dir().join("linux-host")
}

/// A file of the initramfs beyond /init and busybox: path, mode, bytes.
pub type InitramfsFile = (String, u32, Vec<u8>);

/// The kernel and initramfs, fetched on first use and cached; the files
/// `extra` makes (given the kernel Image's path) are added to the
/// initramfs.
pub fn prepare_with(extra: impl FnOnce(&Path) -> Result<Vec<InitramfsFile>>) -> Result<LinuxHost> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir)?;
    let (image, busybox, pkg_file) = (dir.join("Image"), dir.join("busybox"), dir.join("package"));
    if !(image.exists() && busybox.exists() && pkg_file.exists()) {
        fetch(&dir)?;
    }
    let package = std::fs::read_to_string(&pkg_file)?.trim().to_string();
    let files = extra(&image)?;
    let initramfs = dir.join("initramfs.cpio");
    let bb = std::fs::read(&busybox).with_context(|| format!("reading {}", busybox.display()))?;
    std::fs::write(&initramfs, initramfs_cpio_with(&bb, INIT, &files))?;
    Ok(LinuxHost { image, initramfs, package })
}

/// Debian's static arm64 busybox alone (for the Linux guest's initramfs),
/// fetched on first use into `target/linux-host/busybox`.
pub fn busybox() -> Result<PathBuf> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir)?;
    let busybox = dir.join("busybox");
    if !busybox.exists() {
        ensure_arm64()?;
        let dl = dir.join("dl-busybox");
        download(&dl, &["busybox-static:arm64"])?;
        std::fs::copy(dl.join("root/bin/busybox"), &busybox).context("no /bin/busybox in busybox-static")?;
        let _ = std::fs::remove_dir_all(&dl);
    }
    Ok(busybox)
}

/// dpkg knows the arm64 architecture (apt lists its packages).
pub(crate) fn ensure_arm64() -> Result<()> {
    if Command::new("apt-get").arg("--version").stdout(Stdio::null()).status().is_err() {
        bail!(
            "Debian's arm64 packages are fetched with apt-get, which is not here: put a static arm64 busybox at {}",
            cache_dir().join("busybox").display()
        );
    }
    let foreign = Command::new("dpkg").arg("--print-foreign-architectures").output().context("running dpkg")?;
    if !String::from_utf8_lossy(&foreign.stdout).lines().any(|a| a.trim() == "arm64") {
        run_root(&["dpkg", "--add-architecture", "arm64"], MANUAL)?;
        run_root(&["apt-get", "update"], MANUAL)?;
    }
    Ok(())
}

/// `apt-get download` of `pkgs` into `dl`, each unpacked into `dl/root`.
pub(crate) fn download(dl: &Path, pkgs: &[&str]) -> Result<()> {
    let _ = std::fs::remove_dir_all(dl);
    std::fs::create_dir_all(dl)?;
    eprintln!("xtask: fetching {} into {}", pkgs.join(" and "), dl.display());
    let mut get = Command::new("apt-get");
    if is_root() {
        // apt's download sandbox user cannot write into our tree.
        get.args(["-o", "APT::Sandbox::User=root"]);
    }
    get.arg("download").args(pkgs);
    if !crate::apt::download(&mut get, dl, &format!("fetching {}", pkgs.join(" and ")))? {
        bail!("apt-get download {} failed", pkgs.join(" "));
    }
    let root = dl.join("root");
    for deb in std::fs::read_dir(dl)? {
        let deb = deb?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            let st = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root).status()?;
            if !st.success() {
                bail!("dpkg-deb -x {} failed", deb.display());
            }
        }
    }
    Ok(())
}

pub(crate) fn run_root(args: &[&str], manual: &str) -> Result<()> {
    let Some(mut c) = as_root(args) else {
        bail!("`{}` needs root; run as root:\n  {manual}", args.join(" "));
    };
    eprintln!("xtask: {}", args.join(" "));
    if !c.status().with_context(|| format!("running {}", args[0]))?.success() {
        bail!("`{}` failed", args.join(" "));
    }
    Ok(())
}

const MANUAL: &str = "dpkg --add-architecture arm64 && apt-get update";

/// The newest `linux-image-6.12.<n>+deb<m>-arm64` apt can download.
fn kernel_package() -> Result<Option<String>> {
    let out =
        Command::new("apt-cache").args(["pkgnames", "linux-image-6.12."]).output().context("running apt-cache")?;
    let mut names: Vec<(u32, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|n| {
            let v = n.strip_prefix("linux-image-6.12.")?.strip_suffix("-arm64")?;
            let (patch, deb) = v.split_once("+deb")?;
            deb.chars().all(|c| c.is_ascii_digit()).then_some(())?;
            Some((patch.parse().ok()?, n.to_string()))
        })
        .collect();
    names.sort();
    for (_, n) in names.iter().rev() {
        // Names apt has heard of but cannot download have no candidate.
        let ok = Command::new("apt-cache")
            .args(["show", "--no-all-versions", &format!("{n}:arm64")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(Some(n.clone()));
        }
    }
    Ok(None)
}

fn fetch(dir: &Path) -> Result<()> {
    if Command::new("apt-get").arg("--version").stdout(Stdio::null()).status().is_err() {
        bail!(
            "the Linux host needs Debian's arm64 packages and apt-get is not here: put an arm64 Image at {} \
             and a static arm64 busybox at {}, and write the kernel's name into {}",
            dir.join("Image").display(),
            dir.join("busybox").display(),
            dir.join("package").display()
        );
    }
    ensure_arm64()?;
    let pkg = match kernel_package()? {
        Some(p) => p,
        None => {
            run_root(&["apt-get", "update"], MANUAL)?;
            kernel_package()?.context(
                "apt knows no linux-image-6.12.*-arm64 package (Debian 12 has it in bookworm-security, \
                 Debian 13 in trixie)",
            )?
        }
    };
    let dl = dir.join("dl");
    download(&dl, &[&format!("{pkg}:arm64"), "busybox-static:arm64"])?;
    let root = dl.join("root");
    let vmlinuz = std::fs::read_dir(root.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .context("no /boot/vmlinuz-* in the kernel package")?;
    let image = kernel_image(&std::fs::read(&vmlinuz)?)?;
    std::fs::write(dir.join("Image"), image)?;
    std::fs::copy(root.join("bin/busybox"), dir.join("busybox")).context("no /bin/busybox in busybox-static")?;
    copy_null_blk(&root, dir)?;
    std::fs::write(dir.join("package"), format!("{pkg}\n"))?;
    let _ = std::fs::remove_dir_all(&dl);
    Ok(())
}

/// The kernel package's modules the memory-file test loads, in load
/// order (xz-compressed, as Debian ships them): null_blk and configfs, which
/// it needs. Cached under these names.
const NULL_BLK: [(&str, &str); 2] =
    [("kernel/fs/configfs", "configfs.ko.xz"), ("kernel/drivers/block/null_blk", "null_blk.ko.xz")];

/// Copies those modules out of the unpacked kernel package `root`.
fn copy_null_blk(root: &Path, dir: &Path) -> Result<()> {
    let modules = root.join("lib/modules");
    let release = std::fs::read_dir(&modules)
        .context("no /lib/modules in the kernel package")?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .context("no /lib/modules/<release> in the kernel package")?;
    for (at, name) in NULL_BLK {
        let ko = release.join(at).join(name);
        std::fs::copy(&ko, dir.join(name)).with_context(|| format!("no {} in the kernel package", ko.display()))?;
    }
    Ok(())
}

/// Debian's null_blk module for the host kernel, with configfs: the block
/// device whose slow reads keep an `O_DIRECT` read in flight for the
/// memory-file test. Taken from the kernel package when it is fetched, or
/// fetched again for a cache made before these files were kept.
pub fn null_blk() -> Result<Vec<(&'static str, PathBuf)>> {
    let dir = cache_dir();
    let files: Vec<(&str, PathBuf)> = NULL_BLK.iter().map(|(_, n)| (*n, dir.join(n))).collect();
    if files.iter().all(|(_, p)| p.exists()) {
        return Ok(files);
    }
    let pkg = std::fs::read_to_string(dir.join("package")).context("the host kernel is not fetched yet")?;
    ensure_arm64()?;
    let dl = dir.join("dl-modules");
    download(&dl, &[&format!("{}:arm64", pkg.trim())])?;
    copy_null_blk(&dl.join("root"), &dir)?;
    let _ = std::fs::remove_dir_all(&dl);
    Ok(files)
}

/// An arm64 Image from a `vmlinuz`: as is, or gunzipped.
pub fn kernel_image(vmlinuz: &[u8]) -> Result<Vec<u8>> {
    let is_image = |b: &[u8]| b.len() >= 64 && &b[56..60] == b"ARM\x64";
    if is_image(vmlinuz) {
        return Ok(vmlinuz.to_vec());
    }
    if !vmlinuz.starts_with(&[0x1f, 0x8b]) {
        bail!("the kernel is neither an arm64 Image nor gzip-compressed");
    }
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running gzip -dc")?;
    let mut stdin = child.stdin.take().unwrap();
    let data = vmlinuz.to_vec();
    let feeder = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &data));
    let out = child.wait_with_output()?;
    feeder.join().map_err(|_| anyhow::anyhow!("gzip feeder"))??;
    if !out.status.success() || !is_image(&out.stdout) {
        bail!("the gunzipped kernel is not an arm64 Image");
    }
    Ok(out.stdout)
}

/// One newc cpio entry.
fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let fields = [ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// The initramfs: /init, /bin/busybox, /dev/console and the mount points.
pub fn initramfs_cpio(busybox: &[u8], init: &str) -> Vec<u8> {
    initramfs_cpio_with(busybox, init, &[])
}

/// [`initramfs_cpio`] with `extra` files (directories before their files).
pub fn initramfs_cpio_with(busybox: &[u8], init: &str, extra: &[InitramfsFile]) -> Vec<u8> {
    let mut v = Vec::new();
    let mut ino = 1;
    let mut add = |v: &mut Vec<u8>, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        cpio_entry(v, ino, name, mode, rdev, data);
        ino += 1;
    };
    for d in ["bin", "dev", "proc", "sys"] {
        add(&mut v, d, S_IFDIR | 0o755, (0, 0), &[]);
    }
    // The kernel opens /dev/console for init's stdio before init runs.
    add(&mut v, "dev/console", S_IFCHR | 0o600, (5, 1), &[]);
    add(&mut v, "bin/busybox", S_IFREG | 0o755, (0, 0), busybox);
    add(&mut v, "init", S_IFREG | 0o755, (0, 0), init.as_bytes());
    for (name, mode, data) in extra {
        add(&mut v, name, *mode, (0, 0), data);
    }
    cpio_entry(&mut v, 0, "TRAILER!!!", 0, (0, 0), &[]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One file read back: (name, mode, rdev, data).
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Reads back a newc archive.
    fn parse_cpio(mut b: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let total = b.len();
        loop {
            assert_eq!(&b[..6], b"070701");
            let f =
                |i: usize| u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16).unwrap();
            let (mode, size, rdev, namesize) = (f(1), f(6) as usize, (f(9), f(10)), f(11) as usize);
            let name = String::from_utf8(b[110..110 + namesize - 1].to_vec()).unwrap();
            let data_at = (110 + namesize).next_multiple_of(4);
            let data = b[data_at..data_at + size].to_vec();
            let next = (data_at + size).next_multiple_of(4);
            assert_eq!((total - b.len() + next) % 4, 0);
            b = &b[next..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty());
                return out;
            }
            out.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn initramfs_round_trips() {
        let files = parse_cpio(&initramfs_cpio(b"\x7fELFbusybox", INIT));
        let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, ["bin", "dev", "proc", "sys", "dev/console", "bin/busybox", "init"]);
        let console = &files[4];
        assert_eq!((console.1, console.2), (S_IFCHR | 0o600, (5, 1)));
        assert_eq!(files[5].3, b"\x7fELFbusybox");
        assert_eq!(files[6].3, INIT.as_bytes());
        assert_eq!(files[6].1 & 0o777, 0o755, "/init is executable");
        assert!(INIT.starts_with("#!/bin/busybox sh\n"));
    }

    #[test]
    fn kernel_image_accepts_image_and_gzip() {
        let mut img = vec![0u8; 128];
        img[56..60].copy_from_slice(b"ARM\x64");
        assert_eq!(kernel_image(&img).unwrap(), img);
        let gz = {
            let mut c = Command::new("gzip").arg("-c").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
            std::io::Write::write_all(&mut c.stdin.take().unwrap(), &img).unwrap();
            c.wait_with_output().unwrap().stdout
        };
        assert_eq!(kernel_image(&gz).unwrap(), img);
        assert!(kernel_image(b"not a kernel at all, not even close to one; padding padding padding").is_err());
    }
}
