//! Linux as a protected guest: a kernel built here from Debian's Linux
//! source (6.12 by default; `cargo xtask linux-guest --version V` another
//! series apt offers) with `guest-linux/config`, a busybox initramfs around
//! `guest-linux/init`, and a small disk image with a known pattern.
//!
//! No Debian kernel has `CONFIG_ARM_PKVM_GUEST`, so the kernel is built:
//! the source comes from Debian with `apt-get source --download-only linux`
//! (when apt offers no source of the series, `deb-src` entries are added in
//! turn: `bookworm-backports` on Debian 12, then `trixie`, then `sid`, on
//! the mirror apt uses for the release), is unpacked with `dpkg-source -x
//! --skip-patches` (the upstream tarball as Debian ships it, Debian's
//! patches not applied), and built with `gcc-aarch64-linux-gnu` (installed
//! with apt when missing, with make, flex, bison and bc): `make tinyconfig`,
//! the fragment merged with `scripts/kconfig/merge_config.sh`, `make
//! olddefconfig`, every option of the fragment checked, `make -jN Image`.
//! The Image is cached as `target/linux-guest/<version>-<config hash>/Image`;
//! the unpacked sources in `target/linux-guest/src/linux-<version>/` (the
//! version of 6.12 in `target/linux-guest/source`, of another series V in
//! `source-V`) and the build trees in `target/linux-guest/build/` (6.12)
//! and `build-V/`, so a changed fragment rebuilds incrementally and only
//! the first run of a version pays for the download.
//!
//! Over 600 lines: the source fetch, the per-version cache and the build
//! are one pipeline with one cache layout; the next split is the fetch
//! (apt-get source, version choice) into a file of its own.

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
/// The kernel series `--linux-guest` runs (the pKVM guest driver is in
/// Linux 6.12 and later).
pub const SERIES: &str = "6.12";
/// The oldest series with the pKVM guest driver.
const OLDEST: (u32, u32) = (6, 12);
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
    /// Uncompressed arm64 Image (None: not asked for, the user brings one).
    pub image: Option<PathBuf>,
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

/// The kernel of [`SERIES`] (with `kernel`: built on first use), the
/// initramfs and the disk image.
pub fn prepare(kernel: bool) -> Result<LinuxGuest> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir)?;
    let (version, image) = match kernel {
        true => self::kernel(&dir, SERIES).map(|(v, i)| (v, Some(i)))?,
        false => (String::new(), None),
    };
    let busybox = crate::linux::busybox()?;
    let bb = std::fs::read(&busybox).with_context(|| format!("reading {}", busybox.display()))?;
    let initramfs = dir.join("initramfs.cpio");
    std::fs::write(&initramfs, crate::linux::initramfs_cpio(&bb, INIT))?;
    let disk = dir.join("disk.img");
    std::fs::write(&disk, disk_image())?;
    Ok(LinuxGuest { image, initramfs, disk, version })
}

/// Where a series' source version is recorded and its build tree lives:
/// `source` and `build/` for [`SERIES`], `source-<series>` and
/// `build-<series>/` for another.
fn series_paths(dir: &Path, series: &str) -> (PathBuf, PathBuf) {
    match series == SERIES {
        true => (dir.join("source"), dir.join("build")),
        false => (dir.join(format!("source-{series}")), dir.join(format!("build-{series}"))),
    }
}

/// The kernel Image of `series` ("6.12", "6.16", "7.2", or an exact
/// upstream version "6.12.95") for the fragment in the repo: cached, or
/// built now.
pub fn kernel(dir: &Path, series: &str) -> Result<(String, PathBuf)> {
    check_series(series)?;
    let (source, build_dir) = series_paths(dir, series);
    let version = match std::fs::read_to_string(&source) {
        Ok(v) if dir.join("src").join(src_name(v.trim())).join("Makefile").is_file() => v.trim().to_string(),
        _ => fetch_source(dir, series, &source)?,
    };
    let out = dir.join(format!("{}-{}", upstream(&version), config_hash(CONFIG)));
    let image = out.join("Image");
    if image.is_file() {
        return Ok((version, image));
    }
    ensure_tools()?;
    let t = Instant::now();
    let steps = build(&dir.join("src").join(src_name(&version)), &build_dir, CONFIG)?;
    let secs = t.elapsed().as_secs();
    std::fs::create_dir_all(&out)?;
    std::fs::copy(build_dir.join("arch/arm64/boot/Image"), &image)?;
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

/// The numbers of an upstream version ("6.12.95" → [6, 12, 95]).
fn numbers(upstream: &str) -> Vec<u32> {
    upstream.split('.').map_while(|p| p.parse().ok()).collect()
}

/// A series the xtask builds: "MAJOR.MINOR" or "MAJOR.MINOR.PATCH", 6.12
/// or newer.
pub fn check_series(series: &str) -> Result<()> {
    let n = numbers(series);
    let well_formed = (2..=3).contains(&n.len()) && n.len() == series.split('.').count();
    if !well_formed {
        bail!("bad kernel version '{series}': MAJOR.MINOR (e.g. 6.12) or MAJOR.MINOR.PATCH (e.g. 6.12.95)");
    }
    if (n[0], n[1]) < OLDEST {
        bail!("Linux {series} has no pKVM guest driver (CONFIG_ARM_PKVM_GUEST): 6.12 or newer");
    }
    Ok(())
}

/// Does Debian version `v` ("6.12.95-1~bpo12+1") belong to `series`?
fn in_series(v: &str, series: &str) -> bool {
    let (u, s) = (numbers(upstream(v)), numbers(series));
    u.len() >= s.len() && u[..s.len()] == s[..]
}

/// The newest version of `series` among `apt-cache showsrc linux`'s.
fn newest_source(showsrc: &str, series: &str) -> Option<String> {
    source_list(showsrc).into_iter().filter(|v| in_series(v, series)).max_by_key(|v| numbers(upstream(v)))
}

/// Versions of a series tried at most when downloads fail.
const MAX_TRIES: usize = 4;

/// The versions of `series` apt offers, newest first, each once.
fn candidates(showsrc: &str, series: &str) -> Vec<String> {
    let mut v: Vec<String> = source_list(showsrc).into_iter().filter(|v| in_series(v, series)).collect();
    v.sort_by_key(|v| std::cmp::Reverse(numbers(upstream(v))));
    v.dedup();
    v
}

/// Every version `apt-cache showsrc linux` names.
fn source_list(showsrc: &str) -> Vec<String> {
    showsrc.lines().filter_map(|l| l.strip_prefix("Version: ")).map(|v| v.trim().to_string()).collect()
}

/// The series apt offers (6.12 and newer), each with its newest version,
/// oldest first.
pub fn offered(showsrc: &str) -> Vec<(String, String)> {
    let mut series: Vec<Vec<u32>> = source_list(showsrc)
        .iter()
        .map(|v| numbers(upstream(v)))
        .filter(|n| n.len() >= 2 && (n[0], n[1]) >= OLDEST)
        .map(|n| n[..2].to_vec())
        .collect();
    series.sort();
    series.dedup();
    series
        .into_iter()
        .filter_map(|n| {
            let s = format!("{}.{}", n[0], n[1]);
            Some((s.clone(), newest_source(showsrc, &s)?))
        })
        .collect()
}

fn showsrc() -> Result<String> {
    let out = Command::new("apt-cache").args(["showsrc", "linux"]).output().context("running apt-cache showsrc")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn source_versions(series: &str) -> Result<Option<String>> {
    Ok(newest_source(&showsrc()?, series))
}

/// The `deb-src` entry the xtask adds when apt has no Linux 6.12 source:
/// Debian 12's `bookworm-backports`, another Debian release's own suite, on
/// the mirror of the release's entry (`crate::apt`).
pub fn deb_src_entry() -> Result<apt::Addition> {
    Ok(deb_src_entries()?.remove(0))
}

/// The `deb-src` entries the xtask may add, in the order it adds them until
/// apt offers the series asked for: the release's own suite for 6.12
/// (`bookworm-backports` on Debian 12), then the newer releases' (`trixie`,
/// then `sid`, which has Debian's newest Linux), each on the mirror of the
/// release's entry.
pub fn deb_src_entries() -> Result<Vec<apt::Addition>> {
    let (id, codename) = apt::os_release();
    let suites: Vec<(String, &str)> = match (id.as_str(), codename.as_str()) {
        ("debian", "bookworm") => Vec::from([
            ("bookworm-backports".to_string(), "linux-src"),
            ("trixie".to_string(), "linux-src-trixie"),
            ("sid".to_string(), "linux-src-sid"),
        ]),
        ("debian", "sid") => Vec::from([("sid".to_string(), "linux-src")]),
        ("debian", c) if !c.is_empty() => {
            Vec::from([(c.to_string(), "linux-src"), ("sid".to_string(), "linux-src-sid")])
        }
        _ => bail!(
            "apt has no Linux source of the version asked for and this is not Debian ({id} {codename}): add a \
             deb-src line for a suite with it (Debian 12: bookworm-backports for 6.12, sid for the newest) and \
             run apt-get update"
        ),
    };
    let sources = apt::Sources::read()?;
    suites.iter().map(|(suite, name)| sources.addition(&codename, "deb-src", suite, name)).collect()
}

/// Downloads and unpacks the newest source of `series` apt offers (adding
/// `deb-src` entries until it offers one), records its version in
/// `record`.
fn fetch_source(dir: &Path, series: &str, record: &Path) -> Result<String> {
    if have("apt-get") {
        ensure_tools()?;
    }
    if !have("apt-get") || !have("dpkg-source") {
        bail!(
            "the Linux guest's kernel is built from Debian's source (apt-get source, dpkg-source): without \
             them, unpack a Linux {series} tree as {}/src/linux-<version> and write <version> into {}",
            dir.display(),
            record.display()
        );
    }
    let mut version = source_versions(series)?;
    if version.is_none() {
        for entry in deb_src_entries()? {
            if entry.file.exists() {
                continue;
            }
            apt::add(&entry)?;
            version = source_versions(series)?;
            if version.is_some() {
                break;
            }
        }
    }
    let Some(version) = version else {
        let offered: Vec<String> = offered(&showsrc()?).into_iter().map(|(s, v)| format!("{s} ({v})")).collect();
        bail!("apt offers no Linux {series} source; it offers: {}", offered.join(", "));
    };
    let top = dir.join("src");
    std::fs::create_dir_all(&top)?;
    // Downloaded into a directory of its own: other versions' trees stay.
    let src = top.join("download");
    // A mirror's index may name a version whose files it does not have
    // (yet): the next newest of the series is tried then, a few at most.
    let all = showsrc()?;
    let mut tried = Vec::new();
    let mut got = None;
    for v in std::iter::once(version).chain(candidates(&all, series).into_iter().skip(1)).take(MAX_TRIES) {
        if tried.contains(&v) {
            continue;
        }
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src)?;
        eprintln!("xtask: fetching the source of linux {v} into {}", src.display());
        let mut get = Command::new("apt-get");
        if is_root() {
            // apt's download sandbox user cannot write into our tree.
            get.args(["-o", "APT::Sandbox::User=root"]);
        }
        get.args(["source", "--download-only", &format!("linux={v}")]);
        if apt::download(&mut get, &src, &format!("fetching the source of linux {v}"))? {
            got = Some(v);
            break;
        }
        eprintln!("xtask: apt-get source --download-only linux={v} failed; trying an older {series}");
        tried.push(v);
    }
    let Some(version) = got else {
        bail!("apt-get source --download-only failed for linux {}", tried.join(", "));
    };
    let _ = std::fs::remove_dir_all(top.join(src_name(&version)));
    let dsc = std::fs::read_dir(&src)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "dsc"))
        .context("apt-get source left no .dsc")?;
    let mut x = Command::new("dpkg-source");
    x.current_dir(&top).args(["-x", "--skip-patches"]).arg(&dsc).arg(src_name(&version));
    run(&mut x, "dpkg-source -x")?;
    // The tarballs are not needed once unpacked.
    let _ = std::fs::remove_dir_all(&src);
    std::fs::write(record, format!("{version}\n"))?;
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

/// Every kernel built for the fragment in the repo and cached
/// (`<version>-<config hash>/Image`), as (upstream version, Image), oldest
/// first.
pub fn cached_kernels() -> Vec<(String, PathBuf)> {
    let suffix = format!("-{}", config_hash(CONFIG));
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(cache_dir())
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let version = name.strip_suffix(&suffix)?.to_string();
                    let image = e.path().join("Image");
                    image.is_file().then_some((version, image))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|(ver, _)| numbers(ver));
    v
}

/// `cargo xtask linux-guest` options.
#[derive(clap::Args, Debug, Default)]
pub struct BuildArgs {
    /// The kernel series to build from Debian's source: 6.12 (the default,
    /// what --linux-guest runs) or another apt offers (6.12 up to the
    /// newest; `--list`), or an exact upstream version (6.12.95).
    #[arg(long)]
    pub version: Option<String>,
    /// List the series apt offers (from the deb-src entries it has now) and
    /// the kernels cached; build nothing.
    #[arg(long)]
    pub list: bool,
}

/// `cargo xtask linux-guest`: only build (or find) the kernel.
pub fn build_cmd(a: &BuildArgs) -> Result<i32> {
    if a.list {
        println!("apt offers (apt-cache showsrc linux):");
        for (s, v) in offered(&showsrc()?) {
            println!("  {s:<6} {v}");
        }
        println!("cached kernels for guest-linux/config ({}):", config_hash(CONFIG));
        for (v, p) in cached_kernels() {
            println!("  {v:<10} {}", p.display());
        }
        return Ok(0);
    }
    let series = a.version.as_deref().unwrap_or(SERIES);
    check_series(series)?;
    let dir = cache_dir();
    std::fs::create_dir_all(&dir)?;
    let (version, image) = kernel(&dir, series)?;
    let g = prepare(false)?;
    println!("kernel     {} (Linux {} from Debian's source)", image.display(), version);
    println!("initramfs  {}", g.initramfs.display());
    println!("disk       {} (sha256 {})", g.disk.display(), disk_sha256());
    if series != SERIES {
        println!("run it:    cargo xtask run --guest-kernel {}", image.display());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_612_source_is_picked() {
        let s = "Package: linux\nVersion: 6.1.140-1\n\nVersion: 6.12.9-1~bpo12+1\nVersion: 6.12.95-1~bpo12+1\n\
                 Version: 6.12.43-1~bpo12+1\nVersion: 6.16.3-1~bpo12+1\nVersion: 6.1.12-1\n";
        assert_eq!(newest_source(s, "6.12").as_deref(), Some("6.12.95-1~bpo12+1"));
        assert_eq!(newest_source("Version: 6.1.140-1\n", "6.12"), None);
        assert_eq!(upstream("6.12.95-1~bpo12+1"), "6.12.95");
        assert_eq!(src_name("6.12.95-1~bpo12+1"), "linux-6.12.95");
    }

    /// Other series: the newest of each, an exact version, 6.12 and newer.
    #[test]
    fn other_versions_are_offered_and_picked() {
        let s = "Version: 6.12.95-1~bpo12+1\nVersion: 6.12.9-1\nVersion: 6.16.3-1~bpo12+1\nVersion: 7.2.8-1\n\
                 Version: 7.2.10-1\nVersion: 6.1.140-1\nVersion: 6.5.10-1~bpo12+1\nVersion: 6.120.1-1\n";
        assert_eq!(newest_source(s, "7.2").as_deref(), Some("7.2.10-1"));
        assert_eq!(newest_source(s, "6.16").as_deref(), Some("6.16.3-1~bpo12+1"));
        assert_eq!(newest_source(s, "6.12.9").as_deref(), Some("6.12.9-1"));
        assert_eq!(newest_source(s, "6.13"), None);
        assert_eq!(candidates(s, "7.2"), ["7.2.10-1", "7.2.8-1"]);
        assert_eq!(candidates(s, "6.12"), ["6.12.95-1~bpo12+1", "6.12.9-1"]);
        let o = offered(s);
        let names: Vec<&str> = o.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["6.12", "6.16", "6.120", "7.2"]);
        assert_eq!(o[0].1, "6.12.95-1~bpo12+1");
        check_series("6.12").unwrap();
        check_series("7.2.8").unwrap();
        assert!(check_series("6.6").unwrap_err().to_string().contains("6.12 or newer"));
        for bad in ["6", "6.x", "", "6.12.", "6.12.1.2", "latest"] {
            assert!(check_series(bad).unwrap_err().to_string().contains("bad kernel version"), "{bad}");
        }
        let (src, build) = series_paths(Path::new("/c"), "7.2");
        assert_eq!((src.to_str(), build.to_str()), (Some("/c/source-7.2"), Some("/c/build-7.2")));
        assert_eq!(series_paths(Path::new("/c"), SERIES).1, Path::new("/c/build"));
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
