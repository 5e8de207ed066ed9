//! The memory file's costs (`pkvm-vmm --bench N`, after bench.rs' rows),
//! counted by perf on the VMM's thread at EL2 and at every level (the
//! guest runs on this thread too), each segment between two counter reads
//! less what two back-to-back reads cost.
//!
//! A guest in a 4 MiB memory file (two 2 MiB blocks) shares one page of its
//! second block, exits (a host-service call), unshares it, exits, again. On
//! every other round the VMM loads from the page through its mapping while
//! it is shared, so that the unshare is a conversion the driver handles:
//!
//! - share (split): PKVM_RUN → the guest's MEM_SHARE splits the block's
//!   path → its exit → PKVM_RUN returns;
//! - first fault: the VMM's load of the shared page: Linux's fault, the
//!   driver's hyp PIN (the page enters the host's DMA view), the PTE;
//! - unshare (merge): PKVM_RUN → MEM_UNSHARE merges the block → exit;
//! - conversion with nothing to wait for: PKVM_RUN → MEM_UNSHARE of the
//!   mapped page → UNSHARE_PENDING → the driver zaps the page, finds no
//!   other reference, UNPINs → the guest's call again (merge) → exit.

use vmm_devices::platform::GUEST_RAM;

#[cfg(target_arch = "aarch64")]
use crate::pkvm::Device;
#[cfg(target_arch = "aarch64")]
use crate::{perf, refs};

/// Service call the guest exits with (any host-service number exits).
const EXIT_CALL: u32 = hyp_abi::services::HOST_NEXT;

/// `x0 = 0xC600_0000 | low` (a vendor-hypervisor call), x1 = x19, x2 =
/// x3 = 0, `hvc #0`.
const fn call(low: u32) -> [u32; 6] {
    [
        0xd280_0000 | (low << 5), // movz x0, #low
        0xf2b8_c000,              // movk x0, #0xc600, lsl #16
        0xaa13_03e1,              // mov x1, x19
        0xd280_0002,              // movz x2, #0
        0xd280_0003,              // movz x3, #0
        0xd400_0002,              // hvc #0
    ]
}

/// `x19 = x0` (the page), then forever: MEM_SHARE x19, exit, MEM_UNSHARE
/// x19, exit (the exits are HOST_NEXT calls).
pub fn share_loop() -> Vec<u32> {
    let mut p = vec![0xaa00_03f3]; // mov x19, x0
    for low in [0x3, 0x20f, 0x4, 0x20f] {
        p.extend(call(low));
    }
    // b back to the first call.
    p.push(0x1400_0000 | ((1 - p.len() as i32) as u32 & 0x03ff_ffff));
    p
}

/// The page the guest shares: page 5 of the second block.
const PAGE: u64 = GUEST_RAM + (2 << 20) + 5 * 4096;

#[cfg(target_arch = "aarch64")]
/// Sums of (EL2, all levels) over segments.
#[derive(Default, Clone, Copy)]
struct Sum {
    n: usize,
    el2: u64,
    all: u64,
}

#[cfg(target_arch = "aarch64")]
/// Measures segments on one perf pair.
struct Segments {
    pmu: perf::Pair,
    /// What two back-to-back reads cost: (EL2, all).
    read: (u64, u64),
}

#[cfg(target_arch = "aarch64")]
impl Segments {
    fn new(mut pmu: perf::Pair) -> Result<Segments, String> {
        let r = |p: &mut perf::Pair| p.read().map_err(|e| format!("reading the perf counters: {e}"));
        let mut best = (u64::MAX, u64::MAX);
        for _ in 0..16 {
            let a = r(&mut pmu)?;
            let b = r(&mut pmu)?;
            best = (best.0.min(b.0 - a.0), best.1.min(b.1 - a.1));
        }
        Ok(Segments { pmu, read: best })
    }

    /// Runs `f`, adding its counts to `sum`.
    fn measure<T>(&mut self, sum: &mut Sum, f: impl FnOnce() -> T) -> Result<T, String> {
        let a = self.pmu.read().map_err(|e| format!("reading the perf counters: {e}"))?;
        let v = f();
        let b = self.pmu.read().map_err(|e| format!("reading the perf counters: {e}"))?;
        sum.n += 1;
        sum.el2 += (b.0 - a.0).saturating_sub(self.read.0);
        sum.all += (b.1 - a.1).saturating_sub(self.read.1);
        Ok(v)
    }
}

#[cfg(target_arch = "aarch64")]
fn row(name: &str, s: Sum) {
    println!("[bench] linux host: {name} n={} el2={} all={}", s.n, s.el2, s.all);
}

#[cfg(target_arch = "aarch64")]
/// The memory file's rows over `n` rounds of each kind; nothing without
/// the PMU (bench.rs says why).
pub fn run(dev: &Device, n: usize) -> Result<(), String> {
    let e = |what: &'static str| move |err: std::io::Error| format!("{what}: {err}");
    let Ok(pmu) = perf::Pair::open() else { return Ok(()) };
    let mut seg = Segments::new(pmu)?;
    refs::install().map_err(e("SIGBUS handler"))?;
    let vm = dev.create_vm().map_err(e("PKVM_CREATE_VM"))?;
    let mem = vm.create_memory(GUEST_RAM, 4 << 20).map_err(e("PKVM_CREATE_MEMORY"))?;
    let words: Vec<u8> = share_loop().iter().flat_map(|w| w.to_le_bytes()).collect();
    mem.write(GUEST_RAM, &words).map_err(e("pwrite"))?;
    let map = mem.map().map_err(e("mmap"))?;
    let mut vcpu = vm.create_vcpu(GUEST_RAM, PAGE, false).map_err(e("PKVM_CREATE_VCPU"))?;
    let exit = |vcpu: &mut crate::pkvm::Vcpu| -> Result<(), String> {
        let x = vcpu.run([0; 4]).map_err(e("PKVM_RUN"))?;
        if x.reason != hyp_abi::host::exit::HYPERCALL || x.x[0] != u64::from(EXIT_CALL) {
            return Err(format!("unexpected exit {x:?}"));
        }
        Ok(())
    };
    // The first run donates: one round outside the counts.
    exit(&mut vcpu)?;
    exit(&mut vcpu)?;
    let (mut share, mut fault, mut merge, mut convert) =
        (Sum::default(), Sum::default(), Sum::default(), Sum::default());
    for i in 0..2 * n {
        seg.measure(&mut share, || exit(&mut vcpu))??;
        if i % 2 == 1 {
            let v = seg.measure(&mut fault, || refs::load(map.at(PAGE)))?;
            v.map_err(|()| "SIGBUS loading the shared page".to_string())?;
            seg.measure(&mut convert, || exit(&mut vcpu))??;
        } else {
            seg.measure(&mut merge, || exit(&mut vcpu))??;
        }
    }
    let info = mem.info().map_err(e("PKVM_MEM_INFO"))?;
    if info.conversions != n as u64 || info.mapped != 0 {
        return Err(format!("{n} conversions expected, the file says {info:?}"));
    }
    row("gmem share 4K in a 2M block (split), PKVM_RUN to exit", share);
    row("gmem unshare 4K (merge), PKVM_RUN to exit", merge);
    row("gmem first fault on a shared page (mmap, hyp pin)", fault);
    row("gmem conversion with nothing to wait for (unshare of a mapped page), PKVM_RUN to exit", convert);
    println!(
        "bench: memory file: {n} conversions, two counter reads cost {} EL2 / {} instructions (subtracted)",
        seg.read.0, seg.read.1
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_program_is_what_it_says() {
        let p = share_loop();
        assert_eq!(p.len(), 26);
        // As an assembler encodes them: movz x0, #3; movk x0, #0xc600, lsl #16.
        assert_eq!(p[1], 0xd280_0060);
        assert_eq!(p[2], 0xf280_0000 | (1 << 21) | (0xc600 << 5));
        assert_eq!(p[7], 0xd280_41e0, "movz x0, #0x20f");
        // The loop's branch goes back to word 1.
        let back = ((p[25] & 0x03ff_ffff) | 0xfc00_0000) as i32;
        assert_eq!(25 + back, 1);
        assert_eq!(p[25] >> 26, 0b000101, "an unconditional branch");
        assert_eq!(EXIT_CALL, 0xc600_020f);
    }
}
