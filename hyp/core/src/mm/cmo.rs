//! The cache maintenance of the ownership transitions that hand pages
//! between the host and a guest, decided once for both modes of stage 2:
//! without forced write-back a lower EL may access memory with its caches
//! off (stage 1 disabled or non-cacheable), so a page changes hands only
//! once its lines are cleaned and invalidated to the point of coherency;
//! with FEAT_S2FWB in effect ([`pte::fwb`]: HCR_EL2.FWB set, the CPUs'
//! trees map RAM as forced Normal Write-Back) every lower-EL access is
//! cacheable and coherent with the hyp's, so the CPUs need none of it.
//! Devices are another matter: a non-coherent SMMU's transactions bypass
//! the caches whatever HCR_EL2 says ([`MmEnv::dma_noncoherent`]).
//! `docs/isolation.md` ("Cache maintenance and FEAT_S2FWB") says why each
//! operation left out is safe.

use super::env::MmEnv;
use super::pte;

/// Pages the host lost (its stage-2 and DMA view updated, TLBs
/// invalidated) and a guest is about to map, executable if `exec`.
/// Without FWB: cleaned and invalidated to the point of coherency (what the
/// host wrote reaches memory, no line of it stays to be read around by a
/// guest with its caches off). With FWB: nothing on the D-side (the guest's
/// accesses are Write-Back and see the caches). Both: the instruction
/// caches invalidated for an executable mapping (FEAT_S2FWB implies
/// CTR_EL0.IDC, so no clean to the point of unification is needed first).
#[inline]
pub fn before_guest_maps<E: MmEnv>(env: &mut E, pa: u64, size: u64, exec: bool) {
    if !pte::fwb() {
        env.dcache_clean_inval_poc(pa, size);
    }
    if exec {
        env.icache_inval_pou(pa, size);
    }
}

/// Pages a guest lost (its stage-2 entry invalid, TLBs invalidated) and the
/// host is about to get back: zeroed, then, unless FWB holds for every
/// observer, cleaned and invalidated to the point of coherency, so neither
/// the host (perhaps with its caches off) nor a device reading memory
/// directly sees a byte the guest wrote.
#[inline]
pub fn scrub_for_host<E: MmEnv>(env: &mut E, pa: u64, size: u64) {
    env.scrub(pa, size);
    if !pte::fwb() || env.dma_noncoherent() {
        env.dcache_clean_inval_poc(pa, size);
    }
}
