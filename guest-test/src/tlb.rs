//! `test=tlb pages=IPA,IPA marker=M`: pages the host reads and then loses.
//! For each page in turn: fill it (the word at IPA `a` holds `M ^ a`),
//! MEM_SHARE it and yield, so the host reads it and caches the mapping;
//! then MEM_UNSHARE it and yield, so the host reads again and must abort.
//! Each yield reports the memory calls that succeeded so far (the host
//! checks it is at the step it expects).

use el1_rt::probe::{read64, write64};
use hyp_abi::services;

use crate::abi::{call, share, unshare};
use crate::tests::Tally;

const PAGE: u64 = 4096;

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// (pages, marker) from the bootargs, or None if they do not name two
/// page-aligned pages and a marker.
fn parse(args: &str) -> Option<([u64; 2], u64)> {
    let arg = |k: &str| args.split_ascii_whitespace().find_map(|t| t.strip_prefix(k));
    let (a, b) = arg("pages=")?.split_once(',')?;
    let pages = [hex(a)?, hex(b)?];
    let marker = hex(arg("marker=")?)?;
    pages.iter().all(|p| p.is_multiple_of(PAGE)).then_some((pages, marker))
}

fn yield_to_host(calls: u64) {
    call(services::YIELD, [calls, 0, 0]);
}

pub fn tlb(t: &mut Tally, args: &str) {
    let Some((pages, marker)) = parse(args) else {
        t.check(false, "tlb: the bootargs name two pages and a marker");
        return;
    };
    let mut calls = 0;
    for (i, &p) in pages.iter().enumerate() {
        let n = i + 1;
        for a in (p..p + PAGE).step_by(8) {
            write64(a, marker ^ a);
        }
        let ok = share(p) == 0;
        calls += ok as u64;
        t.check(ok, &alloc::format!("tlb: MEM_SHARE of page {n}"));
        yield_to_host(calls);
        let ok = unshare(p) == 0;
        calls += ok as u64;
        t.check(ok, &alloc::format!("tlb: MEM_UNSHARE of page {n}"));
        yield_to_host(calls);
        let kept = (p..p + PAGE).step_by(8).all(|a| read64(a) == marker ^ a);
        t.check(
            kept,
            &alloc::format!("tlb: page {n} kept its contents through the share, the host's reads and the unshare"),
        );
    }
}
