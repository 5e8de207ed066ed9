//! Debian's Linux as the host that runs protected VMs: the host driver and
//! the VMM (`linux-host/`) with the guest-test payload and the Linux guest,
//! a VMM killed mid-run beside another, and hostile calls on the driver.
//! Each boots Linux under the hyp with `hyp.check_invariants` (every
//! refused hyp call is proven to have changed nothing).

use super::spec::{File, Lines, Run, Scenario};

/// Linux as the host on 2 CPUs, every refused hyp call checked.
const HOST: Run = Run { linux: true, smp: 2, append: Some("hyp.check_invariants"), ..Run::DEFAULT };

/// What no Linux-host scenario may print: a hyp failure, a kernel warning,
/// bug, oops or panic, a failed guest check.
const ABSENT: &[&str] = &[
    "[hyp] PANIC",
    "[hyp] ERROR",
    "Internal error:",
    "WARNING:",
    "BUG:",
    "Oops",
    "Kernel panic",
    "[vm 1] FAIL ",
    "linux-host: insmod pkvm_host.ko failed",
];

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "linux-vmm",
        about: "Linux as the host runs a protected guest: its /init loads the host driver, the VMM runs the \
                guest-test suite through /dev/pkvm (every check passes, the one a Linux host cannot try is \
                skipped, saying so) and every page goes back to Linux",
        run: Run { guest: &[File::GuestTest], guest_args: &["test=all"], ..HOST },
        lines: Lines::Are(&[
            "linux-host: pkvm_host.ko loaded: /dev/pkvm is 10:*",
            "[host] vm 1: 'guest0.elf' loaded: 64 MiB at IPA 0x40000000, entry 0x40080000, 1 vCPU(s)",
            "[vm 1] PASS SMCCC_VERSION is 1.1",
            "[vm 1] PASS host read of a private page aborts",
            "[vm 1] PASS host reads the guest's data in place",
            "[vm 1] PASS guest sees the host's write",
            "[vm 1] PASS host read after MEM_UNSHARE aborts",
            "[host] vm 1: unshare of IPA 0x40c01000 pending on 1 host pin(s); unpinning",
            "[vm 1] PASS MEM_UNSHARE of a pinned page completes after the host unpins, every register but x0 and NZCV intact",
            "[vm 1] PASS the 2M block is split into 4K pages: one table page",
            "[vm 1] PASS the block is merged back and its table page freed",
            "[vm 1] PASS the host owns the relinquished page, scrubbed to zero",
            "[vm 1] SKIP the host cannot donate my page to another VM: this host has no way to try",
            "[vm 1] PASS after a guard, a read of an unguarded MMIO IPA aborts",
            "[vm 1] guest: 92 passed, 0 failed",
            "[host] vm 1: powered off (* MMIO exits, 0 WFI exits, * IRQ exits handled in the driver)",
            "[host] vm 1: guest reports 92 passed, 0 failed",
            "[host] vm 1: the guest relinquished 8 KiB",
            "[host] vm 1: the guest made 6 MEM_SHARE, 5 MEM_UNSHARE and 2 MMIO_GUARD calls; 1 granule(s) guarded",
            "[host] vm 1: destroyed; the driver holds 0 pages of 0 VMs; MemFree * KiB before the VM, * KiB after",
            "linux-host: pkvm-vmm exit status 0",
            "linux-host: poweroff -f",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: ABSENT,
        anywhere: &[],
        code: 0,
        timeout: 400,
        verify: None,
    },
    Scenario {
        name: "linux-vmm-linux",
        about: "Linux as the host runs Linux 6.12 as a protected guest on 2 vCPUs (2 host CPUs): its pKVM guest \
                driver shares the DMA pool and guards its MMIO, its virtio-blk disk is a file of the host (read, \
                SHA-256 checked, a sector written that lands in the file), its virtio console prints, it powers \
                off, its kernel stays private and every page goes back to Linux",
        run: Run { linux_guest: 1, guest_vcpus: &[2], ..HOST },
        lines: Lines::Are(&[
            "linux-host: pkvm_host.ko loaded: /dev/pkvm is 10:*",
            "[host] vm 1: 'linux-guest.Image' loaded: 128 MiB at IPA 0x40000000, entry 0x40200000, 2 vCPU(s)",
            "[vm 1] Linux version 6.12.* (pkvm-rs@xtask) (aarch64-linux-gnu-gcc *) #1 SMP Sun Nov 17 00:00:00 UTC 2024",
            "[vm 1] smccc: KVM: hypervisor services detected (0x00000000 0x00000000 0x00000000 0x0000029d)",
            "[vm 1] CPU1: Booted secondary processor 0x0000000001 [*]",
            "[vm 1] smp: Brought up 1 node, 2 CPUs",
            "[vm 1] linux-guest: 2 CPU(s) online (0-1)",
            "[vm 1] linux-guest: dmesg: virtio_blk virtio1: [vda] 2048 512-byte logical blocks (1.05 MB/1.00 MiB)",
            "[vm 1] linux-guest: sector 0: pkvm-rs virtio-blk test disk, sector 0000 of 2048",
            "[vm 1] linux-guest: sector 2047: pkvm-rs virtio-blk test disk, sector 2047 of 2048",
            "[vm 1] linux-guest: /dev/vda sha256 {disk_sha256}",
            "[vm 1] linux-guest: wrote sector 2047: pkvm-rs: sector 2047 written by the guest",
            "[vm 1 hvc0] linux-guest: hello through the virtio console",
            "[vm 1] linux-guest: poweroff -f",
            "[host] vm 1: powered off (* MMIO exits, * WFI exits, * IRQ exits handled in the driver)",
            "[host] vm 1: virtio-console (slot 0): * requests, 0 refused for memory not shared, 0 bad requests, \
             0 ring errors, 0 bad register accesses, 0 backend errors, status 0xf",
            "[host] vm 1: virtio-blk (slot 1): * requests, 0 refused for memory not shared, 0 bad requests, \
             0 ring errors, 0 bad register accesses, 0 backend errors, status 0xf",
            "[host] vm 1: the guest made * MEM_SHARE, * MEM_UNSHARE and * MMIO_GUARD calls; * granule(s) guarded",
            "[host] vm 1: a read of the guest's kernel at IPA 0x40200000 is refused: Operation not permitted (os error 1)",
            "[host] vm 1: destroyed; the driver holds 0 pages of 0 VMs; *",
            "linux-host: pkvm-vmm exit status 0",
            "linux-host: the disk file's sector 2047: pkvm-rs: sector 2047 written by the guest",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: ABSENT,
        anywhere: &[],
        code: 0,
        timeout: 600,
        verify: None,
    },
    Scenario {
        name: "linux-gmem",
        about: "the memory file's guest_memfd rules with a real process: shared pages map in place, private \
                ones SIGBUS, a conversion waits for an io_uring fixed buffer, a pipe (vmsplice), an O_DIRECT \
                read in flight and an exclusive pin, then completes with the data in place; one 4 KiB share \
                splits one block path and its unshare merges it back (VM_STATS and the hyp's trace, drained \
                through the driver); 1,000 conversions race with GUP pins",
        run: Run {
            guest: &[File::GuestTest],
            append: Some("hyp.check_invariants hyp.trace=splits hyp.trace_vm=1 hyp.trace_quiet linux_host.gmem"),
            ..HOST
        },
        lines: Lines::Are(&[
            "gmem: the memory file: 64 MiB in 32 blocks of 2 MiB, each one allocation, none split",
            "gmem: before the first run, pwrite and a store through the mapping load the guest's memory",
            "gmem: the guest reads the image the host wrote with pwrite",
            "gmem: the guest reads the host's store made through the mapping",
            "gmem: the image is private now: a load and a store through the mapping get SIGBUS, pread EPERM, \
             the guest's bytes are unchanged",
            "gmem: the guest's stage-2 maps the file's 2 MiB blocks as blocks (level 2)",
            "gmem: MEM_SHARE of one 4 KiB page splits one block path: level 2 -> 3, one table page more",
            "gmem: the host reads the guest's data through the mapping, in place",
            "gmem: the guest reads the host's store",
            "gmem: the file tracks the subpage: 1 page mapped, 1 block split in Linux's view, 32 blocks",
            "gmem: MEM_UNSHARE merges the block back: level 2, table pages as before",
            "gmem: trace: split  * ipa=0x418* level 2 -> 3",
            "gmem: trace: merge  * ipa=0x418* level 2 <- 3",
            "gmem: the hyp's trace has one split of the block at level 2 and one merge back, nothing else",
            "gmem: afterwards the host's load gets SIGBUS and the guest still reads the host's bytes (in place)",
            "gmem: the block is whole again: 0 pages mapped, 0 blocks split, 1 conversion",
            "gmem: vCPU 1 counts in a shared page",
            "gmem: an io_uring fixed buffer is registered over a shared page of the mapping",
            "gmem: while the io_uring buffer is registered, the guest's MEM_UNSHARE waits, a load of the page \
             gets SIGBUS, vCPU 1 and another VM run on",
            "gmem: once that reference goes, the MEM_UNSHARE completes (the guest waited at least 300 ms), the \
             mapping gives SIGBUS, the guest reads the host's bytes",
            "gmem: vmsplice puts a shared page of the mapping into a pipe",
            "gmem: while a pipe holds the page, the guest's MEM_UNSHARE waits, a load of the page gets SIGBUS, \
             vCPU 1 and another VM run on",
            "gmem: once that reference goes, the MEM_UNSHARE completes (the guest waited at least 300 ms), the \
             mapping gives SIGBUS, the guest reads the host's bytes",
            "gmem: the pipe gave the host's bytes",
            "gmem: while an O_DIRECT read is in flight, the guest's MEM_UNSHARE waits, a load of the page gets \
             SIGBUS, vCPU 1 and another VM run on",
            "gmem: once that reference goes, the MEM_UNSHARE completes (the guest waited at least 300 ms), the \
             mapping gives SIGBUS, the guest reads the host's bytes",
            "gmem: an exclusive pin through the file is refused (EBUSY) while a pipe holds the page, granted \
             once it does not",
            "gmem: while it is held, a second pin through the file or the VM gets EBUSY and a load through the \
             mapping SIGBUS",
            "gmem: the guest's MEM_UNSHARE waits for the exclusive pin and completes once it is dropped",
            "gmem: 1000 conversions raced with io_uring registrations from another thread: each completed, and \
             every registration saw a shared, pinned page",
            "gmem: race: * registrations held the page, * were refused, * conversions waited over 1 ms, in * s",
            "gmem: a VMM whose conversion waits for a reference that never goes dies at once of SIGKILL, and its \
             memory goes back to Linux",
            "gmem: at the end no block is split in Linux's view: 32 blocks, 0 pages mapped, no conversion waiting",
            "gmem: the 8 blocks the host mapped a page of are 512 order-0 pages each, the other 24 still one \
             allocation",
            "gmem: the driver mapped * pages on faults, refused * faults and waited for * conversions (* ms in all)",
            "[vm 1] guest: 0 passed, 0 failed",
            "gmem: * SIGBUS, each one a check expected",
            "gmem: the VM is destroyed: the driver holds 0 pages of 0 VMs",
            "gmem: 0 checks failed",
            "linux-host: pkvm-vmm --gmem-test exit status 0",
            "linux-host: kernel log lines that report a warning, a bug or an oops: 0",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: &["gmem: FAIL", "linux-host: insmod null_blk failed", "[hyp] PANIC", "[hyp] ERROR", "Internal error:", "WARNING:", "BUG:", "Oops", "Kernel panic"],
        anywhere: &[],
        code: 0,
        timeout: 1200,
        verify: None,
    },
    Scenario {
        name: "linux-kill",
        about: "two VMMs run a guest each at once; the one spinning in its guest gets SIGKILL: its VM is torn \
                down and its memory back in Linux, the other finishes",
        run: Run { guest: &[File::GuestTest], append: Some("hyp.check_invariants linux_host.kill"), ..HOST },
        lines: Lines::Are(&[
            "linux-host: two VMMs running: the driver holds 32768 pages of 2 VMs",
            "linux-host: the spinning VMM got SIGKILL (status 137): the driver holds 16384 pages of 1 VMs",
            "[vm 1] guest: 92 passed, 0 failed",
            "[host] vm 1: destroyed; the driver holds 0 pages of 0 VMs; *",
            "linux-host: the other VMM is done: the driver holds 0 pages of 0 VMs",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: ABSENT,
        anywhere: &[],
        code: 0,
        timeout: 400,
        verify: None,
    },
    Scenario {
        name: "linux-hostile",
        about: "10,000 random calls on the host driver's fds (seed 1): precise errors, no kernel warning, no \
                invariant broken, nothing held after",
        run: Run { append: Some("hyp.check_invariants linux_host.hostile=10000 linux_host.seed=1"), ..HOST },
        lines: Lines::Are(&[
            "hostile: seed 1, 10000 calls",
            "hostile: a vCPU spinning in its guest, a timer signal: PKVM_RUN EINTR, exit_reason INTR",
            "hostile: * calls succeeded; refused: *",
            "hostile: after closing everything the driver holds 0 pages of 0 VMs",
            "linux-host: pkvm-vmm --hostile exit status 0",
            "linux-host: kernel log lines that report a warning, a bug or an oops: 0",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: ABSENT,
        anywhere: &[],
        code: 0,
        timeout: 600,
        verify: None,
    },
];
