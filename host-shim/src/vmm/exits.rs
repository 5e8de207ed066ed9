//! What each exit of `VCPU_RUN` means to the VMM, and the scheduler that
//! runs a guest's vCPUs time-sliced on one host CPU, or several guests at
//! once (`run_together`; `vcpus.rs` runs a guest's vCPUs one host CPU
//! each, with the same exit handling).

use alloc::string::String;
use alloc::vec::Vec;

use el1_rt::println;
use hyp_abi::host::exit;

use super::guest::{Donation, Guest, Step, VState};
use super::profile;
use crate::hyp;
use crate::report::{expect_abort, read64};
use vmm_devices::platform::GUEST_RAM;

impl Guest {
    /// The arguments of the next VCPU_RUN of vCPU `v` (its reply owed).
    pub fn run_args(&mut self, v: usize) -> [u64; 6] {
        self.started = true;
        // What was raised for it so far, the hyp sees at this entry.
        self.kicks &= !(1 << v);
        let r = core::mem::take(&mut self.replies[v]);
        [self.handle, v as u64, r[0], r[1], r[2], r[3]]
    }

    /// Handles what VCPU_RUN of vCPU `v` returned.
    pub fn on_exit(&mut self, v: usize, r: hyp::HypResult) -> Result<Step, String> {
        let e = r.map_err(|err| alloc::format!("vcpu_run {v}: {err}"))?;
        let mut reply = [0u64; 4];
        match e[0] {
            exit::MMIO => {
                self.mmio_exits += 1;
                let (ipa, write, value) = (e[1], e[3] != 0, e[4]);
                if let Some(v) = self.device_mmio(ipa, write, e[2], value) {
                    reply[0] = v;
                } else if self.verbose {
                    println!(
                        "[host] vm {}: MMIO {} at {:#x}: no device, reads 0",
                        self.handle,
                        if write { "write" } else { "read" },
                        ipa
                    );
                }
            }
            exit::HYPERCALL => {
                reply = self.service(e[1] as u32, [e[2], e[3], e[4], e[5]]);
                if core::mem::take(&mut self.yielded) {
                    // The reply goes in on the next run.
                    self.replies[v] = reply;
                    return Ok(Step::Yield);
                }
            }
            exit::SYSTEM_OFF => {
                self.done = true;
                return Ok(Step::Off);
            }
            exit::SYSTEM_RESET => return Err("guest asked for a reset".into()),
            exit::GUEST_ABORT => {
                self.guest_aborts += 1;
                println!("[host] vm {}: guest abort at IPA {:#x} (no memory there): abort injected", self.handle, e[1]);
            }
            exit::UNSHARE_PENDING => self.unshare_pending(e[1], e[2]),
            exit::TOPUP => {
                // The guest's call needs table pages: donate them; it runs
                // the call again.
                let r = crate::topup::topup(self.handle, e[1]);
                if r != 0 {
                    return Err(alloc::format!("VM_TOPUP of {} pages: {}", e[1], r));
                }
            }
            exit::MEM_FAULT => self.mem_fault(e[1], e[2], e[3])?,
            exit::IRQ => self.irq_exits += 1,
            exit::WFI => {
                self.wfi_exits += 1;
                // WFE: just let the others run first. An interrupt raised for
                // it since it entered (a kick: the hyp may have found nothing
                // pending just before) keeps it runnable, or it would sleep
                // on an interrupt already raised.
                if e[2] == 0 && self.kicks & (1 << v) == 0 {
                    self.vstate[v] = VState::Idle(e[1]);
                }
            }
            exit::CPU_ON => {
                if let Some(s) = self.vstate.get_mut(e[1] as usize) {
                    *s = VState::Runnable;
                }
            }
            exit::CPU_OFF => self.vstate[v] = VState::Off,
            exit::SGI => self.wake(e[1], v),
            exit::GUEST_FATAL => {
                return Err(alloc::format!("guest SError (ESR {:#x}) at PC {:#x}: vCPU stopped", e[1], e[2]))
            }
            other => return Err(alloc::format!("unknown exit {other}")),
        }
        self.replies[v] = reply;
        // Device lines and pulses the VMM raised: their vCPUs wake.
        let kicked = core::mem::take(&mut self.platform.gic.kicked);
        self.wake(kicked, v);
        Ok(Step::Go)
    }

    /// A memory fault at `ipa` in the guest's on-demand RAM: donates what
    /// the hyp suggested (`at`, `len`: the 2 MiB block around it where
    /// nothing is mapped yet), or the faulting page alone if that is
    /// refused (another vCPU's donation got part of the block first). A
    /// page another vCPU donated meanwhile (EPERM) needs nothing: the
    /// access runs again and finds it.
    pub(super) fn mem_fault(&mut self, ipa: u64, at: u64, len: u64) -> Result<(), String> {
        self.mem_faults += 1;
        if self.donation != Donation::OnDemand {
            return Err(alloc::format!("memory fault exit at IPA {ipa:#x}, but no memory is on demand"));
        }
        let page = ipa & !0xfff;
        let hint_ok =
            at <= ipa && ipa - at < len && self.ipa_to_pa(at).is_some() && self.ipa_to_pa(at + len - 1).is_some();
        if hint_ok && hyp::donate(self.handle, self.pa + (at - GUEST_RAM), at, len) == 0 {
            self.donated += len;
            return Ok(());
        }
        let pa = self
            .ipa_to_pa(page)
            .ok_or_else(|| alloc::format!("memory fault exit at IPA {ipa:#x}, outside guest RAM"))?;
        match hyp::donate(self.handle, pa, page, 4096) {
            0 => self.donated += 4096,
            e if e == -hyp_abi::errno::EPERM => {}
            e => return Err(alloc::format!("donate of IPA {page:#x} on a memory fault: {e}")),
        }
        Ok(())
    }

    /// The guest's MEM_UNSHARE of `ipa` (host PA `pa`) waits on host pins:
    /// the VMM drops its own, and any other the host holds.
    fn unshare_pending(&mut self, ipa: u64, pa: u64) {
        self.unshare_pending += 1;
        let n = self.pins.remove(&pa).unwrap_or(0);
        let still = expect_abort(|| {
            read64(pa);
        })
        .is_none();
        println!(
            "[host] vm {}: unshare of IPA {:#x} pending on {} host pin(s) (page still shared: {}); unpinning",
            self.handle, ipa, n, still
        );
        for _ in 0..n {
            hyp::unpin(pa);
        }
        // Pins the rest of the host took (a scenario's own, not the VMM's)
        // would keep the guest waiting forever: the host lets its guest
        // progress and drops them too.
        let others = hyp::call(hyp_abi::host::PAGE_STATE, [pa, 0, 0, 0, 0, 0]).map(|r| r[1]).unwrap_or(0);
        if others != 0 {
            println!(
                "[host] vm {}: the page also held {} pin(s) taken outside the VMM; unpinning them",
                self.handle, others
            );
            for _ in 0..others {
                hyp::unpin(pa);
            }
        }
    }

    /// vCPUs of `mask` that idle become runnable; the others are marked,
    /// so that a WFI exit racing with this (the hyp found nothing pending
    /// before the interrupt was made pending) does not put them to sleep.
    /// When each vCPU has a host CPU of its own, that CPU is kicked: one in
    /// the guest right now would otherwise keep the interrupt waiting until
    /// the end of its slice, one napping until its next poll.
    /// `me` is the vCPU whose exit this host CPU is handling (not in the
    /// guest now: no kick).
    fn wake(&mut self, mask: u64, me: usize) {
        let mut targets = 0u16;
        for (i, s) in self.vstate.iter_mut().enumerate() {
            if mask & (1 << i) == 0 {
                continue;
            }
            let idle = matches!(s, VState::Idle(_));
            if idle {
                *s = VState::Runnable;
            } else {
                self.kicks |= 1 << i;
            }
            // Its host CPU is in the guest (kicked out) or napping (woken).
            if (idle || *s == VState::Runnable) && i != me {
                if let Some(&aff0) = self.kick_aff0.get(i) {
                    targets |= 1 << aff0;
                }
            }
        }
        crate::idle::kick(targets);
    }

    /// Idle vCPUs whose timer deadline has passed become runnable; returns
    /// the earliest deadline still ahead (None if no vCPU idles).
    pub fn tick(&mut self) -> Option<u64> {
        let now = el1_rt::gic::counter().0;
        let mut next = None;
        for s in self.vstate.iter_mut() {
            if let VState::Idle(d) = *s {
                if now >= d {
                    *s = VState::Runnable;
                } else {
                    next = Some(next.map_or(d, |n: u64| n.min(d)));
                }
            }
        }
        next
    }

    /// Runs the guest's vCPUs on this CPU, time-sliced round-robin, until
    /// it powers off (Ok), yields (Ok: `run` again to continue) or
    /// something goes wrong. A vCPU that waits (WFI) is run again when its
    /// timer is due or the VMM raised an interrupt for it; while every vCPU
    /// waits, this CPU sleeps until the earliest deadline (`idle.rs`).
    pub fn run(&mut self) -> Result<(), String> {
        loop {
            match self.step()? {
                Ran::Once => {}
                Ran::Stopped => return Ok(()),
                Ran::Wait(u64::MAX) => return Err(NOTHING_WAKES.into()),
                Ran::Wait(d) => crate::idle::nap(d, u64::MAX),
            }
        }
    }

    /// Runs the next runnable vCPU once (to its next exit) and handles the
    /// exit; [`Ran::Wait`] when none is runnable.
    pub fn step(&mut self) -> Result<Ran, String> {
        let n = self.vstate.len();
        let next = self.tick();
        let pick = (1..=n).map(|k| (self.cur + k) % n).find(|&i| self.vstate[i] == VState::Runnable);
        let Some(v) = pick else {
            // None: every vCPU powered off.
            return Ok(next.map_or(Ran::Stopped, Ran::Wait));
        };
        self.cur = v;
        let args = self.run_args(v);
        if self.prof.is_some() {
            return self.step_profiled(v, args);
        }
        let r = hyp::call(hyp_abi::host::VCPU_RUN, args);
        Ok(match self.on_exit(v, r)? {
            Step::Go => Ran::Once,
            Step::Yield | Step::Off => Ran::Stopped,
        })
    }

    /// [`Guest::step`]'s run and exit, counted in the exit profile.
    #[inline(never)]
    fn step_profiled(&mut self, v: usize, args: [u64; 6]) -> Result<Ran, String> {
        let before = el1_rt::pmu::read();
        let r = hyp::call(hyp_abi::host::VCPU_RUN, args);
        let after = el1_rt::pmu::read();
        let uart = vmm_devices::platform::GUEST_UART;
        let kind = profile::kind(&r, uart..uart + vmm_devices::pl011::SIZE);
        let step = self.on_exit(v, r)?;
        if let Some(p) = self.prof.as_mut() {
            p.account(kind, before, after, el1_rt::pmu::read());
        }
        Ok(match step {
            Step::Go => Ran::Once,
            Step::Yield | Step::Off => Ran::Stopped,
        })
    }
}

const NOTHING_WAKES: &str = "the guest waits for an interrupt that nothing will raise";

/// What [`Guest::step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ran {
    /// A vCPU ran and its exit was handled.
    Once,
    /// The guest powered off, yielded, or has no vCPU on.
    Stopped,
    /// Every vCPU on waits: the earliest timer deadline (u64::MAX: only an
    /// interrupt the VMM raises wakes one).
    Wait(u64),
}

/// Runs several guests at once on this CPU, one vCPU run of each in turn,
/// until each has stopped; the outcome of each, in order. While every
/// guest waits, this CPU sleeps until the earliest deadline.
pub fn run_together(guests: &mut [Guest]) -> Vec<Result<(), String>> {
    let mut out: Vec<Option<Result<(), String>>> = guests.iter().map(|_| None).collect();
    while out.iter().any(Option::is_none) {
        let (mut ran, mut earliest) = (false, u64::MAX);
        for (g, o) in guests.iter_mut().zip(out.iter_mut()).filter(|(_, o)| o.is_none()) {
            match g.step() {
                Ok(Ran::Once) => ran = true,
                Ok(Ran::Stopped) if !g.done && g.vstate.iter().any(|s| *s != VState::Off) => ran = true,
                Ok(Ran::Stopped) => *o = Some(Ok(())),
                Ok(Ran::Wait(d)) => earliest = earliest.min(d),
                Err(e) => *o = Some(Err(e)),
            }
        }
        if ran || out.iter().all(Option::is_some) {
            continue;
        }
        if earliest == u64::MAX {
            // Every guest left waits for an interrupt nothing will raise.
            for o in out.iter_mut().filter(|o| o.is_none()) {
                *o = Some(Err(NOTHING_WAKES.into()));
            }
            break;
        }
        crate::idle::nap(earliest, u64::MAX);
    }
    out.into_iter().map(|o| o.unwrap_or(Ok(()))).collect()
}
