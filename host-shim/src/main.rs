//! The host shim: a small EL1 kernel in the host's seat. It boots with the
//! Linux arm64 boot protocol, reports where it runs, proves that it is held
//! by a stage-2, runs the scenario named on its command line
//! (`shim.test=NAME`), and ends the system with the overall result.
//!
//! Layers, each importing only those below it: `scenarios` > `vmm` (with
//! the device models of the `vmm-devices` crate) > `images`, `idle`,
//! `tracing`, `report`, `mem` > `hyp` (the host ABI's calls) > `el1-rt`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod hyp;
#[cfg(target_os = "none")]
mod idle;
#[cfg(target_os = "none")]
mod images;
#[cfg(target_os = "none")]
mod mem;
#[cfg(target_os = "none")]
mod report;
#[cfg(target_os = "none")]
mod scenarios;
#[cfg(target_os = "none")]
mod topup;
#[cfg(target_os = "none")]
mod tracing;
#[cfg(target_os = "none")]
mod vmm;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("host-shim runs at EL1 under the hyp: use `cargo xtask run`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
#[no_mangle]
fn el1_main(info: el1_rt::BootInfo) -> ! {
    use el1_rt::println;
    el1_rt::smccc::set_fail_hook(hyp::shutdown);
    report::install_abort_hook();
    println!("[host] host-shim: running at EL{}, DTB at {:#x}", el1_rt::current_el(), info.dtb);
    for r in info.fdt.memory().regions() {
        println!(
            "[host]   memory {:#x}..{:#x}",
            r.starting_address as u64,
            r.starting_address as u64 + r.size.unwrap_or(0) as u64
        );
    }
    let args = info.fdt.chosen().bootargs().unwrap_or("");
    let test = args.split_ascii_whitespace().find_map(|t| t.strip_prefix("shim.test=")).unwrap_or("demo");
    tracing::configure(args);
    scenarios::bench::configure(args);
    let mut r = report::Report::new();
    scenarios::boot::run(&info, &mut r);
    if !scenarios::run(test, &info, &mut r) {
        println!("[host] unknown scenario '{}'", test);
        r.fail("scenario exists");
    }
    r.finish()
}
