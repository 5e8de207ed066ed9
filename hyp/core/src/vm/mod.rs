//! Guest bookkeeping the EL2 binary's `vm` module keeps per VM: the handle
//! table ([`handles`]) and the MMIO granules a guest guarded
//! ([`mmio_guard`]).

pub mod handles;
pub mod mmio_guard;
