//! SMCCC calls (HVC to the hyp; PSCI over the DTB's conduit) and power-off.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hyp_abi::psci;

static PSCI_SMC: AtomicBool = AtomicBool::new(false);
static FAIL_HOOK: AtomicU64 = AtomicU64::new(0);

/// Reads the PSCI conduit from the DTB.
pub fn init(fdt: &fdt::Fdt) {
    let m = fdt.find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]);
    let smc = m.and_then(|n| n.property("method")).and_then(|p| p.as_str()) == Some("smc");
    PSCI_SMC.store(smc, Ordering::Relaxed);
}

/// HVC with x0..x7 → x0..x3.
#[inline(always)]
pub fn hvc(fid: u32, a: [u64; 7]) -> [u64; 4] {
    let (r0, r1, r2, r3);
    // SAFETY: an SMCCC call to the hyp; SMCCC 1.1 preserves x4-x17 except as
    // results... we declare them clobbered to be safe.
    unsafe {
        core::arch::asm!(
            "hvc #0",
            inout("x0") fid as u64 => r0, inout("x1") a[0] => r1, inout("x2") a[1] => r2, inout("x3") a[2] => r3,
            inout("x4") a[3] => _, inout("x5") a[4] => _, inout("x6") a[5] => _, inout("x7") a[6] => _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
            out("x14") _, out("x15") _, out("x16") _, out("x17") _,
            options(nostack)
        );
    }
    [r0, r1, r2, r3]
}

/// HVC returning x0..x7 (for calls with many results).
pub fn hvc8(fid: u32, a: [u64; 7]) -> [u64; 8] {
    let (r0, r1, r2, r3, r4, r5, r6, r7);
    // SAFETY: as for hvc().
    unsafe {
        core::arch::asm!(
            "hvc #0",
            inout("x0") fid as u64 => r0, inout("x1") a[0] => r1, inout("x2") a[1] => r2, inout("x3") a[2] => r3,
            inout("x4") a[3] => r4, inout("x5") a[4] => r5, inout("x6") a[5] => r6, inout("x7") a[6] => r7,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
            out("x14") _, out("x15") _, out("x16") _, out("x17") _,
            options(nostack)
        );
    }
    [r0, r1, r2, r3, r4, r5, r6, r7]
}

fn smc(fid: u32, a: [u64; 3]) -> u64 {
    let r0;
    // SAFETY: a PSCI call to firmware (trapped and relayed by the hyp).
    unsafe {
        core::arch::asm!(
            "smc #0",
            inout("x0") fid as u64 => r0, inout("x1") a[0] => _, inout("x2") a[1] => _, inout("x3") a[2] => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
            out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack)
        );
    }
    r0
}

/// A PSCI call over the DTB's conduit.
pub fn psci_call(fid: u32, a: [u64; 3]) -> u64 {
    if PSCI_SMC.load(Ordering::Relaxed) {
        smc(fid, a)
    } else {
        hvc(fid, [a[0], a[1], a[2], 0, 0, 0, 0])[0]
    }
}

pub fn system_off() -> ! {
    psci_call(psci::SYSTEM_OFF, [0; 3]);
    loop {
        aarch64_cpu::asm::wfi();
    }
}

/// Power-off before the DTB is known: try both conduits.
pub fn psci_system_off_any() -> ! {
    hvc(psci::SYSTEM_OFF, [0; 7]);
    smc(psci::SYSTEM_OFF, [0; 3]);
    loop {
        aarch64_cpu::asm::wfi();
    }
}

/// Sets how the payload reports a failure (default: power off).
pub fn set_fail_hook(f: fn(u64) -> !) {
    FAIL_HOOK.store(f as usize as u64, Ordering::Relaxed);
}

/// Ends the payload with a failure status.
pub fn fail(code: u64) -> ! {
    let f = FAIL_HOOK.load(Ordering::Relaxed);
    if f != 0 {
        // SAFETY: only set_fail_hook stores here, from a `fn(u64) -> !`.
        let f: fn(u64) -> ! = unsafe { core::mem::transmute(f as usize) };
        f(code)
    }
    system_off()
}
