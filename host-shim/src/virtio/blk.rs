//! virtio-blk (device ID 2, section 5.2) over a byte buffer the VMM gives
//! (512-byte sectors; a partial last sector is not part of the disk).
//! Requests: VIRTIO_BLK_T_IN, T_OUT (kept in the VMM's buffer; refused
//! with IOERR on a read-only disk, which offers VIRTIO_BLK_F_RO) and
//! T_GET_ID; any other type is UNSUPP. Configuration: the capacity in
//! sectors; no other feature (no SEG_MAX, SIZE_MAX, FLUSH, ...).
//!
//! A request is checked whole before anything is copied: header, lengths,
//! sector range, then every page it touches. The status byte (the last
//! device-writable byte) must be in a shared page: if it is not, the chain
//! goes back to the used ring with length 0 and nothing written. Any other
//! page not shared fails the request with IOERR, the disk and the guest's
//! buffers untouched.

use alloc::vec::Vec;

use super::mem::GuestMem;
use super::queue::{self, Chain};
use super::transport::Stats;

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

/// The disk's bytes: the VMM's, never guest memory.
pub enum Disk {
    /// E.g. a disk image in the host's initrd (the Linux guest's).
    #[cfg_attr(target_os = "none", allow(dead_code))]
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
}

pub struct Blk {
    disk: Disk,
}

impl Blk {
    pub fn new(disk: Disk) -> Blk {
        Blk { disk }
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.disk.bytes().len() as u64 / SECTOR
    }

    pub fn read_only(&self) -> bool {
        matches!(self.disk, Disk::ReadOnly(_))
    }

    pub fn features(&self) -> u64 {
        if self.read_only() {
            F_RO
        } else {
            0
        }
    }

    /// struct virtio_blk_config: capacity (le64), the rest 0.
    pub fn config(&self) -> Vec<u8> {
        let mut c = alloc::vec![0u8; 60];
        c[..8].copy_from_slice(&self.capacity().to_le_bytes());
        c
    }

    /// The byte range of the disk `len` bytes from `sector` covers, if it
    /// is whole sectors inside the disk and not over [`MAX_DATA`].
    fn range(&self, sector: u64, len: u64) -> Option<core::ops::Range<usize>> {
        let start = sector.checked_mul(SECTOR)?;
        let end = start.checked_add(len)?;
        (len.is_multiple_of(SECTOR) && len <= MAX_DATA && end <= self.capacity() * SECTOR)
            .then_some(start as usize..end as usize)
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
        let (status, written) = self.serve(r, w, rlen, data_w, m, st);
        // Checked above: the write cannot fail.
        if m.write(status_at, &[status]).is_err() {
            st.mem_errors += 1;
            return 0;
        }
        written as u32 + 1
    }

    /// (status, data bytes written into the chain).
    fn serve(
        &mut self,
        r: &[queue::Seg],
        w: &[queue::Seg],
        rlen: u64,
        data_w: u64,
        m: &mut dyn GuestMem,
        st: &mut Stats,
    ) -> (u8, u64) {
        if rlen < HEADER {
            st.bad_requests += 1;
            return (S_IOERR, 0);
        }
        let mut h = [0u8; HEADER as usize];
        if queue::stream_check(m, r, 0, HEADER).and_then(|_| queue::stream_read(m, r, 0, &mut h)).is_err() {
            st.mem_errors += 1;
            return (S_IOERR, 0);
        }
        let kind = u32::from_le_bytes(h[0..4].try_into().unwrap());
        let sector = u64::from_le_bytes(h[8..16].try_into().unwrap());
        match kind {
            T_IN => {
                let Some(range) = self.range(sector, data_w).filter(|_| rlen == HEADER) else {
                    st.bad_requests += 1;
                    return (S_IOERR, 0);
                };
                if queue::stream_check(m, w, 0, data_w).is_err() {
                    st.mem_errors += 1;
                    return (S_IOERR, 0);
                }
                match queue::stream_write(m, w, 0, &self.disk.bytes()[range]) {
                    Ok(()) => (S_OK, data_w),
                    Err(_) => {
                        st.mem_errors += 1;
                        (S_IOERR, 0)
                    }
                }
            }
            T_OUT => {
                let data = rlen - HEADER;
                let range = self.range(sector, data).filter(|_| data_w == 0);
                let (Some(range), Disk::Writable(disk)) = (range, &mut self.disk) else {
                    st.bad_requests += 1;
                    return (S_IOERR, 0);
                };
                if queue::stream_check(m, r, HEADER, data).is_err() {
                    st.mem_errors += 1;
                    return (S_IOERR, 0);
                }
                match queue::stream_read(m, r, HEADER, &mut disk[range]) {
                    Ok(()) => (S_OK, 0),
                    Err(_) => {
                        st.mem_errors += 1;
                        (S_IOERR, 0)
                    }
                }
            }
            T_GET_ID => {
                let mut id = [0u8; ID_LEN];
                id[..ID.len()].copy_from_slice(ID);
                let n = data_w.min(ID_LEN as u64);
                match queue::stream_check(m, w, 0, n).and_then(|_| queue::stream_write(m, w, 0, &id[..n as usize])) {
                    Ok(()) => (S_OK, n),
                    Err(_) => {
                        st.mem_errors += 1;
                        (S_IOERR, 0)
                    }
                }
            }
            _ => {
                st.bad_requests += 1;
                (S_UNSUPP, 0)
            }
        }
    }
}
