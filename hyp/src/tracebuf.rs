//! Stage-2 event tracing at EL2: a fixed per-CPU ring of [`Record`]s, an
//! optional live stream to the console, and draining into a host buffer.
//!
//! Off by default; then each trace point costs one load and one predictable
//! branch ([`on`]). The fault path never blocks or allocates: a full ring
//! drops the new record and counts it.

use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use aarch64_cpu::registers::{Readable, CNTPCT_EL0};

use hyp_abi::trace::{Kind, Record, RECORD_SIZE};

use crate::console::Line;
use crate::percpu::{self, MAX_CPUS};

/// Records kept per CPU.
pub const CAPACITY: usize = 2048;

/// Enabled kinds (bits of [`Kind::bit`]).
static MASK: AtomicU32 = AtomicU32::new(0);
/// Only this VM (and the host's records about it), or all when u32::MAX.
static VM_FILTER: AtomicU32 = AtomicU32::new(u32::MAX);
static STREAM: AtomicBool = AtomicBool::new(false);
/// Ring size in use (≤ CAPACITY; small values test overflow).
static LIMIT: AtomicU32 = AtomicU32::new(CAPACITY as u32);

struct Ring {
    recs: [Record; CAPACITY],
    /// Oldest record not yet drained.
    head: usize,
    len: usize,
    overflow: u64,
}

const EMPTY: Record = Record {
    ts: 0,
    kind: 0,
    cpu: 0,
    vcpu: 0,
    level: 0,
    who: 0,
    resolution: 0,
    _pad: 0,
    esr: 0,
    far: 0,
    ipa: 0,
    elr: 0,
    arg: 0,
    arg2: 0,
};
#[allow(clippy::declare_interior_mutable_const)]
const RING: Ring = Ring { recs: [EMPTY; CAPACITY], head: 0, len: 0, overflow: 0 };
static mut RINGS: [Ring; MAX_CPUS] = [RING; MAX_CPUS];

fn ring() -> &'static mut Ring {
    let id = percpu::this_cpu().id;
    // SAFETY: each CPU touches only its own ring, with exceptions masked.
    unsafe { &mut (*core::ptr::addr_of_mut!(RINGS))[id] }
}

/// Configures tracing from the command line (`hyp.trace=`, `hyp.trace_vm=`,
/// `hyp.trace_buf=`, `hyp.trace_quiet`).
pub fn configure(mask: u32, vm: Option<u32>, limit: Option<u32>, stream: bool) {
    MASK.store(mask, Ordering::Relaxed);
    VM_FILTER.store(vm.unwrap_or(u32::MAX), Ordering::Relaxed);
    LIMIT.store(limit.unwrap_or(CAPACITY as u32).clamp(1, CAPACITY as u32), Ordering::Relaxed);
    STREAM.store(stream, Ordering::Relaxed);
}

/// Is `kind` being traced? The only cost of a trace point when off.
#[inline(always)]
pub fn on(kind: Kind) -> bool {
    !cfg!(feature = "notrace") && MASK.load(Ordering::Relaxed) & kind.bit() != 0
}

/// Records `r` (timestamp and CPU filled in here).
pub fn emit(mut r: Record) {
    let f = VM_FILTER.load(Ordering::Relaxed);
    if f != u32::MAX && r.who as u32 != f {
        return;
    }
    r.ts = CNTPCT_EL0.get();
    r.cpu = percpu::this_cpu().id as u8;
    let ring = ring();
    let limit = LIMIT.load(Ordering::Relaxed) as usize;
    if ring.len >= limit {
        ring.overflow += 1;
    } else {
        let slot = (ring.head + ring.len) % limit;
        ring.recs[slot] = r;
        ring.len += 1;
    }
    if STREAM.load(Ordering::Relaxed) {
        let mut hex = Line::new();
        for b in r.to_bytes() {
            let _ = write!(hex, "{:02x}", b);
        }
        log::info!("trace {} | {}", hex.as_str(), r);
    }
}

/// Moves up to `out.len() / 64` records of this CPU into `out`; returns
/// (records copied, records lost to overflow so far).
pub fn drain(out: &mut [u8]) -> (usize, u64) {
    let ring = ring();
    let limit = LIMIT.load(Ordering::Relaxed) as usize;
    let n = ring.len.min(out.len() / RECORD_SIZE);
    for i in 0..n {
        let r = ring.recs[(ring.head + i) % limit];
        out[i * RECORD_SIZE..(i + 1) * RECORD_SIZE].copy_from_slice(&r.to_bytes());
    }
    ring.head = (ring.head + n) % limit;
    ring.len -= n;
    (n, ring.overflow)
}

/// Shorthands for the trace points; each is free when its kind is off.
pub mod point {
    use hyp_abi::trace::{Kind, Record, Resolution};
    use hyp_core::mm::Error;

    use super::{emit, on};

    /// A decided stage-2 fault.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn fault(who: u16, vcpu: usize, esr: u64, far: u64, ipa: u64, elr: u64, res: Resolution, level: u8) {
        if on(Kind::Fault) {
            emit(Record {
                kind: Kind::Fault as u8,
                who,
                vcpu: vcpu as u8,
                esr,
                far,
                ipa,
                elr,
                resolution: res as u8,
                level,
                ..Default::default()
            });
        }
    }

    /// An ownership transition on `[addr, addr + size)` and its result.
    #[inline(always)]
    pub fn transition<T, E: Copy + Into<Error>>(
        who: u16,
        vcpu: usize,
        op: u64,
        addr: u64,
        size: u64,
        r: &Result<T, E>,
    ) {
        if on(Kind::Transition) {
            let (res, e) = match r {
                Ok(_) => (Resolution::Ok, 0),
                Err(e) => (Resolution::Refused, -(*e).into().errno()),
            };
            emit(Record {
                kind: Kind::Transition as u8,
                who,
                vcpu: vcpu as u8,
                ipa: addr,
                far: size,
                arg: op,
                arg2: e as u64,
                resolution: res as u8,
                ..Default::default()
            });
        }
    }

    /// MEM_UNSHARE waiting for host pins.
    #[inline(always)]
    pub fn unshare_pending(who: u16, vcpu: usize, ipa: u64) {
        if on(Kind::Transition) {
            emit(Record {
                kind: Kind::Transition as u8,
                who,
                vcpu: vcpu as u8,
                ipa,
                far: 4096,
                arg: hyp_abi::trace::op::GUEST_UNSHARE,
                resolution: Resolution::UnsharePending as u8,
                ..Default::default()
            });
        }
    }

    /// A hypercall and its result.
    #[inline(always)]
    pub fn hypercall(who: u16, vcpu: usize, fid: u64, x1: u64, ret: u64) {
        if on(Kind::Hypercall) {
            emit(Record {
                kind: Kind::Hypercall as u8,
                who,
                vcpu: vcpu as u8,
                arg: fid,
                ipa: x1,
                arg2: ret,
                ..Default::default()
            });
        }
    }

    /// An abort injected.
    #[inline(always)]
    pub fn inject(who: u16, vcpu: usize, esr: u64, far: u64, elr: u64) {
        if on(Kind::Inject) {
            emit(Record {
                kind: Kind::Inject as u8,
                who,
                vcpu: vcpu as u8,
                esr,
                far,
                elr,
                resolution: Resolution::AbortInjected as u8,
                ..Default::default()
            });
        }
    }

    /// Virtual interrupts flushed into a vCPU's list registers (only when
    /// something went in or waits).
    #[inline(always)]
    pub fn vgic(who: u16, vcpu: usize, f: &hyp_core::emul::vgic::Flush, lrs: &[u64]) {
        if (f.injected != 0 || f.overflow != 0) && on(Kind::Irq) {
            let mut m = [0u64; 2];
            for &v in lrs.iter().filter(|&&v| hyp_core::emul::vgic::lr::state(v) != 0) {
                let i = hyp_core::emul::vgic::lr::intid(v) % 128;
                m[(i / 64) as usize] |= 1 << (i % 64);
            }
            emit(Record {
                kind: Kind::Irq as u8,
                who,
                vcpu: vcpu as u8,
                level: f.vtimer as u8,
                arg: f.injected as u64,
                arg2: f.overflow as u64,
                far: m[0],
                ipa: m[1],
                ..Default::default()
            });
        }
    }

    /// A split or merge.
    #[inline(always)]
    pub fn table(kind: Kind, who: u16, ipa: u64, level: u8) {
        if on(kind) {
            emit(Record { kind: kind as u8, who, ipa, level, ..Default::default() });
        }
    }

    /// An SMMU event record: a host device's DMA the SMMU refused.
    pub fn dma(e: &hyp_core::smmu_format::Event) {
        if on(Kind::Dma) {
            emit(Record {
                kind: Kind::Dma as u8,
                level: e.read as u8,
                ipa: e.addr,
                far: e.addr2,
                arg: e.id as u64,
                arg2: e.stream as u64,
                resolution: Resolution::Refused as u8,
                ..Default::default()
            });
        }
    }
}
