//! What reaches memory before whom when pages change hands between the
//! host and a guest (the TestEnv log): a donation's cache maintenance before
//! the guest can map the pages, a reclaim's scrub and clean before the host
//! can.

use super::helpers::{first, Plain};
use super::world::*;
use crate::mm::addr::{Ipa, Pa};
use crate::mm::mem_protect::host_guest::*;
use crate::mm::testenv::Event;
use crate::mm::Error;

/// Runs `f`, which must fail with `want` and change nothing.
macro_rules! refused {
    ($w:expr, $want:expr, $call:expr) => {{
        let before = $w.snapshot();
        let got = $call;
        assert_eq!(got.err(), Some($want), "{}", stringify!($call));
        assert_eq!($w.snapshot(), before, "refused call changed something: {}", stringify!($call));
    }};
}

#[test]
fn donation_cleans_caches_before_the_guest_sees_the_pages() {
    let mut w = World::new();
    let pa = RAM + 4 * M2;
    // The host has used the memory: mapped (and cached) on its side.
    w.host.handle_fault(&mut w.env, Pa(pa)).plain().unwrap();
    w.env.check_log();
    host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(pa), Ipa(G), M2).plain().unwrap();
    let log = w.env.log.clone();
    let (host_s2, guest_s2) = (w.host.pgt.s2_id().unwrap(), w.guests[0].pgt.s2_id().unwrap());
    let host_gone = first(&log, |e| *e == Event::TlbiIpa { s2: host_s2, ipa: pa, level: 2 });
    let clean = first(&log, |e| *e == Event::CleanInvalPoc { pa, size: M2 });
    let icache = first(&log, |e| *e == Event::IcacheInval { pa, size: M2 });
    let guest_sees =
        first(&log, |e| matches!(e, Event::Write { s2, new, .. } if *s2 == guest_s2 && crate::mm::pte::is_valid(*new)));
    assert!(host_gone < clean && clean < icache && icache < guest_sees, "{log:?}");
    assert!(log[..clean].iter().all(|e| !matches!(e, Event::Write { s2, .. } if *s2 == guest_s2)));
    // A refused donation touches no cache.
    w.env.check_log();
    refused!(w, Error::Perm, host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[1], Pa(pa), Ipa(G), K4).plain());
    assert!(!w.env.log.iter().any(|e| matches!(e, Event::CleanInvalPoc { .. } | Event::IcacheInval { .. })));
    w.check();
    w.finish();
}

#[test]
fn reclaimed_pages_are_zeroed_and_cleaned_before_the_host_sees_them() {
    let mut w = World::new();
    let pa = RAM + 8 * M2 + 3 * K4;
    host_donate_guest(&mut w.env, &mut w.host, &mut w.guests[0], Pa(RAM + 8 * M2), Ipa(G), 4 * M2).plain().unwrap();
    w.env.check_log();
    let ipa = G + 3 * K4;
    guest_relinquish(&mut w.env, &mut w.host, &mut w.guests[0], Ipa(ipa), K4).plain().unwrap();
    let log = w.env.log.clone();
    let (host_s2, guest_s2) = (w.host.pgt.s2_id().unwrap(), w.guests[0].pgt.s2_id().unwrap());
    let guest_gone = first(&log, |e| *e == Event::TlbiIpa { s2: guest_s2, ipa, level: 3 });
    let scrub = first(&log, |e| *e == Event::Scrub { pa, size: K4 });
    let clean = first(&log, |e| *e == Event::CleanInvalPoc { pa, size: K4 });
    let host_write = first(&log, |e| matches!(e, Event::Write { s2, .. } if *s2 == host_s2));
    assert!(guest_gone < scrub && scrub < clean && clean < host_write, "{log:?}");
    w.check();
    w.finish();
}
