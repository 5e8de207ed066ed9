//! `shim.test=leaks` (`-smp 1`): nothing crosses the world switch.
//!
//! The host writes its patterns into every register it can (the table of
//! el1_rt::sysregs, plus x8..x30, V0..V31, FPCR and FPSR around each
//! VCPU_RUN) and runs the guest payload's `leaks` test:
//! 1. the guest reads everything at start: it must see reset values and
//!    none of the host's (host → guest);
//! 2. the guest fills every register it can write with its patterns and
//!    leaves through each kind of exit in turn (MMIO read, MMIO write,
//!    host-service hypercall, abort, timer preemption, power-off); at each,
//!    the host's registers must be what they were before VCPU_RUN, and no
//!    guest value may show in them (guest → host);
//! 3. a fresh VM on the same CPU reads everything again: reset values, none
//!    of the last guest's and none of the host's (guest → guest).
//!
//! One PASS/FAIL line per register group and per exit kind; each FAIL is
//! preceded by the registers that leaked.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use el1_rt::isolation::{self, kind, svc, Page, MMIO_IPA, NO_MEMORY_IPA, NREGS};
use el1_rt::println;
use el1_rt::sysregs::{self, Group, GUEST_MARK, HOST_MARK, REGS};
use hyp_abi::host::{exit, VCPU_RUN};

use crate::images::GuestImage;
use crate::mem::HostMem;
use crate::report::Report;
use crate::vmm::{Guest, GUEST_UART};

/// The host's general-purpose and FP/SIMD state around one VCPU_RUN
/// (layout fixed by `leaks_host_run`): loaded before the HVC, stored after.
#[repr(C, align(16))]
#[derive(Clone)]
struct HostRun {
    x: [u64; 31],
    sp_before: u64,
    sp_after: u64,
    _pad: u64,
    v: [u64; 64],
    fpcr: u64,
    fpsr: u64,
}

extern "C" {
    fn leaks_host_run(run: *mut HostRun);
}

core::arch::global_asm!(
    ".global leaks_host_run",
    // x0 = &mut HostRun: callee-saved state on the stack, every x and V
    // register loaded from the record, HVC, every register stored back.
    "leaks_host_run:",
    "    sub sp, sp, #192",
    el1_rt::callee_save!("sp"),
    "    stp d8, d9, [sp, #96]",
    "    stp d10, d11, [sp, #112]",
    "    stp d12, d13, [sp, #128]",
    "    stp d14, d15, [sp, #144]",
    "    mrs x2, fpcr",
    "    mrs x3, fpsr",
    "    stp x2, x3, [sp, #160]",
    "    str x0, [sp, #176]",
    "    add x2, x0, #{v}",
    el1_rt::q_load_all!("x2"),
    "    ldp x3, x4, [x2]",
    "    msr fpcr, x3",
    "    msr fpsr, x4",
    "    mov x2, sp",
    "    str x2, [x0, #{sp_before}]",
    el1_rt::x_load_all!("x0"),
    "    hvc #0",
    "    stp x0, x1, [sp, #-16]!",
    "    ldr x0, [sp, #(16 + 176)]",
    el1_rt::x_store_x2_x30!("x0"),
    "    ldp x2, x3, [sp], #16",
    "    stp x2, x3, [x0]",
    "    mov x2, sp",
    "    str x2, [x0, #{sp_after}]",
    "    add x2, x0, #{v}",
    el1_rt::q_store_all!("x2"),
    "    mrs x3, fpcr",
    "    mrs x4, fpsr",
    "    stp x3, x4, [x2]",
    "    ldp x2, x3, [sp, #160]",
    "    msr fpcr, x2",
    "    msr fpsr, x3",
    "    ldp d8, d9, [sp, #96]",
    "    ldp d10, d11, [sp, #112]",
    "    ldp d12, d13, [sp, #128]",
    "    ldp d14, d15, [sp, #144]",
    el1_rt::callee_restore!("sp"),
    "    add sp, sp, #192",
    "    ret",
    v = const core::mem::offset_of!(HostRun, v),
    sp_before = const core::mem::offset_of!(HostRun, sp_before),
    sp_after = const core::mem::offset_of!(HostRun, sp_after),
);

const _: () = assert!(core::mem::offset_of!(HostRun, fpcr) == core::mem::offset_of!(HostRun, v) + 512);

impl HostRun {
    /// VCPU_RUN(handle, vCPU 0, reply) with the host's patterns in x8..x30
    /// and in the FP/SIMD registers.
    fn new(handle: u64, reply: [u64; 4]) -> HostRun {
        let mut x = [0; 31];
        x[0] = VCPU_RUN as u64;
        x[1] = handle;
        x[3..7].copy_from_slice(&reply);
        for (n, v) in x.iter_mut().enumerate().skip(8) {
            *v = HOST_MARK | (0x6000 << 32) | n as u64;
        }
        let v = core::array::from_fn(|j| HOST_MARK | ((0xf000 + (j as u64 & 1)) << 32) | (j as u64 >> 1));
        HostRun { x, sp_before: 0, sp_after: 0, _pad: 0, v, fpcr: isolation::FPCR_HOST, fpsr: isolation::FPSR_HOST }
    }
}

type Snapshot = [Result<u64, u64>; NREGS];

/// Writes the host's pattern into every register it may change; returns
/// what the registers then hold.
fn host_patterns() -> Snapshot {
    sysregs::write_patterns(|r| r.host);
    sysregs::read_all()
}

/// One VCPU_RUN with the host's patterns everywhere: (before, registers
/// after, the run record in and out).
fn run_once(handle: u64, reply: [u64; 4]) -> (Snapshot, Snapshot, HostRun, HostRun) {
    let before = host_patterns();
    let input = HostRun::new(handle, reply);
    let mut out = input.clone();
    // SAFETY: the routine saves and restores every callee-saved register,
    // the FP control state and the stack; the HVC is VCPU_RUN.
    unsafe { leaks_host_run(&mut out) };
    let after = sysregs::read_all();
    (before, after, input, out)
}

/// Host calls that return without a world switch (the hyp's short host-call
/// entry saves only the registers its own code may clobber; VCPU_RUN, here
/// refused, takes the full frame): (name, x0..x2 in, x0 and x1 expected
/// out). Every other register must come back as it went in, and SP and
/// the FP/SIMD state too.
const HOST_CALLS: [(&str, [u64; 3], [u64; 2]); 4] = [
    ("NOP", [hyp_abi::host::NOP as u64, 0x1111, 0x2222], [0, 0]),
    // An unknown function: x0 = NOT_SUPPORTED, x1 untouched.
    ("unknown function", [hyp_abi::host::NOP as u64 + 0x40, 0x1111, 0x2222], [-1i64 as u64, 0x1111]),
    ("PIN with bad flags", [hyp_abi::host::PIN as u64, 0x4000_0000, 7], [0, -(hyp_abi::errno::EINVAL) as u64]),
    ("VCPU_RUN of no VM", [VCPU_RUN as u64, 0xdead, 0], [0, -(hyp_abi::errno::ENOENT) as u64]),
];

/// Every register around each of HOST_CALLS.
fn host_calls(r: &mut Report) {
    for (name, x_in, want) in HOST_CALLS {
        let mut input = HostRun::new(0, [0; 4]);
        for (n, v) in input.x.iter_mut().enumerate().take(8) {
            *v = HOST_MARK | (0x6000 << 32) | n as u64;
        }
        input.x[..3].copy_from_slice(&x_in);
        let mut out = input.clone();
        // SAFETY: as in run_once; the HVC is a host call that returns to
        // the host.
        unsafe { leaks_host_run(&mut out) };
        let mut bad: Vec<String> = Vec::new();
        let mut expected = input.x;
        expected[..2].copy_from_slice(&want);
        for (n, (got, w)) in out.x.iter().zip(expected).enumerate() {
            if *got != w {
                bad.push(format!("x{n} = {got:#x}, want {w:#x}"));
            }
        }
        if out.sp_after != out.sp_before {
            bad.push(format!("SP = {:#x}, was {:#x}", out.sp_after, out.sp_before));
        }
        if out.v != input.v || out.fpcr != input.fpcr || out.fpsr != input.fpsr {
            bad.push(String::from("FP/SIMD state changed"));
        }
        report(r, &bad, &format!("leaks: host call {name}: every register but the results intact"));
    }
}

/// Everything the guest loaded or read back: a value equal to one of
/// these in a host register came from the guest.
struct GuestValues {
    values: Vec<u64>,
}

impl GuestValues {
    fn from_page(p: &Page) -> GuestValues {
        let mut values = Vec::new();
        for n in 0..31 {
            if p.gpr_pattern & (1 << n) != 0 {
                values.push(p.gpr[n]);
            }
        }
        values.push(p.sp);
        values.extend_from_slice(&p.v);
        values.extend(p.win_got.iter().copied());
        values.extend((0..NREGS).filter(|i| p.got_ok & (1 << i) != 0).map(|i| p.got[i]));
        values.retain(|v| v & (0xffff << 48) == GUEST_MARK);
        GuestValues { values }
    }
    fn has(&self, v: u64) -> bool {
        self.values.contains(&v)
    }
}

/// The guest's value of register `i` while it filled them (window
/// registers come from `win_got`).
fn guest_got(p: &Page, i: usize) -> Option<u64> {
    if let Some(j) = sysregs::WINDOW.iter().position(|n| *n == REGS[i].name) {
        return Some(p.win_got[j]);
    }
    (p.got_ok & (1 << i) != 0).then_some(p.got[i])
}

fn groups() -> impl Iterator<Item = Group> {
    Group::SWITCHED.into_iter().chain(Group::TRAPPED)
}

/// Checks the host's registers at an exit of kind `k`: one line per group.
fn check_exit(r: &mut Report, k: u64, p: &Page, before: &Snapshot, after: &Snapshot, input: &HostRun, out: &HostRun) {
    let what = |g: &str| format!("leaks: {} exit: {}: the host's values intact, none of the guest's", kind::name(k), g);
    let guest = GuestValues::from_page(p);
    // x8..x30 and SP must come back; x0..x7 are the results.
    let mut bad: Vec<String> = Vec::new();
    for n in 8..31 {
        if out.x[n] != input.x[n] {
            bad.push(format!("x{n} = {:#x}, was {:#x}", out.x[n], input.x[n]));
        }
    }
    for n in 0..8 {
        if guest.has(out.x[n]) {
            bad.push(format!("x{n} = {:#x} (a guest value)", out.x[n]));
        }
    }
    if out.sp_after != out.sp_before {
        bad.push(format!("SP = {:#x}, was {:#x}", out.sp_after, out.sp_before));
    }
    report(r, &bad, &what("general-purpose registers and SP"));
    let mut bad: Vec<String> = Vec::new();
    for j in 0..64 {
        if out.v[j] != input.v[j] {
            bad.push(format!("V{}[{}] = {:#x}, was {:#x}", j / 2, j % 2, out.v[j], input.v[j]));
        }
    }
    if out.fpcr != input.fpcr || out.fpsr != input.fpsr {
        bad.push(format!("FPCR/FPSR = {:#x}/{:#x}, were {:#x}/{:#x}", out.fpcr, out.fpsr, input.fpcr, input.fpsr));
    }
    report(r, &bad, &what("FP/SIMD registers"));
    for g in groups() {
        let mut bad: Vec<String> = Vec::new();
        for (i, reg) in REGS.iter().enumerate().filter(|(_, reg)| reg.group == g) {
            let (b, a) = (before[i], after[i]);
            let changed = match (b, a) {
                (Ok(b), Ok(a)) => (b & reg.mask) != (a & reg.mask),
                (Err(_), Err(_)) => false,
                _ => true,
            };
            if changed {
                let whose = match a {
                    Ok(a) if guest_got(p, i) == Some(a) || guest.has(a) => " (the guest's)",
                    _ => "",
                };
                bad.push(format!("{} = {}, was {}{}", reg.name, show(a), show(b), whose));
            }
        }
        report(r, &bad, &what(g.name()));
    }
}

fn show(v: Result<u64, u64>) -> String {
    match v {
        Ok(v) => format!("{v:#x}"),
        Err(esr) => format!("<exception, ESR {esr:#x}>"),
    }
}

fn report(r: &mut Report, bad: &[String], what: &str) {
    for b in bad {
        println!("[host]   {}", b);
    }
    r.check(bad.is_empty(), what);
}

/// The guest's readings at start: reset values (trapped registers: 0 or
/// UNDEF), and none of the host's values (`host`: the host's registers
/// while the guest ran) or of the previous guest's (`last`).
fn check_readings(r: &mut Report, who: &str, p: &Page, host: &Snapshot, host_run: &HostRun, last: Option<&Page>) {
    // host_run: the host's registers around the VCPU_RUN that started the guest.
    let e = &p.entry;
    // General-purpose registers and SP: x0 is the DTB address, the rest 0.
    let mut bad: Vec<String> = Vec::new();
    if e.gpr_or != 0 {
        bad.push(format!("x1..x30 ORed = {:#x}, want 0", e.gpr_or));
    }
    if e.sp != 0 {
        bad.push(format!("SP = {:#x}, want 0", e.sp));
    }
    let host_gpr = (e.gpr_or & (0xffff << 48)) == HOST_MARK || e.sp == host_run.sp_before;
    report(r, &bad, &format!("leaks: {who}: general-purpose registers and SP start from reset values"));
    r.check(!host_gpr, &format!("leaks: {who}: general-purpose registers and SP: none of the host's"));
    let mut bad: Vec<String> = Vec::new();
    for j in 0..64 {
        if e.v[j] != 0 {
            let whose = if host_run.v.contains(&e.v[j]) { " (the host's)" } else { "" };
            bad.push(format!("V{}[{}] = {:#x}{}", j / 2, j % 2, e.v[j], whose));
        }
    }
    if e.fpcr != 0 || e.fpsr != 0 {
        bad.push(format!("FPCR/FPSR = {:#x}/{:#x}", e.fpcr, e.fpsr));
    }
    report(r, &bad, &format!("leaks: {who}: FP/SIMD registers start from reset values"));
    let host_fp = e.v.iter().any(|v| host_run.v.contains(v)) || e.fpcr == host_run.fpcr;
    r.check(!host_fp, &format!("leaks: {who}: FP/SIMD registers: none of the host's"));
    for g in groups() {
        let trapped = Group::TRAPPED.contains(&g);
        let (mut not_reset, mut hosts): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
        for (i, reg) in REGS.iter().enumerate().filter(|(_, reg)| reg.group == g) {
            let undef = p.read_undef & (1 << i) != 0;
            let v = p.reads[i];
            if undef {
                if !trapped {
                    not_reset.push(format!("{}: exception on read, ESR {:#x}", reg.name, p.read_esr[i]));
                }
                continue;
            }
            let whose = if last.and_then(|l| guest_got(l, i)).is_some_and(|l| l == v) {
                " (the last guest's)"
            } else if host[i].is_ok_and(|h| h == v) {
                " (the host's)"
            } else {
                ""
            };
            let reset = reset_value(p, i);
            if v & reg.mask != reset & reg.mask {
                not_reset.push(format!("{} = {:#x}, want {:#x}{}", reg.name, v, reset, whose));
            }
            // A host value the guest could see by chance (the reset value) proves nothing.
            if host[i].is_ok_and(|h| h & reg.mask == v & reg.mask && h & reg.mask != reg.reset & reg.mask) {
                hosts.push(format!("{} = {:#x} (the host's)", reg.name, v));
            }
        }
        let reset = if trapped { "read as 0 or UNDEF" } else { "start from reset values" };
        report(r, &not_reset, &format!("leaks: {who}: {}: {}", g.name(), reset));
        report(r, &hosts, &format!("leaks: {who}: {}: none of the host's", g.name()));
    }
}

/// The value register `i` reads in a vCPU that has not run. The binary
/// points read at least their minimum, which follows from the number of
/// priority bits (ICC_CTLR_EL1.PRIbits): a zero VMCR reads as the minimum.
fn reset_value(p: &Page, i: usize) -> u64 {
    let min_bpr0 = 6u64.saturating_sub((p.reads[sysregs::index("ICC_CTLR_EL1")] >> 8) & 7);
    match REGS[i].name {
        "ICC_BPR0_EL1" => min_bpr0,
        "ICC_BPR1_EL1" => min_bpr0 + 1,
        _ => REGS[i].reset,
    }
}

/// What the host saw of one guest run.
struct Seen {
    page: Option<u64>,
    tested: [bool; 7],
    readings: bool,
}

fn page_at(pa: u64) -> &'static mut Page {
    // SAFETY: `pa` is the guest's report page, shared with the host
    // (MEM_SHARE) and identity-mapped; the guest writes it only while it
    // runs, which is not now.
    unsafe { &mut *(pa as *mut Page) }
}

/// At the first exit of kind `k` while the guest tests `k`: the checks.
fn tested(r: &mut Report, k: u64, under_test: u64, seen: &mut Seen, regs: (&Snapshot, &Snapshot, &HostRun, &HostRun)) {
    if under_test == k && !seen.tested[k as usize] {
        seen.tested[k as usize] = true;
        let p = page_at(seen.page.expect("the page is known once a test runs"));
        check_exit(r, k, p, regs.0, regs.1, regs.2, regs.3);
    }
}

/// Runs `g` to power-off, checking registers at the exits under test.
fn run_guest(g: &mut Guest, r: &mut Report, who: &str, last: Option<&Page>) -> Seen {
    let mut seen = Seen { page: None, tested: [false; 7], readings: false };
    let mut reply = [0u64; 4];
    loop {
        let (before, after, input, out) = run_once(g.handle, reply);
        reply = [0; 4];
        if out.x[0] != 0 || out.x[1] != 0 {
            println!("[host] vcpu_run: x0 = {:#x}, x1 = {}", out.x[0], out.x[1] as i64);
            r.fail("leaks: VCPU_RUN succeeds");
            return seen;
        }
        let (reason, d) = (out.x[2], [out.x[3], out.x[4], out.x[5], out.x[6], out.x[7]]);
        let under_test = seen.page.map(|pa| page_at(pa).kind).unwrap_or(0);
        let regs = (&before, &after, &input, &out);
        match reason {
            exit::MMIO if (GUEST_UART..GUEST_UART + 0x1000).contains(&d[0]) => {
                reply[0] = g.uart(d[0] - GUEST_UART, d[2] != 0, d[3]);
            }
            exit::MMIO if d[0] == MMIO_IPA => {
                let k = if d[2] != 0 { kind::MMIO_WRITE } else { kind::MMIO_READ };
                tested(r, k, under_test, &mut seen, regs);
                reply[0] = 0x0dd;
            }
            exit::HYPERCALL if d[0] == svc::READINGS as u64 => {
                let Some(pa) = g.ipa_to_pa(d[1]) else {
                    r.fail("leaks: the report page is guest memory");
                    return seen;
                };
                seen.page = Some(pa);
                seen.readings = true;
                let p = page_at(pa);
                r.check(p.magic == isolation::MAGIC, &format!("leaks: {who}: the host reads the guest's report page"));
                check_readings(r, who, p, &before, &out, last);
            }
            exit::HYPERCALL if d[0] == svc::EXIT as u64 => tested(r, kind::HYPERCALL, under_test, &mut seen, regs),
            exit::HYPERCALL if d[0] == svc::KIND_DONE as u64 => {
                let (k, well) = (d[1], d[2] != 0);
                r.check(
                    seen.tested.get(k as usize).copied().unwrap_or(false) && well,
                    &format!("leaks: {} exit: the guest left through it", kind::name(k)),
                );
            }
            exit::HYPERCALL => reply = g.service(d[0] as u32, [d[1], d[2], d[3], d[4]]),
            exit::TOPUP => {
                // The guest's MEM_SHARE splits a block (the shim topped
                // the VM up by its blocks' tables): the pages, then the
                // guest runs the call again.
                if crate::topup::topup(g.handle, d[0]) != 0 {
                    r.fail("leaks: VM_TOPUP for the guest's split");
                    return seen;
                }
            }
            exit::GUEST_ABORT if d[0] == NO_MEMORY_IPA => tested(r, kind::ABORT, under_test, &mut seen, regs),
            exit::GUEST_ABORT => println!("[host] vm {}: guest abort at IPA {:#x}", g.handle, d[0]),
            exit::IRQ => {
                if under_test == kind::PREEMPT && !seen.tested[kind::PREEMPT as usize] {
                    r.check(d[0] == 1, "leaks: timer preemption exit: IRQ with x3 = 1 (the time slice ran out)");
                    tested(r, kind::PREEMPT, under_test, &mut seen, regs);
                    if let Some(pa) = seen.page {
                        page_at(pa).stop = 1;
                    }
                }
            }
            exit::SYSTEM_OFF => {
                tested(r, kind::POWER_OFF, under_test, &mut seen, regs);
                return seen;
            }
            other => {
                println!("[host] vm {}: exit {} ({:#x?})", g.handle, other, d);
                r.fail("leaks: only the expected exits");
                return seen;
            }
        }
    }
}

pub fn run(hm: &mut HostMem, images: &[GuestImage], r: &mut Report) {
    let Some(img) = images.first() else {
        r.fail("a guest image in the bundle");
        return;
    };
    let mem = 16 << 20;
    let mut a = match Guest::load(hm, &img.name, img.elf, mem, "test=leaks") {
        Ok(g) => g,
        Err(e) => {
            println!("[host] cannot load guest: {e}");
            r.fail("leaks: guest loads");
            return;
        }
    };
    host_calls(r);
    println!("[host] leaks: vm {} fills every register it can and exits every way", a.handle);
    let mine = host_patterns();
    for (i, v) in mine.iter().enumerate() {
        if let Err(esr) = v {
            println!("[host] leaks: the host cannot read {} (ESR {:#x})", REGS[i].name, esr);
        }
    }
    let seen = run_guest(&mut a, r, "first VM", None);
    r.check(seen.readings, "leaks: first VM: the guest reported its readings");
    for k in kind::ALL {
        r.check(seen.tested[k as usize], &format!("leaks: {} exit: seen by the host", kind::name(k)));
    }
    // Keep what the first guest wrote, to recognise it in the fresh VM.
    // SAFETY: an all-zero Page is valid (plain integers).
    let mut last: alloc::boxed::Box<Page> = alloc::boxed::Box::new(unsafe { core::mem::zeroed() });
    if let Some(pa) = seen.page {
        // SAFETY: the shared page is readable; Page is plain data.
        unsafe { core::ptr::copy_nonoverlapping(pa as *const Page, &mut *last, 1) };
    }
    let _ = a.destroy(hm);
    let mut b = match Guest::load(hm, &img.name, img.elf, mem, "test=leaks-fresh") {
        Ok(g) => g,
        Err(e) => {
            println!("[host] cannot load guest: {e}");
            r.fail("leaks: fresh guest loads");
            return;
        }
    };
    println!("[host] leaks: vm {} is new, on the same CPU", b.handle);
    let seen = run_guest(&mut b, r, "fresh VM", Some(&last));
    r.check(seen.readings, "leaks: fresh VM: the guest reported its readings");
    let _ = b.destroy(hm);
    // Leave the debug and PMU state as the host found it at boot.
    sysregs::write_patterns(|reg| matches!(reg.group, Group::Debug | Group::Pmu | Group::PTimer).then_some(0));
}
