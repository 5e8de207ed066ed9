//! Host tests of the transport, the rings and both devices against a
//! fake guest memory with shared and private pages (`tests/extension.rs`:
//! a device and a disk backend of the tests' own).

use std::boxed::Box;
use std::string::String;
use std::vec::Vec;

use super::blk::{self, Disk};
use super::queue::{DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};
use super::transport::{reg, *};
use super::{Config, Devices, DmaPool, Stats, MMIO_BASE, MMIO_SIZE};
use crate::mem::fake::FakeMem;
use crate::mem::PAGE;

mod extension;

const RAM: u64 = 0x4000_0000;
const S_ACKNOWLEDGE: u32 = 1;
const S_DRIVER: u32 = 2;
/// Shared pages: rings at RING, buffers from BUF; PRIVATE is not shared.
const RING: u64 = RAM + 0x1000;
const BUF: u64 = RAM + 0x2000;
const PRIVATE: u64 = RAM + 0x8000;
const N: u16 = 8;
const DESC: u64 = RING;
const AVAIL: u64 = RING + 0x100;
const USED: u64 = RING + 0x200;

fn disk(sectors: u64) -> &'static mut [u8] {
    let mut d = std::vec![0u8; (sectors * 512) as usize];
    for (i, b) in d.iter_mut().enumerate() {
        *b = hyp_abi::services::virtio_disk_byte(i as u64 / 512, i as u64 % 512);
    }
    d.leak()
}

struct Rig {
    m: FakeMem,
    devs: Devices,
    /// Slot of the device under test.
    slot: u64,
    avail_idx: u16,
    /// Console lines printed.
    lines: Vec<String>,
}

impl Rig {
    fn new(cfg: Config, slot: u64) -> Rig {
        let mut m = FakeMem::new(RAM, 0x10000);
        m.share(RING, 0x7000);
        Rig { m, devs: Devices::new(cfg), slot, avail_idx: 0, lines: Vec::new() }
    }
    fn blk(sectors: u64) -> Rig {
        Rig::new(Config { console: false, disk: Some(Box::new(Disk::Writable(disk(sectors)))), dma_pool: None }, 0)
    }
    /// One access of `size` bytes at `off` of the device's window.
    fn access(&mut self, off: u64, write: bool, size: u64, v: u64) -> u64 {
        let lines = &mut self.lines;
        let ipa = MMIO_BASE + self.slot * MMIO_SIZE + off;
        let r = self.devs.mmio(&mut self.m, &mut |l| lines.push(l.into()), ipa, write, size, v).unwrap();
        self.m.end_session();
        r
    }
    fn rd(&mut self, off: u64) -> u32 {
        self.access(off, false, 4, 0) as u32
    }
    fn wr(&mut self, off: u64, v: u32) {
        self.access(off, true, 4, v as u64);
    }
    fn take_lines(&mut self) -> Vec<String> {
        core::mem::take(&mut self.lines)
    }
    fn stats(&self) -> Stats {
        self.devs.slot(self.slot as usize).unwrap().1
    }
    /// Negotiates VERSION_1 | ACCESS_PLATFORM and sets queue `q` live.
    fn init(&mut self, q: u32) {
        self.wr(reg::STATUS, 0);
        self.avail_idx = 0;
        self.wr(reg::STATUS, S_ACKNOWLEDGE | S_DRIVER);
        self.wr(reg::DRIVER_FEATURES_SEL, 1);
        self.wr(reg::DRIVER_FEATURES, 3);
        self.wr(reg::STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
        assert_ne!(self.rd(reg::STATUS) & S_FEATURES_OK, 0);
        self.setup_queue(q, DESC, AVAIL, USED);
        self.wr(reg::STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
        self.m.put(AVAIL, &[0; 4]);
        self.m.put(USED, &[0; 4]);
    }
    fn setup_queue(&mut self, q: u32, desc: u64, avail: u64, used: u64) {
        self.wr(reg::QUEUE_SEL, q);
        self.wr(reg::QUEUE_NUM, N as u32);
        self.wr(reg::QUEUE_DESC_LOW, desc as u32);
        self.wr(reg::QUEUE_DESC_HIGH, (desc >> 32) as u32);
        self.wr(reg::QUEUE_DRIVER_LOW, avail as u32);
        self.wr(reg::QUEUE_DRIVER_HIGH, 0);
        self.wr(reg::QUEUE_DEVICE_LOW, used as u32);
        self.wr(reg::QUEUE_DEVICE_HIGH, 0);
        self.wr(reg::QUEUE_READY, 1);
    }
    fn desc(&mut self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.m.put(DESC + 16 * i as u64, &d);
    }
    /// Makes `head` available and notifies queue `q`.
    fn kick(&mut self, q: u32, head: u16) {
        let slot = self.avail_idx % N;
        self.m.put(AVAIL + 4 + 2 * slot as u64, &head.to_le_bytes());
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.m.put(AVAIL + 2, &self.avail_idx.to_le_bytes());
        self.wr(reg::QUEUE_NOTIFY, q);
    }
    fn used_idx(&self) -> u16 {
        u16::from_le_bytes(self.m.get(USED + 2, 2).try_into().unwrap())
    }
    /// (id, len) of used element `i`.
    fn used(&self, i: u16) -> (u32, u32) {
        let e = self.m.get(USED + 4 + 8 * (i % N) as u64, 8);
        (u32::from_le_bytes(e[0..4].try_into().unwrap()), u32::from_le_bytes(e[4..8].try_into().unwrap()))
    }
    /// A blk request: header at BUF, data (`len` bytes at `data`,
    /// writable for IN), status at `status`.
    fn blk_req(&mut self, kind: u32, sector: u64, data: u64, len: u32, status: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.m.put(BUF, &h);
        let wflag = if kind == blk::T_OUT { 0 } else { DESC_F_WRITE };
        self.desc(0, BUF, 16, DESC_F_NEXT, 1);
        self.desc(1, data, len, wflag | DESC_F_NEXT, 2);
        self.desc(2, status, 1, DESC_F_WRITE, 0);
        self.kick(0, 0);
    }
}

#[test]
fn registers_and_features() {
    let mut r = Rig::blk(16);
    assert_eq!(r.rd(reg::MAGIC), 0x7472_6976);
    assert_eq!(r.rd(reg::VERSION), 2);
    assert_eq!(r.rd(reg::DEVICE_ID), 2);
    r.wr(reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(r.rd(reg::DEVICE_FEATURES), 3, "VERSION_1 and ACCESS_PLATFORM");
    r.wr(reg::DEVICE_FEATURES_SEL, 0);
    assert_eq!(r.rd(reg::DEVICE_FEATURES), 0, "a writable disk offers no blk feature");
    // Capacity in the configuration space, 64-bit and split reads.
    let cap = r.access(reg::CONFIG, false, 8, 0);
    assert_eq!(cap, 16);
    // FEATURES_OK without VERSION_1 does not stick.
    r.wr(reg::STATUS, S_ACKNOWLEDGE | S_DRIVER);
    r.wr(reg::STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
    assert_eq!(r.rd(reg::STATUS), S_ACKNOWLEDGE | S_DRIVER);
    // Nor does a feature not offered.
    r.wr(reg::DRIVER_FEATURES_SEL, 1);
    r.wr(reg::DRIVER_FEATURES, 1 | 4);
    r.wr(reg::STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
    assert_eq!(r.rd(reg::STATUS) & S_FEATURES_OK, 0);
    // Read-only disk: VIRTIO_BLK_F_RO.
    let ro: &'static [u8] = disk(4);
    let mut r = Rig::new(Config { console: false, disk: Some(Box::new(Disk::ReadOnly(ro))), dma_pool: None }, 0);
    assert_eq!(r.rd(reg::DEVICE_FEATURES), 1 << 5);
}

#[test]
fn read_write_and_get_id() {
    let mut r = Rig::blk(64);
    r.init(0);
    r.blk_req(blk::T_IN, 3, BUF + 0x1000, 1024, BUF + 0x800);
    assert_eq!(r.used_idx(), 1);
    assert_eq!(r.used(0), (0, 1025));
    assert_eq!(r.m.get(BUF + 0x800, 1), [blk::S_OK]);
    let want: Vec<u8> = (0..1024).map(|i| hyp_abi::services::virtio_disk_byte(3 + i / 512, i % 512)).collect();
    assert_eq!(r.m.get(BUF + 0x1000, 1024), &want[..]);
    assert_eq!(r.rd(reg::INTERRUPT_STATUS), INT_USED);
    assert!(r.devs.lines().next().unwrap().1, "the line is up");
    r.wr(reg::INTERRUPT_ACK, INT_USED);
    assert!(!r.devs.lines().next().unwrap().1, "ACK drops the line");
    // A write, then read back.
    r.m.put(BUF + 0x3000, &[0xab; 512]);
    r.blk_req(blk::T_OUT, 7, BUF + 0x3000, 512, BUF + 0x800);
    assert_eq!((r.used(1), r.m.get(BUF + 0x800, 1)[0]), ((0, 1), blk::S_OK));
    r.blk_req(blk::T_IN, 7, BUF + 0x1000, 512, BUF + 0x800);
    assert_eq!(r.m.get(BUF + 0x1000, 512), &[0xab; 512][..]);
    r.blk_req(blk::T_GET_ID, 0, BUF + 0x1000, 20, BUF + 0x800);
    assert_eq!(r.used(3), (0, 21));
    assert_eq!(&r.m.get(BUF + 0x1000, 20)[..18], b"pkvm-rs virtio-blk");
    assert_eq!(r.stats(), Stats { requests: 4, ..Default::default() });
}

#[test]
fn bad_requests_get_precise_status() {
    let mut r = Rig::blk(8);
    r.init(0);
    // Past the end, not whole sectors, unknown type.
    r.blk_req(blk::T_IN, 8, BUF + 0x1000, 512, BUF + 0x800);
    assert_eq!(r.m.get(BUF + 0x800, 1), [blk::S_IOERR]);
    r.blk_req(blk::T_IN, u64::MAX / 256, BUF + 0x1000, 512, BUF + 0x800);
    assert_eq!(r.m.get(BUF + 0x800, 1), [blk::S_IOERR]);
    r.blk_req(blk::T_IN, 0, BUF + 0x1000, 100, BUF + 0x800);
    assert_eq!(r.m.get(BUF + 0x800, 1), [blk::S_IOERR]);
    r.blk_req(0x55, 0, BUF + 0x1000, 512, BUF + 0x800);
    assert_eq!(r.m.get(BUF + 0x800, 1), [blk::S_UNSUPP]);
    // A readable buffer after a writable one: length 0, nothing written.
    r.m.put(BUF + 0x800, &[0x99]);
    r.desc(0, BUF, 16, DESC_F_NEXT, 1);
    r.desc(1, BUF + 0x800, 1, DESC_F_WRITE | DESC_F_NEXT, 2);
    r.desc(2, BUF + 0x1000, 512, 0, 0);
    r.kick(0, 0);
    assert_eq!((r.used(4), r.m.get(BUF + 0x800, 1)[0]), ((0, 0), 0x99));
    // No writable byte at all.
    r.desc(0, BUF, 16, 0, 0);
    r.kick(0, 0);
    assert_eq!(r.used(5), (0, 0));
    assert_eq!(r.stats().bad_requests, 6);
    assert_eq!(r.stats().requests, 6);
    assert_eq!(r.m.violations, 0);
    // A read-only disk refuses writes and keeps its bytes.
    let ro: &'static [u8] = disk(4);
    let mut r = Rig::new(Config { console: false, disk: Some(Box::new(Disk::ReadOnly(ro))), dma_pool: None }, 0);
    r.init(0);
    r.m.put(BUF + 0x3000, &[0xab; 512]);
    r.blk_req(blk::T_OUT, 1, BUF + 0x3000, 512, BUF + 0x800);
    assert_eq!(r.m.get(BUF + 0x800, 1), [blk::S_IOERR]);
    r.blk_req(blk::T_IN, 1, BUF + 0x1000, 512, BUF + 0x800);
    assert_eq!(r.m.get(BUF + 0x800, 1), [blk::S_OK]);
    assert_eq!(r.m.get(BUF + 0x1000, 1)[0], hyp_abi::services::virtio_disk_byte(1, 0));
}

#[test]
fn private_buffers_are_never_touched() {
    let mut r = Rig::blk(8);
    r.init(0);
    r.m.put(PRIVATE, &[0xee; 512]);
    // IN into a private page: IOERR, the page untouched.
    r.blk_req(blk::T_IN, 0, PRIVATE, 512, BUF + 0x800);
    assert_eq!((r.used(0), r.m.get(BUF + 0x800, 1)[0]), ((0, 1), blk::S_IOERR));
    assert_eq!(r.m.get(PRIVATE, 512), &[0xee; 512][..]);
    // OUT from a private page: IOERR, the disk untouched.
    r.blk_req(blk::T_OUT, 1, PRIVATE, 512, BUF + 0x800);
    assert_eq!(r.m.get(BUF + 0x800, 1), [blk::S_IOERR]);
    r.blk_req(blk::T_IN, 1, BUF + 0x1000, 512, BUF + 0x800);
    assert_eq!(r.m.get(BUF + 0x1000, 1)[0], hyp_abi::services::virtio_disk_byte(1, 0));
    // A buffer that starts shared and runs into the private page: nothing
    // of it written.
    r.m.put(PRIVATE - 0x200, &[0x11; 0x200]);
    r.m.share(PRIVATE - PAGE, PAGE);
    r.blk_req(blk::T_IN, 0, PRIVATE - 0x200, 1024, BUF + 0x800);
    assert_eq!(r.m.get(BUF + 0x800, 1), [blk::S_IOERR]);
    assert_eq!(r.m.get(PRIVATE - 0x200, 0x200), &[0x11; 0x200][..]);
    // Two data buffers, the first shared, the second private: the first
    // is not written either.
    r.m.put(BUF + 0x1000, &[0x22; 512]);
    r.desc(0, BUF, 16, DESC_F_NEXT, 1);
    r.desc(1, BUF + 0x1000, 512, DESC_F_WRITE | DESC_F_NEXT, 3);
    r.desc(3, PRIVATE, 512, DESC_F_WRITE | DESC_F_NEXT, 2);
    r.desc(2, BUF + 0x800, 1, DESC_F_WRITE, 0);
    r.kick(0, 0);
    assert_eq!(r.m.get(BUF + 0x800, 1), [blk::S_IOERR]);
    assert_eq!(r.m.get(BUF + 0x1000, 512), &[0x22; 512][..]);
    // The same for a write: the disk keeps sector 2.
    r.m.put(BUF + 0x10, &1u32.to_le_bytes());
    r.m.put(BUF + 0x18, &2u64.to_le_bytes());
    r.desc(0, BUF + 0x10, 16, DESC_F_NEXT, 1);
    r.desc(1, BUF + 0x1000, 512, DESC_F_NEXT, 3);
    r.desc(3, PRIVATE, 512, DESC_F_NEXT, 2);
    r.kick(0, 0);
    assert_eq!(r.m.get(BUF + 0x800, 1), [blk::S_IOERR]);
    r.blk_req(blk::T_IN, 2, BUF + 0x1000, 1024, BUF + 0x800);
    assert_eq!(r.m.get(BUF + 0x1000, 1)[0], hyp_abi::services::virtio_disk_byte(2, 0));
    // The status byte private: returned with length 0, nothing written.
    r.m.put(PRIVATE + 0x10, &[0x77]);
    r.blk_req(blk::T_IN, 0, BUF + 0x1000, 512, PRIVATE + 0x10);
    assert_eq!(r.used(7), (0, 0));
    assert_eq!(r.m.get(PRIVATE + 0x10, 1), [0x77]);
    // Outside guest RAM.
    r.blk_req(blk::T_IN, 0, 0x1000, 512, BUF + 0x800);
    assert_eq!(r.m.get(BUF + 0x800, 1), [blk::S_IOERR]);
    assert_eq!(r.stats().mem_errors, 7);
    assert_eq!(r.stats().requests, 9);
    assert_eq!(r.m.violations, 0);
}

#[test]
fn broken_rings_need_reset() {
    let mut r = Rig::blk(8);
    // A descriptor table in a private page.
    r.init(0);
    r.wr(reg::STATUS, 0);
    r.wr(reg::STATUS, S_ACKNOWLEDGE | S_DRIVER);
    r.wr(reg::DRIVER_FEATURES_SEL, 1);
    r.wr(reg::DRIVER_FEATURES, 1);
    r.wr(reg::STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
    r.setup_queue(0, PRIVATE, AVAIL, USED);
    r.wr(reg::STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    r.m.put(AVAIL, &[0, 0, 1, 0, 0, 0]);
    r.wr(reg::QUEUE_NOTIFY, 0);
    assert_ne!(r.rd(reg::STATUS) & S_NEEDS_RESET, 0);
    assert_eq!(r.rd(reg::INTERRUPT_STATUS), INT_CONFIG);
    assert_eq!(r.rd(reg::QUEUE_READY), 0);
    assert_eq!(r.used_idx(), 0);
    // Further notifications are refused until the reset.
    r.wr(reg::QUEUE_NOTIFY, 0);
    assert_eq!(r.stats().ring_errors, 1);
    assert_eq!(r.stats().bad_accesses, 1);
    r.wr(reg::STATUS, 0);
    assert_eq!((r.rd(reg::STATUS), r.rd(reg::INTERRUPT_STATUS)), (0, 0));
    // A loop: 0 -> 1 -> 0.
    r.init(0);
    r.desc(0, BUF, 16, DESC_F_NEXT, 1);
    r.desc(1, BUF, 16, DESC_F_NEXT, 0);
    r.kick(0, 0);
    assert_ne!(r.rd(reg::STATUS) & S_NEEDS_RESET, 0);
    // A head out of range, a next out of range, an indirect descriptor,
    // an available index too far ahead.
    for case in 0..4 {
        r.init(0);
        match case {
            0 => r.kick(0, N),
            1 => {
                r.desc(0, BUF, 16, DESC_F_NEXT, N + 3);
                r.kick(0, 0);
            }
            2 => {
                r.desc(0, BUF, 16, DESC_F_INDIRECT, 0);
                r.kick(0, 0);
            }
            _ => {
                r.m.put(AVAIL + 2, &(N + 1).to_le_bytes());
                r.wr(reg::QUEUE_NOTIFY, 0);
            }
        }
        assert_ne!(r.rd(reg::STATUS) & S_NEEDS_RESET, 0, "case {case}");
        assert_eq!(r.used_idx(), 0, "case {case}");
    }
    assert_eq!(r.stats().ring_errors, 6);
    // The used ring in a private page: the request is not carried out.
    r.wr(reg::STATUS, 0);
    r.wr(reg::STATUS, S_ACKNOWLEDGE | S_DRIVER);
    r.wr(reg::DRIVER_FEATURES_SEL, 1);
    r.wr(reg::DRIVER_FEATURES, 1);
    r.wr(reg::STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
    r.setup_queue(0, DESC, AVAIL, PRIVATE);
    r.wr(reg::STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    r.m.put(AVAIL, &[0; 4]);
    r.avail_idx = 0;
    r.m.put(BUF + 0x800, &[0x99]);
    r.m.put(BUF + 0x3000, &[0x42; 512]);
    r.blk_req(blk::T_OUT, 0, BUF + 0x3000, 512, BUF + 0x800);
    assert_ne!(r.rd(reg::STATUS) & S_NEEDS_RESET, 0);
    assert_eq!(r.m.get(BUF + 0x800, 1), [0x99], "no status written");
    assert_eq!(r.stats().ring_errors, 7);
    // After a reset the device works again; the refused write never
    // reached the disk.
    r.init(0);
    r.blk_req(blk::T_IN, 0, BUF + 0x1000, 512, BUF + 0x800);
    assert_eq!(r.m.get(BUF + 0x800, 1), [blk::S_OK]);
    assert_eq!(r.m.get(BUF + 0x1000, 1)[0], hyp_abi::services::virtio_disk_byte(0, 0));
    assert_eq!(r.m.violations, 0);
}

#[test]
fn hostile_register_accesses() {
    let mut r = Rig::blk(8);
    // Out-of-range QueueSel: QueueNumMax 0, setup refused.
    r.wr(reg::QUEUE_SEL, 1);
    assert_eq!(r.rd(reg::QUEUE_NUM_MAX), 0);
    r.wr(reg::QUEUE_NUM, 8);
    r.wr(reg::QUEUE_READY, 1);
    assert_eq!(r.rd(reg::QUEUE_READY), 0);
    assert_eq!(r.stats().bad_accesses, 2);
    // Notify before DRIVER_OK, of a queue not ready, of no queue.
    r.wr(reg::QUEUE_NOTIFY, 0);
    r.init(0);
    r.wr(reg::QUEUE_NOTIFY, 5);
    r.wr(reg::QUEUE_SEL, 0);
    r.wr(reg::QUEUE_NUM, 4);
    assert_eq!(r.stats().bad_accesses, 5, "setup of a live queue is refused");
    // A size that is not a power of two does not go live.
    r.wr(reg::QUEUE_READY, 0);
    r.wr(reg::QUEUE_NUM, 6);
    r.wr(reg::QUEUE_READY, 1);
    assert_eq!(r.rd(reg::QUEUE_READY), 0);
    // Wrong access size, writes to read-only registers and config.
    r.access(reg::MAGIC, false, 1, 0);
    r.wr(reg::MAGIC, 1);
    r.access(reg::CONFIG, true, 4, 1);
    assert_eq!(r.stats().bad_accesses, 9);
    assert_eq!(r.stats().requests, 0);
}

#[test]
fn console_lines_and_receive_queue() {
    let cfg = Config { console: true, disk: Some(Box::new(Disk::Writable(disk(1)))), dma_pool: None };
    let mut r = Rig::new(cfg, 0);
    assert_eq!(r.rd(reg::DEVICE_ID), 3);
    r.init(1);
    r.m.put(BUF, b"hello ");
    r.m.put(BUF + 0x100, b"world\r\nsecond");
    r.desc(0, BUF, 6, DESC_F_NEXT, 1);
    r.desc(1, BUF + 0x100, 13, 0, 0);
    r.kick(1, 0);
    assert_eq!(r.used(0), (0, 0));
    assert_eq!(r.take_lines(), ["hello world"]);
    // A private buffer prints nothing.
    r.m.put(PRIVATE, b"secret\n");
    r.desc(0, PRIVATE, 7, 0, 0);
    r.kick(1, 0);
    assert_eq!(r.used_idx(), 2);
    assert!(r.take_lines().is_empty());
    assert_eq!(r.stats().mem_errors, 1);
    // A long line is cut at MAX_LINE; an oversized chain is refused.
    r.m.put(BUF + 0x1000, &[b'x'; 2100]);
    r.desc(0, BUF + 0x1000, 2100, 0, 0);
    r.kick(1, 0);
    let long = r.take_lines();
    assert_eq!(long.len(), 2);
    assert_eq!((long[0].as_str(), long[1].len()), (std::format!("second{}", "x".repeat(1018)).as_str(), 1024));
    r.desc(0, BUF, 64 * 1024 + 1, 0, 0);
    r.kick(1, 0);
    assert_eq!(r.stats().bad_requests, 1);
    // The reset prints the partial line.
    r.wr(reg::STATUS, 0);
    assert_eq!(r.take_lines(), ["x".repeat(2100 - 1018 - 1024)]);
    // The receive queue keeps its buffers.
    r.init(0);
    r.desc(0, BUF, 64, DESC_F_WRITE, 0);
    r.kick(0, 0);
    assert_eq!(r.used_idx(), 0);
    // The blk device sits in slot 1 with INTID 49.
    let lines: Vec<(usize, bool)> = r.devs.lines().collect();
    assert_eq!(lines.iter().map(|l| l.0).collect::<Vec<_>>(), [48, 49]);
    assert!(r.devs.claims(MMIO_BASE + 0x200) && !r.devs.claims(MMIO_BASE + 0x400));
}

#[test]
fn dtb_nodes() {
    let devs = Devices::new(Config {
        console: true,
        disk: Some(Box::new(Disk::Writable(disk(1)))),
        dma_pool: Some(DmaPool { ipa: 0x4300_0000, size: 0x10000 }),
    });
    let mut w = vm_fdt::FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.property_u32("#size-cells", 2).unwrap();
    devs.dtb_nodes(&mut w).unwrap();
    w.end_node(root).unwrap();
    let blob = w.finish().unwrap();
    let fdt = fdt::Fdt::new(&blob).unwrap();
    let pool = fdt.find_node("/reserved-memory/restricted-dma@43000000").unwrap();
    assert_eq!(pool.compatible().unwrap().first(), "restricted-dma-pool");
    assert!(pool.property("no-map").is_none() && pool.property("reusable").is_none());
    assert_eq!(pool.property("phandle").unwrap().as_usize(), Some(0x8002));
    let r = pool.reg().unwrap().next().unwrap();
    assert_eq!((r.starting_address as u64, r.size), (0x4300_0000, Some(0x10000)));
    for (k, name) in ["/virtio_mmio@a000000", "/virtio_mmio@a000200"].iter().enumerate() {
        let n = fdt.find_node(name).unwrap();
        assert_eq!(n.compatible().unwrap().first(), "virtio,mmio");
        let reg = n.reg().unwrap().next().unwrap();
        assert_eq!((reg.starting_address as u64, reg.size), (0x0a00_0000 + 0x200 * k as u64, Some(0x200)));
        let irq: Vec<u8> = n.property("interrupts").unwrap().value.to_vec();
        let cells: Vec<u32> = irq.chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect();
        assert_eq!(cells, [0, 16 + k as u32, 4]);
        assert!(n.property("dma-coherent").is_some());
        assert_eq!(n.property("memory-region").unwrap().as_usize(), Some(0x8002));
    }
}

#[test]
fn device_nodes_alone() {
    let devs = Devices::new(Config { console: true, disk: None, dma_pool: None });
    let blob = |pool: Option<u32>, all: bool| {
        let mut w = vm_fdt::FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        if all {
            devs.dtb_nodes(&mut w).unwrap();
        } else {
            devs.device_nodes(&mut w, pool).unwrap();
        }
        w.end_node(root).unwrap();
        w.finish().unwrap()
    };
    // No pool: no memory-region, no /reserved-memory.
    let b = blob(None, true);
    let fdt = fdt::Fdt::new(&b).unwrap();
    assert!(fdt.find_node("/reserved-memory").is_none());
    let n = fdt.find_node("/virtio_mmio@a000000").unwrap();
    assert!(n.property("memory-region").is_none());
    assert!(fdt.find_node("/virtio_mmio@a000200").is_none());
    // The caller's own pool node and phandle.
    let b = blob(Some(0x1234), false);
    let fdt = fdt::Fdt::new(&b).unwrap();
    let n = fdt.find_node("/virtio_mmio@a000000").unwrap();
    assert_eq!(n.property("memory-region").unwrap().as_usize(), Some(0x1234));
}
