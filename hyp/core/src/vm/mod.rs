//! Guest bookkeeping the EL2 binary's `vm` module keeps per VM: the handle
//! table ([`handles`]), the MMIO granules a guest guarded
//! ([`mmio_guard`]) and the range of its memory the host donates on demand
//! ([`demand`]).

pub mod demand;
pub mod handles;
pub mod mmio_guard;
