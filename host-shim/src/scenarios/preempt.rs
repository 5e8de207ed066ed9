//! `shim.test=preempt` (`-smp 1`, QEMU `-icount`): a guest that spins with
//! interrupts masked cannot keep the CPU. Every VCPU_RUN of it must come
//! back with an IRQ exit, x3 = 1 (the time slice ran out), after the whole
//! slice (CNTFRQ/100 counter ticks) and within a margin of it; a deadline
//! the host set on its own virtual timer, earlier than the slice, must end
//! the run at that deadline.
//!
//! Times are CNTPCT ticks read by the host around VCPU_RUN. Under icount
//! the counter follows the instructions executed, not the host's clock, so
//! the host machine's load does not show (without it, runs on a loaded
//! 2-core machine measured up to 27 ms for a 10 ms slice). The margin,
//! 1% of a slice (100 us: 100,000 instructions at icount's 1 GHz), covers
//! the world switch and the exit path many times over; a run that is not
//! preempted lasts 500 ms (the guest's own deadline; the 20 runs and the
//! deadline run take 201 ms of it).

use alloc::vec::Vec;

use el1_rt::isolation::svc;
use el1_rt::println;
use hyp_abi::host::{exit, VCPU_RUN};

use crate::hyp;
use crate::images::GuestImage;
use crate::mem::HostMem;
use crate::report::Report;
use crate::vmm::{Guest, GUEST_UART};

const RUNS: usize = 20;

fn cntpct() -> u64 {
    let v: u64;
    // SAFETY: reading the physical counter has no side effect.
    unsafe { core::arch::asm!("isb", "mrs {}, cntpct_el0", out(reg) v, options(nomem, nostack)) };
    v
}

fn cntfrq() -> u64 {
    let v: u64;
    // SAFETY: reading the counter frequency has no side effect.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) v, options(nomem, nostack)) };
    v
}

/// The host's own virtual timer: deadline `cval` (CNTVCT ticks), enabled
/// and unmasked; or off.
fn host_vtimer(cval: Option<u64>) {
    // SAFETY: the host shim takes no interrupts (DAIF masked, GIC not set
    // up for it): the timer only marks a deadline.
    unsafe {
        match cval {
            Some(c) => {
                core::arch::asm!("msr cntv_cval_el0, {}", "msr cntv_ctl_el0, {}", "isb", in(reg) c, in(reg) 1u64)
            }
            None => core::arch::asm!("msr cntv_ctl_el0, xzr", "isb"),
        }
    }
}

/// One VCPU_RUN: (exit registers x2.., CNTPCT ticks it took).
fn timed_run(g: &Guest, reply: [u64; 4]) -> Result<([u64; 6], u64), i64> {
    let t0 = cntpct();
    let e = hyp::call(VCPU_RUN, [g.handle, 0, reply[0], reply[1], reply[2], reply[3]])?;
    Ok((e, cntpct() - t0))
}

fn us(ticks: u64, freq: u64) -> u64 {
    ticks * 1_000_000 / freq
}

pub fn run(hm: &mut HostMem, images: &[GuestImage], r: &mut Report) {
    let Some(img) = images.first() else {
        r.fail("a guest image in the bundle");
        return;
    };
    let mut g = match Guest::load(hm, &img.name, img.elf, 16 << 20, "test=spin") {
        Ok(g) => g,
        Err(e) => {
            println!("[host] cannot load guest: {e}");
            r.fail("preempt: guest loads");
            return;
        }
    };
    host_vtimer(None);
    // Until the guest is about to spin.
    let mut reply = [0u64; 4];
    loop {
        match hyp::call(VCPU_RUN, [g.handle, 0, reply[0], reply[1], reply[2], reply[3]]) {
            Ok(e) if e[0] == exit::MMIO && (GUEST_UART..GUEST_UART + 0x1000).contains(&e[1]) => {
                reply = [g.uart(e[1] - GUEST_UART, e[3] != 0, e[4]), 0, 0, 0];
            }
            Ok(e) if e[0] == exit::HYPERCALL && e[1] == svc::SPIN_START as u64 => break,
            Ok(e) if e[0] == exit::IRQ => reply = [0; 4],
            other => {
                println!("[host] preempt: unexpected {:?}", other);
                r.fail("preempt: the guest starts spinning");
                return;
            }
        }
    }
    let freq = cntfrq();
    let slice = freq / 100;
    let margin = slice / 100;
    println!("[host] preempt: vm {} spins with interrupts masked; slice {} us", g.handle, us(slice, freq));
    let mut times: Vec<u64> = Vec::new();
    reply = [0; 4];
    for i in 0..RUNS {
        match timed_run(&g, reply) {
            Ok((e, t)) if e[0] == exit::IRQ && e[1] == 1 => times.push(t),
            Ok((e, t)) if e[0] == exit::HYPERCALL && e[1] == svc::SPIN_TIMEOUT as u64 => {
                println!("[host] preempt: run {}: not preempted: the guest kept the CPU {} us", i + 1, us(t, freq));
                break;
            }
            Ok((e, t)) => {
                println!("[host] preempt: run {}: exit {} x3 = {} after {} us", i + 1, e[0], e[1], us(t, freq));
                break;
            }
            Err(e) => {
                println!("[host] preempt: run {}: VCPU_RUN failed: {}", i + 1, e);
                break;
            }
        }
        reply = [0; 4];
    }
    r.check(
        times.len() == RUNS,
        "preempt: 20 runs of a guest spinning with interrupts masked all end in IRQ exits with x3 = 1",
    );
    if !times.is_empty() {
        let mut sorted = times.clone();
        sorted.sort_unstable();
        let (min, med, max) = (sorted[0], sorted[sorted.len() / 2], sorted[sorted.len() - 1]);
        println!(
            "[host] preempt: {} runs: min {} us, median {} us, max {} us (slice {} us)",
            times.len(),
            us(min, freq),
            us(med, freq),
            us(max, freq),
            us(slice, freq)
        );
        r.check(times.len() == RUNS && max <= slice + margin, "preempt: every run ends within its slice + 1%");
        r.check(min >= slice, "preempt: every preempted run had its whole slice");
    } else {
        r.fail("preempt: every run ends within its slice + 1%");
    }
    if times.len() < RUNS {
        // Not preempted at all: a deadline run would spin another 500 ms.
        r.fail("preempt: the host's own timer deadline (a tenth of the slice) ends the run at that deadline");
        r.check(g.destroy(hm).is_ok(), "preempt: the spinning VM is destroyed");
        return;
    }
    // The host's own deadline, a tenth of a slice ahead.
    let deadline = freq / 1000;
    // SAFETY: reading the virtual counter has no side effect.
    let now: u64 = unsafe {
        let v: u64;
        core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack));
        v
    };
    host_vtimer(Some(now + deadline));
    let res = timed_run(&g, [0; 4]);
    host_vtimer(None);
    match res {
        Ok((e, t)) => {
            println!(
                "[host] preempt: with a host timer deadline {} us ahead: exit {} after {} us",
                us(deadline, freq),
                e[0],
                us(t, freq)
            );
            r.check(
                e[0] == exit::IRQ && t >= deadline && t <= deadline + margin,
                "preempt: the host's own timer deadline (a tenth of the slice) ends the run at that deadline",
            );
        }
        Err(e) => {
            println!("[host] preempt: VCPU_RUN failed: {e}");
            r.fail("preempt: the host's own timer deadline (a tenth of the slice) ends the run at that deadline");
        }
    }
    r.check(g.destroy(hm).is_ok(), "preempt: the spinning VM is destroyed");
}
