//! PMU instruction counters for benchmarks: counter 0 counts instructions
//! retired (event 0x08) at EL2 only, counter 1 at every level. Exact and
//! repeatable under QEMU with `-icount shift=0`.

/// PMEVTYPER: P (don't count EL1), U (don't count EL0), NSH (count EL2).
const P: u64 = 1 << 31;
const U: u64 = 1 << 30;
const NSH: u64 = 1 << 27;
const INST_RETIRED: u64 = 0x08;

/// Programs and starts both counters.
pub fn init() {
    // SAFETY: PMU registers are available at EL1 (MDCR_EL2.HPMN gives them
    // all to EL1 and nothing traps); writing them has no memory effects.
    unsafe {
        core::arch::asm!(
            "msr pmevtyper0_el0, {t0}",
            "msr pmevtyper1_el0, {t1}",
            "msr pmcntenset_el0, {en}",
            "mrs {tmp}, pmcr_el0",
            "orr {tmp}, {tmp}, #1",
            "msr pmcr_el0, {tmp}",
            "isb",
            t0 = in(reg) P | U | NSH | INST_RETIRED,
            t1 = in(reg) NSH | INST_RETIRED,
            en = in(reg) 0b11u64,
            tmp = out(reg) _,
        )
    };
}

/// (EL2 instructions, all-level instructions) so far.
#[inline(always)]
pub fn read() -> (u64, u64) {
    let (a, b): (u64, u64);
    // SAFETY: reading event counters has no side effects.
    unsafe { core::arch::asm!("isb", "mrs {0}, pmevcntr0_el0", "mrs {1}, pmevcntr1_el0", out(reg) a, out(reg) b) };
    (a, b)
}

/// Measures `f` over `n` repetitions: (EL2, all levels) instructions, total.
pub fn measure(n: u64, mut f: impl FnMut(u64)) -> (u64, u64) {
    let (mut el2, mut all) = (0, 0);
    for i in 0..n {
        let a = read();
        f(i);
        let b = read();
        el2 += b.0.wrapping_sub(a.0);
        all += b.1.wrapping_sub(a.1);
    }
    (el2, all)
}
