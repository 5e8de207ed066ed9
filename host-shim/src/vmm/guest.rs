//! A guest of the host's VMM: its state, loading (with the shared
//! loaders and DTB builder of `vmm-devices`), its device models and its
//! teardown.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use el1_rt::println;
use vmm_devices::loader::{self, ElfPlan, LinuxInfo, LinuxPlan};
use vmm_devices::platform::{Platform, Port, LINUX_BOOTARGS};
use vmm_devices::virtio::{self, Devices};

use vmm_devices::platform::{GUEST_RAM, GUEST_UART};

use super::irq_control::HypIrq;
use super::pinned_mem::HypPin;
use crate::hyp;
use crate::mem::HostMem;

/// Where a vCPU stands for the VMM's scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VState {
    /// Powered off: waits for the guest's PSCI CPU_ON.
    Off,
    Runnable,
    /// In WFI with nothing deliverable: runnable again at this virtual
    /// counter value (u64::MAX: only an interrupt the VMM raises wakes it).
    Idle(u64),
}

/// What [`Guest::on_exit`] tells the loop that runs vCPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Run on.
    Go,
    /// The guest yielded (host service YIELD).
    Yield,
    /// The guest powered off.
    Off,
}

const SZ_2M: u64 = 2 << 20;
const SZ_1G: u64 = 1 << 30;

/// How a guest's memory is donated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Donation {
    /// All of it before the first run (DONATE_GUEST of the whole RAM).
    UpFront,
    /// None before the first run: the RAM is declared with MEM_ON_DEMAND
    /// and each MEM_FAULT exit donates what the hyp suggests (a 2 MiB
    /// block where it can).
    OnDemand,
}

pub struct Guest {
    pub handle: u64,
    pub name: String,
    /// Host PA of guest IPA GUEST_RAM.
    pub pa: u64,
    pub mem: u64,
    pub entry: u64,
    /// Host pins taken for this guest: PA → count.
    pub(super) pins: BTreeMap<u64, u32>,
    pub unshare_pending: u64,
    pub guest_aborts: u64,
    pub mmio_exits: u64,
    /// How the guest's memory is given: all before the first run, or as
    /// the guest touches it (MEM_FAULT exits).
    pub donation: Donation,
    /// Bytes donated to the guest so far (all of `mem` up front).
    pub donated: u64,
    /// MEM_FAULT exits seen (on demand).
    pub mem_faults: u64,
    /// The run's exit profile, when the bench asks for one.
    pub prof: Option<alloc::boxed::Box<super::profile::Profile>>,
    /// Where a Linux guest's pieces are (None for an ELF guest).
    pub linux: Option<LinuxInfo>,
    /// The guest's own tally (HOST_RESULT).
    pub result: Option<(u64, u64)>,
    /// Bytes the guest says it relinquished.
    pub relinquished: u64,
    /// Per vCPU: the reply owed to its last exit (a host call's when run()
    /// returned early on a yield).
    pub(super) replies: Vec<[u64; 4]>,
    /// Per vCPU: may it run?
    pub vstate: Vec<VState>,
    /// The vCPU that ran last (round-robin).
    pub(super) cur: usize,
    /// The guest powered off (SYSTEM_OFF).
    pub done: bool,
    /// vCPUs (bit n) an interrupt was raised for since their run began.
    pub(super) kicks: u64,
    /// The guest yielded (host service YIELD): run() returns.
    pub yielded: bool,
    /// Calls the guest reported at its last yield.
    pub guest_calls: u64,
    /// Print each exit as it happens (the demo's narration).
    pub verbose: bool,
    /// VCPU_RUN has been called: the vCPU set is closed.
    pub(super) started: bool,
    /// The device models: GIC, PL011, interrupt test device, virtio.
    pub platform: Platform<HypIrq>,
    /// Exits seen: WFI/WFE (the guest idles), IRQ (the host's interrupts
    /// or the end of a slice).
    pub wfi_exits: u64,
    pub irq_exits: u64,
    /// While the vCPUs run each on a host CPU of its own: vCPU i's host
    /// CPU (Aff0), to kick it when an interrupt is raised for it.
    pub kick_aff0: Vec<u16>,
    /// Hypercalls the devices made to reach guest memory (PAGE_STATE,
    /// PIN, UNPIN), counted by the sessions' `HypPin`.
    pub virtio_calls: core::cell::Cell<u64>,
}

/// Why a guest cannot be loaded or started.
pub enum LoadError {
    /// The image or configuration (see `vmm_devices::loader`).
    Load(loader::LoadError),
    /// A hypercall failed: which, and its error.
    Hyp(&'static str, i64),
}

impl From<loader::LoadError> for LoadError {
    fn from(e: loader::LoadError) -> LoadError {
        LoadError::Load(e)
    }
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            LoadError::Load(e) => e.fmt(f),
            LoadError::Hyp(what, e) => write!(f, "{what} failed: {e}"),
        }
    }
}

/// Fresh host memory for a guest of `mem` bytes, block-aligned when its
/// size allows (so the hyp can map it with blocks).
fn alloc_guest(hm: &mut HostMem, mem: u64) -> Result<u64, LoadError> {
    let align = if mem >= SZ_1G && mem.is_multiple_of(SZ_1G) {
        SZ_1G
    } else if mem.is_multiple_of(SZ_2M) {
        SZ_2M
    } else {
        4096
    };
    hm.alloc(mem, align).ok_or(LoadError::Load(loader::LoadError::NoMemory))
}

/// The guest RAM at host PA `pa` (`mem` bytes), as bytes.
///
/// # Safety
///
/// `[pa, pa + mem)` is host RAM allocated for this guest, not donated yet
/// and used by nobody else while the slice lives.
unsafe fn guest_ram<'a>(pa: u64, mem: u64) -> &'a mut [u8] {
    // SAFETY: as the caller promises; the identity map makes PA = VA.
    unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, mem as usize) }
}

impl Guest {
    /// Loads `elf` into fresh host memory, writes the DTB at the base of
    /// guest RAM, creates the VM, donates the memory and creates vCPU 0.
    pub fn load(hm: &mut HostMem, name: &str, elf: &[u8], mem: u64, bootargs: &str) -> Result<Guest, LoadError> {
        Guest::load_smp(hm, name, elf, mem, bootargs, 1)
    }

    /// As [`Guest::load`] with `vcpus` vCPUs (1..=8): vCPU 0 starts at the
    /// entry point, the others powered off until the guest's PSCI CPU_ON.
    pub fn load_smp(
        hm: &mut HostMem,
        name: &str,
        elf: &[u8],
        mem: u64,
        bootargs: &str,
        vcpus: usize,
    ) -> Result<Guest, LoadError> {
        Guest::load_with(hm, name, elf, mem, bootargs, vcpus, None)
    }

    /// As [`Guest::load_smp`], with the virtio devices `virtio` describes
    /// (docs/abi.md, "virtio-mmio devices"): they appear in the guest's DTB
    /// and are served on its MMIO exits. A DMA pool outside guest RAM, not
    /// page-aligned or empty, or over the DTB, is refused (BadConfig).
    pub fn load_with(
        hm: &mut HostMem,
        name: &str,
        elf: &[u8],
        mem: u64,
        bootargs: &str,
        vcpus: usize,
        virtio: Option<virtio::Config>,
    ) -> Result<Guest, LoadError> {
        Guest::load_donating(hm, name, elf, mem, bootargs, vcpus, virtio, Donation::UpFront)
    }

    /// As [`Guest::load_with`], the memory donated as `donation` says.
    #[allow(clippy::too_many_arguments)]
    pub fn load_donating(
        hm: &mut HostMem,
        name: &str,
        elf: &[u8],
        mem: u64,
        bootargs: &str,
        vcpus: usize,
        virtio: Option<virtio::Config>,
        donation: Donation,
    ) -> Result<Guest, LoadError> {
        if let Some(pool) = virtio.as_ref().and_then(|v| v.dma_pool) {
            loader::check_pool(pool, mem)?;
        }
        let plan = ElfPlan::new(elf, mem, vcpus)?;
        let virtio = virtio.map(Devices::new);
        let pa = alloc_guest(hm, mem)?;
        // SAFETY: [pa, pa + mem) is free host RAM we just allocated; it is
        // ours until donated.
        plan.write(elf, unsafe { guest_ram(pa, mem) });
        let dtb = vmm_devices::dtb::guest_dtb(mem, bootargs, vcpus, None, virtio.as_ref());
        Guest::start(hm, name, pa, mem, vcpus, plan.entry, &dtb, None, virtio, donation)
    }

    /// Loads a Linux guest: its arm64 Image at the first 2 MiB boundary of
    /// guest RAM above the DTB window plus text_offset, the initramfs below
    /// the restricted DMA pool at the top of RAM, and the DTB (with
    /// `/chosen` naming the initramfs, the pool, a virtio-console and a
    /// virtio-blk over `disk` if it is not empty) at the base; vCPU 0
    /// enters the Image with x0 = the DTB (Linux's arm64 boot protocol).
    #[allow(clippy::too_many_arguments)]
    pub fn load_linux(
        hm: &mut HostMem,
        name: &str,
        image: &[u8],
        initrd: &[u8],
        disk: &'static [u8],
        cmdline: &str,
        mem: u64,
        vcpus: usize,
    ) -> Result<Guest, LoadError> {
        let plan = LinuxPlan::new(image, initrd.len(), mem, vcpus)?;
        let info = plan.info;
        // A virtio-console and, with a disk image, a virtio-blk, their DMA
        // bounced through the pool.
        let virtio = Devices::new(virtio::Config {
            console: true,
            disk: (!disk.is_empty()).then(|| alloc::boxed::Box::new(virtio::Disk::ReadOnly(disk)) as _),
            dma_pool: Some(info.dma_pool()),
        });
        // The VMM's console and panic options, then the user's (which may
        // override them: Linux takes the last of a repeated option).
        let bootargs = if cmdline.is_empty() {
            String::from(LINUX_BOOTARGS)
        } else {
            alloc::format!("{LINUX_BOOTARGS} {cmdline}")
        };
        let dtb = vmm_devices::dtb::guest_dtb(mem, &bootargs, vcpus, Some(&info), Some(&virtio));
        let pa = alloc_guest(hm, mem)?;
        // SAFETY: [pa, pa + mem) is free host RAM we just allocated; it is
        // ours until donated. The plan placed every piece inside it.
        plan.write(image, initrd, unsafe { guest_ram(pa, mem) });
        Guest::start(hm, name, pa, mem, vcpus, info.kernel, &dtb, Some(info), Some(virtio), Donation::UpFront)
    }

    /// Writes the DTB at the base of the loaded guest memory at `pa`, creates
    /// the VM, donates the memory (or declares it, on demand) and creates
    /// the vCPUs: vCPU 0 enters at
    /// `entry` with x0 = the DTB, the others powered off. On failure the
    /// VM is destroyed and the memory freed.
    #[allow(clippy::too_many_arguments)]
    fn start(
        hm: &mut HostMem,
        name: &str,
        pa: u64,
        mem: u64,
        vcpus: usize,
        entry: u64,
        dtb: &[u8],
        linux: Option<LinuxInfo>,
        virtio: Option<Devices>,
        donation: Donation,
    ) -> Result<Guest, LoadError> {
        // SAFETY: [pa, pa + mem) is host RAM the caller allocated for this
        // guest and has not donated yet.
        if let Err(e) = loader::write_dtb(dtb, unsafe { guest_ram(pa, mem) }) {
            hm.free(pa, mem);
            return Err(e.into());
        }
        let handle = match hyp::vm_create() {
            Ok(h) => h,
            Err(e) => {
                hm.free(pa, mem);
                return Err(LoadError::Hyp("vm_create", e));
            }
        };
        let fail = |hm: &mut HostMem, what, e| {
            // Whatever was donated comes back scrubbed with the VM.
            let _ = hyp::vm_destroy(handle);
            hm.free(pa, mem);
            LoadError::Hyp(what, e)
        };
        let (r, what) = match donation {
            Donation::UpFront => (hyp::donate(handle, pa, GUEST_RAM, mem), "donate"),
            Donation::OnDemand => (hyp::mem_on_demand(handle, GUEST_RAM, mem), "mem_on_demand"),
        };
        if r != 0 {
            return Err(fail(hm, what, r));
        }
        if let Err(e) = hyp::vcpu_create(handle, entry, GUEST_RAM) {
            return Err(fail(hm, "vcpu_create", e));
        }
        for _ in 1..vcpus {
            if let Err(e) = hyp::call(hyp_abi::host::VCPU_CREATE, [handle, 0, 0, hyp_abi::host::VCPU_OFF, 0, 0]) {
                return Err(fail(hm, "vcpu_create", e));
            }
        }
        Ok(Guest {
            handle,
            name: name.into(),
            pa,
            mem,
            entry,
            linux,
            donation,
            donated: if donation == Donation::UpFront { mem } else { 0 },
            replies: alloc::vec![[0; 4]; vcpus],
            vstate: (0..vcpus).map(|i| if i == 0 { VState::Runnable } else { VState::Off }).collect(),
            cur: vcpus - 1,
            done: false,
            platform: Platform::new(HypIrq::new(handle), vcpus, virtio),
            ..Guest::placeholder()
        })
    }

    /// An empty guest (no VM) standing in while the real one is lent to
    /// the parallel runner; also every field's initial value for `load`.
    pub fn placeholder() -> Guest {
        Guest {
            handle: 0,
            name: String::new(),
            pa: 0,
            mem: 0,
            entry: 0,
            pins: BTreeMap::new(),
            unshare_pending: 0,
            guest_aborts: 0,
            mmio_exits: 0,
            donation: Donation::UpFront,
            donated: 0,
            mem_faults: 0,
            prof: None,
            linux: None,
            result: None,
            relinquished: 0,
            yielded: false,
            replies: Vec::new(),
            vstate: Vec::new(),
            cur: 0,
            done: true,
            kicks: 0,
            guest_calls: 0,
            verbose: false,
            started: false,
            platform: Platform::new(HypIrq::new(0), 0, None),
            wfi_exits: 0,
            irq_exits: 0,
            kick_aff0: Vec::new(),
            virtio_calls: core::cell::Cell::new(0),
        }
    }

    pub fn ipa_to_pa(&self, ipa: u64) -> Option<u64> {
        (ipa >= GUEST_RAM && ipa - GUEST_RAM < self.mem).then(|| self.pa + (ipa - GUEST_RAM))
    }

    /// A guest access of `size` bytes at `ipa` to the device models; the
    /// value read, or None if no device is there. Guest memory is reached
    /// only through pages the guest shared, each pinned for this exit
    /// alone; lines are printed as `[vm N] ...` (PL011) and
    /// `[vm N hvc0] ...` (virtio-console).
    #[inline(always)]
    pub(super) fn device_mmio(&mut self, ipa: u64, write: bool, size: u64, value: u64) -> Option<u64> {
        // The closures capture one reference each (little to build on the
        // PL011's path, the bench's MMIO round trip).
        let vm = &(self.handle, self.pa, self.mem, &self.virtio_calls);
        let session = move || vmm_devices::pin::PinnedMem::new(GUEST_RAM, vm.2, HypPin::new(GUEST_RAM, vm.1, vm.3));
        let prof = &mut self.prof;
        self.platform.mmio(ipa, write, size, value, session, move |port, l| {
            if let Some(p) = prof.as_mut() {
                p.line(l);
            }
            match port {
                Port::Uart => println!("[vm {}] {l}", vm.0),
                Port::Virtio => println!("[vm {} hvc0] {l}", vm.0),
            }
        })
    }

    /// The emulated PL011 alone (for scenarios that run a guest with a
    /// loop of their own): offset `off` of its window.
    pub fn uart(&mut self, off: u64, write: bool, value: u64) -> u64 {
        self.device_mmio(GUEST_UART + off, write, 4, value).unwrap_or(0)
    }

    /// Prints each virtio device's counters (and the hypercalls the
    /// devices made to reach guest memory).
    pub fn virtio_report(&self) {
        let Some(devs) = &self.platform.virtio else { return };
        let mut k = 0;
        while let Some((name, s, status)) = devs.slot(k) {
            let backend = if s.backend_errors > 0 {
                alloc::format!(", {} backend I/O errors", s.backend_errors)
            } else {
                String::new()
            };
            println!(
                "[host] vm {}: {} (slot {}): {} requests, {} refused for memory not shared, {} bad requests, {} ring errors, {} bad register accesses{}, status {:#x}",
                self.handle, name, k, s.requests, s.mem_errors, s.bad_requests, s.ring_errors, s.bad_accesses, backend, status
            );
            k += 1;
        }
        println!(
            "[host] vm {}: virtio: {} MMIO exits, {} hypercalls to reach guest memory (PAGE_STATE, PIN, UNPIN)",
            self.handle,
            self.platform.virtio_exits,
            self.virtio_calls.get()
        );
    }

    /// Has the VM run (its vCPU set is closed)?
    pub fn has_run(&self) -> bool {
        self.started
    }

    /// Destroys the VM (unpinning first if needed); returns bytes reclaimed.
    pub fn destroy(mut self, hm: &mut HostMem) -> Result<u64, i64> {
        for (pa, n) in core::mem::take(&mut self.pins) {
            for _ in 0..n {
                hyp::unpin(pa);
            }
        }
        let r = hyp::vm_destroy(self.handle)?;
        hm.free(self.pa, self.mem);
        Ok(r)
    }
}
