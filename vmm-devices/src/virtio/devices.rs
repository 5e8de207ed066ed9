//! A guest's virtio-mmio devices, laid out as on QEMU `virt`: device slot
//! k at IPA 0x0a00_0000 + k * 0x200 (0x200 bytes), SPI 16 + k (INTID
//! 48 + k), a level-sensitive line that is high while the device's
//! InterruptStatus is not 0; and their nodes in the guest's DTB.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::blk::{Backend, Blk};
use super::console::Console;
use super::device::{Out, VirtioDevice};
use super::stats::Stats;
use super::transport::Transport;
use crate::mem::GuestMem;

/// Slot 0's registers; slot k is at `MMIO_BASE + k * MMIO_SIZE`.
pub const MMIO_BASE: u64 = 0x0a00_0000;
pub const MMIO_SIZE: u64 = 0x200;
/// Slot 0's interrupt: SPI 16 (INTID 48); slot k has SPI 16 + k.
pub const FIRST_SPI: u32 = 16;
/// At most this many slots (QEMU `virt` has 32 virtio-mmio transports).
pub const MAX_SLOTS: usize = 32;
/// The phandle of the restricted DMA pool node in the guest DTB.
pub const DMA_POOL_PHANDLE: u32 = 0x8002;

/// A `restricted-dma-pool` in guest RAM: the guest's DMA for these devices
/// bounces through it (Linux shares it page by page with MEM_SHARE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaPool {
    /// IPA and size, both page-aligned, inside guest RAM.
    pub ipa: u64,
    pub size: u64,
}

/// The usual virtio devices of a guest (see [`Devices::new`]); any other
/// device is added with [`Devices::push`].
pub struct Config {
    /// A virtio-console (slot 0).
    pub console: bool,
    /// A virtio-blk over this disk (the next slot): e.g. a
    /// [`super::Disk`] in memory, or a file in a VMM that has files.
    pub disk: Option<Box<dyn Backend>>,
    /// Every device node names this pool (`memory-region`), and the DTB
    /// gets its `/reserved-memory` node.
    pub dma_pool: Option<DmaPool>,
}

/// A guest's virtio devices, slot 0 first.
pub struct Devices {
    slots: Vec<Transport<Box<dyn VirtioDevice>>>,
    pub dma_pool: Option<DmaPool>,
}

/// The INTID of slot `k`.
pub fn intid(k: usize) -> usize {
    32 + FIRST_SPI as usize + k
}

impl Devices {
    /// The console (if asked for) in slot 0, then the disk (if given).
    pub fn new(cfg: Config) -> Devices {
        let mut d = Devices::empty(cfg.dma_pool);
        // Two devices: there is room.
        if cfg.console {
            let _ = d.push(Box::new(Console::new()));
        }
        if let Some(disk) = cfg.disk {
            let _ = d.push(Box::new(Blk::new(disk)));
        }
        d
    }

    /// No device yet; each device node will name `dma_pool` if given.
    pub fn empty(dma_pool: Option<DmaPool>) -> Devices {
        Devices { slots: Vec::new(), dma_pool }
    }

    /// Adds `dev` in the next slot; returns the slot, or None (and drops
    /// `dev`) if all [`MAX_SLOTS`] are taken.
    pub fn push(&mut self, dev: Box<dyn VirtioDevice>) -> Option<usize> {
        if self.slots.len() >= MAX_SLOTS {
            return None;
        }
        self.slots.push(Transport::new(dev));
        Some(self.slots.len() - 1)
    }

    /// Does `ipa` fall in a slot that has a device?
    pub fn claims(&self, ipa: u64) -> bool {
        ipa.checked_sub(MMIO_BASE).is_some_and(|o| o / MMIO_SIZE < self.slots.len() as u64)
    }

    /// A guest access to a device's window; None if no device is there.
    /// Console output goes to `out`, a line at a time, as it completes.
    pub fn mmio(
        &mut self,
        m: &mut dyn GuestMem,
        out: Out,
        ipa: u64,
        write: bool,
        size: u64,
        value: u64,
    ) -> Option<u64> {
        let off = ipa.checked_sub(MMIO_BASE)?;
        let t = self.slots.get_mut((off / MMIO_SIZE) as usize)?;
        Some(t.mmio(m, out, off % MMIO_SIZE, write, size, value))
    }

    /// Each device's interrupt: (INTID, line level).
    pub fn lines(&self) -> impl Iterator<Item = (usize, bool)> + '_ {
        self.slots.iter().enumerate().map(|(k, t)| (intid(k), t.line()))
    }

    /// Slot `k`: (device name, counters, device status).
    pub fn slot(&self, k: usize) -> Option<(&'static str, Stats, u32)> {
        self.slots.get(k).map(|t| (t.dev.name(), t.stats, t.status()))
    }

    /// The devices' DTB nodes and, if the devices have a pool, its
    /// `/reserved-memory` node ([`reserved_memory_node`], phandle
    /// [`DMA_POOL_PHANDLE`]) named by each device's `memory-region`. Call
    /// inside the root node, after its #address-cells/#size-cells = 2.
    pub fn dtb_nodes(&self, w: &mut vm_fdt::FdtWriter) -> Result<(), vm_fdt::Error> {
        if let Some(p) = self.dma_pool {
            reserved_memory_node(w, p, DMA_POOL_PHANDLE)?;
        }
        self.device_nodes(w, self.dma_pool.map(|_| DMA_POOL_PHANDLE))
    }

    /// The device nodes alone: `virtio_mmio@a000000` etc., compatible
    /// "virtio,mmio", reg, interrupts (SPI 16 + k, level-high),
    /// dma-coherent, and `memory-region = <pool>` if `pool` (the phandle of
    /// a `restricted-dma-pool` the caller writes itself).
    pub fn device_nodes(&self, w: &mut vm_fdt::FdtWriter, pool: Option<u32>) -> Result<(), vm_fdt::Error> {
        for k in 0..self.slots.len() {
            let base = MMIO_BASE + k as u64 * MMIO_SIZE;
            let n = w.begin_node(&alloc::format!("virtio_mmio@{base:x}"))?;
            w.property_string("compatible", "virtio,mmio")?;
            w.property_array_u64("reg", &[base, MMIO_SIZE])?;
            // SPI, number, IRQ_TYPE_LEVEL_HIGH: the line is level.
            w.property_array_u32("interrupts", &[0, FIRST_SPI + k as u32, 4])?;
            w.property_null("dma-coherent")?;
            if let Some(ph) = pool {
                w.property_u32("memory-region", ph)?;
            }
            w.end_node(n)?;
        }
        Ok(())
    }
}

/// `/reserved-memory` with one `restricted-dma@<ipa>` child (compatible
/// "restricted-dma-pool", reg, phandle). Linux's rmem_swiotlb_setup
/// refuses a pool marked `no-map`, `reusable`, `linux,cma-default` or
/// `linux,dma-default`, so it has none of them.
pub fn reserved_memory_node(w: &mut vm_fdt::FdtWriter, p: DmaPool, phandle: u32) -> Result<(), vm_fdt::Error> {
    let rm = w.begin_node("reserved-memory")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_null("ranges")?;
    let n = w.begin_node(&alloc::format!("restricted-dma@{:x}", p.ipa))?;
    w.property_string("compatible", "restricted-dma-pool")?;
    w.property_array_u64("reg", &[p.ipa, p.size])?;
    w.property_u32("phandle", phandle)?;
    w.end_node(n)?;
    w.end_node(rm)
}
