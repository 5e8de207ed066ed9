//! `cargo xtask build`: the hyp, the host shim and the guest payloads for
//! their aarch64 targets, and the flat Images QEMU boots.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::paths::{payload_dir, target_dir, workspace_root, HYP_TARGET, PAYLOAD_TARGET};
use crate::{image, packages, toolchain};

/// Paths of the built artefacts.
pub struct Artifacts {
    pub hyp_elf: PathBuf,
    pub hyp_image: PathBuf,
    pub shim_elf: PathBuf,
    pub shim_image: PathBuf,
    pub guest_test: PathBuf,
}

pub fn build(release: bool) -> Result<Artifacts> {
    build_with(release, None)
}

/// Builds with extra cargo features for the hyp (e.g. "notrace").
pub fn build_with(release: bool, hyp_features: Option<&str>) -> Result<Artifacts> {
    let root = workspace_root();
    toolchain::ensure_targets()?;
    for (target, pkgs) in [(HYP_TARGET, packages::HYP), (PAYLOAD_TARGET, packages::PAYLOADS)] {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(&root).env("CARGO_TARGET_DIR", target_dir());
        cmd.args(["build", "--quiet", "--target", target]).args(pkgs);
        if let (HYP_TARGET, Some(f)) = (target, hyp_features) {
            cmd.args(["--features", f]);
        }
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().context("running cargo build")?;
        if !st.success() {
            bail!("cargo build failed");
        }
    }
    let profile = if release { "release" } else { "debug" };
    let hyp_dir = target_dir().join(HYP_TARGET).join(profile);
    let dir = payload_dir(release);
    let a = Artifacts {
        hyp_elf: hyp_dir.join("hyp"),
        hyp_image: hyp_dir.join("hyp.bin"),
        shim_elf: dir.join("host-shim"),
        shim_image: dir.join("host-shim.bin"),
        guest_test: dir.join("guest-test"),
    };
    for (elf, img) in [(&a.hyp_elf, &a.hyp_image), (&a.shim_elf, &a.shim_image)] {
        let data = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
        std::fs::write(img, image::elf_to_image(&data).with_context(|| elf.display().to_string())?)?;
    }
    Ok(a)
}

/// `cargo xtask build`: prints the artefacts' paths.
pub fn build_cmd(release: bool) -> Result<i32> {
    let a = build(release)?;
    println!("hyp        {} (Image {})", a.hyp_elf.display(), a.hyp_image.display());
    println!("host-shim  {} (Image {})", a.shim_elf.display(), a.shim_image.display());
    println!("guest-test {}", a.guest_test.display());
    Ok(0)
}
