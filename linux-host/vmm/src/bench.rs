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

use vmm_devices::platform::{Platform, GUEST_RAM};

use crate::machine::clock;
use crate::pkvm::Device;
use crate::seams::VmIrq;

/// `str w0, [x0]; b .-4`: a store to the IPA in x0, forever.
const STORE_LOOP: [u32; 2] = [0xb900_0000, 0x17ff_ffff];
/// Where the guest stores: an MMIO address with no device.
const NOWHERE: u64 = 0x0b00_1000;

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn program() -> Vec<u8> {
    STORE_LOOP.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Prints the rows; Err if a call failed.
pub fn run(dev: &Device, n: usize) -> Result<(), String> {
    let e = |what: &'static str| move |err: std::io::Error| format!("{what}: {err}");
    println!("bench: counter at {} Hz; under -icount shift=0 a tick is one instruction", clock::freq());
    let vm = dev.create_vm().map_err(e("PKVM_CREATE_VM"))?;
    let mem = vm.create_memory(GUEST_RAM, 2 << 20).map_err(e("PKVM_CREATE_MEMORY"))?;
    mem.write(GUEST_RAM, &program()).map_err(e("pwrite"))?;
    let mut vcpu = vm.create_vcpu(GUEST_RAM, NOWHERE, false).map_err(e("PKVM_CREATE_VCPU"))?;
    let mut platform = Platform::new(VmIrq(&vm), 1, None);
    let (mut trip, mut vmm) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut last = None;
    for _ in 0..=n {
        let t0 = clock::now();
        if let Some(l) = last {
            trip.push(t0 - l);
        }
        last = Some(t0);
        let exit = vcpu.run([0; 4]).map_err(e("PKVM_RUN"))?;
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
    }
    let irqs = vcpu.irq_exits();
    drop((vcpu, mem, vm));
    println!(
        "bench: MMIO round trip through the Linux VMM: median {} ticks, of which the VMM's exit handling {} \
         ({n} round trips, {irqs} IRQ exits inside them)",
        median(&mut trip),
        median(&mut vmm)
    );
    let mut life = Vec::new();
    for _ in 0..5 {
        let t0 = clock::now();
        let vm = dev.create_vm().map_err(e("PKVM_CREATE_VM"))?;
        let mem = vm.create_memory(GUEST_RAM, 64 << 20).map_err(e("PKVM_CREATE_MEMORY"))?;
        mem.write(GUEST_RAM, &program()).map_err(e("pwrite"))?;
        let mut vcpu = vm.create_vcpu(GUEST_RAM, NOWHERE, false).map_err(e("PKVM_CREATE_VCPU"))?;
        vcpu.run([0; 4]).map_err(e("PKVM_RUN"))?;
        drop((vcpu, mem, vm));
        life.push(clock::now() - t0);
    }
    println!(
        "bench: VM create + destroy of a 64 MiB guest (first run included): median {} ticks (5 VMs)",
        median(&mut life)
    );
    Ok(())
}
