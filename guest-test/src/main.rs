#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("guest-test runs as a protected guest: use `cargo xtask run`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
#[no_mangle]
fn el1_main(_info: el1_rt::BootInfo) -> ! {
    el1_rt::println!("guest: hello from EL{}", el1_rt::current_el());
    el1_rt::smccc::system_off()
}
