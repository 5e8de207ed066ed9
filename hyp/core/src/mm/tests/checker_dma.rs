//! The invariant checker's walk of the DMA view by raw descriptors
//! (`invariants::collect_runs_raw`, the fuzz's hot spot): it finds every
//! corruption the walk by decoded leaves found, in the view itself and in
//! the state the view must mirror, on a fragmented view of pages and on
//! one of blocks (BBML2); and it lists exactly the runs the walk listed,
//! whatever the tree holds.

use proptest::prelude::*;
use std::vec::Vec;

use super::helpers::Plain;
use super::world::*;
use crate::mm::addr::{Ipa, Pa};
use crate::mm::invariants::{check, collect_runs, collect_runs_raw, for_each_table};
use crate::mm::mem_protect::host_guest::*;
use crate::mm::mem_protect::*;
use crate::mm::pgtable::Stage2;
use crate::mm::prot::{Attrs, Leaf, MemType, Owner, PageState};
use crate::mm::pte;
use crate::mm::testenv::TestEnv;

fn run(w: &mut World) -> Option<&'static str> {
    let gs: Vec<&GuestMm> = w.guests.iter().collect();
    check(&mut w.env, &w.host, &w.hyp, &gs).err().map(|v| v.what)
}

/// A world whose DMA view is fragmented as the fuzz leaves it: pages
/// donated to guests and back (the view keeps its page tables), a shared
/// page pinned, another shared and not pinned.
fn fragmented(bbml2: bool) -> (World, u64, u64) {
    let mut w = World::with_smmu(bbml2);
    for i in 0..8u64 {
        let pa = RAM + (16 + i) * M2 + (i * 37 % 512) * K4;
        host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(pa), Ipa(G), K4).plain().unwrap();
        assert_eq!(guest_relinquish(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G), K4).plain(), Ok(pa));
    }
    let pa = RAM + 30 * M2 + 5 * K4;
    host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[1], Pa(pa), Ipa(G), 4 * K4).plain().unwrap();
    guest_share_host(&mut w.env, &mut w.host, &mut w.guests[1], Ipa(G), 2 * K4).plain().unwrap();
    w.host.pin(&mut w.env, Pa(pa), false).plain().unwrap();
    w.check();
    (w, pa, pa + K4)
}

/// The raw walk and the walk by leaves list the same runs of this view.
fn same_runs(w: &mut World) {
    let dma = w.host.dma.as_ref().unwrap();
    assert_eq!(collect_runs_raw(&mut w.env, dma), collect_runs(&mut w.env, dma));
}

/// Writes `d` over the DMA view's level-3 descriptor of `pa` behind the
/// tree's back, runs the checker (and compares both walks), restores it.
fn corrupt(w: &mut World, pa: u64, d: impl Fn(u64) -> u64) -> Option<&'static str> {
    let dma = w.host.dma.as_ref().unwrap();
    assert_eq!(dma.lookup(&mut w.env, pa).unwrap().level, 3, "corrupt a page entry");
    let ptep = dma.leaf_ptep(&mut w.env, pa);
    // SAFETY: ptep is a descriptor of a live table of the test's view.
    let old = unsafe { *ptep };
    // SAFETY: as above; the corruption the checker must find.
    unsafe { *ptep = d(old) };
    same_runs(w);
    let what = run(w);
    // SAFETY: as above; restore.
    unsafe { *ptep = old };
    what
}

const NOT_REACHABLE: Option<&str> = Some("the DMA view maps a page the host's devices may not reach");
const NOT_IDENTITY_RW: Option<&str> = Some("the DMA view is not a read/write identity map");

#[test]
fn checker_catches_raw_corruption_of_the_dma_view() {
    for bbml2 in [false, true] {
        let (mut w, pinned, unpinned) = fragmented(bbml2);
        same_runs(&mut w);
        let private = unpinned + K4;
        // Host pages in a split table (the view keeps it) and in the middle of a run.
        let own = RAM + 17 * M2 + 200 * K4;
        let classic = |l: Leaf| pte::encode_in(l, 3, false);
        for pa in [own, RAM + 17 * M2, RAM + 18 * M2 - K4] {
            assert_eq!(corrupt(&mut w, pa, |d| d), None, "{pa:#x} untouched");
            // Read-only, executable, device memory, mapped elsewhere.
            let ro = Leaf::Mapped {
                pa,
                attrs: Attrs { perm: crate::mm::prot::Perm::R, ..DMA_ATTRS },
                state: PageState::Owned,
            };
            assert_eq!(corrupt(&mut w, pa, |_| classic(ro)), NOT_IDENTITY_RW);
            let x = Leaf::Mapped { pa, attrs: Attrs::NORMAL_RWX, state: PageState::Owned };
            assert_eq!(corrupt(&mut w, pa, |_| classic(x)), NOT_IDENTITY_RW);
            let dev = Leaf::Mapped { pa, attrs: Attrs { mem: MemType::Device, ..DMA_ATTRS }, state: PageState::Owned };
            assert_eq!(corrupt(&mut w, pa, |_| classic(dev)), NOT_IDENTITY_RW);
            assert_eq!(corrupt(&mut w, pa, |d| d + K4), NOT_IDENTITY_RW);
            assert_eq!(corrupt(&mut w, pa, |d| d - K4), NOT_IDENTITY_RW);
            // A state the view never holds, or a pinned page's state.
            let so = Leaf::Mapped { pa, attrs: DMA_ATTRS, state: PageState::SharedOwned };
            assert_eq!(corrupt(&mut w, pa, |_| classic(so)), NOT_REACHABLE);
            assert_eq!(corrupt(&mut w, pa, |_| classic(dma_pinned(pa))), NOT_REACHABLE);
            // Left out, or an owner annotation.
            assert_eq!(corrupt(&mut w, pa, |_| 0), Some("the DMA view misses pages the host owns"));
            let ann = Leaf::Invalid(Owner::Guest(1));
            assert_eq!(corrupt(&mut w, pa, |_| classic(ann)), Some("the DMA view holds an annotation"));
        }
        // The pinned page: its own state, left out, as the host's own.
        assert_eq!(corrupt(&mut w, pinned, |d| d), None);
        assert_eq!(corrupt(&mut w, pinned, |_| 0), Some("the DMA view misses pinned pages"));
        assert_eq!(corrupt(&mut w, pinned, |_| classic(dma_owned(pinned))), NOT_REACHABLE);
        // A page shared without a pin, a guest-private page, the hyp's own.
        assert_eq!(corrupt(&mut w, unpinned, |_| classic(dma_pinned(unpinned))), NOT_REACHABLE);
        assert_eq!(corrupt(&mut w, unpinned, |_| classic(dma_owned(unpinned))), NOT_REACHABLE);
        assert_eq!(corrupt(&mut w, private, |_| classic(dma_owned(private))), NOT_REACHABLE);
        let hyp = HYP_OWN[0].0;
        assert_eq!(corrupt(&mut w, hyp, |_| classic(dma_owned(hyp))), NOT_REACHABLE);
        w.check();
        w.host.unpin(&mut w.env, Pa(pinned)).plain().unwrap();
        w.finish();
    }
}

/// The state the view mirrors changing behind its back: the walk of the
/// view is the same, what it is compared with is not.
#[test]
fn checker_catches_a_dma_view_out_of_step_with_the_host() {
    for bbml2 in [false, true] {
        let (mut w, pinned, unpinned) = fragmented(bbml2);
        let own = RAM + 17 * M2 + 200 * K4;
        // A host page given to the hyp in the host's view only.
        w.host.pgt.set(&mut w.env, own, K4, Leaf::Invalid(Owner::HypDonated)).unwrap();
        w.hyp
            .pgt
            .set(&mut w.env, own, K4, Leaf::Mapped { pa: own, attrs: Attrs::NORMAL_RW, state: PageState::Owned })
            .unwrap();
        assert_eq!(run(&mut w), NOT_REACHABLE);
        w.hyp.pgt.set(&mut w.env, own, K4, Leaf::Invalid(Owner::None)).unwrap();
        w.host.pgt.set(&mut w.env, own, K4, Leaf::Invalid(Owner::None)).unwrap();
        assert_eq!(run(&mut w), None);
        // The pin and its mapped mark dropped in the host's records only
        // (an unpin alone keeps the mark: the view may keep the page until
        // a conversion takes it).
        w.host.pins.unpin(pinned).unwrap();
        assert_eq!(run(&mut w), None);
        w.host.pins.unmap(pinned);
        assert_eq!(run(&mut w), NOT_REACHABLE);
        w.host.pins.pin(pinned, false).unwrap();
        // A pin taken in the records only.
        w.host.pins.pin(unpinned, false).unwrap();
        assert_eq!(run(&mut w), Some("the DMA view misses pinned pages"));
        w.host.pins.unpin(unpinned).unwrap();
        w.host.pins.unmap(unpinned);
        assert_eq!(run(&mut w), None);
        w.env.check_log();
        w.host.unpin(&mut w.env, Pa(pinned)).plain().unwrap();
        w.finish();
    }
}

/// What a tree may hold, for the property test: identity runs of the two
/// DMA leaves, other attributes and states, non-identity maps, owner
/// annotations, nothing.
fn leaf_strategy() -> impl Strategy<Value = (u8, u64)> {
    (0u8..7, 0u64..4)
}

fn leaf_of(kind: u8, ipa: u64, off: u64) -> Leaf {
    match kind {
        0 => dma_owned(ipa),
        1 => dma_pinned(ipa),
        2 => Leaf::Mapped { pa: ipa, attrs: Attrs::NORMAL_RWX, state: PageState::Owned },
        3 => Leaf::Mapped { pa: ipa, attrs: DMA_ATTRS, state: PageState::SharedOwned },
        4 => dma_owned(ipa + (off + 1) * K4),
        5 => Leaf::Invalid(Owner::Guest(off as u16)),
        _ => Leaf::Invalid(Owner::None),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random updates (pages, 2 MiB and 1 GiB ranges), then random raw
    /// bit flips in page descriptors: the raw walk lists exactly what the
    /// walk by leaves lists, and the table pages it counts are the tree's.
    #[test]
    fn raw_runs_agree_with_the_walk(
        ops in proptest::collection::vec((0u64..2048, 0u64..3, leaf_strategy()), 1..40),
        flips in proptest::collection::vec((0u64..2048, 0u32..64), 0..12),
    ) {
        let mut env = TestEnv::new();
        let mut s = Stage2::new(&mut env, 40, None).unwrap();
        s.keep_invalid_tables();
        let base = G;
        for &(page, scale, (kind, off)) in &ops {
            let (ipa, size) = match scale {
                0 => (base + page * K4, K4 * (1 + off)),
                1 => (base + (page % 8) * M2, M2),
                _ => (base, G),
            };
            s.set(&mut env, ipa, size, leaf_of(kind, ipa, off)).unwrap();
        }
        for &(page, bit) in &flips {
            let ipa = base + page * K4;
            if s.lookup(&mut env, ipa).unwrap().level == 3 {
                let ptep = s.leaf_ptep(&mut env, ipa);
                // SAFETY: a page descriptor of the live test tree (a leaf
                // at level 3: the flip makes no table).
                unsafe { *ptep ^= 1 << bit };
            }
        }
        prop_assert_eq!(collect_runs_raw(&mut env, &s), collect_runs(&mut env, &s));
        // And the checker's count of table pages sees the tree's.
        let (mut walked, mut counted) = (Vec::new(), Vec::new());
        s.for_each_table(&mut env, |pa, _| walked.push(pa));
        for_each_table(&mut env, &s, |pa| counted.push(pa));
        prop_assert_eq!(walked.len(), s.table_pages());
        prop_assert_eq!(walked, counted);
        s.destroy(&mut env);
    }
}
