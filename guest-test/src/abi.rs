//! The guest side of the ABI: pKVM memory calls and host services.

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

/// Every general register and NZCV around one HVC (layout fixed by
/// `abi_hvc_probe`): loaded before it, stored after.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct HvcProbe {
    pub x: [u64; 31],
    pub nzcv_in: u64,
    pub nzcv_out: u64,
    _pad: u64,
}

const PROBE_NZCV: usize = core::mem::offset_of!(HvcProbe, nzcv_in);
const _: () = assert!(PROBE_NZCV == 248 && core::mem::offset_of!(HvcProbe, nzcv_out) == 256);

extern "C" {
    fn abi_hvc_probe(p: *mut HvcProbe);
}

core::arch::global_asm!(
    // x0 = &mut HvcProbe: callee-saved registers on the stack, every
    // register and NZCV loaded from the record, HVC #0, every register and
    // NZCV stored back.
    ".global abi_hvc_probe",
    "abi_hvc_probe:",
    "    sub sp, sp, #112",
    "    stp x19, x20, [sp, #0]",
    "    stp x21, x22, [sp, #16]",
    "    stp x23, x24, [sp, #32]",
    "    stp x25, x26, [sp, #48]",
    "    stp x27, x28, [sp, #64]",
    "    stp x29, x30, [sp, #80]",
    "    str x0, [sp, #96]",
    "    ldr x1, [x0, #{nzcv}]",
    "    msr nzcv, x1",
    "    ldp x2, x3, [x0, #16]",
    "    ldp x4, x5, [x0, #32]",
    "    ldp x6, x7, [x0, #48]",
    "    ldp x8, x9, [x0, #64]",
    "    ldp x10, x11, [x0, #80]",
    "    ldp x12, x13, [x0, #96]",
    "    ldp x14, x15, [x0, #112]",
    "    ldp x16, x17, [x0, #128]",
    "    ldp x18, x19, [x0, #144]",
    "    ldp x20, x21, [x0, #160]",
    "    ldp x22, x23, [x0, #176]",
    "    ldp x24, x25, [x0, #192]",
    "    ldp x26, x27, [x0, #208]",
    "    ldp x28, x29, [x0, #224]",
    "    ldr x30, [x0, #240]",
    "    ldp x0, x1, [x0]",
    "    hvc #0",
    "    stp x0, x1, [sp, #-16]!",
    "    mrs x1, nzcv",
    "    ldr x0, [sp, #(16 + 96)]",
    "    str x1, [x0, #({nzcv} + 8)]",
    "    stp x2, x3, [x0, #16]",
    "    stp x4, x5, [x0, #32]",
    "    stp x6, x7, [x0, #48]",
    "    stp x8, x9, [x0, #64]",
    "    stp x10, x11, [x0, #80]",
    "    stp x12, x13, [x0, #96]",
    "    stp x14, x15, [x0, #112]",
    "    stp x16, x17, [x0, #128]",
    "    stp x18, x19, [x0, #144]",
    "    stp x20, x21, [x0, #160]",
    "    stp x22, x23, [x0, #176]",
    "    stp x24, x25, [x0, #192]",
    "    stp x26, x27, [x0, #208]",
    "    stp x28, x29, [x0, #224]",
    "    str x30, [x0, #240]",
    "    ldp x2, x3, [sp], #16",
    "    stp x2, x3, [x0]",
    "    ldp x19, x20, [sp, #0]",
    "    ldp x21, x22, [sp, #16]",
    "    ldp x23, x24, [sp, #32]",
    "    ldp x25, x26, [sp, #48]",
    "    ldp x27, x28, [sp, #64]",
    "    ldp x29, x30, [sp, #80]",
    "    add sp, sp, #112",
    "    ret",
    nzcv = const PROBE_NZCV,
);

/// Calls `fid` with x1..x3 = `a` and a distinct pattern in x4-x30 and in
/// NZCV: (x0, whether every other register and NZCV came back as it was).
/// For calls whose only result is x0 (the memory calls, HYP_MEMINFO).
pub fn call_keeps_regs(fid: u32, a: [u64; 3]) -> (i64, bool) {
    let mut p = HvcProbe { x: [0; 31], nzcv_in: 0b0110 << 28, nzcv_out: 0, _pad: 0 };
    for (i, v) in p.x.iter_mut().enumerate() {
        *v = 0x5a5a_0000_0000_0000 | (i as u64) << 32 | (0x1111 * i as u64);
    }
    p.x[0] = fid as u64;
    p.x[1..4].copy_from_slice(&a);
    let before = p;
    // SAFETY: the routine saves and restores every callee-saved register
    // and the stack pointer around the HVC, and writes only the record.
    unsafe { abi_hvc_probe(&mut p) };
    let mut kept = p.nzcv_out == before.nzcv_in;
    for i in 1..31 {
        if p.x[i] != before.x[i] {
            el1_rt::println!("  x{} = {:#x} after the call, was {:#x}", i, p.x[i], before.x[i]);
            kept = false;
        }
    }
    if p.nzcv_out != before.nzcv_in {
        el1_rt::println!("  NZCV = {:#x} after the call, was {:#x}", p.nzcv_out, before.nzcv_in);
    }
    (p.x[0] as i64, kept)
}
