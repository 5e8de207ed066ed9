//! Host tests of the EL2 stage-1 plan, descriptors, tables and window (`mm/stage1.rs`).

use super::*;
use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::vec;
use std::collections::BTreeMap;

/// Table pages from the host heap; "PA" = host address.
struct HostPages(Vec<u64>);

impl TableAlloc for HostPages {
    fn alloc(&mut self) -> Option<u64> {
        // SAFETY: non-zero layout.
        let p = unsafe { alloc_zeroed(Layout::from_size_align(4096, 4096).unwrap()) } as u64;
        self.0.push(p);
        (p != 0).then_some(p)
    }
    fn ptr(&self, pa: u64) -> *mut u64 {
        assert!(self.0.contains(&pa), "not a table page");
        pa as *mut u64
    }
}

impl Drop for HostPages {
    fn drop(&mut self) {
        for p in &self.0 {
            // SAFETY: allocated in `alloc` with this layout.
            unsafe { dealloc(*p as *mut u8, Layout::from_size_align(4096, 4096).unwrap()) };
        }
    }
}

/// QEMU virt with 1 GiB: the image at 0x40200000, the carve-out to
/// 0x42200000, PL011, GIC distributor and redistributors.
fn virt() -> (Image, (u64, u64), Vec<Device>) {
    let img =
        Image { start: 0x4020_0000, rodata: 0x4023_4000, data: 0x4024_0000, stacks: 0x4025_3000, end: 0x402d_3000 };
    let devs = vec![("uart", 0x0900_0000, 0x1000), ("gicd", 0x0800_0000, 0x1_0000), ("gicr", 0x080a_0000, 0xf6_0000)];
    (img, (0x402d_3000, 0x4220_0000), devs)
}

fn build(regions: &[Region]) -> (Tables, HostPages) {
    let mut a = HostPages(Vec::new());
    let mut t = Tables::new(&mut a).unwrap();
    for r in regions {
        t.map(&mut a, r.start, r.start, r.end - r.start, r.perm).unwrap();
    }
    (t, a)
}

#[test]
fn descriptors() {
    // Page, RW, normal, inner shareable, AF, XN.
    assert_eq!(leaf(0x4000_1000, Perm::ReadWrite, 3), 0x0040_0000_4000_1747);
    // 2 MiB block, read-only executable.
    assert_eq!(leaf(0x4020_0000, Perm::Exec, 2), 0x0000_0000_4020_07c5);
    // Device page: AttrIndx 0, no shareability bits, XN.
    assert_eq!(leaf(0x0900_0000, Perm::Device, 3), 0x0040_0000_0900_0443);
    assert_eq!(table_desc(0x1234_5000), 0x1234_5003);
    for p in [Perm::Exec, Perm::ReadOnly, Perm::ReadWrite, Perm::Device] {
        for level in 1..=3 {
            let d = leaf(0x4000_0000, p, level);
            assert_eq!(perm_of(d, level), Some(p));
            assert!(!(writable(d) && executable(d)), "{p:?} is W and X");
        }
    }
    assert!(executable(leaf(0, Perm::Exec, 3)) && !writable(leaf(0, Perm::Exec, 3)));
    assert!(writable(leaf(0, Perm::ReadWrite, 3)) && !executable(leaf(0, Perm::ReadWrite, 3)));
}

#[test]
fn plan_lists_sections_pool_and_devices() {
    let (img, pool, devs) = virt();
    let p = plan(&img, pool, &devs).unwrap();
    let got: Vec<(&str, u64, u64, Perm)> = p.iter().map(|r| (r.name, r.start, r.end, r.perm)).collect();
    assert_eq!(
        got,
        [
            ("gicd", 0x0800_0000, 0x0801_0000, Perm::Device),
            ("gicr", 0x080a_0000, 0x0900_0000, Perm::Device),
            ("uart", 0x0900_0000, 0x0900_1000, Perm::Device),
            ("text", 0x4020_0000, 0x4023_4000, Perm::Exec),
            ("rodata", 0x4023_4000, 0x4024_0000, Perm::ReadOnly),
            ("data+bss", 0x4024_0000, 0x4025_3000, Perm::ReadWrite),
            ("stacks", 0x4025_3000, 0x402d_3000, Perm::ReadWrite),
            ("pool", 0x402d_3000, 0x4220_0000, Perm::ReadWrite),
        ]
    );
}

#[test]
fn plan_refuses_bad_layouts() {
    let (img, pool, devs) = virt();
    let bad = Image { rodata: 0x4023_4010, ..img };
    assert_eq!(plan(&bad, pool, &devs).unwrap_err().0, "image section boundary not page-aligned");
    let bad = Image { data: 0x4023_0000, ..img };
    assert_eq!(plan(&bad, pool, &devs).unwrap_err().0, "image sections out of order");
    assert_eq!(plan(&img, (0x402d_0000, 0x4220_0000), &devs).unwrap_err().0, "pool overlaps the image");
    assert_eq!(plan(&img, (0x402d_3000, 0x402d_3000), &devs).unwrap_err().0, "pool not page-aligned or empty");
    let dev_in_ram = [("evil", 0x4100_0000, 0x1000)];
    assert_eq!(plan(&img, pool, &dev_in_ram).unwrap_err(), PlanError("device region overlaps hyp memory", 0x4100_0000));
    let in_window = [("high", WINDOW_BASE - 0x1000, 0x2000)];
    assert_eq!(plan(&img, pool, &in_window).unwrap_err().0, "region reaches the window");
    assert_eq!(plan(&img, pool, &[("empty", 0x0900_0000, 0)]).unwrap_err().0, "empty device region");
    // Overlapping and unaligned device regions are merged and rounded out.
    let p = plan(&img, pool, &[("a", 0x0900_0010, 0x10), ("b", 0x0900_0800, 0x1000)]).unwrap();
    assert_eq!((p[0].start, p[0].end), (0x0900_0000, 0x0900_2000));
}

#[test]
fn final_map_is_wx_free_and_exactly_the_plan() {
    let (img, pool, devs) = virt();
    let p = plan(&img, pool, &devs).unwrap();
    let (t, a) = build(&p);
    // Every leaf: identity, inside exactly one planned region with its
    // permission, never writable and executable at once.
    let mut covered: BTreeMap<u64, u64> = BTreeMap::new();
    t.for_each_leaf(&a, &mut |va, size, d, level| {
        assert_eq!(output(d), va, "identity");
        assert!(!(writable(d) && executable(d)), "W+X leaf at {va:#x}");
        let r = p.iter().find(|r| r.start <= va && va + size <= r.end).expect("leaf outside the plan");
        assert_eq!(perm_of(d, level), Some(r.perm), "{} at {va:#x}", r.name);
        covered.insert(va, size);
    });
    let bytes: u64 = covered.values().sum();
    assert_eq!(bytes, p.iter().map(|r| r.end - r.start).sum::<u64>(), "every planned byte mapped once");
    // 2 MiB blocks where the pool is aligned, pages elsewhere.
    assert_eq!(t.lookup(&a, 0x4100_0000).map(|(_, l)| l), Some(2));
    assert_eq!(t.lookup(&a, 0x402d_3000).map(|(_, l)| l), Some(3));
    assert_eq!(t.lookup(&a, 0x0840_0000).map(|(_, l)| l), Some(2), "GICR blocks");
    // Not mapped: below the image, host RAM, the window.
    for va in [0x4000_0000, 0x401f_f000, 0x4220_0000, 0x7fc0_0000, 0x0901_0000, WINDOW_BASE] {
        assert_eq!(t.lookup(&a, va), None, "{va:#x} mapped");
    }
    // L0, L1, two L2 (devices, RAM) and three L3 (GICD+GICR, UART, image+pool).
    assert_eq!(t.pages(), 7);
}

#[test]
fn remapping_the_same_is_fine_differently_is_a_conflict() {
    let mut a = HostPages(Vec::new());
    let mut t = Tables::new(&mut a).unwrap();
    t.map(&mut a, 0x4000_0000, 0x4000_0000, SIZE_2M, Perm::ReadWrite).unwrap();
    t.map(&mut a, 0x4010_0000, 0x4010_0000, 0x1000, Perm::ReadWrite).unwrap();
    assert_eq!(t.map(&mut a, 0x4010_0000, 0x4010_0000, 0x1000, Perm::Exec), Err(MapError::Conflict(0x4010_0000)));
    assert_eq!(t.map(&mut a, 0x4010_0000, 0x5010_0000, 0x1000, Perm::ReadWrite), Err(MapError::Conflict(0x4010_0000)));
    assert_eq!(t.map(&mut a, 0x4000_0800, 0x4000_0800, 0x1000, Perm::ReadWrite), Err(MapError::Range));
    assert_eq!(t.map(&mut a, 1 << VA_BITS, 0, 0x1000, Perm::ReadWrite), Err(MapError::Range));
    // A table below a block: the block is a conflict for table_for.
    assert_eq!(t.table_for(&mut a, 0x4000_0000, 3), Err(MapError::Conflict(0x4000_0000)));
}

#[test]
fn window_tables_sit_apart() {
    let (img, pool, devs) = virt();
    let p = plan(&img, pool, &devs).unwrap();
    let (mut t, mut a) = build(&p);
    let before = t.pages();
    let l2 = t.table_for(&mut a, window_block_va(0), 2).unwrap();
    let mut l3s = Vec::new();
    for cpu in 0..WINDOW_CPUS {
        assert_eq!(t.table_for(&mut a, window_block_va(cpu), 2).unwrap(), l2, "one L2 for all slots");
        l3s.push(t.table_for(&mut a, window_pages_va(cpu), 3).unwrap());
    }
    l3s.dedup();
    assert_eq!(l3s.len(), WINDOW_CPUS, "one L3 per CPU");
    // L1 + L2 + one L3 per CPU; the identity part is untouched.
    assert_eq!(t.pages(), before + 2 + WINDOW_CPUS);
    assert!(window_pages_va(WINDOW_CPUS - 1) + WINDOW_SLOT <= WINDOW_BASE + SIZE_1G);
    assert_eq!(t.lookup(&a, window_pages_va(0)), None, "slots start unmapped");
}

#[test]
fn chunking() {
    let c: Vec<Chunk> = chunks(0x4000_0000, 2 * SIZE_2M).collect();
    assert_eq!(c, [Chunk::Block { pa: 0x4000_0000 }, Chunk::Block { pa: 0x4020_0000 }]);
    let c: Vec<Chunk> = chunks(0x401f_f000, SIZE_2M + 0x2000).collect();
    assert_eq!(
        c,
        [
            Chunk::Pages { pa: 0x401f_f000, len: 0x1000 },
            Chunk::Block { pa: 0x4020_0000 },
            Chunk::Pages { pa: 0x4040_0000, len: 0x1000 },
        ]
    );
    let c: Vec<Chunk> = chunks(0x4000_0000, 0x1000).collect();
    assert_eq!(c, [Chunk::Pages { pa: 0x4000_0000, len: 0x1000 }]);
    assert_eq!(chunks(0x4000_0000, 0).count(), 0);
    // Every page chunk fits one page slot.
    for (pa, len) in [(0x4000_0123, SIZE_2M), (0x4010_0000, 3 * SIZE_2M + 0x5000)] {
        let mut total = 0;
        for c in chunks(pa, len) {
            match c {
                Chunk::Pages { pa, len } => {
                    assert!(pages_spanned(pa, len) <= 512);
                    total += len;
                }
                Chunk::Block { pa } => {
                    assert_eq!(pa % SIZE_2M, 0);
                    total += SIZE_2M;
                }
            }
        }
        assert_eq!(total, len);
    }
    assert_eq!(pages_spanned(0x1ff8, 0x10), 2);
    assert_eq!(pages_spanned(0x1000, 0x1000), 1);
    assert_eq!(pages_spanned(0x1000, 0), 0);
}

#[test]
fn unmap_removes_whole_leaves_only() {
    let mut a = HostPages(Vec::new());
    let mut t = Tables::new(&mut a).unwrap();
    // A 2 MiB block and two pages after it (VM_TOPUP's pages at run time).
    let base = 0x8000_0000;
    t.map(&mut a, base, base, SIZE_2M + 2 * PAGE, Perm::ReadWrite).unwrap();
    assert_eq!(t.lookup(&a, base).map(|(_, l)| l), Some(2));
    // Part of the block: refused.
    assert_eq!(t.unmap(&mut a, base + PAGE, PAGE), Err(MapError::Conflict(base + PAGE)));
    assert!(t.lookup(&a, base + PAGE).is_some());
    assert_eq!(t.unmap(&mut a, base, 0), Err(MapError::Range));
    // The block and the first page; the last page stays; unmapping an
    // unmapped range again is fine.
    t.unmap(&mut a, base, SIZE_2M + PAGE).unwrap();
    assert!(t.lookup(&a, base).is_none() && t.lookup(&a, base + SIZE_2M).is_none());
    assert!(t.lookup(&a, base + SIZE_2M + PAGE).is_some());
    t.unmap(&mut a, base, SIZE_2M + 2 * PAGE).unwrap();
    assert!(t.lookup(&a, base + SIZE_2M + PAGE).is_none());
    // Mapped again the same way.
    t.map(&mut a, base + SIZE_2M, base + SIZE_2M, PAGE, Perm::ReadWrite).unwrap();
    assert!(t.lookup(&a, base + SIZE_2M).is_some());
}
