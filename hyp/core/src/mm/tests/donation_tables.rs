//! What a donation takes from a VM's memcache is what the host's helper
//! says, `hyp_abi::host::donation_table_pages` (the tables of the largest
//! blocks the donation maps): with exactly that many pages the donation
//! succeeds and uses them all, with one fewer it is `NoMem` short by one
//! and changes nothing; a second donation next to it, over tables the
//! first built, needs at most what the helper says for it.
//!
//! The host's RAM is a range of PAs nothing reads or writes (a donation
//! only writes descriptors); the VM's table pages come from the test
//! environment, as the host's VM_TOPUP would give them.

use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

use super::helpers::*;
use crate::mm::mem_protect::host_guest::*;
use crate::mm::mem_protect::*;
use crate::mm::pgtable::Stage2;
use crate::mm::prot::{Leaf, Owner};
use crate::mm::region::Region;
use crate::mm::testenv::TestEnv;
use crate::mm::Error;
use hyp_abi::host::donation_table_pages;

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;
/// The host's RAM: 8 GiB from a 1 GiB-aligned PA.
const RAM: u64 = 1 << 40;
const RAM_SIZE: u64 = 8 * G1;
/// Where the guest's memory starts in its IPA space (as the VMMs').
const GUEST: u64 = G1;

struct Donations {
    env: TestEnv,
    host: HostMm,
    guest: GuestMm,
}

impl Donations {
    fn new(ipa_bits: u8) -> Self {
        let mut env = TestEnv::new();
        // Big ranges: no event log.
        env.record = false;
        let host_pgt = Stage2::new(&mut env, 48, Some(0)).unwrap();
        let host = HostMm::new(host_pgt, vec![Region { base: RAM, size: RAM_SIZE }], vec![]);
        let mut pgt = Stage2::new(&mut env, ipa_bits, Some(1)).unwrap();
        pgt.use_own_tables();
        Donations { env, host, guest: GuestMm { pgt, handle: 1 } }
    }

    /// Tops the VM's memcache up to `n` pages.
    fn topup_to(&mut self, n: u64) {
        self.guest.pgt.fill_own_tables(&mut self.env, n as usize).unwrap();
    }

    fn donate(&mut self, pa: u64, ipa: u64, size: u64) -> Result<(), Refused> {
        let Donations { env, host, guest } = self;
        host_donate_guest(env, host, guest, Pa(pa), Ipa(ipa), size)
    }

    fn guest_leaves(&mut self) -> Vec<(u64, u64, u8, Leaf)> {
        leaves(&mut self.env, &self.guest.pgt, 0, self.guest.pgt.ipa_limit())
    }

    fn finish(self) {
        let Donations { mut env, mut host, mut guest } = self;
        guest_teardown(&mut env, &mut host, &mut guest).unwrap();
        let mut own = guest.pgt.destroy_keeping_own(&mut env).unwrap();
        own.drain(&mut env);
        host.pgt.destroy(&mut env);
        env.assert_no_leaks();
    }
}

/// The test's donations: (IPA bits, PA, IPA, size, second size). The PA's
/// offset from the IPA picks what may be a block: any 1 GiB, 2 MiB or
/// 4 KiB multiple (and half a GiB: aligned to every size but 1 GiB), so
/// that 1 GiB blocks, 2 MiB blocks or pages only can fit; sizes from a page to over 2 GiB (pages only: up to 8 MiB).
fn donation() -> impl Strategy<Value = (u8, u64, u64, u64, u64)> {
    let bits = prop_oneof![Just(34u8), Just(39), Just(40), Just(48)];
    let at = (0..2u64, 0..512u64, prop_oneof![Just(0u64), 0..512u64]);
    let shift = prop_oneof![
        (0..2u64).prop_map(|j| j * G1),
        Just(G1 / 2),
        (1..512u64).prop_map(|j| j * M2),
        (1..512u64).prop_map(|j| j * K4)
    ];
    let size = (0..3u64, 0..512u64, prop_oneof![Just(0u64), 0..512u64]);
    (bits, at, shift, size, 0..600u64).prop_map(|(bits, (a, b, c), shift, (x, y, z), second)| {
        let ipa_off = a * G1 + b * M2 + c * K4;
        let pages_only = shift % M2 != 0;
        let (x, y) = if pages_only { (0, y % 4) } else { (x, y) };
        let size = (x * G1 + y * M2 + z * K4).max(K4);
        let second = if pages_only { second.max(1) * 3 * K4 } else { second * M2 + K4 };
        (bits, RAM + ipa_off + shift, GUEST + ipa_off, size, second)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    /// Exactly the helper's pages: the donation succeeds and uses every
    /// one; one fewer: `NoMem`, one page short, nothing changed.
    #[test]
    fn a_donation_takes_exactly_the_helpers_table_pages((bits, pa, ipa, size, second) in donation()) {
        let mut d = Donations::new(bits);
        let n = donation_table_pages(bits, pa, ipa, size);
        if n > 0 {
            d.topup_to(n - 1);
            let before = d.guest_leaves();
            let r = d.donate(pa, ipa, size);
            prop_assert_eq!(r.map_err(|e| (e.error(), e.side())), Err((Error::NoMem, Side::Guest)));
            prop_assert_eq!(d.guest.pgt.tables_short(), 1);
            prop_assert_eq!(d.guest.pgt.own_tables(), Some(n as usize - 1));
            prop_assert_eq!(d.guest_leaves(), before);
            prop_assert_eq!(d.host.leaf_at(&mut d.env, Pa(pa)).unwrap(), Leaf::Invalid(Owner::None));
        }
        d.topup_to(n);
        prop_assert!(d.donate(pa, ipa, size).is_ok());
        prop_assert_eq!(d.guest.pgt.own_tables(), Some(0));
        prop_assert_eq!(d.guest.pgt.table_pages() as u64, n);
        check_structure(&mut d.env, &d.guest.pgt);
        // The memory next to it, over the tables the first built: the
        // helper's count is enough (never too few).
        let m = donation_table_pages(bits, pa + size, ipa + size, second);
        d.topup_to(m);
        prop_assert!(d.donate(pa + size, ipa + size, second).is_ok());
        prop_assert!(d.guest.pgt.table_pages() as u64 <= n + m);
        d.finish();
    }
}

/// The cases the helper's own tests name, through the core: a 1 GiB
/// block, a 2 MiB-aligned GiB, a GiB of pages.
#[test]
fn a_gib_takes_its_blocks_tables() {
    for (bits, pa, want) in [(40, RAM, 0), (48, RAM, 1), (40, RAM + M2, 1), (40, RAM + K4, 513), (0, RAM + 2 * G1, 0)] {
        let mut d = Donations::new(if bits == 0 { 40 } else { bits });
        assert_eq!(donation_table_pages(bits, pa, GUEST, G1), want);
        d.topup_to(want);
        d.donate(pa, GUEST, G1).unwrap();
        assert_eq!((d.guest.pgt.own_tables(), d.guest.pgt.table_pages() as u64), (Some(0), want));
        d.finish();
    }
}
