//! `shim.test=traps`: what the hyp traps, from both sides. The host cannot
//! count the hyp's instructions with the PMU (EL2 counting prohibited);
//! the guest payload's `traps` test checks what a guest gets for each
//! trapped register or instruction. `shim.test=pmu-owned` (the hyp booted
//! with `hyp.bench_pmu`, as the bench does): the PMU is left to the host
//! and guests, EL2 counting on.

use el1_rt::{pmu, println};
use hyp_abi::host::NOP;

use crate::hyp;
use crate::images::GuestImage;
use crate::mem::HostMem;
use crate::report::Report;

/// (EL2, all-level) instructions the host's PMU counts over 16 NOP hypercalls.
fn count_nops() -> (u64, u64) {
    pmu::init();
    let n = pmu::measure(16, |_| {
        let _ = hyp::call(NOP, [0; 6]);
    });
    // Stop both counters again (PMCNTENCLR, PMCR.E = 0).
    // SAFETY: PMU control registers; no memory effects.
    unsafe { core::arch::asm!("msr pmcntenclr_el0, {}", "msr pmcr_el0, xzr", "isb", in(reg) 3u64) };
    n
}

fn guest_suite(hm: &mut HostMem, images: &[GuestImage], r: &mut Report, args: &str) {
    super::guests::suite(hm, images, r, args);
}

pub fn run(hm: &mut HostMem, images: &[GuestImage], r: &mut Report) {
    let (el2, all) = count_nops();
    println!("[host] traps: PMU over 16 NOP hypercalls: {el2} instructions at EL2, {all} at all levels");
    r.check(all > 0, "traps: the host's PMU counts its own instructions");
    r.check(el2 == 0, "traps: the host cannot count the hyp's instructions (EL2 counting prohibited)");
    guest_suite(hm, images, r, "test=traps");
}

pub fn pmu_owned(hm: &mut HostMem, images: &[GuestImage], r: &mut Report) {
    let (el2, all) = count_nops();
    println!("[host] pmu-owned: PMU over 16 NOP hypercalls: {el2} instructions at EL2, {all} at all levels");
    r.check(el2 > 0 && all > el2, "pmu-owned: with hyp.bench_pmu the host counts the hyp's instructions");
    guest_suite(hm, images, r, "test=pmu-owned");
}
