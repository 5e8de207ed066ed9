//! virtio-mmio devices (virtio 1.x). One module per job, each importing
//! only those below it:
//!
//! - `devices.rs`: a guest's set of devices (slots, address map, interrupt
//!   lines, DTB nodes);
//! - `transport.rs`: the virtio-mmio registers (version 2), feature
//!   negotiation, queue setup, status and reset, interrupt status; generic
//!   over the device;
//! - `console.rs`, `blk.rs`: the devices;
//! - `device.rs`: what a device is to the transport (`VirtioDevice`);
//! - `queue.rs`: split virtqueues (descriptor chains, available and used
//!   rings; no indirect descriptors), through `crate::mem::GuestMem` only;
//! - `stats.rs`: the per-device counters.
//!
//! Every device offers VIRTIO_F_VERSION_1 and VIRTIO_F_ACCESS_PLATFORM
//! (Linux then routes the device's DMA through the DMA API, so through a
//! `restricted-dma-pool` when the device node names one).

pub mod blk;
pub mod console;
pub mod device;
pub mod devices;
pub mod queue;
pub mod stats;
#[cfg(test)]
mod tests;
pub mod transport;

pub use blk::{Backend, Disk};
pub use device::{Out, VirtioDevice};
pub use devices::{
    intid, reserved_memory_node, Config, Devices, DmaPool, DMA_POOL_PHANDLE, FIRST_SPI, MAX_SLOTS, MMIO_BASE, MMIO_SIZE,
};
pub use stats::Stats;
