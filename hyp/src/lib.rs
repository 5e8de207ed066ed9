//! The hypervisor's arch-independent core, built for the host in tests and
//! for `aarch64-unknown-none` inside the EL2 binary.
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod mm;
pub mod stage1;
pub use hyp_abi as abi;
pub use hyp_abi::{esr, trace};
pub mod exception;
pub mod gicr;
pub mod handles;
pub mod hostdev;
pub mod mmio_guard;
pub mod smmu;
pub mod traps;
pub mod vgic;
