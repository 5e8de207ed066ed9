//! Hypercall handlers: the host's ABI, the guests' ABI and PSCI.

pub mod guest;
pub mod host;
pub mod psci;

use hyp_core::mm::mem_protect::Refused;
use hyp_core::mm::Error;

/// A refused transition at the hypercall boundary: logged with what and
/// where (`who` made call `op`), and turned into the ABI's error (its
/// errno: docs/abi.md). Out of line: the error path only.
#[cold]
#[inline(never)]
pub fn refused(who: &str, op: u64, e: Refused) -> Error {
    log::debug!("{who}: call {op:#x} refused: {e}");
    e.error()
}

/// A host call's result in x1: 0 or a negative errno.
pub fn errno(r: Result<(), Error>) -> u64 {
    match r {
        Ok(()) => 0,
        Err(e) => (-e.errno()) as u64,
    }
}
