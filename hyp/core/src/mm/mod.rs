//! Arch-independent memory-protection core: stage-2 descriptors, the generic
//! table walker, range updates with block split/merge, page ownership, and
//! the plan of the hyp's own EL2 stage-1 ([`stage1`]).
//!
//! Everything here is `no_std` + `alloc` and is tested on the host with
//! `cargo test`; the EL2 binary plugs in the real TLB maintenance and page
//! allocator through [`env::MmEnv`] (and [`stage1::TableAlloc`]).

pub mod addr;
pub mod cmo;
pub mod env;
pub mod error;
pub mod invariants;
pub mod mem_protect;
pub mod memcache;
pub mod pgtable;
pub mod pins;
pub mod prot;
pub mod pte;
pub mod region;
pub mod stage1;
pub mod walker;
pub mod zeroing;

pub use error::Error;

/// Log2 of the translation granule (4 KiB).
pub const PAGE_SHIFT: u32 = 12;
/// Translation granule size.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Entries in one table page.
pub const ENTRIES: usize = 512;

/// Number of address bits translated below (and including) `level`'s index.
#[inline]
pub const fn level_shift(level: u8) -> u32 {
    PAGE_SHIFT + 9 * (3 - level as u32)
}

/// Bytes mapped by one entry at `level` (level 3: 4K, 2: 2M, 1: 1G, 0: 512G).
#[inline]
pub const fn level_size(level: u8) -> u64 {
    1 << level_shift(level)
}

/// True when `x` is a multiple of `align` (a power of two).
#[inline]
pub const fn is_aligned(x: u64, align: u64) -> bool {
    x & (align - 1) == 0
}

#[cfg(test)]
pub mod testenv;
#[cfg(test)]
mod tests;
