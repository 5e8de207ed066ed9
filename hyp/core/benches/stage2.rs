//! Host-side benchmark of the stage-2 core (criterion): nanoseconds per
//! share/unshare with and without splitting and merging blocks, and the table
//! pages a block-mapped 1 GiB guest needs. Run: `cargo bench -p hyp-core`.

use std::alloc::{alloc_zeroed, dealloc, Layout};

use criterion::{criterion_group, criterion_main, Criterion};

use hyp_core::mm::env::{MmEnv, S2Id};
use hyp_core::mm::mem_protect::host_guest::*;
use hyp_core::mm::mem_protect::*;
use hyp_core::mm::pgtable::Stage2;
use hyp_core::mm::region::Region;

/// Table pages from the heap (their addresses serve as PAs); barriers, TLB
/// and cache maintenance and scrubbing are no-ops.
struct BenchEnv;

impl MmEnv for BenchEnv {
    fn alloc_table(&mut self) -> Option<u64> {
        self.alloc_root(1)
    }
    fn free_table(&mut self, pa: u64) {
        self.free_root(pa, 1)
    }
    fn alloc_root(&mut self, pages: usize) -> Option<u64> {
        let l = Layout::from_size_align(pages * 4096, pages * 4096).ok()?;
        // SAFETY: non-zero layout.
        Some(unsafe { alloc_zeroed(l) } as u64)
    }
    fn free_root(&mut self, pa: u64, pages: usize) {
        let l = Layout::from_size_align(pages * 4096, pages * 4096).unwrap();
        // SAFETY: allocated with this layout.
        unsafe { dealloc(pa as *mut u8, l) }
    }
    fn table_ptr(&self, pa: u64) -> *mut u64 {
        pa as *mut u64
    }
    unsafe fn init_pte(&mut self, ptep: *mut u64, val: u64) {
        // SAFETY: ptep points into a live heap page (MmEnv::init_pte contract).
        unsafe { core::ptr::write(ptep, val) }
    }
    fn publish_barrier(&mut self) {}
    unsafe fn write_pte(&mut self, _: &S2Id, ptep: *mut u64, _: u64, _: u8, val: u64) {
        // SAFETY: ptep points into a live heap page (MmEnv::write_pte contract).
        unsafe { core::ptr::write_volatile(ptep, val) }
    }
    fn tlbi_ipa(&mut self, _: &S2Id, _: u64, _: u8) {}
    fn tlbi_vmid(&mut self, _: &S2Id) {}
    fn scrub(&mut self, _: u64, _: u64) {}
    fn dcache_clean_inval_poc(&mut self, _: u64, _: u64) {}
    fn icache_inval_pou(&mut self, _: u64, _: u64) {}
}

const G: u64 = 1 << 30;
const M2: u64 = 2 << 20;
const K4: u64 = 4096;

struct Setup {
    env: BenchEnv,
    host: HostMm,
    guest: GuestMm,
}

/// A guest with `size` bytes donated at PA 4 GiB → IPA 1 GiB.
fn setup(size: u64) -> Setup {
    let mut env = BenchEnv;
    let host_pgt = Stage2::new(&mut env, 40, Some(0)).unwrap();
    let host = HostMm::new(host_pgt, vec![Region { base: 4 * G, size: 4 * G }], vec![]);
    let guest = GuestMm { pgt: Stage2::new(&mut env, 40, Some(1)).unwrap(), handle: 1 };
    let mut s = Setup { env, host, guest };
    host_donate_guest(&mut s.env, &mut s.host, &mut s.guest, Pa(4 * G), Ipa(G), size).unwrap();
    s
}

fn share_unshare(s: &mut Setup, ipa: u64) {
    guest_share_host(&mut s.env, &mut s.host, &mut s.guest, Ipa(ipa), K4).unwrap();
    guest_unshare_host(&mut s.env, &mut s.host, &mut s.guest, Ipa(ipa), K4).unwrap();
}

fn bench(c: &mut Criterion) {
    // Table pages of a block-mapped 1 GiB guest, before and after one share.
    let mut s = setup(G);
    let before = (s.guest.pgt.table_pages(), s.host.pgt.table_pages());
    guest_share_host(&mut s.env, &mut s.host, &mut s.guest, Ipa(G + 5 * K4), K4).unwrap();
    let during = (s.guest.pgt.table_pages(), s.host.pgt.table_pages());
    guest_unshare_host(&mut s.env, &mut s.host, &mut s.guest, Ipa(G + 5 * K4), K4).unwrap();
    let after = (s.guest.pgt.table_pages(), s.host.pgt.table_pages());
    println!(
        "1 GiB guest, table pages below the root (guest, host): block-mapped {:?}, one 4K page shared {:?}, unshared again {:?}; a 4K-only map needs {} guest pages",
        before, during, after, 1 + 512
    );

    let mut g = c.benchmark_group("stage2");
    // 4K share+unshare where the block is already split (a neighbour stays shared).
    let mut s = setup(4 * M2);
    guest_share_host(&mut s.env, &mut s.host, &mut s.guest, Ipa(G + M2), K4).unwrap();
    g.bench_function("share+unshare 4K, already split", |b| b.iter(|| share_unshare(&mut s, G + M2 + 7 * K4)));
    // Each share splits a 2M block (guest and host side), each unshare merges it.
    let mut s = setup(4 * M2);
    g.bench_function("share+unshare 4K, 2M split+merge", |b| b.iter(|| share_unshare(&mut s, G + 2 * M2 + 7 * K4)));
    // Each share splits a 1G block two levels deep; unshare merges both.
    let mut s = setup(G);
    g.bench_function("share+unshare 4K, 1G split+merge", |b| b.iter(|| share_unshare(&mut s, G + 300 * M2 + 7 * K4)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
