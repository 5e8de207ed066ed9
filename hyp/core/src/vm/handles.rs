//! The VM table's bookkeeping: 255 slots named by 16-bit handles, looked
//! up in constant time.
//!
//! A handle is `generation << 8 | slot`, slot 1..=255 (so never 0). A slot's
//! generation moves on each time it is freed, so a handle kept after its VM
//! is gone names nothing (until the same slot has been reused 256 times).
//! Free slots are reused oldest first (a ring), which spreads reuse over
//! all slots: a handle comes back only after 65,280 creations.

/// Slots (and so live entries) at most.
pub const SLOTS: usize = 255;

pub struct Handles<T> {
    /// Index = slot; entry 0 is never used.
    entries: [Option<T>; SLOTS + 1],
    gens: [u8; SLOTS + 1],
    /// Free slots, oldest first: `free[(head + i) % SLOTS]` for i < `nfree`.
    free: [u8; SLOTS],
    head: usize,
    nfree: usize,
}

impl<T> Handles<T> {
    pub const fn new() -> Self {
        let mut free = [0u8; SLOTS];
        let mut i = 0;
        while i < SLOTS {
            free[i] = (i + 1) as u8;
            i += 1;
        }
        Handles { entries: [const { None }; SLOTS + 1], gens: [0; SLOTS + 1], free, head: 0, nfree: SLOTS }
    }

    /// The slot `handle` names, if it names a live entry.
    fn slot(&self, handle: u64) -> Option<usize> {
        let h = u16::try_from(handle).ok()?;
        let slot = (h & 0xff) as usize;
        (slot != 0 && self.gens[slot] == (h >> 8) as u8 && self.entries[slot].is_some()).then_some(slot)
    }

    fn handle_of(&self, slot: usize) -> u16 {
        ((self.gens[slot] as u16) << 8) | slot as u16
    }

    pub fn get(&self, handle: u64) -> Option<&T> {
        self.slot(handle).and_then(|s| self.entries[s].as_ref())
    }

    /// The slot the next [`Self::insert`] will use.
    fn next_slot(&self) -> Option<usize> {
        (self.nfree > 0).then(|| self.free[self.head] as usize)
    }

    /// The handle the next [`Self::insert`] will give; `None` if every slot
    /// is taken.
    pub fn next(&self) -> Option<u16> {
        self.next_slot().map(|s| self.handle_of(s))
    }

    /// Stores `v` under the handle [`Self::next`] gave. Cannot fail after
    /// it returned `Some`.
    pub fn insert(&mut self, v: T) -> Option<u16> {
        let slot = self.next_slot()?;
        let h = self.handle_of(slot);
        self.head = (self.head + 1) % SLOTS;
        self.nfree -= 1;
        self.entries[slot] = Some(v);
        Some(h)
    }

    /// Takes the entry out; the handle is dead from now on and the slot
    /// goes to the back of the free ring.
    pub fn remove(&mut self, handle: u64) -> Option<T> {
        let slot = self.slot(handle)?;
        let v = self.entries[slot].take();
        self.gens[slot] = self.gens[slot].wrapping_add(1);
        self.free[(self.head + self.nfree) % SLOTS] = slot as u8;
        self.nfree += 1;
        v
    }

    /// Puts back an entry just [`Self::remove`]d under the same handle
    /// (its removal turned out not to be possible); `false` if the slot was
    /// reused meanwhile.
    pub fn restore(&mut self, handle: u16, v: T) -> bool {
        let slot = (handle & 0xff) as usize;
        let gen = (handle >> 8) as u8;
        if slot == 0 || self.entries[slot].is_some() || self.gens[slot] != gen.wrapping_add(1) || self.nfree == 0 {
            return false;
        }
        // It went last into the ring: take it back from there.
        let last = (self.head + self.nfree - 1) % SLOTS;
        if self.free[last] as usize != slot {
            return false;
        }
        self.nfree -= 1;
        self.gens[slot] = gen;
        self.entries[slot] = Some(v);
        true
    }

    /// The VMID for the entry under `handle`, with VMIDs `vmid_bits` wide:
    /// the handle itself with 16 bits (a slot's VMID moves on with its
    /// generation), its slot with 8. Unique among live entries, never 0
    /// (the host's).
    pub const fn vmid(handle: u16, vmid_bits: u32) -> u16 {
        if vmid_bits >= 16 {
            handle
        } else {
            handle & 0xff
        }
    }

    pub fn len(&self) -> usize {
        SLOTS - self.nfree
    }

    pub fn is_empty(&self) -> bool {
        self.nfree == SLOTS
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().flatten()
    }
}

impl<T> Default for Handles<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::vec::Vec;

    fn table() -> Box<Handles<u32>> {
        Box::new(Handles::new())
    }

    #[test]
    fn handles_start_at_one_and_are_found() {
        let mut t = table();
        assert_eq!(t.next(), Some(1));
        assert_eq!(t.insert(10), Some(1));
        assert_eq!(t.insert(20), Some(2));
        assert_eq!(t.get(1), Some(&10));
        assert_eq!(t.get(2), Some(&20));
        assert_eq!((t.get(0), t.get(3), t.get(0x102), t.get(1 << 16 | 1)), (None, None, None, None));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn holds_255_then_refuses() {
        let mut t = table();
        let hs: Vec<u16> = (0..SLOTS as u32).map(|i| t.insert(i).unwrap()).collect();
        assert_eq!(t.len(), 255);
        assert_eq!((t.next(), t.insert(999)), (None, None));
        for (i, &h) in hs.iter().enumerate() {
            assert_ne!(h, 0);
            assert_eq!(t.get(h as u64), Some(&(i as u32)));
        }
        assert_eq!(t.iter().count(), 255);
    }

    #[test]
    fn a_stale_handle_names_nothing() {
        let mut t = table();
        let h = t.insert(1).unwrap();
        assert_eq!(t.remove(h as u64), Some(1));
        assert_eq!(t.remove(h as u64), None);
        assert_eq!(t.get(h as u64), None);
        // Fill every slot: the old slot comes back last, under a new handle.
        let hs: Vec<u16> = (0..SLOTS as u32).map(|i| t.insert(i).unwrap()).collect();
        assert_eq!(*hs.last().unwrap(), 0x100 | h);
        assert!(!hs[..SLOTS - 1].contains(&h));
        assert_eq!(t.get(h as u64), None);
        assert_eq!(t.get(0x100 | h as u64), Some(&(SLOTS as u32 - 1)));
    }

    #[test]
    fn reuse_is_spread_over_slots() {
        let mut t = table();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..1000u32 {
            let h = t.insert(i).unwrap();
            assert!(seen.insert(h), "handle {h:#x} came back after {i} creations");
            assert_eq!(t.remove(h as u64), Some(i));
        }
    }

    #[test]
    fn vmids_fit_and_differ() {
        for bits in [8, 16] {
            let mut t = table();
            // Cycle a slot's generation, then fill the table.
            for _ in 0..300 {
                let h = t.insert(0).unwrap();
                t.remove(h as u64);
            }
            let hs: Vec<u16> = (0..SLOTS as u32).map(|i| t.insert(i).unwrap()).collect();
            let mut v: Vec<u16> = hs.iter().map(|&h| Handles::<u32>::vmid(h, bits)).collect();
            assert!(v.iter().all(|&x| x != 0 && (x as u32) < 1 << bits), "{bits}: {v:?}");
            v.sort_unstable();
            v.dedup();
            assert_eq!(v.len(), SLOTS, "{bits}-bit VMIDs of live entries differ");
        }
        assert_eq!(Handles::<u32>::vmid(0x305, 16), 0x305);
        assert_eq!(Handles::<u32>::vmid(0x305, 8), 5);
    }

    #[test]
    fn restore_undoes_a_remove() {
        let mut t = table();
        let a = t.insert(1).unwrap();
        let b = t.insert(2).unwrap();
        assert_eq!(t.remove(a as u64), Some(1));
        assert!(t.restore(a, 1));
        assert_eq!(t.get(a as u64), Some(&1));
        assert_eq!(t.len(), 2);
        // The next insert does not take the restored slot.
        let c = t.insert(3).unwrap();
        assert!(c != a && c != b);
        assert_eq!(t.get(a as u64), Some(&1));
        // Not after the slot was reused, nor twice, nor for a live one.
        assert!(!t.restore(a, 9));
        assert_eq!(t.remove(b as u64), Some(2));
        assert!(t.restore(b, 2));
        assert!(!t.restore(b, 2));
    }
}
