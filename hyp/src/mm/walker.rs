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
    pub root_entries: usize,
}

/// Walks `[start, end)` (page-aligned, `start < end`, inside the tree).
pub fn walk<E: MmEnv, V: Visitor<E>>(env: &mut E, g: &Geometry, start: u64, end: u64, v: &mut V) -> Result<(), Error> {
    walk_table(env, g.root, g.start_level, g.root_entries, start, end, v)
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
        addr = next;
    }
    Ok(())
}
