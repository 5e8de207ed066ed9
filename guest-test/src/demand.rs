//! Guest memory on demand (docs/abi.md, `MEM_ON_DEMAND` and exit
//! `MEM_FAULT`): the host declared this guest's RAM and donates it as the
//! guest touches it. `test=demand` checks what the guest sees (every
//! access lands, a 2 MiB block comes whole, an instruction that faults
//! half-way runs again whole, RAM beyond the range still aborts);
//! `test=touch mib=N` writes one word in each page of the first N MiB of
//! RAM and powers off, printing nothing (the bench's start row: only the
//! memory faults and donations cost EL2 instructions).

use el1_rt::probe::{expect_abort, read64, write64};

use crate::abi::s2_info;
use crate::tests::Tally;

const RAM: u64 = 0x4000_0000;
const PAGE: u64 = 4096;
const SZ_2M: u64 = 2 << 20;

/// `test=demand`.
pub fn demand(t: &mut Tally) {
    let mem = t.mem;
    // Blocks the image (block 0) does not reach, and the last word of RAM.
    let spots = [RAM + 3 * SZ_2M + 5 * PAGE, RAM + mem / 2 + 8, RAM + mem - 8];
    for (i, &a) in spots.iter().enumerate() {
        write64(a, 0x5eed_0000 + i as u64);
    }
    let back = spots.iter().enumerate().all(|(i, &a)| read64(a) == 0x5eed_0000 + i as u64);
    t.check(back, "stores to memory not donated yet land once the host donates it, and read back");
    t.check(s2_info(spots[0]).1 == 2, "the host donated the whole 2 MiB block the hyp suggested (a 2M mapping)");
    // A store pair whose second half is in the next, untouched block: the
    // instruction faults there and runs again whole after the donation.
    let at = RAM + 6 * SZ_2M - 8;
    write64(at, 0);
    let (a, b) = (0x1111_2222_3333_4444u64, 0x5555_6666_7777_8888u64);
    // SAFETY: [at, at + 16) is guest RAM (two blocks of it), used by
    // nothing else; the identity map covers it.
    unsafe { core::arch::asm!("stp {a}, {b}, [{p}]", a = in(reg) a, b = in(reg) b, p = in(reg) at) };
    t.check(read64(at) == a && read64(at + 8) == b, "a store pair across a block boundary lands whole");
    // The host donated one page of block 7 ahead (the `demand` scenario):
    // a fault elsewhere in that block gets a page.
    let p = RAM + 7 * SZ_2M + 9 * PAGE;
    write64(p, 7);
    t.check(
        read64(p) == 7 && s2_info(p).1 == 3,
        "in a block the host gave a page of, a fault brings a page (4K mapping)",
    );
    let beyond = RAM + mem + 16 * PAGE;
    let got = expect_abort(|| {
        read64(beyond);
    });
    t.check(got.is_some_and(|(far, _)| far == beyond), "an access past the declared memory still aborts");
}

/// `test=touch mib=N`: one store per page of the first N MiB of RAM (up
/// to all of it), then power off.
pub fn touch(mem: u64, mib: u64) -> ! {
    let end = RAM + mib.saturating_mul(1 << 20).min(mem);
    let mut a = RAM;
    while a < end {
        // Our own code, data and DTB live in the first pages: read and
        // write back, the contents stay.
        write64(a, read64(a));
        a += PAGE;
    }
    el1_rt::smccc::system_off()
}
