//! Split virtqueues (virtio 1.x section 2.7): the descriptor table, the
//! available ring the driver fills and the used ring the device fills, all
//! in guest memory and read only through [`GuestMem`]. Every field is read
//! once into a local and checked there (the guest may change its memory
//! at any time). Indirect descriptors are not offered (VIRTIO_F_INDIRECT_DESC
//! clear): a descriptor with the INDIRECT flag breaks the ring.

use alloc::vec::Vec;

use crate::mem::{self, GuestMem, MemError};

/// QueueNumMax of every queue.
pub const MAX_SIZE: u16 = 128;
/// Descriptor flags (virtq_desc.flags).
pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;
/// virtq_avail.flags: the driver wants no used-buffer notification.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// What makes a queue unusable: the device then needs a reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The descriptor table, available or used ring is (partly) in memory
    /// the guest has not shared with the host.
    Mem(MemError),
    /// The available index moved by more than the queue size.
    AvailIdx(u16),
    /// A head or `next` index at or beyond the queue size.
    Index(u16),
    /// A chain longer than the queue (a loop).
    Loop,
    /// An indirect descriptor (not offered).
    Indirect,
}

impl From<MemError> for RingError {
    fn from(e: MemError) -> RingError {
        RingError::Mem(e)
    }
}

/// One buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    pub addr: u64,
    pub len: u32,
    /// Device-writable.
    pub write: bool,
}

/// A descriptor chain taken from the available ring.
#[derive(Debug)]
pub struct Chain {
    pub head: u16,
    pub segs: Vec<Seg>,
}

impl Chain {
    /// The device-readable and the device-writable buffers, or None if a
    /// readable one follows a writable one (section 2.7.4.2).
    pub fn split(&self) -> Option<(&[Seg], &[Seg])> {
        let n = self.segs.iter().position(|s| s.write).unwrap_or(self.segs.len());
        let (r, w) = self.segs.split_at(n);
        w.iter().all(|s| s.write).then_some((r, w))
    }
}

/// Total length of `segs`.
pub fn total(segs: &[Seg]) -> u64 {
    segs.iter().map(|s| s.len as u64).sum()
}

/// The pieces (guest address, length) of bytes `[off, off + len)` of the
/// stream `segs` form, or None if the stream is shorter.
fn pieces(segs: &[Seg], mut off: u64, mut len: u64) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for s in segs {
        if len == 0 {
            break;
        }
        let sl = s.len as u64;
        if off >= sl {
            off -= sl;
            continue;
        }
        let n = (sl - off).min(len);
        out.push((s.addr.checked_add(off)?, n));
        len -= n;
        off = 0;
    }
    (len == 0).then_some(out)
}

/// The guest address of byte `off` of the stream.
pub fn stream_at(segs: &[Seg], off: u64) -> Option<u64> {
    pieces(segs, off, 1).map(|p| p[0].0)
}

/// Checks (and keeps usable for the session) every page of bytes
/// `[off, off + len)` of the stream. A stream too short is OutOfRam at 0.
pub fn stream_check(m: &mut dyn GuestMem, segs: &[Seg], off: u64, len: u64) -> Result<(), MemError> {
    for (a, n) in pieces(segs, off, len).ok_or(MemError::OutOfRam(0))? {
        m.check(a, n)?;
    }
    Ok(())
}

/// Reads `buf.len()` bytes from offset `off` of the stream.
pub fn stream_read(m: &mut dyn GuestMem, segs: &[Seg], off: u64, buf: &mut [u8]) -> Result<(), MemError> {
    let mut at = 0;
    for (a, n) in pieces(segs, off, buf.len() as u64).ok_or(MemError::OutOfRam(0))? {
        m.read(a, &mut buf[at..at + n as usize])?;
        at += n as usize;
    }
    Ok(())
}

/// Writes `data` at offset `off` of the stream.
pub fn stream_write(m: &mut dyn GuestMem, segs: &[Seg], off: u64, data: &[u8]) -> Result<(), MemError> {
    let mut at = 0;
    for (a, n) in pieces(segs, off, data.len() as u64).ok_or(MemError::OutOfRam(0))? {
        m.write(a, &data[at..at + n as usize])?;
        at += n as usize;
    }
    Ok(())
}

/// One queue's registers and the device's place in its rings.
#[derive(Clone, Debug)]
pub struct Queue {
    /// QueueNum.
    pub num: u16,
    pub ready: bool,
    /// QueueDesc, QueueDriver (available ring), QueueDevice (used ring).
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
    /// Next available-ring entry to take.
    last_avail: u16,
    /// Next used-ring entry to fill (= used.idx as the device wrote it).
    used_idx: u16,
}

impl Default for Queue {
    fn default() -> Queue {
        Queue { num: MAX_SIZE, ready: false, desc: 0, driver: 0, device: 0, last_avail: 0, used_idx: 0 }
    }
}

impl Queue {
    /// Back to the reset state (device reset).
    pub fn reset(&mut self) {
        *self = Queue::default();
    }

    /// Whether the driver's setup can go live (QueueReady = 1): a queue
    /// size that is a power of two up to QueueNumMax, the rings aligned as
    /// section 2.7 requires (16, 2, 4) and not wrapping around.
    pub fn valid(&self) -> bool {
        let n = self.num as u64;
        let sizes = [(self.desc, 16 * n, 16), (self.driver, 6 + 2 * n, 2), (self.device, 6 + 8 * n, 4)];
        self.num.is_power_of_two()
            && self.num <= MAX_SIZE
            && sizes.iter().all(|&(a, len, align)| a % align == 0 && a.checked_add(len).is_some())
    }

    /// Goes live: the device starts at entry 0 of both rings.
    pub fn start(&mut self) {
        self.ready = true;
        self.last_avail = 0;
        self.used_idx = 0;
    }

    /// How many chains the driver made available since the last one taken
    /// (reads avail.idx once).
    pub fn pending(&self, m: &mut dyn GuestMem) -> Result<u16, RingError> {
        let idx = mem::read_u16(m, self.driver + 2)?;
        // The entries it published are visible once its index is.
        m.fence();
        let n = idx.wrapping_sub(self.last_avail);
        if n > self.num {
            return Err(RingError::AvailIdx(idx));
        }
        Ok(n)
    }

    /// Takes the next available chain (the caller knows one is pending).
    pub fn pop(&mut self, m: &mut dyn GuestMem) -> Result<Chain, RingError> {
        let slot = (self.last_avail % self.num) as u64;
        let head = mem::read_u16(m, self.driver + 4 + 2 * slot)?;
        self.last_avail = self.last_avail.wrapping_add(1);
        if head >= self.num {
            return Err(RingError::Index(head));
        }
        let mut segs = Vec::new();
        let mut i = head;
        loop {
            if segs.len() >= self.num as usize {
                return Err(RingError::Loop);
            }
            let mut d = [0u8; 16];
            m.read(self.desc + 16 * i as u64, &mut d)?;
            let addr = u64::from_le_bytes(d[0..8].try_into().unwrap());
            let len = u32::from_le_bytes(d[8..12].try_into().unwrap());
            let flags = u16::from_le_bytes([d[12], d[13]]);
            let next = u16::from_le_bytes([d[14], d[15]]);
            if flags & DESC_F_INDIRECT != 0 {
                return Err(RingError::Indirect);
            }
            segs.push(Seg { addr, len, write: flags & DESC_F_WRITE != 0 });
            if flags & DESC_F_NEXT == 0 {
                break;
            }
            if next >= self.num {
                return Err(RingError::Index(next));
            }
            i = next;
        }
        Ok(Chain { head, segs })
    }

    /// Checks that the next used element and the used index can be
    /// written: done before a chain is served, so that a request is never
    /// carried out (a disk written) when it cannot be returned.
    pub fn check_used(&self, m: &mut dyn GuestMem) -> Result<(), RingError> {
        let slot = (self.used_idx % self.num) as u64;
        m.check(self.device + 2, 2)?;
        Ok(m.check(self.device + 4 + 8 * slot, 8)?)
    }

    /// Returns chain `head` to the driver with `len` bytes written: the
    /// used element first, then (after a barrier) the used index.
    pub fn push_used(&mut self, m: &mut dyn GuestMem, head: u16, len: u32) -> Result<(), RingError> {
        let slot = (self.used_idx % self.num) as u64;
        let mut e = [0u8; 8];
        e[0..4].copy_from_slice(&(head as u32).to_le_bytes());
        e[4..8].copy_from_slice(&len.to_le_bytes());
        self.check_used(m)?;
        m.write(self.device + 4 + 8 * slot, &e)?;
        m.fence();
        self.used_idx = self.used_idx.wrapping_add(1);
        mem::write_u16(m, self.device + 2, self.used_idx)?;
        m.fence();
        Ok(())
    }

    /// Does the driver want a used-buffer notification (avail.flags)?
    pub fn wants_interrupt(&self, m: &mut dyn GuestMem) -> Result<bool, RingError> {
        Ok(mem::read_u16(m, self.driver)? & AVAIL_F_NO_INTERRUPT == 0)
    }
}
