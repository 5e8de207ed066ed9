//! The test environment's checker itself (`mm/testenv.rs`): for each rule
//! of the hardware it checks on the log (barriers before a table is
//! installed, break-before-make, TLB invalidation naming the tree and IPA,
//! tables freed only after an invalidation), a log that breaks it is caught.

use super::pgtable::map;
use crate::mm::env::{MmEnv, S2Id};
use crate::mm::prot::{Attrs, Leaf, PageState};
use crate::mm::testenv::TestEnv;

const G: u64 = 1 << 30;

fn bad_env() -> (TestEnv, S2Id, u64) {
    let mut env = TestEnv::new();
    let root = env.alloc_root(1).unwrap();
    let s2 = S2Id { vmid: 5, root, t0sz: 25, sl0: 1, iommu: false };
    (env, s2, root)
}

#[test]
#[should_panic(expected = "before its contents were ordered")]
fn checker_catches_a_table_installed_without_barrier() {
    let (mut env, s2, root) = bad_env();
    let t = env.alloc_table().unwrap();
    // SAFETY: t is a fresh test page; root is a live test root.
    unsafe {
        env.init_pte(t as *mut u64, 0);
        env.write_pte(&s2, root as *mut u64, 0, 1, crate::mm::pte::make_table(t));
    }
    env.check_log();
}

/// A page from `alloc_table_for_fill` is not zeroed: one installed with an
/// entry never written (it would translate through garbage) is caught.
#[test]
#[should_panic(expected = "1 entries never written since alloc_table_for_fill")]
fn checker_catches_a_table_for_fill_installed_partly_written() {
    let (mut env, s2, root) = bad_env();
    let t = env.alloc_table_for_fill().unwrap();
    // SAFETY: t is a fresh test page; root is a live test root.
    unsafe {
        for i in 0..511 {
            env.init_pte((t as *mut u64).add(i), 0);
        }
        env.publish_barrier();
        env.write_pte(&s2, root as *mut u64, 0, 1, crate::mm::pte::make_table(t));
    }
    env.check_log();
}

#[test]
#[should_panic(expected = "installed in an SMMU tree without table_filled")]
fn checker_catches_an_smmu_table_not_announced_filled() {
    let (mut env, s2, root) = bad_env();
    let s2 = S2Id { iommu: true, ..s2 };
    let t = env.alloc_table().unwrap();
    // SAFETY: t is a fresh test page; root is a live test root.
    unsafe {
        env.init_pte(t as *mut u64, 0);
        env.publish_barrier();
        env.write_pte(&s2, root as *mut u64, 0, 1, crate::mm::pte::make_table(t));
    }
    env.check_log();
}

#[test]
#[should_panic(expected = "no TLBI naming its tree and IPA")]
fn checker_catches_a_tlbi_of_the_wrong_tree() {
    let (mut env, s2, root) = bad_env();
    let leaf = crate::mm::pte::encode(map(0), 1);
    // SAFETY: root is a live test root.
    unsafe {
        env.write_pte(&s2, root as *mut u64, 0, 1, leaf);
        env.write_pte(&s2, root as *mut u64, 0, 1, 0);
    }
    env.tlbi_ipa(&S2Id { vmid: 6, ..s2 }, 0, 1);
    env.check_log();
}

#[test]
#[should_panic(expected = "no TLBI naming its tree and IPA")]
fn checker_catches_a_tlbi_of_the_wrong_ipa() {
    let (mut env, s2, root) = bad_env();
    let leaf = crate::mm::pte::encode(map(0), 1);
    // SAFETY: root is a live test root.
    unsafe {
        env.write_pte(&s2, root as *mut u64, 0, 1, leaf);
        env.write_pte(&s2, root as *mut u64, 0, 1, 0);
    }
    env.tlbi_ipa(&s2, G, 1);
    env.check_log();
}

#[test]
#[should_panic(expected = "with no write making that entry invalid before it")]
fn checker_catches_a_tlbi_before_the_write() {
    let (mut env, s2, root) = bad_env();
    let leaf = crate::mm::pte::encode(map(0), 1);
    // SAFETY: root is a live test root.
    unsafe { env.write_pte(&s2, root as *mut u64, 0, 1, leaf) };
    env.check_log();
    // The invalidation before the write it should follow: the TLBI at EL2
    // has no barrier of its own to complete that write first.
    env.tlbi_ipa(&s2, 0, 1);
    // SAFETY: as above.
    unsafe { env.write_pte(&s2, root as *mut u64, 0, 1, 0) };
    env.tlbi_ipa(&s2, 0, 1);
    env.check_log();
}

#[test]
#[should_panic(expected = "freed with no TLB invalidation covering it")]
fn checker_catches_a_table_freed_before_tlbi() {
    let (mut env, s2, root) = bad_env();
    let t = env.alloc_table().unwrap();
    env.publish_barrier();
    // SAFETY: root is a live test root.
    unsafe {
        env.write_pte(&s2, root as *mut u64, 0, 1, crate::mm::pte::make_table(t));
        env.write_pte(&s2, root as *mut u64, 0, 1, 0);
    }
    // Freed while a walker may still hold it: the TLBI comes too late.
    env.free_table(t);
    env.tlbi_vmid(&s2);
    env.check_log();
}

#[test]
#[should_panic(expected = "with no VMID-wide invalidation")]
fn checker_catches_a_root_freed_without_tlbi() {
    let (mut env, s2, root) = bad_env();
    let leaf = crate::mm::pte::encode(map(0), 1);
    // SAFETY: root is a live test root.
    unsafe { env.write_pte(&s2, root as *mut u64, 0, 1, leaf) };
    env.free_root(root, 1);
    env.check_log();
}

#[test]
#[should_panic(expected = "valid→valid")]
fn checker_catches_a_valid_to_valid_change_beyond_the_software_bits() {
    let (mut env, s2, root) = bad_env();
    let moved = Leaf::Mapped { pa: G, attrs: Attrs::NORMAL_RWX, state: PageState::SharedOwned };
    // SAFETY: root is a live test root.
    unsafe {
        env.write_pte(&s2, root as *mut u64, 0, 1, crate::mm::pte::encode(map(0), 1));
        // The state and the output address change: break-before-make needed.
        env.write_pte(&s2, root as *mut u64, 0, 1, crate::mm::pte::encode(moved, 1));
    }
    env.check_log();
}

#[test]
fn checker_accepts_a_change_of_the_software_bits_alone() {
    let (mut env, s2, root) = bad_env();
    let shared = Leaf::Mapped { pa: 0, attrs: Attrs::NORMAL_RWX, state: PageState::SharedOwned };
    let (a, b) = (crate::mm::pte::encode(map(0), 1), crate::mm::pte::encode(shared, 1));
    assert!(crate::mm::pte::sw_bits_only(a, b));
    // SAFETY: root is a live test root.
    unsafe {
        env.write_pte(&s2, root as *mut u64, 0, 1, a);
        env.write_pte(&s2, root as *mut u64, 0, 1, b);
    }
    env.check_log();
}
