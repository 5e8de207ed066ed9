//! `shim.test=fuzz shim.seed=S shim.calls=N`: a hostile host. Seeded random
//! host calls with random and hostile arguments (any function ID, aligned
//! and unaligned addresses inside and outside memory, huge and wrapping
//! sizes, pins racing unshares) interleaved with runs of two fuzzing guests.
//! The hyp runs its invariant checker after every hypercall
//! (`hyp.check_invariants`); the hyp must never panic or hang, and the host
//! must keep working. The seed is printed; the same seed replays the run.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use el1_rt::println;
use el1_rt::rand::Rng;
use hyp_abi::host as abi;

use crate::guests::GuestImage;
use crate::hyp::{self, call};
use crate::mem::HostMem;
use crate::report::Report;
use crate::vmm::{Guest, GUEST_RAM};

const SZ_2M: u64 = 2 << 20;
const ARENA: u64 = 16 << 20;

fn arg(bootargs: &str, key: &str) -> Option<u64> {
    bootargs.split_ascii_whitespace().find_map(|t| t.strip_prefix(key)).and_then(|v| v.parse().ok())
}

pub fn run(hm: &mut HostMem, images: &[GuestImage], r: &mut Report, bootargs: &str) {
    let seed = arg(bootargs, "shim.seed=").unwrap_or(1);
    let calls = arg(bootargs, "shim.calls=").unwrap_or(2000);
    println!(
        "[host] fuzz: seed {} calls {} (replay: cargo xtask test --fuzz --seed {} --calls {})",
        seed, calls, seed, calls
    );
    let mut rng = Rng::new(seed);
    let Some(img) = images.first() else {
        r.fail("fuzz guest image");
        return;
    };
    // The arena the fuzzer may give away: never the shim's own memory.
    let arena = hm.alloc(ARENA, SZ_2M).expect("fuzz arena");
    let mut guests: Vec<Guest> = Vec::new();
    for i in 0..2 {
        let args = alloc::format!("test=fuzz seed={}", seed.wrapping_add(i + 1));
        match Guest::load(hm, &img.name, img.elf, 8 << 20, &args) {
            Ok(g) => guests.push(g),
            Err(e) => {
                println!("[host] fuzz guest: {}", e);
                r.fail("fuzz guests load");
                return;
            }
        }
    }
    let fids: Vec<u32> =
        (0..0x30).map(|n| 0xc600_0100 + n).filter(|&f| f != abi::SHUTDOWN && f != abi::DUMP_S2).collect();
    let mut results: BTreeMap<i64, u64> = BTreeMap::new();
    let (mut host_calls, mut runs) = (0u64, 0u64);
    let mut pinned: Vec<u64> = Vec::new();
    for i in 0..calls {
        let g = rng.below(guests.len() as u64) as usize;
        let gpa = guests[g].pa;
        let handle = guests[g].handle;
        let addr = |rng: &mut Rng| -> u64 {
            let base = match rng.below(10) {
                0..=3 => arena + rng.below(ARENA / 4096) * 4096,
                4..=5 => gpa + rng.below(8 << 20 >> 12) * 4096,
                6 => 0x4000_0000 + rng.below(1 << 13) * 4096,
                7 => 0x0900_0000,
                8 => rng.next_u64(),
                _ => rng.next_u64() & 0xff_ffff_f000,
            };
            if rng.chance(1, 8) {
                base | rng.below(4096)
            } else {
                base
            }
        };
        let size = |rng: &mut Rng| -> u64 {
            let wild = rng.next_u64();
            rng.pick(&[0u64, 4096, 8192, 3 * 4096, SZ_2M, 1 << 30, 100, !0xfff_u64, wild, 1 << 40])
        };
        let res = match rng.below(12) {
            // Run a guest: it makes its own random calls, then yields.
            0 | 1 => {
                runs += 1;
                match guests[g].run() {
                    Ok(()) => 0,
                    Err(e) => {
                        println!("[host] fuzz: vm {} stopped: {}", handle, e);
                        r.fail("fuzz guest keeps running");
                        break;
                    }
                }
            }
            // Pins on whatever the guests shared (pins racing unshares).
            2 | 3 => {
                let pa = if pinned.is_empty() || rng.chance(2, 3) { addr(&mut rng) } else { rng.pick(&pinned) };
                if rng.chance(1, 2) {
                    let e = hyp::pin(pa, rng.chance(1, 4));
                    if e == 0 {
                        pinned.push(pa);
                    }
                    e
                } else {
                    let e = hyp::unpin(pa);
                    if e == 0 {
                        if let Some(k) = pinned.iter().position(|&p| p == pa) {
                            pinned.swap_remove(k);
                        }
                    }
                    e
                }
            }
            // Donations of arena pages to the guests, at random IPAs.
            4 => hyp::donate(handle, addr(&mut rng), GUEST_RAM + rng.below(64 << 20 >> 12) * 4096, size(&mut rng)),
            // Any host call with random registers.
            _ => {
                let fid = if rng.chance(1, 10) { rng.next_u64() as u32 } else { rng.pick(&fids) };
                let mut a = [0u64; 6];
                for x in a.iter_mut() {
                    *x = match rng.below(4) {
                        0 => addr(&mut rng),
                        1 => size(&mut rng),
                        2 => handle,
                        _ => rng.below(4),
                    };
                }
                // Destroying a fuzz VM or running a vCPU by hand: keep the
                // guests alive (destroy/run are exercised above and in the
                // hostile scenario); everything else goes through as drawn.
                if fid == abi::VM_DESTROY && guests.iter().any(|g| g.handle == a[0]) {
                    a[0] = 0xdead;
                }
                if fid == abi::VCPU_RUN {
                    a[0] = 0xdead;
                }
                hyp::errno(call(fid, a))
            }
        };
        host_calls += 1;
        *results.entry(res).or_default() += 1;
        if i % 500 == 499 {
            println!("[host] fuzz: {} calls", i + 1);
        }
    }
    // Still alive and consistent: a final check and a null call.
    let checks = call(abi::CHECK_INVARIANTS, [0; 6]).map(|r| r[0]).unwrap_or(0);
    r.check(hyp::errno(call(abi::NOP, [0; 6])) == 0, "the hyp still answers after the fuzz run");
    let guest_calls: u64 = guests.iter().map(|g| g.guest_calls).sum();
    println!(
        "[host] fuzz: seed {}: {} host calls, {} guest runs, {} guest calls, {} invariant checks, results {:?}",
        seed, host_calls, runs, guest_calls, checks, results
    );
    r.check(checks > host_calls, "the invariant checker ran after every hypercall");
    for p in pinned {
        while hyp::unpin(p) == 0 {}
    }
    for g in guests {
        let h = g.handle;
        match g.destroy(hm) {
            Ok(_) => {}
            Err(e) => {
                println!("[host] fuzz: destroy vm {}: {}", h, e);
                r.fail("fuzz guests tear down");
            }
        }
    }
    hm.free(arena, ARENA);
}
