//! The host's free RAM, from the DTB: memory minus reserved regions, this
//! kernel's image, the initrd and the DTB. First-fit allocation with
//! alignment, like a tiny page allocator.

use alloc::vec::Vec;

use el1_rt::BootInfo;

#[derive(Clone, Copy, Debug)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

pub struct HostMem {
    free: Vec<Range>,
}

fn carve(free: &mut Vec<Range>, s: u64, e: u64) {
    let mut out = Vec::new();
    for r in free.iter() {
        if e <= r.start || s >= r.end {
            out.push(*r);
            continue;
        }
        if r.start < s {
            out.push(Range { start: r.start, end: s });
        }
        if e < r.end {
            out.push(Range { start: e, end: r.end });
        }
    }
    *free = out;
}

impl HostMem {
    pub fn from_dt(info: &BootInfo) -> Self {
        let mut free: Vec<Range> = info
            .fdt
            .memory()
            .regions()
            .map(|r| Range {
                start: r.starting_address as u64,
                end: r.starting_address as u64 + r.size.unwrap_or(0) as u64,
            })
            .collect();
        if let Some(rm) = info.fdt.find_node("/reserved-memory") {
            for c in rm.children() {
                for r in c.reg().into_iter().flatten() {
                    carve(&mut free, r.starting_address as u64, r.starting_address as u64 + r.size.unwrap_or(0) as u64);
                }
            }
        }
        let (s, e) = el1_rt::image::range();
        carve(&mut free, s, e);
        carve(&mut free, info.dtb, info.dtb + info.fdt.total_size() as u64);
        if let Some((s, e)) = initrd(info) {
            carve(&mut free, s, e);
        }
        HostMem { free }
    }

    /// `size` bytes aligned to `align`.
    pub fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        for i in 0..self.free.len() {
            let r = self.free[i];
            let s = (r.start + align - 1) & !(align - 1);
            if s + size <= r.end {
                carve(&mut self.free, s, s + size);
                return Some(s);
            }
        }
        None
    }

    /// `size` bytes aligned to `align`, as high in memory as they fit
    /// (memory set aside for good, out of the way of the first-fit
    /// allocations whose addresses the scenarios print).
    pub fn alloc_top(&mut self, size: u64, align: u64) -> Option<u64> {
        for i in (0..self.free.len()).rev() {
            let r = self.free[i];
            let Some(s) = r.end.checked_sub(size).map(|s| s & !(align - 1)) else {
                continue;
            };
            if s >= r.start {
                carve(&mut self.free, s, s + size);
                return Some(s);
            }
        }
        None
    }

    pub fn free(&mut self, start: u64, size: u64) {
        self.free.push(Range { start, end: start + size });
        self.free.sort_by_key(|r| r.start);
        let mut merged: Vec<Range> = Vec::new();
        for r in self.free.drain(..) {
            match merged.last_mut() {
                Some(m) if m.end == r.start => m.end = r.end,
                _ => merged.push(r),
            }
        }
        self.free = merged;
    }
}

/// The host's initrd (the guest bundle), from /chosen.
pub fn initrd(info: &BootInfo) -> Option<(u64, u64)> {
    let c = info.fdt.find_node("/chosen")?;
    let s = c.property("linux,initrd-start")?.as_usize()? as u64;
    let e = c.property("linux,initrd-end")?.as_usize()? as u64;
    (e > s).then_some((s, e))
}
