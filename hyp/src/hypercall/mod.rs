//! Hypercall handlers: the host's ABI, the guests' ABI and PSCI.

pub mod guest;
pub mod host;
pub mod psci;

use hyp_core::mm::Error;

/// A host call's result in x1: 0 or a negative errno.
pub fn errno(r: Result<(), Error>) -> u64 {
    match r {
        Ok(()) => 0,
        Err(e) => (-e.errno()) as u64,
    }
}
