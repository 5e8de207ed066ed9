//! Finding QEMU 10.0 or newer (its `arm-smmuv3` has stage 2), and installing
//! it with apt where the one found is missing or older: on Debian 12 from
//! `bookworm-backports`, added to apt on the machine's own mirror
//! (`crate::apt`) when apt does not have that suite yet; on other
//! Debian/Ubuntu releases from their own suites. As root, or through
//! `sudo -n` without a password; otherwise it says what to install.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::apt;
use crate::sys::as_root;

/// The oldest QEMU the project runs on.
pub const QEMU_MIN: (u32, u32) = (10, 0);
/// Debian 12's suite with QEMU 10.
const BACKPORTS: &str = "bookworm-backports";
/// What to install where the QEMU found is older.
const HINT: &str = "QEMU >= 10.0 is needed (its SMMUv3 has stage 2). On Debian 12 it is in bookworm-backports: \
`cargo xtask apt-entries` prints the entry to add (on the mirror your apt uses for bookworm), then \
`sudo apt-get update && sudo apt-get install -t bookworm-backports --no-install-recommends qemu-system-arm`; \
or point PKVM_QEMU at a qemu-system-aarch64 >= 10.0";

/// The QEMU binary: `$PKVM_QEMU`, else `qemu-system-aarch64` from PATH.
pub fn qemu_binary() -> String {
    std::env::var("PKVM_QEMU").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "qemu-system-aarch64".into())
}

/// (major, minor) from `qemu-system-aarch64 --version`'s first line.
pub fn parse_qemu_version(out: &str) -> Option<(u32, u32)> {
    let rest = out.lines().next()?.split("version ").nth(1)?;
    let mut it = rest.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn qemu_version(bin: &str) -> Option<(u32, u32)> {
    let o = Command::new(bin).arg("--version").stderr(Stdio::null()).output().ok()?;
    parse_qemu_version(&String::from_utf8_lossy(&o.stdout))
}

/// The entry for QEMU 10 on this machine: on Debian 12, `bookworm-backports`
/// on the mirror of its `bookworm` entry, and whether apt has that suite
/// already (then the xtask adds nothing); None on another release.
pub fn backports_entry() -> Result<Option<(apt::Addition, bool)>> {
    if apt::os_release() != ("debian".into(), "bookworm".into()) {
        return Ok(None);
    }
    let sources = apt::Sources::read()?;
    let have = apt::has(&sources.entries, "deb", BACKPORTS);
    Ok(Some((sources.addition("bookworm", "deb", BACKPORTS, BACKPORTS)?, have)))
}

fn run_root(args: &[&str]) -> Result<()> {
    let Some(mut c) = as_root(args) else { bail!("`{}` needs root", args.join(" ")) };
    if !c.status().with_context(|| format!("running {}", args.join(" ")))?.success() {
        bail!("`{}` failed", args.join(" "));
    }
    Ok(())
}

pub fn ensure_qemu() -> Result<()> {
    if std::env::var("PKVM_QEMU").is_ok_and(|s| !s.is_empty()) {
        // A QEMU the user chose is never replaced, only checked.
        let bin = qemu_binary();
        return match qemu_version(&bin) {
            Some(v) if v >= QEMU_MIN => Ok(()),
            Some((a, b)) => bail!("PKVM_QEMU={bin} is QEMU {a}.{b}; {HINT}"),
            None => bail!("PKVM_QEMU={bin} does not run (`{bin} --version` failed)"),
        };
    }
    let found = qemu_version("qemu-system-aarch64");
    if found.is_some_and(|v| v >= QEMU_MIN) {
        return Ok(());
    }
    let what = match found {
        Some((a, b)) => format!("qemu-system-aarch64 is QEMU {a}.{b}"),
        None => "qemu-system-aarch64 not found".into(),
    };
    let debian = std::path::Path::new("/etc/debian_version").exists();
    if !debian || as_root(&["true"]).is_none() {
        bail!("{what}: {HINT}");
    }
    let install = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "--no-install-recommends"];
    let bookworm = apt::os_release() == ("debian".into(), "bookworm".into());
    if bookworm {
        eprintln!("xtask: {what}; installing QEMU >= 10 (qemu-system-arm) from {BACKPORTS} with apt-get");
        let sources = apt::Sources::read()?;
        if apt::has(&sources.entries, "deb", BACKPORTS) {
            run_root(&["apt-get", "update"])?;
        } else {
            let entry = sources
                .addition("bookworm", "deb", BACKPORTS, BACKPORTS)
                .with_context(|| format!("{what}; QEMU 10 is in {BACKPORTS}"))?;
            apt::add(&entry)?;
        }
        run_root(&[&install[..], &["-t", BACKPORTS, "qemu-system-arm"]].concat())?;
    } else {
        eprintln!("xtask: {what}; installing QEMU >= 10 (qemu-system-arm) with apt-get");
        run_root(&["apt-get", "update"])?;
        run_root(&[&install[..], &["qemu-system-arm"]].concat())?;
    }
    match qemu_version("qemu-system-aarch64") {
        Some(v) if v >= QEMU_MIN => Ok(()),
        Some((a, b)) => bail!("apt-get installed QEMU {a}.{b}: {HINT}"),
        None => bail!("qemu-system-aarch64 still not found after apt-get install: {HINT}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_versions() {
        let v = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright";
        assert_eq!(parse_qemu_version(v), Some((10, 0)));
        assert_eq!(parse_qemu_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)"), Some((7, 2)));
        assert!(parse_qemu_version("QEMU emulator version 7.2.22").unwrap() < QEMU_MIN);
        assert_eq!(parse_qemu_version("nonsense"), None);
    }

    #[test]
    fn the_hint_names_no_mirror() {
        assert!(!HINT.contains("://") && HINT.contains("cargo xtask apt-entries"), "{HINT}");
    }
}
