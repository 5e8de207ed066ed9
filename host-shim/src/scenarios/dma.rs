//! `shim.test=edu` (QEMU `-device edu,dma_mask=...`, the SMMU the hyp
//! owns): the host enumerates PCIe through the ECAM, finds QEMU's `edu`
//! device, gives it a BAR and bus mastering, and has it DMA. Into a page of
//! its own the DMA lands; into the hyp's memory it is blocked. Then a guest
//! (`test=dma`) asks for DMA into its pages through the `HOST_DMA`
//! service: a private page, a shared one without and with a pin, and the
//! same page after MEM_UNSHARE (which waits, UNSHARE_PENDING, until the
//! host unpins). Every blocked DMA must come with an SMMU event naming the
//! device's stream and the page's address (`DMA_EVENTS`), and is traced.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use el1_rt::{println, BootInfo};
use spin::Mutex;

use crate::images::GuestImage;
use crate::mem::HostMem;
use crate::report::{expect_abort, read64, write64, Report};

use super::devices::{read32, write32};

/// QEMU's `edu` device (hw/misc/edu.c): PCI IDs, BAR0 registers.
const EDU_ID: u32 = 0x11e8_1234;
const EDU_IDENT: u64 = 0x00;
const EDU_IDENT_VALUE: u32 = 0x0100_00ed;
const EDU_DMA_SRC: u64 = 0x80;
const EDU_DMA_DST: u64 = 0x88;
const EDU_DMA_CNT: u64 = 0x90;
const EDU_DMA_CMD: u64 = 0x98;
/// CMD: bit 0 start (cleared when done), bit 1 direction (1: device → RAM).
const CMD_START: u64 = 1;
const CMD_TO_RAM: u64 = 2;
/// The device's DMA buffer, in its own address space.
const EDU_BUF: u64 = 0x4_0000;
/// Where in the device's buffer [`start_from_ram`] puts what it reads.
const READ_OFF: u64 = 0x800;
/// Bytes each DMA moves (edu writes 4 bytes at a time: one SMMU event per
/// 4 bytes it cannot write).
pub const LEN: u64 = 8;
/// The SMMUv3 register file on QEMU virt (hw/arm/virt.c): the host's DTB no
/// longer names it.
const SMMU: u64 = 0x0905_0000;
/// Seconds of virtual time before a DMA is declared stuck (the device
/// finishes after 100 ms).
const DMA_TIMEOUT_S: u64 = 10;

/// An `edu` device as the host set it up.
#[derive(Clone, Copy)]
pub struct Edu {
    bar: u64,
    /// Its PCIe requester ID (bus 0): the SMMU's stream ID.
    pub stream: u32,
    /// A host page the DMA data is staged in.
    staging: u64,
}

/// The devices the host set up, in PCI order (the first serves `HOST_DMA`).
static EDUS: Mutex<Vec<Edu>> = Mutex::new(Vec::new());

/// What each device's buffer holds ([`LEN`] bytes), when known, by stream:
/// the value of its last staging DMA that finished without an SMMU event.
static STAGED: Mutex<BTreeMap<u32, u64>> = Mutex::new(BTreeMap::new());

/// The first memory window (32-bit, space code 2) of a PCI host bridge's
/// `ranges`: (CPU address, size).
fn mem32_window(ranges: &[u8]) -> Option<(u64, u64)> {
    let cell = |b: &[u8], i: usize| u32::from_be_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]) as u64;
    ranges.chunks_exact(28).find(|e| (cell(e, 0) >> 24) & 3 == 2).map(|e| {
        let cpu = cell(e, 3) << 32 | cell(e, 4);
        let size = cell(e, 5) << 32 | cell(e, 6);
        (cpu, size)
    })
}

/// Finds every `edu` on bus 0 through the ECAM and sets each up: BAR0s
/// one after the other from the start of the 32-bit window, memory space
/// and bus mastering on, a staging page each.
fn find(info: &BootInfo, hm: &mut HostMem) -> Vec<Edu> {
    let mut found = Vec::new();
    let Some(node) = info.fdt.find_compatible(&["pci-host-ecam-generic"]) else { return found };
    let Some(ecam) = node.reg().and_then(|mut r| r.next()).map(|r| r.starting_address as u64) else { return found };
    let Some((window, wsize)) = node.property("ranges").and_then(|r| mem32_window(r.value)) else { return found };
    println!("[host] PCIe: ECAM at {ecam:#x}, 32-bit window {window:#x}..{:#x}", window + wsize);
    let mut next = window;
    for devfn in (0..256u64).filter(|d| read32(ecam + (d << 12)) == EDU_ID) {
        let cfg = ecam + (devfn << 12);
        // BAR0: size it, place it.
        write32(cfg + 0x10, 0xffff_ffff);
        let size = (!(read32(cfg + 0x10) & !0xf)).wrapping_add(1) as u64;
        let bar = next.next_multiple_of(size.max(4096));
        if size == 0 || bar + size > window + wsize {
            break;
        }
        write32(cfg + 0x10, bar as u32);
        next = bar + size;
        // COMMAND: memory space (1), bus master (2).
        write32(cfg + 0x04, (read32(cfg + 0x04) & 0xffff) | 0x6);
        println!(
            "[host] PCIe 00:{:02x}.{}: edu, BAR0 {:#x} ({} KiB), bus mastering on",
            devfn >> 3,
            devfn & 7,
            bar,
            size / 1024
        );
        let Some(staging) = hm.alloc(4096, 4096) else { break };
        found.push(Edu { bar, stream: devfn as u32, staging });
    }
    found
}

fn reg(e: &Edu, off: u64) -> u64 {
    e.bar + off
}

/// Starts a DMA of the device ([`LEN`] bytes from `src` to `dst`).
fn start(e: &Edu, src: u64, dst: u64, to_ram: bool) {
    write64(reg(e, EDU_DMA_SRC), src);
    write64(reg(e, EDU_DMA_DST), dst);
    write64(reg(e, EDU_DMA_CNT), LEN);
    write64(reg(e, EDU_DMA_CMD), CMD_START | if to_ram { CMD_TO_RAM } else { 0 });
}

/// Starts a DMA of the device's buffer to `pa`.
pub fn start_to_ram(e: &Edu, pa: u64) {
    start(e, EDU_BUF, pa, true);
}

/// Starts a DMA from `pa` into the second half of the device's buffer
/// (the first, which [`stage`] fills, stays as it is).
pub fn start_from_ram(e: &Edu, pa: u64) {
    start(e, pa, EDU_BUF + READ_OFF, false);
}

/// Waits for the DMAs started on `devs`; false if one did not finish in
/// [`DMA_TIMEOUT_S`]. Started together, they finish together: one wait of
/// edu's 100 ms covers them all.
pub fn wait(devs: &[Edu]) -> bool {
    // A command register is read once a millisecond: each read is an
    // MMIO exit that takes QEMU's big lock, and reads back to back kept
    // the main loop, whose timer finishes the DMA, waiting for it (a DMA
    // took ~330 ms instead of 100 on the loaded machine).
    let (t0, freq) = counter();
    let mut next = t0;
    let mut k = 0;
    while let Some(e) = devs.get(k) {
        let now = counter().0;
        if now >= next {
            if read64(reg(e, EDU_DMA_CMD)) & CMD_START == 0 {
                k += 1;
                continue;
            }
            if now - t0 > freq * DMA_TIMEOUT_S {
                return false;
            }
            next = now + freq / 1000;
        }
        core::hint::spin_loop();
    }
    true
}

/// One DMA of the device, waited for; false if it never finished.
fn run_dma(e: &Edu, src: u64, dst: u64, to_ram: bool) -> bool {
    start(e, src, dst, to_ram);
    wait(core::slice::from_ref(e))
}

/// What the device's buffer holds, if known.
pub fn staged(e: &Edu) -> Option<u64> {
    STAGED.lock().get(&e.stream).copied()
}

/// Puts each value into its device's buffer (host page → device), the
/// devices' DMAs together → (all finished, none caused an SMMU event).
pub fn stage(jobs: &[(Edu, u64)]) -> (bool, bool) {
    let before = crate::hyp::dma_events().map(|v| v[1]).unwrap_or(0);
    let mut staged = STAGED.lock();
    for (e, v) in jobs {
        staged.remove(&e.stream);
        write64(e.staging, *v);
        start(e, e.staging, EDU_BUF, false);
    }
    let devs: Vec<Edu> = jobs.iter().map(|j| j.0).collect();
    let done = wait(&devs);
    let clean = crate::hyp::dma_events().map(|v| v[1]).unwrap_or(!0) == before;
    if done && clean {
        for (e, v) in jobs {
            staged.insert(e.stream, *v);
        }
    }
    (done, clean)
}

/// The virtual counter and its frequency.
pub fn counter() -> (u64, u64) {
    let (now, freq): (u64, u64);
    // SAFETY: reads of the generic timer's counter and frequency, which
    // EL1 may read; no memory is touched.
    unsafe {
        core::arch::asm!("isb", "mrs {}, cntvct_el0", "mrs {}, cntfrq_el0", out(reg) now, out(reg) freq, options(nomem, nostack))
    };
    (now, freq)
}

/// What a DMA to `pa` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The bytes are there (read back by the host) and no SMMU event came.
    Landed,
    /// The SMMU refused it: an event names the device's stream and `pa`.
    Blocked,
    /// Neither.
    Other,
}

/// Has the device write `value` ([`LEN`] bytes) to `pa`, staged through its
/// buffer (host page → device, device → `pa`) → (the DMA finished, SMMU
/// events it caused, the last event: stream, address, id | read << 8).
///
/// Each of the device's DMAs takes 100 ms of virtual time (hw/misc/edu.c's
/// timer), so the staging one is left out when the device's buffer holds
/// `value` already: a DMA to RAM does not change the buffer, and it is
/// recorded only after a staging DMA that finished without an SMMU event.
pub fn dma_raw(e: &Edu, pa: u64, value: u64) -> (bool, u64, [u64; 3]) {
    let before = crate::hyp::dma_events().map(|v| v[1]).unwrap_or(0);
    let staged = staged(e) == Some(value) || stage(&[(*e, value)]).0;
    let done = staged && run_dma(e, EDU_BUF, pa, true);
    let ev = crate::hyp::dma_events().unwrap_or([0; 6]);
    (done, ev[1] - before, [ev[2], ev[3], ev[4]])
}

/// The set-up `edu` devices, in PCI order.
pub fn edus() -> Vec<Edu> {
    EDUS.lock().clone()
}

/// Has the device write [`LEN`] bytes of `byte` to `pa`.
pub fn dma_to(e: &Edu, pa: u64, byte: u8) -> Outcome {
    let (done, new, last) = dma_raw(e, pa, u64::from_ne_bytes([byte; 8]));
    let ev = [0, 0, last[0], last[1], last[2]];
    let readable = expect_abort(|| {
        read64(pa);
    })
    .is_none();
    let landed = readable && (0..LEN).step_by(8).all(|o| read64(pa + o) == u64::from_ne_bytes([byte; 8]));
    let named = new > 0 && ev[2] == e.stream as u64 && (pa..pa + LEN).contains(&ev[3]) && ev[4] & 0xff != 0;
    let out = match (done, landed, new, named) {
        (true, true, 0, _) => Outcome::Landed,
        (true, false, _, true) => Outcome::Blocked,
        _ => Outcome::Other,
    };
    match out {
        Outcome::Blocked => println!(
            "[host] dma: edu (stream {:#x}) -> PA {:#x}: blocked, {} SMMU event(s), the last {:#x} ({}) at {:#x}",
            e.stream,
            pa,
            new,
            ev[4] & 0xff,
            if ev[4] & 0x100 != 0 { "read" } else { "write" },
            ev[3]
        ),
        Outcome::Landed => println!("[host] dma: edu (stream {:#x}) -> PA {:#x}: landed, data checked", e.stream, pa),
        Outcome::Other => println!(
            "[host] dma: edu -> PA {pa:#x}: done {done}, landed {landed}, {new} new event(s), last stream {:#x} addr {:#x}",
            ev[2], ev[3]
        ),
    }
    out
}

/// The `HOST_DMA` service for a guest (a hook [`setup`] and [`run`]
/// register): DMA to the page behind its IPA.
fn guest_dma(pa: u64, byte: u64) -> i64 {
    let Some(e) = EDUS.lock().first().copied() else {
        return -19;
    };
    match dma_to(&e, pa, byte as u8) {
        Outcome::Landed => 0,
        Outcome::Blocked => 1,
        Outcome::Other => 2,
    }
}

fn has_compatible(info: &BootInfo, c: &str) -> bool {
    info.fdt.all_nodes().any(|n| n.compatible().is_some_and(|cs| cs.all().any(|x| x == c)))
}

/// Finds and sets up every `edu` for other scenarios (the fuzzer); false if
/// the machine has none.
pub fn setup(info: &BootInfo, hm: &mut HostMem) -> bool {
    let found = find(info, hm);
    let any = !found.is_empty();
    *EDUS.lock() = found;
    crate::vmm::services::set_dma_hook(guest_dma);
    any
}

pub fn run(info: &BootInfo, hm: &mut HostMem, images: &[GuestImage], r: &mut Report) {
    r.check(!has_compatible(info, "arm,smmu-v3"), "the host DTB has no SMMU");
    let refs = info.fdt.all_nodes().filter(|n| n.property("iommu-map").is_some() || n.property("iommus").is_some());
    r.check(refs.count() == 0, "no iommu-map or iommus is left (they named the SMMU)");
    let smmu = expect_abort(|| {
        read32(SMMU);
    });
    r.check(smmu.is_some_and(|(far, _)| far == SMMU), "a read of the SMMU's registers aborts");
    let smmu = expect_abort(|| write32(SMMU + 0x20, 0));
    r.check(smmu.is_some(), "a write of SMMU_CR0 (turning it off) aborts");

    let found = find(info, hm);
    let Some(e) = found.first().copied() else {
        r.fail("an edu device on PCIe bus 0 (-device edu,dma_mask=0xffffffffffffffff)");
        return;
    };
    r.check(read32(reg(&e, EDU_IDENT)) == EDU_IDENT_VALUE, "edu answers through its BAR");
    *EDUS.lock() = found;
    crate::vmm::services::set_dma_hook(guest_dma);

    // The host's own page.
    let Some(page) = hm.alloc(4096, 4096) else {
        r.fail("host memory");
        return;
    };
    // SAFETY: host RAM just allocated.
    unsafe { core::ptr::write_bytes(page as *mut u8, 0, 4096) };
    r.check(dma_to(&e, page, 0x5a) == Outcome::Landed, "DMA into a host-owned page lands (data checked)");
    // The hyp's memory.
    if let Some((hyp, _)) = super::boot::hyp_region(info) {
        r.check(dma_to(&e, hyp + 0x10_0000, 0x66) == Outcome::Blocked, "DMA into the hyp's memory is blocked");
    }
    hm.free(page, 4096);

    super::guests::suite(hm, images, r, "test=dma");
    let ev = crate::hyp::dma_events().unwrap_or([0; 6]);
    println!("[host] dma: {} SMMU event(s) since boot", ev[1]);
    r.check(ev[1] >= 4, "every blocked DMA left an SMMU event");
    r.check(ev[5] == 0, "no SMMU event record was lost (no event queue overflow)");
}
