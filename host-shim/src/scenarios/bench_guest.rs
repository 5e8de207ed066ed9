//! The bench's whole-guest rows (issue 26): a guest's start (VM and vCPU
//! creation, the donation or the on-demand declaration, the load), its
//! run touching its first 64 MiB (`test=touch mib=64`: one store per
//! page, nothing printed, power off), and its teardown (VM_DESTROY and
//! the scrub of what was donated), for a 64 MiB and a 1 GiB guest, with
//! its memory donated up front and on demand (docs/abi.md, "Guest memory
//! on demand"). Each configuration runs [`N`] times; the PMU's EL2 and
//! all-level counts are per guest.

use el1_rt::bench::{diff, report, Counters};
use el1_rt::{pmu, println};

use crate::hyp;
use crate::images::GuestImage;
use crate::mem::HostMem;
use crate::report::Report;
use crate::vmm::{Donation, Guest};

/// Guests per configuration (the counts are exact under icount; the
/// average of a few shows they repeat).
const N: u64 = 2;
const TOUCH_MIB: u64 = 64;

/// A span of the PMU's two counters, read 32 bits wide (PMCR_EL0.LP is
/// clear: event counters overflow at 32 bits; every span here is far
/// shorter).
fn span(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (b.0.wrapping_sub(a.0) & 0xffff_ffff, b.1.wrapping_sub(a.1) & 0xffff_ffff)
}

fn add(t: &mut (u64, u64), s: (u64, u64)) {
    t.0 += s.0;
    t.1 += s.1;
}

/// The rows of one configuration: start, start + touch, teardown, each
/// with the software counters of its own spans.
#[derive(Default)]
struct Totals {
    start: ((u64, u64), Counters),
    touched: ((u64, u64), Counters),
    teardown: ((u64, u64), Counters),
    faults: u64,
}

fn acc(t: &mut ((u64, u64), Counters), s: (u64, u64), c: Counters) {
    add(&mut t.0, s);
    for (x, y) in t.1.iter_mut().zip(c) {
        *x += y;
    }
}

/// Runs `N` guests of `mem` bytes donated as `how`, each touching its
/// first 64 MiB; None if one failed (reported in `r`).
fn measure(hm: &mut HostMem, img: &GuestImage, mem: u64, how: Donation, r: &mut Report) -> Option<Totals> {
    let mut t = Totals::default();
    let args = alloc::format!("test=touch mib={TOUCH_MIB}");
    for _ in 0..N {
        let c0 = hyp::counters();
        let a = pmu::read();
        let loaded = Guest::load_donating(hm, &img.name, img.elf, mem, &args, 1, None, how);
        let b = pmu::read();
        let c1 = hyp::counters();
        let mut g = match loaded {
            Ok(g) => g,
            Err(e) => {
                println!("[host] bench guest ({} MiB, {:?}): {e}", mem >> 20, how);
                r.fail("whole-guest bench: the guest loads");
                return None;
            }
        };
        let ran = g.run();
        let c = pmu::read();
        let c2 = hyp::counters();
        let faults = g.mem_faults;
        let destroyed = g.destroy(hm);
        let d = pmu::read();
        let c3 = hyp::counters();
        if let Err(e) = ran {
            println!("[host] bench guest ({} MiB, {:?}): {e}", mem >> 20, how);
            r.fail("whole-guest bench: the guest runs to its power-off");
            return None;
        }
        if destroyed.is_err() {
            r.fail("whole-guest bench: the guest is destroyed");
            return None;
        }
        acc(&mut t.start, span(a, b), diff(c0, c1));
        acc(&mut t.touched, span(a, c), diff(c0, c2));
        acc(&mut t.teardown, span(c, d), diff(c2, c3));
        t.faults += faults;
    }
    Some(t)
}

/// The whole-guest rows; `want` says which of them run.
pub fn rows(hm: &mut HostMem, img: &GuestImage, r: &mut Report, want: impl Fn(&str) -> bool) {
    const MIB: u64 = 1 << 20;
    for (mem, size) in [(64 * MIB, "64 MiB"), (1024 * MIB, "1 GiB")] {
        for (how, mode) in [(Donation::UpFront, "up front"), (Donation::OnDemand, "on demand")] {
            let names = [
                alloc::format!("guest start, {mode} ({size} guest)"),
                alloc::format!("guest start + {TOUCH_MIB} MiB touched, {mode} ({size} guest)"),
                alloc::format!("guest teardown, {mode} ({size} guest, {TOUCH_MIB} MiB touched)"),
            ];
            if !names.iter().any(|n| want(n)) {
                continue;
            }
            let Some(t) = measure(hm, img, mem, how, r) else { continue };
            for (name, (m, c)) in names.iter().zip([t.start, t.touched, t.teardown]) {
                report(name, N, m, c);
            }
            let expect = if how == Donation::OnDemand { TOUCH_MIB.min(mem / MIB) / 2 } else { 0 };
            r.check(
                t.faults == N * expect,
                &alloc::format!("whole-guest bench ({size}, {mode}): {expect} memory faults per guest"),
            );
        }
    }
}
