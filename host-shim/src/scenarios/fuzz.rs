//! `shim.test=fuzz shim.seed=S shim.calls=N`: a hostile host. Seeded random
//! host calls with random and hostile arguments (any function ID, aligned
//! and unaligned addresses inside and outside memory, huge and wrapping
//! sizes, pins racing unshares) interleaved with runs of two fuzzing guests.
//! The hyp runs its invariant checker (`hyp.check_invariants[=K]`: the full
//! check after every K-th hypercall, and after every refused one the proof
//! that it changed nothing); the hyp must never panic or hang, and the host
//! must keep working. VMs the random calls create are destroyed again, and
//! the two fuzzing guests are replaced by fresh ones from time to time, so a
//! long run does not fill the VM table. With `edu` devices, pages drawn for
//! DMA are made a batch at a time (`fuzz_dma`). The seed is printed; the
//! same seed replays the run.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use el1_rt::println;
use el1_rt::rand::Rng;
use hyp_abi::host as abi;

use crate::hyp::{self, call};
use crate::images::GuestImage;
use crate::mem::HostMem;
use crate::report::{expect_abort, read64, write64, Report};
use crate::scenarios::devices;
use crate::scenarios::fuzz_dma::DmaFuzz;
use crate::vmm::{Guest, GUEST_RAM};

const SZ_2M: u64 = 2 << 20;
const ARENA: u64 = 16 << 20;

fn arg(bootargs: &str, key: &str) -> Option<u64> {
    bootargs.split_ascii_whitespace().find_map(|t| t.strip_prefix(key)).and_then(|v| v.parse().ok())
}

/// Registers of page 0 of a redistributor's RD_base the hyp emulates: the
/// fuzzer writes anything to them (never GICR_WAKER: sleeping the
/// redistributor is the host's own business).
const GICR_POKE: [(u64, bool); 10] = [
    (0x00, false), // CTLR
    (0x08, true),  // TYPER
    (0x10, false), // STATUSR
    (0x40, true),  // SETLPIR
    (0x48, true),  // CLRLPIR
    (0x70, true),  // PROPBASER
    (0x78, true),  // PENDBASER
    (0xa0, true),  // INVLPIR
    (0xb0, true),  // INVALLR
    (0xc0, false), // SYNCR
];

/// A random write to an emulated redistributor register or the hidden ITS;
/// afterwards LPIs must still be off and the table registers empty. Counts
/// as a successful call (0) in the results.
fn poke_gic(rng: &mut Rng, rd: u64, r: &mut Report) -> i64 {
    if rng.chance(1, 4) {
        let off = rng.below(0x1_0000 / 8) * 8;
        let took = expect_abort(|| write64(devices::ITS + off, rng.next_u64()));
        if took.is_none() {
            r.fail("a host write to the ITS aborts");
        }
        return 0;
    }
    let (off, wide) = rng.pick(&GICR_POKE);
    let v = rng.next_u64();
    // Emulated or aborted (a width the register does not take): either way
    // nothing may change below.
    let _ = expect_abort(|| if wide { write64(rd + off, v) } else { devices::write32(rd + off, v as u32) });
    let ctlr = devices::read32(rd);
    let (prop, pend) = (read64(rd + 0x70), read64(rd + 0x78));
    if ctlr & 1 != 0 || prop != 0 || pend != 0 {
        println!(
            "[host] fuzz: GICR write {:#x} = {:#x}: CTLR {:#x} PROPBASER {:#x} PENDBASER {:#x}",
            off, v, ctlr, prop, pend
        );
        r.fail("LPIs stay off and the LPI table registers empty");
    }
    0
}

/// `ram`: the host's RAM regions (start, end), the only place DMA may land.
pub fn run(
    hm: &mut HostMem,
    images: &[GuestImage],
    r: &mut Report,
    bootargs: &str,
    rd: Option<u64>,
    ram: &[(u64, u64)],
) {
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
    let load = |hm: &mut HostMem, n: u64| {
        let args = alloc::format!("test=fuzz seed={}", seed.wrapping_add(n));
        Guest::load(hm, &img.name, img.elf, 8 << 20, &args)
    };
    let mut guests: Vec<Guest> = Vec::new();
    let mut generation = 0u64;
    for _ in 0..2 {
        generation += 1;
        match load(hm, generation) {
            Ok(g) => guests.push(g),
            Err(e) => {
                println!("[host] fuzz guest: {}", e);
                r.fail("fuzz guests load");
                return;
            }
        }
    }
    // VMs the random calls created: destroyed again.
    let mut created: Vec<u64> = Vec::new();
    let (mut destroyed, mut recycled, mut late_vcpus, mut retired_calls) = (0u64, 0u64, 0u64, 0u64);
    let fids: Vec<u32> =
        (0..0x30).map(|n| 0xc600_0100 + n).filter(|&f| f != abi::SHUTDOWN && f != abi::DUMP_S2).collect();
    let mut results: BTreeMap<i64, u64> = BTreeMap::new();
    let (mut host_calls, mut runs) = (0u64, 0u64);
    let mut pinned: Vec<u64> = Vec::new();
    // With `edu` devices, DMA: queued, made a batch at a time.
    let mut dma = DmaFuzz::new(hm, (arena, arena + ARENA), ram);
    let scratch = |guests: &[Guest]| -> Vec<(u64, u64)> {
        let own = guests.iter().map(|g| (g.pa, g.pa + g.mem));
        core::iter::once((arena, arena + ARENA)).chain(own).collect()
    };
    for i in 0..calls {
        // Now and then a fuzzing guest is torn down and a fresh one takes
        // its place (teardown under fire, and no VM lives forever).
        if i % 2000 == 1999 {
            // Queued DMAs go first: pages change hands below.
            if let Some(d) = dma.as_mut() {
                d.flush(&scratch(&guests), r);
            }
            let k = rng.below(guests.len() as u64) as usize;
            let old = guests.swap_remove(k);
            retired_calls += old.guest_calls;
            for p in pinned.drain(..) {
                while hyp::unpin(p) == 0 {}
            }
            // Random PIN calls may hold pins on its shared pages too.
            for pa in (old.pa..old.pa + old.mem).step_by(4096) {
                let pins = call(abi::PAGE_STATE, [pa, 0, 0, 0, 0, 0]).map(|r| r[1]).unwrap_or(0);
                for _ in 0..pins {
                    hyp::unpin(pa);
                }
            }
            let (old_pa, old_mem) = (old.pa, old.mem);
            if let Err(e) = old.destroy(hm) {
                println!("[host] fuzz: recycle: destroy: {}", e);
                r.fail("fuzz guests recycle");
                break;
            }
            // Pages the guest relinquished became the host's, and random
            // calls may have shared them with the hyp or donated them to it
            // since: the host takes them back before reusing the range.
            let mut stuck = 0;
            for pa in (old_pa..old_pa + old_mem).step_by(4096) {
                let st = call(abi::PAGE_STATE, [pa, 0, 0, 0, 0, 0]);
                match st {
                    Ok([abi::page_state::SHARED_OWNED, ..]) => {
                        for _ in 0..16 {
                            if call(abi::UNSHARE_HYP, [pa, 4096, 0, 0, 0, 0]).is_err() {
                                break;
                            }
                        }
                    }
                    Ok([abi::page_state::NONE, _, _, abi::page_state::HELD_BY_HYP_DONATED, ..]) => {
                        let _ = call(abi::RECLAIM_HYP, [pa, 4096, 0, 0, 0, 0]);
                    }
                    _ => {}
                }
                let st = call(abi::PAGE_STATE, [pa, 0, 0, 0, 0, 0]);
                if !matches!(st, Ok([abi::page_state::OWNED, 0, ..]) | Ok([abi::page_state::NONE, 0, _, 0, ..])) {
                    println!("[host] fuzz: recycle: page {pa:#x} of a destroyed guest is not the host's: {st:?}");
                    stuck += 1;
                }
            }
            if stuck > 0 {
                r.fail("a destroyed guest's memory comes back to the host");
                break;
            }
            match load(hm, generation) {
                Ok(g) => guests.push(g),
                Err(e) => {
                    println!("[host] fuzz: recycle: load: {}", e);
                    r.fail("fuzz guests recycle");
                    break;
                }
            }
            recycled += 1;
        }
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
        let res = match rng.below(14) {
            // The GIC: registers that would give it memory addresses.
            12 if rd.is_some() => poke_gic(&mut rng, rd.unwrap_or(0), r),
            // A device's DMA: it lands exactly where the host may DMA.
            // Queued and made with the next ones, one per device (the
            // target is drawn here, so a seed replays the same calls);
            // counts as a successful call (0) in the results, its outcome
            // in the DMA line.
            13 if dma.is_some() => {
                let pa = addr(&mut rng) & !0xfff;
                if let Some(d) = dma.as_mut() {
                    d.draw(pa, &scratch(&guests), r);
                }
                0
            }
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
                    a[0] = if created.is_empty() { 0xdead } else { rng.pick(&created) };
                }
                if fid == abi::VCPU_RUN {
                    a[0] = 0xdead;
                }
                let res = call(fid, a);
                match (fid, res) {
                    (abi::VM_CREATE, Ok(v)) => created.push(v[0]),
                    (abi::VM_DESTROY, Ok(v)) => {
                        // Its table pages are the shim's pool's again.
                        let _ = crate::topup::destroyed(a[0], v[1]);
                        created.retain(|&h| h != a[0]);
                        destroyed += 1;
                    }
                    // A VM that has run has a closed vCPU set.
                    (abi::VCPU_CREATE, Ok(_)) if guests.iter().any(|g| g.handle == a[0] && g.has_run()) => {
                        late_vcpus += 1;
                    }
                    _ => {}
                }
                // Keep the VM table from filling up.
                if created.len() > 8 {
                    let h = created.remove(0);
                    if hyp::vm_destroy(h).is_ok() {
                        destroyed += 1;
                    }
                }
                hyp::errno(res)
            }
        };
        host_calls += 1;
        *results.entry(res).or_default() += 1;
        if i % 500 == 499 {
            println!("[host] fuzz: {} calls", i + 1);
        }
    }
    for h in created.drain(..) {
        match hyp::vm_destroy(h) {
            Ok(_) => destroyed += 1,
            Err(e) => {
                println!("[host] fuzz: destroy created vm {}: {}", h, e);
                r.fail("fuzz destroys the VMs it created");
            }
        }
    }
    r.check(late_vcpus == 0, "no vCPU could be added to a VM that has run");
    // Still alive and consistent: a final check and a null call.
    let (checks, refusals) = call(abi::CHECK_INVARIANTS, [0; 6]).map(|r| (r[0], r[2])).unwrap_or((0, 0));
    r.check(hyp::errno(call(abi::NOP, [0; 6])) == 0, "the hyp still answers after the fuzz run");
    let guest_calls: u64 = retired_calls + guests.iter().map(|g| g.guest_calls).sum::<u64>();
    println!(
        "[host] fuzz: seed {}: {} host calls, {} guest runs, {} guest calls, {} invariant checks, {} refused calls proven to change nothing, {} VMs created and destroyed, {} guests recycled, results {:?}",
        seed, host_calls, runs, guest_calls, checks, refusals, destroyed, recycled, results
    );
    r.check(checks > 0 && refusals > 0, "the invariant checker ran during the fuzz run");
    // Each guest run ends at the guest's yield after its 20 calls: fewer
    // means the fuzzing guests stopped (a PSCI CPU_OFF once ended them).
    r.check(guest_calls >= runs * 20, "every guest run made its 20 random calls");
    if let Some(d) = dma.as_mut() {
        d.flush(&scratch(&guests), r);
        println!(
            "[host] fuzz: {} DMAs by {} edu devices in {} batches ({} staged data first; {} s): {} landed in the fuzzer's own pages (data read back), {} landed writing back a page's own data, {} read the shim's own pages, {} blocked with SMMU events naming the device and the page",
            d.made, d.devices(), d.batches, d.staged, d.ms / 1000, d.fresh, d.write_back, d.reads, d.blocked
        );
        r.check(d.fresh > 0 && d.blocked > 0, "the fuzz run mixed in DMA that landed and DMA that was blocked");
    }
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
    if let Some(d) = dma {
        d.free(hm);
    }
    hm.free(arena, ARENA);
}
