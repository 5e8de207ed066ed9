//! `shim.test=demand`: guest memory on demand (docs/abi.md,
//! `MEM_ON_DEMAND` and exit `MEM_FAULT`). Bad declarations are refused
//! with their errno; a 64 MiB guest starts with none of its RAM donated;
//! the host answers its first memory fault wrongly (not at all, elsewhere,
//! with a page the guest already holds) and gets the same exit each time;
//! then the VMM answers the faults and the guest checks what it sees
//! (`test=demand`); its memory comes back scrubbed.

use el1_rt::println;
use hyp_abi::errno::{EINVAL, ENOENT, EPERM};
use hyp_abi::host::{self as abi, exit};

use super::harness::{run_guest, teardown};
use crate::hyp;
use crate::images::GuestImage;
use crate::mem::HostMem;
use crate::report::{read64, Report};
use crate::vmm::{Donation, Guest, GUEST_RAM};

const SZ_2M: u64 = 2 << 20;
const MEM: u64 = 64 << 20;
/// The block of which the host donates one page before the guest touches
/// it: the guest's fault there gets a page, not the block.
const PAGE_BLOCK: u64 = 7;

pub fn run(hm: &mut HostMem, images: &[GuestImage], r: &mut Report) {
    let Some(img) = images.first() else {
        r.fail("a guest image in the bundle");
        return;
    };
    let gone = declarations(r);
    let mut g = match Guest::load_donating(hm, &img.name, img.elf, MEM, "test=demand", 1, None, Donation::OnDemand) {
        Ok(g) => g,
        Err(e) => {
            println!("[host] cannot load guest '{}': {}", img.name, e);
            r.fail("guest loads on demand");
            return;
        }
    };
    println!(
        "[host] vm {}: '{}' loaded, {} MiB on demand at PA {:#x} (IPA {:#x}), nothing donated, entry {:#x}",
        g.handle,
        g.name,
        MEM >> 20,
        g.pa,
        GUEST_RAM,
        g.entry
    );
    if !wrong_answers(&mut g, r) {
        let _ = g.destroy(hm);
        return;
    }
    r.check(hyp::mem_on_demand(g.handle, GUEST_RAM, MEM) == -EPERM, "MEM_ON_DEMAND after the first run is EPERM");
    run_guest(&mut g, r);
    match g.result {
        Some((p, f)) => {
            r.passed += p as u32;
            r.failed += f as u32;
        }
        None => r.fail("guest reported its results"),
    }
    println!(
        "[host] vm {}: {} memory faults answered, {} KiB donated on demand, {} guest abort(s)",
        g.handle,
        g.mem_faults,
        g.donated / 1024,
        g.guest_aborts
    );
    let pa = g.pa;
    teardown(hm, g, r);
    // The pages the guest wrote came back scrubbed too.
    let spots = [3 * SZ_2M + 5 * 4096, MEM / 2 + 8, MEM - 8, 6 * SZ_2M - 8, 6 * SZ_2M, PAGE_BLOCK * SZ_2M + 9 * 4096];
    r.check(spots.iter().all(|&o| read64(pa + o) == 0), "the pages the guest wrote are zero after its teardown");
    if let Some(h) = gone {
        slot_reused(h, r);
    }
}

/// MEM_ON_DEMAND's refusals, each with its errno; the handle of the VM
/// that had a range and was destroyed.
fn declarations(r: &mut Report) -> Option<u64> {
    let Ok(h) = hyp::vm_create() else {
        r.fail("vm_create");
        return None;
    };
    let cases: [(&str, u64, u64, i64); 7] = [
        ("an IPA not page-aligned", GUEST_RAM + 1, 4096, EINVAL),
        ("a size not whole pages", GUEST_RAM, 4095, EINVAL),
        ("size 0", GUEST_RAM, 0, EINVAL),
        ("a range reaching into the MMIO window", GUEST_RAM - 4096, 8192, EINVAL),
        ("a range past the 40-bit IPA space", GUEST_RAM, 1 << 40, EINVAL),
        ("a range whose end overflows", !0xfff, 4096, EINVAL),
        ("a good range", GUEST_RAM, 2 * SZ_2M, 0),
    ];
    for (what, ipa, size, e) in cases {
        let got = hyp::mem_on_demand(h, ipa, size);
        r.check(got == -e, &alloc::format!("MEM_ON_DEMAND of {what}: {}", if e == 0 { "accepted" } else { "EINVAL" }));
    }
    r.check(hyp::mem_on_demand(h, GUEST_RAM, MEM) == 0, "MEM_ON_DEMAND again before the first run replaces the range");
    r.check(
        hyp::call(abi::MEM_ON_DEMAND, [0x7f, GUEST_RAM, MEM, 0, 0, 0]) == Err(-ENOENT),
        "MEM_ON_DEMAND of no VM is ENOENT",
    );
    let _ = hyp::vm_destroy(h);
    r.check(hyp::mem_on_demand(h, GUEST_RAM, MEM) == -ENOENT, "MEM_ON_DEMAND of a destroyed VM is ENOENT");
    Some(h)
}

/// The next VM in the slot of `gone` (destroyed with a range declared)
/// has no range: its fault on an IPA with no memory is a guest abort.
/// Free slots are reused oldest first: VMs are created and destroyed
/// until one gets that slot.
fn slot_reused(gone: u64, r: &mut Report) {
    let mut found = None;
    for _ in 0..256 {
        let Ok(h) = hyp::vm_create() else { break };
        if h & 0xff == gone & 0xff {
            found = Some(h);
            break;
        }
        let _ = hyp::vm_destroy(h);
    }
    let Some(h) = found else {
        r.fail("a VM gets the destroyed VM's slot again");
        return;
    };
    let entry = GUEST_RAM + 0x8_0000;
    let run = hyp::vcpu_create(h, entry, 0).and_then(|_| hyp::call(abi::VCPU_RUN, [h, 0, 0, 0, 0, 0]));
    r.check(
        matches!(run, Ok(e) if e[0] == exit::GUEST_ABORT && e[1] == entry),
        "the next VM in a destroyed VM's slot has no on-demand range (a fault there is a guest abort)",
    );
    let _ = hyp::vm_destroy(h);
}

/// Runs vCPU 0 to its first exit and answers it wrongly three times:
/// nothing donated, a block elsewhere donated, a page the guest already
/// holds offered at the faulting IPA (refused). Each run gives the same
/// exit. Then a page of block [`PAGE_BLOCK`] is donated (the guest's fault
/// there later is answered page-sized) and the VMM answers the first fault.
fn wrong_answers(g: &mut Guest, r: &mut Report) -> bool {
    // The exit, the IPA and the suggestion (the ESR's fault level follows
    // the stage-2's shape: a level-1 fault becomes a level-2 one once a
    // block elsewhere in the same 1 GiB is donated).
    let run = |g: &mut Guest| hyp::call(abi::VCPU_RUN, g.run_args(0)).map(|e| [e[0], e[1], e[2], e[3]]);
    let first = match hyp::call(abi::VCPU_RUN, g.run_args(0)) {
        Ok(e) => e,
        Err(e) => {
            println!("[host] vm {}: vcpu_run: {e}", g.handle);
            r.fail("the guest's first run");
            return false;
        }
    };
    let fetch = el1_rt::probe::ec(first[4]) == hyp_abi::esr::EC_IABT_LOW as u64;
    println!(
        "[host] vm {}: first exit {}: IPA {:#x}, {}, the hyp suggests {:#x} + {} KiB",
        g.handle,
        first[0],
        first[1],
        if fetch { "an instruction fetch" } else { "a data access" },
        first[2],
        first[3] / 1024
    );
    r.check(
        first[0] == exit::MEM_FAULT && first[1] == g.entry && fetch && first[2] == GUEST_RAM && first[3] == SZ_2M,
        "the first instruction fetch is a memory fault exit suggesting the 2 MiB block around it",
    );
    let same = Ok([first[0], first[1], first[2], first[3]]);
    r.check(run(g) == same, "run again with nothing donated: the same exit");
    let last = GUEST_RAM + MEM - SZ_2M;
    let ok = hyp::donate(g.handle, g.pa + (last - GUEST_RAM), last, SZ_2M) == 0;
    g.donated += if ok { SZ_2M } else { 0 };
    r.check(ok && run(g) == same, "run again with a block elsewhere donated: the same exit");
    r.check(
        hyp::donate(g.handle, g.pa + (last - GUEST_RAM), GUEST_RAM, SZ_2M) == -EPERM,
        "a block the guest already holds, offered at the faulting IPA: EPERM",
    );
    r.check(run(g) == same, "run again after the refused donation: the same exit");
    let one = GUEST_RAM + PAGE_BLOCK * SZ_2M;
    let ok = hyp::donate(g.handle, g.pa + (one - GUEST_RAM), one, 4096) == 0;
    g.donated += if ok { 4096 } else { 0 };
    r.check(ok, "one page of an untouched block donated ahead");
    match g.on_exit(0, Ok(first)) {
        Ok(_) => true,
        Err(e) => {
            println!("[host] vm {}: {e}", g.handle);
            r.fail("the VMM answers the memory fault");
            false
        }
    }
}
