//! The Rust targets the aarch64 artefacts need. rustup installs the
//! `targets` of `rust-toolchain.toml` only when it installs the toolchain
//! itself: with the toolchain already there, they may be missing, so the
//! xtask checks before every build and adds what is missing.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The `targets = [...]` of a rust-toolchain.toml.
pub fn listed_targets(toml: &str) -> Vec<String> {
    let Some(line) = toml.lines().map(str::trim).find(|l| l.starts_with("targets")) else {
        return Vec::new();
    };
    let list = line.split_once('=').map_or("", |(_, v)| v).trim().trim_start_matches('[').trim_end_matches(']');
    list.split(',').map(|t| t.trim().trim_matches('"').to_string()).filter(|t| !t.is_empty()).collect()
}

/// Makes sure the targets of the workspace's rust-toolchain.toml are
/// installed.
pub fn ensure_targets() -> Result<()> {
    let root = crate::paths::workspace_root();
    let toml = std::fs::read_to_string(root.join("rust-toolchain.toml")).context("reading rust-toolchain.toml")?;
    let added = ensure(&root, &listed_targets(&toml), None)?;
    if !added.is_empty() {
        eprintln!("xtask: added Rust target(s) {}", added.join(", "));
    }
    Ok(())
}

fn command(program: &str, path: Option<&OsString>) -> Command {
    let mut c = Command::new(program);
    if let Some(p) = path {
        c.env("PATH", p);
    }
    c
}

/// Checks `wanted` with `rustup target list --installed` (rustup found on
/// `path`, or the inherited PATH) and adds the missing ones; returns them.
/// Without rustup, checks the sysroot and says what to install.
pub fn ensure(dir: &Path, wanted: &[String], path: Option<&OsString>) -> Result<Vec<String>> {
    let out = command("rustup", path).current_dir(dir).args(["target", "list", "--installed"]).output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => bail!("`rustup target list --installed` failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
        Err(_) => return check_sysroot(dir, wanted, path).map(|()| Vec::new()),
    };
    let installed = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<String> =
        wanted.iter().filter(|t| !installed.lines().any(|l| l.trim() == t.as_str())).cloned().collect();
    if missing.is_empty() {
        return Ok(missing);
    }
    eprintln!("xtask: Rust target(s) {} missing; running rustup target add", missing.join(", "));
    let st = command("rustup", path)
        .current_dir(dir)
        .args(["target", "add"])
        .args(&missing)
        .status()
        .context("running rustup target add")?;
    if !st.success() {
        bail!("`rustup target add {}` failed", missing.join(" "));
    }
    Ok(missing)
}

/// No rustup: the standard library of each target must be in rustc's sysroot.
fn check_sysroot(dir: &Path, wanted: &[String], path: Option<&OsString>) -> Result<()> {
    let sysroot = command("rustc", path)
        .current_dir(dir)
        .args(["--print", "sysroot"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let missing: Vec<&str> = wanted
        .iter()
        .map(String::as_str)
        .filter(|t| !sysroot.as_ref().is_some_and(|s| Path::new(s).join("lib/rustlib").join(t).join("lib").is_dir()))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the Rust target(s) {} are not installed and there is no rustup to add them: install rustup \
             (its installer, or your distribution's `rustup` package) and run `rustup target add {}`, or install your distribution's Rust \
             standard library for {}",
            missing.join(", "),
            missing.join(" "),
            missing.join(" and ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const TOML: &str =
        "[toolchain]\nchannel = \"stable\"\ntargets = [\"aarch64-unknown-none\", \"aarch64-unknown-none-softfloat\"]\n";

    /// A directory holding a fake `rustup` that reports `installed` and
    /// logs its arguments to `calls`.
    fn fake_rustup(tag: &str, installed: &[&str]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-fake-rustup-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!(
            "#!/bin/sh\necho \"$@\" >> \"{}/calls\"\nif [ \"$1 $2 $3\" = \"target list --installed\" ]; then printf '{}'; fi\nexit 0\n",
            dir.display(),
            installed.iter().map(|t| format!("{t}\\n")).collect::<String>()
        );
        let p = dir.join("rustup");
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn calls(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("calls")).unwrap_or_default()
    }

    #[test]
    fn reads_the_toolchain_targets() {
        assert_eq!(listed_targets(TOML), ["aarch64-unknown-none", "aarch64-unknown-none-softfloat"]);
        let real = std::fs::read_to_string(crate::paths::workspace_root().join("rust-toolchain.toml")).unwrap();
        assert!(listed_targets(&real).contains(&crate::paths::HYP_TARGET.to_string()));
        assert!(listed_targets(&real).contains(&crate::paths::PAYLOAD_TARGET.to_string()));
    }

    #[test]
    fn missing_targets_are_added() {
        let dir = fake_rustup("missing", &["x86_64-unknown-linux-gnu", "aarch64-unknown-none"]);
        let path = OsString::from(&dir);
        let added = ensure(&dir, &listed_targets(TOML), Some(&path)).unwrap();
        assert_eq!(added, ["aarch64-unknown-none-softfloat"]);
        assert_eq!(calls(&dir), "target list --installed\ntarget add aarch64-unknown-none-softfloat\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn installed_targets_are_left_alone() {
        let dir = fake_rustup(
            "present",
            &["aarch64-unknown-none", "aarch64-unknown-none-softfloat", "x86_64-unknown-linux-gnu"],
        );
        let path = OsString::from(&dir);
        assert!(ensure(&dir, &listed_targets(TOML), Some(&path)).unwrap().is_empty());
        assert_eq!(calls(&dir), "target list --installed\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_rustup_it_says_what_to_install() {
        let dir = std::env::temp_dir().join(format!("xtask-no-rustup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = OsString::from(&dir);
        let e = ensure(&dir, &listed_targets(TOML), Some(&path)).unwrap_err().to_string();
        assert!(e.contains("rustup target add aarch64-unknown-none aarch64-unknown-none-softfloat"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
