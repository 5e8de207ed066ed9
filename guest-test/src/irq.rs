//! `test=irq`: interrupts in a protected guest, through the GICv3 virtual
//! CPU interface the hyp fills and the distributor the host emulates: the
//! virtual timer taken while spinning and while idle in WFI (many times,
//! each within a window of counter ticks), a level-sensitive device
//! interrupt injected again until the device drops its line, and the
//! PL011's transmit interrupt driving output.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use el1_rt::gic;
use el1_rt::println;
use el1_rt::trap::{Frame, Sync};
use hyp_abi::services;

use crate::abi::call;
use crate::tests::Tally;

const UART: u64 = 0x0900_0000;
const IRQ_TEST: u64 = 0x0b00_0000;
const UART_INTID: u32 = 33;
const IRQ_TEST_INTID: u32 = 34;
/// Vector kind of an IRQ taken at EL1 with SP_EL1 (el1_rt vectors).
const IRQ_SPX: u64 = 5;

static TIMER_HITS: AtomicU64 = AtomicU64::new(0);
static TIMER_AT: AtomicU64 = AtomicU64::new(0);
static LEVEL_HITS: AtomicU64 = AtomicU64::new(0);
static UART_HITS: AtomicU64 = AtomicU64::new(0);
static OTHER: AtomicU64 = AtomicU64::new(0);
/// The message the UART interrupt writes, and how far it got.
const MSG: &[u8] = b"guest: this line was written by the PL011 transmit interrupt\n";
static UART_POS: AtomicU64 = AtomicU64::new(0);

fn mmio_w(a: u64, v: u32) {
    // SAFETY: an emulated device register in the identity-mapped device window.
    unsafe { write_volatile(a as *mut u32, v) }
}

fn mmio_r(a: u64) -> u32 {
    // SAFETY: as mmio_w.
    unsafe { read_volatile(a as *const u32) }
}

fn on_irq(kind: u64, _s: Sync, _f: &mut Frame) -> bool {
    if kind != IRQ_SPX {
        return false;
    }
    let intid = gic::ack();
    match intid {
        gic::SPURIOUS => return true,
        gic::VTIMER => {
            TIMER_AT.store(gic::counter().0, SeqCst);
            gic::timer_mask();
            TIMER_HITS.fetch_add(1, SeqCst);
        }
        IRQ_TEST_INTID => {
            LEVEL_HITS.fetch_add(1, SeqCst);
            // Acknowledge at the device, then end the interrupt: the line
            // stays up until the device has had enough.
            mmio_w(IRQ_TEST + 4, 1);
        }
        UART_INTID => {
            UART_HITS.fetch_add(1, SeqCst);
            // UARTICR: clear the transmit interrupt, then feed the next byte.
            mmio_w(UART + 0x44, 1 << 5);
            let pos = UART_POS.fetch_add(1, SeqCst) as usize;
            if pos < MSG.len() {
                mmio_w(UART, MSG[pos] as u32);
            } else {
                mmio_w(UART + 0x38, 0);
            }
        }
        _ => {
            OTHER.fetch_add(1, SeqCst);
        }
    }
    gic::eoi(intid);
    true
}

/// Spins (interrupts on) until `cond` holds or `ticks` pass; true if it held.
fn wait_until(ticks: u64, cond: impl Fn() -> bool) -> bool {
    let end = gic::counter().0 + ticks;
    while gic::counter().0 < end {
        if cond() {
            return true;
        }
        core::hint::spin_loop();
    }
    cond()
}

fn irq_counts() -> (u64, u64, u64) {
    let r = call(services::HOST_IRQ_COUNTS, [0; 3]);
    (r[0], r[1], r[2])
}

/// `rounds` timer interrupts `delta` ticks apart, waiting with `wfi` or
/// spinning; returns (taken, worst latency in ticks, all within `window`).
fn timer_rounds(rounds: u64, delta: u64, window: u64, wfi: bool) -> (u64, u64, bool) {
    let mut worst = 0;
    let mut ok = true;
    let mut taken = 0;
    for _ in 0..rounds {
        let before = TIMER_HITS.load(SeqCst);
        let cval = gic::counter().0 + delta;
        gic::timer_at(cval);
        let end = cval + 100 * delta;
        while TIMER_HITS.load(SeqCst) == before && gic::counter().0 < end {
            if wfi {
                aarch64_wfi();
            }
        }
        if TIMER_HITS.load(SeqCst) == before {
            ok = false;
            gic::timer_off();
            continue;
        }
        taken += 1;
        let at = TIMER_AT.load(SeqCst);
        let lat = at.wrapping_sub(cval);
        if at < cval || lat > window {
            println!("  timer interrupt at {:#x} for a deadline of {:#x}", at, cval);
            ok = false;
        }
        worst = worst.max(lat);
    }
    gic::timer_off();
    (taken, worst, ok)
}

fn aarch64_wfi() {
    // SAFETY: waits for an interrupt; IRQs are unmasked and handled.
    unsafe { core::arch::asm!("wfi") };
}

pub fn irq(t: &mut Tally) {
    el1_rt::trap::set_hook(on_irq);
    gic::init_dist();
    gic::init_cpu(0);
    gic::enable(0, gic::VTIMER, 0xa0);
    gic::irqs_on();
    let freq = gic::counter().1;
    let (delta, window) = (freq / 1000, freq / 2000);

    // The timer while spinning with interrupts unmasked.
    let (taken, worst, ok) = timer_rounds(50, delta, window, false);
    t.eq(taken as i64, 50, "irq: 50 virtual timer interrupts taken while spinning");
    t.check(ok, "irq: each within half a millisecond of its deadline (1 ms apart)");
    println!("guest: timer while spinning: worst latency {} ticks ({} us)", worst, worst * 1_000_000 / freq);

    // The timer while idle: WFI gives the CPU back to the host.
    let (wfi0, irq0, _) = irq_counts();
    let (taken, _, ok) = timer_rounds(20, 2 * delta, window, true);
    let (wfi1, irq1, _) = irq_counts();
    t.eq(taken as i64, 20, "irq: 20 virtual timer interrupts taken in WFI");
    t.check(ok, "irq: each within half a millisecond of its deadline (2 ms apart)");
    println!(
        "guest: 20 timer waits in WFI: {} WFI exits, {} IRQ exits (40 ms idle; a 10 ms slice would be 4)",
        wfi1 - wfi0,
        irq1 - irq0
    );
    t.check((20..=40).contains(&(wfi1 - wfi0)), "irq: every WFI wait exits to the host (20..40 WFI exits)");
    t.check(irq1 - irq0 <= 2, "irq: an idle guest is not preempted by its time slice (at most 2 IRQ exits)");

    // The timer masked by the guest: no interrupt.
    let before = TIMER_HITS.load(SeqCst);
    gic::disable(0, gic::VTIMER);
    gic::timer_at(gic::counter().0 + delta);
    let none = !wait_until(4 * delta, || TIMER_HITS.load(SeqCst) != before);
    gic::enable(0, gic::VTIMER, 0xa0);
    let late = wait_until(4 * delta, || TIMER_HITS.load(SeqCst) != before);
    t.check(none && late, "irq: PPI 27 disabled at the redistributor holds the timer back; enabled, it arrives");
    gic::timer_off();

    // A level-sensitive device: injected again until the device is satisfied.
    gic::enable(0, IRQ_TEST_INTID, 0x80);
    mmio_w(IRQ_TEST, 3);
    wait_until(4 * delta, || LEVEL_HITS.load(SeqCst) >= 3);
    wait_until(delta, || false);
    t.eq(LEVEL_HITS.load(SeqCst) as i64, 3, "irq: a level interrupt held for 3 acknowledgements is taken 3 times");
    t.eq(mmio_r(IRQ_TEST + 8) as i64, 3, "irq: the device saw 3 acknowledgements");

    // The PL011's transmit interrupt writes a line.
    gic::enable(0, UART_INTID, 0x80);
    // The first byte by hand (it raises the first interrupt): the
    // position moves first, the interrupt may come right after the write.
    UART_POS.store(1, SeqCst);
    mmio_w(UART + 0x38, 1 << 5);
    mmio_w(UART, MSG[0] as u32);
    wait_until(20 * delta, || UART_POS.load(SeqCst) as usize > MSG.len());
    t.eq(UART_HITS.load(SeqCst) as i64, MSG.len() as i64, "irq: one PL011 transmit interrupt per character");
    gic::irqs_off();
    t.eq(OTHER.load(SeqCst) as i64, 0, "irq: no unexpected interrupt");
    t.eq(irq_counts().2 as i64, 0, "irq: the hyp accepted every VCPU_IRQ call of the VMM");
}
