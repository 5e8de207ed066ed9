//! One guest running: a thread per vCPU loops on PKVM_RUN and handles its
//! exits (MMIO, host services, PSCI power, WFI waits, SGIs, unshares that
//! wait for the VMM's pins). A vCPU waiting in WFI sleeps until its timer
//! deadline or until an interrupt is raised for it; a vCPU in the guest on
//! another CPU is kicked out with a signal (its PKVM_RUN returns EINTR).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use hyp_abi::host::exit;
use hyp_abi::services as svc;

use vmm_devices::platform::{Platform, Port};

use crate::pkvm::{Exit, Memory, Vcpu, Vm};
use crate::seams::{LinuxMem, VmIrq};

/// The signal that kicks a vCPU thread out of PKVM_RUN.
const KICK: libc::c_int = libc::SIGUSR1;

extern "C" fn on_kick(_: libc::c_int) {}

/// Installs the kick signal's handler, without SA_RESTART: a PKVM_RUN it
/// interrupts returns EINTR.
pub fn install_kick() -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid one to fill in; the handler is
    // async-signal-safe (it does nothing).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(KICK, &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The virtual counter (the guest's timebase: CNTVOFF is 0) and its rate.
#[cfg(target_arch = "aarch64")]
pub mod clock {
    pub fn now() -> u64 {
        let v: u64;
        // SAFETY: Linux lets EL0 read the virtual counter (its vDSO does).
        unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) v) };
        v
    }
    pub fn freq() -> u64 {
        let v: u64;
        // SAFETY: CNTFRQ_EL0 is readable at EL0.
        unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) v) };
        v.max(1)
    }
}

/// Elsewhere (the host's unit tests): a monotonic nanosecond clock.
#[cfg(not(target_arch = "aarch64"))]
pub mod clock {
    pub fn now() -> u64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
    }
    pub fn freq() -> u64 {
        1_000_000_000
    }
}

/// How long `ticks` of the virtual counter last (capped at one second:
/// the waiter looks again).
fn ticks_to_duration(ticks: u64) -> Duration {
    let ns = u128::from(ticks) * 1_000_000_000 / u128::from(clock::freq());
    Duration::from_nanos(ns.min(1_000_000_000) as u64)
}

/// Where a vCPU stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VState {
    /// Powered off: waits for the guest's PSCI CPU_ON.
    Off,
    Runnable,
    /// In WFI with nothing deliverable: runnable again at this counter
    /// value, or when an interrupt is raised for it (u64::MAX: only then).
    Idle(u64),
}

/// Exits and events the VMM counted for one guest.
#[derive(Default, Debug, Clone)]
pub struct Counts {
    pub mmio: u64,
    pub wfi: u64,
    pub irq: u64,
    pub aborts: u64,
    pub unshare_pending: u64,
}

struct State<'a> {
    /// The device models (vmm-devices).
    platform: Platform<VmIrq<'a>>,
    /// ioctls the devices made to reach guest memory.
    device_calls: u64,
    vstate: Vec<VState>,
    /// vCPUs (bit n) an interrupt was raised for since their run began.
    kicks: u64,
    /// Set once: the guest powered off (Ok) or failed.
    done: Option<Result<(), String>>,
    /// Pins the guest asked the VMM for (IPA → count), and those taken
    /// as "another part of the host" would (`PIN_FOREIGN`).
    pins: BTreeMap<u64, u32>,
    foreign: BTreeMap<u64, u32>,
    result: Option<(u64, u64)>,
    relinquished: u64,
    counts: Counts,
    /// Per vCPU: IRQ exits the driver handled (its run structure's count).
    irq: Vec<u64>,
}

/// What a guest's run came to.
#[derive(Debug)]
pub struct Outcome {
    pub end: Result<(), String>,
    /// The guest's own tally (HOST_RESULT): passed, failed.
    pub result: Option<(u64, u64)>,
    pub relinquished: u64,
    pub counts: Counts,
    /// Each virtio device: name, counters, status.
    pub virtio: Vec<(&'static str, vmm_devices::virtio::Stats, u32)>,
    /// MMIO exits the virtio devices served, and the ioctls they made to
    /// reach guest memory.
    pub virtio_exits: u64,
    pub device_calls: u64,
}

/// A test program the guest obeys (`test=remote`, `HOST_NEXT`): given the
/// last command's result (x1..x3), the next command (x0..x3). Called on
/// the vCPU's thread without the machine's lock: it may block.
pub trait Remote: Sync {
    fn next(&self, result: [u64; 3]) -> [u64; 4];
}

pub struct Machine<'a> {
    id: u32,
    remote: Option<&'a dyn Remote>,
    vm: &'a Vm,
    mem: &'a Memory,
    st: Mutex<State<'a>>,
    cond: Condvar,
    /// Per vCPU: its thread while it is in PKVM_RUN (0: it is not).
    in_run: Vec<AtomicU64>,
}

impl<'a> Machine<'a> {
    /// The machine of VM `id` (as printed), whose devices are `platform`.
    pub fn new(id: u32, vm: &'a Vm, mem: &'a Memory, platform: Platform<VmIrq<'a>>) -> Machine<'a> {
        let vcpus = platform.gic.vcpus();
        let vstate = (0..vcpus).map(|i| if i == 0 { VState::Runnable } else { VState::Off }).collect();
        Machine {
            id,
            remote: None,
            vm,
            mem,
            st: Mutex::new(State {
                platform,
                device_calls: 0,
                vstate,
                kicks: 0,
                done: None,
                pins: BTreeMap::new(),
                foreign: BTreeMap::new(),
                result: None,
                relinquished: 0,
                counts: Counts::default(),
                irq: vec![0; vcpus],
            }),
            cond: Condvar::new(),
            in_run: (0..vcpus).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The guest's `HOST_NEXT` calls go to `r`.
    pub fn with_remote(mut self, r: &'a dyn Remote) -> Machine<'a> {
        self.remote = Some(r);
        self
    }

    fn lock(&self) -> MutexGuard<'_, State<'a>> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs every vCPU on a thread of its own until the guest powers off
    /// or fails.
    pub fn run(self, vcpus: Vec<Vcpu>) -> Outcome {
        std::thread::scope(|s| {
            for v in vcpus {
                let m = &self;
                s.spawn(move || m.vcpu_loop(v));
            }
        });
        let mut st = self.lock();
        // What the guest's pins still hold goes back (the driver would drop
        // them at teardown anyway).
        for (ipa, n) in std::mem::take(&mut st.pins).into_iter().chain(std::mem::take(&mut st.foreign)) {
            for _ in 0..n {
                let _ = self.vm.unpin(ipa);
            }
        }
        st.counts.irq = st.irq.iter().sum();
        let virtio = match &st.platform.virtio {
            Some(d) => (0..).map_while(|k| d.slot(k)).collect(),
            None => Vec::new(),
        };
        Outcome {
            end: st.done.take().unwrap_or(Ok(())),
            result: st.result,
            relinquished: st.relinquished,
            counts: st.counts.clone(),
            virtio,
            virtio_exits: st.platform.virtio_exits,
            device_calls: st.device_calls,
        }
    }

    fn vcpu_loop(&self, mut vcpu: Vcpu) {
        let i = vcpu.index as usize;
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as u64;
        let mut reply = [0u64; 4];
        while self.wait_runnable(i, me) {
            let r = vcpu.run(reply);
            self.in_run[i].store(0, SeqCst);
            match r {
                Ok(e)
                    if e.reason == exit::HYPERCALL && e.x[0] == u64::from(svc::HOST_NEXT) && self.remote.is_some() =>
                {
                    reply = self.remote.map_or([0; 4], |rm| rm.next([e.x[1], e.x[2], e.x[3]]));
                }
                Ok(e) => match self.on_exit(i, e, vcpu.irq_exits()) {
                    Ok(rep) => reply = rep,
                    Err(why) => self.finish(Err(why)),
                },
                // A kick: the reply (if not consumed yet) goes in again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.finish(Err(format!("vCPU {i}: PKVM_RUN: {e}"))),
            }
        }
        self.lock().irq[i] = vcpu.irq_exits();
    }

    /// Waits until vCPU `i` may run (false: the guest is done).
    fn wait_runnable(&self, i: usize, me: u64) -> bool {
        let mut st = self.lock();
        loop {
            if st.done.is_some() {
                return false;
            }
            match st.vstate[i] {
                VState::Runnable => {
                    // What was raised for it so far, the hyp sees at entry.
                    st.kicks &= !(1 << i);
                    self.in_run[i].store(me, SeqCst);
                    return true;
                }
                VState::Idle(d) if clock::now() >= d => st.vstate[i] = VState::Runnable,
                s => {
                    if let Some(end) = self.stuck(&st) {
                        drop(st);
                        self.finish(end);
                        return false;
                    }
                    let wait = match s {
                        VState::Idle(d) => ticks_to_duration(d - clock::now().min(d)),
                        _ => Duration::from_secs(1),
                    };
                    st = self.cond.wait_timeout(st, wait).unwrap_or_else(|e| e.into_inner()).0;
                }
            }
        }
    }

    /// The guest can never run again: every vCPU off (Ok), or every one
    /// that is on waits for an interrupt nothing will raise (the VMM's
    /// devices raise them only on exits).
    fn stuck(&self, st: &State<'a>) -> Option<Result<(), String>> {
        let running = self.in_run.iter().any(|t| t.load(SeqCst) != 0);
        let waiting = st.vstate.iter().all(|s| matches!(s, VState::Off | VState::Idle(u64::MAX)));
        match (running, waiting) {
            (false, true) if st.vstate.iter().all(|s| *s == VState::Off) => Some(Ok(())),
            (false, true) => Some(Err("the guest waits for an interrupt that nothing will raise".into())),
            _ => None,
        }
    }

    /// Ends the run (the first result counts) and wakes every vCPU thread.
    fn finish(&self, end: Result<(), String>) {
        self.finish_locked(&mut self.lock(), end);
    }

    fn finish_locked(&self, st: &mut State<'a>, end: Result<(), String>) {
        st.done.get_or_insert(end);
        self.kick_all(!0);
        self.cond.notify_all();
    }

    /// Kicks the vCPUs of `mask` that are in PKVM_RUN. Called with the
    /// state locked: a thread leaves its loop only after taking the lock,
    /// so a thread named in `in_run` is alive.
    fn kick_all(&self, mask: u64) {
        for (i, t) in self.in_run.iter().enumerate() {
            let tid = t.load(SeqCst);
            if mask & (1 << i) != 0 && tid != 0 {
                // SAFETY: `tid` is a live thread of this process (above).
                unsafe { libc::pthread_kill(tid as libc::pthread_t, KICK) };
            }
        }
    }

    /// vCPUs of `mask` get to see an interrupt raised for them: an idle
    /// one becomes runnable, a running one is kicked out of the guest, and
    /// one about to enter is marked so that a WFI exit racing with the
    /// interrupt does not put it to sleep.
    fn wake(&self, st: &mut State<'a>, mask: u64) {
        for (i, s) in st.vstate.iter_mut().enumerate() {
            if mask & (1 << i) == 0 {
                continue;
            }
            if matches!(s, VState::Idle(_)) {
                *s = VState::Runnable;
            } else {
                st.kicks |= 1 << i;
            }
        }
        self.kick_all(mask);
        self.cond.notify_all();
    }

    fn on_exit(&self, i: usize, e: Exit, irq_exits: u64) -> Result<[u64; 4], String> {
        let mut st = self.lock();
        st.irq[i] = irq_exits;
        let mut reply = [0u64; 4];
        let x = e.x;
        match e.reason {
            exit::MMIO => {
                st.counts.mmio += 1;
                reply[0] = self.mmio(&mut st, x[0], x[1], x[2] != 0, x[3]);
            }
            exit::HYPERCALL => reply = self.service(&mut st, x[0] as u32, [x[1], x[2], x[3], x[4]]),
            exit::SYSTEM_OFF => self.finish_locked(&mut st, Ok(())),
            exit::SYSTEM_RESET => return Err("the guest asked for a reset".into()),
            exit::GUEST_ABORT => {
                st.counts.aborts += 1;
                println!("[host] vm {}: guest abort at IPA {:#x} (no memory there): abort injected", self.id, x[0]);
            }
            exit::UNSHARE_PENDING => {
                st.counts.unshare_pending += 1;
                let ipa = x[0];
                let n = st.pins.remove(&ipa).unwrap_or(0) + st.foreign.remove(&ipa).unwrap_or(0);
                println!("[host] vm {}: unshare of IPA {:#x} pending on {} host pin(s); unpinning", self.id, ipa, n);
                for _ in 0..n {
                    self.vm.unpin(ipa).map_err(|err| format!("unpin of IPA {ipa:#x}: {err}"))?;
                }
            }
            exit::WFI => {
                st.counts.wfi += 1;
                // WFE: let the others run first. A kick since it entered
                // keeps it runnable.
                if x[1] == 0 && st.kicks & (1 << i) == 0 {
                    st.vstate[i] = VState::Idle(x[0]);
                }
            }
            exit::CPU_ON => {
                let v = x[0] as usize;
                if let Some(s) = st.vstate.get_mut(v) {
                    *s = VState::Runnable;
                }
                self.cond.notify_all();
            }
            exit::CPU_OFF => st.vstate[i] = VState::Off,
            exit::SGI => self.wake(&mut st, x[0]),
            exit::GUEST_FATAL => return Err(format!("guest SError (ESR {:#x}) at PC {:#x}: vCPU stopped", x[0], x[1])),
            other => return Err(format!("unknown exit {other}")),
        }
        // Device lines and pulses raised: their vCPUs wake.
        let kicked = std::mem::take(&mut st.platform.gic.kicked);
        if kicked != 0 {
            self.wake(&mut st, kicked);
        }
        Ok(reply)
    }

    /// The guest's MMIO, to the device models: the PL011's lines print
    /// as `[vm N] text`, the virtio console's as `[vm N hvc0] text`; an
    /// access where no device is reads 0.
    fn mmio(&self, st: &mut State<'a>, ipa: u64, size: u64, write: bool, value: u64) -> u64 {
        let (id, vm, mem) = (self.id, self.vm, self.mem);
        let calls = Cell::new(0);
        let v = st.platform.mmio(
            ipa,
            write,
            size,
            value,
            || LinuxMem::new(vm, mem, &calls),
            |port: Port, line: &str| match port {
                Port::Uart => println!("[vm {id}] {line}"),
                Port::Virtio => println!("[vm {id} hvc0] {line}"),
            },
        );
        st.device_calls += calls.get();
        v.unwrap_or(0)
    }

    /// A host-service call (`hyp_abi::services`): the guest's x0..x3.
    fn service(&self, st: &mut State<'a>, fid: u32, a: [u64; 4]) -> [u64; 4] {
        let err = |e: io::Error| -i64::from(e.raw_os_error().unwrap_or(libc::EIO)) as u64;
        let in_ram = a[0].checked_sub(self.mem.ipa).is_some_and(|o| o < self.mem.size);
        match fid {
            // A host access the hyp refuses is a SIGBUS on Linux; through
            // the memory fd it is EPERM: either way, no data.
            svc::HOST_READ if in_ram => {
                let mut b = [0u8; 8];
                match self.mem.read(a[0], &mut b) {
                    Ok(()) => [0, u64::from_le_bytes(b), 0, 0],
                    Err(_) => [1, 0, 0, 0],
                }
            }
            svc::HOST_WRITE if in_ram => [self.mem.write(a[0], &a[1].to_le_bytes()).is_err() as u64, 0, 0, 0],
            svc::HOST_PIN if in_ram => match self.vm.pin(a[0], a[1] == 1) {
                Ok(()) => {
                    let map = if a[1] == svc::PIN_FOREIGN { &mut st.foreign } else { &mut st.pins };
                    *map.entry(a[0]).or_default() += 1;
                    [0; 4]
                }
                Err(e) => [err(e), 0, 0, 0],
            },
            svc::HOST_UNPIN if in_ram => match self.vm.unpin(a[0]) {
                Ok(()) => {
                    for map in [&mut st.pins, &mut st.foreign] {
                        if let Some(n) = map.get_mut(&a[0]) {
                            *n -= 1;
                            if *n == 0 {
                                map.remove(&a[0]);
                            }
                            break;
                        }
                    }
                    [0; 4]
                }
                Err(e) => [err(e), 0, 0, 0],
            },
            svc::HOST_S2_INFO => match self.vm.stats(a[0]) {
                Ok(s) => [s.table_pages, s.level, 0, 0],
                Err(e) => [err(e), 0, 0, 0],
            },
            svc::HOST_EXIT_COUNTS => [st.counts.unshare_pending, st.counts.aborts, 0, 0],
            svc::HOST_RESULT => {
                st.result = Some((a[0], a[1]));
                st.relinquished = a[2];
                [0; 4]
            }
            svc::HOST_IRQ_COUNTS => [st.counts.wfi, st.irq.iter().sum(), st.platform.gic.errors, 0],
            svc::HOST_VIRTIO_STATS => match st.platform.virtio.as_ref().and_then(|d| d.slot(a[0] as usize)) {
                Some((_, s, _)) if a[1] == 0 => [s.requests, s.mem_errors, s.bad_requests, s.ring_errors],
                Some((_, s, _)) if a[1] == 1 => [s.bad_accesses, st.device_calls, 0, 0],
                _ => [-i64::from(libc::EINVAL) as u64, 0, 0, 0],
            },
            // No `edu` PCI device behind the Linux host.
            svc::HOST_DMA => [-i64::from(libc::ENODEV) as u64, 0, 0, 0],
            // The driver donates only memory it allocated for a VM: there
            // is no way to name this guest's page for another VM.
            svc::HOST_DONATE_ELSEWHERE => [-i64::from(libc::EOPNOTSUPP) as u64, 0, 0, 0],
            _ => [-i64::from(libc::EINVAL) as u64, 0, 0, 0],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_become_durations() {
        let f = clock::freq();
        assert_eq!(ticks_to_duration(f / 2), Duration::from_millis(500));
        assert_eq!(ticks_to_duration(0), Duration::ZERO);
        assert_eq!(ticks_to_duration(u64::MAX), Duration::from_secs(1));
    }
}
