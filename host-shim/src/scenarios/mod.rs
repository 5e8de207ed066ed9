//! Scenarios the host shim runs (`shim.test=NAME`).

pub mod aborts;
pub mod bench;
pub mod bench_guest;
pub mod bench_linux;
pub mod boot;
pub mod demand;
pub mod devices;
pub mod dma;
pub mod fuzz;
pub mod fuzz_dma;
pub mod guests;
pub mod harness;
pub mod hostile;
pub mod hostile_give_back;
pub mod hostile_topup;
pub mod leaks;
pub mod linux;
pub mod preempt;
pub mod smp;
pub mod tlb;
pub mod traps;
pub mod virtio;

use el1_rt::BootInfo;

use crate::mem::{self, HostMem};
use crate::tracing;

/// `shim.expect_trace_overflow`: the run is sized to overflow the ring.
fn args_want_overflow(info: &BootInfo) -> bool {
    info.fdt.chosen().bootargs().unwrap_or("").split_ascii_whitespace().any(|t| t == "shim.expect_trace_overflow")
}
use crate::report::Report;

/// Runs scenario `name`; false if there is none by that name.
pub fn run(name: &str, info: &BootInfo, r: &mut Report) -> bool {
    crate::idle::set_redistributors(devices::redistributor(info));
    harness::set_host_cpus(info.fdt.cpus().map(|c| c.ids().first() as u64).take(el1_rt::smp::MAX_CPUS).collect());
    let mut hm = HostMem::from_dt(info);
    crate::topup::init(&mut hm);
    let images = match crate::images::parse(mem::initrd(info)) {
        Ok(g) => g,
        Err(e) => {
            r.fail(e);
            return true;
        }
    };
    match name {
        "boot" => {}
        "demo" => guests::demo(&mut hm, &images, r),
        "guests" => guests::run_all(&mut hm, &images, r),
        "guest-tests" => guests::suite(&mut hm, &images, r, "test=all"),
        "block1g" => guests::suite(&mut hm, &images, r, "test=block1g"),
        "irq" => guests::suite(&mut hm, &images, r, "test=irq"),
        "irq-smp" => guests::suite_smp(&mut hm, &images, r, "test=irq-smp", 4),
        "two-vms" => guests::two_vms(&mut hm, &images, r),
        "demand" => demand::run(&mut hm, &images, r),
        "hostile" => hostile::run(&mut hm, &images, r),
        "devices" => devices::run(info, &mut hm, r),
        "aborts" => aborts::run(info, &mut hm, r),
        "edu" => dma::run(info, &mut hm, &images, r),
        "leaks" => leaks::run(&mut hm, &images, r),
        "preempt" => preempt::run(&mut hm, &images, r),
        "traps" => traps::run(&mut hm, &images, r),
        "pmu-owned" => traps::pmu_owned(&mut hm, &images, r),
        "bench" => bench::run(&mut hm, &images, r),
        "bench-irq" => bench::irq(&mut hm, &images, r),
        "bench-scale" => bench::scale_rows(&mut hm, &images, r),
        "smp" => smp::run(&mut hm, &images, r, info),
        "tlb" => tlb::run(&mut hm, &images, r, info),
        "virtio" => virtio::run(&mut hm, &images, r, false),
        "virtio-race" => virtio::run(&mut hm, &images, r, true),
        "fuzz" => {
            // With `edu` devices (the xtask attaches eight) the fuzzer mixes
            // in DMA, a batch of one per device at a time (`fuzz_dma`).
            dma::setup(info, &mut hm);
            let ram: alloc::vec::Vec<(u64, u64)> = info
                .fdt
                .memory()
                .regions()
                .map(|m| (m.starting_address as u64, m.starting_address as u64 + m.size.unwrap_or(0) as u64))
                .collect();
            let args = info.fdt.chosen().bootargs().unwrap_or("");
            fuzz::run(&mut hm, &images, r, args, devices::redistributor(info), &ram)
        }
        _ => return false,
    }
    tracing::dump_s2(None);
    if let Some((_, lost)) = tracing::drain_and_print(&mut hm) {
        if args_want_overflow(info) {
            r.check(lost > 0, "a small trace ring overflows and the loss is counted");
        }
    }
    true
}
