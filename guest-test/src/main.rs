//! Guest test payloads: a plain QEMU-virt EL1 program (RAM at 0x4000_0000,
//! PL011 at 0x0900_0000, PSCI over HVC, x0 = DTB) that exercises the pKVM
//! guest ABI and asks the host (host services) to check the other side.
//! `test=NAME` in its DTB's bootargs picks what it runs.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod abi;
#[cfg(target_os = "none")]
mod irq;
#[cfg(target_os = "none")]
mod leaks;
#[cfg(target_os = "none")]
mod tests;
#[cfg(target_os = "none")]
mod tlb;
#[cfg(target_os = "none")]
mod traps;

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
    let test = args.split_ascii_whitespace().find_map(|t| t.strip_prefix("test=")).unwrap_or("hello");
    let mem = info.fdt.memory().regions().next().map(|r| r.size.unwrap_or(0) as u64).unwrap_or(0);
    let mut t = tests::Tally::new(mem);
    match test {
        "demo" => tests::demo(&mut t),
        "all" => tests::all(&mut t),
        "block1g" => tests::block1g(&mut t),
        "isolation" => tests::isolation(&mut t),
        "bench" => tests::bench(&mut t),
        "leaks" => leaks::leaks(&mut t),
        "irq" => irq::irq(&mut t),
        "irq-smp" => irq::irq_smp(&mut t),
        "bench-irq" => irq::bench_irq(&mut t),
        "leaks-fresh" => leaks::leaks_fresh(&mut t),
        "spin" => leaks::spin(),
        "traps" => traps::traps(&mut t),
        "pmu-owned" => traps::pmu_owned(&mut t),
        "tlb" => tlb::tlb(&mut t, args),
        "fuzz" => {
            let seed = args.split_ascii_whitespace().find_map(|t| t.strip_prefix("seed=")).and_then(|v| v.parse().ok());
            tests::fuzz(&mut t, seed.unwrap_or(1))
        }
        "bench-scale" => {
            let label = args.split_ascii_whitespace().find_map(|t| t.strip_prefix("label=")).unwrap_or("?");
            tests::bench_scale(&mut t, label)
        }
        _ => el1_rt::println!("guest: hello from EL{}, {} MiB of private memory", el1_rt::current_el(), mem >> 20),
    }
    t.finish()
}
