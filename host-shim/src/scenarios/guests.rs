//! Scenarios with guests: the demo story, the guest test suite, running
//! user-supplied guests, two VMs side by side.

use el1_rt::println;

use super::harness::{load, load_smp, run_guest, teardown};
use crate::hyp;
use crate::images::GuestImage;
use crate::mem::HostMem;
use crate::report::{expect_abort, read64, Report};

/// Every guest in the bundle, one after the other (`cargo xtask run --guest`);
/// the Linux guests run at once, after the ELF guests.
pub fn run_all(hm: &mut HostMem, images: &[GuestImage], r: &mut Report) {
    let mut linux = alloc::vec::Vec::new();
    for img in images {
        if let crate::images::Kind::Linux { initrd, disk, cmdline } = img.kind {
            linux.push(super::linux::LinuxImage { img, initrd, disk, cmdline });
            continue;
        }
        let Some(mut g) = load(hm, img, img.mem, "", r) else {
            continue;
        };
        run_guest(&mut g, r);
        r.check(true, &alloc::format!("guest '{}' ran to SYSTEM_OFF", img.name));
        teardown(hm, g, r);
    }
    if !linux.is_empty() {
        super::linux::run(hm, &linux, r);
    }
}

/// The guest test payload with `args`; its own PASS/FAIL tally counts.
pub fn suite(hm: &mut HostMem, images: &[GuestImage], r: &mut Report, args: &str) {
    suite_smp(hm, images, r, args, 1)
}

/// [`suite`] with a guest of `vcpus` vCPUs.
pub fn suite_smp(hm: &mut HostMem, images: &[GuestImage], r: &mut Report, args: &str, vcpus: usize) {
    let Some(img) = images.first() else {
        r.fail("a guest image in the bundle");
        return;
    };
    let Some(mut g) = load_smp(hm, img, img.mem, args, vcpus, r) else {
        return;
    };
    run_guest(&mut g, r);
    match g.result {
        Some((p, f)) => {
            println!("[host] vm {}: guest reports {} passed, {} failed", g.handle, p, f);
            r.passed += p as u32;
            r.failed += f as u32;
        }
        None => r.fail("guest reported its results"),
    }
    match hyp::vm_calls(g.handle) {
        Ok([s, u, m, n]) => println!(
            "[host] vm {}: the guest made {s} MEM_SHARE, {u} MEM_UNSHARE and {m} MMIO_GUARD calls; {n} granule(s) guarded",
            g.handle
        ),
        Err(e) => {
            println!("[host] vm {}: VM_CALLS failed: {e}", g.handle);
            r.fail("VM_CALLS");
        }
    }
    r.check(g.guest_aborts >= 1 || args != "test=all", "host saw the guest's abort exit");
    teardown(hm, g, r);
}

/// The default run: the story of one protected guest.
pub fn demo(hm: &mut HostMem, images: &[GuestImage], r: &mut Report) {
    let Some(img) = images.first() else {
        r.fail("a guest image in the bundle");
        return;
    };
    println!("[host] --- demo: a protected guest, its memory private by default ---");
    let Some(mut g) = load(hm, img, img.mem, "test=demo", r) else {
        return;
    };
    g.verbose = true;
    let probe = g.pa + 0x40_0000;
    let refused = expect_abort(|| {
        read64(probe);
    });
    println!(
        "[host] host reads guest-private PA {:#x}: {}",
        probe,
        if refused.is_some() { "data abort (as Linux would raise SIGBUS), no data" } else { "read succeeded!" }
    );
    r.check(refused.is_some(), "host access to guest-private memory aborts");
    run_guest(&mut g, r);
    if let Some((p, f)) = g.result {
        r.passed += p as u32;
        r.failed += f as u32;
    } else {
        r.fail("guest reported its results");
    }
    println!("[host] --- teardown ---");
    teardown(hm, g, r);
}

/// Two VMs: each runs, neither can reach the other's memory, and the host
/// cannot hand one's page to the other.
pub fn two_vms(hm: &mut HostMem, images: &[GuestImage], r: &mut Report) {
    let Some(img) = images.first() else {
        r.fail("a guest image in the bundle");
        return;
    };
    let Some(mut a) = load(hm, img, 32 << 20, "test=isolation", r) else {
        return;
    };
    let Some(mut b) = load(hm, img, 32 << 20, "test=isolation", r) else {
        return;
    };
    r.check(
        hyp::donate(b.handle, a.pa + 0x10_0000, 0x4400_0000, 4096) == -1,
        "a page of VM A cannot be donated to VM B (EPERM)",
    );
    r.check(hyp::donate(a.handle, b.pa, 0x4400_0000, 4096) == -1, "a page of VM B cannot be donated to VM A (EPERM)");
    for g in [&mut a, &mut b] {
        run_guest(g, r);
        if let Some((p, f)) = g.result {
            r.passed += p as u32;
            r.failed += f as u32;
        } else {
            r.fail("guest reported its results");
        }
    }
    teardown(hm, a, r);
    teardown(hm, b, r);
}
