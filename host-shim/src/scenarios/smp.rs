//! `shim.test=smp` (with `--smp N`): every CPU runs its own VM's fuzzing
//! vCPU and pins/unpins that VM's shared pages, concurrently, for a bounded
//! number of rounds, with the hyp's invariant checker after every hypercall.
//! Then the same per-CPU work is replayed one CPU after another; each VM's
//! end state (a digest of its stage-2) must be the same as in the
//! concurrent run. No deadlock (the runner's timeout), no invariant broken.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use el1_rt::rand::Rng;
use el1_rt::{println, smp};
use hyp_abi::host as abi;
use spin::Mutex;

use crate::hyp::{self, call};
use crate::images::GuestImage;
use crate::mem::HostMem;
use crate::report::Report;
use crate::vmm::Guest;

const ROUNDS: u64 = 40;
const MEM: u64 = 8 << 20;

static SLOTS: Mutex<Vec<Option<Guest>>> = Mutex::new(Vec::new());
static DIGESTS: [AtomicU64; smp::MAX_CPUS] = [const { AtomicU64::new(0) }; smp::MAX_CPUS];
static OPS: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicUsize = AtomicUsize::new(0);
static SEED: AtomicU64 = AtomicU64::new(1);

/// The work of CPU `i` on its guest; returns the VM's digest.
fn work(i: usize, g: &mut Guest) -> Result<u64, alloc::string::String> {
    let mut rng = Rng::new(SEED.load(Ordering::Relaxed) ^ (i as u64 * 0x1000_0001));
    let mut pinned: Vec<u64> = Vec::new();
    let mut ops = 0;
    for _ in 0..ROUNDS {
        g.run()?;
        for _ in 0..4 {
            let pa = g.pa + MEM / 2 + rng.below(MEM / 2 / 4096) * 4096;
            if rng.chance(1, 2) || pinned.is_empty() {
                if hyp::pin(pa, rng.chance(1, 4)) == 0 {
                    pinned.push(pa);
                }
            } else {
                let k = rng.below(pinned.len() as u64) as usize;
                hyp::unpin(pinned.swap_remove(k));
            }
            ops += 1;
        }
    }
    // Pins the guest's pending unshares already dropped fail here: fine.
    for pa in pinned {
        hyp::unpin(pa);
    }
    OPS.fetch_add(ops + g.guest_calls, Ordering::Relaxed);
    call(abi::VM_DIGEST, [g.handle, 0, 0, 0, 0, 0]).map(|r| r[0]).map_err(|e| alloc::format!("digest: {e}"))
}

fn worker(i: usize) -> ! {
    let g = SLOTS.lock()[i].take();
    if let Some(mut g) = g {
        match work(i, &mut g) {
            Ok(d) => DIGESTS[i].store(d, Ordering::SeqCst),
            Err(e) => println!("[host] smp: cpu {}: {}", i, e),
        }
        SLOTS.lock()[i] = Some(g);
    }
    DONE.fetch_add(1, Ordering::SeqCst);
    smp::cpu_off()
}

fn load(hm: &mut HostMem, img: &GuestImage, i: usize, r: &mut Report) -> Option<Guest> {
    let seed = SEED.load(Ordering::Relaxed).wrapping_add(i as u64 + 1);
    match Guest::load(hm, &img.name, img.elf, MEM, &alloc::format!("test=fuzz seed={seed}")) {
        Ok(g) => Some(g),
        Err(e) => {
            println!("[host] smp: guest {}: {}", i, e);
            r.fail("smp guests load");
            None
        }
    }
}

pub fn run(hm: &mut HostMem, images: &[GuestImage], r: &mut Report, info: &el1_rt::BootInfo) {
    let cpus: Vec<u64> = info.fdt.cpus().map(|c| c.ids().first() as u64).collect();
    let n = cpus.len().min(smp::MAX_CPUS);
    if n < 2 {
        r.fail("smp scenario needs --smp 2 or more");
        return;
    }
    let Some(img) = images.first() else {
        r.fail("smp guest image");
        return;
    };
    let seed = info
        .fdt
        .chosen()
        .bootargs()
        .unwrap_or("")
        .split_ascii_whitespace()
        .find_map(|t| t.strip_prefix("shim.seed="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    SEED.store(seed, Ordering::Relaxed);
    // Concurrent phase.
    let mut handles = Vec::new();
    {
        let mut slots = SLOTS.lock();
        for i in 0..n {
            let g = load(hm, img, i, r);
            handles.push(g.as_ref().map(|g| g.handle));
            slots.push(g);
        }
    }
    for (i, &mpidr) in cpus.iter().enumerate().take(n).skip(1) {
        let e = smp::start(mpidr, i, worker);
        if e != 0 {
            println!("[host] smp: CPU_ON {:#x}: {}", mpidr, e);
            r.fail("secondary CPUs start");
            return;
        }
    }
    let me = SLOTS.lock()[0].take();
    if let Some(mut g) = me {
        match work(0, &mut g) {
            Ok(d) => DIGESTS[0].store(d, Ordering::SeqCst),
            Err(e) => println!("[host] smp: cpu 0: {}", e),
        }
        SLOTS.lock()[0] = Some(g);
    }
    DONE.fetch_add(1, Ordering::SeqCst);
    while DONE.load(Ordering::SeqCst) < n {
        core::hint::spin_loop();
    }
    let concurrent: Vec<u64> = (0..n).map(|i| DIGESTS[i].load(Ordering::SeqCst)).collect();
    let ops = OPS.load(Ordering::Relaxed);
    let checks = call(abi::CHECK_INVARIANTS, [0; 6]).map(|r| r[0]).unwrap_or(0);
    println!(
        "[host] smp: {} CPUs ran {} rounds each: {} operations, {} invariant checks so far",
        n, ROUNDS, ops, checks
    );
    let guests: Vec<Guest> = SLOTS.lock().drain(..).flatten().collect();
    for g in guests {
        let _ = g.destroy(hm);
    }
    // Sequential replay of the same per-CPU work.
    let mut same = true;
    for (i, want) in concurrent.iter().enumerate() {
        let Some(mut g) = load(hm, img, i, r) else { return };
        let got = work(i, &mut g).unwrap_or(0);
        same &= got == *want && *want != 0;
        println!("[host] smp: vm of cpu {}: concurrent digest {:#018x}, sequential {:#018x}", i, want, got);
        let _ = g.destroy(hm);
    }
    r.check(handles.iter().all(Option::is_some), "one VM per CPU");
    r.check(same, "each VM ends as in a sequential replay of the same operations");
}
