//! What a Linux process can do to a page of a mapped memory file, for the
//! memory-file test (`gmem.rs`): load or store one word and survive the
//! SIGBUS of a private page, and take the references the kernel's own
//! users take: an io_uring fixed buffer (a long-term GUP pin), a page in a
//! pipe (`vmsplice`), an `O_DIRECT` read in flight.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

/// SIGBUS signals the probes took (each skipped its instruction).
static SIGBUS: AtomicU64 = AtomicU64::new(0);
/// A probe is running: a SIGBUS now is the probe's.
static PROBING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigbus(sig: libc::c_int, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if !PROBING.load(SeqCst) {
        // Not a probe's: die of it as if no handler were there.
        // SAFETY: async-signal-safe calls restoring the default action.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        return;
    }
    SIGBUS.fetch_add(1, SeqCst);
    // SAFETY: the kernel passes the interrupted context; the probe's
    // faulting instruction is one 4-byte load or store: skip it.
    unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.pc += 4 };
}

/// Installs the SIGBUS handler of the probes.
pub fn install() -> io::Result<()> {
    // SAFETY: a zeroed sigaction with our handler and SA_SIGINFO; the
    // handler only touches atomics and the signal context.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// SIGBUS signals the probes have taken so far.
pub fn sigbus_count() -> u64 {
    SIGBUS.load(SeqCst)
}

/// Runs one probe: Ok(value) or Err(()) for a SIGBUS.
fn probe(f: impl FnOnce() -> u64) -> Result<u64, ()> {
    let before = SIGBUS.load(SeqCst);
    PROBING.store(true, SeqCst);
    let v = f();
    PROBING.store(false, SeqCst);
    if SIGBUS.load(SeqCst) == before {
        Ok(v)
    } else {
        Err(())
    }
}

/// Loads the word at `p` (a mapping of the memory file): Err on SIGBUS.
pub fn load(p: *const u8) -> Result<u64, ()> {
    probe(|| {
        let v: u64;
        // SAFETY: `p` is 8-aligned in a live mapping; a fault there is a
        // SIGBUS whose handler skips the `ldr` (v keeps 0).
        unsafe { core::arch::asm!("mov {v}, #0", "ldr {v}, [{p}]", v = out(reg) v, p = in(reg) p, options(nostack)) };
        v
    })
}

/// Stores `v` at `p`: Err on SIGBUS (nothing stored).
pub fn store(p: *mut u8, v: u64) -> Result<(), ()> {
    probe(|| {
        // SAFETY: as in `load`; the handler skips the `str`.
        unsafe { core::arch::asm!("str {v}, [{p}]", v = in(reg) v, p = in(reg) p, options(nostack)) };
        0
    })
    .map(drop)
}

const SYS_IO_URING_SETUP: libc::c_long = 425;
const SYS_IO_URING_REGISTER: libc::c_long = 427;
const IORING_REGISTER_BUFFERS: libc::c_long = 0;
const IORING_UNREGISTER_BUFFERS: libc::c_long = 1;

/// An io_uring instance, for its fixed buffers: registering one pins its
/// pages (FOLL_LONGTERM) until it is unregistered or the ring is closed.
pub struct Ring(OwnedFd);

impl Ring {
    pub fn new() -> io::Result<Ring> {
        // struct io_uring_params: 120 bytes, zero = defaults.
        let mut params = [0u64; 15];
        // SAFETY: io_uring_setup reads and writes `params` only.
        let fd = unsafe { libc::syscall(SYS_IO_URING_SETUP, 4 as libc::c_long, params.as_mut_ptr()) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd we own.
        Ok(Ring(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Registers `len` bytes at `p` as the ring's one fixed buffer.
    pub fn register(&self, p: *mut u8, len: usize) -> io::Result<()> {
        let iov = libc::iovec { iov_base: p.cast(), iov_len: len };
        // SAFETY: the kernel reads one iovec; it pins the user pages itself.
        let r = unsafe {
            libc::syscall(
                SYS_IO_URING_REGISTER,
                self.0.as_raw_fd() as libc::c_long,
                IORING_REGISTER_BUFFERS,
                &iov as *const libc::iovec,
                1 as libc::c_long,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub fn unregister(&self) -> io::Result<()> {
        // SAFETY: no argument memory.
        let r = unsafe {
            libc::syscall(
                SYS_IO_URING_REGISTER,
                self.0.as_raw_fd() as libc::c_long,
                IORING_UNREGISTER_BUFFERS,
                std::ptr::null::<u8>(),
                0 as libc::c_long,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// A pipe holding pages of user memory (`vmsplice` without SPLICE_F_GIFT
/// takes a reference on each page until the pipe is read or closed).
pub struct Spliced {
    read: OwnedFd,
    _write: OwnedFd,
    len: usize,
}

impl Spliced {
    pub fn new(p: *mut u8, len: usize) -> io::Result<Spliced> {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two fds into `fds`.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: two new fds we own.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let iov = libc::iovec { iov_base: p.cast(), iov_len: len };
        // SAFETY: the kernel reads one iovec and references the pages.
        let n = unsafe { libc::vmsplice(write.as_raw_fd(), &iov, 1, 0) };
        if n != len as isize {
            return Err(if n < 0 { io::Error::last_os_error() } else { io::Error::other("short vmsplice") });
        }
        Ok(Spliced { read, _write: write, len })
    }

    /// Reads the pipe empty (the page references go): its bytes.
    pub fn drain(self) -> io::Result<Vec<u8>> {
        let mut b = vec![0u8; self.len];
        let mut done = 0;
        while done < b.len() {
            // SAFETY: reading into our buffer's unfilled part.
            let n = unsafe { libc::read(self.read.as_raw_fd(), b[done..].as_mut_ptr().cast(), b.len() - done) };
            if n <= 0 {
                return Err(io::Error::last_os_error());
            }
            done += n as usize;
        }
        Ok(b)
    }
}

/// An `O_DIRECT` read of `len` bytes of block device `dev` into `p`, on a
/// thread of its own: the bio pins the page until the device completes.
pub fn direct_read(dev: &str, p: *mut u8, len: usize) -> io::Result<std::thread::JoinHandle<io::Result<usize>>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(dev)?;
    let addr = p as usize;
    Ok(std::thread::spawn(move || {
        // SAFETY: `addr` is a live mapping of `len` bytes the caller keeps
        // until it joins this thread.
        let n = unsafe { libc::pread(f.as_raw_fd(), addr as *mut libc::c_void, len, 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }))
}
