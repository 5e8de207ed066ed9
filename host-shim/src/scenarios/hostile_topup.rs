//! The hostile host and VM_TOPUP (docs/abi.md): bad arguments refused with
//! the exact error and nothing changed, the pages the hyp's for the VM
//! while it lives (PAGE_STATE, an abort on the host's access), DONATE_GUEST
//! refused (ENOMEM, nothing changed) while the VM's memcache is short, and
//! every page back, zeroed, at VM_DESTROY, counted in its x3; a guest's
//! MEM_SHARE that needs a table its memcache lacks exits TOPUP and runs
//! again, once, after the host's top-up.

use hyp_abi::errno::*;
use hyp_abi::host as abi;
use hyp_abi::host::page_state;

use crate::hyp::{self, call, errno};
use crate::mem::HostMem;
use crate::report::{expect_abort, read64, write64, write_code, Report};

const PAGE: u64 = 4096;

fn topup(h: u64, pa: u64, pages: u64) -> i64 {
    errno(call(abi::VM_TOPUP, [h, pa, pages, 0, 0, 0]))
}

/// Is `pa` the host's own (mapped or not yet), by PAGE_STATE?
fn hosts(pa: u64) -> bool {
    matches!(state(pa), (page_state::NONE | page_state::OWNED, 0, page_state::HELD_BY_HOST))
}

/// PAGE_STATE's (state, owning VM, holder) of `pa`.
fn state(pa: u64) -> (u64, u64, u64) {
    call(abi::PAGE_STATE, [pa, 0, 0, 0, 0, 0]).map(|r| (r[0], r[2], r[3])).unwrap_or((u64::MAX, 0, 0))
}

pub fn run(hm: &mut HostMem, hyp_base: u64, r: &mut Report) {
    // 2 MiB for table pages and the like, 2 MiB for a guest (exit_topup).
    let mem = hm.alloc(4 << 20, 2 << 20).expect("host memory");
    let h = match hyp::vm_create() {
        Ok(h) => h,
        Err(e) => {
            r.expect(e, 0, "vm_topup: vm_create");
            return;
        }
    };
    // Marks in the pages, to see them zeroed when they come back.
    for i in 0..4 {
        write64(mem + i * PAGE + 8, 0x5eed + i);
    }
    // A page of the VM's memory (a raw DONATE_GUEST: none of the shim's
    // top-ups yet), refused while the memcache is empty.
    let donated = mem + 0x10_0000;
    r.expect(
        errno(call(abi::DONATE_GUEST, [h, donated, 0x4000_0000, PAGE, 0, 0])),
        -ENOMEM,
        "donate_guest: an empty memcache is ENOMEM",
    );
    r.check(hosts(donated), "donate_guest: refused for its tables, the page stays the host's");
    r.expect(topup(99, mem, 1), -ENOENT, "vm_topup: unknown VM is ENOENT");
    r.expect(topup(h, mem + 8, 1), -EINVAL, "vm_topup: unaligned PA is EINVAL");
    r.expect(topup(h, mem, 0), -EINVAL, "vm_topup: no page is EINVAL");
    r.expect(topup(h, mem, u64::MAX / PAGE + 1), -EINVAL, "vm_topup: a page count that overflows is EINVAL");
    r.expect(topup(h, !0xfff_u64, 2), -EINVAL, "vm_topup: a wrapping range is EINVAL");
    r.expect(topup(h, 0x0900_0000, 1), -EINVAL, "vm_topup: device memory is EINVAL");
    r.expect(topup(h, hyp_base + 0x10_0000, 1), -EPERM, "vm_topup: hyp memory is EPERM");
    r.expect(
        errno(call(abi::SHARE_HYP, [mem + 5 * PAGE, PAGE, 0, 0, 0, 0])),
        0,
        "vm_topup: a page shared with the hyp",
    );
    r.expect(topup(h, mem + 4 * PAGE, 2), -EPERM, "vm_topup: a range ending in a page shared with the hyp is EPERM");
    r.check(hosts(mem + 4 * PAGE), "vm_topup: refused, its first page stays the host's");
    r.expect(errno(call(abi::UNSHARE_HYP, [mem + 5 * PAGE, PAGE, 0, 0, 0, 0])), 0, "vm_topup: unshared again");
    r.expect(topup(h, mem, 4), 0, "vm_topup: four host pages");
    r.check(
        state(mem + 3 * PAGE) == (page_state::NONE, h, page_state::HELD_BY_HYP_FOR_VM),
        "vm_topup: PAGE_STATE says held by the hyp for the VM",
    );
    r.check(expect_abort(|| _ = read64(mem)).is_some(), "vm_topup: the host lost access to the pages");
    r.expect(topup(h, mem + 3 * PAGE, 1), -EPERM, "vm_topup: a page twice is EPERM");
    r.expect(
        errno(call(abi::DONATE_GUEST, [h, mem + 2 * PAGE, 0x4000_0000, PAGE, 0, 0])),
        -EPERM,
        "donate_guest: a page of the VM's table memory is EPERM",
    );
    r.expect(
        errno(call(abi::DONATE_GUEST, [h, donated, 0x4000_0000, PAGE, 0, 0])),
        0,
        "donate_guest: with the memcache topped up",
    );
    let d = call(abi::VM_DESTROY, [h, 0, 0, 0, 0, 0]);
    r.check(d.map(|v| (v[0], v[1])) == Ok((PAGE, 4)), "vm_destroy: the donated page and the 4 table pages back (x3)");
    r.check(
        (0..4).all(|i| hosts(mem + i * PAGE) && read64(mem + i * PAGE + 8) == 0),
        "vm_destroy: the table pages are the host's again, zeroed",
    );
    r.expect(topup(h, mem, 1), -ENOENT, "vm_topup: a destroyed VM is ENOENT");
    exit_topup(mem, r);
    hm.free(mem, 4 << 20);
}

/// MEM_SHARE of IPA 0x4000_1000, then PSCI SYSTEM_OFF.
const SHARE_PROG: [u32; 11] = [
    0xd280_0060, // movz x0, #0x0003
    0xf2b8_c000, // movk x0, #0xc600, lsl #16   (MEM_SHARE)
    0xd282_0001, // movz x1, #0x1000
    0xf2a8_0001, // movk x1, #0x4000, lsl #16
    0xaa1f_03e2, // mov  x2, xzr
    0xaa1f_03e3, // mov  x3, xzr
    0xd400_0002, // hvc  #0
    0xd280_0100, // movz x0, #0x0008
    0xf2b0_8000, // movk x0, #0x8400, lsl #16   (SYSTEM_OFF)
    0xd400_0002, // hvc  #0
    0x1400_0000, // b    .
];

/// A guest whose 2 MiB block came with only the table its donation needed
/// shares a page of it: the split needs a table, the vCPU exits TOPUP
/// (x3 = 1) with nothing done, and after the host's top-up the guest's
/// call runs again and succeeds, once. `spare`: 4 MiB of host memory, the
/// first 2 MiB for the table pages, the next for the guest.
fn exit_topup(spare: u64, r: &mut Report) {
    let Ok(h) = hyp::vm_create() else {
        r.fail("exit topup: vm_create");
        return;
    };
    let mem = spare + (2 << 20);
    write_code(mem, &SHARE_PROG);
    // One level-2 table (IPA bits 40: the root is level 1) holds the block.
    let needs = abi::donation_table_pages(0, mem, 0x4000_0000, 2 << 20);
    r.check(needs == 1, "exit topup: the host's helper counts one table for a 2 MiB block");
    r.expect(topup(h, spare, needs), 0, "exit topup: the memcache holds what the donation needs");
    let donated = errno(call(abi::DONATE_GUEST, [h, mem, 0x4000_0000, 2 << 20, 0, 0]));
    r.expect(donated, 0, "exit topup: a 2 MiB block donated");
    r.check(hyp::vcpu_create(h, 0x4000_0000, 0) == Ok(0), "exit topup: vcpu_create");
    let run = || call(abi::VCPU_RUN, [h, 0, 0, 0, 0, 0]);
    let shares = || call(abi::VM_CALLS, [h, 0, 0, 0, 0, 0]).map(|v| v[0]).unwrap_or(u64::MAX);
    let e = run();
    r.check(
        matches!(e, Ok(e) if e[0] == abi::exit::TOPUP && e[1] == 1) && shares() == 0,
        "exit topup: MEM_SHARE splitting the block exits TOPUP (x3 = 1 page), nothing done",
    );
    r.expect(topup(h, spare + PAGE, 1), 0, "exit topup: the host tops the VM up by one page");
    let e = run();
    r.check(
        matches!(e, Ok(e) if e[0] == abi::exit::SYSTEM_OFF) && shares() == 1,
        "exit topup: the guest's MEM_SHARE ran again and succeeded, once",
    );
    r.check(state(mem + PAGE).0 == page_state::SHARED_BORROWED, "exit topup: the host borrows the shared page");
    let d = call(abi::VM_DESTROY, [h, 0, 0, 0, 0, 0]);
    r.check(
        d.map(|v| (v[0], v[1])) == Ok((2 << 20, 2)),
        "exit topup: vm_destroy gives back the 2 MiB and 2 table pages",
    );
}
