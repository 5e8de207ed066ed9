//! The guest side of the ABI: pKVM memory calls and host services.

use el1_rt::regs_probe::Regs;
use el1_rt::smccc::hvc;
use hyp_abi::{guest, services};

pub fn call(fid: u32, a: [u64; 3]) -> [u64; 4] {
    hvc(fid, [a[0], a[1], a[2], 0, 0, 0, 0])
}

pub fn share(ipa: u64) -> i64 {
    call(guest::MEM_SHARE, [ipa, 0, 0])[0] as i64
}
pub fn unshare(ipa: u64) -> i64 {
    call(guest::MEM_UNSHARE, [ipa, 0, 0])[0] as i64
}
pub fn relinquish(ipa: u64) -> i64 {
    call(guest::MEM_RELINQUISH, [ipa, 0, 0])[0] as i64
}

/// The host reads 8 bytes at our IPA: Some(value), or None if it aborted.
pub fn host_read(ipa: u64) -> Option<u64> {
    let r = call(services::HOST_READ, [ipa, 0, 0]);
    (r[0] == 0).then_some(r[1])
}
/// True if the host's write went through.
pub fn host_write(ipa: u64, v: u64) -> bool {
    call(services::HOST_WRITE, [ipa, v, 0])[0] == 0
}
pub fn host_pin(ipa: u64, exclusive: bool) -> i64 {
    call(services::HOST_PIN, [ipa, exclusive as u64, 0])[0] as i64
}
/// The host takes a shared pin on the page outside its VMM's bookkeeping
/// (as another part of the host would): 0 or -errno.
pub fn host_pin_foreign(ipa: u64) -> i64 {
    call(services::HOST_PIN, [ipa, services::PIN_FOREIGN, 0])[0] as i64
}
/// The host has its PCI device DMA 8 bytes of `byte` to our page: 0
/// landed, 1 blocked by the SMMU (with an event naming the device and the
/// page), 2 neither, negative: no device.
pub fn host_dma(ipa: u64, byte: u8) -> i64 {
    call(services::HOST_DMA, [ipa, byte as u64, 0])[0] as i64
}
pub fn host_unpin(ipa: u64) -> i64 {
    call(services::HOST_UNPIN, [ipa, 0, 0])[0] as i64
}
/// (table pages of our stage-2, mapping level at `ipa`).
pub fn s2_info(ipa: u64) -> (u64, u64) {
    let r = call(services::HOST_S2_INFO, [ipa, 0, 0]);
    (r[0], r[1])
}
/// (UNSHARE_PENDING exits, GUEST_ABORT exits) the host has seen.
pub fn exit_counts() -> (u64, u64) {
    let r = call(services::HOST_EXIT_COUNTS, [0, 0, 0]);
    (r[0], r[1])
}

el1_rt::regs_probe!("abi_hvc_probe", "hvc #0");

extern "C" {
    fn abi_hvc_probe(p: *mut Regs);
}

/// Calls `fid` with x1..x3 = `a` and a distinct pattern in x4-x30 and in
/// NZCV: (x0, whether every other register and NZCV came back as it was).
/// For calls whose only result is x0 (the memory calls, HYP_MEMINFO).
pub fn call_keeps_regs(fid: u32, a: [u64; 3]) -> (i64, bool) {
    let mut p = Regs::pattern(0x5a5a, 0b0110 << 28);
    p.x[0] = fid as u64;
    p.x[1..4].copy_from_slice(&a);
    let before = p;
    // SAFETY: the routine saves and restores every callee-saved register
    // and the stack pointer around the HVC, and writes only the record.
    unsafe { abi_hvc_probe(&mut p) };
    let kept =
        p.intact(&before, &[0], |r, now, was| el1_rt::println!("  {} = {:#x} after the call, was {:#x}", r, now, was));
    (p.x[0] as i64, kept)
}
