//! `test=leaks` / `test=leaks-fresh`: the guest side of the world-switch
//! isolation test. The guest reads every register it can at start (the
//! host checks it sees reset values and none of the host's), then, once
//! per exit kind, fills every switched register it can write with its
//! pattern and leaves through that exit; the host checks its own registers
//! at that exit. The patterns, the values read back and the readings are
//! in a page the guest shares with the host ([`Page`]).
//!
//! The last step before each exit runs in assembly with the MMU off, so
//! that SCTLR_EL1, TCR_EL1, TTBR0_EL1, MAIR_EL1, VBAR_EL1, SP and every
//! general-purpose register can hold a pattern too.

use el1_rt::isolation::{self, kind, off, svc, Page, MMIO_IPA, MMIO_WRITE_VALUE, NO_MEMORY_IPA};
use el1_rt::println;
use el1_rt::sysregs::{self, Group, REGS, WINDOW};
use hyp_abi::psci;

use crate::abi::{call, share};
use crate::tests::Tally;

/// The shared page(s) (zero at start: in .bss).
#[no_mangle]
// SAFETY: an all-zero Page is valid (plain integers).
static mut LEAKS_PAGE: Page = unsafe { core::mem::zeroed() };

extern "C" {
    fn leaks_window(page: *mut Page);
    static leaks_vectors: u8;
}

fn page() -> &'static mut Page {
    // SAFETY: this single-vCPU guest is the only user of the page; the
    // host only reads it, and writes `stop` while the guest spins.
    unsafe { &mut *core::ptr::addr_of_mut!(LEAKS_PAGE) }
}

fn counter() -> (u64, u64) {
    let (now, freq): (u64, u64);
    // SAFETY: reading the virtual counter and its frequency has no side effect.
    unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", "mrs {}, cntfrq_el0", out(reg) now, out(reg) freq) };
    (now, freq)
}

/// Reads every register of the table, and the entry state start.S
/// recorded for the registers the runtime has changed since.
fn read_everything(p: &mut Page) {
    for (i, v) in sysregs::read_all().into_iter().enumerate() {
        match v {
            Ok(v) => p.reads[i] = v,
            Err(esr) => {
                p.read_undef |= 1 << i;
                p.read_esr[i] = esr;
            }
        }
    }
    let e = sysregs::entry();
    for (name, v) in [
        ("SCTLR_EL1", e.sctlr),
        ("TTBR0_EL1", e.ttbr0),
        ("TCR_EL1", e.tcr),
        ("MAIR_EL1", e.mair),
        ("VBAR_EL1", e.vbar),
        ("CPACR_EL1", e.cpacr),
    ] {
        p.reads[sysregs::index(name)] = v;
    }
    p.entry = *e;
}

/// Writes the guest's pattern into every register outside the window and
/// records what stuck. Trapped registers first and exception registers
/// last: a trapped access may take an exception, which rewrites ELR, SPSR,
/// ESR and FAR.
fn write_patterns(p: &mut Page) {
    p.got_ok = 0;
    let order = [
        Group::PTimer,
        Group::Debug,
        Group::Pmu,
        Group::Mmu,
        Group::ThreadId,
        Group::Control,
        Group::VTimer,
        Group::PAuth,
        Group::Tpidr2,
        Group::Gic,
        Group::Ras,
        Group::Exception,
    ];
    for g in order {
        for (i, r) in REGS.iter().enumerate().filter(|(_, r)| r.group == g && !r.window) {
            if r.write(r.guest).is_ok() {
                if let Ok(v) = r.read() {
                    p.got[i] = v;
                    p.got_ok |= 1 << i;
                }
            }
        }
    }
}

/// Everything the window code loads for exit `k`.
fn prepare(p: &mut Page, k: u64) {
    for (j, name) in WINDOW.iter().enumerate() {
        p.win[j] = REGS[sysregs::index(name)].guest;
    }
    if k == kind::ABORT {
        // The injected abort must land somewhere: the window's own vectors.
        p.win[4] = core::ptr::addr_of!(leaks_vectors) as u64;
    }
    p.sp = isolation::sp_pattern(k);
    for n in 0..31 {
        p.gpr[n] = isolation::gpr_pattern(k, n);
    }
    let mut operational: [(usize, u64); 5] = [(31, 0); 5];
    match k {
        // x0 holds a pattern the MMIO read overwrites: the exit must not show it.
        kind::MMIO_READ => operational[0] = (1, MMIO_IPA),
        kind::MMIO_WRITE => operational[..2].copy_from_slice(&[(0, MMIO_WRITE_VALUE), (1, MMIO_IPA)]),
        // x1..x4 go to the host with the call.
        kind::HYPERCALL => operational.copy_from_slice(&[(0, svc::EXIT as u64), (1, 0), (2, 0), (3, 0), (4, 0)]),
        kind::ABORT => operational[0] = (1, NO_MEMORY_IPA),
        kind::PREEMPT => {
            // Spin until the host says stop, or 500 ms (50 slices) pass.
            let (now, freq) = counter();
            let stop = core::ptr::addr_of!(p.stop) as u64;
            operational[..3].copy_from_slice(&[(0, 0), (1, now + freq / 2), (2, stop)]);
        }
        kind::POWER_OFF => operational[0] = (0, psci::SYSTEM_OFF as u64),
        _ => {}
    }
    p.gpr_pattern = (1 << 31) - 1;
    for (n, v) in operational.into_iter().filter(|(n, _)| *n < 31) {
        p.gpr[n] = v;
        p.gpr_pattern &= !(1 << n);
    }
    for n in 0..32 {
        p.v[2 * n] = isolation::v_pattern(k, n, 0);
        p.v[2 * n + 1] = isolation::v_pattern(k, n, 1);
    }
    p.fpcr = isolation::FPCR_GUEST;
    p.fpsr = isolation::FPSR_GUEST;
    p.stop = 0;
}

/// Reads everything into the report page, shares its two pages with the
/// host and tells the host the readings are there.
fn report_readings(t: &mut Tally) -> &'static mut Page {
    let p = page();
    let ipa = p as *mut Page as u64;
    read_everything(p);
    p.magic = isolation::MAGIC;
    t.eq(share(ipa), 0, "leaks: MEM_SHARE of the report page");
    t.eq(share(ipa + 4096), 0, "leaks: MEM_SHARE of its second page");
    call(svc::READINGS, [ipa, 0, 0]);
    p
}

/// `test=leaks`: readings at start, then one window per exit kind; the
/// last one powers the guest off.
pub fn leaks(t: &mut Tally) {
    let p = report_readings(t);
    for k in kind::ALL {
        prepare(p, k);
        write_patterns(p);
        p.kind = k;
        // SAFETY: the window code saves and restores everything the Rust
        // code relies on (callee-saved registers, SP, FP state, MMU).
        unsafe { leaks_window(p) };
        p.kind = 0;
        // The guest's FP/SIMD across the exit and the host's run: its own.
        let fp_kept = p.v_back == p.v && p.fp_back == p.fp_got;
        if !fp_kept {
            for j in (0..64).filter(|&j| p.v_back[j] != p.v[j]) {
                println!("guest: V{}[{}] = {:#x}, was {:#x}", j / 2, j % 2, p.v_back[j], p.v[j]);
            }
            println!("guest: FPCR/FPSR = {:#x?}, were {:#x?}", p.fp_back, p.fp_got);
        }
        let what = alloc::format!("leaks: {} exit: the guest's FP/SIMD registers are its own after it", kind::name(k));
        t.check(fp_kept, &what);
        let ended_well = k != kind::PREEMPT || p.stop != 0;
        call(svc::KIND_DONE, [k, ended_well as u64, 0]);
        if k == kind::POWER_OFF {
            t.check(false, "leaks: PSCI SYSTEM_OFF does not return");
        }
    }
}

/// PACGA (generic authentication with APGAKey) of `v` with modifier `m`:
/// x0 = PACGA(x1, x2), encoded (no assembler feature needed).
fn pacga(v: u64, m: u64) -> u64 {
    let r: u64;
    // SAFETY: PACGA only computes a value from two registers and the key.
    unsafe {
        core::arch::asm!(".inst 0x9ac23020", in("x1") v, in("x2") m, out("x0") r, options(nomem, nostack));
    }
    r
}

/// The vCPU's first use of pointer authentication is an instruction, not
/// a key register: the hyp traps it (HCR_EL2.API) and must load the
/// vCPU's keys (reset: 0), never leave the host's in place. PACGA with the
/// keys as the trap left them must equal PACGA once APGAKey is set to 0
/// here (the host's APGAKey holds its pattern).
fn pac_first_use(t: &mut Tally) {
    let (v, m) = (0x0123_4567_89ab_cdef, 0xfeed_f00d);
    let first = pacga(v, m);
    // SAFETY: writing this vCPU's own generic-authentication key.
    unsafe {
        core::arch::asm!("msr S3_0_C2_C3_0, xzr", "msr S3_0_C2_C3_1, xzr", "isb", options(nomem, nostack));
    }
    let zero_key = pacga(v, m);
    if first != zero_key || first == 0 {
        println!("guest: PACGA = {first:#x} at first use, {zero_key:#x} with APGAKey 0");
    }
    t.check(first == zero_key && first != 0, "leaks: fresh VM: PACGA as its first use of PAuth uses its own keys");
}

/// `test=leaks-fresh`: the readings of a new VM, then power-off.
pub fn leaks_fresh(t: &mut Tally) {
    // Before anything reads the key registers (that would be a first use too).
    pac_first_use(t);
    report_readings(t);
    println!("guest: fresh VM readings reported");
}

/// `test=spin`: spins with interrupts masked, 500 ms (50 time slices) at a
/// time, telling the host each time a spin ran to its end.
pub fn spin() -> ! {
    call(svc::SPIN_START, [0; 3]);
    loop {
        let (start, freq) = counter();
        let end = start + freq / 2;
        // SAFETY: a busy loop on the virtual counter, interrupts masked.
        unsafe {
            core::arch::asm!(
                "msr daifset, #0xf",
                "1: mrs {t}, cntvct_el0",
                "cmp {t}, {end}",
                "b.lo 1b",
                t = out(reg) _,
                end = in(reg) end,
                options(nomem, nostack)
            )
        };
        call(svc::SPIN_TIMEOUT, [counter().0 - start, 0, 0]);
    }
}

core::arch::global_asm!(
    // x1 = &page.gpr: loads x0..x30 (x1 last).
    ".macro leaks_load_gprs",
    el1_rt::x_load_all!("x1"),
    ".endm",
    "",
    ".section .text.leaks, \"ax\"",
    ".global leaks_window",
    // x0 = the page. Saves what the Rust code needs (x1 = &page.save),
    // loads every pattern (MMU off from SCTLR's on), leaves through the
    // exit of page.kind, and restores on the way back.
    "leaks_window:",
    "    add x1, x0, #{save}",
    el1_rt::callee_save!("x1"),
    "    mov x2, sp",
    "    str x2, [x1, #96]",
    "    stp d8, d9, [x1, #112]",
    "    stp d10, d11, [x1, #128]",
    "    stp d12, d13, [x1, #144]",
    "    stp d14, d15, [x1, #160]",
    "    mrs x2, fpcr",
    "    mrs x3, fpsr",
    "    stp x2, x3, [x1, #176]",
    "    mrs x2, sctlr_el1",
    "    mrs x3, tcr_el1",
    "    stp x2, x3, [x1, #192]",
    "    mrs x2, ttbr0_el1",
    "    mrs x3, mair_el1",
    "    stp x2, x3, [x1, #208]",
    "    mrs x2, vbar_el1",
    "    mrs x3, cpacr_el1",
    "    stp x2, x3, [x1, #224]",
    // FP/SIMD patterns.
    "    add x2, x0, #{v}",
    el1_rt::q_load_all!("x2"),
    "    add x2, x0, #{fpcr}",
    "    ldp x3, x4, [x2]",
    "    msr fpcr, x3",
    "    msr fpsr, x4",
    "    mrs x3, fpcr",
    "    mrs x4, fpsr",
    "    stp x3, x4, [x2, #16]",
    // Window registers (sysregs::WINDOW order); SCTLR's pattern turns the
    // MMU off, so the others may hold anything.
    "    add x1, x0, #{win}",
    "    ldp x2, x3, [x1]",
    "    msr sctlr_el1, x2",
    "    isb",
    "    msr tcr_el1, x3",
    "    ldp x2, x3, [x1, #16]",
    "    msr ttbr0_el1, x2",
    "    msr mair_el1, x3",
    "    ldp x2, x3, [x1, #32]",
    "    msr vbar_el1, x2",
    "    msr cpacr_el1, x3",
    "    isb",
    "    add x1, x0, #{win_got}",
    "    mrs x2, sctlr_el1",
    "    mrs x3, tcr_el1",
    "    stp x2, x3, [x1]",
    "    mrs x2, ttbr0_el1",
    "    mrs x3, mair_el1",
    "    stp x2, x3, [x1, #16]",
    "    mrs x2, vbar_el1",
    "    mrs x3, cpacr_el1",
    "    stp x2, x3, [x1, #32]",
    "    ldr x2, [x0, #{sp}]",
    "    mov sp, x2",
    "    ldr x2, [x0, #{kind}]",
    "    add x1, x0, #{gpr}",
    "    cmp x2, #{mmio_read}",
    "    b.eq 1f",
    "    cmp x2, #{mmio_write}",
    "    b.eq 2f",
    "    cmp x2, #{hypercall}",
    "    b.eq 3f",
    "    cmp x2, #{abort}",
    "    b.eq 4f",
    "    cmp x2, #{preempt}",
    "    b.eq 5f",
    "    cmp x2, #{power_off}",
    "    b.eq 6f",
    "    b 9f",
    "1:  leaks_load_gprs",
    "    ldr x0, [x1]",
    "    b 9f",
    "2:  leaks_load_gprs",
    "    str x0, [x1]",
    "    b 9f",
    "3:  leaks_load_gprs",
    "    hvc #0",
    "    b 9f",
    // The injected abort returns past the load (leaks_vectors).
    "4:  leaks_load_gprs",
    "    ldr x0, [x1]",
    "    b 9f",
    // Spin with interrupts masked until *x2 != 0 or CNTVCT >= x1.
    "5:  leaks_load_gprs",
    "    msr daifset, #0xf",
    "51: ldr x0, [x2]",
    "    cbnz x0, 9f",
    "    mrs x0, cntvct_el0",
    "    cmp x0, x1",
    "    b.lo 51b",
    "    b 9f",
    "6:  leaks_load_gprs",
    "    hvc #0",
    "9:  adrp x1, LEAKS_PAGE",
    "    add x1, x1, :lo12:LEAKS_PAGE",
    "    str x0, [x1, #{result}]",
    // FP/SIMD as the exit left it, before anything else touches it.
    "    add x2, x1, #{v_back}",
    el1_rt::q_store_all!("x2"),
    "    mrs x3, fpcr",
    "    mrs x4, fpsr",
    "    stp x3, x4, [x2]",
    "    add x1, x1, #{save}",
    "    ldp x2, x3, [x1, #224]",
    "    msr vbar_el1, x2",
    "    msr cpacr_el1, x3",
    "    ldp x2, x3, [x1, #208]",
    "    msr ttbr0_el1, x2",
    "    msr mair_el1, x3",
    "    ldp x2, x3, [x1, #192]",
    "    msr tcr_el1, x3",
    "    isb",
    "    tlbi vmalle1",
    "    dsb nsh",
    "    isb",
    "    msr sctlr_el1, x2",
    "    isb",
    "    ldp x2, x3, [x1, #176]",
    "    msr fpcr, x2",
    "    msr fpsr, x3",
    "    ldp d8, d9, [x1, #112]",
    "    ldp d10, d11, [x1, #128]",
    "    ldp d12, d13, [x1, #144]",
    "    ldp d14, d15, [x1, #160]",
    "    ldr x2, [x1, #96]",
    "    mov sp, x2",
    el1_rt::callee_restore!("x1"),
    "    ret",
    "",
    // Vectors for the abort exit: skip the faulting load (x0 is scratch).
    ".balign 2048",
    ".global leaks_vectors",
    "leaks_vectors:",
    ".rept 16",
    ".balign 128",
    "    mrs x0, elr_el1",
    "    add x0, x0, #4",
    "    msr elr_el1, x0",
    "    eret",
    ".endr",
    ".text",
    gpr = const off::GPR,
    save = const off::SAVE,
    v = const off::V,
    fpcr = const off::FPCR,
    v_back = const off::V_BACK,
    win = const off::WIN,
    win_got = const off::WIN_GOT,
    sp = const off::SP,
    kind = const core::mem::offset_of!(Page, kind),
    result = const off::RESULT,
    mmio_read = const kind::MMIO_READ,
    mmio_write = const kind::MMIO_WRITE,
    hypercall = const kind::HYPERCALL,
    abort = const kind::ABORT,
    preempt = const kind::PREEMPT,
    power_off = const kind::POWER_OFF,
);
