//! The Linux host's driver (`linux-host/kmod`), cross-built for exactly the
//! kernel `--linux` boots.
//!
//! The kernel Image names its release, its Debian version and its vermagic;
//! the xtask fetches that version's `linux-headers-<abi>-arm64` (arm64),
//! `linux-headers-<abi>-common` and `linux-kbuild-<abi>` (this machine's
//! architecture: its helper programs run here) with `apt-get download`,
//! unpacks them with `dpkg-deb -x` under `target/linux-host/kbuild-*/`, points
//! the arm64 headers' Makefile at the unpacked common tree, installs the
//! headers' cross compiler (`gcc-<N>-aarch64-linux-gnu`), `make` and
//! `pahole` (the kernel has BTF for modules) with apt when missing, and runs
//! kbuild. The module is cached under `target/linux-host/kmod/` by kernel
//! release and source hash; its vermagic must be the Image's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::sys::as_root;

/// The module file the build leaves (`linux-host/kmod/Kbuild`).
pub const MODULE: &str = "pkvm_host.ko";

/// What a kernel Image says about itself.
#[derive(Debug, PartialEq, Eq)]
pub struct KernelId {
    /// `uname -r`, e.g. `6.12.118+deb12-arm64`.
    pub release: String,
    /// The Debian package version, e.g. `6.12.118-1~deb12u1`.
    pub debian: String,
    /// The vermagic its modules must carry.
    pub vermagic: String,
}

impl KernelId {
    /// The ABI name of the package set: the release without `-arm64`.
    pub fn abi(&self) -> &str {
        self.release.strip_suffix("-arm64").unwrap_or(&self.release)
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

/// Reads the banner (`Linux version <release> (...) #1 SMP Debian <version>
/// (date)`) and the vermagic string (`<release> SMP ... aarch64`) out of an
/// arm64 Image.
pub fn kernel_id(image: &[u8]) -> Result<KernelId> {
    let at = find(image, b"Linux version ", 0).context("no `Linux version` banner in the kernel Image")?;
    let line_end = image[at..].iter().position(|&b| b == b'\n' || b == 0).map_or(image.len(), |p| at + p);
    let line = String::from_utf8_lossy(&image[at..line_end]).into_owned();
    let release = line["Linux version ".len()..].split(' ').next().unwrap_or("").to_string();
    let debian = line
        .rsplit_once(" Debian ")
        .and_then(|(_, v)| v.split(' ').next())
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .context("the kernel's banner names no Debian version: not a Debian kernel")?
        .to_string();
    if release.is_empty() {
        bail!("the kernel's banner names no release");
    }
    // vermagic: "<release> SMP mod_unload ...", a NUL-terminated string.
    let mut want = vec![0];
    want.extend_from_slice(release.as_bytes());
    want.push(b' ');
    let mut from = 0;
    while let Some(p) = find(image, &want, from) {
        let s = p + 1;
        let end = image[s..].iter().position(|&b| b == 0).map_or(image.len(), |e| s + e);
        let text = String::from_utf8_lossy(&image[s..end]);
        if text.contains(" mod_unload") {
            return Ok(KernelId { release, debian, vermagic: text.into_owned() });
        }
        from = s;
    }
    bail!("no vermagic string for {release} in the kernel Image")
}

/// The `vermagic=` of a built module.
pub fn module_vermagic(ko: &[u8]) -> Option<String> {
    let p = find(ko, b"\0vermagic=", 0)? + b"\0vermagic=".len();
    let end = ko[p..].iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&ko[p..p + end]).into_owned())
}

fn kmod_src() -> PathBuf {
    crate::paths::workspace_root().join("linux-host/kmod")
}

/// The driver's source files (name, bytes), sorted by name.
fn sources() -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(kmod_src()).context("reading linux-host/kmod")? {
        let p = e?.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if name == "Kbuild" || name.ends_with(".c") || name.ends_with(".h") {
            files.push((name, std::fs::read(&p)?));
        }
    }
    files.sort();
    Ok(files)
}

/// A hash of the driver's sources (names and bytes), 16 hex digits.
pub fn source_hash(files: &[(String, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    for (name, data) in files {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    let mut args = vec!["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y"];
    args.extend(["--no-install-recommends", "-o", "DPkg::Lock::Timeout=600"]);
    args.extend(pkgs);
    let Some(mut c) = as_root(&args) else {
        bail!("installing {} needs root: run `apt-get install {}` as root", pkgs.join(" "), pkgs.join(" "));
    };
    eprintln!("xtask: {}", args[2..].join(" "));
    if !c.status().context("running apt-get install")?.success() {
        bail!("apt-get install {} failed", pkgs.join(" "));
    }
    Ok(())
}

/// The headers, common tree and kbuild of `k`, unpacked and ready for
/// `make -C`; returns the arm64 headers directory.
fn headers(k: &KernelId) -> Result<PathBuf> {
    let dir = crate::paths::target_dir().join("linux-host").join(format!("kbuild-{}-{}", k.release, k.debian));
    let root = dir.join("root");
    let build = root.join("usr/src").join(format!("linux-headers-{}", k.release));
    if dir.join("ready").exists() {
        return Ok(build);
    }
    let (abi, v) = (k.abi(), &k.debian);
    let pkgs = [
        format!("linux-headers-{abi}-arm64:arm64={v}"),
        format!("linux-headers-{abi}-common={v}"),
        format!("linux-kbuild-{abi}={v}"),
    ];
    let pkgs: Vec<&str> = pkgs.iter().map(String::as_str).collect();
    crate::linux::ensure_arm64()?;
    if crate::linux::download(&dir, &pkgs).is_err() {
        // The lists may predate this kernel: refresh them once.
        crate::linux::run_root(&["apt-get", "update"], "apt-get update")?;
        crate::linux::download(&dir, &pkgs)?;
    }
    // The arm64 tree includes the common one by its installed path.
    let makefile = build.join("Makefile");
    let text = std::fs::read_to_string(&makefile).context("the arm64 headers have no Makefile")?;
    let usr_src = format!("{}/", root.join("usr/src").display());
    let text = text.replace(" /usr/src/", &format!(" {usr_src}"));
    if !text.contains(&usr_src) {
        bail!("{} does not include the common headers by /usr/src/: its layout changed", makefile.display());
    }
    std::fs::write(&makefile, text)?;
    for e in std::fs::read_dir(&dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "deb") {
            std::fs::remove_file(p)?;
        }
    }
    std::fs::write(dir.join("ready"), format!("{}\n", pkgs.join("\n")))?;
    Ok(build)
}

/// The cross compiler the headers name (`CC = ... $(CROSS_COMPILE)gcc-12`),
/// `make` and (for BTF) `pahole`, installed with apt when missing.
fn ensure_tools(build: &Path) -> Result<String> {
    let vars = std::fs::read_to_string(build.join(".kernelvariables")).unwrap_or_default();
    let var = |name: &str| {
        vars.lines().find_map(|l| {
            let l = l.trim().strip_prefix("override ").unwrap_or(l.trim());
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let cross = var("CROSS_COMPILE").unwrap_or_else(|| "aarch64-linux-gnu-".into());
    let gcc = var("CC").and_then(|cc| cc.rsplit(")").next().map(str::to_string)).unwrap_or_else(|| "gcc".into());
    let compiler = format!("{cross}{gcc}");
    let mut missing = Vec::new();
    if !have(&compiler) {
        // aarch64-linux-gnu-gcc-12 comes from gcc-12-aarch64-linux-gnu.
        let pkg = match gcc.strip_prefix("gcc-") {
            Some(n) => format!("gcc-{n}-{}", cross.trim_end_matches('-')),
            None => format!("gcc-{}", cross.trim_end_matches('-')),
        };
        missing.push(pkg);
    }
    if !have("make") {
        missing.push("make".into());
    }
    let config = std::fs::read_to_string(build.join(".config")).unwrap_or_default();
    if config.lines().any(|l| l == "CONFIG_DEBUG_INFO_BTF_MODULES=y") && !have("pahole") {
        missing.push("pahole".into());
    }
    if !missing.is_empty() {
        apt_install(&missing.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    Ok(compiler)
}

/// The kernel's own style checker, when a Linux source tree is cached
/// (the Linux guest's, `target/linux-guest/src/linux-*`).
fn checkpatch() -> Option<PathBuf> {
    let src = crate::paths::target_dir().join("linux-guest/src");
    std::fs::read_dir(src)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("scripts/checkpatch.pl")))
        .find(|p| p.is_file())
}

/// Runs checkpatch on the driver's sources in `dir`; the report if any.
fn style(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<Option<String>> {
    let Some(script) = checkpatch() else { return Ok(None) };
    let mut c = Command::new("perl");
    c.arg(&script).args(["--no-tree", "--strict", "--terse", "--show-types", "-f"]).current_dir(dir);
    c.args(files.iter().map(|(n, _)| n).filter(|n| *n != "Kbuild"));
    let out = c.output().context("running checkpatch.pl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let bad: Vec<&str> =
        text.lines().filter(|l| l.contains(": ERROR:") || l.contains(": WARNING:") || l.contains(": CHECK:")).collect();
    Ok(Some(bad.join("\n")))
}

/// Builds (or finds in the cache) the driver for the kernel in `image`;
/// returns the module's path.
pub fn build(image: &Path) -> Result<PathBuf> {
    let data = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    let k = kernel_id(&data)?;
    let files = sources()?;
    let out = crate::paths::target_dir().join("linux-host/kmod").join(format!("{}-{}", k.release, source_hash(&files)));
    let ko = out.join(MODULE);
    if ko.exists() {
        return Ok(ko);
    }
    eprintln!("xtask: building the host driver for Linux {} (Debian {})", k.release, k.debian);
    let build = headers(&k)?;
    let compiler = ensure_tools(&build)?;
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    for (name, bytes) in &files {
        std::fs::write(out.join(name), bytes)?;
    }
    let st = Command::new("make")
        .arg("-C")
        .arg(&build)
        .arg(format!("M={}", out.display()))
        .arg(format!("-j{}", std::thread::available_parallelism().map_or(1, |n| n.get())))
        .arg("modules")
        .status()
        .context("running make")?;
    if !st.success() {
        bail!("building the host driver with {compiler} failed");
    }
    let built = std::fs::read(&ko).with_context(|| format!("make left no {}", ko.display()))?;
    match module_vermagic(&built) {
        Some(v) if v == k.vermagic => {}
        v => {
            let _ = std::fs::remove_file(&ko);
            bail!("the module's vermagic {:?} is not the kernel's {:?}", v.unwrap_or_default(), k.vermagic);
        }
    }
    match style(&out, &files)? {
        Some(report) if !report.is_empty() => {
            let _ = std::fs::remove_file(&ko);
            bail!("checkpatch.pl --strict finds problems in linux-host/kmod:\n{report}");
        }
        Some(_) => eprintln!("xtask: host driver built ({}), checkpatch --strict clean", k.vermagic),
        None => eprintln!("xtask: host driver built ({}); no kernel source cached for checkpatch", k.vermagic),
    }
    Ok(ko)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The strings of Debian's 6.12.118 arm64 Image, with filler around.
    fn image() -> Vec<u8> {
        let mut v = vec![0u8; 64];
        v.extend_from_slice(b"\x006.12.118+deb12-arm64 SMP mod_unload modversions aarch64\0vermagic\0");
        v.extend_from_slice(
            b"Linux version 6.12.118+deb12-arm64 (debian-kernel@lists.debian.org) (aarch64-linux-gnu-gcc-12 \
              (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP Debian \
              6.12.118-1~deb12u1 (2026-11-28)\n\0",
        );
        v
    }

    #[test]
    fn reads_the_kernel_id() {
        let k = kernel_id(&image()).unwrap();
        assert_eq!(
            k,
            KernelId {
                release: "6.12.118+deb12-arm64".into(),
                debian: "6.12.118-1~deb12u1".into(),
                vermagic: "6.12.118+deb12-arm64 SMP mod_unload modversions aarch64".into(),
            }
        );
        assert_eq!(k.abi(), "6.12.118+deb12");
        let no_debian = b"Linux version 6.12.1 (x@y) (gcc) #1 SMP PREEMPT\n\0".to_vec();
        assert!(kernel_id(&no_debian).unwrap_err().to_string().contains("not a Debian kernel"));
        assert!(kernel_id(b"nothing").is_err());
    }

    #[test]
    fn reads_a_module_vermagic() {
        let ko =
            b"\x7fELF....\0license=GPL\0vermagic=6.12.118+deb12-arm64 SMP mod_unload modversions aarch64\0name=x\0";
        assert_eq!(module_vermagic(ko).unwrap(), "6.12.118+deb12-arm64 SMP mod_unload modversions aarch64");
        assert_eq!(module_vermagic(b"no such thing"), None);
    }

    #[test]
    fn the_source_hash_follows_names_and_bytes() {
        let a = vec![("a.c".to_string(), b"x".to_vec()), ("b.h".to_string(), b"y".to_vec())];
        let b = vec![("a.c".to_string(), b"x".to_vec()), ("b.h".to_string(), b"z".to_vec())];
        let c = vec![("a.c".to_string(), b"xy".to_vec()), ("b.h".to_string(), Vec::new())];
        let h = source_hash(&a);
        assert_eq!(h.len(), 16);
        assert_ne!(h, source_hash(&b));
        assert_ne!(h, source_hash(&c));
        assert_eq!(h, source_hash(&a.clone()));
        // The real sources: a Kbuild and the driver.
        let real = sources().unwrap();
        assert!(real.iter().any(|(n, _)| n == "Kbuild") && real.iter().any(|(n, _)| n.ends_with(".c")));
    }
}
