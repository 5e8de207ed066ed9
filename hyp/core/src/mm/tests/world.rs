//! The world the ownership tests run in: the host, the hyp and guests over
//! one [`TestEnv`], built as boot builds them (host RAM, the hyp's own
//! memory recorded, a DMA view), with the checks every test makes.

use super::helpers::Plain;
use crate::mm::addr::Pa;
use std::vec;
use std::vec::Vec;

use super::helpers::*;
use crate::mm::mem_protect::host_hyp::*;
use crate::mm::mem_protect::*;
use crate::mm::pgtable::Stage2;
use crate::mm::prot::Leaf;
use crate::mm::region::Region;
use crate::mm::testenv::TestEnv;

pub const G: u64 = 1 << 30;

pub const M2: u64 = 2 << 20;

pub const K4: u64 = 4096;

/// Host RAM in these tests: 64 MiB at 1 GiB.
pub const RAM: u64 = G;

pub const RAM_SIZE: u64 = 64 << 20;

/// The hyp's own memory in these tests (as boot records its carve-out): two
/// pages just above the model's busiest slots, and a whole 2 MiB block.
pub const HYP_OWN: [(u64, u64); 2] = [(RAM + 8 * K4, 2 * K4), (RAM + 7 * M2, M2)];

/// The DMA view's VMID in these tests (the SMMU's namespace: it may equal
/// a CPU VMID; the trees are told apart by `S2Id::iommu`).
pub const DMA_VMID: u16 = 1;

pub struct World {
    pub env: TestEnv,
    pub host: HostMm,
    pub hyp: HypMm,
    pub guests: Vec<GuestMm>,
}

impl World {
    /// A world whose SMMU has no BBML2 (the DMA view maps pages only).
    pub fn new() -> Self {
        Self::with_smmu(false)
    }

    /// A world whose SMMU has break-before-make level 2 or not (`bbml2`:
    /// the DMA view maps blocks and splits them live; the environment
    /// allows that).
    pub fn with_smmu(bbml2: bool) -> Self {
        let mut env = TestEnv::new();
        env.smmu_bbml2 = bbml2;
        let host_pgt = Stage2::new(&mut env, 40, Some(0)).unwrap();
        let mut hyp = HypMm::new(Stage2::new(&mut env, 40, None).unwrap());
        let mut host = HostMm::new(
            host_pgt,
            vec![Region { base: RAM, size: RAM_SIZE }],
            vec![Region { base: 0x0900_0000, size: 0x1000 }],
        );
        // The DMA view exists from the start (as at boot, before the
        // carve-out is claimed here: the claims must take it out again).
        let dma = Stage2::new(&mut env, 40, Some(DMA_VMID)).unwrap();
        host.enable_dma(&mut env, dma, bbml2).unwrap();
        for (base, size) in HYP_OWN {
            hyp_claim_own(&mut env, &mut host, &mut hyp, Pa(base), size).plain().unwrap();
        }
        let guests = (1..=2).map(|h| GuestMm { pgt: Stage2::new(&mut env, 40, Some(h)).unwrap(), handle: h }).collect();
        World { env, host, hyp, guests }
    }

    /// Every leaf of every table, to prove a refused call changed nothing.
    pub fn snapshot(&mut self) -> Vec<Vec<(u64, u64, u8, Leaf)>> {
        let mut v =
            vec![leaves(&mut self.env, &self.host.pgt, 0, 1 << 40), leaves(&mut self.env, &self.hyp.pgt, 0, 1 << 40)];
        if let Some(d) = &self.host.dma {
            v.push(leaves(&mut self.env, d, 0, 1 << 40));
        }
        for g in &self.guests {
            v.push(leaves(&mut self.env, &g.pgt, 0, 1 << 40));
        }
        v
    }

    pub fn host_leaf(&mut self, pa: u64) -> Leaf {
        self.host.leaf_at(&mut self.env, Pa(pa)).plain().unwrap()
    }
    pub fn guest_leaf(&mut self, g: usize, ipa: u64) -> (Leaf, u8) {
        let m = self.guests[g].pgt.lookup(&mut self.env, ipa).unwrap();
        (m.at(ipa), m.level)
    }
    pub fn check(&mut self) {
        let World { env, host, hyp, guests } = self;
        check_structure(env, &host.pgt);
        check_structure(env, &hyp.pgt);
        let mut all: Vec<&Stage2> = vec![&host.pgt, &hyp.pgt];
        if let Some(d) = &host.dma {
            check_structure(env, d);
            all.push(d);
        }
        for g in guests.iter() {
            check_structure(env, &g.pgt);
            all.push(&g.pgt);
        }
        check_alloc(env, &all);
        env.check_log();
        let gs: Vec<&GuestMm> = guests.iter().collect();
        if let Err(v) = crate::mm::invariants::check(env, host, hyp, &gs) {
            panic!("invariant violated: {} at {:#x}", v.what, v.addr);
        }
    }
    pub fn finish(self) {
        let World { mut env, host, hyp, guests } = self;
        host.pgt.destroy(&mut env);
        if let Some(d) = host.dma {
            d.destroy(&mut env);
        }
        hyp.pgt.destroy(&mut env);
        for g in guests {
            g.pgt.destroy(&mut env);
        }
        env.check_log();
        env.assert_no_leaks();
    }
}
