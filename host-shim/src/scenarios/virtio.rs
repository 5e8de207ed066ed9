//! The `virtio` scenario: the guest test payload (`test=virtio`) drives
//! the VMM's virtio-console and virtio-blk with a driver of its own, its
//! rings and buffers in a restricted DMA pool it shares page by page, and
//! attacks them (private buffers, private rings, loops, bad registers).
//! The host checks what the guest cannot: the disk after the guest's
//! writes, that no pin outlived a request, and prints every counter.
//!
//! `virtio-race` (`test=virtio-race`, 2 vCPUs on 2 host CPUs): one vCPU
//! reads sectors into a page the other keeps unsharing and sharing again.

use el1_rt::println;
use hyp_abi::host::{page_state, CHECK_INVARIANTS, PAGE_STATE};
use hyp_abi::services::virtio_disk_byte;

use crate::hyp;
use crate::images::GuestImage;
use crate::mem::HostMem;
use crate::report::Report;
use crate::vmm::{Guest, LoadError, GUEST_RAM};
use vmm_devices::loader;
use vmm_devices::virtio::{Config, Disk, DmaPool};

/// 1 MiB of disk: 2048 sectors of the pattern.
const DISK: u64 = 1 << 20;
/// The pool: 16 pages, 48 MiB into guest RAM.
const POOL: DmaPool = DmaPool { ipa: GUEST_RAM + (48 << 20), size: 16 * 4096 };

/// `race`: the virtio-race guest (2 vCPUs) instead of the virtio one.
pub fn run(hm: &mut HostMem, images: &[GuestImage], r: &mut Report, race: bool) {
    let Some(img) = images.first() else {
        r.fail("a guest image in the bundle");
        return;
    };
    let (args, vcpus) = if race { ("test=virtio-race", 2) } else { ("test=virtio", 1) };
    if !race {
        // A pool outside guest RAM is refused before anything is created.
        let bad =
            Config { console: true, disk: None, dma_pool: Some(DmaPool { ipa: GUEST_RAM + img.mem, size: 4096 }) };
        let refused = Guest::load_with(hm, &img.name, img.elf, img.mem, args, 1, Some(bad));
        r.check(
            matches!(refused, Err(LoadError::Load(loader::LoadError::BadConfig(_)))),
            "virtio: a DMA pool outside guest RAM is refused",
        );
    }

    let Some(disk_pa) = hm.alloc(DISK, 4096) else {
        r.fail("host memory for the disk");
        return;
    };
    // SAFETY: [disk_pa, disk_pa + DISK) is host RAM just allocated, ours
    // alone (never donated) until freed below, after the guest is gone.
    let disk: &'static mut [u8] = unsafe { core::slice::from_raw_parts_mut(disk_pa as *mut u8, DISK as usize) };
    for (i, b) in disk.iter_mut().enumerate() {
        *b = virtio_disk_byte(i as u64 / 512, i as u64 % 512);
    }
    let cfg = Config { console: true, disk: Some(alloc::boxed::Box::new(Disk::Writable(disk))), dma_pool: Some(POOL) };
    let mut g = match Guest::load_with(hm, &img.name, img.elf, img.mem, args, vcpus, Some(cfg)) {
        Ok(g) => g,
        Err(e) => {
            println!("[host] cannot load guest '{}': {}", img.name, e);
            r.fail("guest loads");
            return;
        }
    };
    println!(
        "[host] vm {}: virtio-console at {:#x} (INTID 48), virtio-blk at {:#x} (INTID 49, {} sectors), DMA pool {:#x}+{:#x}",
        g.handle,
        vmm_devices::virtio::MMIO_BASE,
        vmm_devices::virtio::MMIO_BASE + vmm_devices::virtio::MMIO_SIZE,
        DISK / 512,
        POOL.ipa,
        POOL.size
    );
    super::harness::run_guest(&mut g, r);
    match g.result {
        Some((p, f)) => {
            println!("[host] vm {}: guest reports {} passed, {} failed", g.handle, p, f);
            r.passed += p as u32;
            r.failed += f as u32;
        }
        None => r.fail("guest reported its results"),
    }
    g.virtio_report();
    if race {
        // SAFETY: as above; the guest only ever reached it through the device.
        let disk = unsafe { core::slice::from_raw_parts(disk_pa as *const u8, DISK as usize) };
        let same = disk.iter().enumerate().all(|(i, &b)| b == virtio_disk_byte(i as u64 / 512, i as u64 % 512));
        r.check(same, "virtio-race: the disk is unchanged");
        super::harness::teardown(hm, g, r);
        hm.free(disk_pa, DISK);
        return;
    }
    match hyp::vm_calls(g.handle) {
        Ok([share, unshare, guard, guarded]) => {
            println!(
                "[host] vm {}: {} MEM_SHARE, {} MEM_UNSHARE, {} MMIO_GUARD calls; {} granules guarded",
                g.handle, share, unshare, guard, guarded
            );
            r.check(
                [share, unshare, guard, guarded] == [16, 16, 50, 50],
                "virtio: the hyp counted the pool's 16 shares and unshares and the 50 guards",
            );
        }
        Err(e) => {
            println!("[host] vm {}: VM_CALLS failed: {e}", g.handle);
            r.fail("VM_CALLS");
        }
    }
    // With hyp.check_invariants the checker ran after each of the devices'
    // hypercalls (pins on shared pages only, every view agreeing).
    let checks = hyp::call(CHECK_INVARIANTS, [0; 6]).map_or(0, |c| c[0]);
    r.check(checks > g.virtio_calls.get(), "virtio: the invariant checker ran after every hypercall and found nothing");
    // The pool's pages: back to private, no pin left.
    let pinned = (0..POOL.size / 4096).filter(|i| {
        let pa = g.pa + (POOL.ipa - GUEST_RAM) + i * 4096;
        hyp::call(PAGE_STATE, [pa, 0, 0, 0, 0, 0]).map_or(true, |s| s[0] != page_state::NONE || s[1] != 0)
    });
    r.check(pinned.count() == 0, "virtio: every pool page is private again and unpinned");
    // SAFETY: as above; the guest only ever reached it through the device.
    let disk = unsafe { core::slice::from_raw_parts(disk_pa as *const u8, DISK as usize) };
    let s5 = (0..512).all(|i| disk[5 * 512 + i] == (i as u8) ^ 0x3c);
    let others = (0..DISK as usize)
        .filter(|i| i / 512 != 5)
        .all(|i| disk[i] == virtio_disk_byte(i as u64 / 512, i as u64 % 512));
    r.check(s5 && others, "virtio: the disk holds the guest's write of sector 5 and nothing else changed");
    super::harness::teardown(hm, g, r);
    hm.free(disk_pa, DISK);
}
