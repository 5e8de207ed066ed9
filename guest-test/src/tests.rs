//! The guest's scenarios. Each check prints a PASS/FAIL line; the tally goes
//! to the host at the end.
//!
//! Over 600 lines: one scenario (`test=guest-tests`, and `demo`), its
//! checks in the order `all` runs them over one guest's memory (MMIO_GUARD
//! last: once enrolled, only the guarded PL011 page is MMIO); the next
//! split is the memory checks (share, pins, blocks, relinquish) into a
//! file of their own.

use el1_rt::println;
use el1_rt::probe::{expect_abort, read64, write64};
use hyp_abi::errno::{EBUSY, EPERM};
use hyp_abi::{arch, guest, psci, services};

use crate::abi::*;

const RAM: u64 = 0x4000_0000;
const PAGE: u64 = 4096;
const SZ_2M: u64 = 2 << 20;
const OK: i64 = 0;
const NOT_SUPPORTED: i64 = -1;
const INVALID: i64 = -3;

pub struct Tally {
    passed: u64,
    failed: u64,
    /// Bytes given back with MEM_RELINQUISH.
    pub relinquished: u64,
    pub mem: u64,
}

impl Tally {
    pub fn new(mem: u64) -> Self {
        Tally { passed: 0, failed: 0, relinquished: 0, mem }
    }
    pub fn check(&mut self, ok: bool, what: &str) {
        if ok {
            self.passed += 1;
            println!("PASS {}", what);
        } else {
            self.failed += 1;
            println!("FAIL {}", what);
        }
    }
    pub fn eq(&mut self, got: i64, want: i64, what: &str) {
        if got != want {
            println!("  got {}, want {}", got, want);
        }
        self.check(got == want, what);
    }
    pub fn finish(&self) -> ! {
        println!("guest: {} passed, {} failed", self.passed, self.failed);
        call(services::HOST_RESULT, [self.passed, self.failed, self.relinquished]);
        el1_rt::smccc::system_off()
    }
}

/// HOST_DONATE_ELSEWHERE of my page `p`: the hyp refuses (EPERM). A host
/// that cannot even name my page for another VM (the Linux host: its
/// driver donates only memory it allocated for that VM) answers
/// EOPNOTSUPP, and the check is skipped, saying so.
fn donate_elsewhere(t: &mut Tally, p: u64, what: &str) {
    const EOPNOTSUPP: i64 = 95;
    match call(services::HOST_DONATE_ELSEWHERE, [p, 0, 0])[0] as i64 {
        r if r == -EOPNOTSUPP => println!("SKIP {what}: this host has no way to try"),
        r => t.check(r == -EPERM, what),
    }
}

/// A page of ours, `n` 2M blocks into RAM (away from image and DTB).
fn page_in_block(n: u64, off: u64) -> u64 {
    RAM + n * SZ_2M + off * PAGE
}

/// The main story, narrated (the default `cargo xtask run`).
pub fn demo(t: &mut Tally) {
    let p = page_in_block(4, 3);
    println!("guest: hello from EL{}; all {} MiB of my memory are private", el1_rt::current_el(), t.mem >> 20);
    write64(p, 0x5ec2e7);
    t.check(host_read(p).is_none(), "the host cannot read my private page");
    let (pages0, level0) = s2_info(p);
    println!("guest: my stage-2 maps IPA {:#x} with a level-{} block ({} table pages)", p, level0, pages0);
    write64(p, 0x6f6c6c6568);
    t.eq(share(p), OK, "MEM_SHARE of one 4K page inside a 2M block");
    let (pages1, level1) = s2_info(p);
    println!("guest: after the share: level-{} page, {} table pages (the 2M block was split)", level1, pages1);
    t.check(level0 == 2 && level1 == 3 && pages1 == pages0 + 1, "the 2M block split only where needed");
    call(services::HOST_DUMP, [p, 0, 0]);
    let seen = host_read(p);
    match seen {
        Some(v) => println!("guest: the host reads my shared page in place: {:#x}", v),
        None => println!("guest: the host could not read my shared page"),
    }
    t.check(seen == Some(0x6f6c6c6568), "the host sees what I wrote (no copy)");
    t.eq(host_pin(p, true), OK, "the host takes an exclusive pin on the shared page");
    println!("guest: MEM_UNSHARE while the host holds its pin...");
    t.eq(unshare(p), OK, "MEM_UNSHARE completes once the host drops its pin");
    let (pending, _) = exit_counts();
    t.check(pending == 1, "the unshare waited for the pin (one UNSHARE_PENDING exit)");
    t.check(host_read(p).is_none(), "after MEM_UNSHARE the host cannot read the page");
    t.check(read64(p) == 0x6f6c6c6568, "the contents stayed in place");
    let (pages2, level2) = s2_info(p);
    println!("guest: after the unshare: level-{} block, {} table pages (merged back)", level2, pages2);
    t.check(level2 == 2 && pages2 == pages0, "the 2M block was merged back");
    call(services::HOST_DUMP, [p, 0, 0]);
}

/// ID_AA64PFR0_EL1 and ID_AA64MMFR1_EL1 as this guest sees them.
fn id_pfr0_mmfr1() -> (u64, u64) {
    let (pfr0, mmfr1): (u64, u64);
    // SAFETY: reads of two ID registers (trapped and answered by the hyp).
    unsafe {
        core::arch::asm!("mrs {0}, id_aa64pfr0_el1", "mrs {1}, id_aa64mmfr1_el1", out(reg) pfr0, out(reg) mmfr1,
            options(nomem, nostack))
    };
    (pfr0, mmfr1)
}

/// SMCCC_ARCH_FEATURES of ARCH_WORKAROUND_1/2/3 (docs/abi.md): "not
/// needed" (1) where the CPU proves it, NOT_SUPPORTED otherwise, never
/// SUCCESS (the hyp implements none of them). The guest's own ID view
/// decides what to expect: CSV2 [59:56] (capped at 1 in it: CSV2_3 is
/// hidden) and ECBHB [63:60].
fn spectre_workarounds(t: &mut Tally) {
    let (pfr0, mmfr1) = id_pfr0_mmfr1();
    let csv2 = (pfr0 >> 56) & 0xf;
    let ecbhb = (mmfr1 >> 60) & 0xf;
    let ask = |fid: u32| call(arch::SMCCC_ARCH_FEATURES, [fid as u64, 0, 0])[0] as i64;
    println!("guest: ID view CSV2 {}, ECBHB {}", csv2, ecbhb);
    let wa1 = if csv2 >= 1 { arch::WORKAROUND_UNAFFECTED } else { NOT_SUPPORTED };
    t.eq(ask(arch::ARCH_WORKAROUND_1), wa1, "ARCH_FEATURES(ARCH_WORKAROUND_1): 1 with CSV2, else NOT_SUPPORTED");
    t.eq(ask(arch::ARCH_WORKAROUND_2), NOT_SUPPORTED, "ARCH_FEATURES(ARCH_WORKAROUND_2) is NOT_SUPPORTED");
    let wa3 = ask(arch::ARCH_WORKAROUND_3);
    let want3 = match (ecbhb, csv2) {
        (1.., _) => wa3 == arch::WORKAROUND_UNAFFECTED,
        (0, 0) => wa3 == NOT_SUPPORTED,
        // CSV2_3 (hidden from this view) may make it 1.
        _ => wa3 == arch::WORKAROUND_UNAFFECTED || wa3 == NOT_SUPPORTED,
    };
    println!("guest: ARCH_FEATURES(ARCH_WORKAROUND_3) = {}", wa3);
    t.check(want3, "ARCH_FEATURES(ARCH_WORKAROUND_3): 1 with ECBHB, NOT_SUPPORTED without CSV2, never SUCCESS");
}

fn discovery(t: &mut Tally) {
    let v = call(arch::SMCCC_VERSION, [0; 3]);
    t.eq(v[0] as i64, 0x10001, "SMCCC_VERSION is 1.1");
    let uid = call(guest::CALL_UID, [0; 3]);
    t.check(
        [uid[0] as u32, uid[1] as u32, uid[2] as u32, uid[3] as u32] == guest::KVM_UID,
        "VENDOR_HYP_CALL_UID answers the KVM UID",
    );
    let f = call(guest::KVM_FEATURES, [0; 3])[0];
    t.check(
        f & (1 << 2) != 0 && f & (1 << 3) != 0 && f & (1 << 4) != 0,
        "KVM_FEATURES has MEMINFO, MEM_SHARE, MEM_UNSHARE",
    );
    t.eq(call(guest::HYP_MEMINFO, [0; 3])[0] as i64, 4096, "HYP_MEMINFO is 4096");
    t.eq(
        call(guest::HYP_MEMINFO, [1, 0, 0])[0] as i64,
        INVALID,
        "HYP_MEMINFO with a non-zero argument is INVALID_PARAMETER",
    );
    t.eq(call(psci::VERSION, [0; 3])[0] as i64, 0x10001, "PSCI_VERSION is 1.1");
    t.eq(call(psci::FEATURES, [psci::SYSTEM_OFF as u64, 0, 0])[0] as i64, 0, "PSCI_FEATURES(SYSTEM_OFF) is supported");
    t.eq(
        call(psci::FEATURES, [arch::SMCCC_VERSION as u64, 0, 0])[0] as i64,
        0,
        "PSCI_FEATURES(SMCCC_VERSION) is supported (Linux's test for SMCCC 1.1)",
    );
    t.eq(
        call(psci::CPU_ON, [1, 0, 0])[0] as i64,
        psci::INVALID_PARAMETERS,
        "PSCI CPU_ON of a vCPU this one-vCPU VM does not have is INVALID_PARAMETERS",
    );
    t.eq(call(psci::CPU_SUSPEND, [0; 3])[0] as i64, NOT_SUPPORTED, "PSCI CPU_SUSPEND is NOT_SUPPORTED");
    spectre_workarounds(t);
    t.eq(call(0xc600_0010, [0; 3])[0] as i64, NOT_SUPPORTED, "an unknown vendor call is NOT_SUPPORTED");
    t.eq(call(0x8100_0000, [0; 3])[0] as i64, NOT_SUPPORTED, "an unknown service is NOT_SUPPORTED");
    preserved(t, guest::HYP_MEMINFO, 0, PAGE as i64, "HYP_MEMINFO (the hyp's short guest-call entry)");
    preserved(t, guest::MEM_SHARE, 1, INVALID, "MEM_SHARE with x2 != 0");
}

/// SMCCC 1.1: a call returns x4-x17 as they were (no result there); this
/// hyp returns every register but x0 of these calls as it was, NZCV too.
/// Calls `fid` with x1 = 0, x2 = `x2`, x3 = 0; x0 must be `want`.
fn preserved(t: &mut Tally, fid: u32, x2: u64, want: i64, what: &str) {
    let (x0, kept) = call_keeps_regs(fid, [0, x2, 0]);
    t.check(kept && x0 == want, &alloc::format!("x1-x30 and NZCV survive {what}"));
}

fn share_roundtrip(t: &mut Tally) {
    let p = page_in_block(5, 7);
    write64(p, 0x1111);
    t.check(host_read(p).is_none(), "host read of a private page aborts");
    t.check(!host_write(p, 0xbad), "host write to a private page aborts");
    t.check(read64(p) == 0x1111, "the private page is untouched");
    let (r, kept) = call_keeps_regs(guest::MEM_SHARE, [p, 0, 0]);
    t.check(r == OK && kept, "MEM_SHARE (every register but x0 and NZCV intact)");
    t.check(host_read(p) == Some(0x1111), "host reads the guest's data in place");
    t.check(host_write(p, 0x2222), "host writes the shared page");
    t.check(read64(p) == 0x2222, "guest sees the host's write");
    t.eq(share(p), INVALID, "MEM_SHARE of an already shared page is INVALID_PARAMETER");
    let (r, kept) = call_keeps_regs(guest::MEM_UNSHARE, [p, 0, 0]);
    t.check(r == OK && kept, "MEM_UNSHARE (every register but x0 and NZCV intact)");
    t.check(host_read(p).is_none(), "host read after MEM_UNSHARE aborts");
    t.check(read64(p) == 0x2222, "contents preserved across unshare");
    t.eq(unshare(p), INVALID, "MEM_UNSHARE of a private page is INVALID_PARAMETER");
}

fn bad_arguments(t: &mut Tally) {
    let p = page_in_block(5, 9);
    t.eq(share(p + 8), INVALID, "MEM_SHARE of an unaligned IPA");
    t.eq(share(RAM + t.mem), INVALID, "MEM_SHARE outside guest memory");
    t.eq(share(0x0900_0000), INVALID, "MEM_SHARE of an MMIO address");
    t.eq(share(!0xfff_u64), INVALID, "MEM_SHARE of a huge IPA");
    t.eq(call(guest::MEM_SHARE, [p, 1, 0])[0] as i64, INVALID, "MEM_SHARE with x2 != 0");
    t.eq(call(guest::MEM_SHARE, [p, 0, 1])[0] as i64, INVALID, "MEM_SHARE with x3 != 0");
    t.eq(call(guest::MEM_UNSHARE, [p, 0, 5])[0] as i64, INVALID, "MEM_UNSHARE with x3 != 0");
    t.eq(relinquish(p + 1), INVALID, "MEM_RELINQUISH of an unaligned IPA");
    t.eq(relinquish(RAM + t.mem + PAGE), INVALID, "MEM_RELINQUISH outside guest memory");
    t.check(host_read(p).is_none(), "refused calls changed nothing: still private");
}

fn pins(t: &mut Tally) {
    let p = page_in_block(6, 1);
    t.eq(host_pin(p, false), -EPERM, "host pin of a private page is EPERM");
    t.eq(share(p), OK, "MEM_SHARE for the pin tests");
    // exclusive first
    t.eq(host_pin(p, true), OK, "exclusive pin on a shared page");
    t.eq(host_pin(p, false), -EBUSY, "shared pin while an exclusive pin is held is EBUSY");
    t.eq(host_pin(p, true), -EBUSY, "second exclusive pin is EBUSY");
    t.eq(host_unpin(p), OK, "drop the exclusive pin");
    // shared first
    t.eq(host_pin(p, false), OK, "shared pin");
    t.eq(host_pin(p, false), OK, "second shared pin");
    t.eq(host_pin(p, true), -EBUSY, "exclusive pin while shared pins exist is EBUSY");
    t.eq(host_unpin(p), OK, "drop one shared pin");
    t.eq(relinquish(p), INVALID, "MEM_RELINQUISH of a pinned page is refused");
    t.check(host_read(p).is_some(), "the refused relinquish changed nothing");
    // unshare while pinned: the call waits for the host
    let (before, _) = exit_counts();
    // (Declined by the short entry, exits with the full frame, re-issued.)
    let (r, kept) = call_keeps_regs(guest::MEM_UNSHARE, [p, 0, 0]);
    t.check(
        r == OK && kept,
        "MEM_UNSHARE of a pinned page completes after the host unpins, every register but x0 and NZCV intact",
    );
    let (after, _) = exit_counts();
    t.eq((after - before) as i64, 1, "the host saw exactly one UNSHARE_PENDING exit");
    t.check(host_read(p).is_none(), "the page is private after the pinned unshare");
    // A pin another part of the host took (not the VMM's): the host still
    // lets the guest progress.
    t.eq(share(p), OK, "MEM_SHARE again for a pin taken outside the VMM");
    t.eq(host_pin_foreign(p), OK, "the host pins the page outside the VMM's bookkeeping");
    let (before, _) = exit_counts();
    t.eq(unshare(p), OK, "MEM_UNSHARE completes when the pin is not the VMM's own");
    let (after, _) = exit_counts();
    t.eq((after - before) as i64, 1, "one UNSHARE_PENDING exit for the pin outside the VMM");
    t.check(host_read(p).is_none(), "the page is private after that unshare");
}

fn blocks(t: &mut Tally) {
    let p = page_in_block(8, 100);
    let (pages0, level0) = s2_info(p);
    t.eq(level0 as i64, 2, "donated 2M-aligned memory is mapped with 2M blocks");
    t.eq(share(p), OK, "MEM_SHARE inside a 2M block");
    let (pages1, level1) = s2_info(p);
    t.check(level1 == 3 && pages1 == pages0 + 1, "the 2M block is split into 4K pages: one table page");
    let (_, neighbour) = s2_info(p + SZ_2M);
    t.eq(neighbour as i64, 2, "the neighbouring 2M block is untouched");
    t.eq(share(p + PAGE), OK, "MEM_SHARE of a second page in the same block");
    t.eq(s2_info(p).0 as i64, pages1 as i64, "no further split for the second page");
    t.eq(unshare(p), OK, "MEM_UNSHARE of the first page");
    t.eq(s2_info(p).1 as i64, 3, "still split while one page is shared");
    t.eq(unshare(p + PAGE), OK, "MEM_UNSHARE of the second page");
    let (pages2, level2) = s2_info(p);
    t.check(level2 == 2 && pages2 == pages0, "the block is merged back and its table page freed");
}

fn relinquish_test(t: &mut Tally) {
    let p = page_in_block(9, 3);
    write64(p, 0xfeed);
    t.eq(relinquish(p), OK, "MEM_RELINQUISH of a private page");
    t.relinquished += PAGE;
    let (_, aborts0) = exit_counts();
    let got = expect_abort(|| {
        read64(p);
    });
    t.check(got.is_some_and(|(far, _)| far == p), "guest access to a relinquished page aborts");
    let (_, aborts1) = exit_counts();
    t.eq((aborts1 - aborts0) as i64, 1, "the host saw the guest-abort exit");
    t.check(host_read(p) == Some(0), "the host owns the relinquished page, scrubbed to zero");
    t.eq(relinquish(p), INVALID, "MEM_RELINQUISH twice is INVALID_PARAMETER");
    t.eq(share(p), INVALID, "MEM_SHARE of a relinquished page is INVALID_PARAMETER");
    let q = page_in_block(9, 4);
    t.eq(share(q), OK, "MEM_SHARE before relinquishing a shared page");
    t.eq(relinquish(q), OK, "MEM_RELINQUISH of an unpinned shared page");
    t.relinquished += PAGE;
    t.check(host_read(q) == Some(0), "the shared page came back to the host scrubbed");
}

fn no_memory(t: &mut Tally) {
    let beyond = RAM + t.mem + 16 * PAGE;
    let got = expect_abort(|| {
        read64(beyond);
    });
    t.check(got.is_some_and(|(far, _)| far == beyond), "access where the guest has no memory aborts");
    let got = expect_abort(|| write64(0x3000_0000, 1));
    // An MMIO write with no device goes to the host, which ignores it.
    t.check(got.is_none(), "MMIO write to an unemulated device goes to the host");
}

pub fn all(t: &mut Tally) {
    discovery(t);
    share_roundtrip(t);
    bad_arguments(t);
    pins(t);
    blocks(t);
    relinquish_test(t);
    no_memory(t);
    donate_elsewhere(t, page_in_block(5, 20), "the host cannot donate my page to another VM");
    // Last: once enrolled, only the guarded PL011 page is MMIO for us.
    mmio_guard(t);
}

/// MMIO_GUARD (Linux 6.12's single call): before the first guard every
/// access to the MMIO window exits to the host; after it only guarded
/// granules do and any other access aborts in the guest.
fn mmio_guard(t: &mut Tally) {
    const UART: u64 = 0x0900_0000;
    const NOWHERE: u64 = 0x3000_0000;
    let guard = |ipa: u64, x2: u64| call(guest::MMIO_GUARD, [ipa, x2, 0])[0] as i64;
    let f = call(guest::KVM_FEATURES, [0; 3])[0];
    t.check(f & (1 << 7) != 0, "KVM_FEATURES has MMIO_GUARD (bit 7)");
    t.eq(guard(UART + 8, 0), INVALID, "MMIO_GUARD of an unaligned IPA");
    t.eq(guard(RAM, 0), INVALID, "MMIO_GUARD of guest RAM");
    t.eq(guard(RAM + t.mem, 0), INVALID, "MMIO_GUARD above guest RAM");
    t.eq(guard(!0xfff_u64, 0), INVALID, "MMIO_GUARD of a huge IPA");
    t.eq(guard(UART, 1), INVALID, "MMIO_GUARD with x2 != 0");
    t.eq(call(guest::MMIO_GUARD, [UART, 0, 1])[0] as i64, INVALID, "MMIO_GUARD with x3 != 0");
    t.check(
        expect_abort(|| {
            read64(NOWHERE);
        })
        .is_none(),
        "refused guards enrol nothing: an unguarded MMIO read still goes to the host",
    );
    // The checks print through the PL011: guard it first, then it keeps
    // working; a second guard of the same granule is no error.
    t.eq(guard(UART, 0), OK, "MMIO_GUARD of the PL011's granule");
    t.eq(guard(UART, 0), OK, "MMIO_GUARD of the same granule again");
    let got = expect_abort(|| {
        read64(NOWHERE);
    });
    t.check(got.is_some_and(|(far, _)| far == NOWHERE), "after a guard, a read of an unguarded MMIO IPA aborts");
    let got = expect_abort(|| write64(UART + PAGE, 1));
    t.check(got.is_some_and(|(far, _)| far == UART + PAGE), "the granule after the guarded one aborts too");
}

/// A 1G guest: shares inside a 1G block split it two levels deep and merge back.
pub fn block1g(t: &mut Tally) {
    let p = RAM + (300 << 20) + 5 * PAGE;
    let (pages0, level0) = s2_info(p);
    t.eq(level0 as i64, 1, "1G-aligned guest memory is mapped with a 1G block");
    t.eq(pages0 as i64, 0, "no table pages below the root for a 1G block");
    t.eq(share(p), OK, "MEM_SHARE inside the 1G block");
    let (pages1, level1) = s2_info(p);
    t.check(level1 == 3 && pages1 == pages0 + 2, "1G → 2M → 4K: two table pages");
    t.eq(s2_info(p + SZ_2M).1 as i64, 2, "the rest of the 1G block stays in 2M blocks");
    t.check(host_read(p).is_some(), "the host sees the shared page");
    t.eq(unshare(p), OK, "MEM_UNSHARE inside the 1G block");
    let (pages2, level2) = s2_info(p);
    t.check(level2 == 1 && pages2 == pages0, "merged back to one 1G block");
}

/// Run in each of two VMs at once.
pub fn isolation(t: &mut Tally) {
    let p = page_in_block(3, 0);
    write64(p, 0xa5a5);
    t.check(host_read(p).is_none(), "my memory is private from the host");
    donate_elsewhere(t, p, "the host cannot give my page to another VM");
    let beyond = RAM + t.mem;
    t.check(
        expect_abort(|| {
            read64(beyond);
        })
        .is_some(),
        "I cannot reach memory beyond mine (another VM's or anyone's)",
    );
    t.check(read64(p) == 0xa5a5, "my data is intact");
}

fn counters() -> el1_rt::bench::Counters {
    let r = call(services::HOST_COUNTERS, [0; 3]);
    [r[0], r[1], r[2], r[3]]
}

/// Measures share then unshare of `p`, N times each, alternating.
fn share_unshare(t: &mut Tally, p: u64, what: &str) {
    share_unshare_n(t, p, what, 1000)
}

fn share_unshare_n(t: &mut Tally, p: u64, what: &str, n: u64) {
    let names = (alloc::format!("mem_share 4K ({what})"), alloc::format!("mem_unshare 4K ({what})"));
    share_unshare_rows(t, p, (&names.0, &names.1), n)
}

fn share_unshare_rows(t: &mut Tally, p: u64, (share_row, unshare_row): (&str, &str), n: u64) {
    use el1_rt::bench::{diff, report};
    use el1_rt::pmu;
    #[allow(non_snake_case)]
    let N = n;
    let (mut s, mut u) = ((0, 0), (0, 0));
    let mut ok = true;
    for _ in 0..N {
        let a = pmu::read();
        ok &= share(p) == OK;
        let b = pmu::read();
        ok &= unshare(p) == OK;
        let c = pmu::read();
        s = (s.0 + b.0 - a.0, s.1 + b.1 - a.1);
        u = (u.0 + c.0 - b.0, u.1 + c.1 - b.1);
    }
    // Software counters of one more share and one more unshare.
    let c0 = counters();
    ok &= share(p) == OK;
    let c1 = counters();
    ok &= unshare(p) == OK;
    let c2 = counters();
    let d1 = diff(c0, c1).map(|x| x * N);
    let d2 = diff(c1, c2).map(|x| x * N);
    report(share_row, N, s, d1);
    report(unshare_row, N, u, d2);
    t.check(ok, share_row);
}

/// The guest half of `cargo xtask bench` (a 1 GiB guest): `n` repetitions
/// per row, only the rows whose name contains `only` (the host's
/// `shim.bench_n=` and `shim.bench_only=`).
pub fn bench(t: &mut Tally, n: u64, only: Option<&str>) {
    use el1_rt::bench::{diff, report};
    use el1_rt::pmu;
    #[allow(non_snake_case)]
    let N = n.max(1);
    let want = |name: &str| only.is_none_or(|w| name.contains(w));
    let pair =
        |what: &str| want(&alloc::format!("mem_share 4K ({what})")) || want(&alloc::format!("mem_unshare 4K ({what})"));
    pmu::init();
    let (p1g, a, p2m) = (RAM + (300 << 20) + 5 * PAGE, RAM + (600 << 20), RAM + (700 << 20) + 3 * PAGE);
    t.eq(s2_info(p1g).1 as i64, 1, "bench guest mapped with a 1G block");
    if pair("1G split/merge") {
        share_unshare_n(t, p1g, "1G split/merge", N);
    }
    // Keep a page shared: the 1G block stays split into 2M blocks, and a's
    // 2M block into pages.
    t.eq(share(a), OK, "keep a page shared");
    if pair("2M split/merge") {
        share_unshare_n(t, p2m, "2M split/merge", N);
    }
    if pair("already 4K") {
        share_unshare_n(t, a + PAGE, "already 4K", N);
    }
    if want("guest hvc (HYP_MEMINFO)") {
        let c0 = counters();
        let m = pmu::measure(N, |_| {
            let _ = call(guest::HYP_MEMINFO, [0; 3]);
        });
        report("guest hvc (HYP_MEMINFO)", N, m, diff(c0, counters()));
    }
    if want("mmio exit round trip (uart write)") {
        mmio_round_trips("mmio exit round trip (uart write)", N);
    }
    // 15 pages more shared after `a`: a 64 KiB I/O buffer for the host's
    // 16-page range-pin row (only a failure is reported).
    let sixteen = (1..16).all(|k| share(a + k * PAGE) == OK);
    call(services::BENCH_PIN, [a, if sixteen { 16 } else { 1 }, 0]);
    for k in 1..16 {
        let _ = unshare(a + k * PAGE);
    }
    if !sixteen {
        t.check(false, "share 15 more pages for the 64 KiB range-pin row");
    }
    t.eq(unshare(a), OK, "release the kept page");
}

/// One 4K share/unshare in an already split block, in a guest of any size.
pub fn bench_scale(t: &mut Tally, label: &str) {
    el1_rt::pmu::init();
    let a = RAM + t.mem / 2;
    t.eq(share(a), OK, "keep a page shared");
    share_unshare(t, a + PAGE, &alloc::format!("already 4K, {label} guest"));
    t.eq(unshare(a), OK, "release the kept page");
}

/// `n` MMIO exits to the host and back (a UART write), one row.
fn mmio_round_trips(name: &str, n: u64) {
    use el1_rt::bench::{diff, report};
    let c0 = counters();
    let m = el1_rt::pmu::measure(n, |_| write64_mmio(0x0900_0000, b'\r' as u32));
    report(name, n, m, diff(c0, counters()));
}

/// `test=bench-vms label=K`: the guest rows of the bench's scale rows, run
/// while K VMs exist (this one the newest): an MMIO exit round trip (a
/// guest stage-2 fault the host handles) and a 4K MEM_SHARE / MEM_UNSHARE
/// in an already split block.
pub fn bench_vms(t: &mut Tally, k: &str, n: u64, only: Option<&str>) {
    let vms = if k == "1" { alloc::format!("{k} VM") } else { alloc::format!("{k} VMs") };
    let name = |op: &str| alloc::format!("scale: {op} ({vms})");
    let want = |row: &str| only.is_none_or(|w| row.contains(w));
    el1_rt::pmu::init();
    if want(&name("mmio exit round trip")) {
        mmio_round_trips(&name("mmio exit round trip"), n);
    }
    let (s, u) = (name("mem_share 4K"), name("mem_unshare 4K"));
    if want(&s) || want(&u) {
        let a = RAM + t.mem / 2;
        t.eq(share(a), OK, "keep a page shared");
        share_unshare_rows(t, a + PAGE, (&s, &u), n);
        t.eq(unshare(a), OK, "release the kept page");
    }
}

fn write64_mmio(addr: u64, v: u32) {
    // SAFETY: a 32-bit store to the emulated UART's data register.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) };
}

/// A hostile guest: random guest calls with random arguments, yielding to
/// the host every 20 calls. Pages it may give away lie in the upper half of
/// its memory, away from its image, stack and DTB.
pub fn fuzz(t: &mut Tally, seed: u64) -> ! {
    let mut rng = el1_rt::rand::Rng::new(seed);
    let half = RAM + t.mem / 2;
    let mut calls = 0u64;
    // No PSCI CPU_OFF among the calls: it would power this, the only vCPU,
    // off for good and end the fuzzing after a few calls.
    // MMIO_GUARD is among the calls: guard the PL011 first so that whatever
    // else gets guarded, the console stays ours.
    t.eq(call(guest::MMIO_GUARD, [0x0900_0000, 0, 0])[0] as i64, OK, "fuzz: MMIO_GUARD of the PL011");
    let fids = [
        guest::MEM_SHARE,
        guest::MEM_UNSHARE,
        guest::MEM_RELINQUISH,
        guest::HYP_MEMINFO,
        guest::CALL_UID,
        guest::KVM_FEATURES,
        guest::MMIO_GUARD,
        arch::SMCCC_VERSION,
        arch::SMCCC_ARCH_FEATURES,
        psci::VERSION,
        psci::FEATURES,
        psci::CPU_ON,
    ];
    loop {
        for _ in 0..20 {
            let ipa = match rng.below(6) {
                0..=3 => half + rng.below(t.mem / 2 / PAGE) * PAGE,
                4 => rng.next_u64(),
                _ => (half + rng.below(t.mem / 2)) | 1,
            };
            let fid = if rng.chance(1, 10) { rng.next_u64() as u32 } else { rng.pick(&fids) };
            let (x2, x3) = if rng.chance(1, 10) { (rng.next_u64(), rng.below(2)) } else { (0, 0) };
            let r = call(fid, [ipa, x2, x3]);
            calls += 1;
            // Results are limited to the SMCCC codes (or a value for queries).
            let known = matches!(
                fid,
                guest::HYP_MEMINFO | guest::CALL_UID | guest::KVM_FEATURES | arch::SMCCC_VERSION | psci::VERSION
            );
            if !known && ![0u64, -1i64 as u64, -2i64 as u64, -3i64 as u64].contains(&r[0]) {
                t.check(false, "guest call answered with an SMCCC code");
            }
        }
        call(services::YIELD, [calls, 0, 0]);
    }
}

/// Is every byte of the first `n` of `ipa` equal to `b`?
fn filled(ipa: u64, n: u64, b: u8) -> bool {
    (0..n).step_by(8).all(|o| read64(ipa + o) == u64::from_ne_bytes([b; 8]))
}

fn fill(ipa: u64, b: u8) {
    for o in (0..64).step_by(8) {
        write64(ipa + o, u64::from_ne_bytes([b; 8]));
    }
}

/// DMA isolation from the guest's side (`shim.test=edu`): the host's PCI
/// device may write our pages only while we share them and the host pins
/// them; each case the host also checks (the SMMU's event names the
/// device's stream and the page).
pub fn dma(t: &mut Tally) {
    const BLOCKED: i64 = 1;
    let private = page_in_block(4, 1);
    let shared = page_in_block(4, 2);
    fill(private, 0x11);
    t.eq(host_dma(private, 0xa5), BLOCKED, "dma: a DMA into my private page is blocked");
    t.check(filled(private, 64, 0x11), "dma: my private page still holds my data");
    t.eq(share(shared), OK, "dma: MEM_SHARE of a page");
    fill(shared, 0x22);
    t.eq(host_dma(shared, 0xb6), BLOCKED, "dma: shared but not pinned: the DMA is blocked");
    t.check(filled(shared, 64, 0x22), "dma: my shared page is unchanged");
    t.eq(host_pin(shared, false), OK, "dma: the host pins the shared page");
    t.eq(host_dma(shared, 0xc7), OK, "dma: shared and pinned: the DMA lands");
    t.check(filled(shared, 8, 0xc7) && filled(shared + 8, 56, 0x22), "dma: I read what the device wrote");
    t.eq(unshare(shared), OK, "dma: MEM_UNSHARE completes once the host unpins");
    let (pending, _) = exit_counts();
    t.check(pending == 1, "dma: the unshare waited for the pin (one UNSHARE_PENDING exit)");
    fill(shared, 0x33);
    t.eq(host_dma(shared, 0xd8), BLOCKED, "dma: after MEM_UNSHARE a DMA into the page is blocked");
    t.check(filled(shared, 64, 0x33), "dma: the page holds my data, private again");
}
