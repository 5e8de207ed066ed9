//! What every scenario with guests does: load a guest (reporting the
//! failure), run it to its power-off (on one host CPU, or one host CPU
//! per vCPU when the machine has them), and tear it down checking that
//! its memory came back scrubbed.

use el1_rt::println;

use crate::images::GuestImage;
use crate::mem::HostMem;
use crate::report::{expect_abort, read64, write64, Report};
use crate::vmm::Guest;

static CPUS: spin::Mutex<alloc::vec::Vec<u64>> = spin::Mutex::new(alloc::vec::Vec::new());

/// Records the host's CPUs (MPIDRs from its DTB), this one first.
pub fn set_host_cpus(cpus: alloc::vec::Vec<u64>) {
    *CPUS.lock() = cpus;
}

/// The host's CPUs (MPIDRs), this one first.
pub fn host_cpus() -> alloc::vec::Vec<u64> {
    CPUS.lock().clone()
}

pub fn load(hm: &mut HostMem, img: &GuestImage, mem: u64, args: &str, r: &mut Report) -> Option<Guest> {
    load_smp(hm, img, mem, args, img.vcpus, r)
}

pub fn load_smp(
    hm: &mut HostMem,
    img: &GuestImage,
    mem: u64,
    args: &str,
    vcpus: usize,
    r: &mut Report,
) -> Option<Guest> {
    match Guest::load_smp(hm, &img.name, img.elf, mem, args, vcpus) {
        Ok(g) => {
            println!(
                "[host] vm {}: '{}' loaded, {} MiB donated at PA {:#x} (IPA {:#x}), entry {:#x}",
                g.handle,
                g.name,
                mem >> 20,
                g.pa,
                crate::vmm::GUEST_RAM,
                g.entry
            );
            Some(g)
        }
        Err(e) => {
            println!("[host] cannot load guest '{}': {}", img.name, e);
            r.fail("guest loads");
            None
        }
    }
}

/// Destroys `g` and checks that its memory came back scrubbed and usable.
pub fn teardown(hm: &mut HostMem, g: Guest, r: &mut Report) {
    let (pa, mem, h, gone, donated) = (g.pa, g.mem, g.handle, g.relinquished, g.donated);
    match g.destroy(hm) {
        Ok(bytes) => {
            println!("[host] vm {}: destroyed, {} KiB scrubbed and returned to the host", h, bytes / 1024);
            r.check(bytes + gone == donated, "teardown reclaims every page the guest still had");
            // The first page held the DTB, others the program: all zero now
            // (the first and last word of every 64-byte block, the zeroing's
            // granule: a scrub that stopped short anywhere shows), and the
            // host may use them again. On demand, only what the guest
            // touched was donated: the DTB's and the program's blocks.
            let all = [(0, mem)];
            let touched = [(0, 64), (0x8_0000, 0x8_0040)];
            let ranges: &[(u64, u64)] = if donated == mem { &all } else { &touched };
            let mut zero = expect_abort(|| {
                read64(pa);
            })
            .is_none();
            for &(from, to) in ranges {
                let mut off = from;
                while zero && off < to {
                    zero &= read64(pa + off) == 0 && read64(pa + off + 56) == 0;
                    off += 64;
                }
            }
            write64(pa, 0x1234);
            r.check(zero && read64(pa) == 0x1234, "reclaimed pages are zero and the host can use them");
        }
        Err(e) => {
            println!("[host] vm {h}: destroy failed: {e}");
            r.fail("teardown");
        }
    }
}

pub fn run_guest(g: &mut Guest, r: &mut Report) {
    let n = g.vstate.len();
    let cpus = host_cpus();
    let res = if n > 1 && cpus.len() >= n {
        println!("[host] vm {}: {} vCPUs, each on a host CPU of its own", g.handle, n);
        // The guest moves to the shared runner and back.
        let owned = core::mem::replace(g, Guest::placeholder());
        let (back, res) = crate::vmm::vcpus::run_parallel(owned, &cpus);
        *g = back;
        res
    } else {
        if n > 1 {
            println!("[host] vm {}: {} vCPUs time-sliced on {} host CPU", g.handle, n, 1);
        }
        g.run()
    };
    match res {
        Ok(()) => println!("[host] vm {}: powered off ({} MMIO exits)", g.handle, g.mmio_exits),
        Err(e) => {
            println!("[host] vm {}: {}", g.handle, e);
            r.fail("guest runs to SYSTEM_OFF");
        }
    }
}
