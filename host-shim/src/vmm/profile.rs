//! A guest run's exit profile, for the bench's whole-guest rows
//! (`shim.bench_linux`): per kind of exit, how many, the EL2 instructions
//! spent on them (the run that ended in the exit, and the host calls the
//! VMM made handling it) and the host VMM's own instructions handling them
//! (all levels minus EL2, the guest's own instructions inside `VCPU_RUN`
//! left out); and the totals at marks, the moments the guest's console
//! first printed a line containing given text. Counted with the PMU
//! (`el1_rt::pmu`: counter 0 at EL2, counter 1 at every level), so only in
//! a run that lets the host use it (`hyp.bench_pmu`). Only the
//! one-host-CPU scheduler (`Guest::step`) profiles.

use alloc::vec::Vec;

use el1_rt::pmu;
use hyp_abi::host::exit;

use crate::hyp;

/// Kinds: exit reasons 0..=15 (0: none known), and [`CONSOLE`] for an
/// MMIO exit to the PL011 (the guest's console).
pub const CONSOLE: usize = 16;
pub const KINDS: usize = 17;

/// What one kind of exit cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub exits: u64,
    pub el2: u64,
    pub host: u64,
}

/// The totals per kind at one moment, and the hyp's software counters.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    pub kinds: [Tally; KINDS],
    pub counters: [u64; 4],
}

impl Snapshot {
    /// What happened between `self` and `later`, per kind.
    pub fn until(&self, later: &Snapshot) -> Snapshot {
        let mut kinds = [Tally::default(); KINDS];
        for (k, (a, b)) in kinds.iter_mut().zip(self.kinds.iter().zip(later.kinds.iter())) {
            *k = Tally { exits: b.exits - a.exits, el2: b.el2 - a.el2, host: b.host - a.host };
        }
        let c = |i: usize| later.counters[i].wrapping_sub(self.counters[i]);
        Snapshot { kinds, counters: [c(0), c(1), c(2), c(3)] }
    }

    /// Totals over every kind but those of `skip`.
    pub fn total(&self, skip: &[usize]) -> Tally {
        let mut t = Tally::default();
        for (_, k) in self.kinds.iter().enumerate().filter(|(i, _)| !skip.contains(i)) {
            t.exits += k.exits;
            t.el2 += k.el2;
            t.host += k.host;
        }
        t
    }
}

pub struct Profile {
    kinds: [Tally; KINDS],
    /// The PMU's counts (EL2, all levels) when the last exit's handling ended.
    last: (u64, u64),
    watch: &'static [&'static str],
    /// The start, then each watched text when first seen.
    pub marks: Vec<(&'static str, Snapshot)>,
}

/// A counter span, 32 bits wide (PMCR_EL0.LP is clear; each span is a
/// run and its handling, far shorter).
fn span(a: u64, b: u64) -> u64 {
    b.wrapping_sub(a) & 0xffff_ffff
}

/// The kind of the exit VCPU_RUN returned (`r`: x2.. of the call).
pub fn kind(r: &hyp::HypResult, console: core::ops::Range<u64>) -> usize {
    match r {
        Ok(e) if e[0] == exit::MMIO && console.contains(&e[1]) => CONSOLE,
        Ok(e) if e[0] < CONSOLE as u64 => e[0] as usize,
        _ => 0,
    }
}

impl Profile {
    /// Starts counting now (the PMU programmed); `watch`: the texts to mark.
    pub fn start(watch: &'static [&'static str]) -> Profile {
        pmu::init();
        let mut p = Profile { kinds: [Tally::default(); KINDS], last: (0, 0), watch, marks: Vec::new() };
        p.mark("start");
        p.last = pmu::read();
        p
    }

    fn mark(&mut self, what: &'static str) {
        let s = Snapshot { kinds: self.kinds, counters: hyp::counters() };
        self.marks.push((what, s));
    }

    /// One run of `kind`: the PMU read before VCPU_RUN, after it, and after
    /// the exit was handled.
    pub fn account(&mut self, kind: usize, before: (u64, u64), after: (u64, u64), done: (u64, u64)) {
        let el2 = span(self.last.0, done.0);
        let all = span(self.last.1, done.1);
        let guest = span(before.1, after.1).saturating_sub(span(before.0, after.0));
        let t = &mut self.kinds[kind.min(KINDS - 1)];
        t.exits += 1;
        t.el2 += el2;
        t.host += all.saturating_sub(el2).saturating_sub(guest);
        self.last = done;
    }

    /// A line the guest printed on its console: a mark if it holds a
    /// watched text seen for the first time.
    pub fn line(&mut self, l: &str) {
        let w = self.watch.iter().find(|w| l.contains(**w) && !self.marks.iter().any(|(m, _)| m == *w));
        if let Some(&w) = w {
            self.mark(w);
        }
    }

    /// The snapshot at mark `what`.
    pub fn at(&self, what: &str) -> Option<&Snapshot> {
        self.marks.iter().find(|(m, _)| *m == what).map(|(_, s)| s)
    }
}

/// A kind's name in the bench's rows.
pub fn name(kind: usize) -> &'static str {
    match kind as u64 {
        _ if kind == CONSOLE => "MMIO (console)",
        exit::MMIO => "MMIO (other devices)",
        exit::HYPERCALL => "HYPERCALL",
        exit::SYSTEM_OFF => "SYSTEM_OFF",
        exit::GUEST_ABORT => "GUEST_ABORT",
        exit::UNSHARE_PENDING => "UNSHARE_PENDING",
        exit::IRQ => "IRQ",
        exit::WFI => "WFI",
        exit::CPU_ON => "CPU_ON",
        exit::CPU_OFF => "CPU_OFF",
        exit::SGI => "SGI",
        exit::MEM_FAULT => "MEM_FAULT",
        exit::TOPUP => "TOPUP",
        _ => "other",
    }
}
