//! `pkvm-vmm --bench N`: costs through the Linux host, counted with the
//! virtual counter read at EL0 around the VMM's own calls. Under QEMU
//! `-icount shift=0` with one CPU (`cargo xtask run --linux --icount`) a
//! counter tick is one instruction executed, at any level: the counts
//! are instructions at all levels.
//!
//! - MMIO round trip: a guest looping on one store to an address with no
//!   device; the span from one PKVM_RUN call to the next (guest store →
//!   EL2 → driver → VMM's exit handling → back), and the VMM's part of it
//!   (from PKVM_RUN's return to the next call).
//! - VM create + destroy of a 64 MiB guest: the VM, its memory, a vCPU,
//!   the first run (the donation) and the teardown when the fds close.
//!
//! Then the memory file's rows (`bench_gmem.rs`).
//!
//! Each also prints a `[bench]` line for `cargo xtask bench`: the totals
//! over its repetitions of this thread's instructions at EL2 and at every
//! level, counted by perf (`perf.rs`), when the hyp leaves the PMU to the
//! host (`hyp.bench_pmu`); without it, a line that says why there is none.

use vmm_devices::platform::{Platform, GUEST_RAM};

use crate::machine::clock;
use crate::perf;
use crate::pkvm::Device;
use crate::seams::VmIrq;

/// `str w0, [x0]; b .-4`: a store to the IPA in x0, forever.
pub const STORE_LOOP: [u32; 2] = [0xb900_0000, 0x17ff_ffff];
/// Where the guest stores: an MMIO address with no device.
pub const NOWHERE: u64 = 0x0b00_1000;

/// Arms its virtual timer `WAKE_TICKS` ahead (enabled, unmasked), waits in
/// WFI, turns the timer off when woken, again (interrupts masked: the
/// wake-up is the timer's line, nothing is taken).
const WFI_LOOP: [u32; 9] = [
    0xd53b_e041,                                     // mrs x1, cntvct_el0
    0x9100_0000 | (WAKE_TICKS << 10) | (1 << 5) | 1, // add x1, x1, #WAKE_TICKS
    0xd51b_e341,                                     // msr cntv_cval_el0, x1
    0xd280_0022,                                     // mov x2, #1
    0xd51b_e322,                                     // msr cntv_ctl_el0, x2
    0xd503_3fdf,                                     // isb
    0xd503_207f,                                     // wfi
    0xd51b_e33f,                                     // msr cntv_ctl_el0, xzr
    0x17ff_fff8,                                     // b .-32
];
/// The timer's delay: past WFI's trap, due by the time the VMM has the
/// exit (under -icount a tick is an instruction).
const WAKE_TICKS: u32 = 64;
/// The virtual timer's INTID, enabled for the vCPU by the VMM.
const VTIMER: u32 = 27;

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

pub fn program(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The PMU's counts around a measured loop, when perf has them.
struct Counts(Option<perf::Pair>);

impl Counts {
    fn open() -> Counts {
        match perf::Pair::open() {
            Ok(p) => Counts(Some(p)),
            Err(err) => {
                println!(
                    "bench: no PMU counts (perf_event_open: {err}): the hyp shares the PMU only under hyp.bench_pmu"
                );
                Counts(None)
            }
        }
    }

    fn read(&mut self) -> Result<Option<(u64, u64)>, String> {
        self.0.as_mut().map(|p| p.read().map_err(|err| format!("reading the perf counters: {err}"))).transpose()
    }

    /// The `[bench]` line of `row` over `n` repetitions from `start`.
    fn row(&mut self, row: &str, n: usize, start: Snapshot) -> Result<(), String> {
        if let (Some((el2, all)), Some((el2_0, all_0))) = (self.read()?, start) {
            println!("[bench] {row} n={n} el2={} all={}", el2 - el2_0, all - all_0);
        }
        Ok(())
    }
}

/// The PMU's (EL2, all levels) counts at some moment, when perf has them.
type Snapshot = Option<(u64, u64)>;

/// Runs `vcpu` `n` + 1 times, `exit` handling each exit: the span from
/// each run call to the next (the first run, which donates, not counted),
/// and the PMU's counts when the counted runs began.
fn round_trips(
    vcpu: &mut crate::pkvm::Vcpu,
    n: usize,
    pmu: &mut Counts,
    mut exit: impl FnMut(crate::pkvm::Exit) -> Result<(), String>,
) -> Result<(Vec<u64>, Snapshot), String> {
    let mut trip = Vec::with_capacity(n);
    let (mut last, mut start) = (None, None);
    for i in 0..=n {
        if i == 1 {
            start = pmu.read()?;
        }
        let t0 = clock::now();
        if let Some(l) = last {
            trip.push(t0 - l);
        }
        last = Some(t0);
        exit(vcpu.run([0; 4]).map_err(|err| format!("PKVM_RUN: {err}"))?)?;
    }
    Ok((trip, start))
}

/// Prints the rows; Err if a call failed.
pub fn run(dev: &Device, n: usize) -> Result<(), String> {
    let e = |what: &'static str| move |err: std::io::Error| format!("{what}: {err}");
    println!("bench: counter at {} Hz; under -icount shift=0 a tick is one instruction", clock::freq());
    let mut pmu = Counts::open();
    let vm = dev.create_vm().map_err(e("PKVM_CREATE_VM"))?;
    let mem = vm.create_memory(GUEST_RAM, 2 << 20).map_err(e("PKVM_CREATE_MEMORY"))?;
    mem.write(GUEST_RAM, &program(&STORE_LOOP)).map_err(e("pwrite"))?;
    let mut vcpu = vm.create_vcpu(GUEST_RAM, NOWHERE, false).map_err(e("PKVM_CREATE_VCPU"))?;
    let mut platform = Platform::new(VmIrq(&vm), 1, None);
    let mut vmm = Vec::with_capacity(n);
    let (mut trip, start) = round_trips(&mut vcpu, n, &mut pmu, |exit| {
        let t1 = clock::now();
        if exit.reason != hyp_abi::host::exit::MMIO || exit.x[0] != NOWHERE {
            return Err(format!("unexpected exit {exit:?}"));
        }
        // What the VMM does with it: the device models find nothing there.
        let v = platform.mmio(
            exit.x[0],
            exit.x[2] != 0,
            exit.x[1],
            exit.x[3],
            || -> crate::seams::LinuxMem<'_> { unreachable!("no device touches guest memory here") },
            |_: vmm_devices::platform::Port, _: &str| {},
        );
        std::hint::black_box(v);
        vmm.push(clock::now() - t1);
        Ok(())
    })?;
    pmu.row("linux host: mmio exit round trip (Linux VMM, guest store to next store)", n, start)?;
    let irqs = vcpu.irq_exits();
    drop((vcpu, mem, vm));
    println!(
        "bench: MMIO round trip through the Linux VMM: median {} ticks, of which the VMM's exit handling {} \
         ({n} round trips, {irqs} IRQ exits inside them)",
        median(&mut trip),
        median(&mut vmm)
    );
    wfi(dev, n, &mut pmu)?;
    let mut life = Vec::new();
    let start = pmu.read()?;
    for _ in 0..5 {
        let t0 = clock::now();
        let vm = dev.create_vm().map_err(e("PKVM_CREATE_VM"))?;
        let mem = vm.create_memory(GUEST_RAM, 64 << 20).map_err(e("PKVM_CREATE_MEMORY"))?;
        mem.write(GUEST_RAM, &program(&STORE_LOOP)).map_err(e("pwrite"))?;
        let mut vcpu = vm.create_vcpu(GUEST_RAM, NOWHERE, false).map_err(e("PKVM_CREATE_VCPU"))?;
        vcpu.run([0; 4]).map_err(e("PKVM_RUN"))?;
        drop((vcpu, mem, vm));
        life.push(clock::now() - t0);
    }
    pmu.row("linux host: vm create+destroy (64 MiB guest, first run included)", 5, start)?;
    println!(
        "bench: VM create + destroy of a 64 MiB guest (first run included): median {} ticks (5 VMs)",
        median(&mut life)
    );
    #[cfg(target_arch = "aarch64")]
    crate::bench_gmem::run(dev, n.div_ceil(10))?;
    Ok(())
}

/// WFI exit and wake-up: the guest waits for its timer; the VMM has the
/// WFI exit with the timer's deadline, waits for it (due already: the
/// VMM's own work takes longer) and runs the vCPU again, which the hyp
/// enters with the timer's interrupt pending: its WFI is over.
fn wfi(dev: &Device, n: usize, pmu: &mut Counts) -> Result<(), String> {
    let e = |what: &'static str| move |err: std::io::Error| format!("{what}: {err}");
    let vm = dev.create_vm().map_err(e("PKVM_CREATE_VM"))?;
    let mem = vm.create_memory(GUEST_RAM, 2 << 20).map_err(e("PKVM_CREATE_MEMORY"))?;
    mem.write(GUEST_RAM, &program(&WFI_LOOP)).map_err(e("pwrite"))?;
    let mut vcpu = vm.create_vcpu(GUEST_RAM, 0, false).map_err(e("PKVM_CREATE_VCPU"))?;
    // The timer's PPI enabled, as the guest's redistributor write would.
    vm.irq(0, VTIMER, hyp_abi::host::irq::CONFIGURE as u32, [1, 0xa0]).map_err(e("PKVM_IRQ CONFIGURE"))?;
    let mut late = 0;
    let (mut trip, start) = round_trips(&mut vcpu, n, pmu, |exit| {
        if exit.reason != hyp_abi::host::exit::WFI || exit.x[0] == u64::MAX {
            return Err(format!("unexpected exit {exit:?} (a WFI with the timer's deadline expected)"));
        }
        // Runnable again when the deadline passes.
        if clock::now() < exit.x[0] {
            late += 1;
            while clock::now() < exit.x[0] {
                std::hint::spin_loop();
            }
        }
        Ok(())
    })?;
    pmu.row("linux host: wfi exit and wake-up (virtual timer, Linux VMM)", n, start)?;
    let irqs = vcpu.irq_exits();
    drop((vcpu, mem, vm));
    println!(
        "bench: WFI exit and wake-up by the virtual timer through the Linux VMM: median {} ticks ({n} waits, \
         {late} not yet due at the exit, {irqs} IRQ exits inside them)",
        median(&mut trip)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_programs_are_what_they_say() {
        // As an assembler encodes them.
        assert_eq!(WFI_LOOP[1], 0x9101_0021, "add x1, x1, #64");
        assert_eq!(program(&STORE_LOOP), [0x00, 0x00, 0x00, 0xb9, 0xff, 0xff, 0xff, 0x17]);
        // The loop's branch goes back to its first instruction.
        let b = WFI_LOOP[8];
        let back = ((b & 0x03ff_ffff) | 0xfc00_0000) as i32 * 4;
        assert_eq!(back, -8 * 4);
    }

    #[test]
    fn median_of_counts() {
        assert_eq!(median(&mut [5, 1, 3]), 3);
        assert_eq!(median(&mut []), 0);
    }
}
