//! `shim.test=tlb` (with `--smp 2`): a host that has read a page a guest
//! shared, so that the page's stage-2 mapping sits in its TLB, loses the
//! page when the guest unshares it: its next read aborts and returns no
//! data. Page 1 is read and read again on CPU 0, the CPU that runs the
//! guest; page 2 is read on CPU 1, which never runs the guest, while CPU 0
//! runs the guest through the unshare.
//!
//! The CPUs take turns through `PHASE` (the abort hook is global: only one
//! CPU may be inside `expect_abort` at a time). No timing is assumed: each
//! wait is a bounded count of spins, and a wait that runs out fails the
//! scenario and ends the other CPU's part.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

use el1_rt::{println, smp};

use crate::images::GuestImage;
use crate::mem::HostMem;
use crate::report::{expect_abort, read64, Report};
use crate::vmm::{Guest, GUEST_RAM};

use super::harness;

/// 16 MiB of guest RAM: the pages lie in 2M blocks of their own, away from
/// the guest's DTB and image.
const MEM: u64 = 16 << 20;
const PAGE: u64 = 4096;
const PAGES: [u64; 2] = [GUEST_RAM + 0xa0_5000, GUEST_RAM + 0xc0_7000];
/// The guest fills each page with `MARKER ^ ipa` (guest-test/src/tlb.rs).
const MARKER: u64 = 0x7e57_71b0_5ec2_e700;
/// Reads of a page while it is shared (at the start, middle and end).
const OFFSETS: [u64; 3] = [0, 0x800, PAGE - 8];
/// Rounds of reads on CPU 1 before it lets CPU 0 run the guest.
const CPU1_ROUNDS: u64 = 4;
/// Spins a CPU waits for the other before it gives up: seconds of TCG time
/// (a failing run that spun 2^28 times took 3.4 s in all), while the longest
/// wait of a passing run, CPU 1 coming up, is under 2^20.
const SPIN_BOUND: u64 = 1 << 29;

/// Whose turn it is.
static PHASE: AtomicU32 = AtomicU32::new(START);
/// CPU 1 reads the shared page.
const START: u32 = 0;
/// CPU 1 has read it; CPU 0 runs the guest through the unshare.
const CACHED: u32 = 1;
/// The guest unshared it; CPU 1 reads again.
const UNSHARED: u32 = 2;
/// CPU 1 is done and powers itself off.
const DONE: u32 = 3;
/// A wait ran out: whoever set this makes no further read.
const GAVE_UP: u32 = 4;

/// CPU 1's work: the host PA and guest IPA of page 2.
static PA: AtomicU64 = AtomicU64::new(0);
static IPA: AtomicU64 = AtomicU64::new(0);
/// CPU 1's results: the CPU it ran on (MPIDR Aff0); the rounds of reads
/// that saw the marker; after the unshare, the FAR (u64::MAX: no abort),
/// ESR and value of its read.
static RAN_ON: AtomicU64 = AtomicU64::new(u64::MAX);
static SEEN: AtomicU64 = AtomicU64::new(0);
static FAR: AtomicU64 = AtomicU64::new(u64::MAX);
static ESR: AtomicU64 = AtomicU64::new(0);
static VALUE: AtomicU64 = AtomicU64::new(0);
/// The longest wait of either CPU, in spins.
static LONGEST: AtomicU64 = AtomicU64::new(0);

/// One read of `pa` with the abort hook armed: the value loaded (0 when
/// the read aborted) and the abort's (FAR, ESR) if one was taken.
fn probe(pa: u64) -> (u64, Option<(u64, u64)>) {
    let mut v = 0;
    let got = expect_abort(|| v = read64(pa));
    (v, got)
}

/// Reads `pa` (guest IPA `ipa`) at each of OFFSETS: true if every read
/// went through and saw the guest's marker.
fn sees_marker(pa: u64, ipa: u64) -> bool {
    OFFSETS.iter().all(|&o| matches!(probe(pa + o), (v, None) if v == MARKER ^ (ipa + o)))
}

/// Spins until PHASE is `want`: false if the other CPU gave up first or
/// the bound ran out.
fn wait_for(want: u32) -> bool {
    let mut spins = 0;
    let got = loop {
        let p = PHASE.load(SeqCst);
        if p == want || p == GAVE_UP || spins == SPIN_BOUND {
            break p;
        }
        spins += 1;
        core::hint::spin_loop();
    };
    LONGEST.fetch_max(spins, SeqCst);
    got == want
}

/// Gives up from phase `from`: true if the other CPU had not moved on
/// meanwhile (then it makes no further read; ours are over too).
fn give_up(from: u32) -> bool {
    PHASE.compare_exchange(from, GAVE_UP, SeqCst, SeqCst).is_ok()
}

/// CPU 1: reads page 2 (CPU1_ROUNDS rounds), waits for CPU 0 to run the
/// guest through the unshare, then reads it once more.
fn cpu1(_: usize) -> ! {
    RAN_ON.store(smp::cpu_index() as u64, SeqCst);
    let (pa, ipa) = (PA.load(SeqCst), IPA.load(SeqCst));
    let mut seen = 0;
    for _ in 0..CPU1_ROUNDS {
        seen += sees_marker(pa, ipa) as u64;
    }
    SEEN.store(seen, SeqCst);
    if PHASE.compare_exchange(START, CACHED, SeqCst, SeqCst).is_ok() {
        let go = wait_for(UNSHARED) || !give_up(CACHED) && PHASE.load(SeqCst) == UNSHARED;
        if go {
            let (v, got) = probe(pa);
            if let Some((far, esr)) = got {
                FAR.store(far, SeqCst);
                ESR.store(esr, SeqCst);
            }
            VALUE.store(v, SeqCst);
            PHASE.store(DONE, SeqCst);
        }
    }
    smp::cpu_off()
}

/// Runs the guest to its next yield, which must report `calls` successful
/// memory calls (it has not powered off: no result yet).
fn to_yield(g: &mut Guest, calls: u64, what: &str, r: &mut Report) -> bool {
    let run = g.run();
    if let Err(e) = &run {
        println!("[host] vm {}: {}", g.handle, e);
    }
    r.check(run.is_ok() && g.result.is_none() && g.guest_calls == calls, what)
}

/// The read on CPU `cpu` after the unshare: it aborts at `pa` and loads nothing.
fn lost(r: &mut Report, cpu: u32, n: u32, pa: u64, ipa: u64, v: u64, got: Option<(u64, u64)>) {
    match got {
        Some((far, esr)) => println!(
            "[host] tlb: cpu {cpu}: read of page {n} (PA {pa:#x}, IPA {ipa:#x}) after MEM_UNSHARE: data abort, FAR {far:#x}, ESR {esr:#x}, loaded {v:#x}"
        ),
        None => println!(
            "[host] tlb: cpu {cpu}: read of page {n} (PA {pa:#x}, IPA {ipa:#x}) after MEM_UNSHARE went through: loaded {v:#x}{}",
            if v == MARKER ^ ipa { " (the guest's marker)" } else { "" }
        ),
    }
    r.check(
        got.is_some_and(|(far, _)| far == pa),
        &alloc::format!("tlb: CPU {cpu}'s next read of page {n} after MEM_UNSHARE aborts at its address"),
    );
    r.check(got.is_some() && v == 0, &alloc::format!("tlb: the aborted read on CPU {cpu} loaded nothing of page {n}"));
}

pub fn run(hm: &mut HostMem, images: &[GuestImage], r: &mut Report, info: &el1_rt::BootInfo) {
    let Some(&cpu1_mpidr) = info.fdt.cpus().map(|c| c.ids().first() as u64).collect::<alloc::vec::Vec<_>>().get(1)
    else {
        r.fail("tlb scenario needs --smp 2 or more");
        return;
    };
    let Some(img) = images.first() else {
        r.fail("a guest image in the bundle");
        return;
    };
    let args = alloc::format!("test=tlb pages={:#x},{:#x} marker={MARKER:#x}", PAGES[0], PAGES[1]);
    let Some(mut g) = harness::load(hm, img, MEM, &args, r) else {
        return;
    };
    let pa = PAGES.map(|ipa| g.pa + (ipa - GUEST_RAM));

    // Page 1, all on CPU 0.
    to_yield(&mut g, 1, "tlb: the guest shared page 1 and yielded", r);
    r.check(
        sees_marker(pa[0], PAGES[0]),
        "tlb: CPU 0 reads the guest's marker in page 1 (its mapping is now in CPU 0's TLB)",
    );
    to_yield(&mut g, 2, "tlb: the guest unshared page 1 and yielded", r);
    let (v, got) = probe(pa[0]);
    lost(r, 0, 1, pa[0], PAGES[0], v, got);

    // Page 2: read on CPU 1, unshared by the guest run on CPU 0.
    to_yield(&mut g, 3, "tlb: the guest shared page 2 and yielded", r);
    PA.store(pa[1], SeqCst);
    IPA.store(PAGES[1], SeqCst);
    PHASE.store(START, SeqCst);
    let e = smp::start(cpu1_mpidr, 1, cpu1);
    if e != 0 {
        println!("[host] tlb: CPU_ON {cpu1_mpidr:#x}: {e}");
        r.fail("tlb: CPU 1 starts");
        return;
    }
    // If CPU 1 is late, giving up stops it before its next phase; it may
    // still be inside its reads, so CPU 0 makes none from here on.
    let cached = wait_for(CACHED) || !give_up(START) && PHASE.load(SeqCst) == CACHED;
    if !cached {
        r.fail("tlb: CPU 1 reads page 2 within the spin bound");
        return;
    }
    r.check(
        RAN_ON.load(SeqCst) == 1 && SEEN.load(SeqCst) == CPU1_ROUNDS,
        "tlb: CPU 1 reads the guest's marker in page 2, 4 rounds (its mapping is now in CPU 1's TLB)",
    );
    to_yield(&mut g, 4, "tlb: the guest, run on CPU 0, unshared page 2 and yielded", r);
    if PHASE.compare_exchange(CACHED, UNSHARED, SeqCst, SeqCst).is_err() {
        r.fail("tlb: CPU 1 waits for the unshare within the spin bound");
        return;
    }
    let done = wait_for(DONE) || !give_up(UNSHARED) && PHASE.load(SeqCst) == DONE;
    if !done {
        r.fail("tlb: CPU 1 reads page 2 again within the spin bound");
        return;
    }
    let far = FAR.load(SeqCst);
    let got = (far != u64::MAX).then(|| (far, ESR.load(SeqCst)));
    lost(r, 1, 2, pa[1], PAGES[1], VALUE.load(SeqCst), got);
    println!("[host] tlb: longest wait for the other CPU: {} spins (bound {SPIN_BOUND})", LONGEST.load(SeqCst));

    // The guest checks its pages and powers off.
    let run = g.run();
    if let Err(e) = &run {
        println!("[host] vm {}: {}", g.handle, e);
    }
    r.check(run.is_ok() && g.result.is_some(), "tlb: the guest powers off");
    if let Some((p, f)) = g.result {
        println!("[host] vm {}: guest reports {} passed, {} failed", g.handle, p, f);
        r.passed += p as u32;
        r.failed += f as u32;
    }
    harness::teardown(hm, g, r);
    r.check(
        pa.iter().all(|&a| OFFSETS.iter().all(|&o| matches!(probe(a + o), (0, None)))),
        "tlb: after teardown both pages are the host's and read zero",
    );
}
