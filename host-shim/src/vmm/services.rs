//! The host services a guest calls (function IDs `hyp_abi::services`,
//! forwarded by the hyp as HYPERCALL exits): reads and writes of the
//! guest's memory from the host's side, pins, counters, results. Services
//! that belong to one scenario (DMA by a PCI device, the bench's pin
//! measurement) are hooks the scenario registers: the VMM imports no
//! scenario.

use hyp_abi::services as svc;
use spin::Mutex;

use super::guest::Guest;
use crate::hyp;
use crate::report::{expect_abort, read64, write64};
use vmm_devices::platform::GUEST_RAM;

/// -EINVAL: no such service, or an argument it refuses.
const EINVAL: u64 = (-22i64) as u64;
/// -ENODEV: the service's device (or hook) is not there.
const ENODEV: i64 = -19;

/// `HOST_DMA`: DMA of `byte` by a device into host PA `pa`; 0 landed, 1
/// blocked, 2 anything else, or -errno.
pub type DmaHook = fn(pa: u64, byte: u64) -> i64;
/// `BENCH_PIN`: measure PIN/UNPIN on host PA `pa` (a page the guest
/// shared), and the range calls on the `pages` shared pages from it (x2
/// of the call; 0 counts as 1).
pub type PinBenchHook = fn(pa: u64, pages: u64);

static DMA: Mutex<Option<DmaHook>> = Mutex::new(None);
static PIN_BENCH: Mutex<Option<PinBenchHook>> = Mutex::new(None);

/// Serves `HOST_DMA` with `f` from now on (without: ENODEV).
pub fn set_dma_hook(f: DmaHook) {
    *DMA.lock() = Some(f);
}

/// Serves `BENCH_PIN` with `f` from now on (without: nothing is measured).
pub fn set_pin_bench_hook(f: PinBenchHook) {
    *PIN_BENCH.lock() = Some(f);
}

impl Guest {
    /// Answers a host-service call; returns the guest's x0..x3.
    pub fn service(&mut self, fid: u32, a: [u64; 4]) -> [u64; 4] {
        let pa = self.ipa_to_pa(a[0]);
        match (fid, pa) {
            (svc::HOST_READ, Some(pa)) => match expect_abort(|| {
                read64(pa);
            }) {
                Some(_) => [1, 0, 0, 0],
                None => [0, read64(pa), 0, 0],
            },
            (svc::HOST_WRITE, Some(pa)) => [expect_abort(|| write64(pa, a[1])).is_some() as u64, 0, 0, 0],
            (svc::HOST_PIN, Some(pa)) if a[1] == svc::PIN_FOREIGN => [hyp::pin(pa, false) as u64, 0, 0, 0],
            (svc::HOST_PIN, Some(pa)) => {
                let r = hyp::pin(pa, a[1] != 0);
                if r == 0 {
                    *self.pins.entry(pa).or_default() += 1;
                }
                [r as u64, 0, 0, 0]
            }
            (svc::HOST_UNPIN, Some(pa)) => {
                let r = hyp::unpin(pa);
                if r == 0 {
                    if let Some(n) = self.pins.get_mut(&pa) {
                        *n -= 1;
                    }
                }
                [r as u64, 0, 0, 0]
            }
            (svc::HOST_S2_INFO, _) => match hyp::vm_stats(self.handle, a[0]) {
                Ok((pages, level, _)) => [pages, level, 0, 0],
                Err(e) => [e as u64, 0, 0, 0],
            },
            (svc::HOST_EXIT_COUNTS, _) => [self.unshare_pending, self.guest_aborts, 0, 0],
            (svc::HOST_RESULT, _) => {
                self.result = Some((a[0], a[1]));
                self.relinquished = a[2];
                [0, 0, 0, 0]
            }
            (svc::HOST_DONATE_ELSEWHERE, Some(pa)) => {
                // A second VM, given a page that already belongs elsewhere.
                let other = match hyp::vm_create() {
                    Ok(h) => h,
                    Err(e) => return [e as u64, 0, 0, 0],
                };
                let r = hyp::donate(other, pa, GUEST_RAM, 4096);
                let _ = hyp::vm_destroy(other);
                [r as u64, 0, 0, 0]
            }
            (svc::HOST_DUMP, _) => {
                crate::tracing::dump_s2(Some(self.handle));
                [0, 0, 0, 0]
            }
            (svc::HOST_IRQ_COUNTS, _) => [self.wfi_exits, self.irq_exits, self.platform.gic.errors, 0],
            (svc::HOST_VIRTIO_STATS, _) => match self.platform.virtio.as_ref().and_then(|d| d.slot(a[0] as usize)) {
                Some((_, s, _)) if a[1] == 0 => [s.requests, s.mem_errors, s.bad_requests, s.ring_errors],
                Some((_, s, _)) if a[1] == 1 => [s.bad_accesses, self.virtio_calls.get(), 0, 0],
                _ => [EINVAL, 0, 0, 0],
            },
            (svc::HOST_DMA, Some(pa)) => {
                let hook = *DMA.lock();
                [hook.map_or(ENODEV, |f| f(pa, a[1])) as u64, 0, 0, 0]
            }
            (svc::HOST_COUNTERS, _) => hyp::counters(),
            (svc::YIELD, _) => {
                self.yielded = true;
                self.guest_calls = a[0];
                [0; 4]
            }
            (svc::BENCH_PIN, Some(pa)) => {
                let hook = *PIN_BENCH.lock();
                if let Some(f) = hook {
                    f(pa, a[1].max(1));
                }
                [0; 4]
            }
            _ => [EINVAL, 0, 0, 0],
        }
    }
}
