//! The workspace's packages as the xtask builds and tests them: the one
//! place to edit when a crate is added, moved or split.

/// Built for the hyp's target (`paths::HYP_TARGET`): cargo arguments.
pub const HYP: &[&str] = &["-p", "hyp", "--bin", "hyp"];

/// Built for the payload target (`paths::PAYLOAD_TARGET`): the host shim
/// and the guest payloads; cargo arguments.
pub const PAYLOADS: &[&str] = &["-p", "host-shim", "-p", "guest-test"];

/// Tested on the host by `cargo xtask test` (`cargo test -p NAME ...
/// --release`): the arch-independent core, the device models every VMM
/// shares, the Linux host's VMM (its ABI against the driver's header) and
/// the xtask itself.
pub const HOST_TESTED: &[&str] = &["hyp", "hyp-core", "hyp-abi", "vmm-devices", "pkvm-vmm", "xtask"];

/// What `cargo xtask test` prints before the host tests.
pub const HOST_TESTED_ABOUT: &str = "arch-independent core, the device models of vmm-devices, pkvm-vmm, xtask";
