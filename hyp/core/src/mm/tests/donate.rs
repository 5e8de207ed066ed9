//! DONATE_GUEST checks each side in the walk that counts its update
//! (`Stage2::count_checked`), then the DMA view's, and allocates for all
//! three or none: the refusal is still the first page refused, the host's
//! side before the guest's, with the state found there; no memory refuses
//! with nothing changed and nothing leaked; a block-sized donation is one
//! entry on each side.

use super::helpers::Plain;
use super::world::*;
use crate::mm::addr::{Ipa, Pa};
use crate::mm::mem_protect::host_guest::*;
use crate::mm::mem_protect::host_hyp::*;
use crate::mm::mem_protect::*;
use crate::mm::prot::{Leaf, Owner, PageState};
use crate::mm::testenv::Event;
use crate::mm::Error;

/// Donates `n` pages from `pa` to guest 0 at `ipa`; on refusal checks that
/// nothing changed and nothing was written, and returns the refusal.
fn donate(w: &mut World, pa: u64, ipa: u64, n: u64) -> Result<(), Refused> {
    let before = w.snapshot();
    w.env.check_log();
    let r = host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(pa), Ipa(ipa), n * K4);
    if r.is_err() {
        assert_eq!(w.snapshot(), before, "a refused donation changed a table");
        assert!(!w.env.log.iter().any(|e| matches!(e, Event::Write { .. })), "{:?}", w.env.log);
    }
    r
}

#[test]
fn a_refusal_names_the_first_page_refused_host_side_first() {
    let mut w = World::new();
    let pa = RAM + 16 * M2;
    // Page 5 of the host's range is the hyp's now; page 3 of the guest's
    // range is mapped already.
    host_donate_hyp(&mut w.env, &mut w.host, &mut w.hyp, Pa(pa + 5 * K4), K4).plain().unwrap();
    host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(pa + M2), Ipa(G + 3 * K4), K4).plain().unwrap();
    let r = donate(&mut w, pa, G, 8).unwrap_err();
    assert_eq!((r.error(), r.side(), r.at()), (Error::Perm, Side::Host, pa + 5 * K4), "{r}");
    assert_eq!(r.found(), Some(Leaf::Invalid(Owner::HypDonated)));
    // The host's range fine: the guest's page 3.
    let r = donate(&mut w, pa + 8 * K4, G, 8).unwrap_err();
    assert_eq!((r.error(), r.side(), r.at()), (Error::Perm, Side::Guest, G + 3 * K4), "{r}");
    assert!(matches!(r.found(), Some(Leaf::Mapped { state: PageState::Owned, .. })), "{r}");
    // Both fine: donated.
    donate(&mut w, pa + 8 * K4, G + 8 * K4, 8).unwrap();
    w.check();
    w.finish();
}

#[test]
fn no_memory_for_any_side_changes_nothing() {
    let mut w = World::new();
    let pa = RAM + 16 * M2 + 3 * K4;
    // A range that needs table pages in the guest (a fresh 1 GiB of IPA)
    // and in the host (pages of a block): each budget short of what all
    // three sides need refuses with nothing changed and nothing leaked.
    let mut budget = 0;
    loop {
        w.env.budget = Some(budget);
        let r = donate(&mut w, pa, 4 * G + 3 * K4, 4);
        w.env.budget = None;
        match r {
            Ok(()) => break,
            Err(r) => assert_eq!(r.error(), Error::NoMem, "{r}"),
        }
        w.check();
        budget += 1;
        assert!(budget < 16, "never enough table pages");
    }
    assert!(budget >= 2, "both trees needed table pages: {budget}");
    w.check();
    w.finish();
}

#[test]
fn a_block_sized_donation_is_one_entry_each_side() {
    let mut w = World::new();
    let pa = RAM + 16 * M2;
    donate(&mut w, pa, 2 * G, 512).unwrap();
    let (l, level) = w.guest_leaf(0, 2 * G + 7 * K4);
    assert_eq!(level, 2, "a 2 MiB block in the guest");
    assert_eq!(l, Leaf::Mapped { pa: pa + 7 * K4, attrs: GUEST_RAM, state: PageState::Owned });
    let m = w.host.pgt.lookup(&mut w.env, pa + 7 * K4).unwrap();
    assert_eq!((m.leaf, m.level), (Leaf::Invalid(Owner::Guest(w.guests[0].handle)), 2));
    let d = w.host.dma.as_ref().unwrap().lookup(&mut w.env, pa + 7 * K4).unwrap();
    assert_eq!(d.at(pa + 7 * K4), Leaf::Invalid(Owner::None));
    w.check();
    w.finish();
}
