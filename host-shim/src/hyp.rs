//! Wrappers for the host hypercalls (see hyp-abi and docs/abi.md).

use el1_rt::smccc::{hvc, hvc8};
use hyp_abi::host as abi;

/// Result of a host call: Ok(x2..) or Err(-errno / NOT_SUPPORTED).
pub type HypResult = Result<[u64; 6], i64>;

pub fn call(fid: u32, args: [u64; 6]) -> HypResult {
    let r = hvc8(
        fid,
        [args[0], args[1], args[2], args[3], args[4], args[5], 0],
    );
    if r[0] as i64 != 0 {
        return Err(r[0] as i64);
    }
    if r[1] as i64 != 0 {
        return Err(r[1] as i64);
    }
    Ok([r[2], r[3], r[4], r[5], r[6], r[7]])
}

pub fn shutdown(status: u64) -> ! {
    hvc(abi::SHUTDOWN, [status, 0, 0, 0, 0, 0, 0]);
    el1_rt::smccc::system_off()
}
