//! The host's VMM: loads a guest (ELF + DTB) into host memory, donates it,
//! runs its vCPU, emulates its PL011 (with its interrupt), GIC distributor
//! and redistributors (`vgic.rs`), an interrupt test device and, when asked
//! for, virtio-mmio devices (`virtio/`), and answers its host-service calls.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use el1_rt::println;
use hyp_abi::host::exit;
use hyp_abi::services as svc;

use crate::hyp;
use crate::mem::HostMem;
use crate::report::{expect_abort, read64, write64};

pub const GUEST_RAM: u64 = 0x4000_0000;
pub const GUEST_UART: u64 = 0x0900_0000;
/// The PL011's interrupt: SPI 1, as on QEMU `virt`.
pub const UART_INTID: usize = 33;
/// A test device with a level-sensitive interrupt (SPI 2): a write of N to
/// +0 asserts its line until N writes to +4 acknowledge it; +8 reads the
/// acknowledgements so far.
pub const GUEST_IRQ_TEST: u64 = 0x0b00_0000;
pub const IRQ_TEST_INTID: usize = 34;
/// The guest DTB sits in the first 64 KiB of guest RAM.
const GUEST_DTB_SIZE: usize = 0x1_0000;
/// A Linux guest's command line: the PL011 as its console (no earlycon: it
/// would map the UART through a fixmap that MMIO_GUARD never sees).
pub const LINUX_BOOTARGS: &str = "console=ttyAMA0 panic=-1";
/// The restricted DMA pool of a Linux guest (`restricted-dma-pool`): its
/// devices bounce all DMA through it, and Linux shares it page by page.
pub const DMA_POOL_SIZE: u64 = 4 << 20;
/// The PL011's clock (QEMU virt's `apb-pclk`, 24 MHz).
const CLK_PHANDLE: u32 = 0x8003;
const SZ_2M: u64 = 2 << 20;
const SZ_1G: u64 = 1 << 30;

pub struct Guest {
    pub handle: u64,
    pub name: String,
    /// Host PA of guest IPA GUEST_RAM.
    pub pa: u64,
    pub mem: u64,
    pub entry: u64,
    line: Vec<u8>,
    /// Host pins taken for this guest: PA → count.
    pins: BTreeMap<u64, u32>,
    pub unshare_pending: u64,
    pub guest_aborts: u64,
    pub mmio_exits: u64,
    /// Where a Linux guest's pieces are (None for an ELF guest).
    pub linux: Option<LinuxInfo>,
    /// The guest's own tally (HOST_RESULT).
    pub result: Option<(u64, u64)>,
    /// Bytes the guest says it relinquished.
    pub relinquished: u64,
    /// Per vCPU: the reply owed to its last exit (a host call's when run()
    /// returned early on a yield).
    replies: Vec<[u64; 4]>,
    /// Per vCPU: may it run?
    pub vstate: Vec<VState>,
    /// The vCPU that ran last (round-robin).
    cur: usize,
    /// The guest powered off (SYSTEM_OFF).
    pub done: bool,
    /// vCPUs (bit n) an interrupt was raised for since their run began.
    kicks: u64,
    /// The guest yielded (host service YIELD): run() returns.
    pub yielded: bool,
    /// Calls the guest reported at its last yield.
    pub guest_calls: u64,
    /// Print each exit as it happens (the demo's narration).
    pub verbose: bool,
    /// VCPU_RUN has been called: the vCPU set is closed.
    started: bool,
    /// The emulated distributor and redistributors.
    pub gic: crate::vgic::Gic,
    uart: Pl011,
    irq_test: IrqTest,
    /// Exits seen: WFI/WFE (the guest idles), IRQ (the host's interrupts
    /// or the end of a slice).
    pub wfi_exits: u64,
    pub irq_exits: u64,
    /// While the vCPUs run each on a host CPU of its own: vCPU i's host
    /// CPU (Aff0), to kick it when an interrupt is raised for it.
    pub kick_aff0: Vec<u16>,
    /// virtio-mmio devices (None: the guest has none, its DTB names none).
    pub virtio: Option<crate::virtio::Devices>,
    /// Hypercalls the devices made to reach guest memory (PAGE_STATE,
    /// PIN, UNPIN), and the MMIO exits they served.
    pub virtio_calls: u64,
    pub virtio_exits: u64,
}

/// A Linux guest's layout in its RAM (IPAs).
#[derive(Clone, Copy)]
pub struct LinuxInfo {
    pub kernel: u64,
    pub kernel_size: u64,
    pub initrd: (u64, u64),
    /// The restricted DMA pool: base, size.
    pub pool: (u64, u64),
}

/// The PL011's interrupt registers (PL011 TRM 3.3.13-3.3.17): the
/// transmit interrupt rises after every character (the FIFO drains at
/// once), the receive side never has data.
#[derive(Default)]
struct Pl011 {
    imsc: u32,
    ris: u32,
}

/// UARTRIS/UARTMIS/UARTICR bit of the transmit interrupt.
const UART_TXI: u32 = 1 << 5;

#[derive(Default)]
struct IrqTest {
    /// Acknowledgements still needed before the line drops.
    owed: u64,
    acks: u64,
}

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

pub enum LoadError {
    NotElf,
    NoMemory,
    /// A malformed ELF: what is wrong with it.
    BadElf(&'static str),
    /// A malformed arm64 Image, or one that does not fit.
    BadImage(&'static str),
    Hyp(&'static str, i64),
    /// A device configuration the guest cannot have: why.
    BadConfig(&'static str),
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            LoadError::NotElf => write!(f, "not an AArch64 ELF"),
            LoadError::NoMemory => write!(f, "does not fit in host memory or guest RAM"),
            LoadError::BadElf(why) => write!(f, "malformed ELF: {why}"),
            LoadError::BadImage(why) => write!(f, "bad arm64 Image: {why}"),
            LoadError::Hyp(what, e) => write!(f, "{what} failed: {e}"),
            LoadError::BadConfig(why) => write!(f, "bad device configuration: {why}"),
        }
    }
}

/// A loadable segment, checked against the file and guest RAM.
struct Segment {
    /// Offset into guest RAM.
    at: usize,
    /// Bytes from the file.
    file: core::ops::Range<usize>,
    /// Bytes in memory (the rest zero-filled), at least the file's.
    memsz: usize,
}

/// The PT_LOAD segments of `elf` for a guest of `mem` bytes. Every sum is
/// checked: the header fields are the image's, not ours.
fn segments(elf: &[u8], mem: usize) -> Result<Vec<Segment>, LoadError> {
    let field = |o: usize| usize::try_from(u64_at(elf, o)).map_err(|_| LoadError::BadElf("field out of range"));
    let (phoff, phnum, phentsize) = (field(32)?, u16_at(elf, 56) as usize, u16_at(elf, 54) as usize);
    if phnum > 0 && phentsize < 56 {
        return Err(LoadError::BadElf("program header entries too small"));
    }
    let table_end = phnum.checked_mul(phentsize).and_then(|n| n.checked_add(phoff));
    if table_end.is_none_or(|e| e > elf.len()) {
        return Err(LoadError::BadElf("program headers outside the file"));
    }
    let mut out = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(elf, ph) != 1 {
            continue;
        }
        let (off, filesz) = (field(ph + 8)?, field(ph + 32)?);
        let memsz = field(ph + 40)?.max(filesz);
        let file = off..off.checked_add(filesz).ok_or(LoadError::BadElf("segment data outside the file"))?;
        if file.end > elf.len() {
            return Err(LoadError::BadElf("segment data outside the file"));
        }
        let at = u64_at(elf, ph + 24)
            .checked_sub(GUEST_RAM)
            .and_then(|a| usize::try_from(a).ok())
            .filter(|a| a.checked_add(memsz).is_some_and(|e| e <= mem))
            .ok_or(LoadError::BadElf("segment outside guest RAM"))?;
        if at < GUEST_DTB_SIZE && memsz > 0 {
            return Err(LoadError::BadElf("segment overlaps the guest DTB"));
        }
        out.push(Segment { at, file, memsz });
    }
    Ok(out)
}

fn u16_at(b: &[u8], o: usize) -> u64 {
    u16::from_le_bytes([b[o], b[o + 1]]) as u64
}
fn u32_at(b: &[u8], o: usize) -> u64 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as u64
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// The guest's DTB: memory, a PL011 and the interrupt test device on the
/// GICv3, the virtual timer, PSCI over HVC, the CPUs, a Linux guest's
/// initramfs, and the virtio devices (with their DMA pool's
/// `/reserved-memory`) if it has any.
pub fn guest_dtb(
    mem: u64,
    bootargs: &str,
    vcpus: usize,
    linux: Option<&LinuxInfo>,
    virtio: Option<&crate::virtio::Devices>,
) -> Vec<u8> {
    use vm_fdt::FdtWriter;
    let build = || -> Result<Vec<u8>, vm_fdt::Error> {
        let mut w = FdtWriter::new()?;
        let root = w.begin_node("")?;
        w.property_string("compatible", "linux,dummy-virt")?;
        w.property_u32("#address-cells", 2)?;
        w.property_u32("#size-cells", 2)?;
        w.property_u32("interrupt-parent", crate::vgic::PHANDLE)?;
        let chosen = w.begin_node("chosen")?;
        w.property_string("bootargs", bootargs)?;
        w.property_string("stdout-path", "/pl011@9000000")?;
        if let Some(l) = linux {
            w.property_u64("linux,initrd-start", l.initrd.0)?;
            w.property_u64("linux,initrd-end", l.initrd.1)?;
        }
        w.end_node(chosen)?;
        let clk = w.begin_node("apb-pclk")?;
        w.property_string("compatible", "fixed-clock")?;
        w.property_u32("#clock-cells", 0)?;
        w.property_u32("clock-frequency", 24_000_000)?;
        w.property_string("clock-output-names", "clk24mhz")?;
        w.property_u32("phandle", CLK_PHANDLE)?;
        w.end_node(clk)?;
        let m = w.begin_node("memory@40000000")?;
        w.property_string("device_type", "memory")?;
        w.property_array_u64("reg", &[GUEST_RAM, mem])?;
        w.end_node(m)?;
        crate::vgic::dtb_nodes(&mut w, vcpus)?;
        let u = w.begin_node("pl011@9000000")?;
        w.property_string_list("compatible", alloc::vec!["arm,pl011".into(), "arm,primecell".into()])?;
        w.property_array_u64("reg", &[GUEST_UART, 0x1000])?;
        w.property_array_u32("interrupts", &[0, (UART_INTID - 32) as u32, 4])?;
        w.property_array_u32("clocks", &[CLK_PHANDLE, CLK_PHANDLE])?;
        w.property_string_list("clock-names", alloc::vec!["uartclk".into(), "apb_pclk".into()])?;
        w.end_node(u)?;
        let t = w.begin_node("irq-test@b000000")?;
        w.property_string("compatible", "pkvm-rs,irq-test")?;
        w.property_array_u64("reg", &[GUEST_IRQ_TEST, 0x1000])?;
        w.property_array_u32("interrupts", &[0, (IRQ_TEST_INTID - 32) as u32, 4])?;
        w.end_node(t)?;
        if let Some(v) = virtio {
            v.dtb_nodes(&mut w)?;
        }
        let p = w.begin_node("psci")?;
        w.property_string_list("compatible", alloc::vec!["arm,psci-1.0".into(), "arm,psci-0.2".into()])?;
        w.property_string("method", "hvc")?;
        w.end_node(p)?;
        let cpus = w.begin_node("cpus")?;
        w.property_u32("#address-cells", 1)?;
        w.property_u32("#size-cells", 0)?;
        for i in 0..vcpus {
            let c = w.begin_node(&alloc::format!("cpu@{i}"))?;
            w.property_string("device_type", "cpu")?;
            w.property_string("compatible", "arm,armv8")?;
            w.property_u32("reg", i as u32)?;
            w.property_string("enable-method", "psci")?;
            w.end_node(c)?;
        }
        w.end_node(cpus)?;
        w.end_node(root)?;
        w.finish()
    };
    build().unwrap_or_default()
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
    hm.alloc(mem, align).ok_or(LoadError::NoMemory)
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
        virtio: Option<crate::virtio::Config>,
    ) -> Result<Guest, LoadError> {
        let virtio = virtio.map(crate::virtio::Devices::new);
        if let Some(v) = &virtio {
            let dtb_end = GUEST_RAM + GUEST_DTB_SIZE as u64;
            if !v.pool_fits(GUEST_RAM, mem) || v.dma_pool.is_some_and(|p| p.ipa < dtb_end) {
                return Err(LoadError::BadConfig("the DMA pool must be whole pages of guest RAM after the DTB"));
            }
        }
        if !(1..=8).contains(&vcpus) {
            return Err(LoadError::BadElf("a guest has 1 to 8 vCPUs"));
        }
        if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || u16_at(elf, 18) != 183 {
            return Err(LoadError::NotElf);
        }
        if mem < GUEST_DTB_SIZE as u64 {
            return Err(LoadError::NoMemory);
        }
        let segs = segments(elf, usize::try_from(mem).map_err(|_| LoadError::NoMemory)?)?;
        let entry = u64_at(elf, 24);
        if entry.checked_sub(GUEST_RAM).is_none_or(|e| e >= mem) {
            return Err(LoadError::BadElf("entry point outside guest RAM"));
        }
        let pa = alloc_guest(hm, mem)?;
        // SAFETY: [pa, pa + mem) is free host RAM we just allocated; it is
        // ours until donated.
        let dst = unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, mem as usize) };
        // Only what the guest will read is written: the DTB window and the
        // segments (a 16 GiB guest costs no 16 GiB memset).
        dst[..GUEST_DTB_SIZE].fill(0);
        for seg in &segs {
            let filesz = seg.file.len();
            dst[seg.at..seg.at + filesz].copy_from_slice(&elf[seg.file.clone()]);
            dst[seg.at + filesz..seg.at + seg.memsz].fill(0);
        }
        let dtb = guest_dtb(mem, bootargs, vcpus, None, virtio.as_ref());
        Guest::start(hm, name, pa, mem, vcpus, entry, &dtb, None, virtio)
    }

    /// Loads a Linux guest: its arm64 Image at the first 2 MiB boundary of
    /// guest RAM above the DTB window plus text_offset, the initramfs below
    /// the restricted DMA pool at the top of RAM, and the DTB (with
    /// `/chosen` naming the initramfs, the pool, a virtio-console and a
    /// virtio-blk over `disk` if it is not empty) at the base; vCPU 0
    /// enters the Image with x0 = the DTB (Linux's arm64 boot protocol).
    pub fn load_linux(
        hm: &mut HostMem,
        name: &str,
        image: &[u8],
        initrd: &[u8],
        disk: &'static [u8],
        mem: u64,
        vcpus: usize,
    ) -> Result<Guest, LoadError> {
        use hyp_abi::arm64_image;
        if !(1..=8).contains(&vcpus) {
            return Err(LoadError::BadImage("a guest has 1 to 8 vCPUs"));
        }
        let h = arm64_image::parse(image).map_err(LoadError::BadImage)?;
        let l = arm64_image::layout(mem, GUEST_DTB_SIZE as u64, &h, initrd.len() as u64, DMA_POOL_SIZE)
            .ok_or(LoadError::BadImage("the kernel, initramfs and DMA pool do not fit in guest memory"))?;
        let info = LinuxInfo {
            kernel: GUEST_RAM + l.kernel,
            kernel_size: h.image_size,
            initrd: (GUEST_RAM + l.initrd, GUEST_RAM + l.initrd + initrd.len() as u64),
            pool: (GUEST_RAM + l.pool, DMA_POOL_SIZE),
        };
        // A virtio-console and, with a disk image, a virtio-blk, their DMA
        // bounced through the pool.
        let virtio = crate::virtio::Devices::new(crate::virtio::Config {
            console: true,
            disk: (!disk.is_empty()).then_some(crate::virtio::Disk::ReadOnly(disk)),
            dma_pool: Some(crate::virtio::DmaPool { ipa: info.pool.0, size: info.pool.1 }),
        });
        let dtb = guest_dtb(mem, LINUX_BOOTARGS, vcpus, Some(&info), Some(&virtio));
        let pa = alloc_guest(hm, mem)?;
        // SAFETY: [pa, pa + mem) is free host RAM we just allocated; it is
        // ours until donated. layout() placed every piece inside it.
        let dst = unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, mem as usize) };
        dst[..GUEST_DTB_SIZE].fill(0);
        let k = l.kernel as usize;
        dst[k..k + image.len()].copy_from_slice(image);
        // The BSS and the rest of the kernel's footprint start zeroed.
        dst[k + image.len()..k + h.image_size as usize].fill(0);
        let i = l.initrd as usize;
        dst[i..i + initrd.len()].copy_from_slice(initrd);
        Guest::start(hm, name, pa, mem, vcpus, info.kernel, &dtb, Some(info), Some(virtio))
    }

    /// Writes the DTB at the base of the loaded guest memory at `pa`, creates
    /// the VM, donates the memory and creates the vCPUs: vCPU 0 enters at
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
        virtio: Option<crate::virtio::Devices>,
    ) -> Result<Guest, LoadError> {
        if dtb.is_empty() || dtb.len() > GUEST_DTB_SIZE {
            hm.free(pa, mem);
            return Err(LoadError::BadImage("the guest DTB does not fit its 64 KiB window"));
        }
        // SAFETY: the first GUEST_DTB_SIZE bytes at pa are host RAM the
        // caller allocated for this guest and has not donated yet.
        let dst = unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, GUEST_DTB_SIZE) };
        dst[..dtb.len()].copy_from_slice(dtb);
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
        let r = hyp::donate(handle, pa, GUEST_RAM, mem);
        if r != 0 {
            return Err(fail(hm, "donate", r));
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
            replies: alloc::vec![[0; 4]; vcpus],
            vstate: (0..vcpus).map(|i| if i == 0 { VState::Runnable } else { VState::Off }).collect(),
            cur: vcpus - 1,
            done: false,
            gic: crate::vgic::Gic::new(handle, vcpus),
            virtio,
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
            line: Vec::new(),
            pins: BTreeMap::new(),
            unshare_pending: 0,
            guest_aborts: 0,
            mmio_exits: 0,
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
            gic: crate::vgic::Gic::new(0, 0),
            uart: Pl011::default(),
            irq_test: IrqTest::default(),
            wfi_exits: 0,
            irq_exits: 0,
            kick_aff0: Vec::new(),
            virtio: None,
            virtio_calls: 0,
            virtio_exits: 0,
        }
    }

    pub fn ipa_to_pa(&self, ipa: u64) -> Option<u64> {
        (ipa >= GUEST_RAM && ipa - GUEST_RAM < self.mem).then(|| self.pa + (ipa - GUEST_RAM))
    }

    /// The emulated PL011: prints the guest's lines; its transmit
    /// interrupt; its flags (the FIFOs always empty) and ID registers;
    /// other reads return 0.
    pub fn uart(&mut self, off: u64, write: bool, value: u64) -> u64 {
        let out = match (off, write) {
            (0x000, true) => {
                match value as u8 {
                    b'\n' => {
                        println!("[vm {}] {}", self.handle, String::from_utf8_lossy(&self.line));
                        self.line.clear();
                    }
                    b'\r' => {}
                    b => self.line.push(b),
                }
                self.uart.ris |= UART_TXI;
                0
            }
            (0x038, true) => {
                self.uart.imsc = value as u32 & 0x7ff;
                0
            }
            // UARTFR: transmit FIFO empty, receive FIFO empty, never busy.
            (0x018, false) => 0x90,
            (0x038, false) => self.uart.imsc,
            (0x03c, false) => self.uart.ris,
            (0x040, false) => self.uart.ris & self.uart.imsc,
            (0x044, true) => {
                self.uart.ris &= !(value as u32);
                0
            }
            // UARTPeriphID0-3 (PL011 r1p5: 0x00341011) and UARTPCellID0-3
            // (0xB105F00D), read by Linux's AMBA bus to match the driver.
            (0xfe0..=0xffc, false) if off.is_multiple_of(4) => {
                let id: [u8; 8] = [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1];
                id[((off - 0xfe0) / 4) as usize] as u32
            }
            _ => 0,
        };
        let level = self.uart.ris & self.uart.imsc != 0;
        self.gic.set_spi_line(UART_INTID, level);
        out as u64
    }

    /// The interrupt test device (see [`GUEST_IRQ_TEST`]).
    fn irq_test(&mut self, off: u64, write: bool, value: u64) -> u64 {
        let t = &mut self.irq_test;
        let out = match (off, write) {
            (0, true) => {
                t.owed = value;
                t.acks = 0;
                0
            }
            (4, true) => {
                t.owed = t.owed.saturating_sub(1);
                t.acks += 1;
                0
            }
            (8, false) => t.acks,
            _ => 0,
        };
        let level = self.irq_test.owed > 0;
        self.gic.set_spi_line(IRQ_TEST_INTID, level);
        out
    }

    /// A guest access to a virtio device's window (None: no device there).
    /// Guest memory is reached only through pages the guest shared, each
    /// pinned for this exit alone; console lines are printed as
    /// `[vm N hvc0] ...`; the devices' interrupt lines follow their
    /// InterruptStatus.
    fn virtio_mmio(&mut self, ipa: u64, write: bool, size: u64, value: u64) -> Option<u64> {
        let devs = self.virtio.as_mut().filter(|d| d.claims(ipa))?;
        let mut m = crate::virtio::pinned::PinnedMem::new(GUEST_RAM, self.pa, self.mem);
        let h = self.handle;
        let v = devs.mmio(&mut m, &mut |l| println!("[vm {h} hvc0] {l}"), ipa, write, size, value);
        self.virtio_calls += m.end();
        self.virtio_exits += 1;
        let lines: Vec<(usize, bool)> = devs.lines().collect();
        for (intid, level) in lines {
            self.gic.set_spi_line(intid, level);
        }
        v
    }

    /// Prints each virtio device's counters (and the hypercalls the
    /// devices made to reach guest memory).
    pub fn virtio_report(&self) {
        let Some(devs) = &self.virtio else { return };
        let mut k = 0;
        while let Some((name, s, status)) = devs.slot(k) {
            println!(
                "[host] vm {}: {} (slot {}): {} requests, {} refused for memory not shared, {} bad requests, {} ring errors, {} bad register accesses, status {:#x}",
                self.handle, name, k, s.requests, s.mem_errors, s.bad_requests, s.ring_errors, s.bad_accesses, status
            );
            k += 1;
        }
        println!(
            "[host] vm {}: virtio: {} MMIO exits, {} hypercalls to reach guest memory (PAGE_STATE, PIN, UNPIN)",
            self.handle, self.virtio_exits, self.virtio_calls
        );
    }

    /// Answers a host-service call; returns the guest's x0..x3.
    pub fn service(&mut self, fid: u32, a: [u64; 4]) -> [u64; 4] {
        let pa = self.ipa_to_pa(a[0]);
        match (fid, pa) {
            (svc::HOST_READ, Some(pa)) => match expect_abort(|| {
                read64(pa);
            }) {
                Some(_) => [1, 0, 0, 0],
                None => [0, read64(pa), 0, 0],
            },
            (svc::HOST_WRITE, Some(pa)) => [expect_abort(|| write64(pa, a[1])).is_some() as u64, 0, 0, 0],
            (svc::HOST_PIN, Some(pa)) if a[1] == svc::PIN_FOREIGN => [hyp::pin(pa, false) as u64, 0, 0, 0],
            (svc::HOST_PIN, Some(pa)) => {
                let r = hyp::pin(pa, a[1] != 0);
                if r == 0 {
                    *self.pins.entry(pa).or_default() += 1;
                }
                [r as u64, 0, 0, 0]
            }
            (svc::HOST_UNPIN, Some(pa)) => {
                let r = hyp::unpin(pa);
                if r == 0 {
                    if let Some(n) = self.pins.get_mut(&pa) {
                        *n -= 1;
                    }
                }
                [r as u64, 0, 0, 0]
            }
            (svc::HOST_S2_INFO, _) => match hyp::vm_stats(self.handle, a[0]) {
                Ok((pages, level, _)) => [pages, level, 0, 0],
                Err(e) => [e as u64, 0, 0, 0],
            },
            (svc::HOST_EXIT_COUNTS, _) => [self.unshare_pending, self.guest_aborts, 0, 0],
            (svc::HOST_RESULT, _) => {
                self.result = Some((a[0], a[1]));
                self.relinquished = a[2];
                [0, 0, 0, 0]
            }
            (svc::HOST_DONATE_ELSEWHERE, Some(pa)) => {
                // A second VM, given a page that already belongs elsewhere.
                let other = match hyp::vm_create() {
                    Ok(h) => h,
                    Err(e) => return [e as u64, 0, 0, 0],
                };
                let r = hyp::donate(other, pa, GUEST_RAM, 4096);
                let _ = hyp::vm_destroy(other);
                [r as u64, 0, 0, 0]
            }
            (svc::HOST_DUMP, _) => {
                crate::tracing::dump_s2(Some(self.handle));
                [0, 0, 0, 0]
            }
            (svc::HOST_IRQ_COUNTS, _) => [self.wfi_exits, self.irq_exits, self.gic.errors, 0],
            (svc::HOST_VIRTIO_STATS, _) => match self.virtio.as_ref().and_then(|d| d.slot(a[0] as usize)) {
                Some((_, s, _)) if a[1] == 0 => [s.requests, s.mem_errors, s.bad_requests, s.ring_errors],
                Some((_, s, _)) if a[1] == 1 => [s.bad_accesses, self.virtio_calls, 0, 0],
                _ => [(-22i64) as u64, 0, 0, 0],
            },
            (svc::HOST_DMA, Some(pa)) => [crate::scenarios::dma::guest_dma(pa, a[1]) as u64, 0, 0, 0],
            (svc::HOST_COUNTERS, _) => crate::scenarios::bench::counters(),
            (svc::YIELD, _) => {
                self.yielded = true;
                self.guest_calls = a[0];
                [0; 4]
            }
            (svc::BENCH_PIN, Some(pa)) => {
                crate::scenarios::bench::pins(pa);
                [0; 4]
            }
            _ => [(-22i64) as u64, 0, 0, 0],
        }
    }

    /// The arguments of the next VCPU_RUN of vCPU `v` (its reply owed).
    pub fn run_args(&mut self, v: usize) -> [u64; 6] {
        self.started = true;
        // What was raised for it so far, the hyp sees at this entry.
        self.kicks &= !(1 << v);
        let r = core::mem::take(&mut self.replies[v]);
        [self.handle, v as u64, r[0], r[1], r[2], r[3]]
    }

    /// Handles what VCPU_RUN of vCPU `v` returned.
    pub fn on_exit(&mut self, v: usize, r: hyp::HypResult) -> Result<Step, String> {
        let e = r.map_err(|err| alloc::format!("vcpu_run {v}: {err}"))?;
        let mut reply = [0u64; 4];
        match e[0] {
            exit::MMIO => {
                self.mmio_exits += 1;
                let (ipa, write, value) = (e[1], e[3] != 0, e[4]);
                if (GUEST_UART..GUEST_UART + 0x1000).contains(&ipa) {
                    reply[0] = self.uart(ipa - GUEST_UART, write, value);
                } else if (GUEST_IRQ_TEST..GUEST_IRQ_TEST + 0x1000).contains(&ipa) {
                    reply[0] = self.irq_test(ipa - GUEST_IRQ_TEST, write, value);
                } else if let Some(v) = self.virtio_mmio(ipa, write, e[2], value) {
                    reply[0] = v;
                } else if let Some(v) = self.gic.mmio(ipa, write, e[2], value) {
                    reply[0] = v;
                } else if self.verbose {
                    println!(
                        "[host] vm {}: MMIO {} at {:#x}: no device, reads 0",
                        self.handle,
                        if write { "write" } else { "read" },
                        ipa
                    );
                }
            }
            exit::HYPERCALL => {
                reply = self.service(e[1] as u32, [e[2], e[3], e[4], e[5]]);
                if core::mem::take(&mut self.yielded) {
                    // The reply goes in on the next run.
                    self.replies[v] = reply;
                    return Ok(Step::Yield);
                }
            }
            exit::SYSTEM_OFF => {
                self.done = true;
                return Ok(Step::Off);
            }
            exit::SYSTEM_RESET => return Err("guest asked for a reset".into()),
            exit::GUEST_ABORT => {
                self.guest_aborts += 1;
                println!("[host] vm {}: guest abort at IPA {:#x} (no memory there): abort injected", self.handle, e[1]);
            }
            exit::UNSHARE_PENDING => {
                self.unshare_pending += 1;
                let (ipa, pa) = (e[1], e[2]);
                let n = self.pins.remove(&pa).unwrap_or(0);
                let still = expect_abort(|| {
                    read64(pa);
                })
                .is_none();
                println!(
                    "[host] vm {}: unshare of IPA {:#x} pending on {} host pin(s) (page still shared: {}); unpinning",
                    self.handle, ipa, n, still
                );
                for _ in 0..n {
                    hyp::unpin(pa);
                }
                // Pins the rest of the host took (a scenario's own, not
                // the VMM's) would keep the guest waiting forever: the host
                // lets its guest progress and drops them too.
                let others = hyp::call(hyp_abi::host::PAGE_STATE, [pa, 0, 0, 0, 0, 0]).map(|r| r[1]).unwrap_or(0);
                if others != 0 {
                    println!(
                        "[host] vm {}: the page also held {} pin(s) taken outside the VMM; unpinning them",
                        self.handle, others
                    );
                    for _ in 0..others {
                        hyp::unpin(pa);
                    }
                }
            }
            exit::IRQ => self.irq_exits += 1,
            exit::WFI => {
                self.wfi_exits += 1;
                // WFE: just let the others run first. An interrupt raised for
                // it since it entered (a kick: the hyp may have found nothing
                // pending just before) keeps it runnable, or it would sleep
                // on an interrupt already raised.
                if e[2] == 0 && self.kicks & (1 << v) == 0 {
                    self.vstate[v] = VState::Idle(e[1]);
                }
            }
            exit::CPU_ON => {
                if let Some(s) = self.vstate.get_mut(e[1] as usize) {
                    *s = VState::Runnable;
                }
            }
            exit::CPU_OFF => self.vstate[v] = VState::Off,
            exit::SGI => self.wake(e[1], v),
            exit::GUEST_FATAL => {
                return Err(alloc::format!("guest SError (ESR {:#x}) at PC {:#x}: vCPU stopped", e[1], e[2]))
            }
            other => return Err(alloc::format!("unknown exit {other}")),
        }
        self.replies[v] = reply;
        // Device lines and pulses the VMM raised: their vCPUs wake.
        let kicked = core::mem::take(&mut self.gic.kicked);
        self.wake(kicked, v);
        Ok(Step::Go)
    }

    /// vCPUs of `mask` that idle become runnable; the others are marked,
    /// so that a WFI exit racing with this (the hyp found nothing pending
    /// before the interrupt was made pending) does not put them to sleep.
    /// When each vCPU has a host CPU of its own, that CPU is kicked: one in
    /// the guest right now would otherwise keep the interrupt waiting until
    /// the end of its slice, one napping until its next poll.
    /// `me` is the vCPU whose exit this host CPU is handling (not in the
    /// guest now: no kick).
    fn wake(&mut self, mask: u64, me: usize) {
        let mut targets = 0u16;
        for (i, s) in self.vstate.iter_mut().enumerate() {
            if mask & (1 << i) == 0 {
                continue;
            }
            let idle = matches!(s, VState::Idle(_));
            if idle {
                *s = VState::Runnable;
            } else {
                self.kicks |= 1 << i;
            }
            // Its host CPU is in the guest (kicked out) or napping (woken).
            if (idle || *s == VState::Runnable) && i != me {
                if let Some(&aff0) = self.kick_aff0.get(i) {
                    targets |= 1 << aff0;
                }
            }
        }
        crate::idle::kick(targets);
    }

    /// Idle vCPUs whose timer deadline has passed become runnable; returns
    /// the earliest deadline still ahead (None if no vCPU idles).
    pub fn tick(&mut self) -> Option<u64> {
        let now = el1_rt::gic::counter().0;
        let mut next = None;
        for s in self.vstate.iter_mut() {
            if let VState::Idle(d) = *s {
                if now >= d {
                    *s = VState::Runnable;
                } else {
                    next = Some(next.map_or(d, |n: u64| n.min(d)));
                }
            }
        }
        next
    }

    /// Runs the guest's vCPUs on this CPU, time-sliced round-robin, until
    /// it powers off (Ok), yields (Ok: `run` again to continue) or
    /// something goes wrong. A vCPU that waits (WFI) is run again when its
    /// timer is due or the VMM raised an interrupt for it; while every vCPU
    /// waits, this CPU sleeps until the earliest deadline (`idle.rs`).
    pub fn run(&mut self) -> Result<(), String> {
        let n = self.vstate.len();
        loop {
            let next = self.tick();
            let pick = (1..=n).map(|k| (self.cur + k) % n).find(|&i| self.vstate[i] == VState::Runnable);
            let Some(v) = pick else {
                match next {
                    // Every vCPU powered off.
                    None => return Ok(()),
                    Some(u64::MAX) => return Err("the guest waits for an interrupt that nothing will raise".into()),
                    Some(d) => {
                        crate::idle::nap(d, u64::MAX);
                        continue;
                    }
                }
            };
            self.cur = v;
            let args = self.run_args(v);
            let r = hyp::call(hyp_abi::host::VCPU_RUN, args);
            match self.on_exit(v, r)? {
                Step::Go => {}
                Step::Yield | Step::Off => return Ok(()),
            }
        }
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
