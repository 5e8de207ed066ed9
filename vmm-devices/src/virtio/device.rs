//! What a virtio device is to the transport ([`VirtioDevice`]): the
//! transport owns the registers, feature negotiation, the queues and the
//! interrupt status, and hands the device each descriptor chain the driver
//! makes available. A new device implements this trait; nothing in the
//! transport names it.

use super::queue::Chain;
use super::stats::Stats;
use crate::mem::GuestMem;

/// Where a device's complete text lines go (the VMM prints them, e.g. as
/// `[vm N hvc0] ...`).
pub type Out<'a> = &'a mut dyn FnMut(&str);

/// A virtio device behind the virtio-mmio transport.
///
/// Contract: the answers of `device_id`, `features`, `num_queues` and
/// `read_config` depend on the device's configuration only (not on what
/// the driver did); `serve` and `reset` are called only from the
/// transport, during a guest's MMIO exit, with guest memory reachable only
/// through `mem` (pages the guest shared) for the length of that exit.
pub trait VirtioDevice: Send {
    /// The device ID (virtio 1.x section 5: 2 block, 3 console, ...).
    fn device_id(&self) -> u32;
    /// A short name for the host's reports ("virtio-blk").
    fn name(&self) -> &'static str;
    /// The device-type feature bits it offers (the transport adds
    /// VIRTIO_F_VERSION_1 and VIRTIO_F_ACCESS_PLATFORM).
    fn features(&self) -> u64;
    /// How many virtqueues it has.
    fn num_queues(&self) -> usize;
    /// Fills `data` with the configuration space from byte `offset` on
    /// (bytes past its end read 0). The configuration space is read-only.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Does a notification of queue `queue` make the device take its
    /// buffers? (A receive queue with no input keeps them.)
    fn consumes(&self, queue: usize) -> bool {
        let _ = queue;
        true
    }
    /// Serves one chain taken from queue `queue`: returns the number of
    /// bytes written into its device-writable buffers (the used length).
    /// Whatever goes wrong is counted in `stats` and answered to the
    /// driver as the device type says (e.g. an I/O error status); it never
    /// breaks the ring.
    fn serve(&mut self, queue: usize, chain: &Chain, mem: &mut dyn GuestMem, stats: &mut Stats, out: Out) -> u32;
    /// The driver reset the device (Status = 0).
    fn reset(&mut self, out: Out) {
        let _ = out;
    }
}

impl<D: VirtioDevice + ?Sized> VirtioDevice for alloc::boxed::Box<D> {
    fn device_id(&self) -> u32 {
        (**self).device_id()
    }
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn features(&self) -> u64 {
        (**self).features()
    }
    fn num_queues(&self) -> usize {
        (**self).num_queues()
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        (**self).read_config(offset, data)
    }
    fn consumes(&self, queue: usize) -> bool {
        (**self).consumes(queue)
    }
    fn serve(&mut self, queue: usize, chain: &Chain, mem: &mut dyn GuestMem, stats: &mut Stats, out: Out) -> u32 {
        (**self).serve(queue, chain, mem, stats, out)
    }
    fn reset(&mut self, out: Out) {
        (**self).reset(out)
    }
}

/// Copies `config` (a device's configuration space) from `offset` into
/// `data`, zeros past its end: a helper for [`VirtioDevice::read_config`].
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = offset
            .checked_add(i as u64)
            .and_then(|o| usize::try_from(o).ok())
            .and_then(|o| config.get(o))
            .copied()
            .unwrap_or(0);
    }
}
