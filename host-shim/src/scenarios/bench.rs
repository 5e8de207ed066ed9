//! `shim.test=bench`: the host side of `cargo xtask bench`. Each operation
//! runs N times with the PMU counting instructions at EL2 and at all
//! levels; the hyp's software counters are read around it. The guest side
//! (MEM_SHARE/UNSHARE with and without splits, MMIO exits) runs in a 1 GiB
//! bench guest; scale runs use a 64 MiB and a 16 GiB guest.

use el1_rt::bench::{diff, report, Counters};
use el1_rt::pmu;
use el1_rt::println;
use hyp_abi::host as abi;

use crate::hyp::{self, call};
use crate::images::GuestImage;
use crate::mem::HostMem;
use crate::report::{read64, Report};
use crate::vmm::{Guest, GUEST_RAM};

pub const N: u64 = 1000;

/// Repetitions per row (`shim.bench_n=`, default [`N`]) and the rows to run
/// (`shim.bench_only=WORD`: rows whose name contains WORD; default all).
/// `cargo xtask profile` runs one row at two repetition counts and takes
/// the difference.
static REPS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(N);
static ONLY: spin::Once<&'static str> = spin::Once::new();
/// `shim.bench_linux`: profile the Linux guest's run (`bench_linux.rs`).
static LINUX: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Does this run profile its Linux guest for the bench?
pub fn linux_profile() -> bool {
    LINUX.load(core::sync::atomic::Ordering::Relaxed)
}

pub fn configure(args: &'static str) {
    for t in args.split_ascii_whitespace() {
        if let Some(n) = t.strip_prefix("shim.bench_n=").and_then(|v| v.parse::<u64>().ok()) {
            REPS.store(n.max(1), core::sync::atomic::Ordering::Relaxed);
        }
        if t == "shim.bench_linux" {
            LINUX.store(true, core::sync::atomic::Ordering::Relaxed);
        }
        if let Some(w) = t.strip_prefix("shim.bench_only=") {
            ONLY.call_once(|| w);
        }
    }
}

fn reps() -> u64 {
    REPS.load(core::sync::atomic::Ordering::Relaxed)
}

fn only() -> Option<&'static str> {
    ONLY.get().copied()
}

/// Does a row of this name run?
fn want(name: &str) -> bool {
    only().is_none_or(|w| name.contains(w))
}

/// The bench guest's arguments for the row selection.
fn guest_args() -> alloc::string::String {
    match only() {
        Some(w) => alloc::format!(" n={} only={}", reps(), w),
        None => alloc::format!(" n={}", reps()),
    }
}
const SZ_2M: u64 = 2 << 20;
const SZ_1G: u64 = 1 << 30;

/// The hyp's software counters.
fn counters() -> Counters {
    hyp::counters()
}

/// STATS: bytes of the hyp's pool in use, and the boot's length (system
/// counter in ns at the host's first entry).
fn pool_and_boot() -> (u64, u64) {
    call(abi::STATS, [0; 6]).map(|r| (r[4], r[5])).unwrap_or((0, 0))
}

fn size_row(name: &str, v: u64) {
    println!("[bench-size] {} = {}", name, v);
}

/// Memory-overhead rows: the hyp's pool before and after a VM with an
/// empty stage-2, and with 8 vCPUs; the boot row.
fn overhead() {
    if only().is_some() {
        return;
    }
    let (u0, boot) = pool_and_boot();
    size_row("boot: EL2 instructions from reset to the host's entry", boot);
    let h = hyp::vm_create().expect("vm_create");
    let (u1, _) = pool_and_boot();
    for _ in 0..8 {
        hyp::vcpu_create(h, GUEST_RAM, 0).expect("vcpu_create");
    }
    let (u2, _) = pool_and_boot();
    hyp::vm_destroy(h).expect("vm_destroy");
    size_row("hyp memory per VM (bytes, empty stage-2, no vCPU)", u1 - u0);
    size_row("hyp memory per vCPU (bytes, average of 8)", (u2 - u1) / 8);
}

/// The scale, memory and boot rows alone (`shim.test=bench-scale`).
pub fn scale_rows(hm: &mut HostMem, images: &[GuestImage], r: &mut Report) {
    pmu::init();
    let Some(img) = images.first() else {
        r.fail("bench guest image");
        return;
    };
    scale(hm, img, r);
    overhead();
}

/// Scale rows: the same operations with 1, 16 and 255 VMs in existence.
/// The extra VMs (each a vCPU and one donated page) are created before
/// the measured guest, which is the newest.
fn scale(hm: &mut HostMem, img: &GuestImage, r: &mut Report) {
    if !want("scale: ") {
        return;
    }
    const MAX: u64 = 255;
    let pages = hm.alloc(MAX * 4096, 4096).expect("host memory");
    let mut extra = alloc::vec::Vec::new();
    let mut ok = true;
    for k in [1u64, 16, MAX] {
        let (u0, _) = pool_and_boot();
        let before = extra.len() as u64;
        while (extra.len() as u64) < k - 1 {
            let pa = pages + extra.len() as u64 * 4096;
            let h = hyp::vm_create().expect("vm_create");
            ok &= hyp::vcpu_create(h, GUEST_RAM, 0).is_ok() && hyp::donate(h, pa, GUEST_RAM, 4096) == 0;
            extra.push(h);
        }
        if k == MAX {
            let (u1, _) = pool_and_boot();
            size_row("hyp memory per VM (bytes, 1 vCPU, 1 page donated)", (u1 - u0) / (extra.len() as u64 - before));
        }
        let args = alloc::format!("test=bench-vms label={k}{}", guest_args());
        if let Some(g) = run_guest(hm, img, 16 << 20, &args, r) {
            ok &= g.result.is_some_and(|(_, f)| f == 0);
            let name = alloc::format!("scale: host vcpu_irq state ({k} VM{})", if k == 1 { "" } else { "s" });
            bench(&name, reps(), |_| {
                let _ = call(abi::VCPU_IRQ, [g.handle, 0, 0, abi::irq::STATE, 0, 0]);
            });
            let _ = g.destroy(hm);
        }
    }
    for h in extra {
        ok &= hyp::vm_destroy(h).is_ok();
    }
    hm.free(pages, MAX * 4096);
    r.check(ok, "scale rows: 255 VMs existed at once, and were destroyed");
}

/// Runs `f` N times under the PMU; reports it with the counters' change.
fn bench(name: &str, n: u64, mut f: impl FnMut(u64)) {
    if !want(name) {
        return;
    }
    let c0 = counters();
    let m = pmu::measure(n, &mut f);
    report(name, n, m, diff(c0, counters()));
}

/// PIN/UNPIN on a page a guest shared with us (the BENCH_PIN service,
/// a hook registered by [`run`]), and the range calls ([`range_pins`]).
fn pins(pa: u64, pages: u64) {
    range_pins(pa, pages);
    if !want("host_pin") && !want("host_unpin") {
        return;
    }
    let n = reps();
    let c0 = counters();
    let (mut pin, mut unpin) = ((0, 0), (0, 0));
    for _ in 0..n {
        let a = pmu::read();
        hyp::pin(pa, false);
        let b = pmu::read();
        hyp::unpin(pa);
        let c = pmu::read();
        pin = (pin.0 + b.0 - a.0, pin.1 + b.1 - a.1);
        unpin = (unpin.0 + c.0 - b.0, unpin.1 + c.1 - b.1);
    }
    let c = diff(c0, counters());
    report("host_pin", n, pin, c);
    report("host_unpin", n, unpin, c);
}

/// PIN_RANGE + UNPIN_RANGE: of one page (what a 4 KiB I/O request pins),
/// and of 16 pages (a 64 KiB one) when the guest shared that many from
/// `pa` (BENCH_PIN x2), per page.
fn range_pins(pa: u64, pages: u64) {
    let n = reps();
    for (name, k) in
        [("host pin+unpin 4K (range calls, 1 page)", 1), ("host pin+unpin 64K (range calls, per page of 16)", 16)]
    {
        if !want(name) || pages < k {
            continue;
        }
        let c0 = counters();
        let m = pmu::measure(n, |_| {
            hyp::pin_range(pa, k, false);
            hyp::unpin_range(pa, k);
        });
        report(name, n * k, m, diff(c0, counters()));
    }
}

/// SHARE_HYP / UNSHARE_HYP of one 4K page of a 2M block already split (the
/// page before it stays shared with the hyp meanwhile): no table page
/// allocated or freed, one descriptor written on each side.
fn share_hyp(hm: &mut HostMem) {
    let names = ["host share_hyp 4K (no split)", "host unshare_hyp 4K"];
    if !names.iter().any(|n| want(n)) {
        return;
    }
    let n = reps();
    let r = hm.alloc(SZ_2M, SZ_2M).expect("host memory");
    let hvc = |fid, pa| call(fid, [pa, 4096, 0, 0, 0, 0]).expect("share_hyp/unshare_hyp");
    hvc(abi::SHARE_HYP, r);
    let (mut s, mut u) = ((0, 0), (0, 0));
    for _ in 0..n {
        let a = pmu::read();
        hvc(abi::SHARE_HYP, r + 4096);
        let b = pmu::read();
        hvc(abi::UNSHARE_HYP, r + 4096);
        let c = pmu::read();
        s = (s.0 + b.0 - a.0, s.1 + b.1 - a.1);
        u = (u.0 + c.0 - b.0, u.1 + c.1 - b.1);
    }
    // The software counters of one more of each, per operation.
    let c0 = counters();
    hvc(abi::SHARE_HYP, r + 4096);
    let c1 = counters();
    hvc(abi::UNSHARE_HYP, r + 4096);
    let c2 = counters();
    report(names[0], n, s, diff(c0, c1).map(|x| x * n));
    report(names[1], n, u, diff(c1, c2).map(|x| x * n));
    hvc(abi::UNSHARE_HYP, r);
    hm.free(r, SZ_2M);
}

fn lazy_fault(name: &str, region: u64, size: u64) {
    if !want(name) {
        return;
    }
    let n = reps();
    // Give the region to the hyp and back: the host's entry becomes one
    // invalid entry of `size`, and the next touch faults it in as a block.
    // Only the touch is measured: its instructions, and the software
    // counters read right around it (not the donate and reclaim's).
    let (mut el2, mut all) = (0, 0);
    let mut c = [0; 4];
    for _ in 0..n {
        call(abi::DONATE_HYP, [region, size, 0, 0, 0, 0]).expect("donate_hyp");
        call(abi::RECLAIM_HYP, [region, size, 0, 0, 0, 0]).expect("reclaim_hyp");
        let c0 = counters();
        let a = pmu::read();
        read64(region);
        let b = pmu::read();
        let d = diff(c0, counters());
        el2 += b.0 - a.0;
        all += b.1 - a.1;
        for (t, v) in c.iter_mut().zip(d) {
            *t += v;
        }
    }
    report(name, n, (el2, all), c);
}

fn vm_lifecycle(hm: &mut HostMem, mib: u64) {
    let names = [
        alloc::format!("vm_create+vcpu_create ({mib} MiB guest)"),
        alloc::format!("donate ({mib} MiB, 2M blocks)"),
        alloc::format!("vm_destroy+scrub ({mib} MiB)"),
    ];
    if !names.iter().any(|n| want(n)) {
        return;
    }
    let n = reps();
    let size = mib << 20;
    let pa = hm.alloc(size, SZ_2M).expect("host memory");
    let c0 = counters();
    let (mut create, mut donate, mut destroy) = ((0, 0), (0, 0), (0, 0));
    for _ in 0..n {
        let a = pmu::read();
        let h = hyp::vm_create().expect("vm_create");
        hyp::vcpu_create(h, GUEST_RAM, 0).expect("vcpu_create");
        let b0 = pmu::read();
        // The VM's table pages (VM_TOPUP), outside the rows: the donate
        // row is DONATE_GUEST alone.
        crate::topup::for_donation(h, pa, GUEST_RAM, size);
        let b = pmu::read();
        assert_eq!(call(abi::DONATE_GUEST, [h, pa, GUEST_RAM, size, 0, 0]).map(|_| ()), Ok(()));
        let c = pmu::read();
        hyp::vm_destroy(h).expect("vm_destroy");
        let d = pmu::read();
        create = (create.0 + b0.0 - a.0, create.1 + b0.1 - a.1);
        donate = (donate.0 + c.0 - b.0, donate.1 + c.1 - b.1);
        destroy = (destroy.0 + d.0 - c.0, destroy.1 + d.1 - c.1);
    }
    let cnt = diff(c0, counters());
    for (name, m) in names.iter().zip([create, donate, destroy]) {
        report(name, n, m, cnt);
    }
    hm.free(pa, size);
}

fn table_pages(hm: &mut HostMem) {
    if only().is_some() {
        return;
    }
    let pa = hm.alloc(SZ_1G + SZ_1G, SZ_1G).expect("2 GiB of host memory");
    let mut pages = [0u64; 2];
    for (i, off) in [0u64, 4096].into_iter().enumerate() {
        let h = hyp::vm_create().expect("vm_create");
        assert_eq!(hyp::donate(h, pa + off, GUEST_RAM, SZ_1G), 0);
        pages[i] = hyp::vm_stats(h, GUEST_RAM).map(|s| s.0).unwrap_or(u64::MAX);
        hyp::vm_destroy(h).expect("vm_destroy");
    }
    println!("[bench-size] table pages per GiB of guest (2M/1G blocks) = {}", pages[0]);
    println!("[bench-size] table pages per GiB of guest (4K pages only) = {}", pages[1]);
    hm.free(pa, 2 * SZ_1G);
}

fn run_guest(hm: &mut HostMem, img: &GuestImage, mem: u64, args: &str, r: &mut Report) -> Option<Guest> {
    run_guest_smp(hm, img, mem, args, 1, r)
}

fn run_guest_smp(
    hm: &mut HostMem,
    img: &GuestImage,
    mem: u64,
    args: &str,
    vcpus: usize,
    r: &mut Report,
) -> Option<Guest> {
    let mut g = match Guest::load_smp(hm, &img.name, img.elf, mem, args, vcpus) {
        Ok(g) => g,
        Err(e) => {
            println!("[host] bench guest: {}", e);
            r.fail("bench guest loads");
            return None;
        }
    };
    if let Err(e) = g.run() {
        println!("[host] bench guest: {}", e);
        r.fail("bench guest runs");
    }
    Some(g)
}

/// The interrupt rows (`shim.test=bench-irq` alone): injection, EOI, the
/// timer, SGIs between two vCPUs.
pub fn irq(hm: &mut HostMem, images: &[GuestImage], r: &mut Report) {
    if only().is_some() {
        return;
    }
    let Some(img) = images.first() else {
        r.fail("bench guest image");
        return;
    };
    if let Some(g) = run_guest_smp(hm, img, 16 << 20, "test=bench-irq", 2, r) {
        r.check(g.result.is_some_and(|(_, f)| f == 0), "interrupt bench guest ran its measurements");
        let _ = g.destroy(hm);
    }
}

pub fn run(hm: &mut HostMem, images: &[GuestImage], r: &mut Report) {
    pmu::init();
    crate::vmm::services::set_pin_bench_hook(pins);
    bench("host hvc (null)", reps(), |_| {
        let _ = call(abi::NOP, [0; 6]);
    });
    let r2m = hm.alloc(SZ_2M, SZ_2M).expect("host memory");
    lazy_fault("host lazy fault (2M block)", r2m, SZ_2M);
    hm.free(r2m, SZ_2M);
    match hm.alloc(SZ_1G, SZ_1G) {
        Some(r1g) => {
            lazy_fault("host lazy fault (1G block)", r1g, SZ_1G);
            hm.free(r1g, SZ_1G);
        }
        None => println!("[host] bench: no free 1 GiB for the 1G lazy fault (use --mem 20G)"),
    }
    share_hyp(hm);
    vm_lifecycle(hm, 2);
    vm_lifecycle(hm, 4);
    table_pages(hm);
    let Some(img) = images.first() else {
        r.fail("bench guest image");
        return;
    };
    super::bench_guest::rows(hm, img, r, want);
    // The guest side: split/merge costs in a 1 GiB guest, MMIO exits, pins.
    if let Some(g) = run_guest(hm, img, SZ_1G, &(alloc::string::String::from("test=bench") + &guest_args()), r) {
        r.check(g.result.is_some_and(|(_, f)| f == 0), "bench guest ran its measurements");
        let _ = g.destroy(hm);
    }
    irq(hm, images, r);
    scale(hm, img, r);
    overhead();
    if only().is_some() {
        return;
    }
    // Scale: the same 4K share/unshare in a 64 MiB and a 16 GiB guest.
    for (mem, label) in [(64 << 20, "64 MiB"), (16 * SZ_1G, "16 GiB")] {
        if let Some(g) =
            run_guest(hm, img, mem, &alloc::format!("test=bench-scale label={}", label.replace(' ', "")), r)
        {
            r.check(g.result.is_some_and(|(_, f)| f == 0), "scale guest ran its measurements");
            if mem <= SZ_1G {
                let _ = g.destroy(hm);
            }
            // The 16 GiB guest is left alive: scrubbing 16 GiB under TCG
            // takes minutes and teardown is measured above.
        }
    }
}
