//! The one generic stage-2 walker. Lookups, checks, counting and updates are
//! all [`Visitor`]s over an IPA range.

use super::env::MmEnv;
use super::pte;
use super::{level_shift, level_size, Error, ENTRIES};

/// One entry the walker is visiting.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// Pointer to the descriptor.
    pub ptep: *mut u64,
    /// Descriptor value when the callback was made.
    pub pte: u64,
    /// First IPA this entry translates.
    pub base: u64,
    pub level: u8,
}

impl Entry {
    #[inline]
    pub fn size(&self) -> u64 {
        level_size(self.level)
    }
    #[inline]
    pub fn end(&self) -> u64 {
        self.base + self.size()
    }
}

/// What the walker does after a callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    Continue,
    /// Do not descend into this table (from `table_pre`).
    Skip,
}

/// Callbacks of a walk. `leaf` sees every non-table entry in the range (valid
/// or not); if it turns the entry into a table the walker descends into it.
/// `table_pre` runs before a table's children and may replace the table;
/// `table_post` runs after them.
pub trait Visitor<E: MmEnv> {
    fn leaf(&mut self, env: &mut E, e: &Entry) -> Result<(), Error>;
    fn table_pre(&mut self, _env: &mut E, _e: &Entry) -> Result<Walk, Error> {
        Ok(Walk::Continue)
    }
    fn table_post(&mut self, _env: &mut E, _e: &Entry) -> Result<(), Error> {
        Ok(())
    }
}

/// Geometry of a table tree.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub root: u64,
    pub start_level: u8,
    /// Entries in the (possibly concatenated) root.
    /// (u32: keeps a VM's `Vm` in its allocation size class.)
    pub root_entries: u32,
}

/// Walks `[start, end)` (page-aligned, `start < end`, inside the tree).
///
/// Down the entries that hold the whole range the walk is a loop (a one-page
/// range is one step per level); from the first entry that does not, or the
/// first leaf, it recurses over the entries below; then `table_post` runs
/// for the tables it went through, bottom up.
pub fn walk<E: MmEnv, V: Visitor<E>>(env: &mut E, g: &Geometry, start: u64, end: u64, v: &mut V) -> Result<(), Error> {
    let (mut table, mut level, mut entries) = (g.root, g.start_level, g.root_entries as usize);
    let mut above = [0u64; 4];
    let top = level;
    loop {
        let size = level_size(level);
        let base = start & !(size - 1);
        if end - base > size {
            // The range spans several entries of this table.
            walk_table(env, table, level, entries, start, end, v)?;
            break;
        }
        let idx = ((start >> level_shift(level)) as usize) & (entries - 1);
        // SAFETY: idx < entries, the number of descriptors in this table.
        let ptep = unsafe { env.table_ptr(table).add(idx) };
        // SAFETY: ptep points at a descriptor of a live table of this tree.
        let d = unsafe { core::ptr::read_volatile(ptep) };
        if !pte::is_table(d, level) {
            visit(env, ptep, base, level, start, end, v)?;
            break;
        }
        if v.table_pre(env, &Entry { ptep, pte: d, base, level })? == Walk::Skip {
            break;
        }
        // SAFETY: as above; table_pre may have replaced the descriptor.
        let d = unsafe { core::ptr::read_volatile(ptep) };
        if !pte::is_table(d, level) {
            break;
        }
        above[level as usize & 3] = ptep as u64;
        (table, level, entries) = (pte::table_pa(d), level + 1, ENTRIES);
    }
    post(env, &above, top, level, start, v)
}

/// `table_post` of the table entries `above[top..level]` on the way to
/// `start`, bottom up.
#[inline(always)]
fn post<E: MmEnv, V: Visitor<E>>(
    env: &mut E,
    above: &[u64; 4],
    top: u8,
    mut level: u8,
    start: u64,
    v: &mut V,
) -> Result<(), Error> {
    while level > top {
        level -= 1;
        let ptep = (above[level as usize & 3] & PTR_MASK) as *mut u64;
        // SAFETY: a table descriptor of the tree on the way to `start`.
        let d = unsafe { core::ptr::read_volatile(ptep) };
        v.table_post(env, &Entry { ptep, pte: d, base: start & !(level_size(level) - 1), level })?;
    }
    Ok(())
}

fn walk_table<E: MmEnv, V: Visitor<E>>(
    env: &mut E,
    table: u64,
    level: u8,
    entries: usize,
    start: u64,
    end: u64,
    v: &mut V,
) -> Result<(), Error> {
    let shift = level_shift(level);
    let size = level_size(level);
    let base_ptr = env.table_ptr(table);
    let mut addr = start;
    while addr < end {
        let idx = ((addr >> shift) as usize) & (entries - 1);
        // SAFETY: idx < entries, the number of descriptors in this table.
        let ptep = unsafe { base_ptr.add(idx) };
        let base = addr & !(size - 1);
        let next = base.saturating_add(size).min(end);
        visit(env, ptep, base, level, addr, next, v)?;
        addr = next;
    }
    Ok(())
}

/// One entry of a walk over `[addr, next)` (inside the entry at `base`):
/// the callbacks, and the walk below it if it is (or becomes) a table.
#[inline(always)]
fn visit<E: MmEnv, V: Visitor<E>>(
    env: &mut E,
    ptep: *mut u64,
    base: u64,
    level: u8,
    addr: u64,
    next: u64,
    v: &mut V,
) -> Result<(), Error> {
    // SAFETY: ptep points at a descriptor of a live table of this tree.
    let mut d = unsafe { core::ptr::read_volatile(ptep) };
    let mut descend = pte::is_table(d, level);
    if descend {
        if v.table_pre(env, &Entry { ptep, pte: d, base, level })? == Walk::Skip {
            descend = false;
        }
        // SAFETY: as above; table_pre may have replaced the descriptor.
        d = unsafe { core::ptr::read_volatile(ptep) };
        descend &= pte::is_table(d, level);
    } else {
        v.leaf(env, &Entry { ptep, pte: d, base, level })?;
        // SAFETY: as above; leaf may have installed a table.
        d = unsafe { core::ptr::read_volatile(ptep) };
        descend = pte::is_table(d, level);
    }
    if descend {
        walk_table(env, pte::table_pa(d), level + 1, ENTRIES, addr, next, v)?;
        // SAFETY: as above.
        let d = unsafe { core::ptr::read_volatile(ptep) };
        v.table_post(env, &Entry { ptep, pte: d, base, level })?;
    }
    Ok(())
}

/// The descriptors a walk went through to one leaf: the table entry at
/// every level above it and the leaf itself. Recorded by a visitor (from
/// its `table_pre` and `leaf` callbacks) so that a later walk of the same
/// range, with the tree unchanged since, can start at the leaf
/// ([`walk_path`]) instead of at the root.
///
/// Four words, so that it moves in registers: word `l` is the descriptor
/// pointer at level `l` (8-byte aligned, below 2^48); bits 48-63 of words 0
/// and 1 carry a 32-bit tag for the owner's use (a generation), those of
/// word 2 what was recorded ([`META_SHIFT`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path([u64; 4]);

const TAG_SHIFT: u32 = 48;
const PTR_MASK: u64 = (1 << TAG_SHIFT) - 1;
/// Word 2, bits 48..: leaf level (2 bits), first level recorded (2 bits),
/// a leaf seen, more than one leaf seen, a first level recorded, recorded
/// by [`leaf_path`].
const META_SHIFT: u32 = 48;
const LEAF_SHIFT: u32 = META_SHIFT;
const TOP_SHIFT: u32 = META_SHIFT + 2;
const HAS_LEAF: u64 = 1 << (META_SHIFT + 4);
const MANY: u64 = 1 << (META_SHIFT + 5);
const HAS_TOP: u64 = 1 << (META_SHIFT + 6);
const DESCENT: u64 = 1 << (META_SHIFT + 7);

impl Path {
    pub const fn new() -> Self {
        Path([0; 4])
    }
    #[inline(always)]
    fn set(&mut self, e: &Entry) {
        let l = e.level as usize & 3;
        self.0[l] = (self.0[l] & !PTR_MASK) | (e.ptep as u64 & PTR_MASK);
        if self.0[2] & HAS_TOP == 0 {
            self.0[2] |= HAS_TOP | ((l as u64) << TOP_SHIFT);
        }
    }
    /// A table entry on the way down.
    #[inline(always)]
    pub fn table(&mut self, e: &Entry) {
        self.set(e);
    }
    /// A leaf.
    #[inline(always)]
    pub fn leaf(&mut self, e: &Entry) {
        self.set(e);
        let m = &mut self.0[2];
        if *m & HAS_LEAF != 0 {
            *m |= MANY;
        }
        *m = (*m & !(3 << LEAF_SHIFT)) | HAS_LEAF | ((e.level as u64 & 3) << LEAF_SHIFT);
    }
    /// The level of the leaf, if the walk saw exactly one.
    #[inline(always)]
    pub fn single(&self) -> Option<u8> {
        let m = self.0[2];
        (m & (HAS_LEAF | MANY) == HAS_LEAF).then_some(((m >> LEAF_SHIFT) & 3) as u8)
    }
    /// Was the path recorded by [`leaf_path`] (one page's descent, not a
    /// walk with a visitor)?
    #[inline(always)]
    pub fn by_descent(&self) -> bool {
        self.0[2] & DESCENT != 0
    }
    /// The first level recorded (the root's).
    #[inline(always)]
    fn top(&self) -> u8 {
        ((self.0[2] >> TOP_SHIFT) & 3) as u8
    }
    /// The descriptor recorded at `level`.
    #[inline(always)]
    pub fn ptep(&self, level: u8) -> *mut u64 {
        (self.0[level as usize & 3] & PTR_MASK) as *mut u64
    }
    /// The same path, for a walk that starts at its leaf ([`walk_path`])
    /// and records the leaf again (recorded by that walk, not a descent).
    #[inline(always)]
    pub fn restart(&self) -> Path {
        let mut p = *self;
        p.0[2] &= !(HAS_LEAF | MANY | DESCENT);
        p
    }
    /// The tag (bits 48-63 of words 0 and 1).
    #[inline(always)]
    pub fn tag(&self) -> u32 {
        ((self.0[0] >> TAG_SHIFT) | (self.0[1] >> TAG_SHIFT << 16)) as u32
    }
    #[inline(always)]
    pub fn with_tag(mut self, tag: u32) -> Path {
        self.0[0] = (self.0[0] & PTR_MASK) | ((tag as u64 & 0xffff) << TAG_SHIFT);
        self.0[1] = (self.0[1] & PTR_MASK) | ((tag as u64 >> 16) << TAG_SHIFT);
        self
    }
}

impl Default for Path {
    fn default() -> Self {
        Self::new()
    }
}

/// Walks `[start, end)`, which lies inside the leaf `p` recorded, as
/// [`walk`] would from the root: the leaf's callbacks (and the walk below
/// it if it becomes a table), then `table_post` of every table entry above
/// it, bottom up. `table_pre` is not called: the caller knows the range
/// covers none of those tables (it lies inside one leaf below them).
///
/// The caller guarantees that the tree has not changed since `p` was
/// recorded (every pointer in it is still a descriptor of
/// the tree, on the way to `[start, end)`).
pub fn walk_path<E: MmEnv, V: Visitor<E>>(env: &mut E, p: &Path, start: u64, end: u64, v: &mut V) -> Result<(), Error> {
    let Some(leaf) = p.single() else {
        return Err(Error::Inval);
    };
    let size = level_size(leaf);
    visit(env, p.ptep(leaf), start & !(size - 1), leaf, start, end, v)?;
    post(env, &p.0, p.top(), leaf, start, v)
}

/// The leaf entry translating `ipa` (inside the tree): the walk of one
/// page reduced to its descent, raw descriptors from the root down with no
/// callbacks. Returns the descriptor's pointer, its value and its level.
#[inline(always)]
pub fn leaf_entry<E: MmEnv>(env: &E, g: &Geometry, ipa: u64) -> (*mut u64, u64, u8) {
    descent(env, g, ipa, |_, _| {})
}

/// The first valid leaf (block or page) over `[start, end)` (`start <
/// end`, inside the tree), by raw descriptors and no callbacks: an invalid
/// entry costs a load and a test, a table is entered. Returns the first IPA
/// the leaf entry translates, its level and its descriptor. For sparse
/// trees (a guest's teardown looks for what is left across its whole IPA
/// space, most of it invalid root entries).
pub fn next_valid<E: MmEnv>(env: &E, g: &Geometry, start: u64, end: u64) -> Option<(u64, u8, u64)> {
    scan(env, g.root, g.root_entries as usize, g.start_level, 0, start, end)
}

/// The first index from `i` below `end` whose descriptor in the table at
/// `t` is valid (`end` if none), four descriptors a round while they are
/// all invalid: a sparse table costs about two instructions an entry.
///
/// # Safety
/// `t` points at a table of at least `end` descriptors.
#[inline(always)]
pub unsafe fn next_valid_index(t: *const u64, mut i: usize, end: usize) -> usize {
    while i + 4 <= end {
        // SAFETY: i + 3 < end, inside the table (the function contract).
        let any = unsafe {
            core::ptr::read_volatile(t.add(i))
                | core::ptr::read_volatile(t.add(i + 1))
                | core::ptr::read_volatile(t.add(i + 2))
                | core::ptr::read_volatile(t.add(i + 3))
        };
        if pte::is_valid(any) {
            break;
        }
        i += 4;
    }
    // SAFETY: i < end, inside the table.
    while i < end && !pte::is_valid(unsafe { core::ptr::read_volatile(t.add(i)) }) {
        i += 1;
    }
    i
}

/// [`next_valid`] in the table at `table` (`entries` of them, translating
/// from `base` at `level`), over `[start, end)` (`base <= start < end`).
fn scan<E: MmEnv>(
    env: &E,
    table: u64,
    entries: usize,
    level: u8,
    base: u64,
    start: u64,
    end: u64,
) -> Option<(u64, u8, u64)> {
    let t = env.table_ptr(table);
    let shift = level_shift(level);
    let first = ((start - base) >> shift) as usize;
    let last = (((end - 1 - base) >> shift) as usize).min(entries - 1);
    let mut i = first;
    loop {
        // SAFETY: last < entries of a table page of this tree (the root,
        // or a page a table descriptor of it names).
        i = unsafe { next_valid_index(t, i, last + 1) };
        if i > last {
            return None;
        }
        // SAFETY: as above, i <= last.
        let d = unsafe { core::ptr::read_volatile(t.add(i)) };
        let b = base + ((i as u64) << shift);
        if !pte::is_table(d, level) {
            return Some((b, level, d));
        }
        if let Some(r) = scan(env, pte::table_pa(d), ENTRIES, level + 1, b, start.max(b), end) {
            return Some(r);
        }
        i += 1;
    }
}

/// [`leaf_entry`], recording the way down as a walk of the page would
/// ([`Path`]: the descriptor at every level from the root to the leaf, the
/// leaf the only one seen), so that an update of the page can start at
/// the leaf and go up from it ([`Path::ptep`]). Returns the path, the
/// leaf's descriptor and its level.
#[inline(always)]
pub fn leaf_path<E: MmEnv>(env: &E, g: &Geometry, ipa: u64) -> (Path, u64, u8) {
    let mut p = Path::new();
    let (_, d, level) = descent(env, g, ipa, |level, ptep| p.0[level as usize & 3] = ptep as u64 & PTR_MASK);
    p.0[2] |=
        DESCENT | HAS_TOP | ((g.start_level as u64 & 3) << TOP_SHIFT) | HAS_LEAF | ((level as u64 & 3) << LEAF_SHIFT);
    (p, d, level)
}

/// The descent of [`leaf_entry`] and [`leaf_path`]: `seen(level, ptep)`
/// for every descriptor on the way, the leaf's included. One copy per
/// start level: every level's shift and mask, and the level of each way
/// out, are then constants.
#[inline(always)]
fn descent<E: MmEnv, F: FnMut(u8, *mut u64)>(env: &E, g: &Geometry, ipa: u64, seen: F) -> (*mut u64, u64, u8) {
    match g.start_level {
        0 => descend::<E, F, 0>(env, g, ipa, seen),
        1 => descend::<E, F, 1>(env, g, ipa, seen),
        2 => descend::<E, F, 2>(env, g, ipa, seen),
        _ => descend::<E, F, 3>(env, g, ipa, seen),
    }
}

/// [`descent`] of a tree whose root is at level `TOP`.
#[inline(always)]
fn descend<E: MmEnv, F: FnMut(u8, *mut u64), const TOP: u8>(
    env: &E,
    g: &Geometry,
    ipa: u64,
    mut seen: F,
) -> (*mut u64, u64, u8) {
    debug_assert_eq!(g.start_level, TOP);
    let (mut table, mut level, mut mask) = (g.root, TOP, g.root_entries as usize - 1);
    loop {
        let idx = ((ipa >> level_shift(level)) as usize) & mask;
        // SAFETY: idx <= mask, below the number of descriptors in this table.
        let ptep = unsafe { env.table_ptr(table).add(idx) };
        // SAFETY: ptep points at a descriptor of a live table of this tree.
        let d = unsafe { core::ptr::read_volatile(ptep) };
        seen(level, ptep);
        if !pte::is_table(d, level) {
            return (ptep, d, level);
        }
        (table, level, mask) = (pte::table_pa(d), level + 1, ENTRIES - 1);
    }
}
