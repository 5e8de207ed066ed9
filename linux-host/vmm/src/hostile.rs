//! `pkvm-vmm --hostile N [--seed S]`: N random calls on the driver's file
//! descriptors (and on others), as a hostile program would make them:
//! random requests, random or broken argument pointers, random fields,
//! random sizes for memory and copies, mappings, runs cut short by a
//! timer signal, closes at any time. A bounded loop; the seed is printed
//! so a failing run replays. At the end every fd is closed and the driver
//! must hold no page and no VM; the kernel log is the caller's to check.

use std::collections::BTreeMap;
use std::io;

use crate::pkvm;

/// xorshift64*: small, deterministic from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

/// A field value: an edge, a plausible guest address or size, or noise.
fn field(r: &mut Rng) -> u64 {
    match r.below(8) {
        0 => r.pick(&[0, 1, 4095, 4096, 1 << 21, (1 << 21) + 4096, 1 << 40, u64::MAX, u64::MAX - 4095]),
        1 | 2 => 0x4000_0000 + (r.below(1 << 12) << 12),
        3 => r.below(4) << 12,
        4 => r.below(256),
        5 => r.below(1 << 12) << 12,
        _ => r.next(),
    }
}

/// The driver's requests.
const REQUESTS: [u64; 14] = [
    pkvm::GET_API_VERSION,
    pkvm::CREATE_VM,
    pkvm::CREATE_MEMORY,
    pkvm::CREATE_VCPU,
    pkvm::PIN,
    pkvm::UNPIN,
    pkvm::PAGE_STATE,
    pkvm::VM_STATS,
    pkvm::IRQ,
    pkvm::RUN,
    pkvm::MEM_PIN,
    pkvm::MEM_UNPIN,
    pkvm::MEM_INFO,
    // Tracing is off in the hostile runs: nothing is ever copied out.
    pkvm::TRACE_DRAIN,
];

#[derive(Default)]
struct Pools {
    dev: Vec<i32>,
    vms: Vec<i32>,
    vcpus: Vec<i32>,
    mems: Vec<i32>,
    other: Vec<i32>,
}

impl Pools {
    fn all(&self) -> Vec<i32> {
        [&self.dev, &self.vms, &self.vcpus, &self.mems, &self.other].into_iter().flatten().copied().collect()
    }
    fn forget(&mut self, fd: i32) {
        for p in [&mut self.dev, &mut self.vms, &mut self.vcpus, &mut self.mems, &mut self.other] {
            p.retain(|&f| f != fd);
        }
    }
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// A one-shot 10 ms timer signal (SIGALRM, no SA_RESTART): a PKVM_RUN it
/// catches in the guest returns EINTR.
fn arm_alarm() {
    let t = libc::itimerval {
        it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 },
        it_value: libc::timeval { tv_sec: 0, tv_usec: 10_000 },
    };
    // SAFETY: a valid itimerval; the handler is installed in `run`.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut()) };
}

/// What the calls came to: successes and each errno's count.
#[derive(Default)]
struct Tally {
    ok: u64,
    errnos: BTreeMap<i32, u64>,
    /// RUNs a signal cut short, and those whose run structure said so.
    eintr: u64,
    eintr_marked: u64,
    /// Touches of a mapped memory fd that got SIGBUS.
    sigbus: u64,
}

impl Tally {
    fn note(&mut self, r: isize) -> isize {
        if r >= 0 {
            self.ok += 1;
        } else {
            *self.errnos.entry(io::Error::last_os_error().raw_os_error().unwrap_or(0)).or_default() += 1;
        }
        r
    }
}

/// Runs `n` calls from `seed`; Ok(true) if the driver holds nothing after.
pub fn run(n: u64, seed: u64) -> io::Result<bool> {
    println!("hostile: seed {seed}, {n} calls");
    // SAFETY: a zeroed sigaction filled with a handler that does nothing.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
    }
    #[cfg(target_arch = "aarch64")]
    crate::refs::install()?;
    spin_interrupted()?;
    let mut r = Rng::new(seed);
    let mut t = Tally::default();
    let mut p = Pools::default();
    let open = |path: &str| {
        std::fs::File::options().read(true).write(true).open(path).map(std::os::fd::IntoRawFd::into_raw_fd)
    };
    p.dev.push(open("/dev/pkvm")?);
    p.other.push(open("/dev/null")?);
    // What the kernel may read or write for an argument: 4 KiB of ours.
    let mut buf = vec![0u64; 512];
    for _ in 0..n {
        for w in buf.iter_mut().take(16) {
            *w = field(&mut r);
        }
        let all = p.all();
        let fd = match r.below(20) {
            0 => r.pick(&[-1, 1000]),
            _ => r.pick(&all),
        };
        match r.below(16) {
            // An ioctl: mostly a request of the driver on the kind of fd it
            // belongs to, with its structure's fields random; sometimes any
            // request, a broken one, any fd, a bad pointer.
            0..=9 => {
                let mut req = r.pick(&REQUESTS);
                let home = match req {
                    pkvm::GET_API_VERSION | pkvm::CREATE_VM | pkvm::TRACE_DRAIN => &p.dev,
                    pkvm::RUN => &p.vcpus,
                    pkvm::MEM_PIN | pkvm::MEM_UNPIN | pkvm::MEM_INFO => &p.mems,
                    _ => &p.vms,
                };
                let fd = if home.is_empty() || r.below(10) == 0 { fd } else { r.pick(home) };
                match r.below(20) {
                    0 => req = r.next() & 0xffff_ffff,
                    1 => req ^= 1 << (16 + r.below(14)),
                    _ => {}
                }
                let takes_struct = (req >> 16) & 0x3fff != 0;
                let arg: u64 = match r.below(10) {
                    0 => 0xffff_0000_0000_0000,
                    1 => 8,
                    2 => (buf.as_ptr() as u64) + 1,
                    3 => r.next(),
                    _ if takes_struct => buf.as_mut_ptr() as u64,
                    _ => 0,
                };
                if req == pkvm::RUN {
                    arm_alarm();
                }
                // SAFETY: any request on any fd with any argument is what
                // this test is about; the only memory the kernel may write
                // is `buf` (4 KiB, larger than every structure) or
                // addresses the kernel checks and refuses.
                let res = unsafe { libc::ioctl(fd, req as libc::Ioctl, arg) } as isize;
                let errno = io::Error::last_os_error().raw_os_error();
                t.note(res);
                if req == pkvm::RUN && res < 0 && errno == Some(libc::EINTR) {
                    t.eintr += 1;
                }
                if res >= 0 && p.dev.contains(&fd) && req == pkvm::CREATE_VM {
                    p.vms.push(res as i32);
                } else if res >= 0 && p.vms.contains(&fd) && req == pkvm::CREATE_VCPU {
                    p.vcpus.push(res as i32);
                } else if res >= 0 && p.vms.contains(&fd) && req == pkvm::CREATE_MEMORY {
                    p.mems.push(res as i32);
                }
            }
            // A copy in or out of a memory fd (or of anything else).
            10 | 11 => {
                let fd = if p.mems.is_empty() || r.below(5) == 0 { fd } else { r.pick(&p.mems) };
                let len = r.pick(&[0usize, 1, 8, 4095, 4096, 4097, 4096 * 4]);
                let off = field(&mut r) as i64 & 0x7fff_ffff_ffff_ffff;
                let off = if r.below(2) == 0 { off % (64 << 20) } else { off };
                let ptr = if r.below(6) == 0 { 0x10 as *mut libc::c_void } else { buf.as_mut_ptr().cast() };
                let len = len.min(4096);
                // SAFETY: `ptr` is `buf` (4096 bytes, `len` at most that) or
                // an address the kernel checks and refuses (EFAULT).
                let res = unsafe {
                    if r.below(2) == 0 {
                        libc::pread(fd, ptr, len, off)
                    } else {
                        libc::pwrite(fd, ptr, len, off)
                    }
                };
                t.note(res);
            }
            // A mapping of any fd, a run structure checked after a RUN
            // a signal interrupted, a memory fd's pages touched (a private
            // page is a SIGBUS the probe survives).
            12 | 13 => {
                let home = if r.below(2) == 0 { &p.vcpus } else { &p.mems };
                let fd = if home.is_empty() || r.below(5) == 0 { fd } else { r.pick(home) };
                let len = r.pick(&[4096usize, 8192, 1 << 21]);
                let off = r.pick(&[0i64, 4096, -4096, 1 << 20, 64 << 20]);
                let flags = r.pick(&[libc::MAP_SHARED, libc::MAP_PRIVATE]);
                // SAFETY: a fresh mapping chosen by the kernel, unmapped
                // below; nothing of ours is replaced.
                let m = unsafe {
                    libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, off)
                };
                if m == libc::MAP_FAILED {
                    t.note(-1);
                    continue;
                }
                t.note(0);
                if p.vcpus.contains(&fd) && len == 4096 && off == 0 && flags == libc::MAP_SHARED {
                    arm_alarm();
                    // SAFETY: RUN takes no argument.
                    let res = unsafe { libc::ioctl(fd, pkvm::RUN as libc::Ioctl, 0) } as isize;
                    let errno = io::Error::last_os_error().raw_os_error();
                    t.note(res);
                    if res < 0 && errno == Some(libc::EINTR) {
                        t.eintr += 1;
                        // SAFETY: our mapping of the run structure (one page).
                        let reason = unsafe { std::ptr::read_volatile(m.cast::<u64>()) };
                        t.eintr_marked += u64::from(reason == pkvm::EXIT_INTR);
                    }
                }
                #[cfg(target_arch = "aarch64")]
                if p.mems.contains(&fd) && flags == libc::MAP_SHARED {
                    for _ in 0..4 {
                        // SAFETY: inside the mapping made above.
                        let at = unsafe { m.cast::<u8>().add(r.below(len as u64 / 8) as usize * 8) };
                        let ok = if r.below(2) == 0 {
                            crate::refs::load(at).is_ok()
                        } else {
                            crate::refs::store(at, r.next()).is_ok()
                        };
                        t.note(if ok { 0 } else { -1 });
                        t.sigbus += u64::from(!ok);
                    }
                }
                // SAFETY: the mapping made above.
                unsafe { libc::munmap(m, len) };
            }
            // A close, of anything but the device (reopened if it was).
            14 => {
                if fd >= 0 && fd != 1000 && !p.dev.contains(&fd) {
                    // SAFETY: a fd this loop opened or was given; it is
                    // forgotten with the close.
                    t.note(unsafe { libc::close(fd) } as isize);
                    p.forget(fd);
                }
            }
            // PAGE_STATE / VM_STATS / IRQ with plausible arguments.
            _ => {
                if let Some(&vm) = p.vms.first() {
                    let mut a = pkvm::IrqArgs {
                        vcpu: r.below(3) as u32,
                        intid: r.below(140) as u32,
                        op: r.below(6) as u32,
                        arg: [r.below(3), r.below(300)],
                        ..Default::default()
                    };
                    // SAFETY: `a` is the structure the request names.
                    t.note(unsafe { libc::ioctl(vm, pkvm::IRQ as libc::Ioctl, &mut a) } as isize);
                }
            }
        }
        // Bounded: a few VMs at a time.
        if p.vms.len() > 4 {
            let fd = p.vms.remove(0);
            // SAFETY: a VM fd this loop created.
            unsafe { libc::close(fd) };
        }
    }
    for fd in p.all() {
        // SAFETY: fds this loop opened; none is used afterwards.
        unsafe { libc::close(fd) };
    }
    let held = |what: &str| {
        std::fs::read_to_string(format!("/sys/class/misc/pkvm/{what}")).ok().and_then(|s| s.trim().parse::<u64>().ok())
    };
    let errnos: Vec<String> = t.errnos.iter().map(|(e, c)| format!("{} {c}", errno_name(*e))).collect();
    println!("hostile: {} calls succeeded; refused: {}", t.ok, errnos.join(", "));
    println!("hostile: {} runs cut short by a signal, {} of them checked: exit_reason INTR", t.eintr, t.eintr_marked);
    println!("hostile: {} touches of a mapped memory fd got SIGBUS", t.sigbus);
    let (pages, vms) = (held("pages"), held("vms"));
    let show = |v: Option<u64>| v.map_or("?".to_string(), |n| n.to_string());
    println!("hostile: after closing everything the driver holds {} pages of {} VMs", show(pages), show(vms));
    Ok(pages == Some(0) && vms == Some(0))
}

/// A vCPU spinning in its guest (`b .`) is brought out of PKVM_RUN by a
/// timer signal: EINTR, and its run structure says INTR.
fn spin_interrupted() -> io::Result<()> {
    let dev = pkvm::Device::open("/dev/pkvm")?;
    let vm = dev.create_vm()?;
    let mem = vm.create_memory(0x4000_0000, 1 << 20)?;
    mem.write(0x4000_0000, &0x1400_0000u32.to_le_bytes())?;
    let mut vcpu = vm.create_vcpu(0x4000_0000, 0, false)?;
    arm_alarm();
    let r = vcpu.run([0; 4]);
    let marked = vcpu.exit_reason() == pkvm::EXIT_INTR;
    println!(
        "hostile: a vCPU spinning in its guest, a timer signal: PKVM_RUN {}, exit_reason {}",
        match &r {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => "EINTR".to_string(),
            other => format!("{other:?}"),
        },
        if marked { "INTR" } else { "not INTR" }
    );
    Ok(())
}

fn errno_name(e: i32) -> String {
    let known = [
        (libc::EPERM, "EPERM"),
        (libc::ENOENT, "ENOENT"),
        (libc::EINTR, "EINTR"),
        (libc::EIO, "EIO"),
        (libc::EBADF, "EBADF"),
        (libc::ENOMEM, "ENOMEM"),
        (libc::EACCES, "EACCES"),
        (libc::EFAULT, "EFAULT"),
        (libc::EBUSY, "EBUSY"),
        (libc::EEXIST, "EEXIST"),
        (libc::ENODEV, "ENODEV"),
        (libc::EINVAL, "EINVAL"),
        (libc::ENOTTY, "ENOTTY"),
        (libc::ENOSPC, "ENOSPC"),
        (libc::ESPIPE, "ESPIPE"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    ];
    known.iter().find(|(n, _)| *n == e).map_or(format!("errno {e}"), |(_, s)| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rng_replays_from_its_seed() {
        let (mut a, mut b, mut c) = (Rng::new(7), Rng::new(7), Rng::new(8));
        let xs: Vec<u64> = (0..8).map(|_| a.next()).collect();
        assert_eq!(xs, (0..8).map(|_| b.next()).collect::<Vec<_>>());
        assert_ne!(xs, (0..8).map(|_| c.next()).collect::<Vec<_>>());
        assert!((0..1000).all(|_| a.below(10) < 10));
    }
}
