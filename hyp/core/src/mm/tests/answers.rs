//! Each transition is one function whose one-page case only checks by a
//! faster descent: its whole answer (the PA, or the refusal: side,
//! address, state found) is the range check's, between random operations.

use proptest::prelude::*;
use std::format;
use std::vec::Vec;

use super::model_ownership::{apply, op};
use super::one_page::{by_range, norm, same, stats};
use super::world::{World, G, K4, RAM};
use crate::mm::addr::{Ipa, Pa};
use crate::mm::mem_protect::host_guest::*;
use crate::mm::mem_protect::host_hyp::*;
use crate::mm::mem_protect::*;
use crate::mm::prot::Leaf;

/// A one-page call whose whole answer two worlds compare: the PA, or the
/// refusal with its side, address and the state found there. `k` picks
/// the transition, `page` the page (guest `g`'s IPA or the host's PA).
fn probe(w: &mut World, k: u8, g: usize, page: u64) -> Result<u64, Refused> {
    let World { env, host, hyp, guests } = w;
    let (ipa, pa) = (Ipa(G + page * K4), Pa(RAM + page * K4));
    match k % 6 {
        0 => guest_share_host(env, host, &mut guests[g], ipa, K4).map(Pa::get),
        1 => guest_unshare_host(env, host, &mut guests[g], ipa, K4).map(Pa::get),
        2 => host_share_hyp(env, host, hyp, pa, K4).map(|()| 0),
        3 => host_unshare_hyp(env, host, hyp, pa, K4).map(|()| 0),
        4 => host.handle_fault(env, pa).map(|f| match f {
            HostFault::Mapped { level, base, .. } => base | level as u64,
            HostFault::Spurious => 1,
        }),
        _ => guest_relinquish(env, host, &mut guests[g], ipa, K4).map(Pa::get),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, max_shrink_iters: 1000, ..ProptestConfig::default() })]

    /// Each transition is one function whose one-page case only checks by
    /// a faster descent: between random operations, one-page calls of
    /// every transition give the same whole answer (the PA, or the same
    /// refusal: side, address, state found), the same events, tables and
    /// counters, whether they take the one-page check or are forced to
    /// the range check.
    #[test]
    fn one_page_and_range_checks_answer_alike(
        ops in proptest::collection::vec(op(), 80),
        probes in proptest::collection::vec((0..6u8, 0..2usize, 0..12u64), 80),
    ) {
        let (mut a, mut b) = (World::new(), World::new());
        let mut refusals = 0;
        for (o, &(k, g, page)) in ops.iter().zip(&probes) {
            same(&mut a, &mut b, &|w| apply(w, o).0, &format!("{o:?}"))?;
            let ra = probe(&mut a, k, g, page);
            let rb = by_range(|| probe(&mut b, k, g, page));
            prop_assert_eq!(ra, rb, "probe {} of guest {} at page {}", k, g, page);
            refusals += ra.is_err() as u32;
            if let Err(r) = ra {
                // A refusal names an address inside the call's range: the
                // guest's IPA, or on the host's side the page's PA (for a
                // guest's call, the PA its IPA maps to: a donation need not
                // keep IPA and PA offsets equal).
                let ipa = G + page * K4;
                let backing = match a.guests[g].pgt.lookup(&mut a.env, ipa) {
                    Ok(m) if matches!(k % 6, 0 | 1 | 5) => match m.leaf {
                        Leaf::Mapped { pa, .. } => Some(pa + (ipa - m.base)),
                        _ => None,
                    },
                    _ => None,
                };
                let at = match r.side() {
                    Side::Guest => ipa,
                    _ => backing.unwrap_or(RAM + page * K4),
                };
                prop_assert!(r.at() == at || r.side() == Side::Args, "{}", r);
            }
            let (ea, eb): (Vec<_>, Vec<_>) = (a.env.log.iter().map(norm).collect(), b.env.log.iter().map(norm).collect());
            prop_assert_eq!(ea, eb, "events of probe {}", k);
            prop_assert_eq!(a.snapshot(), b.snapshot(), "tables after probe {}", k);
            prop_assert_eq!(stats(&a), stats(&b), "counters after probe {}", k);
            a.check();
            b.check();
        }
        prop_assert!(refusals > 0);
        a.finish();
        b.finish();
    }
}
