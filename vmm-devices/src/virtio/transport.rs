//! The virtio-mmio transport, version 2 (virtio 1.x section 4.2.2): one
//! 0x200-byte register window per device, 32-bit registers below 0x100 and
//! the device's configuration space from 0x100. A queue notification is
//! handled at once, inside the guest's MMIO exit: its chains are taken,
//! served by the device and returned to the used ring before the guest
//! runs again. The transport is generic over the device
//! ([`VirtioDevice`]): it never names one.

use alloc::vec;
use alloc::vec::Vec;

use super::device::{Out, VirtioDevice};
use super::queue::{Queue, RingError, MAX_SIZE};
use super::stats::Stats;
use crate::mem::GuestMem;

pub const MAGIC: u32 = 0x7472_6976;
pub const VERSION: u32 = 2;
/// VendorID: "PKVM" as a little-endian word.
pub const VENDOR: u32 = 0x4d56_4b50;

/// Transport feature bits every device offers.
pub const F_VERSION_1: u64 = 1 << 32;
pub const F_ACCESS_PLATFORM: u64 = 1 << 33;

/// Device status bits (section 2.1) the device acts on.
pub const S_DRIVER_OK: u32 = 4;
pub const S_FEATURES_OK: u32 = 8;
pub const S_NEEDS_RESET: u32 = 0x40;

/// InterruptStatus bits.
pub const INT_USED: u32 = 1;
pub const INT_CONFIG: u32 = 2;

/// Register offsets.
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// One device's virtio-mmio register window.
pub struct Transport<D: VirtioDevice> {
    pub dev: D,
    status: u32,
    dev_features_sel: u32,
    drv_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<Queue>,
    isr: u32,
    generation: u32,
    pub stats: Stats,
    /// The last ring error (for the host's report).
    pub last_error: Option<RingError>,
}

impl<D: VirtioDevice> Transport<D> {
    pub fn new(dev: D) -> Transport<D> {
        let n = dev.num_queues();
        Transport {
            dev,
            status: 0,
            dev_features_sel: 0,
            drv_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues: vec![Queue::default(); n],
            isr: 0,
            generation: 0,
            stats: Stats::default(),
            last_error: None,
        }
    }

    /// The level of the device's interrupt line.
    pub fn line(&self) -> bool {
        self.isr != 0
    }

    pub fn status(&self) -> u32 {
        self.status
    }

    /// Device reset (Status = 0): everything but the counters.
    fn reset(&mut self, out: Out) {
        self.status = 0;
        self.dev_features_sel = 0;
        self.drv_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.queues.iter_mut().for_each(Queue::reset);
        self.isr = 0;
        self.dev.reset(out);
    }

    fn bad(&mut self) -> u64 {
        self.stats.bad_accesses += 1;
        0
    }

    /// The selected queue, if it exists.
    fn sel(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// A write to a queue setup register: only to an existing queue that
    /// is not live.
    fn setup(&mut self, f: impl FnOnce(&mut Queue)) -> u64 {
        match self.sel() {
            Some(q) if !q.ready => {
                f(q);
                0
            }
            _ => self.bad(),
        }
    }

    /// A guest access at offset `off` of the window (`size` bytes); returns
    /// the value read (0 for writes). Console lines go to `out`.
    pub fn mmio(&mut self, m: &mut dyn GuestMem, out: Out, off: u64, write: bool, size: u64, value: u64) -> u64 {
        if off >= reg::CONFIG {
            return self.config_access(off - reg::CONFIG, write, size);
        }
        if size != 4 || !off.is_multiple_of(4) {
            return self.bad();
        }
        let v = value as u32;
        let lo = |old: u64| (old & !0xffff_ffff) | v as u64;
        let hi = |old: u64| (old & 0xffff_ffff) | ((v as u64) << 32);
        match (off, write) {
            (reg::MAGIC, false) => MAGIC as u64,
            (reg::VERSION, false) => VERSION as u64,
            (reg::DEVICE_ID, false) => self.dev.device_id() as u64,
            (reg::VENDOR_ID, false) => VENDOR as u64,
            (reg::DEVICE_FEATURES, false) => match self.dev_features_sel {
                0 => self.features() & 0xffff_ffff,
                1 => self.features() >> 32,
                _ => 0,
            },
            (reg::DEVICE_FEATURES_SEL, true) => {
                self.dev_features_sel = v;
                0
            }
            (reg::DRIVER_FEATURES, true) => {
                if self.status & S_FEATURES_OK != 0 || self.drv_features_sel > 1 {
                    return self.bad();
                }
                let shift = 32 * self.drv_features_sel;
                self.driver_features = (self.driver_features & !(0xffff_ffff << shift)) | ((v as u64) << shift);
                0
            }
            (reg::DRIVER_FEATURES_SEL, true) => {
                self.drv_features_sel = v;
                0
            }
            (reg::QUEUE_SEL, true) => {
                self.queue_sel = v;
                0
            }
            // 0: no such queue (section 4.2.2).
            (reg::QUEUE_NUM_MAX, false) => {
                if (self.queue_sel as usize) < self.queues.len() {
                    MAX_SIZE as u64
                } else {
                    0
                }
            }
            (reg::QUEUE_NUM, true) => self.setup(|q| q.num = v.min(u16::MAX as u32) as u16),
            (reg::QUEUE_READY, false) => self.sel().is_some_and(|q| q.ready) as u64,
            (reg::QUEUE_READY, true) => match self.sel() {
                None => self.bad(),
                Some(q) if v == 0 => {
                    q.ready = false;
                    0
                }
                Some(q) if !q.ready && q.valid() => {
                    q.start();
                    0
                }
                Some(_) => self.bad(),
            },
            (reg::QUEUE_NOTIFY, true) => {
                self.notify(m, out, v as usize);
                0
            }
            (reg::INTERRUPT_STATUS, false) => self.isr as u64,
            (reg::INTERRUPT_ACK, true) => {
                self.isr &= !v;
                0
            }
            (reg::STATUS, false) => self.status as u64,
            (reg::STATUS, true) => {
                self.set_status(v, out);
                0
            }
            (reg::QUEUE_DESC_LOW, true) => self.setup(|q| q.desc = lo(q.desc)),
            (reg::QUEUE_DESC_HIGH, true) => self.setup(|q| q.desc = hi(q.desc)),
            (reg::QUEUE_DRIVER_LOW, true) => self.setup(|q| q.driver = lo(q.driver)),
            (reg::QUEUE_DRIVER_HIGH, true) => self.setup(|q| q.driver = hi(q.driver)),
            (reg::QUEUE_DEVICE_LOW, true) => self.setup(|q| q.device = lo(q.device)),
            (reg::QUEUE_DEVICE_HIGH, true) => self.setup(|q| q.device = hi(q.device)),
            (reg::SHM_SEL, true) => 0,
            // No shared memory regions: length and base read all ones.
            (reg::SHM_LEN_LOW..=reg::SHM_BASE_HIGH, false) => u32::MAX as u64,
            (reg::CONFIG_GENERATION, false) => self.generation as u64,
            _ => self.bad(),
        }
    }

    /// Configuration space: reads of 1, 2, 4 or 8 bytes (little-endian;
    /// 0 past its end); it is read-only.
    fn config_access(&mut self, off: u64, write: bool, size: u64) -> u64 {
        if write || !matches!(size, 1 | 2 | 4 | 8) {
            return self.bad();
        }
        let mut b = [0u8; 8];
        self.dev.read_config(off, &mut b[..size as usize]);
        u64::from_le_bytes(b)
    }

    /// What the device offers, with the transport's own bits.
    fn features(&self) -> u64 {
        F_VERSION_1 | F_ACCESS_PLATFORM | self.dev.features()
    }

    fn set_status(&mut self, v: u32, out: Out) {
        if v == 0 {
            self.reset(out);
            return;
        }
        let mut v = (v & !S_NEEDS_RESET) | (self.status & S_NEEDS_RESET);
        // FEATURES_OK sticks only for a subset of what is offered that
        // includes VERSION_1 (this is a modern-only device).
        if v & S_FEATURES_OK != 0 && self.status & S_FEATURES_OK == 0 {
            let offered = self.features();
            if self.driver_features & !offered != 0 || self.driver_features & F_VERSION_1 == 0 {
                v &= !S_FEATURES_OK;
            }
        }
        self.status = v;
    }

    /// QueueNotify: serve every chain the driver made available.
    fn notify(&mut self, m: &mut dyn GuestMem, out: Out, q: usize) {
        let live = self.status & S_DRIVER_OK != 0 && self.status & S_NEEDS_RESET == 0;
        if !live || self.queues.get(q).is_none_or(|q| !q.ready) {
            self.bad();
            return;
        }
        if !self.dev.consumes(q) {
            return;
        }
        if let Err(e) = self.serve_queue(m, out, q) {
            self.broken(e);
        }
    }

    fn serve_queue(&mut self, m: &mut dyn GuestMem, out: Out, q: usize) -> Result<(), RingError> {
        let n = self.queues[q].pending(m)?;
        if n == 0 {
            return Ok(());
        }
        for _ in 0..n {
            self.queues[q].check_used(m)?;
            let chain = self.queues[q].pop(m)?;
            let len = self.dev.serve(q, &chain, m, &mut self.stats, out);
            self.queues[q].push_used(m, chain.head, len)?;
            self.stats.requests += 1;
        }
        if self.queues[q].wants_interrupt(m)? {
            self.isr |= INT_USED;
        }
        Ok(())
    }

    /// A broken ring: DEVICE_NEEDS_RESET, every queue stops until the
    /// driver resets the device; a configuration-change interrupt.
    fn broken(&mut self, e: RingError) {
        self.stats.ring_errors += 1;
        self.last_error = Some(e);
        self.status |= S_NEEDS_RESET;
        self.queues.iter_mut().for_each(|q| q.ready = false);
        self.isr |= INT_CONFIG;
    }
}
