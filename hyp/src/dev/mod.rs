//! Device drivers of the hyp's own: the PL011 of its console, the few GIC
//! registers it needs itself, the SMMUv3 it owns. They touch their MMIO
//! and import nothing above the pool and the arch layer (what the hyp
//! emulates for the host is `trap/host_gicr.rs`).

pub mod gicv3;
pub mod pl011;
pub mod smmu;
