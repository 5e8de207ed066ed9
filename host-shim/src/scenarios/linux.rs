//! A Linux guest (`cargo xtask run --linux-guest`): Linux's own pKVM guest
//! driver against the hyp. The host loads the Image, initramfs and DTB,
//! runs the guest to its power-off, then checks from its side what the
//! guest did: the MEM_SHARE / MEM_UNSHARE / MMIO_GUARD calls the hyp
//! counted, which pages are shared now (only DMA-pool pages may be), and
//! that a page outside the pool is still private (a host read aborts).
//! Several Linux guests run at once, time-sliced on one host CPU.

use el1_rt::println;
use hyp_abi::host::{page_state, PAGE_STATE, VM_CALLS};

use super::harness::{run_guest, teardown};
use crate::hyp;
use crate::images::GuestImage;
use crate::mem::HostMem;
use crate::report::{expect_abort, read64, Report};
use crate::vmm::{Guest, GUEST_RAM};
use alloc::vec::Vec;

/// A Linux guest of the bundle: its image, initramfs, disk and command line.
pub struct LinuxImage<'a> {
    pub img: &'a GuestImage,
    pub initrd: &'static [u8],
    pub disk: &'static [u8],
    pub cmdline: &'static str,
}

/// Boots the Linux guests `imgs` (one, or several at once, time-sliced on
/// this CPU) and checks each after its power-off.
pub fn run(hm: &mut HostMem, imgs: &[LinuxImage], r: &mut Report) {
    let mut guests = Vec::new();
    for li in imgs {
        if let Some(g) = load(hm, li, r) {
            guests.push(g);
        }
    }
    let profiled = super::bench::linux_profile() && guests.len() == 1;
    if profiled {
        guests[0].prof = Some(alloc::boxed::Box::new(crate::vmm::profile::Profile::start(super::bench_linux::MARKS)));
    }
    if guests.len() == 1 {
        run_guest(&mut guests[0], r);
        if profiled {
            super::bench_linux::rows(&guests[0], r);
        }
    } else if !guests.is_empty() {
        println!("[host] {} Linux guests at once, time-sliced on 1 host CPU", guests.len());
        let results = crate::vmm::run_together(&mut guests);
        for (g, res) in guests.iter().zip(results) {
            match res {
                Ok(()) => println!("[host] vm {}: powered off ({} MMIO exits)", g.handle, g.mmio_exits),
                Err(e) => {
                    println!("[host] vm {}: {}", g.handle, e);
                    r.fail("guest runs to SYSTEM_OFF");
                }
            }
        }
    }
    for g in guests {
        r.check(g.done, "the Linux guest powered itself off (PSCI SYSTEM_OFF)");
        virtio_checks(&g, r);
        host_checks(&g, r);
        teardown(hm, g, r);
    }
}

fn load(hm: &mut HostMem, li: &LinuxImage, r: &mut Report) -> Option<Guest> {
    let img = li.img;
    let g = match Guest::load_linux(hm, &img.name, img.elf, li.initrd, li.disk, li.cmdline, img.mem, img.vcpus) {
        Ok(g) => g,
        Err(e) => {
            println!("[host] cannot load Linux guest '{}': {}", img.name, e);
            r.fail("Linux guest loads");
            return None;
        }
    };
    let l = g.linux?;
    println!(
        "[host] vm {}: Linux guest '{}' loaded, {} MiB donated at PA {:#x} (IPA {:#x}), {} vCPU(s)",
        g.handle,
        g.name,
        g.mem >> 20,
        g.pa,
        GUEST_RAM,
        img.vcpus
    );
    println!(
        "[host] vm {}: Image at IPA {:#x} ({} KiB with BSS), initramfs at IPA {:#x} ({} KiB), DMA pool at IPA {:#x} ({} KiB)",
        g.handle,
        l.kernel,
        l.kernel_size / 1024,
        l.initrd.0,
        (l.initrd.1 - l.initrd.0) / 1024,
        l.pool.0,
        l.pool.1 / 1024
    );
    println!("[host] vm {}: disk image {} KiB", g.handle, li.disk.len() / 1024);
    Some(g)
}

/// The virtio devices' counters: every request the Linux guest made was
/// served from pages it had shared (none refused, none malformed).
fn virtio_checks(g: &Guest, r: &mut Report) {
    let Some(devs) = &g.platform.virtio else { return };
    g.virtio_report();
    let (mut requests, mut errors) = (0, 0);
    for k in 0.. {
        let Some((_, s, _)) = devs.slot(k) else { break };
        requests += s.requests;
        errors += s.mem_errors + s.bad_requests + s.ring_errors + s.bad_accesses;
    }
    r.check(
        requests > 0 && errors == 0,
        "the virtio devices served the Linux guest's requests from shared pages only, with no error",
    );
}

/// What the host sees of the guest after its power-off (the VM still
/// exists: its pages are as the guest left them). Behaviour, not one
/// kernel's counts: every page of the restricted DMA pool shared, no page
/// of the DTB or kernel shared, the pages shared now equal to the calls,
/// at most the granules its devices span guarded, a private page aborts.
fn host_checks(g: &Guest, r: &mut Report) {
    let Some(l) = g.linux else { return };
    let calls = match hyp::call(VM_CALLS, [g.handle, 0, 0, 0, 0, 0]) {
        Ok(c) => c,
        Err(e) => {
            println!("[host] vm {}: VM_CALLS: {}", g.handle, e);
            r.fail("VM_CALLS answers");
            return;
        }
    };
    println!(
        "[host] vm {}: the guest's successful calls: MEM_SHARE {}, MEM_UNSHARE {}, MMIO_GUARD {} ({} granules guarded now)",
        g.handle, calls[0], calls[1], calls[2], calls[3]
    );
    let device_granules = g.platform.device_granules();
    println!(
        "[host] vm {}: its devices (GIC, PL011, test device, virtio) span {} granules: {} guarded",
        g.handle, device_granules, calls[3]
    );
    r.check(
        calls[3] >= 1 && calls[3] <= device_granules,
        "the Linux guest guarded MMIO granules, no more than its devices span",
    );
    // Every page of the guest, as the host's stage-2 records it.
    let (mut shared, mut in_pool, mut in_kernel, mut first_shared) = (0u64, 0u64, 0u64, None);
    let pool_pa = g.pa + (l.pool.0 - GUEST_RAM);
    let kernel_pa = g.pa + (l.kernel - GUEST_RAM);
    for pa in (g.pa..g.pa + g.mem).step_by(4096) {
        let st = hyp::call(PAGE_STATE, [pa, 0, 0, 0, 0, 0]).map(|s| s[0]);
        if st == Ok(page_state::SHARED_BORROWED) {
            shared += 1;
            first_shared.get_or_insert(pa);
            in_pool += (pool_pa..pool_pa + l.pool.1).contains(&pa) as u64;
            in_kernel += (pa < kernel_pa + l.kernel_size) as u64;
        }
    }
    // Linux also shares its atomic DMA pool (kernel/dma/pool.c) and, in
    // newer kernels, its default bounce buffer: how many depends on the
    // kernel, so only the restricted pool's count is checked.
    println!(
        "[host] vm {}: pages shared with the host now: {} ({} in the restricted DMA pool of {} pages, {} elsewhere)",
        g.handle,
        shared,
        in_pool,
        l.pool.1 / 4096,
        shared - in_pool
    );
    r.check(in_kernel == 0, "no page of the Linux guest's DTB or kernel image is shared");
    if g.platform.virtio.is_some() {
        r.check(in_pool == l.pool.1 / 4096, "the Linux guest shared its whole restricted DMA pool with MEM_SHARE");
    }
    r.check(
        shared == calls[0].saturating_sub(calls[1]),
        "pages shared now = MEM_SHARE calls - MEM_UNSHARE calls (each call one page)",
    );
    let aborted = expect_abort(|| {
        read64(kernel_pa);
    })
    .is_some();
    println!(
        "[host] vm {}: host read of the guest kernel's first page (IPA {:#x}, PA {:#x}): {}",
        g.handle,
        l.kernel,
        kernel_pa,
        if aborted { "data abort, no data" } else { "read succeeded!" }
    );
    r.check(aborted, "a Linux guest page outside the DMA pool is private: a host read aborts");
    if let Some(pa) = first_shared {
        let ok = expect_abort(|| {
            read64(pa);
        })
        .is_none();
        r.check(ok, "a page the Linux guest shared is readable by the host");
    }
    crate::tracing::dump_s2(Some(g.handle));
}
