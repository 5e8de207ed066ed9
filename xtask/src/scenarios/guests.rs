//! Guests a user brings (`--guest`, `--guest-vcpus`), and malformed ones the
//! host shim refuses.

use super::spec::{File, Lines, Run, Scenario};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "guests",
        about: "run --guest: plain QEMU-virt EL1 programs run as protected guests",
        run: Run {
            guest: &[File::GuestTest, File::GuestTest],
            guest_mem: &["16M", "8M"],
            ..Run::shim("guests")
        },
        lines: Lines::Are(&[
            "[host] vm 1: 'guest-test' loaded, 16 MiB donated at PA 0x42400000 (IPA 0x40000000), entry 0x40080000",
            "[vm 1] guest: hello from EL1, 16 MiB of private memory",
            "[host] vm 1: destroyed, 16384 KiB scrubbed and returned to the host",
            "[vm 2] guest: hello from EL1, 8 MiB of private memory",
            "[host] vm 2: destroyed, 8192 KiB scrubbed and returned to the host",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: &["FAIL", "PANIC"],
        anywhere: &[],
        code: 0,
        timeout: 60,
        verify: None,
    },
    Scenario {
        name: "guest-vcpus",
        about: "--guest-vcpus gives plain --guest programs several vCPUs, started with PSCI CPU_ON (time-sliced and one host CPU each)",
        run: Run {
            smp: 2,
            guest: &[File::GuestTest, File::GuestTest],
            guest_mem: &["16M", "16M"],
            guest_vcpus: &[3, 2],
            ..Run::shim("guests")
        },
        lines: Lines::Are(&[
            "[host] vm 1: 3 vCPUs time-sliced on 1 host CPU",
            "[vm 1] guest: hello from EL1, 16 MiB of private memory",
            "[vm 1] guest: 3 vCPUs in my DTB; vCPUs 1.. came up with MPIDR Aff0 [1, 2]",
            "[host] vm 1: destroyed, 16384 KiB scrubbed and returned to the host",
            "[host] vm 2: 2 vCPUs, each on a host CPU of its own",
            "[vm 2] guest: hello from EL1, 16 MiB of private memory",
            "[vm 2] guest: 2 vCPUs in my DTB; vCPUs 1.. came up with MPIDR Aff0 [1]",
            "[host] vm 2: destroyed, 16384 KiB scrubbed and returned to the host",
            "[hyp] system off: status 0 (Ok)",
        ]),
        absent: &["FAIL", "PANIC"],
        anywhere: &[],
        code: 0,
        timeout: 60,
        verify: None,
    },
    // Malformed guest ELFs (crate::fixtures) that only the host shim's
    // loader can catch: refused with the reason; a good guest still runs.
    Scenario {
        name: "bad-elf",
        about: "the host shim refuses guest ELFs whose segment sizes and offsets wrap, and goes on",
        run: Run {
            guest: &[File::Fixture("bad-offset.elf"), File::Fixture("bad-filesz.elf"), File::GuestTest],
            guest_mem: &["16M", "16M", "16M"],
            ..Run::shim("guests")
        },
        lines: Lines::Are(&[
            "[host] cannot load guest 'bad-offset.elf': malformed ELF: segment data outside the file",
            "[host] cannot load guest 'bad-filesz.elf': malformed ELF: segment data outside the file",
            "[host] vm 1: 'guest-test' loaded, 16 MiB donated at PA * (IPA 0x40000000), entry 0x40080000",
            "[vm 1] guest: hello from EL1, 16 MiB of private memory",
            "[host] vm 1: destroyed, 16384 KiB scrubbed and returned to the host",
            "[hyp] system off: status 1 (HostFailed)",
        ]),
        absent: &["PANIC"],
        anywhere: &[],
        code: 1,
        timeout: 60,
        verify: None,
    },
    // Malformed Linux guests (crate::fixtures) in a bundle of their own: the
    // host shim refuses each with the reason, without a panic.
    Scenario {
        name: "bad-image",
        about: "the host shim refuses malformed arm64 Images of Linux guests with the reason, and goes on",
        run: Run { guest_bundle: Some(File::Fixture("bad-linux.bundle")), ..Run::shim("guests") },
        lines: Lines::Are(&[
            "[host] cannot load Linux guest 'linux-short': bad arm64 Image: shorter than the 64-byte arm64 Image header",
            "[host] cannot load Linux guest 'linux-no-magic': bad arm64 Image: no arm64 Image magic (ARM\\x64 at offset 0x38)",
            "[host] cannot load Linux guest 'linux-no-size': bad arm64 Image: image_size is 0 (a kernel before 3.17 gives no size)",
            "[host] cannot load Linux guest 'linux-big-endian': bad arm64 Image: a big-endian kernel",
            "[host] cannot load Linux guest 'linux-too-big': bad arm64 Image: the kernel, initramfs and DMA pool do not fit in guest memory",
            "[host] cannot load Linux guest 'linux-wraps': bad arm64 Image: the kernel, initramfs and DMA pool do not fit in guest memory",
            "[host] cannot load Linux guest 'linux-odd-offset': bad arm64 Image: text_offset is not a 4 KiB multiple below 2 MiB",
            "[host] result: 3 passed, 7 failed",
            "[hyp] system off: status 1 (HostFailed)",
        ]),
        absent: &["PANIC", "[vm "],
        anywhere: &[],
        code: 1,
        timeout: 60,
        verify: None,
    },
];
