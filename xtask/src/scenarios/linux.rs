//! Linux: Debian's Linux 6.12 as the host (`--linux`: fetched with apt and
//! cached), and Linux as a protected guest (`--linux-guest`: a kernel built
//! from Debian's 6.12 source with guest-linux/config on first use, cached)
//! with its pKVM guest driver against the hyp and the host's checks after
//! it powered off.

use super::linux_checks::{each_linux_guest_ran, trace_matches_host};
use super::spec::{GuestKernels, Lines, Run, Scenario, VIRTIO_CONSOLE};

/// Real Linux as the host on 2 CPUs, a busybox /init (`xtask/linux-host/init`).
const HOST: Run = Run { linux: true, smp: 2, ..Run::DEFAULT };
/// What no Linux-host run may print.
const HOST_ABSENT: &[&str] =
    &["[hyp] PANIC", "[hyp] ERROR", "Internal error:", "WARNING: CPU:", "BUG:", "Kernel panic"];
/// What no Linux-guest run may print.
const GUEST_ABSENT: &[&str] = &[
    "[hyp] PANIC",
    "[hyp] ERROR",
    "FAIL",
    "Kernel panic",
    "Internal error:",
    "WARNING:",
    "BUG:",
    "------------[ cut here ]------------",
    "[host] vm 1: guest abort",
];

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "linux-host",
        about: "Debian's Linux 6.12 boots as the host on 2 CPUs to a busybox /init, sees the hyp's carve-out, \
                gets SIGBUS touching it, powers off",
        run: HOST,
        lines: Lines::Are(&[
            "[*] Linux version 6.12.*-arm64 *",
            "[*] OF: reserved mem: 0x0000000040000000..0x00000000421fffff (34816 KiB) nomap non-reusable hyp@40000000",
            "[*] psci: PSCIv1.1 detected in firmware.",
            "[*] CPU1: Booted secondary processor 0x0000000001 *",
            "[*] smp: Brought up 1 node, 2 CPUs",
            "[*] Run /init as init process",
            "linux-host: /init running, uname -r 6.12.*-arm64",
            "linux-host: 2 CPUs online (0-1)",
            "linux-host: /proc/cpuinfo: processor : 0",
            "linux-host: reserved-memory: hyp@40000000 reg 0000000040000000 0000000002200000 no-map yes",
            "[hyp] host: read at IPA 0x40000000 (PC *) refused (EPERM): abort injected",
            "linux-host: devmem read of hyp memory at 0x40000000: exit status 135 (SIGBUS is 135)",
            "linux-host: poweroff -f",
            "[hyp] host: PSCI SYSTEM_OFF",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: HOST_ABSENT,
        anywhere: &["[hyp] cpu 1: up, entering host at *"],
        code: 0,
        timeout: 240,
        verify: None,
    },
    Scenario {
        name: "linux-virtio",
        about: "Linux's console on a virtio-serial PCI device behind the hyp's SMMU (console=hvc0): its DMA goes \
                through the DMA view, no SMMU driver of its own",
        run: Run { qemu_args: Some(VIRTIO_CONSOLE), append: Some("console=hvc0"), ..HOST },
        lines: Lines::Are(&[
            "[*] Kernel command line: console=ttyAMA0 panic=-1 console=hvc0",
            "[*] virtio-pci 0000:00:01.0: enabling device (0000 -> 0003)",
            "[*] printk: legacy console [hvc0] enabled",
            "linux-host: /init running, uname -r 6.12.*-arm64",
            "linux-host: poweroff -f",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: &[
            "[hyp] PANIC",
            "[hyp] ERROR",
            "Internal error:",
            "WARNING: CPU:",
            "BUG:",
            "Kernel panic",
            "arm-smmu-v3",
            "iommu: Adding device",
        ],
        anywhere: &[],
        code: 0,
        timeout: 240,
        verify: None,
    },
    Scenario {
        name: "linux-reboot",
        about: "a host PSCI SYSTEM_RESET ends the run as a host reset (status 5)",
        run: Run { append: Some("linux_host.reboot"), ..HOST },
        lines: Lines::Are(&[
            "linux-host: reboot -f",
            "[hyp] host: PSCI SYSTEM_RESET (the hyp powers off instead)",
            "[hyp] system off: status 5 (HostReset)",
        ]),
        absent: HOST_ABSENT,
        anywhere: &[],
        code: crate::qemu::code::HOST_RESET,
        timeout: 240,
        verify: None,
    },
    Scenario {
        name: "linux-panic",
        about: "a Linux host panic is reported as one (status 6)",
        run: Run { append: Some("rdinit=/nonexistent"), ..HOST },
        lines: Lines::Are(&[
            "[*] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
            "[hyp] host: PSCI SYSTEM_RESET (the hyp powers off instead)",
            "[hyp] system off: status 5 (HostReset)",
        ]),
        absent: &["[hyp] PANIC", "[hyp] ERROR", "Internal error:", "WARNING: CPU:", "BUG:"],
        anywhere: &[],
        code: crate::qemu::code::HOST_PANIC,
        timeout: 240,
        verify: None,
    },
    Scenario {
        name: "linux-guest",
        about: "Linux 6.12 (built from source) as a protected guest on 2 vCPUs: its pKVM guest driver finds the \
                hyp, shares its DMA pool and guards its MMIO, CPU1 comes up with PSCI, /init reads the virtio disk \
                through the bounce buffers and writes to the virtio console; the host counts its calls and finds \
                its other pages private",
        run: Run { linux_guest: 1, smp: 2, guest_vcpus: &[2], ..Run::DEFAULT },
        lines: Lines::Join(&[GUEST_LOADED, &["[host] vm 1: 2 vCPUs, each on a host CPU of its own"], GUEST_RUN]),
        absent: GUEST_ABSENT,
        anywhere: &[],
        code: 0,
        timeout: 300,
        verify: None,
    },
    Scenario {
        name: "linux-guest-trace",
        about: "the Linux guest's MEM_SHARE and MMIO_GUARD calls stream as hypercall trace records",
        run: Run { linux_guest: 1, trace: Some("hypercalls"), ..Run::DEFAULT },
        lines: Lines::Are(&[
            "[hyp] trace * | hvc    vm1/vcpu0 fid=0x8600ff01 x1=* -> ret=0xb66fb428",
            "[hyp] trace * | hvc    vm1/vcpu0 fid=0x86000000 x1=* -> ret=0x29d",
            "[hyp] trace * | hvc    vm1/vcpu0 fid=0xc6000002 (HYP_MEMINFO) x1=0x0 -> ret=0x1000",
            "[hyp] trace * | hvc    vm1/vcpu0 fid=0xc6000007 (MMIO_GUARD) x1=* -> ret=0x0",
            "[hyp] trace * | hvc    vm1/vcpu0 fid=0xc6000003 (MEM_SHARE) x1=* -> ret=0x0",
            "[vm 1] linux-guest: poweroff -f",
            "[host] vm 1: the guest's successful calls: MEM_SHARE *, MEM_UNSHARE *, MMIO_GUARD * (* granules guarded now)",
            "[host] result: * passed, 0 failed",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: GUEST_ABSENT,
        anywhere: &[],
        code: 0,
        timeout: 300,
        // Every successful call traced as the host counted it, each guarded
        // granule one of the guest's devices, every pool page shared.
        verify: Some(trace_matches_host),
    },
    Scenario {
        name: "linux-guest1",
        about: "the same Linux guest, its 2 vCPUs time-sliced on one host CPU",
        run: Run { linux_guest: 1, smp: 1, guest_vcpus: &[2], ..Run::DEFAULT },
        lines: Lines::Join(&[GUEST_LOADED, &["[host] vm 1: 2 vCPUs time-sliced on 1 host CPU"], GUEST_RUN]),
        absent: GUEST_ABSENT,
        anywhere: &[],
        code: 0,
        timeout: 300,
        verify: None,
    },
];

/// What every Linux guest of a run must print, whatever its kernel.
const ANY_GUEST_ABSENT: &[&str] = &[
    "[hyp] PANIC",
    "[hyp] ERROR",
    "FAIL",
    "Kernel panic",
    "Internal error:",
    "WARNING:",
    "BUG:",
    "------------[ cut here ]------------",
    "guest abort",
];

/// Several Linux guests at once, and the guest kernels cached (6.12 always,
/// others `cargo xtask linux-guest --version V` built): behaviour only.
pub const SEVERAL: &[Scenario] = &[
    Scenario {
        name: "linux-guests",
        about: "two Linux guests at once (64 MiB and 1 vCPU each), time-sliced on one host CPU: each with its disk, \
                its console prefix and --guest-append, each shares its whole pool and guards only its devices",
        run: Run {
            linux_guest: 2,
            guest_mem: &["64M", "64M"],
            guest_append: Some("pkvm_rs.two_guests"),
            trace: Some("hypercalls"),
            ..Run::DEFAULT
        },
        lines: Lines::Are(&[
            "[host] vm 1: Linux guest 'linux1' loaded, 64 MiB donated at PA * (IPA 0x40000000), 1 vCPU(s)",
            "[host] vm 2: Linux guest 'linux2' loaded, 64 MiB donated at PA * (IPA 0x40000000), 1 vCPU(s)",
            "[host] 2 Linux guests at once, time-sliced on 1 host CPU",
            "[host] vm 1: the guest's successful calls: MEM_SHARE *",
            "[host] PASS the Linux guest guarded MMIO granules, no more than its devices span",
            "[host] PASS the Linux guest shared its whole restricted DMA pool with MEM_SHARE",
            "[host] PASS pages shared now = MEM_SHARE calls - MEM_UNSHARE calls (each call one page)",
            "[host] vm 1: destroyed, 65536 KiB scrubbed and returned to the host",
            "[host] vm 2: the guest's successful calls: MEM_SHARE *",
            "[host] PASS the Linux guest guarded MMIO granules, no more than its devices span",
            "[host] PASS the Linux guest shared its whole restricted DMA pool with MEM_SHARE",
            "[host] PASS pages shared now = MEM_SHARE calls - MEM_UNSHARE calls (each call one page)",
            "[host] vm 2: destroyed, 65536 KiB scrubbed and returned to the host",
            "[host] result: * passed, 0 failed",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: ANY_GUEST_ABSENT,
        anywhere: &[
            "[vm 1] Kernel command line: console=ttyAMA0 panic=-1 pkvm_rs.two_guests",
            "[vm 2] Kernel command line: console=ttyAMA0 panic=-1 pkvm_rs.two_guests",
        ],
        code: 0,
        timeout: 400,
        verify: Some(both_checks),
    },
    Scenario {
        name: "linux-guest-kernels",
        about: "every guest kernel cached (6.12 always; another version once `cargo xtask linux-guest --version V` \
                built it), one Linux guest each, at once: the same behaviour checks for each",
        run: Run { guest_kernel: GuestKernels::Cached, trace: Some("hypercalls"), ..Run::DEFAULT },
        lines: Lines::Are(&[
            "[host] vm 1: the guest's successful calls: MEM_SHARE *",
            "[host] PASS the Linux guest shared its whole restricted DMA pool with MEM_SHARE",
            "[host] result: * passed, 0 failed",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: ANY_GUEST_ABSENT,
        anywhere: &[],
        code: 0,
        timeout: 600,
        verify: Some(both_checks),
    },
];

/// [`each_linux_guest_ran`] and [`trace_matches_host`].
fn both_checks(output: &str) -> Result<(), String> {
    each_linux_guest_ran(output)?;
    trace_matches_host(output)
}

/// The host loads the Linux guest (before it says how the vCPUs run).
const GUEST_LOADED: &[&str] = &[
    "[host] vm 1: Linux guest 'linux' loaded, 128 MiB donated at PA * (IPA 0x40000000), 2 vCPU(s)",
    "[host] vm 1: Image at IPA 0x40200000 (* KiB with BSS), initramfs at IPA * (* KiB), DMA pool at IPA 0x47c00000 (4096 KiB)",
];

/// The Linux guest's boot, /init's report (`{disk_sha256}`: the SHA-256 of
/// the disk image the xtask wrote) and the host's checks after it powered off.
const GUEST_RUN: &[&str] = &[
    "[vm 1] Linux version 6.12.* (pkvm-rs@xtask) (aarch64-linux-gnu-gcc *) #1 SMP Sun Nov 17 00:00:00 UTC 2024",
    "[vm 1] Machine model: linux,dummy-virt",
    "[vm 1] software IO TLB: Reserved memory: created restricted DMA pool at 0x0000000047c00000, size 4 MiB",
    "[vm 1] psci: PSCIv1.1 detected in firmware.",
    "[vm 1] psci: SMC Calling Convention v1.1",
    "[vm 1] smccc: KVM: hypervisor services detected (0x00000000 0x00000000 0x00000000 0x0000029d)",
    "[vm 1] Kernel command line: console=ttyAMA0 panic=-1",
    "[vm 1] GICv3: CPU0: found redistributor 0 region 0:0x00000000080a0000",
    "[vm 1] arch_timer: cp15 timer(s) running at *MHz (virt).",
    "[vm 1] GICv3: CPU1: found redistributor 1 region 0:0x00000000080c0000",
    "[vm 1] CPU1: Booted secondary processor 0x0000000001 [*]",
    "[vm 1] smp: Brought up 1 node, 2 CPUs",
    "[vm 1] DMA: preallocated 128 KiB GFP_KERNEL pool for atomic allocations",
    "[vm 1] 9000000.pl011: ttyAMA0 at MMIO 0x9000000 (irq = *, base_baud = 0) is a PL011 rev3",
    "[vm 1] Run /init as init process",
    "[vm 1] linux-guest: /init running: Linux (none) 6.12.* #1 SMP Sun Nov 17 00:00:00 UTC 2024 aarch64 GNU/Linux",
    "[vm 1] linux-guest: 2 CPU(s) online (0-1)",
    "[vm 1] linux-guest: dmesg: software IO TLB: Reserved memory: created restricted DMA pool at 0x0000000047c00000, size 4 MiB",
    "[vm 1] linux-guest: dmesg: psci: SMC Calling Convention v1.1",
    "[vm 1] linux-guest: dmesg: smccc: KVM: hypervisor services detected (0x00000000 0x00000000 0x00000000 0x0000029d)",
    "[vm 1] linux-guest: dmesg: smp: Brought up 1 node, 2 CPUs",
    "[vm 1] linux-guest: dmesg: virtio-mmio a000000.virtio_mmio: assigned reserved memory node restricted-dma@47c00000",
    "[vm 1] linux-guest: dmesg: virtio-mmio a000200.virtio_mmio: assigned reserved memory node restricted-dma@47c00000",
    "[vm 1] linux-guest: dmesg: virtio_blk virtio1: [vda] 2048 512-byte logical blocks (1.05 MB/1.00 MiB)",
    "[vm 1] linux-guest: /dev/vda: 2048 sectors",
    "[vm 1] linux-guest: sector 0: pkvm-rs virtio-blk test disk, sector 0000 of 2048",
    "[vm 1] linux-guest: sector 1: pkvm-rs virtio-blk test disk, sector 0001 of 2048",
    "[vm 1] linux-guest: sector 1000: pkvm-rs virtio-blk test disk, sector 1000 of 2048",
    "[vm 1] linux-guest: sector 2047: pkvm-rs virtio-blk test disk, sector 2047 of 2048",
    "[vm 1] linux-guest: /dev/vda sha256 {disk_sha256}",
    "[vm 1 hvc0] linux-guest: hello through the virtio console",
    "[vm 1] linux-guest: wrote a line to /dev/hvc0",
    "[vm 1] linux-guest: poweroff -f",
    "[vm 1] reboot: Power down",
    "[host] vm 1: powered off (* MMIO exits)",
    "[host] PASS the Linux guest powered itself off (PSCI SYSTEM_OFF)",
    "[host] vm 1: virtio-console (slot 0): * requests, 0 refused for memory not shared, 0 bad requests, 0 ring errors, 0 bad register accesses, status 0xf",
    "[host] vm 1: virtio-blk (slot 1): * requests, 0 refused for memory not shared, 0 bad requests, 0 ring errors, 0 bad register accesses, status 0xf",
    "[host] PASS the virtio devices served the Linux guest's requests from shared pages only, with no error",
    "[host] vm 1: the guest's successful calls: MEM_SHARE *, MEM_UNSHARE *, MMIO_GUARD * (* granules guarded now)",
    "[host] vm 1: its devices (GIC, PL011, test device, virtio) span 83 granules: * guarded",
    "[host] PASS the Linux guest guarded MMIO granules, no more than its devices span",
    "[host] vm 1: pages shared with the host now: * (1024 in the restricted DMA pool of 1024 pages, * elsewhere)",
    "[host] PASS no page of the Linux guest's DTB or kernel image is shared",
    "[host] PASS the Linux guest shared its whole restricted DMA pool with MEM_SHARE",
    "[host] PASS pages shared now = MEM_SHARE calls - MEM_UNSHARE calls (each call one page)",
    "[hyp] host: read at IPA {kpa} (PC *) refused (EPERM): abort injected",
    "[host] vm 1: host read of the guest kernel's first page (IPA 0x40200000, PA {kpa}): data abort, no data",
    "[host] PASS a Linux guest page outside the DMA pool is private: a host read aborts",
    "[host] PASS a page the Linux guest shared is readable by the host",
    "[host] vm 1: destroyed, 131072 KiB scrubbed and returned to the host",
    "[host] PASS teardown reclaims every page the guest still had",
    "[host] PASS reclaimed pages are zero and the host can use them",
    "[host] result: 13 passed, 0 failed",
    "[hyp] system off: status 0 (Ok)",
];
