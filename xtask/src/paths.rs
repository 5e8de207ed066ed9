//! Where things are: the workspace, cargo's target directory, and the two
//! Rust targets the aarch64 artefacts are built for.

use std::path::PathBuf;

/// The hyp's target: EL2 without FP/SIMD (lower-EL FP state then survives
/// every trap and only moves on world switches).
pub const HYP_TARGET: &str = "aarch64-unknown-none-softfloat";
/// The host shim's and the guests' target (EL1).
pub const PAYLOAD_TARGET: &str = "aarch64-unknown-none";

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the current
/// directory, as cargo takes it) or `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(d) => std::env::current_dir().map(|c| c.join(&d)).unwrap_or_else(|_| PathBuf::from(d)),
        None => workspace_root().join("target"),
    }
}

/// The directory of a payload-target artefact in a build profile.
pub fn payload_dir(release: bool) -> PathBuf {
    target_dir().join(PAYLOAD_TARGET).join(if release { "release" } else { "debug" })
}
