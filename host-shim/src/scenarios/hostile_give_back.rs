//! A guest gives pages back and the hyp's pool does not pay (issue 25):
//! a page a guest gives back (MEM_RELINQUISH) is the host's again, for
//! its devices too, so the host's DMA view maps it. Where the view maps
//! blocks (QEMU's SMMU has BBML2) the page lies in a region the view had
//! as one invalid block, which it splits with a table from its reserve
//! (set aside at boot, docs/isolation.md): the hyp's pool, which other
//! VMs' roots and vCPUs come from, stays as it was.

use hyp_abi::host as abi;
use hyp_abi::host::page_state;

use crate::hyp::{self, call, errno};
use crate::mem::HostMem;
use crate::report::{write_code, Report};
use el1_rt::println;

const PAGE: u64 = 4096;
const BLOCK: u64 = 2 << 20;
/// 2 MiB blocks of the guest's memory.
const BLOCKS: u64 = 4;
const GUEST_RAM: u64 = 0x4000_0000;

/// The guest: MEM_RELINQUISH of page 1 of each of its 4 blocks (x1 from
/// IPA 0x4000_1000 in 2 MiB steps; it stops at the first refusal), then
/// SYSTEM_OFF. Assembled from:
/// ```text
///     movz x19, #0x1000; movk x19, #0x4000, lsl #16; mov x20, #4
/// 1:  movz x0, #0x0009; movk x0, #0xc600, lsl #16   // MEM_RELINQUISH
///     mov x1, x19; mov x2, xzr; mov x3, xzr; hvc #0
///     cbnz x0, 2f
///     add x19, x19, #0x200, lsl #12; subs x20, x20, #1; b.ne 1b
/// 2:  movz x0, #0x0008; movk x0, #0x8400, lsl #16   // SYSTEM_OFF
///     hvc #0; b .
/// ```
const GIVE_BACK_PROG: [u32; 17] = [
    0xd282_0013,
    0xf2a8_0013,
    0xd280_0094,
    0xd280_0120,
    0xf2b8_c000,
    0xaa13_03e1,
    0xaa1f_03e2,
    0xaa1f_03e3,
    0xd400_0002,
    0xb500_0080,
    0x9148_0273,
    0xf100_0694,
    0x54ff_fee1,
    0xd280_0100,
    0xf2b0_8000,
    0xd400_0002,
    0x1400_0000,
];

pub fn run(hm: &mut HostMem, r: &mut Report) {
    let size = BLOCKS * BLOCK;
    let tables = abi::vm_table_pages(40, GUEST_RAM, size);
    let (Some(mem), Some(spare)) = (hm.alloc(size, BLOCK), hm.alloc(tables * PAGE, PAGE)) else {
        r.fail("give back: host memory");
        return;
    };
    write_code(mem, &GIVE_BACK_PROG);
    let Ok(h) = hyp::vm_create() else {
        r.fail("give back: vm_create");
        return;
    };
    let ready = errno(call(abi::VM_TOPUP, [h, spare, tables, 0, 0, 0])) == 0
        && errno(call(abi::DONATE_GUEST, [h, mem, GUEST_RAM, size, 0, 0])) == 0
        && hyp::vcpu_create(h, GUEST_RAM, 0) == Ok(0);
    r.check(ready, "give back: a guest of four 2 MiB blocks, its tables topped up");
    let before = hyp::pool_in_use();
    // A host interrupt may end a run early (exit IRQ): run again.
    let mut e = call(abi::VCPU_RUN, [h, 0, 0, 0, 0, 0]);
    for _ in 0..100 {
        if !matches!(e, Ok(x) if x[0] == abi::exit::IRQ) {
            break;
        }
        e = call(abi::VCPU_RUN, [h, 0, 0, 0, 0, 0]);
    }
    let off = matches!(e, Ok(e) if e[0] == abi::exit::SYSTEM_OFF);
    if !off {
        println!("[host] give back: VCPU_RUN gave {e:x?}");
    }
    r.check(off, "give back: the guest relinquished and powered off");
    let back = (0..BLOCKS).all(|i| {
        let pa = mem + i * BLOCK + PAGE;
        call(abi::PAGE_STATE, [pa, 0, 0, 0, 0, 0]).is_ok_and(|s| s[3] == page_state::HELD_BY_HOST)
    });
    r.check(back, "give back: page 1 of each 2 MiB block is the host's again");
    let after = hyp::pool_in_use();
    r.check(after == before, "give back: the DMA view's splits for them took nothing from the hyp's pool");
    if after != before {
        println!("[host] give back: the hyp's pool in use went {before} -> {after} bytes");
    }
    let d = call(abi::VM_DESTROY, [h, 0, 0, 0, 0, 0]);
    r.check(
        d.map(|v| v[0]) == Ok(size - BLOCKS * PAGE),
        "give back: vm_destroy gives back the rest of the guest's memory",
    );
    hm.free(mem, size);
    hm.free(spare, tables * PAGE);
}
