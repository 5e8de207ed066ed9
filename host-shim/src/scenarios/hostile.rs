//! A hostile host: bad and malicious arguments to every host call. Each must
//! be refused with the exact error and change nothing. Then the world
//! switch seen from the host: no vCPU added after a VM ran, no guest
//! register in an MMIO read exit, and an abort (not a hang) for a host
//! instruction fetch from a page a guest shared.

use el1_rt::println;
use hyp_abi::errno::*;
use hyp_abi::host as abi;

use crate::hyp::{self, call, errno};
use crate::images::GuestImage;
use crate::mem::HostMem;
use crate::report::{expect_abort, read64, write64, write_code, Report};

pub fn run(hm: &mut HostMem, _images: &[GuestImage], r: &mut Report) {
    let page = hm.alloc(2 << 20, 2 << 20).expect("host memory");
    // The hyp's carve-out on QEMU virt (see the boot scenario): its base, the
    // hyp image in it, and a page of the page pool after the image.
    let hyp_base = 0x4000_0000u64;
    let hyp_image = 0x4020_0000u64;
    let hyp_pool_page = 0x4210_0000u64;
    let h = match hyp::vm_create() {
        Ok(h) => h,
        Err(e) => {
            println!("[host] vm_create: {e}");
            r.fail("vm_create");
            return;
        }
    };
    vm_create_sizes(r);
    r.expect(hyp::donate(h, page + 1, 0x4000_0000, 4096), -EINVAL, "donate: unaligned PA is EINVAL");
    r.expect(hyp::donate(h, page, 0x4000_0001, 4096), -EINVAL, "donate: unaligned IPA is EINVAL");
    r.expect(hyp::donate(h, page, 0x4000_0000, 100), -EINVAL, "donate: unaligned size is EINVAL");
    r.expect(hyp::donate(h, page, 0x4000_0000, 0), -EINVAL, "donate: empty range is EINVAL");
    r.expect(hyp::donate(h, !0xfff_u64, 0x4000_0000, 0x2000), -EINVAL, "donate: wrapping PA range is EINVAL");
    r.expect(hyp::donate(h, page, !0xfff_u64, 0x2000), -EINVAL, "donate: wrapping IPA range is EINVAL");
    r.expect(hyp::donate(h, page, 1 << 40, 4096), -EINVAL, "donate: IPA beyond the guest's space is EINVAL");
    r.expect(hyp::donate(h, 0x0900_0000, 0x4000_0000, 4096), -EINVAL, "donate: device memory is EINVAL");
    r.expect(hyp::donate(h, hyp_base + 0x10_0000, 0x4000_0000, 4096), -EPERM, "donate: hyp memory is EPERM");
    r.expect(hyp::donate(h, page, 0x4000_0000, 1 << 62), -EINVAL, "donate: huge range is EINVAL");
    r.expect(hyp::donate(99, page, 0x4000_0000, 4096), -ENOENT, "donate: unknown VM is ENOENT");
    r.expect(hyp::donate(h, page, 0x4000_0000, 4096), 0, "donate: a good page");
    r.expect(hyp::donate(h, page, 0x4000_1000, 4096), -EPERM, "donate: the same page twice is EPERM");
    r.expect(hyp::donate(h, page + 0x1000, 0x4000_0000, 4096), -EPERM, "donate: onto an IPA already backed is EPERM");
    r.check(
        expect_abort(|| {
            read64(page);
        })
        .is_some(),
        "host lost access to the donated page",
    );
    r.expect(hyp::pin(page, false), -EPERM, "pin: a guest-private page is EPERM");
    r.expect(hyp::pin(page + 0x2000, false), -EPERM, "pin: a host-owned page is EPERM");
    r.expect(hyp::pin(page + 1, false), -EINVAL, "pin: unaligned is EINVAL");
    r.expect(errno(call(abi::PIN, [page, 7, 0, 0, 0, 0])), -EINVAL, "pin: unknown flags is EINVAL");
    r.expect(hyp::unpin(page + 0x2000), -EINVAL, "unpin: a page with no pin is EINVAL");
    r.expect(hyp::pin_range(page, 1, false), -EPERM, "pin_range: a guest-private page is EPERM");
    r.expect(hyp::pin_range(page + 0x2000, 2, false), -EPERM, "pin_range: host-owned pages are EPERM");
    r.expect(hyp::pin_range(page, 0, false), -EINVAL, "pin_range: no page is EINVAL");
    r.expect(hyp::pin_range(page, abi::PIN_RANGE_MAX + 1, false), -EINVAL, "pin_range: over 256 pages is EINVAL");
    r.expect(errno(call(abi::PIN_RANGE, [page, 1, 7, 0, 0, 0])), -EINVAL, "pin_range: unknown flags is EINVAL");
    r.expect(hyp::unpin_range(page + 0x2000, 1), -EINVAL, "unpin_range: a page with no pin is EINVAL");
    r.expect(hyp::unpin_range(page + 0x2000, u64::MAX), -EINVAL, "unpin_range: a huge count is EINVAL");
    r.expect(errno(call(abi::SHARE_HYP, [hyp_base, 4096, 0, 0, 0, 0])), -EPERM, "share_hyp: hyp memory is EPERM");
    r.expect(errno(call(abi::SHARE_HYP, [page, 4096, 0, 0, 0, 0])), -EPERM, "share_hyp: a guest's page is EPERM");
    r.expect(errno(call(abi::SHARE_HYP, [page + 0x3000, 4096, 0, 0, 0, 0])), 0, "share_hyp: a host page");
    r.expect(errno(call(abi::SHARE_HYP, [page + 0x3000, 4096, 0, 0, 0, 0])), -EPERM, "share_hyp: twice is EPERM");
    r.expect(
        errno(call(abi::DONATE_GUEST, [h, page + 0x3000, 0x4000_2000, 4096, 0, 0])),
        -EPERM,
        "donate: a page shared with the hyp is EPERM",
    );
    r.expect(errno(call(abi::UNSHARE_HYP, [page + 0x3000, 4096, 0, 0, 0, 0])), 0, "unshare_hyp");
    r.expect(
        errno(call(abi::UNSHARE_HYP, [page + 0x3000, 4096, 0, 0, 0, 0])),
        -EPERM,
        "unshare_hyp: not shared is EPERM",
    );
    r.expect(errno(call(abi::DONATE_HYP, [page + 0x4000, 0x2000, 0, 0, 0, 0])), 0, "donate_hyp: two host pages");
    r.check(
        expect_abort(|| {
            read64(page + 0x4000);
        })
        .is_some(),
        "host lost access to pages donated to the hyp",
    );
    r.expect(
        errno(call(abi::RECLAIM_HYP, [page + 0x4000, 0x3000, 0, 0, 0, 0])),
        -EPERM,
        "reclaim_hyp: range not all hyp's is EPERM",
    );
    r.expect(errno(call(abi::RECLAIM_HYP, [page + 0x4000, 0x2000, 0, 0, 0, 0])), 0, "reclaim_hyp: back to the host");
    r.check(
        expect_abort(|| {
            read64(page + 0x4000);
        })
        .is_none(),
        "host can use pages the hyp gave back",
    );
    // The hyp's own memory never goes to the host: only pages the host
    // donated come back.
    for (pa, reclaim, still) in [
        (hyp_base, "reclaim_hyp: the carve-out base is EPERM", "host still cannot read the carve-out base"),
        (hyp_image, "reclaim_hyp: the hyp image is EPERM", "host still cannot read the hyp image"),
        (hyp_pool_page, "reclaim_hyp: a page-pool page is EPERM", "host still cannot read the page-pool page"),
    ] {
        r.expect(errno(call(abi::RECLAIM_HYP, [pa, 4096, 0, 0, 0, 0])), -EPERM, reclaim);
        r.check(
            expect_abort(|| {
                read64(pa);
            })
            .is_some(),
            still,
        );
    }
    r.expect(errno(call(0xc600_01ff, [0; 6])), -1, "unknown host call is NOT_SUPPORTED");
    r.expect(errno(call(abi::VCPU_RUN, [h, 0, 0, 0, 0, 0])), -ENOENT, "vcpu_run: no such vCPU is ENOENT");
    r.expect(errno(call(abi::VCPU_RUN, [h, 1 << 40, 0, 0, 0, 0])), -ENOENT, "vcpu_run: huge vCPU index is ENOENT");
    let destroyed = hyp::vm_destroy(h);
    r.check(destroyed == Ok(4096), "vm_destroy reclaims the one donated page");
    r.expect(errno(call(abi::VCPU_RUN, [h, 0, 0, 0, 0, 0])), -ENOENT, "vcpu_run: a destroyed VM is ENOENT");
    r.expect(hyp::vm_destroy(h).err().unwrap_or(0), -ENOENT, "vm_destroy: twice is ENOENT");
    r.check(
        expect_abort(|| {
            read64(page);
        })
        .is_none(),
        "the page is the host's again after destroy",
    );
    hm.free(page, 2 << 20);
    world_switch(hm, r);
    super::hostile_topup::run(hm, hyp_base, r);
    super::hostile_give_back::run(hm, r);
    vm_limit(r);
}

/// 255 VMs of 8 vCPUs at once (the pool holds them); the next VM_CREATE is ENOMEM and changes nothing; a
/// destroyed VM's handle names nothing, even once its slot is reused; all
/// of it leaves the hyp's pool as it was.
fn vm_limit(r: &mut Report) {
    let before = hyp::pool_in_use();
    let mut hs = alloc::vec::Vec::new();
    let mut vcpus = true;
    while let Ok(h) = hyp::vm_create() {
        hs.push(h);
        vcpus &= (0..8).all(|i| hyp::vcpu_create(h, 0x4000_0000, 0) == Ok(i));
        if hs.len() > 300 {
            break;
        }
    }
    r.check(hs.len() == 255, "vm_create: 255 VMs exist at once");
    r.check(vcpus, "vcpu_create: 8 vCPUs each fit in the hyp's pool");
    let full = hyp::pool_in_use();
    r.expect(hyp::vm_create().err().unwrap_or(0), -ENOMEM, "vm_create: the 256th VM is ENOMEM");
    r.check(hyp::pool_in_use() == full, "vm_create: a refused VM takes no hyp memory");
    let mut sorted = hs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    r.check(
        sorted.len() == hs.len() && hs.iter().all(|&h| h != 0 && h < 0x1_0000),
        "vm_create: 255 distinct nonzero 16-bit handles",
    );
    let stale = hs.remove(0);
    r.check(hyp::vm_destroy(stale) == Ok(0), "vm_destroy: one of the 255");
    let fresh = hyp::vm_create();
    r.check(fresh.is_ok_and(|h| h != stale), "vm_create: its slot again, under a new handle");
    hs.extend(fresh.ok());
    r.expect(
        hyp::vcpu_create(stale, 0x4000_0000, 0).err().unwrap_or(0),
        -ENOENT,
        "vcpu_create: a stale handle is ENOENT",
    );
    r.expect(hyp::vm_stats(stale, 0x4000_0000).err().unwrap_or(0), -ENOENT, "vm_stats: a stale handle is ENOENT");
    r.expect(hyp::vm_destroy(stale).err().unwrap_or(0), -ENOENT, "vm_destroy: a stale handle is ENOENT");
    r.check(hyp::vcpu_create(*hs.last().unwrap_or(&0), 0x4000_0000, 0) == Ok(0), "vcpu_create: the new VM's first");
    let all_gone = hs.iter().all(|&h| hyp::vm_destroy(h).is_ok());
    r.check(all_gone && hyp::pool_in_use() == before, "vm_destroy: all 255, the hyp's pool back to where it was");
}

/// A guest of 17 instructions at IPA 0x4000_0000 (hand-assembled):
/// x5 = a secret; MMIO read into x5 at 0x0a00_0000 (exit 1); MEM_SHARE of
/// IPA 0x4000_1000; MMIO read at 0x0a00_0000 (exit 2); PSCI SYSTEM_OFF.
const PROG: [u32; 17] = [
    0xd28b_d845, // movz x5, #0x5ec2
    0xf2e3_d5e5, // movk x5, #0x1eaf, lsl #48
    0xd2a1_4002, // movz x2, #0x0a00, lsl #16
    0xf940_0045, // ldr  x5, [x2]
    0xd280_0060, // movz x0, #0x0003
    0xf2b8_c000, // movk x0, #0xc600, lsl #16   (MEM_SHARE)
    0xd282_0001, // movz x1, #0x1000
    0xf2a8_0001, // movk x1, #0x4000, lsl #16
    0xaa1f_03e2, // mov  x2, xzr
    0xaa1f_03e3, // mov  x3, xzr
    0xd400_0002, // hvc  #0
    0xd2a1_4002, // movz x2, #0x0a00, lsl #16
    0xf940_0047, // ldr  x7, [x2]
    0xd280_0100, // movz x0, #0x0008
    0xf2b0_8000, // movk x0, #0x8400, lsl #16   (SYSTEM_OFF)
    0xd400_0002, // hvc  #0
    0x1400_0000, // b    .
];
/// The secret in x5 when the guest's first MMIO read exits.
const SECRET: u64 = 0x1eaf_0000_0000_5ec2;
const RET: u32 = 0xd65f_03c0;

fn world_switch(hm: &mut HostMem, r: &mut Report) {
    let mem = hm.alloc(2 << 20, 2 << 20).expect("host memory");
    write_code(mem, &PROG);
    // The page the guest shares holds a `ret`: if a host fetch from it
    // went through, the call would simply return.
    write64(mem + 0x1000, RET as u64);
    let h = match hyp::vm_create() {
        Ok(h) => h,
        Err(e) => {
            println!("[host] vm_create: {e}");
            r.fail("vm_create");
            return;
        }
    };
    r.expect(hyp::donate(h, mem, 0x4000_0000, 0x2000), 0, "world switch: donate the program's two pages");
    r.check(hyp::vcpu_create(h, 0x4000_0000, 0) == Ok(0), "vcpu_create before the first run");
    // VCPU_CREATE flags and VCPU_IRQ: each bad argument its error, nothing changed.
    let flags = call(abi::VCPU_CREATE, [h, 0x4000_0000, 0, 2, 0, 0]);
    r.expect(hyp::errno(flags), -EINVAL, "vcpu_create with an unknown flag is EINVAL");
    let irq = |v: u64, intid: u64, op: u64, a: u64, b: u64| hyp::errno(call(abi::VCPU_IRQ, [h, v, intid, op, a, b]));
    r.expect(irq(1, 33, abi::irq::CONFIGURE, 1, 0xa0), -ENOENT, "vcpu_irq on a vCPU the VM does not have is ENOENT");
    r.expect(irq(0, 128, abi::irq::CONFIGURE, 1, 0xa0), -EINVAL, "vcpu_irq on INTID 128 is EINVAL");
    r.expect(irq(0, 33, abi::irq::CONFIGURE, 2, 0), -EINVAL, "vcpu_irq configure with enabled = 2 is EINVAL");
    r.expect(irq(0, 33, abi::irq::CONFIGURE, 1, 0x100), -EINVAL, "vcpu_irq configure with priority 256 is EINVAL");
    r.expect(irq(0, 27, abi::irq::LINE, 1, 0), -EINVAL, "vcpu_irq cannot drive the virtual timer's line (EINVAL)");
    r.expect(irq(0, 33, abi::irq::LINE, 1, 7), -EINVAL, "vcpu_irq line with a stray operand is EINVAL");
    r.expect(irq(0, 33, 3, 0, 0), -EINVAL, "vcpu_irq with an unknown operation is EINVAL");
    r.expect(irq(0, 33, abi::irq::LINE, 1, 0), 0, "vcpu_irq line on a valid SPI");
    r.expect(hyp::errno(call(abi::VCPU_IRQ, [0xdead, 0, 33, 0, 0, 0])), -ENOENT, "vcpu_irq on no VM is ENOENT");
    let run = |reply: u64| call(abi::VCPU_RUN, [h, 0, reply, 0, 0, 0]);
    let e = run(0);
    let mmio = matches!(e, Ok(e) if e[0] == abi::exit::MMIO && e[1] == 0x0a00_0000 && e[3] == 0);
    r.check(mmio, "vcpu_run: the guest's MMIO read exits");
    if let Ok(e) = e {
        if e[4] != 0 {
            println!("[host]   x6 = {:#x}{}", e[4], if e[4] == SECRET { " (the guest's secret)" } else { "" });
        }
        r.check(mmio && e[4] == 0, "MMIO read exit: x6 is 0, not the guest's register (it held a secret)");
    }
    r.expect(
        hyp::vcpu_create(h, 0x4000_0000, 0).err().unwrap_or(0),
        -EPERM,
        "vcpu_create after the VM's first run is EPERM",
    );
    let e = run(0);
    r.check(matches!(e, Ok(e) if e[0] == abi::exit::MMIO), "vcpu_run: the guest shared a page and exits again");
    let shared = mem + 0x1000;
    r.check(
        expect_abort(|| {
            read64(shared);
        })
        .is_none()
            && read64(shared) == RET as u64,
        "the host reads the page the guest shared",
    );
    // Last: without the fix this hangs the CPU (the runner's timeout).
    println!("[host] world switch: the host branches into the page the guest shared");
    let got = el1_rt::probe::call_expect_abort(shared);
    if let Some((far, esr)) = got {
        println!("[host] instruction abort delivered (FAR {:#x}, ESR {:#x})", far, esr);
    }
    r.check(
        matches!(got, Some((far, esr)) if far == shared && (esr >> 26) & 0x3f == 0x21),
        "a host instruction fetch from a page a guest shared gets an instruction abort",
    );
    let e = run(0);
    r.check(matches!(e, Ok(e) if e[0] == abi::exit::SYSTEM_OFF), "vcpu_run: the guest powers off");
    r.check(hyp::vm_destroy(h).is_ok(), "vm_destroy after the world-switch checks");
    hm.free(mem, 2 << 20);
}

/// VM_CREATE's IPA size: 32..=48 bits, and never more than the CPU's PA range (a stage-2 larger
/// than PARange is CONSTRAINED UNPREDICTABLE: a 44-bit VM on a 40-bit Cortex-A53 livelocks). The
/// same checks on every CPU model: one bit more than this CPU's PA range is refused (49 on a
/// 48-bit CPU: out of range anyway), exactly its PA range is accepted.
fn vm_create_sizes(r: &mut Report) {
    use aarch64_cpu::registers::{Readable, ID_AA64MMFR0_EL1};
    let pa_bits = match ID_AA64MMFR0_EL1.get() & 0xf {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        _ => 48,
    };
    println!("[host] this CPU has {pa_bits} PA bits");
    r.expect(hyp::vm_create_bits(31).err().unwrap_or(0), -EINVAL, "vm_create: 31 IPA bits is EINVAL");
    r.expect(hyp::vm_create_bits(1 << 32).err().unwrap_or(0), -EINVAL, "vm_create: 2^32 IPA bits is EINVAL");
    r.expect(
        hyp::vm_create_bits(pa_bits + 1).err().unwrap_or(0),
        -EINVAL,
        "vm_create: one IPA bit more than the CPU's PA range is EINVAL",
    );
    match hyp::vm_create_bits(pa_bits) {
        Ok(h) => {
            r.check(hyp::vm_destroy(h).is_ok(), "vm_create: as many IPA bits as the CPU's PA range");
        }
        Err(e) => {
            println!("[host] vm_create({pa_bits}): {e}");
            r.fail("vm_create: as many IPA bits as the CPU's PA range");
        }
    }
}
