//! Wrappers for the host hypercalls (see hyp-abi and docs/abi.md).

use el1_rt::smccc::{hvc, hvc8};
use hyp_abi::host as abi;

/// Ok(x2..x7) or Err(-errno), or Err(NOT_SUPPORTED) for an unknown call.
pub type HypResult = Result<[u64; 6], i64>;

pub fn call(fid: u32, args: [u64; 6]) -> HypResult {
    let r = hvc8(fid, [args[0], args[1], args[2], args[3], args[4], args[5], 0]);
    if r[0] as i64 != 0 {
        return Err(r[0] as i64);
    }
    if r[1] as i64 != 0 {
        return Err(r[1] as i64);
    }
    Ok([r[2], r[3], r[4], r[5], r[6], r[7]])
}

/// 0 or -errno.
pub fn errno(r: HypResult) -> i64 {
    match r {
        Ok(_) => 0,
        Err(e) => e,
    }
}

pub fn vm_create() -> Result<u64, i64> {
    vm_create_bits(0)
}
/// VM_CREATE with an IPA size (0: the default 40 bits), told to the
/// shim's top-ups (`topup::created`).
pub fn vm_create_bits(ipa_bits: u64) -> Result<u64, i64> {
    let h = call(abi::VM_CREATE, [ipa_bits, 0, 0, 0, 0, 0]).map(|r| r[0])?;
    crate::topup::created(h, ipa_bits as u8);
    Ok(h)
}
/// VM_DESTROY: the bytes scrubbed and returned; the VM's table pages
/// (x3) go back to the shim's pool for them (`topup`).
pub fn vm_destroy(h: u64) -> Result<u64, i64> {
    let r = call(abi::VM_DESTROY, [h, 0, 0, 0, 0, 0])?;
    // (Whether they are all the shim gave: the hostile scenario checks.)
    let _ = crate::topup::destroyed(h, r[1]);
    Ok(r[0])
}
pub fn vcpu_create(h: u64, entry: u64, x0: u64) -> Result<u64, i64> {
    call(abi::VCPU_CREATE, [h, entry, x0, 0, 0, 0]).map(|r| r[0])
}
/// DONATE_GUEST, the VM topped up first with the table pages the
/// donation maps (`topup::for_donation`).
pub fn donate(h: u64, pa: u64, ipa: u64, size: u64) -> i64 {
    crate::topup::for_donation(h, pa, ipa, size);
    errno(call(abi::DONATE_GUEST, [h, pa, ipa, size, 0, 0]))
}
/// MEM_ON_DEMAND: guest RAM [ipa, ipa + size) donated as it is touched.
pub fn mem_on_demand(h: u64, ipa: u64, size: u64) -> i64 {
    errno(call(abi::MEM_ON_DEMAND, [h, ipa, size, 0, 0, 0]))
}
pub fn pin(pa: u64, exclusive: bool) -> i64 {
    errno(call(abi::PIN, [pa, exclusive as u64, 0, 0, 0, 0]))
}
pub fn unpin(pa: u64) -> i64 {
    errno(call(abi::UNPIN, [pa, 0, 0, 0, 0, 0]))
}
pub fn pin_range(pa: u64, pages: u64, exclusive: bool) -> i64 {
    errno(call(abi::PIN_RANGE, [pa, pages, exclusive as u64, 0, 0, 0]))
}
pub fn unpin_range(pa: u64, pages: u64) -> i64 {
    errno(call(abi::UNPIN_RANGE, [pa, pages, 0, 0, 0, 0]))
}
/// DMA_EVENTS: (drained now, since boot, last stream, last address, last id | read << 8,
/// event queue overflows since boot).
pub fn dma_events() -> Result<[u64; 6], i64> {
    call(abi::DMA_EVENTS, [0; 6])
}
/// (table pages, level, state code) of a VM's mapping at `ipa`.
pub fn vm_stats(h: u64, ipa: u64) -> Result<(u64, u64, u64), i64> {
    call(abi::VM_STATS, [h, ipa, 0, 0, 0, 0]).map(|r| (r[0], r[1], r[2]))
}
/// VM_CALLS: the guest's successful MEM_SHARE, MEM_UNSHARE and MMIO_GUARD
/// calls, and the MMIO granules it guards now.
pub fn vm_calls(h: u64) -> Result<[u64; 4], i64> {
    call(abi::VM_CALLS, [h, 0, 0, 0, 0, 0]).map(|r| [r[0], r[1], r[2], r[3]])
}

/// STATS: the hyp's software counters (x2..x5), zeros if it refuses.
pub fn counters() -> [u64; 4] {
    match call(abi::STATS, [0; 6]) {
        Ok(r) => [r[0], r[1], r[2], r[3]],
        Err(_) => [0; 4],
    }
}

/// Bytes of the hyp's pool in use (STATS x6), 0 if it refuses.
pub fn pool_in_use() -> u64 {
    call(abi::STATS, [0; 6]).map(|x| x[4]).unwrap_or(0)
}

pub fn dump_s2(which: u64) {
    let _ = call(abi::DUMP_S2, [which, 0, 0, 0, 0, 0]);
}

pub fn shutdown(status: u64) -> ! {
    hvc(abi::SHUTDOWN, [status, 0, 0, 0, 0, 0, 0]);
    el1_rt::smccc::system_off()
}
