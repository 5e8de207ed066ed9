//! The range form of the host's pins (PIN_RANGE / UNPIN_RANGE): every page
//! or none, the DMA view kept in step (a page's first pin maps it, by
//! one-entry writes where the pages are page entries, range updates
//! otherwise; an unpin leaves it; the conversion that takes the page
//! unmaps it, the SMMU invalidations of one call completed by one sync),
//! and refusals that change nothing.

use std::vec::Vec;

use super::helpers::Plain;
use super::world::*;
use crate::mm::addr::{Ipa, Pa};
use crate::mm::mem_protect::host_guest::*;
use crate::mm::mem_protect::pin_range::PIN_RANGE_MAX;
use crate::mm::mem_protect::*;
use crate::mm::prot::{Leaf, Owner};
use crate::mm::testenv::Event;
use crate::mm::Error;

/// A guest with 4 MiB; it shares `n` pages from its page `first`; returns
/// their host PA.
fn shared(w: &mut World, first: u64, n: u64) -> u64 {
    let pa = RAM + 8 * M2;
    host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(pa), Ipa(G), 4 * M2).unwrap();
    for i in 0..n {
        let ipa = G + (first + i) * K4;
        assert_eq!(
            guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(ipa), K4).plain(),
            Ok(pa + (first + i) * K4)
        );
    }
    pa + first * K4
}

fn dma_leaf(w: &mut World, pa: u64) -> Leaf {
    w.host.dma.as_ref().unwrap().lookup(&mut w.env, pa).unwrap().at(pa)
}

fn pins(w: &World, pa: u64, n: u64) -> Vec<u32> {
    (0..n).map(|i| w.host.pins.count(pa + i * K4)).collect()
}

/// Refused with `want`, and nothing changed: tables, pins, log of writes.
macro_rules! refused {
    ($w:expr, $pa:expr, $n:expr, $want:expr, $call:expr) => {{
        let (before, pins_before) = ($w.snapshot(), pins(&$w, $pa, $n));
        $w.env.check_log();
        assert_eq!($call.plain(), Err($want), "{}", stringify!($call));
        assert_eq!($w.snapshot(), before, "refused call changed a table: {}", stringify!($call));
        assert_eq!(pins(&$w, $pa, $n), pins_before, "refused call changed a pin: {}", stringify!($call));
        assert!(!$w.env.log.iter().any(|e| matches!(e, Event::Write { .. })), "{}", stringify!($call));
    }};
}

#[test]
fn sixteen_pages_pinned_and_unpinned_in_one_call_each() {
    let mut w = World::new();
    // The DMA view's tables there exist (a page pinned and unpinned once,
    // which leaves it mapped): the range then takes the one-entry writes.
    let pa = shared(&mut w, 16, 16);
    w.host.pin(&mut w.env, Pa(pa), false).unwrap();
    w.host.unpin(&mut w.env, Pa(pa)).unwrap();
    w.env.check_log();
    let entries = || crate::mm::pgtable::ENTRY_COMMITS.with(|c| c.get());
    let e0 = entries();
    w.host.pin_range(&mut w.env, Pa(pa), 16, false).unwrap();
    assert_eq!(entries() - e0, 15, "one one-entry write per page not mapped yet (the first is)");
    assert_eq!(pins(&w, pa, 16), [1; 16]);
    for i in 0..16 {
        assert_eq!(dma_leaf(&mut w, pa + i * K4), dma_pinned(pa + i * K4), "page {i}");
    }
    // Mapping needs no invalidation.
    assert!(!w.env.log.iter().any(|e| matches!(e, Event::TlbiIpa { s2, .. } | Event::TlbiVmid { s2 } if s2.iommu)));
    w.env.check_log();
    let syncs = w.env.dma_syncs;
    w.host.unpin_range(&mut w.env, Pa(pa), 16).unwrap();
    assert_eq!(pins(&w, pa, 16), [0; 16]);
    // The view keeps the pages (still shared): nothing written, nothing
    // to invalidate; a pin of them again writes nothing either.
    assert!(w.env.log.is_empty(), "{:?}", w.env.log);
    for i in 0..16 {
        assert_eq!(dma_leaf(&mut w, pa + i * K4), dma_pinned(pa + i * K4), "page {i}");
    }
    w.check();
    w.host.pin_range(&mut w.env, Pa(pa), 16, false).unwrap();
    w.host.unpin_range(&mut w.env, Pa(pa), 16).unwrap();
    assert!(w.env.log.is_empty(), "{:?}", w.env.log);
    assert_eq!(w.env.dma_syncs, syncs);
    // The guest's unshare of the 16 pages unmaps them: sixteen SMMU
    // invalidations completed by one sync, before the guest's write.
    guest_unshare_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + 16 * K4), 16 * K4).plain().unwrap();
    for i in 0..16 {
        assert_eq!(dma_leaf(&mut w, pa + i * K4), Leaf::Invalid(Owner::None), "page {i}");
    }
    let tlbis = w.env.log.iter().filter(|e| matches!(e, Event::TlbiIpa { s2, .. } if s2.iommu)).count();
    assert_eq!(tlbis, 16);
    assert_eq!(w.env.dma_syncs, syncs + 1);
    assert!(!w.env.dma_batch_open);
    w.check();
    w.finish();
}

#[test]
fn a_range_the_dma_view_holds_in_a_block_takes_the_range_update() {
    let mut w = World::new();
    // Never pinned here: the DMA view has an invalid block over the
    // guest's memory, so the first pin splits it (table pages).
    let pa = shared(&mut w, 512 + 3, 5);
    let entries = || crate::mm::pgtable::ENTRY_COMMITS.with(|c| c.get());
    let e0 = entries();
    w.host.pin_range(&mut w.env, Pa(pa), 5, true).unwrap();
    assert_eq!(entries(), e0, "the range update, not one-entry writes");
    assert_eq!(pins(&w, pa, 5), [1; 5]);
    for i in 0..5 {
        assert!(w.host.pins.is_exclusive(pa + i * K4));
        assert_eq!(dma_leaf(&mut w, pa + i * K4), dma_pinned(pa + i * K4));
    }
    w.host.unpin_range(&mut w.env, Pa(pa), 5).unwrap();
    assert_eq!(dma_leaf(&mut w, pa), dma_pinned(pa));
    w.check();
    // MEM_RELINQUISH of the shared pages: the host's own again, in the
    // view too (from pinned to owned in place: software bits only).
    guest_relinquish(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + (512 + 3) * K4), 5 * K4).plain().unwrap();
    assert_eq!(dma_leaf(&mut w, pa), dma_owned(pa));
    assert_eq!(w.host.pins.mapped_pages(), 0);
    w.check();
    w.finish();
}

#[test]
fn pins_add_up_and_no_unpin_unmaps() {
    let mut w = World::new();
    let pa = shared(&mut w, 16, 8);
    // Pages 2..4 pinned once before, the whole range then once more.
    w.host.pin_range(&mut w.env, Pa(pa + 2 * K4), 2, false).unwrap();
    w.host.pin_range(&mut w.env, Pa(pa), 8, false).unwrap();
    assert_eq!(pins(&w, pa, 8), [1, 1, 2, 2, 1, 1, 1, 1]);
    w.host.unpin_range(&mut w.env, Pa(pa), 8).unwrap();
    assert_eq!(pins(&w, pa, 8), [0, 0, 1, 1, 0, 0, 0, 0]);
    for i in 0..8 {
        assert_eq!(dma_leaf(&mut w, pa + i * K4), dma_pinned(pa + i * K4), "page {i}");
    }
    // An unshare over a pinned page is refused (nothing changes); over
    // the others it unmaps them.
    let unshare = |w: &mut World, i: u64, n: u64| {
        guest_unshare_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + (16 + i) * K4), n * K4).plain()
    };
    let before = w.snapshot();
    assert_eq!(unshare(&mut w, 0, 8), Err(Error::Busy));
    assert_eq!(w.snapshot(), before);
    unshare(&mut w, 0, 2).unwrap();
    assert_eq!(dma_leaf(&mut w, pa + K4), Leaf::Invalid(Owner::None));
    assert_eq!(dma_leaf(&mut w, pa + 2 * K4), dma_pinned(pa + 2 * K4));
    w.check();
    // The same through the range updates (tests force them).
    RANGE_ONLY.with(|c| c.set(true));
    w.host.unpin_range(&mut w.env, Pa(pa + 2 * K4), 2).unwrap();
    RANGE_ONLY.with(|c| c.set(false));
    assert_eq!(pins(&w, pa, 8), [0; 8]);
    assert_eq!(dma_leaf(&mut w, pa + 3 * K4), dma_pinned(pa + 3 * K4));
    // The rest through the range updates too.
    RANGE_ONLY.with(|c| c.set(true));
    unshare(&mut w, 2, 6).unwrap();
    RANGE_ONLY.with(|c| c.set(false));
    for i in 0..8 {
        assert_eq!(dma_leaf(&mut w, pa + i * K4), Leaf::Invalid(Owner::None), "page {i}");
    }
    assert_eq!(w.host.pins.mapped_pages(), 0);
    w.check();
    w.finish();
}

#[test]
fn a_refused_range_call_changes_nothing() {
    let mut w = World::new();
    let pa = shared(&mut w, 16, 4);
    // Arguments.
    refused!(w, pa, 4, Error::Inval, w.host.pin_range(&mut w.env, Pa(pa), 0, false));
    refused!(w, pa, 4, Error::Inval, w.host.pin_range(&mut w.env, Pa(pa), PIN_RANGE_MAX + 1, false));
    refused!(w, pa, 4, Error::Inval, w.host.pin_range(&mut w.env, Pa(pa + 8), 1, false));
    refused!(w, pa, 4, Error::Inval, w.host.pin_range(&mut w.env, Pa(RAM + RAM_SIZE - K4), 2, false));
    refused!(w, pa, 4, Error::Inval, w.host.unpin_range(&mut w.env, Pa(pa), 0));
    // One page of the range not shared: the fifth.
    refused!(w, pa, 4, Error::Perm, w.host.pin_range(&mut w.env, Pa(pa), 5, false));
    // An exclusive pin on the last page refuses a range over it, shared
    // or exclusive; a shared pin refuses an exclusive range.
    w.host.pin(&mut w.env, Pa(pa + 3 * K4), true).unwrap();
    refused!(w, pa, 4, Error::Busy, w.host.pin_range(&mut w.env, Pa(pa), 4, false));
    w.host.unpin(&mut w.env, Pa(pa + 3 * K4)).unwrap();
    w.host.pin(&mut w.env, Pa(pa + 3 * K4), false).unwrap();
    refused!(w, pa, 4, Error::Busy, w.host.pin_range(&mut w.env, Pa(pa), 4, true));
    // An unpin over a page without a pin drops none of the others.
    w.host.pin_range(&mut w.env, Pa(pa), 3, false).unwrap();
    w.host.unpin(&mut w.env, Pa(pa + K4)).unwrap();
    refused!(w, pa, 4, Error::Inval, w.host.unpin_range(&mut w.env, Pa(pa), 4));
    assert_eq!(pins(&w, pa, 4), [1, 0, 1, 1]);
    w.host.unpin(&mut w.env, Pa(pa)).unwrap();
    w.host.unpin_range(&mut w.env, Pa(pa + 2 * K4), 2).unwrap();
    assert_eq!(pins(&w, pa, 4), [0; 4]);
    w.check();
    w.finish();
}

#[test]
fn the_one_entry_and_range_forms_leave_the_same_tables() {
    let mut got = Vec::new();
    for range_only in [false, true] {
        RANGE_ONLY.with(|c| c.set(range_only));
        let mut w = World::new();
        let pa = shared(&mut w, 16, 16);
        w.host.pin(&mut w.env, Pa(pa), false).unwrap();
        w.host.unpin(&mut w.env, Pa(pa)).unwrap();
        w.host.pin_range(&mut w.env, Pa(pa + 4 * K4), 12, false).unwrap();
        w.host.pin_range(&mut w.env, Pa(pa), 8, false).unwrap();
        w.host.unpin_range(&mut w.env, Pa(pa + 2 * K4), 10).unwrap();
        got.push((w.snapshot(), pins(&w, pa, 16)));
        w.check();
        w.finish();
    }
    RANGE_ONLY.with(|c| c.set(false));
    assert_eq!(got[0], got[1]);
}
