//! Linux as a protected guest: a kernel built here from Debian's Linux
//! 6.12 source with `guest-linux/config`, a busybox initramfs around
//! `guest-linux/init`, and a small disk image with a known pattern.
//!
//! No Debian kernel has `CONFIG_ARM_PKVM_GUEST`, so the kernel is built:
//! the source comes from Debian with `apt-get source --download-only linux`
//! (a `deb-src` entry for `bookworm-backports` on Debian 12 is added when apt
//! has no 6.12 source, on the mirror apt uses for bookworm), is unpacked with `dpkg-source -x --skip-patches`
//! (the upstream tarball as Debian ships it, Debian's patches not applied),
//! and built with `gcc-aarch64-linux-gnu` (installed with apt when missing,
//! with make, flex, bison and bc): `make tinyconfig`, the fragment merged
//! with `scripts/kconfig/merge_config.sh`, `make olddefconfig`, every option
//! of the fragment checked, `make -jN Image`. The Image is cached as
//! `target/linux-guest/<version>-<config hash>/Image`; the unpacked source
//! in `target/linux-guest/src/` (its version in `target/linux-guest/source`)
//! and the build tree in `target/linux-guest/build/`, so a changed fragment
//! rebuilds incrementally and only the first run pays for the download.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::apt;
use crate::progress::{self, Progress, Total};
use crate::sys::{as_root, is_root};

/// The kernel configuration fragment (merged over `make tinyconfig`).
pub const CONFIG: &str = include_str!("../../guest-linux/config");
/// The guest's `/init`.
pub const INIT: &str = include_str!("../../guest-linux/init");
/// The kernel series the guest needs (the pKVM guest driver is 6.12+).
const SERIES: &str = "6.12.";
/// The cross compiler's prefix (Debian's `gcc-aarch64-linux-gnu`).
const CROSS: &str = "aarch64-linux-gnu-";
/// Fixed build identity: `uname -a` is the same on every machine.
const BUILD_ENV: [(&str, &str); 4] = [
    ("KBUILD_BUILD_USER", "pkvm-rs"),
    ("KBUILD_BUILD_HOST", "xtask"),
    ("KBUILD_BUILD_TIMESTAMP", "Sun Nov 17 00:00:00 UTC 2024"),
    ("KBUILD_BUILD_VERSION", "1"),
];
/// The disk image: 2048 sectors of 512 bytes.
pub const DISK_SECTORS: usize = 2048;

pub struct LinuxGuest {
    /// Uncompressed arm64 Image.
    pub image: PathBuf,
    pub initramfs: PathBuf,
    pub disk: PathBuf,
    /// Debian source version the kernel was built from.
    pub version: String,
}

fn cache_dir() -> PathBuf {
    crate::paths::target_dir().join("linux-guest")
}

/// The first 16 hex digits of the fragment's SHA-256 (the cache key).
pub fn config_hash(config: &str) -> String {
    let d = Sha256::digest(config.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The kernel (built on first use), the initramfs and the disk image.
pub fn prepare() -> Result<LinuxGuest> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir)?;
    let (version, image) = kernel(&dir)?;
    let busybox = crate::linux::busybox()?;
    let bb = std::fs::read(&busybox).with_context(|| format!("reading {}", busybox.display()))?;
    let initramfs = dir.join("initramfs.cpio");
    std::fs::write(&initramfs, crate::linux::initramfs_cpio(&bb, INIT))?;
    let disk = dir.join("disk.img");
    std::fs::write(&disk, disk_image())?;
    Ok(LinuxGuest { image, initramfs, disk, version })
}

/// The kernel Image for the fragment in the repo: cached, or built now.
pub fn kernel(dir: &Path) -> Result<(String, PathBuf)> {
    let version = match std::fs::read_to_string(dir.join("source")) {
        Ok(v) if dir.join("src").join(src_name(v.trim())).join("Makefile").is_file() => v.trim().to_string(),
        _ => fetch_source(dir)?,
    };
    let out = dir.join(format!("{}-{}", upstream(&version), config_hash(CONFIG)));
    let image = out.join("Image");
    if image.is_file() {
        return Ok((version, image));
    }
    ensure_tools()?;
    let t = Instant::now();
    let steps = build(&dir.join("src").join(src_name(&version)), &dir.join("build"), CONFIG)?;
    let secs = t.elapsed().as_secs();
    std::fs::create_dir_all(&out)?;
    std::fs::copy(dir.join("build/arch/arm64/boot/Image"), &image)?;
    std::fs::write(out.join("build-seconds"), format!("{secs}\n"))?;
    std::fs::write(out.join("build-steps"), format!("{steps}\n"))?;
    eprintln!("xtask: Linux guest kernel {} built in {secs} s: {}", upstream(&version), image.display());
    Ok((version, image))
}

/// "6.12.95-1~bpo12+1" → "6.12.95".
fn upstream(version: &str) -> &str {
    version.split_once('-').map_or(version, |(u, _)| u)
}

fn src_name(version: &str) -> String {
    format!("linux-{}", upstream(version))
}

fn run(c: &mut Command, what: &str) -> Result<()> {
    let st = c.status().with_context(|| format!("running {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

fn run_root(args: &[&str]) -> Result<()> {
    let Some(mut c) = as_root(args) else {
        bail!("`{}` needs root: run it as root, or run cargo xtask as root", args.join(" "));
    };
    eprintln!("xtask: {}", args.join(" "));
    run(&mut c, &args.join(" "))
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The source tools, the cross compiler and the kernel's build tools,
/// installed with apt when missing.
fn ensure_tools() -> Result<()> {
    let tools = [
        ("dpkg-source".into(), "dpkg-dev"),
        ("xz".into(), "xz-utils"),
        (format!("{CROSS}gcc"), "gcc-aarch64-linux-gnu"),
        ("gcc".into(), "gcc"),
        ("make".into(), "make"),
        ("flex".into(), "flex"),
        ("bison".into(), "bison"),
        ("bc".into(), "bc"),
        ("perl".into(), "perl"),
    ];
    let missing: Vec<&str> = tools.iter().filter(|(c, _)| !have(c)).map(|(_, p)| *p).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !have("apt-get") {
        bail!("building the Linux guest kernel needs {}: install them", missing.join(", "));
    }
    let mut args = vec!["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y"];
    args.extend(["--no-install-recommends", "libc6-dev"]);
    args.extend(&missing);
    run_root(&args).context("installing the kernel's build tools")
}

/// The newest `SERIES` version among `apt-cache showsrc linux`'s.
fn newest_source(showsrc: &str) -> Option<String> {
    let key = |v: &str| -> Option<(u32, String)> {
        let patch = v.strip_prefix(SERIES)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
        Some((patch, v.to_string()))
    };
    showsrc.lines().filter_map(|l| l.strip_prefix("Version: ")).filter_map(|v| key(v.trim())).max().map(|(_, v)| v)
}

fn source_versions() -> Result<Option<String>> {
    let out = Command::new("apt-cache").args(["showsrc", "linux"]).output().context("running apt-cache showsrc")?;
    Ok(newest_source(&String::from_utf8_lossy(&out.stdout)))
}

/// The `deb-src` entry the xtask adds when apt has no Linux 6.12 source:
/// Debian 12's `bookworm-backports`, another Debian release's own suite, on
/// the mirror of the release's entry (`crate::apt`).
pub fn deb_src_entry() -> Result<apt::Addition> {
    let (id, codename) = apt::os_release();
    let suite = match (id.as_str(), codename.as_str()) {
        ("debian", "bookworm") => "bookworm-backports".to_string(),
        ("debian", c) if !c.is_empty() => c.to_string(),
        _ => bail!(
            "apt has no Linux {SERIES}x source and this is not Debian ({id} {codename}): add a deb-src line \
             for a suite with Linux {SERIES}x (Debian 12: bookworm-backports) and run apt-get update"
        ),
    };
    apt::Sources::read()?.addition(&codename, "deb-src", &suite, "linux-src")
}

/// Downloads and unpacks the newest Linux 6.12 source apt offers.
fn fetch_source(dir: &Path) -> Result<String> {
    if have("apt-get") {
        ensure_tools()?;
    }
    if !have("apt-get") || !have("dpkg-source") {
        bail!(
            "the Linux guest's kernel is built from Debian's source (apt-get source, dpkg-source): without \
             them, unpack a Linux {SERIES}x tree as {}/src/linux-<version> and write <version> into {}/source",
            dir.display(),
            dir.display()
        );
    }
    let version = match source_versions()? {
        Some(v) => v,
        None => {
            let entry = deb_src_entry()?;
            apt::add(&entry)?;
            source_versions()?.with_context(|| {
                format!("apt still has no Linux {SERIES}x source after adding {}", entry.file.display())
            })?
        }
    };
    let src = dir.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src)?;
    eprintln!("xtask: fetching the source of linux {version} into {}", src.display());
    let mut get = Command::new("apt-get");
    if is_root() {
        // apt's download sandbox user cannot write into our tree.
        get.args(["-o", "APT::Sandbox::User=root"]);
    }
    get.args(["source", "--download-only", &format!("linux={version}")]);
    if !apt::download(&mut get, &src, &format!("fetching the source of linux {version}"))? {
        bail!("apt-get source --download-only linux={version} failed");
    }
    let dsc = std::fs::read_dir(&src)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "dsc"))
        .context("apt-get source left no .dsc")?;
    let mut x = Command::new("dpkg-source");
    x.current_dir(&src).args(["-x", "--skip-patches"]).arg(&dsc).arg(src_name(&version));
    run(&mut x, "dpkg-source -x")?;
    // The tarballs are not needed once unpacked.
    for e in std::fs::read_dir(&src)?.flatten() {
        if e.path().is_file() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    std::fs::write(dir.join("source"), format!("{version}\n"))?;
    Ok(version)
}

fn make(src: &Path, build: &Path) -> Command {
    let mut c = Command::new("make");
    c.arg("-C").arg(src).arg(format!("O={}", build.display()));
    c.args(["ARCH=arm64", &format!("CROSS_COMPILE={CROSS}")]);
    c.envs(BUILD_ENV);
    c
}

/// tinyconfig + the fragment, checked, then the Image; the steps make took.
fn build(src: &Path, build: &Path, config: &str) -> Result<u64> {
    std::fs::create_dir_all(build)?;
    let fragment = build.join("pkvm-rs.config");
    std::fs::write(&fragment, config)?;
    eprintln!("xtask: configuring Linux in {} (tinyconfig + guest-linux/config)", build.display());
    run(make(src, build).arg("tinyconfig").stdout(Stdio::null()), "make tinyconfig")?;
    let mut merge = Command::new("sh");
    merge.arg(src.join("scripts/kconfig/merge_config.sh")).args(["-m", "-O"]).arg(build);
    merge.arg(build.join(".config")).arg(&fragment).current_dir(build).stdout(Stdio::null());
    run(&mut merge, "scripts/kconfig/merge_config.sh")?;
    run(make(src, build).arg("olddefconfig").stdout(Stdio::null()), "make olddefconfig")?;
    let dotconfig = std::fs::read_to_string(build.join(".config"))?;
    check_config(config, &dotconfig)?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("xtask: building the Linux guest kernel with {jobs} jobs (several minutes, once)");
    let mut c = make(src, build);
    c.args([format!("-j{jobs}"), "Image".into()]).stdout(Stdio::piped());
    let mut child = c.spawn().context("running make Image")?;
    let out = child.stdout.take().context("make's stdout")?;
    let mut p = Progress::new("building the Linux guest kernel", steps_about(), progress::STEPS);
    let mut steps = 0;
    for l in BufReader::new(out).lines().map_while(Result::ok) {
        if let Some(step) = kbuild_step(&l) {
            steps += 1;
            p.set(steps, step);
        }
    }
    let st = child.wait().context("waiting for make")?;
    p.finish("");
    if !st.success() {
        bail!("make Image failed ({st})");
    }
    Ok(steps)
}

/// A step of kbuild's quiet output (`  CC      kernel/fork.o`): the line,
/// trimmed.
fn kbuild_step(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("  ")?;
    let tag = rest.split_whitespace().next()?;
    let is_tag = tag.len() <= 8 && tag.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    (is_tag && rest.len() > tag.len() && tag.chars().next()?.is_ascii_uppercase()).then(|| rest.trim())
}

/// About how many steps a build takes: the most of an earlier build's
/// (`build-steps` beside its Image), else about what a first build of
/// guest-linux/config on 6.12 takes (1,100: the targets kbuild records).
fn steps_about() -> Total {
    let earlier = std::fs::read_dir(cache_dir())
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("build-steps")).ok()?.trim().parse::<u64>().ok())
                .max()
        })
        .ok()
        .flatten();
    Total::About(earlier.unwrap_or(1100))
}

/// Every `CONFIG_X=v` and `# CONFIG_X is not set` of the fragment must be
/// what the final .config says.
pub fn check_config(fragment: &str, dotconfig: &str) -> Result<()> {
    let value = |name: &str| -> Option<&str> {
        dotconfig
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .or_else(|| dotconfig.lines().any(|l| l == format!("# {name} is not set")).then_some("n"))
    };
    let mut wrong = Vec::new();
    for l in fragment.lines().map(str::trim) {
        let (name, want) = if let Some(n) = l.strip_prefix("# ").and_then(|r| r.strip_suffix(" is not set")) {
            (n, "n")
        } else if l.starts_with("CONFIG_") {
            l.split_once('=').with_context(|| format!("guest-linux/config: bad line '{l}'"))?
        } else {
            continue;
        };
        let got = value(name);
        let ok = match got {
            Some(g) => g == want,
            None => want == "n",
        };
        if !ok {
            let got = got.map_or("absent (its dependencies are not met)".to_string(), |g| format!("{name}={g}"));
            wrong.push(format!("  {name}={want} wanted, .config has {got}"));
        }
    }
    if !wrong.is_empty() {
        bail!("guest-linux/config: after make olddefconfig these options are not as asked:\n{}", wrong.join("\n"));
    }
    Ok(())
}

/// One sector's text: the pattern /init checks.
pub fn sector_text(n: usize) -> String {
    format!("pkvm-rs virtio-blk test disk, sector {n:04} of {DISK_SECTORS}")
}

/// The disk: each 512-byte sector starts with [`sector_text`] and a
/// newline, the rest filled with bytes that depend on the sector and the
/// offset (so a misplaced or stale bounce buffer changes the checksum).
pub fn disk_image() -> Vec<u8> {
    let mut d = vec![0u8; DISK_SECTORS * 512];
    for (n, s) in d.chunks_mut(512).enumerate() {
        let t = format!("{}\n", sector_text(n));
        s[..t.len()].copy_from_slice(t.as_bytes());
        for (i, b) in s.iter_mut().enumerate().skip(t.len()) {
            *b = (n * 7 + i * 13) as u8;
        }
    }
    d
}

/// `sha256sum` of the disk, as /init prints it.
pub fn disk_sha256() -> String {
    Sha256::digest(disk_image()).iter().map(|b| format!("{b:02x}")).collect()
}

/// `cargo xtask linux-guest`: only build (or find) the kernel.
pub fn build_cmd() -> Result<i32> {
    let g = prepare()?;
    println!("kernel     {} (Linux {} from Debian's source)", g.image.display(), g.version);
    println!("initramfs  {}", g.initramfs.display());
    println!("disk       {} (sha256 {})", g.disk.display(), disk_sha256());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_612_source_is_picked() {
        let s = "Package: linux\nVersion: 6.1.140-1\n\nVersion: 6.12.9-1~bpo12+1\nVersion: 6.12.95-1~bpo12+1\n\
                 Version: 6.12.43-1~bpo12+1\nVersion: 6.16.3-1~bpo12+1\n";
        assert_eq!(newest_source(s).as_deref(), Some("6.12.95-1~bpo12+1"));
        assert_eq!(newest_source("Version: 6.1.140-1\n"), None);
        assert_eq!(upstream("6.12.95-1~bpo12+1"), "6.12.95");
        assert_eq!(src_name("6.12.95-1~bpo12+1"), "linux-6.12.95");
    }

    #[test]
    fn config_check_names_what_is_wrong() {
        let frag = "# comment\nCONFIG_A=y\nCONFIG_N=8\n# CONFIG_B is not set\n\nCONFIG_C=y\n";
        check_config(frag, "CONFIG_A=y\nCONFIG_N=8\n# CONFIG_B is not set\nCONFIG_C=y\n").unwrap();
        // A not-set option may also be absent altogether.
        check_config(frag, "CONFIG_A=y\nCONFIG_N=8\nCONFIG_C=y\n").unwrap();
        let e = check_config(frag, "CONFIG_A=m\nCONFIG_N=16\nCONFIG_B=y\n").unwrap_err().to_string();
        assert!(e.contains("CONFIG_A=y wanted, .config has CONFIG_A=m"), "{e}");
        assert!(e.contains("CONFIG_N=8 wanted, .config has CONFIG_N=16"), "{e}");
        assert!(e.contains("CONFIG_B=n wanted, .config has CONFIG_B=y"), "{e}");
        assert!(e.contains("CONFIG_C=y wanted, .config has absent"), "{e}");
        // The prefix of another option is not that option.
        assert!(check_config("CONFIG_A=y\n", "CONFIG_AB=y\n").is_err());
    }

    #[test]
    fn the_fragment_has_what_the_guest_needs() {
        for o in [
            "CONFIG_ARM_PKVM_GUEST=y",
            "CONFIG_DMA_RESTRICTED_POOL=y",
            "CONFIG_VIRTIO_MMIO=y",
            "CONFIG_VIRTIO_BLK=y",
            "CONFIG_VIRTIO_CONSOLE=y",
            "CONFIG_SERIAL_AMBA_PL011_CONSOLE=y",
            "CONFIG_BLK_DEV_INITRD=y",
            "CONFIG_SMP=y",
        ] {
            assert!(CONFIG.lines().any(|l| l == o), "{o}");
        }
        assert_eq!(config_hash(CONFIG).len(), 16);
        assert_ne!(config_hash(CONFIG), config_hash(&format!("{CONFIG}CONFIG_X=y\n")));
        assert!(INIT.starts_with("#!/bin/busybox sh\n"));
    }

    #[test]
    fn kbuild_steps_are_counted() {
        assert_eq!(kbuild_step("  CC      kernel/fork.o"), Some("CC      kernel/fork.o"));
        assert_eq!(kbuild_step("  OBJCOPY arch/arm64/boot/Image"), Some("OBJCOPY arch/arm64/boot/Image"));
        assert_eq!(kbuild_step("  HOSTCC  scripts/basic/fixdep"), Some("HOSTCC  scripts/basic/fixdep"));
        for other in [
            "make[1]: Entering directory '/x/build'",
            "  GEN",
            "Kernel: arch/arm64/boot/Image is ready",
            "  some text",
            "",
        ] {
            assert_eq!(kbuild_step(other), None, "{other}");
        }
    }

    #[test]
    fn disk_pattern() {
        let d = disk_image();
        assert_eq!(d.len(), DISK_SECTORS * 512);
        assert!(d[1000 * 512..].starts_with(b"pkvm-rs virtio-blk test disk, sector 1000 of 2048\n"));
        assert_ne!(d[512 + 100], d[2 * 512 + 100]);
        assert_eq!(disk_sha256().len(), 64);
    }
}
