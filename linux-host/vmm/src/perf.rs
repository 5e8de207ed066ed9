//! Instructions retired by this thread, counted by Linux's perf (the
//! PMU's event 0x08 through `perf_event_open`): at every level, or at EL2
//! alone. Linux running at EL1 (nVHE) sets a counter's EL2 filter bit when
//! the event does not exclude the hypervisor (`exclude_hv` clear), so a
//! counter that excludes user and kernel counts the hyp's instructions run
//! while this thread is on its CPU. The hyp leaves the PMU to the host
//! only under `hyp.bench_pmu` (docs/isolation.md): elsewhere the counters
//! do not open (the PMU is hidden) and the bench says so.

use std::fs::File;
use std::io::Read;
use std::os::fd::FromRawFd;

/// `struct perf_event_attr` up to `config2` (PERF_ATTR_SIZE_VER1, 72
/// bytes: the kernel accepts any known size and zero-fills the rest).
#[repr(C)]
#[derive(Default)]
struct Attr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
}

const PERF_TYPE_HARDWARE: u32 = 0;
const PERF_COUNT_HW_INSTRUCTIONS: u64 = 1;
// Bits of `flags`.
const DISABLED: u64 = 1 << 0;
const EXCLUDE_USER: u64 = 1 << 4;
const EXCLUDE_KERNEL: u64 = 1 << 5;
const EXCLUDE_HV: u64 = 1 << 6;
// ioctls on a perf fd.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;

/// Which levels a counter counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Levels {
    /// EL0, EL1 and EL2 (the guest's too: it runs on this thread).
    All,
    /// The hyp alone.
    El2,
}

impl Levels {
    fn flags(self) -> u64 {
        match self {
            Levels::All => 0,
            Levels::El2 => EXCLUDE_USER | EXCLUDE_KERNEL,
        }
    }
}

/// An instruction counter of this thread, running from [`Counter::open`].
pub struct Counter(File);

impl Counter {
    pub fn open(levels: Levels) -> std::io::Result<Counter> {
        let attr = Attr {
            kind: PERF_TYPE_HARDWARE,
            size: std::mem::size_of::<Attr>() as u32,
            config: PERF_COUNT_HW_INSTRUCTIONS,
            flags: DISABLED | levels.flags(),
            ..Default::default()
        };
        debug_assert_eq!(attr.flags & EXCLUDE_HV, 0);
        // SAFETY: perf_event_open reads `attr` (its size in `size`); pid 0,
        // cpu -1: this thread on any CPU; no group, no flags.
        let fd = unsafe {
            libc::syscall(libc::SYS_perf_event_open, &attr as *const Attr, 0 as libc::pid_t, -1, -1, 0 as libc::c_ulong)
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new fd that nothing else owns.
        let f = unsafe { File::from_raw_fd(fd as libc::c_int) };
        // SAFETY: a perf fd's ENABLE ioctl takes no argument.
        if unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), PERF_EVENT_IOC_ENABLE as _, 0) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Counter(f))
    }

    /// The count so far.
    pub fn read(&mut self) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        self.0.read_exact(&mut b)?;
        Ok(u64::from_ne_bytes(b))
    }
}

/// An EL2 and an all-level counter, read together: (EL2, all).
pub struct Pair {
    el2: Counter,
    all: Counter,
}

impl Pair {
    pub fn open() -> std::io::Result<Pair> {
        Ok(Pair { el2: Counter::open(Levels::El2)?, all: Counter::open(Levels::All)? })
    }

    pub fn read(&mut self) -> std::io::Result<(u64, u64)> {
        Ok((self.el2.read()?, self.all.read()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_is_the_first_abi_size() {
        // PERF_ATTR_SIZE_VER1: the kernel takes it and zeroes the rest.
        assert_eq!(std::mem::size_of::<Attr>(), 72);
        assert_eq!(Levels::El2.flags(), EXCLUDE_USER | EXCLUDE_KERNEL);
        assert_eq!(Levels::All.flags() & (EXCLUDE_USER | EXCLUDE_KERNEL | EXCLUDE_HV), 0);
    }
}
