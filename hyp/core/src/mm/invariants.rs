//! The global invariant checker: walks every stage-2 and the pin counts and
//! checks that they tell one consistent story.
//!
//! - every page has exactly one owner: the host's view (its own, the hyp's,
//!   or a guest's) agrees with the hyp's table and every guest's table, and
//!   per VM the bytes it maps equal the bytes the host records for it;
//! - the hyp's own memory (its recorded regions) is the hyp's own in the
//!   host's view and owned in the hyp's table, all of it, always; nothing
//!   else is annotated as the hyp's own, and no page the host donated lies
//!   in it;
//! - shared-owned on one side ⇔ shared-borrowed on exactly the other;
//! - the host maps no hyp page and no guest-private page; its mappings are
//!   identity maps of RAM (normal) or devices (device memory);
//! - every table page is reachable exactly once and counted;
//! - pins only on pages the host borrows from a guest;
//! - every page the host donated for a VM's tables (VM_TOPUP) is one of
//!   that VM's table pages or in its memcache, and each of those is such a
//!   page: owned by the hyp for that VM, unmapped in the host and its DMA
//!   view;
//! - the host's DMA view (with an SMMU) maps, identity and read/write, its
//!   own RAM (also while shared with the hyp) and the pages it borrows and
//!   pins, and nothing else: no hyp page, no guest-private page, no
//!   borrowed page without a pin, no device.
//!
//! Blocks cannot span mixed states by construction (one descriptor, one
//! state), and "everything mergeable is merged" is left to the unit tests.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use super::env::MmEnv;
use super::mem_protect::{GuestMm, HostMm, HypMm};
use super::pgtable::Stage2;
use super::prot::{Leaf, MemType, Owner, PageState};
use super::{level_size, pte, Error, ENTRIES, PAGE_SIZE};

/// What was wrong, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    pub what: &'static str,
    pub addr: u64,
}

/// What a passing check covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub leaves: u64,
    pub tables: u64,
    pub guest_bytes: u64,
    pub shared_bytes: u64,
    pub pinned_pages: u64,
    /// Memory the host donated for VMs' tables (VM_TOPUP).
    pub vm_table_bytes: u64,
}

fn bad(what: &'static str, addr: u64) -> Violation {
    Violation { what, addr }
}

/// (start, end, leaf at start) of every leaf of `pgt`, coalescing nothing.
fn collect<E: MmEnv>(env: &mut E, pgt: &Stage2) -> Result<Vec<(u64, u64, Leaf)>, Violation> {
    let mut v: Vec<(u64, u64, Leaf)> = Vec::new();
    let mut oom = false;
    let _ = pgt.for_each_leaf(env, 0, pgt.ipa_limit(), |m, a, b| {
        let l = m.at(a);
        if l == Leaf::Invalid(Owner::None) {
            return Ok(());
        }
        if v.try_reserve(1).is_err() {
            oom = true;
            return Err(Error::NoMem);
        }
        v.push((a, b, l));
        Ok(())
    });
    if oom {
        return Err(bad("checker out of memory", 0));
    }
    Ok(v)
}

/// Adds the leaf `l` over `[a, b)` to `v` the way [`collect_runs`] does:
/// onto the last entry when it continues that entry's identity run (same
/// state and attributes), as an entry of its own otherwise. `Err` when
/// `v` cannot grow.
#[inline]
fn add_run(v: &mut Vec<(u64, u64, Leaf)>, a: u64, b: u64, l: Leaf) -> Result<(), Violation> {
    if let (Some(last), Leaf::Mapped { pa, attrs, state }) = (v.last_mut(), l) {
        if let Leaf::Mapped { pa: lpa, attrs: la, state: ls } = last.2 {
            if last.1 == a && pa == a && lpa == last.0 && la == attrs && ls == state {
                last.1 = b;
                return Ok(());
            }
        }
    }
    if v.try_reserve(1).is_err() {
        return Err(bad("checker out of memory", 0));
    }
    v.push((a, b, l));
    Ok(())
}

/// `collect` for an identity map (the DMA view, whose valid tables stay
/// split): adjacent leaves that continue one identity run (same state and
/// attributes) become one entry, so the checks below cost a run, not a
/// page. A leaf that is not identity stays an entry of its own. The
/// reference the checker's [`collect_runs_raw`] is tested against.
#[cfg(test)]
pub(crate) fn collect_runs<E: MmEnv>(env: &mut E, pgt: &Stage2) -> Result<Vec<(u64, u64, Leaf)>, Violation> {
    let mut v: Vec<(u64, u64, Leaf)> = Vec::new();
    let mut err = None;
    let _ = pgt.for_each_leaf(env, 0, pgt.ipa_limit(), |m, a, b| {
        let l = m.at(a);
        if l == Leaf::Invalid(Owner::None) {
            return Ok(());
        }
        add_run(&mut v, a, b, l).map_err(|e| {
            err = Some(e);
            Error::NoMem
        })
    });
    match err {
        Some(e) => Err(e),
        None => Ok(v),
    }
}

/// [`collect_runs`] by raw descriptors, for the DMA view the checker walks
/// in full every time (a fragmented view holds a page entry for most of
/// the host's RAM). Same entries, same order: a page entry that is exactly
/// the descriptor the tree writes for the next page of the current
/// identity run (`Stage2::encode`, checked to decode to that page) extends
/// the run in a loop of one load and one compare; every other entry is
/// decoded and added as `collect_runs` adds it ([`add_run`]).
pub(crate) fn collect_runs_raw<E: MmEnv>(env: &mut E, pgt: &Stage2) -> Result<Vec<(u64, u64, Leaf)>, Violation> {
    struct Runs<'a> {
        v: Vec<(u64, u64, Leaf)>,
        pgt: &'a Stage2,
        /// The level-3 descriptor of the last entry's identity run at PA 0
        /// (the page at `a` is `tmpl | a`), when the last entry is one.
        tmpl: Option<u64>,
    }
    impl Runs<'_> {
        fn add(&mut self, a: u64, b: u64, l: Leaf) -> Result<(), Violation> {
            add_run(&mut self.v, a, b, l)?;
            self.tmpl = None;
            if let Some(&(s, _, Leaf::Mapped { pa, attrs, state })) = self.v.last() {
                let t = self.pgt.encode(Leaf::Mapped { pa: 0, attrs, state }, 3);
                if pa == s && pte::oa(t) == 0 && pte::decode(t | s) == (Leaf::Mapped { pa: s, attrs, state }) {
                    self.tmpl = Some(t);
                }
            }
            Ok(())
        }
    }
    fn table<E: MmEnv>(env: &mut E, r: &mut Runs, pa: u64, level: u8, base: u64, n: usize) -> Result<(), Violation> {
        let p = env.table_ptr(pa);
        let size = level_size(level);
        let mut i = 0;
        while i < n {
            // SAFETY: i < n, the entries of this table of a live tree.
            let d = unsafe { core::ptr::read_volatile(p.add(i)) };
            let a = base + i as u64 * size;
            if level == 3 {
                if let (Some(t), Some(last)) = (r.tmpl, r.v.last_mut()) {
                    if last.1 == a && d == t | a {
                        // The run goes on: as many pages as follow it.
                        let (mut j, mut next) = (i + 1, d + size);
                        // SAFETY: j < n, as above.
                        while j < n && unsafe { core::ptr::read_volatile(p.add(j)) } == next {
                            (j, next) = (j + 1, next + size);
                        }
                        last.1 = base + j as u64 * size;
                        i = j;
                        continue;
                    }
                }
            }
            if pte::is_table(d, level) {
                table(env, r, pte::table_pa(d), level + 1, a, ENTRIES)?;
            } else if d != 0 {
                let l = pte::decode(d);
                if l != Leaf::Invalid(Owner::None) {
                    r.add(a, a + size, l)?;
                }
            }
            i += 1;
        }
        Ok(())
    }
    let mut r = Runs { v: Vec::new(), pgt, tmpl: None };
    let level = pgt.start_level();
    let n = (pgt.ipa_limit() >> super::level_shift(level)) as usize;
    table(env, &mut r, pgt.root_pa(), level, 0, n)?;
    Ok(r.v)
}

/// Calls `f` with every table page of `pgt` below its root (the pages
/// [`Stage2::for_each_table`] visits, in the same order), without reading
/// the entries of level-3 tables: they hold no table.
pub(crate) fn for_each_table<E: MmEnv>(env: &mut E, pgt: &Stage2, mut f: impl FnMut(u64)) {
    fn rec<E: MmEnv>(env: &mut E, table: u64, level: u8, n: usize, f: &mut impl FnMut(u64)) {
        let p = env.table_ptr(table);
        for i in 0..n {
            // SAFETY: i < n, the entries of this table of a live tree.
            let d = unsafe { core::ptr::read_volatile(p.add(i)) };
            if pte::is_table(d, level) {
                f(pte::table_pa(d));
                if level + 1 < 3 {
                    rec(env, pte::table_pa(d), level + 1, ENTRIES, f);
                }
            }
        }
    }
    let level = pgt.start_level();
    let n = (pgt.ipa_limit() >> super::level_shift(level)) as usize;
    rec(env, pgt.root_pa(), level, n, &mut f);
}

/// Checks that every page of `[a, b)` in a view (`collect`ed: sorted, no
/// unannotated gaps listed) satisfies `ok`.
fn view_range(view: &[(u64, u64, Leaf)], a: u64, b: u64, ok: impl Fn(Leaf) -> bool) -> bool {
    // `view` is sorted; find the leaves overlapping [a, b) and require they
    // cover it completely.
    let i = view.partition_point(|&(_, e, _)| e <= a);
    let mut at = a;
    for &(s, e, l) in &view[i..] {
        if s >= b {
            break;
        }
        if s > at || !ok(l.offset(at - s)) {
            return false;
        }
        at = e;
    }
    at >= b
}

/// True when every leaf of the host's view (`collect`ed: unannotated,
/// host-owned gaps not listed) overlapping `[a, b)` is a mapping the host
/// owns (alone, or shared with the hyp).
fn host_own_only(view: &[(u64, u64, Leaf)], a: u64, b: u64) -> bool {
    let i = view.partition_point(|&(_, e, _)| e <= a);
    view[i..]
        .iter()
        .take_while(|&&(s, _, _)| s < b)
        .all(|&(_, _, l)| matches!(l, Leaf::Mapped { state: PageState::Owned | PageState::SharedOwned, .. }))
}

pub fn check<E: MmEnv>(env: &mut E, host: &HostMm, hyp: &HypMm, guests: &[&GuestMm]) -> Result<Summary, Violation> {
    let mut sum = Summary::default();

    // Tables: each reachable once across all trees, counted by its tree.
    let mut seen = BTreeSet::new();
    let mut trees: Vec<&Stage2> = Vec::new();
    trees.push(&host.pgt);
    trees.push(&hyp.pgt);
    trees.extend(host.dma.as_ref());
    trees.extend(guests.iter().map(|g| &g.pgt));
    for t in &trees {
        if !seen.insert(t.root_pa()) {
            return Err(bad("a root shared by two stage-2s", t.root_pa()));
        }
        let mut n = 0usize;
        let mut dup = None;
        for_each_table(env, t, |pa| {
            n += 1;
            if !seen.insert(pa) {
                dup = Some(pa);
            }
        });
        if let Some(pa) = dup {
            return Err(bad("a table page reachable twice", pa));
        }
        if n != t.table_pages() {
            return Err(bad("table pages miscounted", t.root_pa()));
        }
        sum.tables += n as u64;
    }

    // The host's view: identity maps of RAM/devices; who owns the rest.
    let hv = collect(env, &host.pgt)?;
    sum.leaves += hv.len() as u64;
    let (mut hyp_own, mut hyp_donated, mut host_shared, mut borrowed) = (0u64, 0u64, 0u64, 0u64);
    let mut per_vm: Vec<(u16, u64)> = Vec::new();
    let mut per_vm_tables: Vec<(u16, u64)> = Vec::new();
    for &(a, b, l) in &hv {
        match l {
            Leaf::Mapped { pa, attrs, state } => {
                if pa != a {
                    return Err(bad("host mapping is not an identity map", a));
                }
                let ram = host.ram.iter().any(|r| r.contains(a, b - a));
                let dev = host.devices.iter().any(|r| r.contains(a, b - a));
                match (attrs.mem, ram, dev) {
                    (MemType::Normal, true, _) | (MemType::Device, false, true) => {}
                    _ => return Err(bad("host maps something that is neither its RAM nor a device", a)),
                }
                match state {
                    PageState::Owned => {}
                    PageState::SharedOwned => host_shared += b - a,
                    PageState::SharedBorrowed => borrowed += b - a,
                }
            }
            Leaf::Invalid(Owner::Hyp) => {
                if !hyp.own.iter().any(|r| r.contains(a, b - a)) {
                    return Err(bad("the host's stage-2 records the hyp's own memory outside its regions", a));
                }
                hyp_own += b - a;
            }
            Leaf::Invalid(Owner::HypDonated) => {
                if hyp.overlaps_own(crate::mm::addr::Pa(a), b - a) {
                    return Err(bad("a page donated to the hyp lies in the hyp's own memory", a));
                }
                hyp_donated += b - a;
            }
            Leaf::Invalid(Owner::Guest(h)) => match per_vm.iter_mut().find(|(x, _)| *x == h) {
                Some(e) => e.1 += b - a,
                None => {
                    if per_vm.try_reserve(1).is_err() {
                        return Err(bad("checker out of memory", 0));
                    }
                    per_vm.push((h, b - a));
                }
            },
            Leaf::Invalid(Owner::VmTables(h)) => {
                if hyp.overlaps_own(crate::mm::addr::Pa(a), b - a) {
                    return Err(bad("a VM's table memory lies in the hyp's own memory", a));
                }
                match per_vm_tables.iter_mut().find(|(x, _)| *x == h) {
                    Some(e) => e.1 += b - a,
                    None => {
                        if per_vm_tables.try_reserve(1).is_err() {
                            return Err(bad("checker out of memory", 0));
                        }
                        per_vm_tables.push((h, b - a));
                    }
                }
            }
            Leaf::Invalid(Owner::None) => {}
        }
    }

    // The hyp's own memory: RAM, the hyp's own in both views, all of it.
    let yv = collect(env, &hyp.pgt)?;
    for (i, r) in hyp.own.iter().enumerate() {
        if r.size == 0 || !host.ram.iter().any(|m| m.contains(r.base, r.size)) {
            return Err(bad("the hyp's own memory is not RAM", r.base));
        }
        if hyp.own[..i].iter().any(|o| r.base < o.end() && o.base < r.end()) {
            return Err(bad("the hyp's own regions overlap", r.base));
        }
        if !view_range(&hv, r.base, r.end(), |h| h == Leaf::Invalid(Owner::Hyp)) {
            return Err(bad("the hyp's own memory is not the hyp's in the host's view", r.base));
        }
        if !view_range(&yv, r.base, r.end(), |y| matches!(y, Leaf::Mapped { state: PageState::Owned, .. })) {
            return Err(bad("the hyp's own memory is not owned in the hyp's table", r.base));
        }
    }

    // The hyp's view agrees page by page.
    sum.leaves += yv.len() as u64;
    let (mut y_owned, mut y_borrowed) = (0u64, 0u64);
    for &(a, b, l) in &yv {
        let Leaf::Mapped { pa, state, .. } = l else {
            return Err(bad("hyp table holds an annotation", a));
        };
        if pa != a {
            return Err(bad("hyp table is not an identity map", a));
        }
        let ok = match state {
            PageState::Owned => {
                y_owned += b - a;
                view_range(&hv, a, b, |h| matches!(h, Leaf::Invalid(Owner::Hyp | Owner::HypDonated)))
            }
            PageState::SharedBorrowed => {
                y_borrowed += b - a;
                view_range(&hv, a, b, |h| matches!(h, Leaf::Mapped { state: PageState::SharedOwned, .. }))
            }
            PageState::SharedOwned => false,
        };
        if !ok {
            return Err(bad("hyp and host disagree about a page", a));
        }
    }
    if y_owned != hyp_own + hyp_donated {
        return Err(bad("hyp-owned pages: host and hyp views differ in size", hyp_own + hyp_donated));
    }
    if y_borrowed != host_shared {
        return Err(bad("pages shared with the hyp: host and hyp views differ in size", host_shared));
    }

    // Every guest: its pages are the ones the host records for it.
    let mut g_shared = 0u64;
    for g in guests {
        let gv = collect(env, &g.pgt)?;
        sum.leaves += gv.len() as u64;
        let mut private = 0u64;
        for &(a, b, l) in &gv {
            let Leaf::Mapped { pa, attrs, state } = l else {
                return Err(bad("guest table holds an annotation", a));
            };
            if attrs.mem != MemType::Normal {
                return Err(bad("guest maps memory as device", a));
            }
            let end = pa + (b - a);
            let ok = match state {
                PageState::Owned => {
                    private += b - a;
                    view_range(&hv, pa, end, |h| h == Leaf::Invalid(Owner::Guest(g.handle)))
                }
                PageState::SharedOwned => {
                    g_shared += b - a;
                    view_range(&hv, pa, end, |h| matches!(h, Leaf::Mapped { state: PageState::SharedBorrowed, .. }))
                }
                PageState::SharedBorrowed => false,
            };
            if !ok {
                return Err(bad("guest and host disagree about a page", a));
            }
        }
        // Its table memory: every page of its memcache and every table of
        // a stage-2 that takes them from there is a page the host donated
        // for it, and there are no others.
        if g.pgt.own_tables().is_some() {
            let mut n = 0u64;
            let mut stray = None;
            let mut page = |pa: u64| {
                n += 1;
                if stray.is_none()
                    && !view_range(&hv, pa, pa + PAGE_SIZE, |h| h == Leaf::Invalid(Owner::VmTables(g.handle)))
                {
                    stray = Some(pa);
                }
            };
            g.pgt.for_each_table(env, |pa, _| page(pa));
            g.pgt.for_each_own_table(env, &mut page);
            if let Some(pa) = stray {
                return Err(bad("a VM's table page is not memory the host donated for its tables", pa));
            }
            let donated = per_vm_tables.iter().find(|(h, _)| *h == g.handle).map(|e| e.1).unwrap_or(0);
            if donated != n * PAGE_SIZE {
                return Err(bad("a VM's table memory: host record and its tables differ in size", g.handle as u64));
            }
            sum.vm_table_bytes += donated;
        }
        let recorded = per_vm.iter().find(|(h, _)| *h == g.handle).map(|e| e.1).unwrap_or(0);
        if recorded != private {
            return Err(bad("a VM's private pages: host record and guest map differ in size", g.handle as u64));
        }
        sum.guest_bytes += private;
    }
    if per_vm.iter().any(|(h, n)| *n > 0 && !guests.iter().any(|g| g.handle == *h)) {
        return Err(bad("the host records pages for a VM that does not exist", 0));
    }
    if per_vm_tables.iter().any(|(h, _)| !guests.iter().any(|g| g.handle == *h && g.pgt.own_tables().is_some())) {
        return Err(bad("the host records table memory for a VM that does not exist", 0));
    }
    if g_shared != borrowed {
        return Err(bad("pages guests share vs pages the host borrows differ in size", borrowed));
    }
    sum.shared_bytes = borrowed;

    // Pins only on borrowed pages: count pinned pages there, compare with
    // all. The same for the pages the DMA view maps as pinned (a pin, or
    // a last unpin no conversion followed yet), every pinned page one.
    let (mut pinned, mut mapped) = (0u64, 0u64);
    for &(a, b, l) in &hv {
        if matches!(l, Leaf::Mapped { state: PageState::SharedBorrowed, .. }) {
            let mut p = a;
            while p < b {
                let (n, m) = (host.pins.count(p) != 0, host.pins.is_mapped(p));
                if n && !m {
                    return Err(bad("a pinned page the DMA view does not map", p));
                }
                pinned += n as u64;
                mapped += m as u64;
                p += PAGE_SIZE;
            }
        }
    }
    if pinned != host.pins.pinned_pages() {
        return Err(bad("a pin on a page the host does not borrow", 0));
    }
    if mapped != host.pins.mapped_pages() {
        return Err(bad("a page marked mapped in the DMA view that the host does not borrow", 0));
    }
    sum.pinned_pages = pinned;

    // The DMA view: every leaf is one the host's state allows, and the
    // bytes add up, so everything the host may DMA to is mapped.
    if let Some(dma) = &host.dma {
        let dv = collect_runs_raw(env, dma)?;
        sum.leaves += dv.len() as u64;
        let (mut d_owned, mut d_pinned) = (0u64, 0u64);
        for &(a, b, l) in &dv {
            let Leaf::Mapped { pa, attrs, state } = l else {
                return Err(bad("the DMA view holds an annotation", a));
            };
            if pa != a || attrs != super::mem_protect::DMA_ATTRS {
                return Err(bad("the DMA view is not a read/write identity map", a));
            }
            if !host.ram.iter().any(|r| r.contains(a, b - a)) {
                return Err(bad("the DMA view maps something that is not RAM", a));
            }
            let ok = match state {
                PageState::Owned => {
                    d_owned += b - a;
                    host_own_only(&hv, a, b)
                }
                PageState::SharedBorrowed => {
                    d_pinned += b - a;
                    (a..b).step_by(PAGE_SIZE as usize).all(|p| host.pins.is_mapped(p))
                        && view_range(&hv, a, b, |h| matches!(h, Leaf::Mapped { state: PageState::SharedBorrowed, .. }))
                }
                PageState::SharedOwned => false,
            };
            if !ok {
                return Err(bad("the DMA view maps a page the host's devices may not reach", a));
            }
        }
        let ram: u64 = host.ram.iter().map(|r| r.size).sum();
        let guest_private: u64 = per_vm.iter().map(|e| e.1).sum();
        let vm_tables: u64 = per_vm_tables.iter().map(|e| e.1).sum();
        if d_owned != ram - hyp_own - hyp_donated - guest_private - vm_tables - borrowed {
            return Err(bad("the DMA view misses pages the host owns", d_owned));
        }
        if d_pinned != mapped * PAGE_SIZE {
            return Err(bad("the DMA view misses pinned pages", d_pinned));
        }
    }
    Ok(sum)
}
