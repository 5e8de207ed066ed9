//! Calls into firmware (QEMU's PSCI implementation) with SMC.

use hyp_abi::psci;

/// SMCCC call to firmware; returns x0..x3.
pub fn smc(fid: u32, a1: u64, a2: u64, a3: u64) -> [u64; 4] {
    let (r0, r1, r2, r3);
    // SAFETY: an SMC to PSCI firmware; arguments were validated by the caller
    // and the call clobbers only x0-x17 per SMCCC.
    unsafe {
        core::arch::asm!(
            "smc #0",
            inout("x0") fid as u64 => r0, inout("x1") a1 => r1, inout("x2") a2 => r2, inout("x3") a3 => r3,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
            out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack)
        );
    }
    [r0, r1, r2, r3]
}

/// Powers the machine off; does not return.
pub fn system_off() -> ! {
    smc(psci::SYSTEM_OFF, 0, 0, 0);
    loop {
        aarch64_cpu::asm::wfi();
    }
}
