//! Devices that write memory: a hostile host tries to program every device
//! of QEMU `virt` that reads or writes memory at addresses software gives
//! it. The GIC ITS and fw_cfg are gone (not in the DTB, their MMIO aborts);
//! the redistributors' LPIs are hidden behind the hyp's emulation of page 0
//! of each RD_base frame, while what the host needs there still works.

use el1_rt::{println, BootInfo};

use crate::mem::HostMem;
use crate::report::{expect_abort, read64, write64, Report};

/// QEMU virt's fixed memory map (hw/arm/virt.c): the host's DTB no longer
/// names these two, which is the point.
pub const ITS: u64 = 0x0808_0000;
const FW_CFG: u64 = 0x0902_0000;
/// GITS_BASER0: the ITS device table's physical address.
const GITS_BASER0: u64 = 0x100;
/// fw_cfg DMA address register (big-endian): writing it starts a transfer.
const FW_CFG_DMA: u64 = 0x10;

/// Redistributor RD_base registers (GICv3 architecture specification).
const GICR_CTLR: u64 = 0x0;
const GICR_TYPER: u64 = 0x8;
const GICR_WAKER: u64 = 0x14;
const GICR_PROPBASER: u64 = 0x70;
const GICR_PENDBASER: u64 = 0x78;
const GICR_PIDR2: u64 = 0xffe8;
/// SGI_base frame: GICR_ISENABLER0.
const GICR_ISENABLER0: u64 = 0x1_0100;
const CTLR_ENABLE_LPIS: u32 = 1 << 0;
const TYPER_PLPIS: u64 = 1 << 0;
const TYPER_DIRECT_LPI: u64 = 1 << 3;
const TYPER_LAST: u64 = 1 << 4;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

pub fn read32(addr: u64) -> u32 {
    let v: u32;
    // SAFETY: a deliberate 32-bit device load; an abort is turned into a
    // skipped instruction by the probe hook when one is expected.
    unsafe { core::arch::asm!("mov {0:w}, #0", "ldr {0:w}, [{1}]", out(reg) v, in(reg) addr) };
    v
}

pub fn write32(addr: u64, v: u32) {
    // SAFETY: as for read32.
    unsafe { core::arch::asm!("str {0:w}, [{1}]", in(reg) v, in(reg) addr) };
}

/// A load pair: its abort carries no instruction syndrome (ISV = 0).
fn load_pair(addr: u64) -> (u64, u64) {
    let (a, b): (u64, u64);
    // SAFETY: as for read32.
    unsafe {
        core::arch::asm!("mov {0}, #0", "mov {1}, #0", "ldp {0}, {1}, [{2}]", out(reg) a, out(reg) b, in(reg) addr)
    };
    (a, b)
}

/// A byte load: no GIC register takes one.
fn read8(addr: u64) -> u8 {
    let v: u32;
    // SAFETY: as for read32.
    unsafe { core::arch::asm!("mov {0:w}, #0", "ldrb {0:w}, [{1}]", out(reg) v, in(reg) addr) };
    v as u8
}

/// Runs `f` and reports whether it went through without an abort.
fn no_abort<T>(f: impl FnOnce() -> T) -> Option<T> {
    let mut out = None;
    expect_abort(|| out = Some(f())).is_none().then_some(()).and(out)
}

fn has_compatible(info: &BootInfo, c: &str) -> bool {
    info.fdt.all_nodes().any(|n| n.compatible().is_some_and(|cs| cs.all().any(|x| x == c)))
}

/// The first redistributor's RD_base, from the DTB.
pub fn redistributor(info: &BootInfo) -> Option<u64> {
    info.fdt
        .find_compatible(&["arm,gic-v3"])
        .and_then(|n| n.reg())
        .and_then(|mut regs| regs.nth(1))
        .map(|reg| reg.starting_address as u64)
}

pub fn run(info: &BootInfo, hm: &mut HostMem, r: &mut Report) {
    // What the host is told.
    r.check(!has_compatible(info, "arm,gic-v3-its"), "the host DTB has no GIC ITS");
    r.check(!has_compatible(info, "qemu,fw-cfg-mmio"), "the host DTB has no fw_cfg");
    let msi = info.fdt.all_nodes().filter(|n| n.property("msi-map").is_some() || n.property("msi-parent").is_some());
    r.check(msi.count() == 0, "no msi-map or msi-parent is left (they named the ITS)");

    // What the host can still touch: a zeroed page of its own as bait.
    let Some(page) = hm.alloc(4096, 4096) else {
        r.fail("host memory");
        return;
    };
    // SAFETY: a page of host RAM just allocated, identity-mapped.
    unsafe { core::ptr::write_bytes(page as *mut u8, 0, 4096) };

    let its = expect_abort(|| {
        read64(ITS + GITS_BASER0);
    });
    r.check(its.is_some_and(|(far, _)| far == ITS + GITS_BASER0), "a read of GITS_BASER0 aborts at its address");
    let its = expect_abort(|| write64(ITS + GITS_BASER0, page));
    r.check(its.is_some_and(|(_, esr)| esr & (1 << 6) != 0), "a write of GITS_BASER0 aborts (WnR set)");
    let fw = expect_abort(|| {
        read64(FW_CFG);
    });
    r.check(fw.is_some_and(|(far, _)| far == FW_CFG), "a read of the fw_cfg data register aborts");
    // A DMA descriptor at `page` with control 0 would be a no-op if it went through.
    let fw = expect_abort(|| write64(FW_CFG + FW_CFG_DMA, page.to_be()));
    r.check(fw.is_some_and(|(far, _)| far == FW_CFG + FW_CFG_DMA), "a write of the fw_cfg DMA address aborts");

    // The redistributor of this CPU (the first: the scenario runs on CPU 0).
    let Some(rd) = redistributor(info) else {
        r.fail("the DTB names the GICv3 redistributors");
        return;
    };
    let typer = no_abort(|| read64(rd + GICR_TYPER));
    println!("[host] GICR_TYPER as the host sees it: {:#x}", typer.unwrap_or(0));
    r.check(
        typer.is_some_and(|t| t & (TYPER_PLPIS | TYPER_DIRECT_LPI) == 0 && t & TYPER_LAST != 0),
        "GICR_TYPER: PLPIS and DirectLPI read 0, Last still reads 1",
    );
    let prop = no_abort(|| {
        write64(rd + GICR_PROPBASER, page | 0x78f);
        read64(rd + GICR_PROPBASER)
    });
    r.check(prop == Some(0), "GICR_PROPBASER ignores a write and reads 0");
    let pend = no_abort(|| {
        write64(rd + GICR_PENDBASER, page | 0x78f);
        read64(rd + GICR_PENDBASER)
    });
    r.check(pend == Some(0), "GICR_PENDBASER ignores a write and reads 0");
    let ctlr = no_abort(|| {
        write32(rd + GICR_CTLR, read32(rd + GICR_CTLR) | CTLR_ENABLE_LPIS);
        read32(rd + GICR_CTLR)
    });
    r.check(ctlr.is_some_and(|c| c & CTLR_ENABLE_LPIS == 0), "GICR_CTLR.EnableLPIs stays 0 after a write of 1");
    // The wake-up handshake every GICv3 driver does, through the emulation.
    let waker = no_abort(|| {
        write32(rd + GICR_WAKER, WAKER_PROCESSOR_SLEEP);
        let asleep = read32(rd + GICR_WAKER);
        write32(rd + GICR_WAKER, 0);
        (asleep, read32(rd + GICR_WAKER))
    });
    r.check(
        waker.is_some_and(|(asleep, awake)| {
            asleep & WAKER_CHILDREN_ASLEEP != 0 && awake & (WAKER_CHILDREN_ASLEEP | WAKER_PROCESSOR_SLEEP) == 0
        }),
        "GICR_WAKER: ProcessorSleep 1 -> ChildrenAsleep 1, 0 -> 0",
    );
    let ldp = expect_abort(|| {
        load_pair(rd + GICR_PROPBASER);
    });
    r.check(ldp.is_some_and(|(far, _)| far == rd + GICR_PROPBASER), "an LDP (no syndrome) to the page aborts");
    let byte = expect_abort(|| {
        read8(rd + GICR_CTLR);
    });
    r.check(byte.is_some(), "a byte load from the page aborts");
    // The rest of the frame and the SGI_base frame are the host's as before.
    let pidr2 = no_abort(|| read32(rd + GICR_PIDR2));
    r.check(pidr2.is_some_and(|p| (p >> 4) & 0xf == 3), "GICR_PIDR2 (RD_base, past page 0) reads GICv3 directly");
    r.check(no_abort(|| read32(rd + GICR_ISENABLER0)).is_some(), "the SGI_base frame is still mapped");
    hm.free(page, 4096);
}
