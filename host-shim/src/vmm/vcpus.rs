//! Runs a guest's vCPUs each on a host CPU of its own (when the machine has
//! as many CPUs as the guest has vCPUs): host CPU i runs vCPU i. The VMM's
//! state (devices, scheduler) is shared under one lock, never held across
//! `VCPU_RUN`; the hyp refuses to run one vCPU on two CPUs at once anyway.

use alloc::string::String;
use core::sync::atomic::{AtomicUsize, Ordering};

use el1_rt::smp;
use hyp_abi::host::VCPU_RUN;
use spin::Mutex;

use super::guest::{Guest, Step, VState};
use crate::hyp;

static SHARED: Mutex<Option<Guest>> = Mutex::new(None);
static FAILURE: Mutex<Option<String>> = Mutex::new(None);
static DONE: AtomicUsize = AtomicUsize::new(0);
/// Host CPUs started by [`run_parallel`] that reached their worker.
static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// How long a host CPU with no runnable vCPU naps before it looks again
/// (a kick wakes it earlier): 50 us of the system counter.
fn poll_ticks() -> u64 {
    el1_rt::gic::counter().1 / 20_000
}

/// Runs vCPU `v` until the guest is done (powered off, every vCPU off, or
/// an error anywhere).
fn drive(v: usize) -> Result<(), String> {
    crate::idle::enable_kick();
    loop {
        // A kick already served (the exit it caused, or the run it found
        // the interrupt in) must not bring the next run straight back out.
        crate::idle::drain_kicks();
        let args = {
            let mut slot = SHARED.lock();
            let Some(g) = slot.as_mut() else { return Ok(()) };
            g.tick();
            if g.done || g.vstate.iter().all(|s| *s == VState::Off) {
                return Ok(());
            }
            (g.vstate[v] == VState::Runnable).then(|| g.run_args(v))
        };
        let Some(args) = args else {
            crate::idle::nap(u64::MAX, poll_ticks());
            continue;
        };
        let r = hyp::call(VCPU_RUN, args);
        let mut slot = SHARED.lock();
        let Some(g) = slot.as_mut() else { return Ok(()) };
        match g.on_exit(v, r) {
            // A yield only hands the CPU back: this loop is the host's.
            Ok(Step::Go | Step::Yield) => {}
            Ok(Step::Off) => return Ok(()),
            Err(e) => {
                g.done = true;
                return Err(e);
            }
        }
    }
}

fn worker(v: usize) -> ! {
    ONLINE.fetch_add(1, Ordering::SeqCst);
    if let Err(e) = drive(v) {
        *FAILURE.lock() = Some(e);
    }
    DONE.fetch_add(1, Ordering::SeqCst);
    smp::cpu_off()
}

/// Runs `g` with vCPU i on the host CPU `cpus[i]` (its MPIDR; `cpus[0]` is
/// this CPU); returns the guest and the outcome. Host CPUs 1.. are started
/// with PSCI CPU_ON and power off at the end.
pub fn run_parallel(mut g: Guest, cpus: &[u64]) -> (Guest, Result<(), String>) {
    let n = g.vstate.len();
    g.kick_aff0 = cpus.iter().take(n).map(|&m| (m & 0xff) as u16).collect();
    *SHARED.lock() = Some(g);
    DONE.store(0, Ordering::SeqCst);
    ONLINE.store(0, Ordering::SeqCst);
    let mut started = 1;
    let mut result = Ok(());
    for (i, &mpidr) in cpus.iter().enumerate().take(n).skip(1) {
        let e = smp::start(mpidr, i, worker);
        if e != 0 {
            result = Err(alloc::format!("host CPU_ON {mpidr:#x}: {e}"));
            if let Some(g) = SHARED.lock().as_mut() {
                g.done = true;
            }
            break;
        }
        started += 1;
    }
    // The guest runs once every host CPU is in its worker: a CPU_ON
    // returns before the CPU gets there, and the hyp's console line for
    // its entry would otherwise interleave with the guest's first lines.
    while ONLINE.load(Ordering::SeqCst) < started - 1 {
        core::hint::spin_loop();
    }
    let mine = drive(0);
    if let Err(e) = mine {
        if let Some(g) = SHARED.lock().as_mut() {
            g.done = true;
        }
        result = result.and(Err(e));
    }
    while DONE.load(Ordering::SeqCst) < started - 1 {
        crate::idle::nap(u64::MAX, poll_ticks());
    }
    if let Some(e) = FAILURE.lock().take() {
        result = result.and(Err(e));
    }
    let mut g = SHARED.lock().take().expect("the guest is back");
    g.kick_aff0.clear();
    (g, result)
}
