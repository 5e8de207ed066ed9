//! `test=virtio`: a minimal virtio-mmio driver of the guest's own, for the
//! host VMM's virtio-console (slot 0) and virtio-blk (slot 1). Its rings
//! and buffers live in the restricted DMA pool its DTB names, which it
//! shares page by page with MEM_SHARE (as Linux does); then it breaks the
//! rules on purpose: buffers, status bytes and rings in private pages,
//! descriptor loops, indices out of range, registers of queues that do not
//! exist. Each must get its precise error, leave private memory untouched
//! and move the host's counters (host service HOST_VIRTIO_STATS) exactly.
//!
//! Over 600 lines: one guest program, its driver and the hostile cases that
//! break the driver's own rings on purpose sharing the same ring state.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

use el1_rt::gic;
use el1_rt::println;
use el1_rt::trap::{Frame, Sync};
use hyp_abi::services::{self, virtio_disk_byte};

use crate::abi::{call, exit_counts, share, unshare};
use crate::tests::Tally;

const RAM: u64 = 0x4000_0000;
const PAGE: u64 = 4096;
/// A page of ours that is never shared (40 MiB into RAM).
const PRIVATE: u64 = RAM + (40 << 20);
const N: u16 = 8;
const IRQ_SPX: u64 = 5;

/// Registers (virtio 1.x 4.2.2).
const MAGIC: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const DEV_FEATURES: u64 = 0x010;
const DEV_FEATURES_SEL: u64 = 0x014;
const DRV_FEATURES: u64 = 0x020;
const DRV_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const INT_STATUS: u64 = 0x060;
const INT_ACK: u64 = 0x064;
const STATUS: u64 = 0x070;
const QUEUE_DESC: u64 = 0x080;
const QUEUE_DRIVER: u64 = 0x090;
const QUEUE_DEVICE: u64 = 0x0a0;
const CONFIG: u64 = 0x100;
/// Status bits.
const ACK: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
const NEEDS_RESET: u32 = 0x40;
/// Features, high word: VERSION_1 (32), ACCESS_PLATFORM (33).
const F_HI: u32 = 3;
const DESC_NEXT: u16 = 1;
const DESC_WRITE: u16 = 2;
/// virtio-blk.
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
const SECTORS: u64 = 2048;

/// Interrupts taken per slot, and the InterruptStatus bits acknowledged.
static IRQS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static ISR_SEEN: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
static OTHER: AtomicU64 = AtomicU64::new(0);
static BASES: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

fn r32(a: u64) -> u32 {
    // SAFETY: a virtio register (identity-mapped device memory) or a byte
    // of our own RAM.
    unsafe { read_volatile(a as *const u32) }
}
fn w32(a: u64, v: u32) {
    // SAFETY: as r32.
    unsafe { write_volatile(a as *mut u32, v) }
}
fn w16(a: u64, v: u16) {
    // SAFETY: our RAM (a ring in the DMA pool).
    unsafe { write_volatile(a as *mut u16, v) }
}
fn r16(a: u64) -> u16 {
    // SAFETY: as w16.
    unsafe { read_volatile(a as *const u16) }
}
fn w64(a: u64, v: u64) {
    // SAFETY: as w16.
    unsafe { write_volatile(a as *mut u64, v) }
}
fn w8(a: u64, v: u8) {
    // SAFETY: as w16.
    unsafe { write_volatile(a as *mut u8, v) }
}
fn r8(a: u64) -> u8 {
    // SAFETY: as w16.
    unsafe { read_volatile(a as *const u8) }
}
fn fill(a: u64, len: u64, v: u8) {
    (0..len).for_each(|i| w8(a + i, v));
}
fn dsb() {
    // SAFETY: a barrier: our ring writes reach memory before the notify.
    unsafe { core::arch::asm!("dsb sy") };
}

fn on_irq(kind: u64, _s: Sync, _f: &mut Frame) -> bool {
    if kind != IRQ_SPX {
        return false;
    }
    let intid = gic::ack();
    if intid == gic::SPURIOUS {
        return true;
    }
    match intid.checked_sub(48) {
        Some(k @ 0..=1) => {
            let base = BASES[k as usize].load(SeqCst);
            let s = r32(base + INT_STATUS);
            w32(base + INT_ACK, s);
            ISR_SEEN[k as usize].fetch_or(s, SeqCst);
            IRQS[k as usize].fetch_add(1, SeqCst);
        }
        _ => {
            OTHER.fetch_add(1, SeqCst);
        }
    }
    gic::eoi(intid);
    true
}

/// Waits (interrupts on, at most a second) until slot `k` has taken `n`
/// interrupts in all.
fn wait_irqs(k: usize, n: u64) -> bool {
    let (start, freq) = gic::counter();
    while IRQS[k].load(SeqCst) < n && gic::counter().0 < start + freq {
        core::hint::spin_loop();
    }
    IRQS[k].load(SeqCst) == n
}

/// The host's counters for slot `k`: (requests, memory not shared, bad
/// requests, ring errors, bad register accesses).
fn stats(k: u64) -> [u64; 5] {
    let a = call(services::HOST_VIRTIO_STATS, [k, 0, 0]);
    let b = call(services::HOST_VIRTIO_STATS, [k, 1, 0]);
    [a[0], a[1], a[2], a[3], b[0]]
}

/// How slot `k`'s counters moved since `before`.
fn delta(k: u64, before: [u64; 5]) -> [u64; 5] {
    let now = stats(k);
    core::array::from_fn(|i| now[i].wrapping_sub(before[i]))
}

/// One queue with its rings in one shared page: descriptors at +0, the
/// available ring at +0x800, the used ring at +0xc00.
struct Vq {
    base: u64,
    q: u32,
    page: u64,
    avail_idx: u16,
    used_seen: u16,
}

impl Vq {
    fn desc(&self) -> u64 {
        self.page
    }
    fn avail(&self) -> u64 {
        self.page + 0x800
    }
    fn used(&self) -> u64 {
        self.page + 0xc00
    }
    /// Sets the queue up (size 8) and makes it live.
    fn setup(base: u64, q: u32, page: u64) -> Vq {
        fill(page, PAGE, 0);
        let vq = Vq { base, q, page, avail_idx: 0, used_seen: 0 };
        w32(base + QUEUE_SEL, q);
        w32(base + QUEUE_NUM, N as u32);
        for (reg, a) in [(QUEUE_DESC, vq.desc()), (QUEUE_DRIVER, vq.avail()), (QUEUE_DEVICE, vq.used())] {
            w32(base + reg, a as u32);
            w32(base + reg + 4, (a >> 32) as u32);
        }
        w32(base + QUEUE_READY, 1);
        vq
    }
    fn put_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = self.desc() + 16 * i as u64;
        w64(d, addr);
        w32(d + 8, len);
        w16(d + 12, flags);
        w16(d + 14, next);
    }
    /// Makes chain `head` available and notifies.
    fn kick(&mut self, head: u16) {
        w16(self.avail() + 4 + 2 * (self.avail_idx % N) as u64, head);
        dsb();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        w16(self.avail() + 2, self.avail_idx);
        dsb();
        w32(self.base + QUEUE_NOTIFY, self.q);
    }
    /// Descriptors 0.. chained from `segs` (address, length, device-writable),
    /// made available and notified; the used element if the device returned
    /// the chain.
    fn submit(&mut self, segs: &[(u64, u32, bool)]) -> Option<(u32, u32)> {
        for (i, &(a, l, wr)) in segs.iter().enumerate() {
            let more = i + 1 < segs.len();
            let flags = if wr { DESC_WRITE } else { 0 } | if more { DESC_NEXT } else { 0 };
            self.put_desc(i as u16, a, l, flags, i as u16 + 1);
        }
        self.kick(0);
        self.take_used()
    }
    fn take_used(&mut self) -> Option<(u32, u32)> {
        dsb();
        if r16(self.used() + 2) == self.used_seen {
            return None;
        }
        let e = self.used() + 4 + 8 * (self.used_seen % N) as u64;
        self.used_seen = self.used_seen.wrapping_add(1);
        Some((r32(e), r32(e + 4)))
    }
}

/// Resets and negotiates `hi` as the high feature word; the status read back.
fn negotiate(base: u64, hi: u32) -> u32 {
    w32(base + STATUS, 0);
    w32(base + STATUS, ACK);
    w32(base + STATUS, ACK | DRIVER);
    w32(base + DRV_FEATURES_SEL, 0);
    w32(base + DRV_FEATURES, 0);
    w32(base + DRV_FEATURES_SEL, 1);
    w32(base + DRV_FEATURES, hi);
    w32(base + STATUS, ACK | DRIVER | FEATURES_OK);
    r32(base + STATUS)
}

fn driver_ok(base: u64) {
    w32(base + STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
}

/// The pool's pages (DMA pool layout of this test).
struct Pool {
    base: u64,
}
impl Pool {
    fn page(&self, n: u64) -> u64 {
        self.base + n * PAGE
    }
}

/// A virtio-blk request: the header at `hdr`, data buffers `data`
/// (writable unless `kind` is OUT), the status byte at `status` (set to
/// 0xff first). Returns the used element and the status byte.
fn blk(vq: &mut Vq, hdr: u64, kind: u32, sector: u64, data: &[(u64, u32)], status: u64) -> (Option<(u32, u32)>, u8) {
    w32(hdr, kind);
    w32(hdr + 4, 0);
    w64(hdr + 8, sector);
    if !(PRIVATE..PRIVATE + PAGE).contains(&status) {
        w8(status, 0xff);
    }
    let mut segs = [(0u64, 0u32, false); 4];
    segs[0] = (hdr, 16, false);
    for (i, &(a, l)) in data.iter().enumerate() {
        segs[1 + i] = (a, l, kind != T_OUT);
    }
    segs[1 + data.len()] = (status, 1, true);
    let used = vq.submit(&segs[..2 + data.len()]);
    (used, r8(status))
}

/// Does `[a, a + len)` hold sectors `first..` of the disk?
fn is_disk(a: u64, first: u64, len: u64) -> bool {
    (0..len).all(|i| r8(a + i) == virtio_disk_byte(first + i / 512, i % 512))
}

struct Found {
    bases: [u64; 2],
    intids: [u32; 2],
    level: bool,
    regions: [Option<usize>; 2],
    pool: Option<(u64, u64, usize)>,
    pool_no_map: bool,
}

fn find(fdt: &fdt::Fdt) -> Found {
    let mut f = Found { bases: [0; 2], intids: [0; 2], level: true, regions: [None; 2], pool: None, pool_no_map: true };
    let mut k = 0;
    for n in fdt.all_nodes() {
        if !n.compatible().is_some_and(|c| c.all().any(|x| x == "virtio,mmio")) || k >= 2 {
            continue;
        }
        f.bases[k] = n.reg().and_then(|mut r| r.next()).map_or(0, |r| r.starting_address as u64);
        let cells: [u32; 3] = n.property("interrupts").map_or([0; 3], |p| {
            core::array::from_fn(|i| {
                p.value.get(4 * i..4 * i + 4).map_or(0, |c| u32::from_be_bytes(c.try_into().unwrap()))
            })
        });
        f.intids[k] = 32 + cells[1];
        f.level &= cells[0] == 0 && cells[2] == 4 && n.property("dma-coherent").is_some();
        f.regions[k] = n.property("memory-region").and_then(|p| p.as_usize());
        k += 1;
    }
    if let Some(rm) = fdt.find_node("/reserved-memory") {
        for c in rm.children() {
            if c.compatible().is_some_and(|cs| cs.first() == "restricted-dma-pool") {
                let r = c.reg().and_then(|mut r| r.next());
                let ph = c.property("phandle").and_then(|p| p.as_usize());
                if let (Some(r), Some(ph)) = (r, ph) {
                    f.pool = Some((r.starting_address as u64, r.size.unwrap_or(0) as u64, ph));
                }
                f.pool_no_map = c.property("no-map").is_some() || c.property("reusable").is_some();
            }
        }
    }
    f
}

pub fn virtio(t: &mut Tally, fdt: &fdt::Fdt) {
    // What the DTB says.
    let f = find(fdt);
    t.check(
        f.bases == [0x0a00_0000, 0x0a00_0200] && f.intids == [48, 49] && f.level,
        "virtio: two virtio,mmio nodes at 0xa000000 and 0xa000200, SPIs 16 and 17 level-high, dma-coherent",
    );
    let Some((pool_base, pool_size, phandle)) = f.pool else {
        t.check(false, "virtio: the DTB has a restricted-dma-pool");
        return;
    };
    t.check(
        f.regions == [Some(phandle); 2] && !f.pool_no_map && pool_size == 16 * PAGE,
        "virtio: both name the 64 KiB restricted-dma-pool (memory-region); it is not no-map",
    );
    // As Linux's pKVM guest driver does: MMIO_GUARD every granule the
    // driver maps (the PL011, the GIC distributor and this vCPU's
    // redistributor, the virtio window); from here on only those exit.
    let granules = [(0x0900_0000, 1), (gic::GICD, 16), (gic::GICR, 32), (f.bases[0] & !(PAGE - 1), 1)];
    let guarded = granules
        .iter()
        .flat_map(|&(a, n)| (0..n).map(move |i| a + i * PAGE))
        .filter(|&g| call(hyp_abi::guest::MMIO_GUARD, [g, 0, 0])[0] == 0)
        .count();
    t.eq(guarded as i64, 50, "virtio: MMIO_GUARD of the 50 granules the driver maps (PL011, GIC, virtio)");
    let pool = Pool { base: pool_base };
    let shared = (0..16).filter(|&i| share(pool.page(i)) == 0).count();
    t.eq(shared as i64, 16, "virtio: MEM_SHARE of the 16 pages of the DMA pool");
    BASES[0].store(f.bases[0], SeqCst);
    BASES[1].store(f.bases[1], SeqCst);
    el1_rt::trap::set_hook(on_irq);
    gic::init_dist();
    gic::init_cpu(0);
    gic::enable(0, 48, 0x80);
    gic::enable(0, 49, 0x80);
    gic::irqs_on();
    fill(PRIVATE, PAGE, 0xee);

    console(t, f.bases[0], &pool);
    blk_tests(t, f.bases[1], &pool);
    hostile(t, f.bases[0], f.bases[1], &pool);

    gic::irqs_off();
    t.eq(OTHER.load(SeqCst) as i64, 0, "virtio: no unexpected interrupt");
    // The host holds no pin on the pool: unsharing never waits.
    let (pending0, _) = exit_counts();
    let unshared = (0..16).filter(|&i| unshare(pool.page(i)) == 0).count();
    let (pending1, _) = exit_counts();
    t.check(
        unshared == 16 && pending1 == pending0,
        "virtio: MEM_UNSHARE of the pool: no page left pinned by the host (no UNSHARE_PENDING exit)",
    );
}

fn console(t: &mut Tally, base: u64, pool: &Pool) {
    t.check(
        r32(base + MAGIC) == 0x7472_6976 && r32(base + VERSION) == 2 && r32(base + DEVICE_ID) == 3,
        "virtio: console: magic, version 2, device ID 3",
    );
    w32(base + DEV_FEATURES_SEL, 1);
    t.eq(r32(base + DEV_FEATURES) as i64, 3, "virtio: console: offers VERSION_1 and ACCESS_PLATFORM, nothing else");
    let st = negotiate(base, F_HI);
    t.eq(
        st as i64,
        (ACK | DRIVER | FEATURES_OK) as i64,
        "virtio: console: FEATURES_OK kept for VERSION_1 | ACCESS_PLATFORM",
    );
    let mut rx = Vq::setup(base, 0, pool.page(1));
    let mut tx = Vq::setup(base, 1, pool.page(0));
    driver_ok(base);
    // A line in two descriptors.
    let buf = pool.page(3);
    let (a, b) = (b"hello from the guest ", b"over virtio-console (2 descriptors)\n");
    a.iter().enumerate().for_each(|(i, &c)| w8(buf + i as u64, c));
    b.iter().enumerate().for_each(|(i, &c)| w8(buf + 0x100 + i as u64, c));
    let used = tx.submit(&[(buf, a.len() as u32, false), (buf + 0x100, b.len() as u32, false)]);
    t.check(used == Some((0, 0)), "virtio: console: the transmit chain comes back in the used ring");
    t.check(
        wait_irqs(0, 1) && ISR_SEEN[0].load(SeqCst) == 1 && r32(base + INT_STATUS) == 0,
        "virtio: console: one used-buffer interrupt (INTID 48); after the ACK InterruptStatus reads 0",
    );
    rx.put_desc(0, buf + 0x800, 64, DESC_WRITE, 0);
    rx.kick(0);
    t.check(rx.take_used().is_none(), "virtio: console: the receive queue keeps its buffer (no input)");
}

fn blk_tests(t: &mut Tally, base: u64, pool: &Pool) {
    t.eq(r32(base + DEVICE_ID) as i64, 2, "virtio: blk: device ID 2");
    let cap = r32(base + CONFIG) as u64 | (r32(base + CONFIG + 4) as u64) << 32;
    t.eq(cap as i64, SECTORS as i64, "virtio: blk: capacity 2048 sectors (config space)");
    let st = negotiate(base, F_HI);
    t.eq(st as i64, (ACK | DRIVER | FEATURES_OK) as i64, "virtio: blk: FEATURES_OK kept");
    let mut vq = Vq::setup(base, 0, pool.page(2));
    driver_ok(base);
    let (hdr, status, data) = (pool.page(4), pool.page(4) + 0x100, pool.page(5));
    let mut irqs = 0;
    let mut ok_irqs = true;
    let wait = |n: &mut u64| {
        *n += 1;
        wait_irqs(1, *n)
    };

    fill(data, 2 * PAGE, 0);
    let r = blk(&mut vq, hdr, T_IN, 0, &[(data, 4096)], status);
    ok_irqs &= wait(&mut irqs);
    t.check(r == (Some((0, 4097)), S_OK) && is_disk(data, 0, 4096), "virtio: blk: sectors 0-7 read match the disk");
    let r = blk(&mut vq, hdr, T_IN, 1000, &[(data, 1024), (data + 0x1000, 512)], status);
    ok_irqs &= wait(&mut irqs);
    t.check(
        r == (Some((0, 1537)), S_OK) && is_disk(data, 1000, 1024) && is_disk(data + 0x1000, 1002, 512),
        "virtio: blk: sectors 1000-1002 read into two chained buffers match",
    );
    let last = blk(&mut vq, hdr, T_IN, SECTORS - 1, &[(data, 512)], status);
    ok_irqs &= wait(&mut irqs) && is_disk(data, SECTORS - 1, 512);
    let past = blk(&mut vq, hdr, T_IN, SECTORS, &[(data, 512)], status);
    ok_irqs &= wait(&mut irqs);
    t.check(
        last == (Some((0, 513)), S_OK) && past == (Some((0, 1)), S_IOERR) && is_disk(data, SECTORS - 1, 512),
        "virtio: blk: the last sector reads; one past the end is IOERR",
    );
    let r = blk(&mut vq, hdr, T_GET_ID, 0, &[(data, 20)], status);
    ok_irqs &= wait(&mut irqs);
    let id: [u8; 20] = core::array::from_fn(|i| r8(data + i as u64));
    t.check(
        r == (Some((0, 21)), S_OK) && &id[..18] == b"pkvm-rs virtio-blk" && id[18..] == [0, 0],
        "virtio: blk: GET_ID answers \"pkvm-rs virtio-blk\"",
    );
    let wbuf = pool.page(7);
    (0..512).for_each(|i| w8(wbuf + i, (i as u8) ^ 0x3c));
    let w = blk(&mut vq, hdr, T_OUT, 5, &[(wbuf, 512)], status);
    ok_irqs &= wait(&mut irqs);
    fill(data, 512, 0);
    let r = blk(&mut vq, hdr, T_IN, 5, &[(data, 512)], status);
    ok_irqs &= wait(&mut irqs);
    t.check(
        w == (Some((0, 1)), S_OK) && r.1 == S_OK && (0..512).all(|i| r8(data + i) == (i as u8) ^ 0x3c),
        "virtio: blk: a write of sector 5 reads back",
    );
    let r = blk(&mut vq, hdr, 0x55, 0, &[(data, 512)], status);
    ok_irqs &= wait(&mut irqs);
    t.check(r == (Some((0, 1)), S_UNSUPP), "virtio: blk: an unknown request type is UNSUPP");
    t.check(ok_irqs && ISR_SEEN[1].load(SeqCst) == 1, "virtio: blk: one used-buffer interrupt (INTID 49) per request");
}

fn hostile(t: &mut Tally, con: u64, base: u64, pool: &Pool) {
    let (hdr, status, data) = (pool.page(4), pool.page(4) + 0x100, pool.page(5));
    let mut vq = Vq::setup_again(base, pool);
    let untouched = |len: u64| (0..len).all(|i| r8(PRIVATE + i) == 0xee);

    // A read into a private page.
    let s0 = stats(1);
    let r = blk(&mut vq, hdr, T_IN, 0, &[(PRIVATE, 512)], status);
    t.check(
        r == (Some((0, 1)), S_IOERR) && untouched(PAGE),
        "virtio: blk: a read into a private page is IOERR; the page is untouched",
    );
    t.check(delta(1, s0) == [1, 1, 0, 0, 0], "virtio: blk: the host counted one request refused for memory not shared");
    // A read running from a shared page into a private one: nothing written.
    fill(PRIVATE - 0x200, 0x200, 0x11);
    let r = blk(&mut vq, hdr, T_IN, 0, &[(PRIVATE - 0x200, 1024)], status);
    let head = (0..0x200).all(|i| r8(PRIVATE - 0x200 + i) == 0x11);
    t.check(
        r == (Some((0, 1)), S_IOERR) && head && untouched(PAGE),
        "virtio: blk: a buffer running into a private page is IOERR; neither page written",
    );
    // Two buffers, the second private: the first is not written either.
    fill(data, 512, 0x22);
    let r = blk(&mut vq, hdr, T_IN, 0, &[(data, 512), (PRIVATE, 512)], status);
    let first = (0..512).all(|i| r8(data + i) == 0x22);
    t.check(
        r == (Some((0, 1)), S_IOERR) && first && untouched(PAGE),
        "virtio: blk: a chain whose second buffer is private is IOERR; the first is not written",
    );
    // Buffers outside guest RAM: below it, and one that wraps around.
    let s0 = stats(1);
    let low = blk(&mut vq, hdr, T_IN, 0, &[(0x1000, 512)], status);
    let wrap = blk(&mut vq, hdr, T_IN, 0, &[(u64::MAX - 0xff, 512)], status);
    t.check(
        low == (Some((0, 1)), S_IOERR) && wrap == (Some((0, 1)), S_IOERR) && delta(1, s0) == [2, 2, 0, 0, 0],
        "virtio: blk: buffers outside guest RAM (below it, wrapping around) are IOERR",
    );
    // A write from a private page: the disk keeps its sector.
    let r = blk(&mut vq, hdr, T_OUT, 6, &[(PRIVATE, 512)], status);
    let back = blk(&mut vq, hdr, T_IN, 6, &[(data, 512)], status);
    t.check(
        r == (Some((0, 1)), S_IOERR) && back.1 == S_OK && is_disk(data, 6, 512),
        "virtio: blk: a write from a private page is IOERR; the sector is unchanged",
    );
    // The status byte in a private page.
    let s0 = stats(1);
    let r = blk(&mut vq, hdr, T_IN, 0, &[(data, 512)], PRIVATE + 0x10);
    t.check(
        r == (Some((0, 0)), 0xee) && untouched(PAGE),
        "virtio: blk: a status byte in a private page: returned with length 0, nothing written",
    );
    t.check(delta(1, s0) == [1, 1, 0, 0, 0], "virtio: blk: counted as memory not shared");
    // A private transmit buffer on the console.
    let s0 = stats(0);
    let mut tx = Vq { base: con, q: 1, page: pool.page(0), avail_idx: 1, used_seen: 1 };
    let used = tx.submit(&[(PRIVATE, 64, false)]);
    t.check(
        used == Some((0, 0)) && delta(0, s0) == [1, 1, 0, 0, 0],
        "virtio: console: a private transmit buffer prints nothing and is counted",
    );

    // Registers of queues that do not exist or are not set up.
    let s0 = stats(1);
    w32(base + QUEUE_SEL, 1);
    let max = r32(base + QUEUE_NUM_MAX);
    w32(base + QUEUE_NUM, 8);
    w32(base + QUEUE_READY, 1);
    let ready = r32(base + QUEUE_READY);
    w32(base + QUEUE_SEL, 0);
    t.check(
        max == 0 && ready == 0 && delta(1, s0) == [0, 0, 0, 0, 2],
        "virtio: blk: QueueSel 1 (no such queue): QueueNumMax 0, setup refused and counted",
    );
    let s0 = stats(1);
    w32(base + QUEUE_NOTIFY, 7);
    let used = vq.take_used();
    t.check(
        used.is_none() && delta(1, s0) == [0, 0, 0, 0, 1],
        "virtio: blk: QueueNotify of queue 7 changes nothing and is counted",
    );
    let s0 = stats(1);
    negotiate(base, F_HI);
    driver_ok(base);
    w32(base + QUEUE_NOTIFY, 0);
    t.check(
        delta(1, s0) == [0, 0, 0, 0, 1],
        "virtio: blk: QueueNotify of a queue not set up after a reset is refused and counted",
    );
    let mut vq = Vq::setup_again(base, pool);

    // A descriptor loop: 0 -> 1 -> 0.
    let s0 = stats(1);
    let isr0 = IRQS[1].load(SeqCst);
    vq.put_desc(0, hdr, 16, DESC_NEXT, 1);
    vq.put_desc(1, data, 512, DESC_NEXT | DESC_WRITE, 0);
    vq.kick(0);
    let st = r32(base + STATUS);
    let irq = wait_irqs(1, isr0 + 1) && ISR_SEEN[1].load(SeqCst) & 2 != 0;
    t.check(
        st & NEEDS_RESET != 0 && irq && vq.take_used().is_none() && delta(1, s0) == [0, 0, 0, 1, 0],
        "virtio: blk: a descriptor loop: DEVICE_NEEDS_RESET, a configuration interrupt, nothing used",
    );
    let s0 = stats(1);
    w32(base + QUEUE_NOTIFY, 0);
    t.check(delta(1, s0) == [0, 0, 0, 0, 1], "virtio: blk: notifications are refused until the reset");
    let mut vq = Vq::setup_again(base, pool);
    let r = blk(&mut vq, hdr, T_IN, 2, &[(data, 512)], status);
    t.check(r == (Some((0, 513)), S_OK) && is_disk(data, 2, 512), "virtio: blk: after a reset the device works again");

    // The descriptor table in a private page.
    let s0 = stats(1);
    negotiate(base, F_HI);
    let avail = pool.page(2) + 0x800;
    fill(pool.page(2), PAGE, 0);
    w32(base + QUEUE_SEL, 0);
    w32(base + QUEUE_NUM, N as u32);
    for (reg, a) in [(QUEUE_DESC, PRIVATE), (QUEUE_DRIVER, avail), (QUEUE_DEVICE, pool.page(2) + 0xc00)] {
        w32(base + reg, a as u32);
        w32(base + reg + 4, (a >> 32) as u32);
    }
    w32(base + QUEUE_READY, 1);
    driver_ok(base);
    w16(avail + 2, 1);
    dsb();
    w32(base + QUEUE_NOTIFY, 0);
    t.check(
        r32(base + STATUS) & NEEDS_RESET != 0 && delta(1, s0) == [0, 0, 0, 1, 0] && untouched(PAGE),
        "virtio: blk: a descriptor table in a private page: DEVICE_NEEDS_RESET",
    );
    // The used ring in a private page.
    let s0 = stats(1);
    negotiate(base, F_HI);
    fill(pool.page(2), PAGE, 0);
    w32(base + QUEUE_SEL, 0);
    for (reg, a) in [(QUEUE_DESC, pool.page(2)), (QUEUE_DRIVER, avail), (QUEUE_DEVICE, PRIVATE)] {
        w32(base + reg, a as u32);
        w32(base + reg + 4, (a >> 32) as u32);
    }
    w32(base + QUEUE_READY, 1);
    driver_ok(base);
    let mut vq = Vq { base, q: 0, page: pool.page(2), avail_idx: 0, used_seen: 0 };
    let r = blk(&mut vq, hdr, T_IN, 3, &[(data, 512)], status);
    t.check(
        r32(base + STATUS) & NEEDS_RESET != 0 && delta(1, s0) == [0, 0, 0, 1, 0] && untouched(PAGE) && r.1 == 0xff,
        "virtio: blk: a used ring in a private page: DEVICE_NEEDS_RESET before the request is served",
    );
    // An available index 9 ahead of an 8-entry queue.
    let mut vq = Vq::setup_again(base, pool);
    let s0 = stats(1);
    vq.avail_idx = N;
    vq.kick(0);
    t.check(
        r32(base + STATUS) & NEEDS_RESET != 0 && delta(1, s0) == [0, 0, 0, 1, 0],
        "virtio: blk: an available index 9 ahead of an 8-entry queue: DEVICE_NEEDS_RESET",
    );
    // A head index out of range.
    let mut vq = Vq::setup_again(base, pool);
    let s0 = stats(1);
    vq.kick(N + 1);
    t.check(
        r32(base + STATUS) & NEEDS_RESET != 0 && delta(1, s0) == [0, 0, 0, 1, 0],
        "virtio: blk: a head index past the queue: DEVICE_NEEDS_RESET",
    );
    // Features: FEATURES_OK refused without VERSION_1.
    let st = negotiate(base, 2);
    t.eq((st & FEATURES_OK) as i64, 0, "virtio: blk: FEATURES_OK refused without VERSION_1");
    let mut vq = Vq::setup_again(base, pool);
    let r = blk(&mut vq, hdr, T_IN, 7, &[(data, 512)], status);
    t.check(
        r == (Some((0, 513)), S_OK) && is_disk(data, 7, 512),
        "virtio: blk: the device still serves reads at the end",
    );
    println!("guest: virtio: blk counters: {:?}", stats(1));
}

impl Vq {
    /// Resets the blk device, negotiates and sets its queue up again.
    fn setup_again(base: u64, pool: &Pool) -> Vq {
        negotiate(base, F_HI);
        let vq = Vq::setup(base, 0, pool.page(2));
        driver_ok(base);
        vq
    }
}

/// vCPU 1 of `test=virtio-race` stops when this is set.
static STOP: AtomicU64 = AtomicU64::new(0);
/// Unshare/share rounds vCPU 1 made, and its calls that failed.
static ROUNDS_DONE: AtomicU64 = AtomicU64::new(0);
static TOGGLE_FAILS: AtomicU64 = AtomicU64::new(0);
/// The page vCPU 1 keeps taking back and sharing again.
static TOGGLED: AtomicU64 = AtomicU64::new(0);

fn toggler(_i: usize) -> ! {
    let p = TOGGLED.load(SeqCst);
    while STOP.load(SeqCst) == 0 {
        let u = unshare(p);
        let s = share(p);
        if u != 0 || s != 0 {
            TOGGLE_FAILS.fetch_add(1, SeqCst);
        }
        ROUNDS_DONE.fetch_add(1, SeqCst);
    }
    el1_rt::smp::cpu_off()
}

/// `test=virtio-race` (2 vCPUs, each on a host CPU of its own): vCPU 0
/// reads sectors into a pool page while vCPU 1 unshares and shares that
/// page again as fast as it can. The VMM pins the page for each request,
/// so every request either finds it shared and completes with the right
/// data, or finds it private and is IOERR with the page untouched; the
/// host never faults, and its count of refused requests equals the IOERRs.
pub fn race(t: &mut Tally, fdt: &fdt::Fdt) {
    const N_REQ: u64 = 200;
    let f = find(fdt);
    let Some((pool_base, _, _)) = f.pool else {
        t.check(false, "virtio-race: the DTB has a restricted-dma-pool");
        return;
    };
    let pool = Pool { base: pool_base };
    let shared = (0..16).filter(|&i| share(pool.page(i)) == 0).count();
    t.eq(shared as i64, 16, "virtio-race: MEM_SHARE of the 16 pages of the DMA pool");
    let base = f.bases[1];
    let mut vq = Vq::setup_again(base, &pool);
    let (hdr, status, data) = (pool.page(4), pool.page(4) + 0x100, pool.page(5));
    TOGGLED.store(data, SeqCst);
    t.eq(el1_rt::smp::start(1, 1, toggler), 0, "virtio-race: vCPU 1 starts unsharing and sharing the data page");
    // Its host CPU may be slow to come (a loaded machine): wait for it.
    let (start, freq) = gic::counter();
    while ROUNDS_DONE.load(SeqCst) == 0 && gic::counter().0 < start + 10 * freq {
        core::hint::spin_loop();
    }
    let s0 = stats(1);
    let (pending0, _) = exit_counts();
    let (mut ok, mut ioerr, mut wrong) = (0u64, 0u64, 0u64);
    for i in 0..N_REQ {
        let sector = (i * 37) % SECTORS;
        fill(data, 512, 0x5a);
        match blk(&mut vq, hdr, T_IN, sector, &[(data, 512)], status) {
            (Some((0, 513)), S_OK) if is_disk(data, sector, 512) => ok += 1,
            (Some((0, 1)), S_IOERR) if (0..512).all(|k| r8(data + k) == 0x5a) => ioerr += 1,
            _ => wrong += 1,
        }
    }
    STOP.store(1, SeqCst);
    // vCPU 1 stops after a share: the page is shared again once it is off.
    let start = gic::counter().0;
    while el1_rt::smccc::psci_call(hyp_abi::psci::AFFINITY_INFO, [1, 0, 0]) as i64 != hyp_abi::psci::AFF_OFF
        && gic::counter().0 < start + 10 * freq
    {}
    let (pending1, _) = exit_counts();
    let d = delta(1, s0);
    println!(
        "guest: virtio-race: {} OK, {} IOERR, {} unshare/share rounds on vCPU 1, {} UNSHARE_PENDING exits",
        ok,
        ioerr,
        ROUNDS_DONE.load(SeqCst),
        pending1 - pending0
    );
    t.check(
        wrong == 0 && ok + ioerr == N_REQ,
        "virtio-race: 200 reads into a page vCPU 1 keeps unsharing: each OK with the right data, or IOERR with the page untouched",
    );
    t.check(
        d[0] == N_REQ && d[1] == ioerr,
        "virtio-race: the host refused exactly the IOERR requests (memory not shared)",
    );
    t.check(
        TOGGLE_FAILS.load(SeqCst) == 0 && ROUNDS_DONE.load(SeqCst) > 0,
        "virtio-race: every MEM_UNSHARE and MEM_SHARE of vCPU 1 succeeded",
    );
    let r = blk(&mut vq, hdr, T_IN, 9, &[(data, 512)], status);
    t.check(r == (Some((0, 513)), S_OK) && is_disk(data, 9, 512), "virtio-race: the device serves reads afterwards");
}
