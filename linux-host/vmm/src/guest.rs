//! One guest from start to end: checked and planned (vmm-devices' loader),
//! a VM with its memory made through the driver and loaded through the
//! memory fd, its vCPUs run (`machine.rs`), what the host saw reported,
//! the VM destroyed and the driver's counts read back.

use vmm_devices::dtb::guest_dtb;
use vmm_devices::loader::{ElfPlan, LinuxPlan};
use vmm_devices::platform::{Platform, GUEST_RAM, LINUX_BOOTARGS};
use vmm_devices::virtio::{Config, Devices};

use crate::args::{GuestArgs, Kind};
use crate::disk::FileDisk;
use crate::machine::{Machine, Outcome};
use crate::pkvm::{Device, Memory, Vm};
use crate::{load, seams};

/// MemFree of /proc/meminfo, in KiB.
fn mem_free() -> Option<u64> {
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    m.lines().find_map(|l| l.strip_prefix("MemFree:")?.trim().strip_suffix(" kB")?.trim().parse().ok())
}

/// One of the driver's counts (/sys/class/misc/pkvm/{pages,vms}).
fn held(what: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/misc/pkvm/{what}")).map_or("?".into(), |s| s.trim().to_string())
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
}

/// A guest ready to run: its entry, its devices and, for Linux, where
/// its kernel is.
struct Loaded {
    entry: u64,
    virtio: Option<Devices>,
    kernel: Option<u64>,
}

/// Plans `g`, writes it into `mem` (with its DTB) and makes its devices.
fn load(g: &GuestArgs, mem: &Memory) -> Result<Loaded, String> {
    let vcpus = g.vcpus as usize;
    let image = read(&g.path)?;
    match &g.kind {
        Kind::Elf { bootargs } => {
            let plan = ElfPlan::new(&image, g.mem, vcpus).map_err(|e| format!("{}: {e}", g.path))?;
            let dtb = guest_dtb(g.mem, bootargs, vcpus, None, None);
            load::load_elf(mem, &plan, &image, &dtb).map_err(|e| format!("loading {}: {e}", g.path))?;
            Ok(Loaded { entry: plan.entry, virtio: None, kernel: None })
        }
        Kind::Linux { initrd, disk } => {
            let initrd = read(initrd.as_deref().unwrap_or_default())?;
            let plan = LinuxPlan::new(&image, initrd.len(), g.mem, vcpus).map_err(|e| format!("{}: {e}", g.path))?;
            let disk = match disk {
                Some(p) => Some(FileDisk::open(p).map_err(|e| format!("{p}: {e}"))?),
                None => None,
            };
            let devs = Devices::new(Config {
                console: true,
                disk: disk.map(|d| Box::new(d) as Box<dyn vmm_devices::virtio::Backend>),
                dma_pool: Some(plan.info.dma_pool()),
            });
            let dtb = guest_dtb(g.mem, LINUX_BOOTARGS, vcpus, Some(&plan.info), Some(&devs));
            load::load_linux(mem, &plan, &image, &initrd, &dtb).map_err(|e| format!("loading {}: {e}", g.path))?;
            Ok(Loaded { entry: plan.info.kernel, virtio: Some(devs), kernel: Some(plan.info.kernel) })
        }
    }
}

/// Loads and runs guest `id`; true if it powered off with no failure.
pub fn run(dev: &Device, id: u32, g: &GuestArgs) -> Result<bool, String> {
    let free_before = mem_free();
    let vm = dev.create_vm().map_err(|e| format!("PKVM_CREATE_VM: {e}"))?;
    let mem = vm.create_memory(GUEST_RAM, g.mem).map_err(|e| format!("PKVM_CREATE_MEMORY: {e}"))?;
    let l = load(g, &mem)?;
    // vCPU 0 enters with x0 = the DTB; the others wait for the guest's
    // PSCI CPU_ON.
    let mut fds = Vec::new();
    for i in 0..g.vcpus {
        fds.push(vm.create_vcpu(l.entry, GUEST_RAM, i > 0).map_err(|e| format!("PKVM_CREATE_VCPU: {e}"))?);
    }
    let name = std::path::Path::new(&g.path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    println!(
        "[host] vm {id}: '{name}' loaded: {} MiB at IPA {GUEST_RAM:#x}, entry {:#x}, {} vCPU(s)",
        g.mem >> 20,
        l.entry,
        g.vcpus
    );
    let platform = Platform::new(seams::VmIrq(&vm), g.vcpus as usize, l.virtio);
    let out = Machine::new(id, &vm, &mem, platform).run(fds);
    report(id, &vm, &mem, &out, l.kernel);
    // The last fds go: the driver destroys the VM and frees its memory.
    drop((mem, vm));
    let free = match (free_before, mem_free()) {
        (Some(b), Some(a)) => format!("MemFree {b} KiB before the VM, {a} KiB after"),
        _ => "no MemFree".into(),
    };
    println!("[host] vm {id}: destroyed; the driver holds {} pages of {} VMs; {free}", held("pages"), held("vms"));
    Ok(out.end.is_ok() && out.result.is_none_or(|(_, f)| f == 0))
}

/// What the host saw of the guest's run, before its teardown.
fn report(id: u32, vm: &Vm, mem: &Memory, out: &Outcome, kernel: Option<u64>) {
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
    for (k, (name, s, status)) in out.virtio.iter().enumerate() {
        println!(
            "[host] vm {id}: {name} (slot {k}): {} requests, {} refused for memory not shared, {} bad requests, \
             {} ring errors, {} bad register accesses, {} backend errors, status {status:#x}",
            s.requests, s.mem_errors, s.bad_requests, s.ring_errors, s.bad_accesses, s.backend_errors
        );
    }
    if !out.virtio.is_empty() {
        println!(
            "[host] vm {id}: virtio: {} MMIO exits, {} driver calls to reach guest memory (PIN, UNPIN, pread, pwrite)",
            out.virtio_exits, out.device_calls
        );
    }
    match vm.stats(GUEST_RAM) {
        Ok(s) => println!(
            "[host] vm {id}: the guest made {} MEM_SHARE, {} MEM_UNSHARE and {} MMIO_GUARD calls; {} granule(s) guarded",
            s.shares, s.unshares, s.guards, s.granules
        ),
        Err(e) => println!("[host] vm {id}: PKVM_VM_STATS: {e}"),
    }
    if let Some(k) = kernel {
        // The guest's kernel is private: the driver refuses to copy it.
        let mut b = [0u8; 8];
        match mem.read(k, &mut b) {
            Ok(()) => println!("[host] vm {id}: read the guest's kernel at IPA {k:#x}: {:#x}!", u64::from_le_bytes(b)),
            Err(e) => println!("[host] vm {id}: a read of the guest's kernel at IPA {k:#x} is refused: {e}"),
        }
    }
}
