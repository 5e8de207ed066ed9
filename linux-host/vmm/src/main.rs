//! pkvm-vmm: the Linux host's VMM. Runs guests as protected VMs through
//! the host driver (`/dev/pkvm`, docs/linux-host-abi.md), one after the
//! other, with the guest platform of docs/abi.md and the device models of
//! vmm-devices: AArch64 ELF programs (`--guest`) and Linux (`--linux-guest`,
//! with a virtio-console and a virtio-blk over a file). Each guest's
//! console prints as `[vm N] ...` (its virtio-console as `[vm N hvc0]
//! ...`), what the host saw as `[host] vm N: ...`. Usage in `args.rs`.
//! Exit status: 0 when every guest powered off and reported no failure, 1
//! otherwise, 2 on bad arguments. `pkvm-vmm --hostile N [--seed S]` makes
//! N random calls on the driver instead (`hostile.rs`), `--bench N`
//! measures (`bench.rs`), `--gmem-test GUEST` checks the memory file's
//! rules with guest-test's `test=remote` (`gmem.rs`).

// Built for the host too, for the unit tests: the memory-file test and its
// probes (AArch64 instructions and signal contexts) exist only on AArch64.
#![cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]

mod args;
mod bench;
mod bench_gmem;
mod disk;
#[cfg(target_arch = "aarch64")]
mod gmem;
mod guest;
mod hostile;
mod load;
mod machine;
mod perf;
mod pkvm;
#[cfg(target_arch = "aarch64")]
mod refs;
mod seams;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match args::hostile(&argv) {
        Some(Ok((n, seed))) => match hostile::run(n, seed) {
            Ok(clean) => std::process::exit(if clean { 0 } else { 1 }),
            Err(e) => {
                eprintln!("pkvm-vmm: hostile: {e}");
                std::process::exit(1);
            }
        },
        Some(Err(e)) => {
            eprintln!("pkvm-vmm: {e}");
            std::process::exit(2);
        }
        None => {}
    }
    #[cfg(target_arch = "aarch64")]
    if argv.first().map(String::as_str) == Some("--gmem-kill-child") {
        let r =
            pkvm::Device::open("/dev/pkvm").map_err(|e| format!("/dev/pkvm: {e}")).and_then(|d| gmem::kill_child(&d));
        eprintln!("pkvm-vmm: gmem-kill-child: {}", r.err().unwrap_or_default());
        std::process::exit(1);
    }
    #[cfg(target_arch = "aarch64")]
    if argv.first().map(String::as_str) == Some("--gmem-test") {
        let r = argv.get(1).ok_or_else(|| "--gmem-test needs the guest-test ELF".to_string()).and_then(|path| {
            let dev = pkvm::Device::open("/dev/pkvm").map_err(|e| format!("/dev/pkvm: {e}"))?;
            machine::install_kick().map_err(|e| format!("installing the kick signal: {e}"))?;
            gmem::run(&dev, path)
        });
        match r {
            Ok(ok) => std::process::exit(if ok { 0 } else { 1 }),
            Err(e) => {
                eprintln!("pkvm-vmm: gmem-test: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Some(n) = args::bench(&argv) {
        let r = n.and_then(|n| {
            let dev = pkvm::Device::open("/dev/pkvm").map_err(|e| format!("/dev/pkvm: {e}"))?;
            bench::run(&dev, n)
        });
        if let Err(e) = r {
            eprintln!("pkvm-vmm: bench: {e}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
    let (dev, guests) = match args::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pkvm-vmm: {e}");
            eprintln!(
                "usage: pkvm-vmm [--dev PATH] (--guest FILE | --linux-guest IMAGE --initrd FILE [--disk FILE]) ..."
            );
            std::process::exit(2);
        }
    };
    let dev = match pkvm::Device::open(&dev) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("pkvm-vmm: {dev}: {e} (is the host driver loaded?)");
            std::process::exit(1);
        }
    };
    match dev.api_version() {
        Ok(pkvm::API_VERSION) => {}
        v => {
            eprintln!("pkvm-vmm: the driver's API version is {v:?}, this VMM speaks {}", pkvm::API_VERSION);
            std::process::exit(1);
        }
    }
    if let Err(e) = machine::install_kick() {
        eprintln!("pkvm-vmm: installing the kick signal: {e}");
        std::process::exit(1);
    }
    let mut ok = true;
    for (i, g) in guests.iter().enumerate() {
        match guest::run(&dev, i as u32 + 1, g) {
            Ok(good) => ok &= good,
            Err(e) => {
                println!("[host] cannot run guest '{}': {e}", g.path);
                ok = false;
            }
        }
    }
    std::process::exit(if ok { 0 } else { 1 });
}
