//! Stage-2 forced write-back (FEAT_S2FWB): the MemAttr encoding each tree
//! gets in either mode, and the cache maintenance a donation and a reclaim
//! issue (the TestEnv log) with and without it, with a coherent and a
//! non-coherent SMMU.

use super::helpers::Plain;
use super::world::*;
use crate::mm::addr::{Ipa, Pa};
use crate::mm::mem_protect::host_guest::*;
use crate::mm::pte;
use crate::mm::testenv::Event;
use std::vec::Vec;

/// MemAttr[3:0] (descriptor bits [5:2]) of a valid descriptor.
fn memattr(d: u64) -> u64 {
    assert!(pte::is_valid(d), "{d:#x}");
    (d >> 2) & 0xf
}

/// The raw descriptor translating `ipa` in `t`.
fn raw(w: &World, t: &crate::mm::pgtable::Stage2, ipa: u64) -> u64 {
    t.page_leaf(&w.env, ipa).unwrap().pte
}

fn cleans(log: &[Event]) -> Vec<(u64, u64)> {
    log.iter()
        .filter_map(|e| if let Event::CleanInvalPoc { pa, size } = *e { Some((pa, size)) } else { None })
        .collect()
}

fn position(log: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    log.iter().position(f).unwrap_or_else(|| panic!("not in the log: {log:?}"))
}

/// Donates 2 MiB, shares a page of it back, pins it (the DMA view maps
/// it), and returns (pa, the donation's log).
fn donate_share_pin(w: &mut World) -> (u64, Vec<Event>) {
    let pa = RAM + 4 * M2;
    w.host.handle_fault(&mut w.env, Pa(pa)).unwrap();
    w.env.check_log();
    host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(pa), Ipa(G), M2).unwrap();
    let log = w.env.log.clone();
    w.env.check_log();
    let shared = guest_share_host(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + 3 * K4), K4).plain().unwrap();
    assert_eq!(shared, pa + 3 * K4);
    w.host.pin(&mut w.env, Pa(shared), false).unwrap();
    (pa, log)
}

#[test]
fn fwb_trees_use_the_forced_write_back_encoding_the_dma_view_the_classic_one() {
    // SAFETY: host tests: the mode is this thread's.
    unsafe { pte::set_fwb(true) };
    let mut w = World::new();
    let (pa, _) = donate_share_pin(&mut w);
    // Guest RAM (a 2M block, then the page split out of it by the share)
    // and the host's borrowed page: Normal WB forced, 0b0110.
    assert_eq!(memattr(raw(&w, &w.guests[0].pgt, G)), pte::MEMATTR_FWB_NORMAL_WB);
    assert_eq!(memattr(raw(&w, &w.guests[0].pgt, G + 3 * K4)), pte::MEMATTR_FWB_NORMAL_WB);
    assert_eq!(memattr(raw(&w, &w.host.pgt, pa + 3 * K4)), pte::MEMATTR_FWB_NORMAL_WB);
    // The host's RAM faulted in as a block, and a device page.
    w.host.handle_fault(&mut w.env, Pa(RAM + 12 * M2)).unwrap();
    assert_eq!(memattr(raw(&w, &w.host.pgt, RAM + 12 * M2)), pte::MEMATTR_FWB_NORMAL_WB);
    w.host.handle_fault(&mut w.env, Pa(0x0900_0000)).unwrap();
    assert_eq!(memattr(raw(&w, &w.host.pgt, 0x0900_0000)), pte::MEMATTR_DEVICE_NGNRE);
    // The SMMU walks the DMA view without HCR_EL2: the classic encoding.
    let dma = w.host.dma.as_ref().unwrap();
    assert_eq!(memattr(raw(&w, dma, pa + 3 * K4)), pte::MEMATTR_NORMAL_WB);
    assert_eq!(memattr(raw(&w, dma, RAM + 12 * M2)), pte::MEMATTR_NORMAL_WB);
    // The hyp's bookkeeping tree (no walker reads it) stays classic too.
    crate::mm::mem_protect::host_hyp::host_share_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(RAM + 12 * M2), K4)
        .unwrap();
    assert_eq!(memattr(raw(&w, &w.hyp.pgt, RAM + 12 * M2)), pte::MEMATTR_NORMAL_WB);
    assert_eq!(memattr(raw(&w, &w.host.pgt, RAM + 12 * M2)), pte::MEMATTR_FWB_NORMAL_WB);
    w.host.unpin(&mut w.env, Pa(pa + 3 * K4)).unwrap();
    w.check();
    w.finish();
}

#[test]
fn classic_trees_use_the_classic_encoding() {
    // SAFETY: host tests: the mode is this thread's.
    unsafe { pte::set_fwb(false) };
    let mut w = World::new();
    let (pa, _) = donate_share_pin(&mut w);
    assert_eq!(memattr(raw(&w, &w.guests[0].pgt, G)), pte::MEMATTR_NORMAL_WB);
    assert_eq!(memattr(raw(&w, &w.host.pgt, pa + 3 * K4)), pte::MEMATTR_NORMAL_WB);
    assert_eq!(memattr(raw(&w, w.host.dma.as_ref().unwrap(), pa + 3 * K4)), pte::MEMATTR_NORMAL_WB);
    w.host.handle_fault(&mut w.env, Pa(0x0900_0000)).unwrap();
    assert_eq!(memattr(raw(&w, &w.host.pgt, 0x0900_0000)), pte::MEMATTR_DEVICE_NGNRE);
    w.host.unpin(&mut w.env, Pa(pa + 3 * K4)).unwrap();
    w.check();
    w.finish();
}

#[test]
fn donation_under_fwb_cleans_nothing_but_invalidates_the_icache() {
    // SAFETY: host tests: the mode is this thread's.
    unsafe { pte::set_fwb(true) };
    let mut w = World::new();
    let (pa, log) = donate_share_pin(&mut w);
    assert!(cleans(&log).is_empty(), "{log:?}");
    let guest_s2 = w.guests[0].pgt.s2_id().unwrap();
    let icache = position(&log, |e| *e == Event::IcacheInval { pa, size: M2 });
    let guest_sees =
        position(&log, |e| matches!(e, Event::Write { s2, new, .. } if *s2 == guest_s2 && pte::is_valid(*new)));
    assert!(icache < guest_sees, "{log:?}");
    w.host.unpin(&mut w.env, Pa(pa + 3 * K4)).unwrap();
    w.check();
    w.finish();
}

#[test]
fn donation_without_fwb_cleans_the_range() {
    // SAFETY: host tests: the mode is this thread's.
    unsafe { pte::set_fwb(false) };
    let mut w = World::new();
    let (pa, log) = donate_share_pin(&mut w);
    assert_eq!(cleans(&log), [(pa, M2)]);
    w.host.unpin(&mut w.env, Pa(pa + 3 * K4)).unwrap();
    w.check();
    w.finish();
}

/// Relinquishes one page and tears the guest down: the cleans issued, and
/// each scrub's place before the host's stage-2 write for it.
fn reclaims(fwb: bool, dma_noncoherent: bool) -> (u64, Vec<Event>) {
    // SAFETY: host tests: the mode is this thread's.
    unsafe { pte::set_fwb(fwb) };
    let mut w = World::new();
    w.env.dma_noncoherent = dma_noncoherent;
    let (pa, _) = donate_share_pin(&mut w);
    w.host.unpin(&mut w.env, Pa(pa + 3 * K4)).unwrap();
    w.env.check_log();
    assert_eq!(
        guest_relinquish(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(G + 5 * K4), K4).plain(),
        Ok(pa + 5 * K4)
    );
    assert!(guest_teardown(&mut w.env, &mut w.host, &mut w.guests[0]).unwrap() > 0);
    let log = w.env.log.clone();
    let host_s2 = w.host.pgt.s2_id().unwrap();
    // Every scrub comes before the host's stage-2 gets the range back.
    let scrub = position(&log, |e| *e == Event::Scrub { pa: pa + 5 * K4, size: K4 });
    let host_gets = position(&log, |e| matches!(e, Event::Write { s2, .. } if *s2 == host_s2));
    assert!(scrub < host_gets, "{log:?}");
    w.check();
    w.finish();
    (pa, log)
}

#[test]
fn reclaim_under_fwb_with_a_coherent_smmu_scrubs_without_cleaning() {
    let (_, log) = reclaims(true, false);
    assert!(cleans(&log).is_empty(), "{log:?}");
    assert!(log.iter().filter(|e| matches!(e, Event::Scrub { .. })).count() >= 2);
}

#[test]
fn reclaim_cleans_each_scrub_without_fwb_or_with_a_noncoherent_smmu() {
    for (fwb, nc) in [(false, false), (false, true), (true, true)] {
        let (pa, log) = reclaims(fwb, nc);
        let scrubs: Vec<(u64, u64)> = log
            .iter()
            .filter_map(|e| if let Event::Scrub { pa, size } = *e { Some((pa, size)) } else { None })
            .collect();
        assert!(scrubs.contains(&(pa + 5 * K4, K4)));
        assert_eq!(cleans(&log), scrubs, "fwb {fwb} noncoherent {nc}");
        // Each clean right after its scrub.
        for (i, e) in log.iter().enumerate() {
            if let Event::Scrub { pa, size } = *e {
                assert_eq!(log[i + 1], Event::CleanInvalPoc { pa, size });
            }
        }
    }
}
