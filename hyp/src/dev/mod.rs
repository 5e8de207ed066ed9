//! Devices the hyp drives (its console, its GIC needs) or emulates for the
//! host.

pub mod gicv3;
pub mod pl011;
pub mod smmu;
