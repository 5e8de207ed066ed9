//! The memory-file test's other parties (`gmem.rs`): another VM that must
//! run on while a conversion waits, and a second VMM process whose waiting
//! conversion is killed.

use std::time::Duration;

use vmm_devices::platform::GUEST_RAM;

use super::check::{Tally, BLOCK, HOLD, PAGE};
use crate::pkvm::Device;
use crate::refs::Ring;

/// Another VM (2 MiB, a guest storing to an address with no device)
/// made, run until its third MMIO exit and destroyed: the MMIO exits seen.
pub(super) fn other_vm_runs(dev: &Device) -> Result<u32, String> {
    use crate::bench::{program, NOWHERE, STORE_LOOP};
    let e = |what: &'static str| move |err: std::io::Error| format!("{what}: {err}");
    let vm = dev.create_vm().map_err(e("PKVM_CREATE_VM"))?;
    let mem = vm.create_memory(GUEST_RAM, BLOCK).map_err(e("PKVM_CREATE_MEMORY"))?;
    mem.write(GUEST_RAM, &program(&STORE_LOOP)).map_err(e("pwrite"))?;
    let mut vcpu = vm.create_vcpu(GUEST_RAM, NOWHERE, false).map_err(e("PKVM_CREATE_VCPU"))?;
    let mut n = 0;
    while n < 3 {
        let x = vcpu.run([0; 4]).map_err(e("PKVM_RUN"))?;
        if x.reason != hyp_abi::host::exit::MMIO || x.x[0] != NOWHERE {
            return Err(format!("unexpected exit {x:?}"));
        }
        n += 1;
    }
    Ok(n)
}

/// `pkvm-vmm --gmem-kill-child`: a VMM whose guest's conversion waits
/// forever. A guest (bench_gmem's share loop) shares a page and exits; the
/// page is mapped and registered as an io_uring buffer, never released;
/// the guest's MEM_UNSHARE then waits in the driver. Says `waiting` on
/// stdout just before that run, which never returns.
pub fn kill_child(dev: &Device) -> Result<(), String> {
    let e = |what: &'static str| move |err: std::io::Error| format!("{what}: {err}");
    let page = GUEST_RAM + BLOCK + 5 * PAGE;
    let vm = dev.create_vm().map_err(e("PKVM_CREATE_VM"))?;
    let mem = vm.create_memory(GUEST_RAM, 2 * BLOCK).map_err(e("PKVM_CREATE_MEMORY"))?;
    mem.write(GUEST_RAM, &crate::bench::program(&crate::bench_gmem::share_loop())).map_err(e("pwrite"))?;
    let map = mem.map().map_err(e("mmap"))?;
    let mut vcpu = vm.create_vcpu(GUEST_RAM, page, false).map_err(e("PKVM_CREATE_VCPU"))?;
    let x = vcpu.run([0; 4]).map_err(e("PKVM_RUN"))?;
    if x.reason != hyp_abi::host::exit::HYPERCALL {
        return Err(format!("unexpected exit {x:?}"));
    }
    let ring = Ring::new().map_err(e("io_uring_setup"))?;
    ring.register(map.at(page), PAGE as usize).map_err(e("io_uring_register"))?;
    println!("waiting");
    let r = vcpu.run([0; 4]);
    Err(format!("the run waiting for the io_uring buffer returned: {r:?}"))
}

/// A conversion's wait can be killed: a VMM (`--gmem-kill-child`) whose
/// vCPU waits in the driver for a reference that never goes gets SIGKILL;
/// it dies at once and its VM's memory goes back to Linux.
pub(super) fn killed(t: &mut Tally) -> Result<(), String> {
    use std::io::BufRead;
    let held = || std::fs::read_to_string("/sys/class/misc/pkvm/pages").unwrap_or_default().trim().to_string();
    let before = held();
    let mut child = std::process::Command::new("/proc/self/exe")
        .arg("--gmem-kill-child")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning the child VMM: {e}"))?;
    let mut line = String::new();
    let out = child.stdout.take().ok_or("no stdout")?;
    std::io::BufReader::new(out).read_line(&mut line).map_err(|e| format!("reading the child: {e}"))?;
    std::thread::sleep(HOLD);
    let alive = child.try_wait().map_err(|e| e.to_string())?.is_none();
    let during = held();
    let t0 = std::time::Instant::now();
    child.kill().map_err(|e| format!("SIGKILL: {e}"))?;
    let status = child.wait().map_err(|e| format!("waiting for the child: {e}"))?;
    let took = t0.elapsed();
    use std::os::unix::process::ExitStatusExt;
    let after = held();
    t.check(
        line.trim() == "waiting"
            && alive
            && status.signal() == Some(libc::SIGKILL)
            && took < Duration::from_secs(2)
            && after == before
            && during != before,
        "a VMM whose conversion waits for a reference that never goes dies at once of SIGKILL, and its memory \
         goes back to Linux",
        format_args!("said {line:?}, alive {alive}, {status:?} after {took:?}, pages {before} -> {during} -> {after}"),
    );
    Ok(())
}
