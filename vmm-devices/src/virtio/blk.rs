//! virtio-blk (device ID 2, section 5.2) over a disk the VMM gives: a
//! [`Backend`] (512-byte sectors; a partial last sector is not part of the
//! disk), e.g. a byte buffer ([`Disk`]) or, in a VMM with files, a file.
//! Requests: VIRTIO_BLK_T_IN, T_OUT (written to the backend; refused with
//! IOERR on a read-only disk, which offers VIRTIO_BLK_F_RO) and T_GET_ID;
//! any other type is UNSUPP. Configuration: the capacity in sectors; no
//! other feature (no SEG_MAX, SIZE_MAX, FLUSH, ...).
//!
//! A request is checked whole before anything is copied: header, lengths,
//! sector range, then every page it touches. The status byte (the last
//! device-writable byte) must be in a shared page: if it is not, the chain
//! goes back to the used ring with length 0 and nothing written. Any other
//! page not shared fails the request with IOERR, the disk and the guest's
//! buffers untouched.

use super::device::{read_config_bytes, Out, VirtioDevice};
use super::queue::{self, Chain, Seg};
use super::stats::Stats;
use crate::mem::GuestMem;

pub const DEVICE_ID: u32 = 2;
pub const SECTOR: u64 = 512;
/// Feature bit: the device is read-only.
pub const F_RO: u64 = 1 << 5;
/// Request types.
pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_GET_ID: u32 = 8;
/// Status values.
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;
/// The header: le32 type, le32 reserved, le64 sector.
pub const HEADER: u64 = 16;
/// T_GET_ID: the ID string (20 bytes, NUL-padded).
pub const ID_LEN: usize = 20;
pub const ID: &[u8] = b"pkvm-rs virtio-blk";
/// A request moves at most this many data bytes (more is IOERR).
pub const MAX_DATA: u64 = 1 << 20;
/// Data moves between the backend and guest memory in pieces of this
/// many bytes (a buffer on the stack).
const CHUNK: usize = 512;

/// A backend's I/O failed (the guest gets VIRTIO_BLK_S_IOERR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoError;

/// The disk behind a virtio-blk: the VMM's, never guest memory.
///
/// Contract: `size` does not change while the device exists; `read_at`
/// and `write_at` are called only for ranges inside `[0, size)` (the
/// device checks), and `write_at` never on a backend that is `read_only`.
/// A failed call may have moved part of the range (as a real disk may).
pub trait Backend: Send {
    /// The disk's size in bytes.
    fn size(&self) -> u64;
    fn read_only(&self) -> bool;
    /// Reads `data.len()` bytes from byte `offset` of the disk.
    fn read_at(&mut self, offset: u64, data: &mut [u8]) -> Result<(), IoError>;
    /// Writes `data` at byte `offset` of the disk.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), IoError>;
}

impl<B: Backend + ?Sized> Backend for alloc::boxed::Box<B> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_only(&self) -> bool {
        (**self).read_only()
    }
    fn read_at(&mut self, offset: u64, data: &mut [u8]) -> Result<(), IoError> {
        (**self).read_at(offset, data)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        (**self).write_at(offset, data)
    }
}

/// A disk in the VMM's memory.
pub enum Disk {
    /// E.g. a disk image in the host's initrd (the Linux guest's).
    ReadOnly(&'static [u8]),
    Writable(&'static mut [u8]),
}

impl Disk {
    fn bytes(&self) -> &[u8] {
        match self {
            Disk::ReadOnly(b) => b,
            Disk::Writable(b) => b,
        }
    }

    /// The bytes `[offset, offset + len)`, if the disk has them.
    fn range(&self, offset: u64, len: usize) -> Result<core::ops::Range<usize>, IoError> {
        let start = usize::try_from(offset).map_err(|_| IoError)?;
        let end = start.checked_add(len).filter(|&e| e <= self.bytes().len()).ok_or(IoError)?;
        Ok(start..end)
    }
}

impl Backend for Disk {
    fn size(&self) -> u64 {
        self.bytes().len() as u64
    }
    fn read_only(&self) -> bool {
        matches!(self, Disk::ReadOnly(_))
    }
    fn read_at(&mut self, offset: u64, data: &mut [u8]) -> Result<(), IoError> {
        let r = self.range(offset, data.len())?;
        data.copy_from_slice(&self.bytes()[r]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        let r = self.range(offset, data.len())?;
        match self {
            Disk::ReadOnly(_) => Err(IoError),
            Disk::Writable(b) => {
                b[r].copy_from_slice(data);
                Ok(())
            }
        }
    }
}

pub struct Blk {
    disk: alloc::boxed::Box<dyn Backend>,
}

/// What went wrong with a request (counted in [`Stats`]).
enum Fail {
    /// A malformed request (bad_requests).
    Bad,
    /// Guest memory not shared (mem_errors).
    Mem,
    /// The backend failed (backend_errors).
    Backend,
    /// A request type not offered (bad_requests, status UNSUPP).
    Unsupported,
}

impl Blk {
    pub fn new(disk: impl Backend + 'static) -> Blk {
        Blk { disk: alloc::boxed::Box::new(disk) }
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.disk.size() / SECTOR
    }

    pub fn read_only(&self) -> bool {
        self.disk.read_only()
    }

    /// The byte offset on the disk of `len` bytes from `sector`, if they
    /// are whole sectors inside the disk and not over [`MAX_DATA`].
    fn range(&self, sector: u64, len: u64) -> Option<u64> {
        let start = sector.checked_mul(SECTOR)?;
        let end = start.checked_add(len)?;
        (len.is_multiple_of(SECTOR) && len <= MAX_DATA && end <= self.capacity() * SECTOR).then_some(start)
    }

    /// Serves one request; returns the bytes written into the chain.
    pub fn request(&mut self, chain: &Chain, m: &mut dyn GuestMem, st: &mut Stats) -> u32 {
        let Some((r, w)) = chain.split() else {
            st.bad_requests += 1;
            return 0;
        };
        let (rlen, wlen) = (queue::total(r), queue::total(w));
        let Some(status_at) = wlen.checked_sub(1).and_then(|o| queue::stream_at(w, o)) else {
            // No status byte: nothing to say it in.
            st.bad_requests += 1;
            return 0;
        };
        if m.check(status_at, 1).is_err() {
            st.mem_errors += 1;
            return 0;
        }
        let data_w = wlen - 1;
        let (status, written) = match self.serve(r, w, rlen, data_w, m) {
            Ok(n) => (S_OK, n),
            Err(f) => {
                match f {
                    Fail::Bad | Fail::Unsupported => st.bad_requests += 1,
                    Fail::Mem => st.mem_errors += 1,
                    Fail::Backend => st.backend_errors += 1,
                }
                (if matches!(f, Fail::Unsupported) { S_UNSUPP } else { S_IOERR }, 0)
            }
        };
        // Checked above: the write cannot fail.
        if m.write(status_at, &[status]).is_err() {
            st.mem_errors += 1;
            return 0;
        }
        written as u32 + 1
    }

    /// Carries out a request whose status byte is usable; returns the data
    /// bytes written into the chain.
    fn serve(&mut self, r: &[Seg], w: &[Seg], rlen: u64, data_w: u64, m: &mut dyn GuestMem) -> Result<u64, Fail> {
        if rlen < HEADER {
            return Err(Fail::Bad);
        }
        let mut h = [0u8; HEADER as usize];
        queue::stream_check(m, r, 0, HEADER)
            .and_then(|_| queue::stream_read(m, r, 0, &mut h))
            .map_err(|_| Fail::Mem)?;
        let kind = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let mut s = [0u8; 8];
        s.copy_from_slice(&h[8..16]);
        let sector = u64::from_le_bytes(s);
        match kind {
            T_IN => {
                let at = self.range(sector, data_w).filter(|_| rlen == HEADER).ok_or(Fail::Bad)?;
                queue::stream_check(m, w, 0, data_w).map_err(|_| Fail::Mem)?;
                self.copy(data_w, |disk, off, buf| {
                    disk.read_at(at + off, buf).map_err(|_| Fail::Backend)?;
                    queue::stream_write(m, w, off, buf).map_err(|_| Fail::Mem)
                })?;
                Ok(data_w)
            }
            T_OUT => {
                let data = rlen - HEADER;
                let at = self.range(sector, data).filter(|_| data_w == 0 && !self.read_only()).ok_or(Fail::Bad)?;
                queue::stream_check(m, r, HEADER, data).map_err(|_| Fail::Mem)?;
                self.copy(data, |disk, off, buf| {
                    queue::stream_read(m, r, HEADER + off, buf).map_err(|_| Fail::Mem)?;
                    disk.write_at(at + off, buf).map_err(|_| Fail::Backend)
                })?;
                Ok(0)
            }
            T_GET_ID => {
                let mut id = [0u8; ID_LEN];
                id[..ID.len()].copy_from_slice(ID);
                let n = data_w.min(ID_LEN as u64);
                queue::stream_check(m, w, 0, n)
                    .and_then(|_| queue::stream_write(m, w, 0, &id[..n as usize]))
                    .map_err(|_| Fail::Mem)?;
                Ok(n)
            }
            _ => Err(Fail::Unsupported),
        }
    }

    /// Runs `f(disk, offset, buffer)` over `len` bytes in [`CHUNK`]-byte
    /// pieces (`offset` from the start of the data).
    fn copy(
        &mut self,
        len: u64,
        mut f: impl FnMut(&mut dyn Backend, u64, &mut [u8]) -> Result<(), Fail>,
    ) -> Result<(), Fail> {
        let mut buf = [0u8; CHUNK];
        let mut off = 0;
        while off < len {
            let n = (len - off).min(CHUNK as u64) as usize;
            f(&mut *self.disk, off, &mut buf[..n])?;
            off += n as u64;
        }
        Ok(())
    }
}

impl VirtioDevice for Blk {
    fn device_id(&self) -> u32 {
        DEVICE_ID
    }
    fn name(&self) -> &'static str {
        "virtio-blk"
    }
    fn features(&self) -> u64 {
        if self.read_only() {
            F_RO
        } else {
            0
        }
    }
    fn num_queues(&self) -> usize {
        1
    }
    /// struct virtio_blk_config: capacity (le64), the rest 0 (60 bytes).
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut c = [0u8; 60];
        c[..8].copy_from_slice(&self.capacity().to_le_bytes());
        read_config_bytes(&c, offset, data);
    }
    fn serve(&mut self, _queue: usize, chain: &Chain, mem: &mut dyn GuestMem, stats: &mut Stats, _out: Out) -> u32 {
        self.request(chain, mem, stats)
    }
}
