//! The hypervisor's pure core: the decisions and formats the EL2 binary
//! (`hyp/src`) acts on, with no asm, no MMIO, no system registers and no
//! statics. `no_std` + `alloc`; built for the host in tests and for
//! `aarch64-unknown-none` inside the EL2 binary, which imports this crate
//! (never the reverse). It imports `hyp-abi` only.
//!
//! - [`mm`]: memory: stage-2 descriptors, the walker, two-phase range
//!   updates, page ownership and its transitions, host pins, the invariant
//!   checker, the hyp's own EL2 stage-1 plan, physical regions.
//! - [`emul`]: what a trapped access means: exception entry rules and
//!   fault decoding, trapped system registers, the vGIC's list registers,
//!   the host's GIC redistributor accesses.
//! - [`vm`]: guest bookkeeping: VM handles, MMIO-guard granules.
//! - [`smmu_format`]: SMMUv3 stream table entries, commands, event records
//!   and queue arithmetic.
//! - [`ticket`]: the FIFO spin lock the hyp's host lock is.
#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod cpu_map;
pub mod emul;
pub mod mm;
pub mod pa_range;
pub mod smmu_format;
pub mod ticket;
pub mod vm;
