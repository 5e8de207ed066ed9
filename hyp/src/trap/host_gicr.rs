//! GICv3 redistributors, host side: the hyp finds every redistributor at
//! boot, keeps page 0 of each RD_base frame out of the host's stage-2, and
//! emulates the host's accesses to it from the data-abort syndrome, with
//! LPIs hidden (what each access does: `hyp_core::emul::gicr`). Stateless: every
//! access goes to the hardware or nowhere, so CPUs need no lock.

use alloc::vec::Vec;

use log::{debug, info};
use spin::Once;

use hyp_abi::esr::Esr;
use hyp_core::emul::gicr::{self, Access};
use hyp_core::mm::region::Region;

use crate::arch::aarch64::frame::TrapFrame;
use crate::arch::aarch64::inject;
use crate::arch::aarch64::mmu;

/// Consecutive redistributors: `count` frames of `stride` bytes from `base`.
#[derive(Clone, Copy, Debug)]
struct Run {
    base: u64,
    stride: u64,
    count: u64,
    /// GICv4: each redistributor has a VLPI_base frame (GICR_VPROPBASER,
    /// GICR_VPENDBASER) after SGI_base; the host may not map it at all.
    vlpi: bool,
}

impl Run {
    /// Does `ipa` fall in an emulated page of this run?
    fn covers(&self, ipa: u64) -> bool {
        ipa >= self.base && (ipa - self.base) / self.stride < self.count && (ipa - self.base) % self.stride < gicr::PAGE
    }
}

static RUNS: Once<Vec<Run>> = Once::new();

/// Reads a redistributor register of `size` bytes (4 or 8).
///
/// # Safety
/// `pa` is an aligned register of that size of a redistributor that
/// exists, below `mmu::DEVICE_LIMIT` (device memory in the hyp's identity
/// map).
unsafe fn read_reg(pa: u64, size: u8) -> u64 {
    // SAFETY: per the function contract.
    unsafe {
        if size == 8 {
            core::ptr::read_volatile(pa as *const u64)
        } else {
            core::ptr::read_volatile(pa as *const u32) as u64
        }
    }
}

/// Writes a redistributor register of `size` bytes (4 or 8).
///
/// # Safety
/// As for [`read_reg`].
unsafe fn write_reg(pa: u64, size: u8, v: u64) {
    // SAFETY: per the function contract.
    unsafe {
        if size == 8 {
            core::ptr::write_volatile(pa as *mut u64, v)
        } else {
            core::ptr::write_volatile(pa as *mut u32, v as u32)
        }
    }
}

/// Finds the redistributors in `regions` (the device tree's; walking each
/// region's frames up to GICR_TYPER.Last, `stride` bytes apart if the tree
/// says, else as each one's GICR_TYPER.VLPIS says) and checks none has
/// LPIs on. Called once at boot, before the host runs.
pub fn init(regions: &[Region], stride: Option<u64>) -> Result<(), &'static str> {
    let mut runs = Vec::new();
    for r in regions {
        if r.end() > mmu::DEVICE_LIMIT {
            return Err("a redistributor region is outside the hyp's device window");
        }
        let mut run = Run { base: r.base, stride: stride.unwrap_or(0), count: 0, vlpi: false };
        let mut off = 0;
        while off + gicr::PAGE <= r.size {
            // SAFETY: frame `count` of the region: the previous frame was
            // not the last (GICR_TYPER.Last clear), so this one exists; below
            // DEVICE_LIMIT (checked above).
            let (typer, ctlr) =
                unsafe { (read_reg(r.base + off + gicr::reg::TYPER, 8), read_reg(r.base + off + gicr::reg::CTLR, 4)) };
            if ctlr & gicr::ctlr::ENABLE_LPIS != 0 {
                return Err("LPIs are already enabled on a redistributor");
            }
            let vlpi = typer & gicr::typer::VLPIS != 0;
            if run.stride == 0 {
                run.stride = if vlpi { gicr::STRIDE_V4 } else { gicr::STRIDE_V3 };
            }
            run.vlpi |= vlpi;
            run.count += 1;
            if typer & gicr::typer::LAST != 0 {
                break;
            }
            off += run.stride;
        }
        if run.count > 0 {
            runs.push(run);
        }
    }
    let n: u64 = runs.iter().map(|r| r.count).sum();
    info!("gicr: {} redistributor(s); RD_base page 0 emulated for the host (LPIs hidden)", n);
    RUNS.call_once(|| runs);
    Ok(())
}

/// What the host may not map: the pages the hyp emulates, and on GICv4
/// the VLPI_base frames.
pub fn pages() -> Vec<Region> {
    let mut out = Vec::new();
    for r in RUNS.get().into_iter().flatten() {
        for i in 0..r.count {
            let frame = r.base + i * r.stride;
            out.push(Region { base: frame, size: gicr::PAGE });
            if r.vlpi {
                out.push(Region { base: frame + gicr::VLPI_FRAME, size: gicr::FRAME });
            }
        }
    }
    out
}

/// Is `ipa` in a page the hyp emulates? Every run lies below
/// `mmu::DEVICE_LIMIT` (`init` refuses any other): an IPA above it, such as
/// any of RAM on QEMU `virt` (a host's lazy fault), is answered by one
/// comparison.
#[inline(always)]
pub fn covers(ipa: u64) -> bool {
    ipa < mmu::DEVICE_LIMIT && covers_low(ipa)
}

#[inline(never)]
fn covers_low(ipa: u64) -> bool {
    RUNS.get().is_some_and(|runs| runs.iter().any(|r| r.covers(ipa)))
}

/// Performs the host's access to an emulated page, described by `esr`
/// (a stage-2 abort at `ipa`), or injects an abort if the syndrome does not
/// describe one register access (ISV clear: LDP, STP, writeback forms, ...;
/// an instruction fetch; a stage-1 walk; cache maintenance) or the access is
/// not one a GIC register takes.
pub fn emulate(frame: &mut TrapFrame, esr: Esr, ipa: u64, far: u64) {
    let write = esr.wnr();
    let usable = esr.is_data_abort() && esr.isv() && !esr.s1ptw() && !esr.cm();
    let size = esr.sas_bytes();
    let access = if usable { gicr::decide(ipa & (gicr::PAGE - 1), size, write) } else { Access::Abort };
    let srt = esr.srt() as usize;
    match access {
        Access::Abort => {
            info!(
                "host: {} at IPA {:#x} (PC {:#x}) in an emulated GICR page: not a single register access, abort injected",
                if !esr.is_data_abort() {
                    "fetch"
                } else if write {
                    "write"
                } else {
                    "read"
                },
                ipa,
                frame.elr
            );
            crate::tracebuf::point::inject(0, 0, esr.0, far, frame.elr);
            inject::inject_abort(frame, esr, far);
            return;
        }
        Access::Read { clear } => {
            // SAFETY: `ipa` is an aligned 4- or 8-byte register in page 0 of
            // a redistributor found at boot (`covers`), below DEVICE_LIMIT.
            let hw = unsafe { read_reg(ipa, size) };
            set_reg(frame, srt, gicr::load_value(hw & !clear, size, esr.sse(), esr.sf()));
        }
        Access::Write { clear } => {
            let v = gicr::store_value(reg(frame, srt), size) & !clear;
            // SAFETY: as for the read.
            unsafe { write_reg(ipa, size, v) };
        }
        Access::RazWi => {
            debug!("host: {} of GICR offset {:#x}: RAZ/WI", if write { "write" } else { "read" }, ipa & 0xffff);
            if !write {
                set_reg(frame, srt, 0);
            }
        }
    }
    frame.elr += if esr.il() { 4 } else { 2 };
}

/// Register `n` of the trapped context (31 is XZR).
fn reg(frame: &TrapFrame, n: usize) -> u64 {
    frame.x.get(n).copied().unwrap_or(0)
}

fn set_reg(frame: &mut TrapFrame, n: usize, v: u64) {
    if let Some(x) = frame.x.get_mut(n) {
        *x = v;
    }
}
