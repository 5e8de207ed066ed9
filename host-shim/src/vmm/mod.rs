//! The host's VMM: loads a guest (ELF or arm64 Image, and its DTB) into
//! host memory, donates it, runs its vCPUs and serves its exits with the
//! shared device models of `vmm-devices` (GIC distributor and
//! redistributors, PL011, interrupt test device, virtio-mmio), which reach
//! the hyp through this module's seams. One file per job, each importing
//! only those listed after it:
//!
//! - `vcpus.rs`: one host CPU per vCPU;
//! - `exits.rs`: what each exit of VCPU_RUN means, and the vCPU scheduler
//!   of one host CPU (one guest, or several at once);
//! - `services.rs`: the host services a guest calls (`hyp_abi::services`),
//!   with the hooks scenarios register;
//! - `guest.rs`: a guest's state, loading and teardown;
//! - `pinned_mem.rs`, `irq_control.rs`: the device models' seams over the
//!   hyp's host ABI (PAGE_STATE + PIN/UNPIN; VCPU_IRQ);
//! - `profile.rs`: a run's exits counted with the PMU (the bench).

mod exits;
mod guest;
mod irq_control;
mod pinned_mem;
pub mod profile;
pub mod services;
pub mod vcpus;

pub use exits::run_together;
pub use guest::{Donation, Guest, LoadError};
pub use vmm_devices::platform::{GUEST_RAM, GUEST_UART};
