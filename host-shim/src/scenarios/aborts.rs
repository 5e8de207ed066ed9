//! `shim.test=aborts`: the host's stage-2 aborts through the hyp's short
//! abort entry (hyp/src/arch/aarch64/vectors.S, `__hyp_host_other`: only
//! x0-x18 and x30 saved, ELR_EL2/SPSR_EL2 left live). Each access runs
//! with a distinct pattern in every general register and in NZCV; after it
//! every register but the access's destination must hold its pattern:
//!
//! - a load, a store and an instruction fetch the hyp resolves (a lazy
//!   identity map after DONATE_HYP/RECLAIM_HYP left the range unmapped);
//! - a load and a store the hyp refuses (a page donated to the hyp): the
//!   abort is injected at the access (FAR, ESR, the EL1 vector) and the
//!   skipped access leaves the destination as it was;
//! - a load of an emulated GIC redistributor register, which the short
//!   entry declines and the full frame answers (the value in the register
//!   the access names).

use el1_rt::regs_probe::Regs as Probe;
use el1_rt::{println, BootInfo};
use hyp_abi::host as abi;

use crate::hyp::call;
use crate::mem::HostMem;
use crate::report::{expect_abort, read64, Report};

/// The register an access's address is in, and the one it loads into or
/// stores from (a callee-saved and a caller-saved one: the short entry
/// saves only the latter kind).
const BASE: usize = 20;
const DEST: usize = 9;

extern "C" {
    fn aborts_probe_load(p: *mut Probe);
    fn aborts_probe_store(p: *mut Probe);
    fn aborts_probe_fetch(p: *mut Probe);
}

el1_rt::regs_probe!("aborts_probe_load", "ldr x9, [x20]");
el1_rt::regs_probe!("aborts_probe_store", "str x9, [x20]");
// The fetch: x20 holds a `ret`; it returns to the instruction after the
// `blr` (x30 is the link register then, not its pattern).
el1_rt::regs_probe!("aborts_probe_fetch", "blr x20");

/// A distinct pattern per register, `addr` in [`BASE`], NZCV = 0b1010.
fn probe(addr: u64) -> Probe {
    let mut p = Probe::pattern(0xa5a5, 0b1010 << 28);
    p.x[BASE] = addr;
    p
}

/// The registers (but `except`) and NZCV hold what `before` loaded.
fn intact(p: &Probe, before: &Probe, except: &[usize]) -> bool {
    p.intact(before, except, |r, now, was| println!("[host] aborts: {} = {:#x}, was {:#x}", r, now, was))
}

/// Runs one probe routine on `p`.
fn run_probe(f: unsafe extern "C" fn(*mut Probe), p: &mut Probe) {
    // SAFETY: the routine saves and restores every callee-saved register
    // and the stack pointer; the access is at the address the record holds,
    // chosen by the caller (an abort is turned into a skipped access by the
    // probe hook when one is expected).
    unsafe { f(p) }
}

/// The hyp's descriptor-write count (STATS x2): it grows when a fault is
/// resolved by a mapping.
fn pte_writes() -> u64 {
    call(abi::STATS, [0; 6]).map(|r| r[0]).unwrap_or(0)
}

/// Unmaps `[pa, pa + size)` from the host's stage-2 (given to the hyp and
/// back): the next access faults.
fn unmap(pa: u64, size: u64) -> bool {
    call(abi::DONATE_HYP, [pa, size, 0, 0, 0, 0]).is_ok() && call(abi::RECLAIM_HYP, [pa, size, 0, 0, 0, 0]).is_ok()
}

/// Writes a `ret` at `pa` and makes it visible to instruction fetches.
fn write_ret(pa: u64) {
    const RET: u32 = 0xd65f_03c0;
    // SAFETY: `pa` is a page of host RAM this scenario allocated; the
    // maintenance by VA cleans it to the point of unification and drops
    // stale instructions before it is executed.
    unsafe {
        core::ptr::write_volatile(pa as *mut u32, RET);
        core::arch::asm!("dc cvau, {0}", "dsb ish", "ic ivau, {0}", "dsb ish", "isb", in(reg) pa);
    }
}

/// Resolved faults: a load, a store and a fetch, each on a range just
/// unmapped.
fn resolved(hm: &mut HostMem, r: &mut Report) {
    const SZ_2M: u64 = 2 << 20;
    let Some(region) = hm.alloc(SZ_2M, SZ_2M) else {
        r.fail("aborts: host memory");
        return;
    };
    let (load_at, store_at, fetch_at) = (region + 0x1008, region + 0x2010, region + 0x3000);
    write_ret(fetch_at);

    r.check(unmap(region, SZ_2M), "aborts: DONATE_HYP + RECLAIM_HYP unmapped the range");
    let before = probe(load_at);
    let mut p = before;
    let w0 = pte_writes();
    run_probe(aborts_probe_load, &mut p);
    let mapped = pte_writes() > w0;
    let value = read64(load_at);
    r.check(
        mapped && p.x[DEST] == value && intact(&p, &before, &[DEST]),
        "aborts: a load that faults and is resolved: the value loaded, every other register and NZCV intact",
    );

    r.check(unmap(region, SZ_2M), "aborts: the range unmapped again");
    let before = probe(store_at);
    let mut p = before;
    let w0 = pte_writes();
    run_probe(aborts_probe_store, &mut p);
    let mapped = pte_writes() > w0;
    r.check(
        mapped && read64(store_at) == before.x[DEST] && intact(&p, &before, &[]),
        "aborts: a store that faults and is resolved: the value stored, every register and NZCV intact",
    );

    r.check(unmap(region, SZ_2M), "aborts: the range unmapped once more");
    let before = probe(fetch_at);
    let mut p = before;
    let w0 = pte_writes();
    run_probe(aborts_probe_fetch, &mut p);
    let mapped = pte_writes() > w0;
    r.check(
        mapped && intact(&p, &before, &[30]),
        "aborts: a fetch that faults and is resolved: the code ran, every register (but the link) and NZCV intact",
    );
    hm.free(region, SZ_2M);
}

/// Refused accesses: a page donated to the hyp.
fn refused(hm: &mut HostMem, r: &mut Report) {
    let Some(page) = hm.alloc(4096, 4096) else {
        r.fail("aborts: host memory");
        return;
    };
    let (load_at, store_at) = (page + 0x18, page + 0x20);
    r.check(call(abi::DONATE_HYP, [page, 4096, 0, 0, 0, 0]).is_ok(), "aborts: a page donated to the hyp");

    let before = probe(load_at);
    let mut p = before;
    let got = expect_abort(|| run_probe(aborts_probe_load, &mut p));
    // A data abort taken at EL1 (EC 0x25), an external abort (DFSC 0x10),
    // a read (WnR clear), at the access's address.
    let ok = matches!(got, Some((far, esr)) if far == load_at && (esr >> 26) & 0x3f == 0x25
        && esr & 0x3f == 0x10 && esr & (1 << 6) == 0);
    r.check(
        ok && intact(&p, &before, &[]),
        "aborts: a refused load gets its abort at its address, the destination and every register and NZCV intact",
    );

    let before = probe(store_at);
    let mut p = before;
    let got = expect_abort(|| run_probe(aborts_probe_store, &mut p));
    let ok = matches!(got, Some((far, esr)) if far == store_at && (esr >> 26) & 0x3f == 0x25
        && esr & 0x3f == 0x10 && esr & (1 << 6) != 0);
    r.check(
        ok && intact(&p, &before, &[]),
        "aborts: a refused store gets its abort (WnR set), every register and NZCV intact",
    );

    r.check(call(abi::RECLAIM_HYP, [page, 4096, 0, 0, 0, 0]).is_ok(), "aborts: the page reclaimed");
    hm.free(page, 4096);
}

/// An access the short entry declines: a GIC redistributor register the
/// hyp emulates (GICR_TYPER, a 64-bit read), answered with the full frame.
fn declined(info: &BootInfo, r: &mut Report) {
    const GICR_TYPER: u64 = 0x8;
    let Some(rd) = super::devices::redistributor(info) else {
        r.fail("aborts: a redistributor in the DTB");
        return;
    };
    let want = read64(rd + GICR_TYPER);
    let before = probe(rd + GICR_TYPER);
    let mut p = before;
    run_probe(aborts_probe_load, &mut p);
    println!("[host] aborts: GICR_TYPER {:#x} into x{} (plain read: {:#x})", p.x[DEST], DEST, want);
    r.check(
        p.x[DEST] == want && intact(&p, &before, &[DEST]),
        "aborts: an emulated GICR load (the full frame): the value in its register, every other register and NZCV intact",
    );
}

pub fn run(info: &BootInfo, hm: &mut HostMem, r: &mut Report) {
    resolved(hm, r);
    refused(hm, r);
    declined(info, r);
}
