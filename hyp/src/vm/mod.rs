//! Guest VMs: lifecycle, vCPUs, and their stage-2s.

pub mod run;

use hyp::mm::Error;

use crate::arch::aarch64::trap::TrapFrame;

/// VM calls of the host ABI; `None` for an unknown function.
pub fn host_call(_fid: u32, _frame: &mut TrapFrame) -> Option<Result<(), Error>> {
    None
}

pub fn dump_s2(_which: u64) -> Result<(), Error> {
    Err(Error::NoEnt)
}
