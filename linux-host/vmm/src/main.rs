//! pkvm-vmm: the Linux host's VMM. Runs guest programs as protected VMs
//! through the host driver (`/dev/pkvm`, docs/linux-host-abi.md), one
//! after the other, with the guest platform of docs/abi.md; prints each
//! guest's console as `[vm N] ...` and what the host saw as `[host] ...`.
//!
//! ```text
//! pkvm-vmm [--dev PATH] --guest FILE [--guest-mem SIZE] [--guest-vcpus N] [--args TEXT] ...
//! ```
//! `--guest-mem`, `--guest-vcpus` and `--args` (the guest's bootargs) apply
//! to the `--guest` before them. Exit status: 0 when every guest powered
//! off and reported no failure, 1 otherwise, 2 on bad arguments.
//! `pkvm-vmm --hostile N [--seed S]` makes N random calls on the driver
//! instead (`hostile.rs`).

mod hostile;
mod load;
mod machine;
mod pkvm;
mod seams;

use vmm_devices::loader::ElfPlan;
use vmm_devices::platform::{Platform, GUEST_RAM};

#[derive(Debug, PartialEq, Eq)]
struct GuestArgs {
    path: String,
    mem: u64,
    vcpus: u32,
    bootargs: String,
}

const DEFAULT_MEM: u64 = 64 << 20;

/// "64M", "1G", "4096K", "1048576".
fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

fn parse_args(args: &[String]) -> Result<(String, Vec<GuestArgs>), String> {
    let mut dev = "/dev/pkvm".to_string();
    let mut guests: Vec<GuestArgs> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        let last = |g: &mut Vec<GuestArgs>| g.last_mut().map(|_| ()).ok_or(format!("{a} goes after a --guest"));
        match a.as_str() {
            "--dev" => dev = val()?,
            "--guest" => guests.push(GuestArgs { path: val()?, mem: DEFAULT_MEM, vcpus: 1, bootargs: String::new() }),
            "--guest-mem" => {
                let v = val()?;
                last(&mut guests)?;
                let mem = parse_size(&v)
                    .filter(|m| *m >= 1 << 20 && m.is_multiple_of(4096))
                    .ok_or(format!("--guest-mem {v}: a multiple of 4K, at least 1M (e.g. 64M)"))?;
                guests.last_mut().unwrap().mem = mem;
            }
            "--guest-vcpus" => {
                let v = val()?;
                last(&mut guests)?;
                let n = v.parse().ok().filter(|n| (1..=8).contains(n)).ok_or(format!("--guest-vcpus {v}: 1..8"))?;
                guests.last_mut().unwrap().vcpus = n;
            }
            "--args" => {
                let v = val()?;
                last(&mut guests)?;
                guests.last_mut().unwrap().bootargs = v;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if guests.is_empty() {
        return Err("no --guest FILE".into());
    }
    Ok((dev, guests))
}

/// MemFree of /proc/meminfo, in KiB.
fn mem_free() -> Option<u64> {
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    m.lines().find_map(|l| l.strip_prefix("MemFree:")?.trim().strip_suffix(" kB")?.trim().parse().ok())
}

/// Loads and runs one guest; true if it powered off with no failure.
fn run_guest(dev: &pkvm::Device, id: u32, g: &GuestArgs) -> Result<bool, String> {
    let elf = std::fs::read(&g.path).map_err(|e| format!("{}: {e}", g.path))?;
    let vcpus = g.vcpus as usize;
    let prog = ElfPlan::new(&elf, g.mem, vcpus).map_err(|e| format!("{}: {e}", g.path))?;
    let dtb = vmm_devices::dtb::guest_dtb(g.mem, &g.bootargs, vcpus, None, None);
    let free_before = mem_free();
    let vm = dev.create_vm().map_err(|e| format!("PKVM_CREATE_VM: {e}"))?;
    let mem = vm.create_memory(GUEST_RAM, g.mem).map_err(|e| format!("PKVM_CREATE_MEMORY: {e}"))?;
    load::load_elf(&mem, &prog, &elf, &dtb).map_err(|e| format!("loading {}: {e}", g.path))?;
    // vCPU 0 enters the program with x0 = the DTB; the others wait for
    // the guest's PSCI CPU_ON.
    let mut fds = Vec::new();
    for i in 0..vcpus {
        fds.push(vm.create_vcpu(prog.entry, GUEST_RAM, i > 0).map_err(|e| format!("PKVM_CREATE_VCPU: {e}"))?);
    }
    let name = std::path::Path::new(&g.path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    println!(
        "[host] vm {id}: '{name}' loaded: {} MiB at IPA {GUEST_RAM:#x}, entry {:#x}, {} vCPU(s)",
        g.mem >> 20,
        prog.entry,
        g.vcpus
    );
    let platform = Platform::new(seams::VmIrq(&vm), vcpus, None);
    let out = machine::Machine::new(id, &vm, &mem, platform).run(fds);
    let c = &out.counts;
    match &out.end {
        Ok(()) => println!(
            "[host] vm {id}: powered off ({} MMIO exits, {} WFI exits, {} IRQ exits handled in the driver)",
            c.mmio, c.wfi, c.irq
        ),
        Err(e) => println!("[host] vm {id}: {e}"),
    }
    if let Some((p, f)) = out.result {
        println!("[host] vm {id}: guest reports {p} passed, {f} failed");
    }
    if out.relinquished > 0 {
        println!("[host] vm {id}: the guest relinquished {} KiB", out.relinquished / 1024);
    }
    match vm.stats(GUEST_RAM) {
        Ok(s) => println!(
            "[host] vm {id}: the guest made {} MEM_SHARE, {} MEM_UNSHARE and {} MMIO_GUARD calls",
            s.shares, s.unshares, s.guards
        ),
        Err(e) => println!("[host] vm {id}: PKVM_VM_STATS: {e}"),
    }
    // The last fds go: the driver destroys the VM and frees its memory.
    drop((mem, vm));
    let held = |what: &str| {
        std::fs::read_to_string(format!("/sys/class/misc/pkvm/{what}")).map_or("?".into(), |s| s.trim().to_string())
    };
    let free = match (free_before, mem_free()) {
        (Some(b), Some(a)) => format!("MemFree {b} KiB before the VM, {a} KiB after"),
        _ => "no MemFree".into(),
    };
    println!("[host] vm {id}: destroyed; the driver holds {} pages of {} VMs; {free}", held("pages"), held("vms"));
    Ok(out.end.is_ok() && out.result.is_none_or(|(_, f)| f == 0))
}

/// `--hostile N [--seed S]`, if that is what `args` asks for.
fn hostile_args(args: &[String]) -> Option<Result<(u64, u64), String>> {
    if args.first().map(String::as_str) != Some("--hostile") {
        return None;
    }
    let num =
        |i: usize, what: &str| args.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or(format!("{what} needs a number"));
    Some(match args.len() {
        2 => num(1, "--hostile").map(|n| (n, 1)),
        4 if args[2] == "--seed" => num(1, "--hostile").and_then(|n| Ok((n, num(3, "--seed")?))),
        _ => Err("usage: pkvm-vmm --hostile N [--seed S]".into()),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match hostile_args(&args) {
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
    let (dev, guests) = match parse_args(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pkvm-vmm: {e}");
            eprintln!(
                "usage: pkvm-vmm [--dev PATH] --guest FILE [--guest-mem SIZE] [--guest-vcpus N] [--args TEXT] ..."
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
        match run_guest(&dev, i as u32 + 1, g) {
            Ok(good) => ok &= good,
            Err(e) => {
                println!("[host] cannot run guest '{}': {e}", g.path);
                ok = false;
            }
        }
    }
    std::process::exit(if ok { 0 } else { 1 });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn arguments_apply_to_their_guest() {
        let (dev, g) =
            parse_args(&args("--guest a.elf --guest-mem 32M --guest b.elf --guest-vcpus 2 --args test=all")).unwrap();
        assert_eq!(dev, "/dev/pkvm");
        assert_eq!(
            g,
            [
                GuestArgs { path: "a.elf".into(), mem: 32 << 20, vcpus: 1, bootargs: String::new() },
                GuestArgs { path: "b.elf".into(), mem: DEFAULT_MEM, vcpus: 2, bootargs: "test=all".into() },
            ]
        );
        assert_eq!(parse_args(&args("--dev /tmp/x --guest a")).unwrap().0, "/tmp/x");
    }

    #[test]
    fn bad_arguments_say_why() {
        let e = |s: &str| parse_args(&args(s)).unwrap_err();
        assert!(e("").contains("no --guest"));
        assert!(e("--guest-mem 8M --guest a").contains("after a --guest"));
        assert!(e("--guest a --guest-mem 100K").contains("at least 1M"));
        assert!(e("--guest a --guest-mem 1000001").contains("multiple of 4K"));
        assert!(e("--guest a --guest-vcpus 9").contains("1..8"));
        assert!(e("--guest a --bogus").contains("unknown argument"));
        assert!(e("--guest").contains("needs a value"));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999999G"), None);
    }

    #[test]
    fn hostile_mode() {
        assert_eq!(hostile_args(&args("--guest a")), None);
        assert_eq!(hostile_args(&args("--hostile 10")), Some(Ok((10, 1))));
        assert_eq!(hostile_args(&args("--hostile 10 --seed 7")), Some(Ok((10, 7))));
        assert!(hostile_args(&args("--hostile x")).unwrap().is_err());
        assert!(hostile_args(&args("--hostile 1 --seed")).unwrap().is_err());
    }
}
