//! The host's pages for its VMs' tables: the hyp takes every table of a
//! VM's stage-2 from pages its host donated for that VM (VM_TOPUP,
//! docs/abi.md) and gives them back, zeroed, at VM_DESTROY. The shim sets
//! pages aside for that at start-up ([`init`]), tops a VM up before each
//! donation by the tables the donation maps ([`for_donation`]:
//! `hyp_abi::host::donation_table_pages`, its blocks' tables), and by what
//! a TOPUP exit asks when a guest's call splits a block ([`topup`]), and
//! takes a VM's pages back when it is destroyed ([`destroyed`]).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use hyp_abi::errno::{EINVAL, ENOMEM};
use hyp_abi::host as abi;
use spin::Mutex;

use crate::mem::HostMem;

const PAGE: u64 = 4096;

/// Pages set aside: enough for the tables of 4 GiB of guest memory split
/// down to pages, more than every scenario gives its VMs at once.
pub const POOL_BYTES: u64 = 8 << 20;

struct Pool {
    /// Free runs: (first page, pages).
    free: Vec<(u64, u64)>,
    /// The runs each VM was given.
    given: BTreeMap<u64, Vec<(u64, u64)>>,
    /// Each VM's IPA bits (VM_CREATE's x1), from [`created`].
    bits: BTreeMap<u64, u8>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { free: Vec::new(), given: BTreeMap::new(), bits: BTreeMap::new() });

/// Sets [`POOL_BYTES`] of host memory aside for VMs' tables, at the top
/// of RAM.
pub fn init(hm: &mut HostMem) {
    if let Some(pa) = hm.alloc_top(POOL_BYTES, PAGE) {
        POOL.lock().free.push((pa, POOL_BYTES / PAGE));
    }
}

/// Donates `pages` pages to VM `h`'s memcache (VM_TOPUP, a call per run of
/// the pool's free pages): 0, or the first refusal's -errno (the pages of
/// that run stay the shim's), -ENOMEM if the pool has too few.
pub fn topup(h: u64, pages: u64) -> i64 {
    let mut p = POOL.lock();
    let mut left = pages;
    while left > 0 {
        let Some(&(pa, n)) = p.free.last() else {
            return -ENOMEM;
        };
        let take = n.min(left);
        let r = vm_topup(h, pa + (n - take) * PAGE, take);
        if r != 0 {
            return r;
        }
        let last = p.free.len() - 1;
        if take == n {
            p.free.pop();
        } else {
            p.free[last].1 -= take;
        }
        p.given.entry(h).or_default().push((pa + (n - take) * PAGE, take));
        left -= take;
    }
    0
}

/// VM_TOPUP: 0 or -errno. (Called from `hyp`'s wrappers: it makes the
/// call itself rather than through them.)
fn vm_topup(h: u64, pa: u64, pages: u64) -> i64 {
    let r = el1_rt::smccc::hvc8(abi::VM_TOPUP, [h, pa, pages, 0, 0, 0, 0]);
    if r[0] != 0 {
        r[0] as i64
    } else {
        r[1] as i64
    }
}

/// VM `h` was created with `ipa_bits` (VM_CREATE's x1, 0: 40): the
/// shape of its stage-2, which [`for_donation`] counts tables for.
pub fn created(h: u64, ipa_bits: u8) {
    POOL.lock().bits.insert(h, ipa_bits);
}

/// Before DONATE_GUEST of `[pa, pa + size)` at `ipa` to VM `h`: tops it up
/// by the table pages the donation takes where the VM has no tables yet
/// (`donation_table_pages`: the tables of the largest blocks it maps; a
/// VM [`created`] does not know is counted as a 48-bit one, never too
/// few). A guest's call that later splits a block exits TOPUP for its
/// tables ([`topup`]). What the pool cannot give is left to
/// DONATE_GUEST's own answer (its argument checks come first; ENOMEM if
/// its tables are short).
pub fn for_donation(h: u64, pa: u64, ipa: u64, size: u64) {
    if size == 0 || !size.is_multiple_of(PAGE) || ipa.checked_add(size).is_none() {
        return;
    }
    let bits = POOL.lock().bits.get(&h).copied().unwrap_or(48);
    let n = abi::donation_table_pages(bits, pa, ipa, size);
    if n > 0 && n <= POOL_BYTES / PAGE {
        let _ = topup(h, n);
    }
}

/// VM `h` was destroyed, giving back `pages` table pages: they are the
/// shim's again. -EINVAL if that is not what the shim gave it.
pub fn destroyed(h: u64, pages: u64) -> i64 {
    let mut p = POOL.lock();
    p.bits.remove(&h);
    let runs = p.given.remove(&h).unwrap_or_default();
    let given: u64 = runs.iter().map(|r| r.1).sum();
    p.free.extend(runs);
    if given == pages {
        0
    } else {
        -EINVAL
    }
}
