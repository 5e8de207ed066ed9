//! `test=irq`: interrupts in a protected guest, through the GICv3 virtual
//! CPU interface the hyp fills and the distributor the host emulates: the
//! virtual timer taken while spinning and while idle in WFI (many times,
//! each within a window of counter ticks), a level-sensitive device
//! interrupt injected again until the device drops its line, and the
//! PL011's transmit interrupt driving output.
//! Also `test=irq-smp` (several vCPUs: PSCI, SGIs between them) and
//! `test=bench-irq` (the interrupt rows of `cargo xtask bench`).
//!
//! Over 600 lines: three guest programs that share one interrupt handler's
//! counters, the GIC setup and the wait loops; the next split is
//! `bench-irq` (its own handler and PMU readings) into a file of its own.

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
/// SGIs taken, per vCPU.
static SGI_HITS: [AtomicU64; VCPUS] = [const { AtomicU64::new(0) }; VCPUS];
/// Secondaries that have set up their GIC interface.
static READY: AtomicU64 = AtomicU64::new(0);
/// A vCPU restarted with CPU_ON after CPU_OFF ran.
static AGAIN: AtomicU64 = AtomicU64::new(0);
const VCPUS: usize = 4;
const SGI_PING: u32 = 1;
/// An SGI only the pending/active test uses (counted as OTHER if taken).
const SGI_SELF_TEST: u32 = 5;
/// An SGI vCPU 0 leaves pending in its list register while another vCPU
/// runs (the stale list register test); taken, per vCPU.
const SGI_STALE: u32 = 6;
static STALE_HITS: [AtomicU64; VCPUS] = [const { AtomicU64::new(0) }; VCPUS];
/// The witness vCPU ran with interrupts unmasked for its while.
static WITNESS_DONE: AtomicU64 = AtomicU64::new(0);
const ROUNDS: u64 = 25;
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
        SGI_PING => {
            SGI_HITS[el1_rt::smp::cpu_index() % VCPUS].fetch_add(1, SeqCst);
        }
        SGI_STALE => {
            STALE_HITS[el1_rt::smp::cpu_index() % VCPUS].fetch_add(1, SeqCst);
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

/// The distributor's and redistributor's pending/active registers read
/// back what the hyp holds, and ICPENDR/ICACTIVER clear it.
fn pending_active(t: &mut Tally) {
    const GICD: u64 = 0x0800_0000;
    const SGI_FRAME: u64 = 0x080A_0000 + 0x1_0000;
    let bit = 1u32 << (IRQ_TEST_INTID - 32);
    gic::irqs_off();
    let hits = LEVEL_HITS.load(SeqCst);
    // The test device's level line up (one acknowledgement owed).
    mmio_w(IRQ_TEST, 1);
    t.check(mmio_r(GICD + 0x204) & bit != 0, "irq: GICD_ISPENDR1 shows the asserted level interrupt pending");
    t.check(mmio_r(GICD + 0x284) & bit != 0, "irq: GICD_ICPENDR1 reads the same pending bits");
    t.eq(mmio_r(GICD + 0x304) as i64 & bit as i64, 0, "irq: GICD_ISACTIVER1: not active before it is acknowledged");
    let intid = gic::ack();
    t.eq(intid as i64, IRQ_TEST_INTID as i64, "irq: the CPU interface acknowledges it (IRQs masked at PSTATE)");
    t.check(mmio_r(GICD + 0x304) & bit != 0, "irq: GICD_ISACTIVER1 shows it active after the acknowledge");
    // The device satisfied (line down), then ICACTIVER deactivates it.
    mmio_w(IRQ_TEST + 4, 1);
    mmio_w(GICD + 0x384, bit);
    t.eq(mmio_r(GICD + 0x304) as i64 & bit as i64, 0, "irq: GICD_ICACTIVER1 deactivates it");
    t.eq(mmio_r(GICD + 0x204) as i64 & bit as i64, 0, "irq: with its line down it is not pending either");
    // Priority drop only: the interrupt is no longer active anywhere.
    gic::eoi(intid);
    // An SGI to itself, pending while IRQs are masked, then ICPENDR0.
    gic::enable(0, SGI_SELF_TEST, 0x80);
    gic::send_sgi(SGI_SELF_TEST, 1);
    let sgi = 1u32 << SGI_SELF_TEST;
    t.check(mmio_r(SGI_FRAME + 0x200) & sgi != 0, "irq: GICR_ISPENDR0 shows an SGI sent to itself pending");
    mmio_w(SGI_FRAME + 0x280, sgi);
    t.eq(mmio_r(SGI_FRAME + 0x200) as i64 & sgi as i64, 0, "irq: GICR_ICPENDR0 clears it");
    let others = OTHER.load(SeqCst);
    gic::irqs_on();
    wait_until(gic::counter().1 / 1000, || false);
    t.eq(OTHER.load(SeqCst) as i64 - others as i64, 0, "irq: the cleared SGI is never taken");
    t.eq(LEVEL_HITS.load(SeqCst) as i64 - hits as i64, 0, "irq: nor the deactivated level interrupt");
    gic::disable(0, SGI_SELF_TEST);
    wfi_in_handler(t);
}

/// A WFI while an interrupt is active waits for one that can preempt it:
/// an interrupt pending at the same priority does not end it (the GIC's
/// running priority, ICH_AP1R, not only the priority mask).
fn wfi_in_handler(t: &mut Tally) {
    const SGI_FRAME: u64 = 0x080A_0000 + 0x1_0000;
    let freq = gic::counter().1;
    gic::irqs_off();
    // Active at 0x80, as if in its handler.
    mmio_w(IRQ_TEST, 1);
    let intid = gic::ack();
    // Another at 0x80 pending; the timer, at 0x40, due in 2 ms.
    gic::enable(0, SGI_SELF_TEST, 0x80);
    gic::send_sgi(SGI_SELF_TEST, 1);
    gic::enable(0, gic::VTIMER, 0x40);
    let cval = gic::counter().0 + 2 * freq / 1000;
    gic::timer_at(cval);
    let (wfi0, _, _) = irq_counts();
    aarch64_wfi();
    let woke = gic::counter().0;
    let (wfi1, _, _) = irq_counts();
    gic::timer_off();
    t.check(
        intid == IRQ_TEST_INTID && woke >= cval,
        "irq: WFI with an interrupt active waits for one that preempts it (the timer), not one of equal priority",
    );
    t.eq(wfi1 as i64 - wfi0 as i64, 1, "irq: that WFI gave the CPU back to the host once");
    // Back to normal: the device satisfied, the interrupt ended, the SGI
    // withdrawn, the timer's priority as before.
    mmio_w(IRQ_TEST + 4, 1);
    gic::eoi(intid);
    mmio_w(SGI_FRAME + 0x280, 1 << SGI_SELF_TEST);
    gic::disable(0, SGI_SELF_TEST);
    gic::enable(0, gic::VTIMER, 0xa0);
    gic::irqs_on();
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

    pending_active(t);

    // The PL011's transmit interrupt writes a line.
    gic::enable(0, UART_INTID, 0x80);
    // Earlier output left the transmit interrupt raised: clear it (as a
    // driver does at start-up), unmask it, and write the first byte by hand
    // (it raises the first interrupt: the position moves first).
    mmio_w(UART + 0x44, 1 << 5);
    UART_POS.store(1, SeqCst);
    mmio_w(UART + 0x38, 1 << 5);
    mmio_w(UART, MSG[0] as u32);
    wait_until(20 * delta, || UART_POS.load(SeqCst) as usize > MSG.len());
    t.eq(UART_HITS.load(SeqCst) as i64, MSG.len() as i64, "irq: one PL011 transmit interrupt per character");
    gic::irqs_off();
    t.eq(OTHER.load(SeqCst) as i64, 0, "irq: no unexpected interrupt");
    t.eq(irq_counts().2 as i64, 0, "irq: the hyp accepted every VCPU_IRQ call of the VMM");
}

fn wfi_until(cond: impl Fn() -> bool) {
    let (start, freq) = gic::counter();
    while !cond() && gic::counter().0 < start + 2 * freq {
        aarch64_wfi();
    }
}

/// A secondary vCPU: its GIC interface up, then its part of the SGI ring.
fn secondary(i: usize) -> ! {
    gic::init_cpu(i);
    gic::enable(i, SGI_PING, 0x80);
    gic::irqs_on();
    READY.fetch_add(1, SeqCst);
    for r in 0..ROUNDS {
        wfi_until(|| SGI_HITS[i].load(SeqCst) > r);
        gic::send_sgi(SGI_PING, 1 << ((i + 1) % VCPUS));
    }
    gic::irqs_off();
    el1_rt::smp::cpu_off()
}

/// Rounds of the spinning-target SGI test, and its hand-shake.
const SPIN_ROUNDS: u64 = 5;
static SPIN_READY: AtomicU64 = AtomicU64::new(0);
static SPIN_SEEN: AtomicU64 = AtomicU64::new(0);
static SPIN_AT: AtomicU64 = AtomicU64::new(0);

/// vCPU 1 again: spins with interrupts unmasked (never WFI, so it never
/// gives its CPU back by itself) and notes when each SGI reached it.
fn spinner(i: usize) -> ! {
    gic::init_cpu(i);
    gic::enable(i, SGI_PING, 0x80);
    let base = SGI_HITS[i].load(SeqCst);
    gic::irqs_on();
    for r in 0..SPIN_ROUNDS {
        SPIN_READY.store(r + 1, SeqCst);
        let (start, freq) = gic::counter();
        while SGI_HITS[i].load(SeqCst) <= base + r && gic::counter().0 < start + 2 * freq {
            core::hint::spin_loop();
        }
        SPIN_AT.store(gic::counter().0, SeqCst);
        SPIN_SEEN.store(r + 1, SeqCst);
    }
    gic::irqs_off();
    el1_rt::smp::cpu_off()
}

/// Spins until `cond` or a second has passed; true if `cond`.
fn spin_until(cond: impl Fn() -> bool) -> bool {
    let (start, freq) = gic::counter();
    while !cond() {
        if gic::counter().0 > start + freq {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// The fastest of [`SPIN_ROUNDS`] SGIs to a vCPU that spins, in counter
/// ticks from the send to the target's handler (None if one got lost).
fn sgi_to_spinner() -> Option<u64> {
    if el1_rt::smp::start(1, 1, spinner) != 0 {
        return None;
    }
    let mut best = u64::MAX;
    for r in 0..SPIN_ROUNDS {
        if !spin_until(|| SPIN_READY.load(SeqCst) > r) {
            return None;
        }
        let t0 = gic::counter().0;
        gic::send_sgi(SGI_PING, 1 << 1);
        if !spin_until(|| SPIN_SEEN.load(SeqCst) > r) {
            return None;
        }
        best = best.min(SPIN_AT.load(SeqCst).saturating_sub(t0));
    }
    wait_off(1).then_some(best)
}

/// vCPU 3 again, while vCPU 0 holds an SGI pending (masked) in its list
/// register: runs with interrupts unmasked for 2 ms of its own time, taking
/// whatever its virtual CPU interface signals (nothing was sent to it).
fn witness(i: usize) -> ! {
    gic::init_cpu(i);
    gic::irqs_on();
    let (start, freq) = gic::counter();
    while gic::counter().0 < start + freq / 500 {
        core::hint::spin_loop();
    }
    gic::irqs_off();
    WITNESS_DONE.store(1, SeqCst);
    el1_rt::smp::cpu_off()
}

/// A list register of one vCPU must not be live in the next vCPU run on
/// its CPU (the world switch loads list registers only when one holds an
/// interrupt, and zeroes the CPU's after such a run): vCPU 0 keeps an SGI
/// pending, masked, in its list register and spins until its time slice
/// ends, so the host runs the witness on the same CPU (time-sliced: 1 host
/// CPU); the witness must take nothing, vCPU 0 must take its SGI once it
/// unmasks. True if so (and the witness ran).
fn stale_list_register() -> bool {
    gic::enable(0, SGI_STALE, 0x80);
    gic::irqs_off();
    gic::send_sgi(SGI_STALE, 1 << 0);
    if el1_rt::smp::start(3, 3, witness) != 0 {
        gic::irqs_on();
        return false;
    }
    let ran = spin_until(|| WITNESS_DONE.load(SeqCst) == 1);
    gic::irqs_on();
    spin_until(|| STALE_HITS[0].load(SeqCst) != 0);
    let off = wait_off(3);
    let (mine, its) = (STALE_HITS[0].load(SeqCst), STALE_HITS[3].load(SeqCst));
    if (mine, its) != (1, 0) {
        println!("  stale list register: vCPU 0 took {} SGI {}, the witness {}", mine, SGI_STALE, its);
    }
    ran && off && (mine, its) == (1, 0)
}

fn again(_i: usize) -> ! {
    AGAIN.fetch_add(1, SeqCst);
    el1_rt::smp::cpu_off()
}

fn affinity(mpidr: u64) -> i64 {
    el1_rt::smccc::psci_call(hyp_abi::psci::AFFINITY_INFO, [mpidr, 0, 0]) as i64
}

/// Waits until vCPU `mpidr` reports OFF; true if it did within a second.
fn wait_off(mpidr: u64) -> bool {
    let (start, freq) = gic::counter();
    while affinity(mpidr) != hyp_abi::psci::AFF_OFF {
        if gic::counter().0 > start + freq {
            return false;
        }
    }
    true
}

/// `test=irq-smp` (4 vCPUs): PSCI CPU_ON starts vCPUs 1-3; an SGI goes
/// round the ring 0 -> 1 -> 2 -> 3 -> 0, 25 times, each vCPU waiting in
/// WFI; then CPU_OFF, AFFINITY_INFO, and a second CPU_ON of a vCPU that
/// powered off.
pub fn irq_smp(t: &mut Tally) {
    use hyp_abi::psci;
    el1_rt::trap::set_hook(on_irq);
    gic::init_dist();
    gic::init_cpu(0);
    gic::enable(0, SGI_PING, 0x80);
    gic::irqs_on();
    let n = el1_rt::smp::cpu_index();
    t.eq(n as i64, 0, "irq-smp: the boot vCPU's MPIDR Aff0 is 0");
    t.eq(affinity(1), psci::AFF_OFF, "irq-smp: AFFINITY_INFO: vCPU 1 starts powered off");
    let mut ok = true;
    for i in 1..VCPUS {
        ok &= el1_rt::smp::start(i as u64, i, secondary) == 0;
    }
    t.check(ok, "irq-smp: PSCI CPU_ON starts vCPUs 1, 2 and 3");
    t.eq(el1_rt::smp::start(1, 1, secondary), psci::ALREADY_ON, "irq-smp: CPU_ON of a running vCPU is ALREADY_ON");
    t.eq(
        el1_rt::smp::start(VCPUS as u64, VCPUS, secondary),
        psci::INVALID_PARAMETERS,
        "irq-smp: CPU_ON of a vCPU the VM does not have is INVALID_PARAMETERS",
    );
    t.eq(affinity(2), psci::AFF_ON, "irq-smp: AFFINITY_INFO: vCPU 2 is on");
    let (start, freq) = gic::counter();
    while READY.load(SeqCst) < VCPUS as u64 - 1 && gic::counter().0 < start + freq {}
    t.eq(READY.load(SeqCst) as i64, VCPUS as i64 - 1, "irq-smp: every secondary vCPU runs and reads its own MPIDR");
    let t0 = gic::counter().0;
    for r in 0..ROUNDS {
        gic::send_sgi(SGI_PING, 1 << 1);
        wfi_until(|| SGI_HITS[0].load(SeqCst) > r);
    }
    let ticks = gic::counter().0 - t0;
    let hits: [u64; VCPUS] = core::array::from_fn(|i| SGI_HITS[i].load(SeqCst));
    println!(
        "guest: SGI ring: {:?} SGIs taken per vCPU, {} us per hop",
        hits,
        ticks * 1_000_000 / freq / (ROUNDS * VCPUS as u64)
    );
    t.check(hits.iter().all(|&h| h == ROUNDS), "irq-smp: 25 rounds of an SGI ring over 4 vCPUs, every SGI taken once");
    let offs = (1..VCPUS as u64).all(wait_off);
    t.check(offs, "irq-smp: after CPU_OFF, AFFINITY_INFO reports vCPUs 1-3 OFF");
    t.eq(el1_rt::smp::start(2, 2, again), 0, "irq-smp: a vCPU that powered off starts again with CPU_ON");
    let back = wait_off(2) && AGAIN.load(SeqCst) == 1;
    t.check(back, "irq-smp: it ran its new entry point and powered off again");
    // An SGI to a vCPU that spins in the guest: its host CPU is kicked, so
    // the SGI does not wait for the end of its 10 ms time slice.
    let freq = gic::counter().1;
    match sgi_to_spinner() {
        Some(best) => {
            println!("guest: SGI to a spinning vCPU: fastest of {} in {} us", SPIN_ROUNDS, best * 1_000_000 / freq);
            t.check(best < freq / 1000 * 5, "irq-smp: an SGI reaches a vCPU spinning in the guest within 5 ms");
        }
        None => t.check(false, "irq-smp: an SGI reaches a vCPU spinning in the guest within 5 ms"),
    }
    t.check(
        stale_list_register(),
        "irq-smp: an SGI pending in vCPU 0's list register is taken by vCPU 0 alone, not by the vCPU run next on its CPU",
    );
    t.eq(affinity(0), psci::AFF_ON, "irq-smp: AFFINITY_INFO: the caller is on");
    t.eq(affinity(1 << 8), psci::INVALID_PARAMETERS, "irq-smp: AFFINITY_INFO at Aff1 = 1 is INVALID_PARAMETERS");
    gic::irqs_off();
    t.eq(OTHER.load(SeqCst) as i64, 0, "irq-smp: no unexpected interrupt");
}

/// PMU readings at the last handler entry, and what its EOI cost.
static B_ENTRY: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static B_SEQ: AtomicU64 = AtomicU64::new(0);
static B_EOI_LEVEL: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static B_EOI_EDGE: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
const SGI_SELF: u32 = 2;

fn add(a: &[AtomicU64; 2], from: (u64, u64), to: (u64, u64)) {
    a[0].fetch_add(to.0.wrapping_sub(from.0), SeqCst);
    a[1].fetch_add(to.1.wrapping_sub(from.1), SeqCst);
}

/// The bench's handler: PMU counts at entry; EOIs measured.
fn on_bench_irq(kind: u64, _s: Sync, _f: &mut Frame) -> bool {
    let at = el1_rt::pmu::read();
    if kind != IRQ_SPX {
        return false;
    }
    B_ENTRY[0].store(at.0, SeqCst);
    B_ENTRY[1].store(at.1, SeqCst);
    let intid = gic::ack();
    match intid {
        gic::SPURIOUS => return true,
        gic::VTIMER => gic::timer_mask(),
        IRQ_TEST_INTID => mmio_w(IRQ_TEST + 4, 1),
        SGI_PING => {
            SGI_HITS[el1_rt::smp::cpu_index() % VCPUS].fetch_add(1, SeqCst);
        }
        _ => {}
    }
    let a = el1_rt::pmu::read();
    gic::eoi(intid);
    let b = el1_rt::pmu::read();
    match intid {
        IRQ_TEST_INTID => add(&B_EOI_LEVEL, a, b),
        SGI_SELF => add(&B_EOI_EDGE, a, b),
        _ => {}
    }
    B_SEQ.fetch_add(1, SeqCst);
    true
}

/// Runs `start` `n` times and waits for the handler each time: total PMU
/// counts from just before `start` to the handler's entry; false if one
/// never came.
fn to_entry(n: u64, mut start: impl FnMut()) -> ((u64, u64), bool) {
    let (mut el2, mut all, mut ok) = (0, 0, true);
    for _ in 0..n {
        let seq = B_SEQ.load(SeqCst);
        let a = el1_rt::pmu::read();
        start();
        ok &= wait_until(gic::counter().1 / 10, || B_SEQ.load(SeqCst) != seq);
        el2 += B_ENTRY[0].load(SeqCst).wrapping_sub(a.0);
        all += B_ENTRY[1].load(SeqCst).wrapping_sub(a.1);
    }
    ((el2, all), ok)
}

fn bench_secondary(i: usize) -> ! {
    gic::init_cpu(i);
    gic::enable(i, SGI_PING, 0x80);
    gic::irqs_on();
    READY.fetch_add(1, SeqCst);
    let mut r = 0;
    loop {
        wfi_until(|| SGI_HITS[i].load(SeqCst) > r);
        r += 1;
        gic::send_sgi(SGI_PING, 1);
    }
}

/// `test=bench-irq` (2 vCPUs, `hyp.bench_pmu`): the interrupt rows of
/// `cargo xtask bench`, EL2 instructions per operation.
pub fn bench_irq(t: &mut Tally) {
    use el1_rt::bench::report;
    const N: u64 = 100;
    let none = [0u64; 4];
    el1_rt::pmu::init();
    el1_rt::trap::set_hook(on_bench_irq);
    gic::init_dist();
    gic::init_cpu(0);
    for i in [SGI_SELF, SGI_PING, gic::VTIMER, IRQ_TEST_INTID] {
        gic::enable(0, i, 0x80);
    }
    gic::irqs_on();
    let (m, ok1) = to_entry(N, || gic::send_sgi(SGI_SELF, 1));
    report("virtual interrupt (SGI to self) to handler entry", N, m, none);
    report("guest EOI (edge, no exit)", N, (B_EOI_EDGE[0].load(SeqCst), B_EOI_EDGE[1].load(SeqCst)), none);
    let (m, ok2) = to_entry(N, || mmio_w(IRQ_TEST, 1));
    report("device interrupt (VMM line via MMIO exit) to handler entry", N, m, none);
    report(
        "guest EOI (level, maintenance interrupt)",
        N,
        (B_EOI_LEVEL[0].load(SeqCst), B_EOI_LEVEL[1].load(SeqCst)),
        none,
    );
    let (m, ok3) = to_entry(N, || gic::timer_at(gic::counter().0 + 1000));
    gic::timer_off();
    report("virtual timer interrupt round trip (arm to handler entry)", N, m, none);
    let ok4 = el1_rt::smp::start(1, 1, bench_secondary) == 0;
    wait_until(gic::counter().1, || READY.load(SeqCst) == 1);
    let (mut el2, mut all) = (0, 0);
    let mut ok5 = true;
    for r in 0..N {
        let a = el1_rt::pmu::read();
        gic::send_sgi(SGI_PING, 1 << 1);
        wfi_until(|| SGI_HITS[0].load(SeqCst) > r);
        let b = el1_rt::pmu::read();
        ok5 &= SGI_HITS[0].load(SeqCst) == r + 1;
        el2 += b.0.wrapping_sub(a.0);
        all += b.1.wrapping_sub(a.1);
    }
    report("SGI round trip between 2 vCPUs (time-sliced, 2 hops)", N, (el2, all), none);
    gic::irqs_off();
    t.check(ok1 && ok2 && ok3 && ok4 && ok5, "bench-irq: every measured interrupt arrived");
}
