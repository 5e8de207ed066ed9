//! Guest test payloads: a plain QEMU-virt EL1 program (RAM at 0x4000_0000,
//! PL011 at 0x0900_0000, PSCI over HVC, x0 = DTB) that exercises the pKVM
//! guest ABI and asks the host (host services) to check the other side.
//! `test=NAME` in its DTB's bootargs picks what it runs.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod abi;
#[cfg(target_os = "none")]
mod demand;
#[cfg(target_os = "none")]
mod irq;
#[cfg(target_os = "none")]
mod leaks;
#[cfg(target_os = "none")]
mod remote;
#[cfg(target_os = "none")]
mod tests;
#[cfg(target_os = "none")]
mod tlb;
#[cfg(target_os = "none")]
mod traps;
#[cfg(target_os = "none")]
mod virtio;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("guest-test runs as a protected guest: use `cargo xtask run`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
#[no_mangle]
fn el1_main(info: el1_rt::BootInfo) -> ! {
    el1_rt::probe::install();
    let args = info.fdt.chosen().bootargs().unwrap_or("");
    let test = arg(args, "test=").unwrap_or("hello");
    let mem = info.fdt.memory().regions().next().map(|r| r.size.unwrap_or(0) as u64).unwrap_or(0);
    let mut t = tests::Tally::new(mem);
    match test {
        "demo" => tests::demo(&mut t),
        "demand" => demand::demand(&mut t),
        "touch" => demand::touch(mem, arg(args, "mib=").and_then(|v| v.parse().ok()).unwrap_or(u64::MAX >> 20)),
        "all" => tests::all(&mut t),
        "block1g" => tests::block1g(&mut t),
        "isolation" => tests::isolation(&mut t),
        "bench" => tests::bench(&mut t, bench_n(args), arg(args, "only=")),
        "leaks" => leaks::leaks(&mut t),
        "irq" => irq::irq(&mut t),
        "irq-smp" => irq::irq_smp(&mut t),
        "bench-irq" => irq::bench_irq(&mut t),
        "leaks-fresh" => leaks::leaks_fresh(&mut t),
        "spin" => leaks::spin(),
        "remote" => remote::remote(),
        "traps" => traps::traps(&mut t),
        "pmu-owned" => traps::pmu_owned(&mut t),
        "tlb" => tlb::tlb(&mut t, args),
        "virtio" => virtio::virtio(&mut t, &info.fdt),
        "virtio-race" => virtio::race(&mut t, &info.fdt),
        "dma" => tests::dma(&mut t),
        "fuzz" => tests::fuzz(&mut t, arg(args, "seed=").and_then(|v| v.parse().ok()).unwrap_or(1)),
        "bench-vms" => tests::bench_vms(&mut t, arg(args, "label=").unwrap_or("?"), bench_n(args), arg(args, "only=")),
        "bench-scale" => tests::bench_scale(&mut t, arg(args, "label=").unwrap_or("?")),
        _ => {
            el1_rt::println!("guest: hello from EL{}, {} MiB of private memory", el1_rt::current_el(), mem >> 20);
            let cpus = info.fdt.cpus().map(|c| c.ids().first() as u64).collect::<alloc::vec::Vec<_>>();
            if cpus.len() > 1 {
                hello_smp(&cpus);
            }
        }
    }
    t.finish()
}

/// MPIDR Aff0 each secondary vCPU read when it came up (0: not yet).
#[cfg(target_os = "none")]
static UP: [core::sync::atomic::AtomicU64; 8] = [const { core::sync::atomic::AtomicU64::new(0) }; 8];

#[cfg(target_os = "none")]
fn hello_secondary(i: usize) -> ! {
    UP[i % 8].store(el1_rt::smp::cpu_index() as u64 | 1 << 32, core::sync::atomic::Ordering::SeqCst);
    el1_rt::smp::cpu_off()
}

/// The hello program with several vCPUs (`--guest-vcpus N`): starts every
/// CPU its DTB lists with PSCI CPU_ON and reports what each read as its
/// MPIDR (they do not print: one line at a time on the console).
#[cfg(target_os = "none")]
fn hello_smp(cpus: &[u64]) {
    use core::sync::atomic::Ordering::SeqCst;
    for (i, &mpidr) in cpus.iter().enumerate().skip(1).take(7) {
        let e = el1_rt::smp::start(mpidr, i, hello_secondary);
        if e != 0 {
            el1_rt::println!("guest: PSCI CPU_ON of MPIDR {mpidr:#x}: {e}");
        }
    }
    let (start, freq) = el1_rt::gic::counter();
    let n = cpus.len().min(8);
    while (1..n).any(|i| UP[i].load(SeqCst) == 0) && el1_rt::gic::counter().0 < start + freq {}
    let seen: alloc::vec::Vec<u64> =
        (1..n).map(|i| UP[i].load(SeqCst)).map(|v| if v == 0 { u64::MAX } else { v & 0xff }).collect();
    el1_rt::println!("guest: {} vCPUs in my DTB; vCPUs 1.. came up with MPIDR Aff0 {:?}", cpus.len(), seen);
}

/// The value of `KEY=` (given as "KEY=") in the guest's arguments.
fn arg<'a>(args: &'a str, key: &str) -> Option<&'a str> {
    args.split_ascii_whitespace().find_map(|t| t.strip_prefix(key))
}

/// The bench's repetitions per row (`n=`, default 1000).
fn bench_n(args: &str) -> u64 {
    arg(args, "n=").and_then(|v| v.parse().ok()).unwrap_or(1000)
}
