//! The EL2 hypervisor binary: the glue that carries out `hyp_core`'s
//! decisions on the hardware. On the host (`cargo test`, `cargo build`) it
//! is an empty program; the real thing is built for aarch64-unknown-none.
//!
//! Its modules import downwards only, top to bottom: `boot` > `trap`
//! (every exception's entry; the host's and the guests' traps) >
//! `hypercall` > `checker` > `vm` (VMs, vCPUs, the world switch) > `hyp_env`
//! (the core's `MmEnv`) > `tracebuf` > `console` > `dev` (drivers) >
//! `owners`, `pool`, `percpu` > `arch`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod checker;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod dev;
#[cfg(target_os = "none")]
mod hyp_env;
#[cfg(target_os = "none")]
mod hypercall;
#[cfg(target_os = "none")]
mod owners;
#[cfg(target_os = "none")]
mod percpu;
#[cfg(target_os = "none")]
mod pool;
#[cfg(target_os = "none")]
mod tracebuf;
#[cfg(target_os = "none")]
mod trap;
#[cfg(target_os = "none")]
mod vm;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the hyp runs at EL2 on QEMU: build and run it with `cargo xtask run`");
    std::process::exit(2);
}

/// How the system ends. The runner (`cargo xtask`) reads the status line.
#[cfg(target_os = "none")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    HostFailed = 1,
    BootFailed = 2,
    Fatal = 3,
    InvariantBroken = 4,
    /// The host asked for a reset (PSCI SYSTEM_RESET); the hyp powers off.
    HostReset = 5,
    Panic = 101,
}

/// Prints the final status line and powers the machine off.
#[cfg(target_os = "none")]
pub fn shutdown(status: Status) -> ! {
    console::emergency(format_args!("[hyp] system off: status {} ({:?})\n", status as u32, status));
    arch::aarch64::psci::system_off()
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    match info.location() {
        Some(l) => console::emergency(format_args!("[hyp] PANIC at {}:{}: {}\n", l.file(), l.line(), info.message())),
        None => console::emergency(format_args!("[hyp] PANIC: {}\n", info.message())),
    }
    shutdown(Status::Panic)
}
