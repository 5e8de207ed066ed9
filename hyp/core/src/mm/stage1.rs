//! The hyp's own EL2 stage-1 (HCR_EL2.E2H = 0: one VA range, one privilege
//! level), arch-independent so that it is tested on the host: what the hyp
//! maps ([`plan`]), the descriptors ([`leaf`]), the tables ([`Tables`]) and
//! the per-CPU window through which it reaches memory it does not own
//! ([`chunks`], [`window_pages_va`]).
//!
//! 4 KiB granule, 48-bit VA, four levels (0..3). Everything the hyp owns or
//! drives is identity-mapped (VA = PA): its image by section (text
//! read-only and executable, rodata read-only, data/bss/stacks read-write
//! never executable), its page pool read-write never executable, its
//! devices Device-nGnRE never executable. Nothing is writable and
//! executable at once (and SCTLR_EL2.WXN makes sure of it). Host and guest
//! memory are not mapped at all; the window at [`WINDOW_BASE`] maps one
//! piece of it at a time, per CPU.

use alloc::vec::Vec;

pub const PAGE: u64 = 4096;
/// Bytes a block descriptor maps at levels 1 and 2.
pub const SIZE_1G: u64 = 1 << 30;
pub const SIZE_2M: u64 = 2 << 20;
/// VA bits (TCR_EL2.T0SZ = 64 - VA_BITS).
pub const VA_BITS: u32 = 48;
const ENTRIES: usize = 512;

// Block and page descriptor fields (Arm ARM, VMSAv8-64 stage-1 formats).
const VALID: u64 = 1 << 0;
/// Bit 1: table (levels 0-2) or page (level 3); clear for a block.
const TABLE_OR_PAGE: u64 = 1 << 1;
/// AttrIndx[2:0] selects a MAIR_EL2 attribute.
const ATTR_SHIFT: u32 = 2;
/// AP[1]: RES1 in a one-privilege-level regime (EL2 with E2H = 0).
const AP1: u64 = 1 << 6;
/// AP[2]: read-only.
const AP_RO: u64 = 1 << 7;
/// SH[1:0] = inner shareable.
const SH_INNER: u64 = 0b11 << 8;
/// Access flag (always set: the hyp takes no access-flag faults).
const AF: u64 = 1 << 10;
/// Execute-never (XN at EL2 with E2H = 0).
pub const XN: u64 = 1 << 54;
/// Output address bits [47:12].
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

/// MAIR_EL2 attribute indices (mmu.rs programs MAIR_EL2 to match).
pub const ATTR_DEVICE: u64 = 0;
pub const ATTR_NORMAL: u64 = 1;

/// How a region is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    /// Normal memory, read-only, executable: `.text`.
    Exec,
    /// Normal memory, read-only, never executable: `.rodata`.
    ReadOnly,
    /// Normal memory, read-write, never executable: data, bss, stacks,
    /// the pool, the window.
    ReadWrite,
    /// Device-nGnRE, read-write, never executable: the UART, the GIC.
    Device,
}

impl Perm {
    pub fn name(self) -> &'static str {
        match self {
            Perm::Exec => "r-x",
            Perm::ReadOnly => "r--",
            Perm::ReadWrite => "rw-",
            Perm::Device => "rw- device",
        }
    }
}

/// Bytes one entry maps at `level` (0..=3).
pub const fn level_size(level: u8) -> u64 {
    1 << (12 + 9 * (3 - level as u32))
}

fn index(va: u64, level: u8) -> usize {
    ((va >> (12 + 9 * (3 - level as u32))) & (ENTRIES as u64 - 1)) as usize
}

/// A block (level 1, 2) or page (level 3) descriptor mapping `pa` with `perm`.
pub fn leaf(pa: u64, perm: Perm, level: u8) -> u64 {
    debug_assert!((1..=3).contains(&level) && pa.is_multiple_of(level_size(level)));
    let kind = if level == 3 { VALID | TABLE_OR_PAGE } else { VALID };
    let attrs = match perm {
        Perm::Exec => (ATTR_NORMAL << ATTR_SHIFT) | AP1 | AP_RO | SH_INNER,
        Perm::ReadOnly => (ATTR_NORMAL << ATTR_SHIFT) | AP1 | AP_RO | SH_INNER | XN,
        Perm::ReadWrite => (ATTR_NORMAL << ATTR_SHIFT) | AP1 | SH_INNER | XN,
        Perm::Device => (ATTR_DEVICE << ATTR_SHIFT) | AP1 | XN,
    };
    (pa & ADDR_MASK) | kind | attrs | AF
}

/// A table descriptor pointing at the table page `pa`.
pub fn table_desc(pa: u64) -> u64 {
    (pa & ADDR_MASK) | VALID | TABLE_OR_PAGE
}

fn is_table(desc: u64, level: u8) -> bool {
    level < 3 && desc & (VALID | TABLE_OR_PAGE) == VALID | TABLE_OR_PAGE
}

/// Output address of a valid descriptor.
pub fn output(desc: u64) -> u64 {
    desc & ADDR_MASK
}

/// Is the leaf descriptor writable at EL2?
pub fn writable(desc: u64) -> bool {
    desc & VALID != 0 && desc & AP_RO == 0
}

/// Is the leaf descriptor executable at EL2?
pub fn executable(desc: u64) -> bool {
    desc & VALID != 0 && desc & XN == 0
}

/// The permission a leaf descriptor encodes, if it is one [`leaf`] makes.
pub fn perm_of(desc: u64, level: u8) -> Option<Perm> {
    [Perm::Exec, Perm::ReadOnly, Perm::ReadWrite, Perm::Device]
        .into_iter()
        .find(|p| leaf(output(desc), *p, level) == desc)
}

/// Table pages for [`Tables`].
pub trait TableAlloc {
    /// One zeroed 4 KiB page, by physical address.
    fn alloc(&mut self) -> Option<u64>;
    /// Where the hyp reaches the table page at `pa`.
    fn ptr(&self, pa: u64) -> *mut u64;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    NoMem,
    /// Not page-aligned, empty, or beyond the VA range.
    Range,
    /// `va` is already mapped differently.
    Conflict(u64),
}

/// One EL2 stage-1 tree: a level-0 table and what hangs below it.
pub struct Tables {
    root: u64,
    pages: usize,
}

impl Tables {
    pub fn new<A: TableAlloc>(a: &mut A) -> Result<Tables, MapError> {
        Ok(Tables { root: a.alloc().ok_or(MapError::NoMem)?, pages: 1 })
    }

    /// PA of the level-0 table (for TTBR0_EL2).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Table pages in the tree.
    pub fn pages(&self) -> usize {
        self.pages
    }

    fn read<A: TableAlloc>(a: &A, table: u64, i: usize) -> u64 {
        // SAFETY: `table` is a table page of this tree (from `a`), i < 512.
        unsafe { core::ptr::read_volatile(a.ptr(table).add(i)) }
    }

    fn write<A: TableAlloc>(a: &A, table: u64, i: usize, v: u64) {
        // SAFETY: as in `read`; the tree is not live yet or the entry was
        // invalid (break-before-make: only invalid entries become valid).
        unsafe { core::ptr::write_volatile(a.ptr(table).add(i), v) }
    }

    /// The next-level table under entry `i` of `table`, made if missing.
    fn next<A: TableAlloc>(&mut self, a: &mut A, table: u64, i: usize, level: u8, va: u64) -> Result<u64, MapError> {
        let e = Self::read(a, table, i);
        if is_table(e, level) {
            return Ok(output(e));
        }
        if e & VALID != 0 {
            return Err(MapError::Conflict(va));
        }
        let t = a.alloc().ok_or(MapError::NoMem)?;
        self.pages += 1;
        Self::write(a, table, i, table_desc(t));
        Ok(t)
    }

    /// Maps `[va, va + size)` to `[pa, ...)` with the largest blocks that
    /// fit. Mapping a range again the same way is allowed; mapping it
    /// differently is a [`MapError::Conflict`].
    pub fn map<A: TableAlloc>(&mut self, a: &mut A, va: u64, pa: u64, size: u64, perm: Perm) -> Result<(), MapError> {
        let end = va.checked_add(size).ok_or(MapError::Range)?;
        if size == 0 || !(va | pa | size).is_multiple_of(PAGE) || end > 1 << VA_BITS || pa.checked_add(size).is_none() {
            return Err(MapError::Range);
        }
        self.map_in(a, self.root, 0, va, pa, end, perm)
    }

    #[allow(clippy::too_many_arguments)]
    fn map_in<A: TableAlloc>(
        &mut self,
        a: &mut A,
        table: u64,
        level: u8,
        mut va: u64,
        mut pa: u64,
        end: u64,
        perm: Perm,
    ) -> Result<(), MapError> {
        let bs = level_size(level);
        while va < end {
            let i = index(va, level);
            let entry_end = (va | (bs - 1)) + 1;
            let n = (end - va).min(entry_end - va);
            let e = Self::read(a, table, i);
            let whole = va.is_multiple_of(bs) && pa.is_multiple_of(bs) && n == bs;
            if level > 0 && whole && e & VALID == 0 {
                Self::write(a, table, i, leaf(pa, perm, level));
            } else if level > 0 && !is_table(e, level) && e & VALID != 0 {
                // Already a leaf: fine if it maps this piece the same way.
                let base = va & !(bs - 1);
                if perm_of(e, level) != Some(perm) || output(e) + (va - base) != pa {
                    return Err(MapError::Conflict(va));
                }
            } else {
                let t = self.next(a, table, i, level, va)?;
                self.map_in(a, t, level + 1, va, pa, va + n, perm)?;
            }
            va += n;
            pa += n;
        }
        Ok(())
    }

    /// Unmaps `[va, va + size)`: every leaf inside it becomes invalid (the
    /// caller invalidates the TLBs after). Tables stay. A leaf only partly
    /// inside the range is a [`MapError::Conflict`] and nothing from it on
    /// is unmapped; an unmapped page in the range is left as it is.
    pub fn unmap<A: TableAlloc>(&mut self, a: &mut A, va: u64, size: u64) -> Result<(), MapError> {
        let end = va.checked_add(size).ok_or(MapError::Range)?;
        if size == 0 || !(va | size).is_multiple_of(PAGE) || end > 1 << VA_BITS {
            return Err(MapError::Range);
        }
        Self::unmap_in(a, self.root, 0, va, end)
    }

    fn unmap_in<A: TableAlloc>(a: &mut A, table: u64, level: u8, mut va: u64, end: u64) -> Result<(), MapError> {
        let bs = level_size(level);
        while va < end {
            let i = index(va, level);
            let entry_end = (va | (bs - 1)) + 1;
            let n = (end - va).min(entry_end - va);
            let e = Self::read(a, table, i);
            if is_table(e, level) {
                Self::unmap_in(a, output(e), level + 1, va, va + n)?;
            } else if e & VALID != 0 {
                if n != bs || !va.is_multiple_of(bs) {
                    return Err(MapError::Conflict(va));
                }
                Self::write(a, table, i, 0);
            }
            va += n;
        }
        Ok(())
    }

    /// PA of the level-`level` table holding the entry for `va`, tables
    /// made on the way (for the window, whose entries change at run time).
    pub fn table_for<A: TableAlloc>(&mut self, a: &mut A, va: u64, level: u8) -> Result<u64, MapError> {
        if va >= 1 << VA_BITS || level > 3 {
            return Err(MapError::Range);
        }
        let mut t = self.root;
        for l in 0..level {
            t = self.next(a, t, index(va, l), l, va)?;
        }
        Ok(t)
    }

    /// The leaf translating `va`: (descriptor, level).
    pub fn lookup<A: TableAlloc>(&self, a: &A, va: u64) -> Option<(u64, u8)> {
        if va >= 1 << VA_BITS {
            return None;
        }
        let mut t = self.root;
        for level in 0..=3 {
            let e = Self::read(a, t, index(va, level));
            if e & VALID == 0 {
                return None;
            }
            if !is_table(e, level) {
                return Some((e, level));
            }
            t = output(e);
        }
        None
    }

    /// Calls `f(va, size, descriptor, level)` for every valid leaf, in VA order.
    pub fn for_each_leaf<A: TableAlloc>(&self, a: &A, f: &mut dyn FnMut(u64, u64, u64, u8)) {
        Self::walk(a, self.root, 0, 0, f);
    }

    fn walk<A: TableAlloc>(a: &A, table: u64, level: u8, base: u64, f: &mut dyn FnMut(u64, u64, u64, u8)) {
        for i in 0..ENTRIES {
            let e = Self::read(a, table, i);
            let va = base + i as u64 * level_size(level);
            if e & VALID == 0 {
                continue;
            }
            if is_table(e, level) {
                Self::walk(a, output(e), level + 1, va, f);
            } else {
                f(va, level_size(level), e, level);
            }
        }
    }
}

/// The hyp image's sections, as the linker script lays them out: each
/// boundary page-aligned, in this order.
#[derive(Clone, Copy, Debug)]
pub struct Image {
    pub start: u64,
    pub rodata: u64,
    pub data: u64,
    pub stacks: u64,
    pub end: u64,
}

/// A device the hyp drives: (name, base, size).
pub type Device = (&'static str, u64, u64);

/// One identity-mapped range of the final map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub name: &'static str,
    pub start: u64,
    pub end: u64,
    pub perm: Perm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanError(pub &'static str, pub u64);

impl core::fmt::Display for PlanError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({:#x})", self.0, self.1)
    }
}

fn overlaps(a: &Region, b: &Region) -> bool {
    a.start < b.end && b.start < a.end
}

/// What the final EL2 stage-1 maps (all identity): the image by section,
/// the pool `[pool.0, pool.1)`, and `devices` (name, base, size), rounded
/// out to pages, merged where they overlap. Refused: unaligned image
/// sections or pool, a pool or device overlapping the image or each other,
/// anything reaching the window.
pub fn plan(img: &Image, pool: (u64, u64), devices: &[Device]) -> Result<Vec<Region>, PlanError> {
    let bounds = [img.start, img.rodata, img.data, img.stacks, img.end];
    if let Some(b) = bounds.iter().find(|b| *b % PAGE != 0) {
        return Err(PlanError("image section boundary not page-aligned", *b));
    }
    if bounds.windows(2).any(|w| w[0] > w[1]) || img.start == img.rodata {
        return Err(PlanError("image sections out of order", img.start));
    }
    if !pool.0.is_multiple_of(PAGE) || !pool.1.is_multiple_of(PAGE) || pool.0 >= pool.1 {
        return Err(PlanError("pool not page-aligned or empty", pool.0));
    }
    let mut out: Vec<Region> = Vec::new();
    let sections = [
        ("text", img.start, img.rodata, Perm::Exec),
        ("rodata", img.rodata, img.data, Perm::ReadOnly),
        ("data+bss", img.data, img.stacks, Perm::ReadWrite),
        ("stacks", img.stacks, img.end, Perm::ReadWrite),
        ("pool", pool.0, pool.1, Perm::ReadWrite),
    ];
    for (name, start, end, perm) in sections {
        if start < end {
            out.push(Region { name, start, end, perm });
        }
    }
    if pool.0 < img.end && img.start < pool.1 {
        return Err(PlanError("pool overlaps the image", pool.0));
    }
    let mut devs: Vec<Region> = Vec::new();
    for &(name, base, size) in devices {
        let end = base.checked_add(size).filter(|_| size != 0).ok_or(PlanError("empty device region", base))?;
        let start = base & !(PAGE - 1);
        let end = end.checked_next_multiple_of(PAGE).ok_or(PlanError("device region too large", base))?;
        devs.push(Region { name, start, end, perm: Perm::Device });
    }
    devs.sort_by_key(|r| r.start);
    let mut merged: Vec<Region> = Vec::new();
    for d in devs {
        match merged.last_mut() {
            Some(last) if d.start < last.end => last.end = last.end.max(d.end),
            _ => merged.push(d),
        }
    }
    for d in &merged {
        if let Some(r) = out.iter().find(|r| overlaps(r, d)) {
            return Err(PlanError("device region overlaps hyp memory", r.start.max(d.start)));
        }
    }
    out.extend(merged);
    out.sort_by_key(|r| r.start);
    if let Some(r) = out.iter().find(|r| r.end > WINDOW_BASE) {
        return Err(PlanError("region reaches the window", r.start));
    }
    Ok(out)
}

/// The window: the top 512 GiB of the VA space (level-0 entry 511), no
/// identity-mapped range may reach it. Each CPU has two 2 MiB slots: a
/// block slot (one level-2 block descriptor) and a page slot (one level-3
/// table of 512 pages).
pub const WINDOW_BASE: u64 = 0x0000_ff80_0000_0000;
/// CPUs with a window slot pair (≥ the hyp's MAX_CPUS).
pub const WINDOW_CPUS: usize = 8;
/// Bytes a window slot maps.
pub const WINDOW_SLOT: u64 = SIZE_2M;

/// VA of `cpu`'s block slot.
pub const fn window_block_va(cpu: usize) -> u64 {
    WINDOW_BASE + (2 * cpu as u64) * WINDOW_SLOT
}

/// VA of `cpu`'s page slot.
pub const fn window_pages_va(cpu: usize) -> u64 {
    WINDOW_BASE + (2 * cpu as u64 + 1) * WINDOW_SLOT
}

/// Pages covering `[pa, pa + len)`.
pub fn pages_spanned(pa: u64, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    ((pa & (PAGE - 1)) + len).div_ceil(PAGE)
}

/// A piece of `[pa, pa + len)` the window maps at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// An aligned 2 MiB: one block descriptor.
    Block { pa: u64 },
    /// Up to the next 2 MiB boundary: at most 512 pages.
    Pages { pa: u64, len: u64 },
}

/// Splits `[pa, pa + len)` into window-sized chunks: aligned 2 MiB blocks
/// where they fit, pages up to the next 2 MiB boundary elsewhere.
pub fn chunks(pa: u64, len: u64) -> impl Iterator<Item = Chunk> {
    let end = pa.saturating_add(len);
    let mut p = pa;
    core::iter::from_fn(move || {
        if p >= end {
            return None;
        }
        let c = if p.is_multiple_of(SIZE_2M) && end - p >= SIZE_2M {
            Chunk::Block { pa: p }
        } else {
            let next = (p / SIZE_2M + 1) * SIZE_2M;
            Chunk::Pages { pa: p, len: end.min(next) - p }
        };
        p += match c {
            Chunk::Block { .. } => SIZE_2M,
            Chunk::Pages { len, .. } => len,
        };
        Some(c)
    })
}

#[cfg(test)]
mod tests;
