//! The DMA view never gives a device a transient fault for a page it may
//! reach: splits without an invalid window (BBML2) or no valid blocks at
//! all (without it), no merge of valid tables, and the test environment's
//! rule that catches a break-before-make of a page that stays mapped.

use super::helpers::Plain;
use super::helpers::*;
use super::world::*;
use crate::mm::addr::{Ipa, Pa};
use crate::mm::mem_protect::host_guest::*;
use crate::mm::mem_protect::host_hyp::*;
use crate::mm::mem_protect::*;
use crate::mm::pgtable::Stage2;
use crate::mm::prot::{Leaf, Owner};
use crate::mm::testenv::{Event, TestEnv};

/// The DMA view's leaf at `pa` and its level.
fn dma_at(w: &mut World, pa: u64) -> (Leaf, u8) {
    let m = w.host.dma.as_ref().unwrap().lookup(&mut w.env, pa).unwrap();
    (m.at(pa), m.level)
}

/// Every transition that splits, reclaims, donates whole blocks and pins
/// in the DMA view, with and without BBML2; `World::check` runs the test
/// environment's rules (the commit-end rule runs on every commit).
#[test]
fn dma_view_changes_never_unmap_a_page_that_stays() {
    for bbml2 in [false, true] {
        let mut w = World::with_smmu(bbml2);
        let block = RAM + 16 * M2;
        let (l, level) = dma_at(&mut w, block);
        assert_eq!(l, dma_owned(block));
        assert_eq!(level, if bbml2 { 2 } else { 3 }, "blocks only with BBML2");
        let merges = w.host.dma.as_ref().unwrap().stats.merges;

        // One page of a host block to a guest: the view's block is split
        // (live) or already pages; its neighbours never lose their mapping.
        let pa = block + 5 * K4;
        let from = w.env.log.len();
        host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(pa), Ipa(G), K4).plain().unwrap();
        let dma_s2 = w.host.dma.as_ref().unwrap().s2_id().unwrap();
        let zeroed = w.env.log[from..].iter().any(
            |e| matches!(e, Event::Write { s2, new: 0, ipa, level, .. } if *s2 == dma_s2 && (*ipa, *level) != (pa, 3)),
        );
        assert!(!zeroed, "no invalid entry written but the page's own");
        assert_eq!(dma_at(&mut w, pa).0, Leaf::Invalid(Owner::None));
        assert_eq!(dma_at(&mut w, pa + K4), (dma_owned(pa + K4), 3));
        w.check();

        // Back to the host: mapped again, and the table stays (a merge
        // would unmap the 511 other pages for a moment).
        assert_eq!(guest_relinquish(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G), K4).plain(), Ok(pa));
        assert_eq!(dma_at(&mut w, pa), (dma_owned(pa), 3));
        assert_eq!(w.host.dma.as_ref().unwrap().stats.merges, merges, "no valid merge");
        w.check();

        // The whole block to a guest and back: the table, whose pages all
        // lose access, may go; the view maps the block's pages again.
        host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(block), Ipa(G), M2).plain().unwrap();
        assert_eq!(dma_at(&mut w, pa).0, Leaf::Invalid(Owner::None));
        w.check();
        // A page the guest shares, pinned and unpinned, inside its block.
        guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + 3 * K4), K4).plain().unwrap();
        w.host.pin(&mut w.env, Pa(block + 3 * K4), false).plain().unwrap();
        assert_eq!(dma_at(&mut w, block + 3 * K4), (dma_pinned(block + 3 * K4), 3));
        w.check();
        w.host.unpin(&mut w.env, Pa(block + 3 * K4)).plain().unwrap();
        w.check();
        guest_unshare_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + 3 * K4), K4).plain().unwrap();
        assert_eq!(guest_relinquish(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G), M2).plain(), Ok(block));
        assert_eq!(dma_at(&mut w, pa).0, dma_owned(pa));
        assert_eq!(dma_at(&mut w, block + M2 - K4).0, dma_owned(block + M2 - K4));
        w.check();

        // A range of pages (a table) to the hyp and back, then a host
        // range over a table of partly unmapped pages.
        let r = RAM + 20 * M2;
        host_donate_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(r + 8 * K4), 4 * K4).plain().unwrap();
        w.check();
        host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[1], Pa(r + 100 * K4), Ipa(G), K4).plain().unwrap();
        w.check();
        hyp_donate_host(&mut w.env, &mut w.host, &mut w.hyp, Pa(r + 8 * K4), 4 * K4).plain().unwrap();
        assert_eq!(dma_at(&mut w, r + 9 * K4).0, dma_owned(r + 9 * K4));
        w.check();
        w.finish();
    }
}

/// The rule itself: an SMMU tree that splits a valid block with
/// break-before-make (as every tree did before the DMA view kept its
/// pages mapped) is caught at the end of the commit.
#[test]
#[should_panic(expected = "a transient DMA fault")]
fn break_before_make_in_an_smmu_tree_is_caught() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(DMA_VMID)).unwrap();
    s.set_iommu();
    s.set(&mut env, G, M2, dma_owned(G)).unwrap();
    s.set(&mut env, G + K4, K4, Leaf::Invalid(Owner::None)).unwrap();
}

/// And merging a valid table into a block (break-before-make too).
#[test]
#[should_panic(expected = "a transient DMA fault")]
fn valid_merge_in_an_smmu_tree_is_caught() {
    let mut env = TestEnv::new();
    let mut s = Stage2::new(&mut env, 40, Some(DMA_VMID)).unwrap();
    s.set_iommu();
    s.set(&mut env, G, K4, dma_owned(G)).unwrap();
    env.check_log();
    // The rest of the 2 MiB: the table becomes uniform and merges.
    s.set(&mut env, G + K4, M2 - K4, dma_owned(G + K4)).unwrap();
}

/// With no transient faults and BBML2, the split is one write of the
/// filled table over the block, then the invalidation; without BBML2 the
/// block is never written (pages), so a split meets no valid block.
#[test]
fn no_transient_tree_splits_live_or_maps_pages() {
    for bbml2 in [false, true] {
        let mut env = TestEnv::new();
        env.smmu_bbml2 = bbml2;
        let mut s = Stage2::new(&mut env, 40, Some(DMA_VMID)).unwrap();
        s.set_iommu();
        s.no_transient_faults(bbml2);
        s.set(&mut env, G, M2, dma_owned(G)).unwrap();
        assert_eq!(s.lookup(&mut env, G).unwrap().level, if bbml2 { 2 } else { 3 });
        let from = env.log.len();
        s.set(&mut env, G + K4, K4, Leaf::Invalid(Owner::None)).unwrap();
        let s2 = s.s2_id().unwrap();
        let writes: std::vec::Vec<(u64, u8, u64, u64)> = env.log[from..]
            .iter()
            .filter_map(|e| match *e {
                Event::Write { s2: t, ipa, level, old, new, .. } if t == s2 => Some((ipa, level, old, new)),
                _ => None,
            })
            .collect();
        // One write: the page (pages) or the table over the block (BBML2);
        // then the page in it. Never the block made invalid.
        assert!(writes.iter().all(|&(_, level, old, _)| level == 3 || old == 0 || crate::mm::pte::is_valid(old)));
        assert!(writes.iter().all(|&(ipa, _, _, new)| new != 0 || ipa == G + K4), "{writes:x?}");
        env.check_log();
        // Back: the table stays (no valid merge).
        s.set(&mut env, G + K4, K4, dma_owned(G + K4)).unwrap();
        assert_eq!(s.lookup(&mut env, G).unwrap().level, 3);
        assert_eq!(s.stats.merges, 0);
        check_structure(&mut env, &s);
        env.check_log();
        s.destroy(&mut env);
        env.check_log();
    }
}

/// A 2 MiB block of pinned pages stays 512 page entries (no valid merge),
/// so neither UNPIN (which leaves the DMA view as it is) nor the
/// conversion that tears the mapping down needs a table page: both
/// succeed with the pool empty (before, the pins merged into a block and
/// the unmap's split failed with NoMem).
#[test]
fn unpin_and_the_teardown_need_no_table_page() {
    for bbml2 in [false, true] {
        let mut w = World::with_smmu(bbml2);
        let block = RAM + 16 * M2;
        host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(block), Ipa(G), M2).plain().unwrap();
        guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G), M2).plain().unwrap();
        for i in 0..512 {
            w.host.pin(&mut w.env, Pa(block + i * K4), false).plain().unwrap();
        }
        assert_eq!(dma_at(&mut w, block + 7 * K4), (dma_pinned(block + 7 * K4), 3));
        w.check();
        w.env.budget = Some(0);
        for i in 0..512 {
            w.host.unpin(&mut w.env, Pa(block + i * K4)).plain().unwrap();
        }
        assert_eq!(dma_at(&mut w, block + 7 * K4), (dma_pinned(block + 7 * K4), 3), "kept until a conversion");
        w.check();
        w.env.log.clear();
        guest_unshare_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G), M2).plain().unwrap();
        w.env.budget = None;
        assert_eq!(dma_at(&mut w, block + 7 * K4).0, Leaf::Invalid(Owner::None));
        assert_eq!(w.host.pins.mapped_pages(), 0);
        // 512 SMMU invalidations, one CMD_SYNC, before the guest's write.
        let sync = w.env.log.iter().position(|e| *e == Event::DmaSync).expect("one CMD_SYNC");
        assert_eq!(w.env.log.iter().filter(|e| **e == Event::DmaSync).count(), 1);
        let tlbis = w.env.log.iter().filter(|e| matches!(e, Event::TlbiIpa { s2, .. } if s2.iommu)).count();
        assert_eq!(tlbis, 512);
        let guest_s2 = w.guests[0].pgt.s2_id().unwrap();
        let guest_write = w.env.log.iter().position(|e| matches!(e, Event::Write { s2, .. } if *s2 == guest_s2));
        assert!(guest_write.is_some_and(|g| g > sync), "the guest gets the pages after the CMD_SYNC");
        w.check();
        w.finish();
    }
}

/// `HostMm::dma_maps` (PAGE_STATE x6) reports the view: the host's own
/// pages, mapped or not yet; a shared page from its first pin, still after
/// the last unpin, until the guest's MEM_UNSHARE takes it; never a
/// guest-private page.
#[test]
fn dma_maps_follows_the_view() {
    let mut w = World::with_smmu(true);
    let block = RAM + 16 * M2;
    let pa = block + 7 * K4;
    assert!(w.host.dma_maps(&mut w.env, pa), "the host's own page");
    host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(block), Ipa(G), M2).plain().unwrap();
    assert!(!w.host.dma_maps(&mut w.env, pa), "a guest-private page");
    guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G), M2).plain().unwrap();
    assert!(!w.host.dma_maps(&mut w.env, pa), "shared, never pinned");
    w.host.pin(&mut w.env, Pa(pa), false).plain().unwrap();
    assert!(w.host.dma_maps(&mut w.env, pa + 5), "pinned (any address in the page)");
    assert!(!w.host.dma_maps(&mut w.env, pa + K4), "its neighbour, never pinned");
    w.host.unpin(&mut w.env, Pa(pa)).plain().unwrap();
    assert!(w.host.dma_maps(&mut w.env, pa), "unpinned: kept until a conversion");
    guest_unshare_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G), M2).plain().unwrap();
    assert!(!w.host.dma_maps(&mut w.env, pa), "unshared by the guest");
    w.check();
}
