//! What the seams let a VMM add without touching the transport or the
//! device models: a device of its own, a disk backend of its own.

use std::boxed::Box;
use std::vec::Vec;

use super::super::blk::{self, Backend, IoError};
use super::super::device::{Out, VirtioDevice};
use super::super::queue::{Chain, DESC_F_NEXT, DESC_F_WRITE};
use super::super::transport::reg;
use super::super::{Devices, Stats};
use super::{Rig, BUF, RAM, RING};
use crate::mem::fake::FakeMem;
use crate::mem::GuestMem;

/// A device the transport has never heard of: it counts the bytes of
/// each chain of its one queue and writes their number back.
struct Counter;

impl VirtioDevice for Counter {
    fn device_id(&self) -> u32 {
        42
    }
    fn name(&self) -> &'static str {
        "counter"
    }
    fn features(&self) -> u64 {
        1 << 3
    }
    fn num_queues(&self) -> usize {
        1
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::super::device::read_config_bytes(b"cfg!", offset, data)
    }
    fn serve(&mut self, _q: usize, chain: &Chain, m: &mut dyn GuestMem, st: &mut Stats, _out: Out) -> u32 {
        let Some((r, w)) = chain.split().filter(|(_, w)| !w.is_empty()) else {
            st.bad_requests += 1;
            return 0;
        };
        let n = super::super::queue::total(r) as u8;
        if m.write(w[0].addr, &[n]).is_err() {
            st.mem_errors += 1;
            return 0;
        }
        1
    }
}

#[test]
fn a_new_device_needs_no_transport_change() {
    let mut devs = Devices::empty(None);
    assert_eq!(devs.push(Box::new(Counter)), Some(0));
    let mut r = Rig { m: FakeMem::new(RAM, 0x10000), devs, slot: 0, avail_idx: 0, lines: Vec::new() };
    r.m.share(RING, 0x7000);
    assert_eq!(r.rd(reg::DEVICE_ID), 42);
    assert_eq!(r.rd(reg::DEVICE_FEATURES), 1 << 3);
    assert_eq!(r.access(reg::CONFIG + 1, false, 4, 0), u32::from_le_bytes(*b"fg!\0") as u64);
    r.init(0);
    r.desc(0, BUF, 10, DESC_F_NEXT, 1);
    r.desc(1, BUF + 0x100, 1, DESC_F_WRITE, 0);
    r.kick(0, 0);
    assert_eq!((r.used(0), r.m.get(BUF + 0x100, 1)[0]), ((0, 1), 10));
    assert_eq!(r.devs.slot(0).map(|s| s.0), Some("counter"));
    // The windows and interrupts of 32 transports: no more.
    let mut full = Devices::empty(None);
    let slots: Vec<_> = (0..super::super::MAX_SLOTS + 1).map(|_| full.push(Box::new(Counter))).collect();
    assert_eq!((slots[31], slots[32]), (Some(31), None));
}

/// A disk whose reads or writes fail from a byte offset on.
struct Failing {
    size: u64,
    fail_from: u64,
}

impl Backend for Failing {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&mut self, offset: u64, data: &mut [u8]) -> Result<(), IoError> {
        if offset + data.len() as u64 > self.fail_from {
            return Err(IoError);
        }
        data.fill(0x5a);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        if offset + data.len() as u64 > self.fail_from {
            return Err(IoError);
        }
        Ok(())
    }
}

#[test]
fn backend_errors_are_io_errors() {
    let mut devs = Devices::empty(None);
    devs.push(Box::new(blk::Blk::new(Failing { size: 8 * 512, fail_from: 2 * 512 }))).unwrap();
    let mut r = Rig { m: FakeMem::new(RAM, 0x10000), devs, slot: 0, avail_idx: 0, lines: Vec::new() };
    r.m.share(RING, 0x7000);
    r.init(0);
    // Sectors 0-1 read; 1-2 run into the failing part.
    r.blk_req(blk::T_IN, 0, BUF + 0x1000, 1024, BUF + 0x800);
    assert_eq!((r.used(0), r.m.get(BUF + 0x800, 1)[0]), ((0, 1025), blk::S_OK));
    assert_eq!(r.m.get(BUF + 0x1000, 1024), &[0x5a; 1024][..]);
    r.blk_req(blk::T_IN, 1, BUF + 0x1000, 1024, BUF + 0x800);
    assert_eq!((r.used(1), r.m.get(BUF + 0x800, 1)[0]), ((0, 1), blk::S_IOERR));
    r.blk_req(blk::T_OUT, 3, BUF + 0x3000, 512, BUF + 0x800);
    assert_eq!(r.m.get(BUF + 0x800, 1), [blk::S_IOERR]);
    r.blk_req(blk::T_OUT, 1, BUF + 0x3000, 512, BUF + 0x800);
    assert_eq!(r.m.get(BUF + 0x800, 1), [blk::S_OK]);
    assert_eq!(r.stats(), Stats { requests: 4, backend_errors: 2, ..Default::default() });
}
