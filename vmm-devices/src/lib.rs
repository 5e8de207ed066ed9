//! The device models of the guest platform (docs/abi.md, "The guest
//! platform"), shared by every VMM of this project: the bare-metal host
//! shim (EL1, `no_std`) and the Linux userspace VMM (`std`). The crate
//! knows nothing of the host it runs in: what it needs from the host comes
//! through small seams, each a trait with a written contract:
//!
//! - [`mem::GuestMem`]: guest memory as a device may reach it during one
//!   MMIO exit (a session); [`pin::Pin`] + [`pin::PinnedMem`] build one
//!   from a host's way of pinning a page the guest shared;
//! - [`irq::IrqControl`]: the hyp's per-vCPU interrupt control
//!   (`VCPU_IRQ`), through which the GIC emulation configures, raises and
//!   reads back interrupts;
//! - [`virtio::Backend`]: the disk behind a virtio-blk (memory, a file);
//! - guest RAM for loading: a byte slice (`write`), or the writes one by
//!   one ([`loader::Piece`]s) for a host that reaches RAM through calls;
//! - text output: an `FnMut(&str)` that takes complete lines.
//!
//! Layers, each importing only the ones below it:
//!
//! ```text
//! dtb (the guest's device tree) > loader > platform (address map, MMIO dispatch)
//!   > gic, pl011, irq_test, virtio::{devices > transport, blk, console > device > queue, stats}
//!   > irq, pin > mem
//! ```
//!
//! It builds for any target (`no_std` + `alloc`, no target-specific code:
//! a `std` program uses it as it is) and is tested on the host
//! (`cargo test -p vmm-devices`) against fakes of the seams.
#![cfg_attr(not(test), no_std)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod dtb;
pub mod gic;
pub mod irq;
pub mod irq_test;
pub mod loader;
pub mod mem;
pub mod pin;
pub mod pl011;
pub mod platform;
pub mod virtio;
