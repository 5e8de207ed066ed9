//! The host driver's ioctl ABI (`linux-host/kmod/pkvm.h`, described in
//! docs/linux-host-abi.md): `/dev/pkvm` makes VM fds; a VM fd makes vCPU
//! fds and one memory fd; a vCPU fd runs its vCPU and maps its run
//! structure. A test checks every number and layout here against the
//! header.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;

pub const API_VERSION: i32 = 2;
const PKVMIO: u64 = 0xE8;

const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (PKVMIO << 8) | nr
}
const NONE: u64 = 0;
const WRITE: u64 = 1;
const READ: u64 = 2;
const READ_WRITE: u64 = 3;

pub const GET_API_VERSION: u64 = ioc(NONE, 0x00, 0);
pub const CREATE_VM: u64 = ioc(NONE, 0x01, 0);
pub const TRACE_DRAIN: u64 = ioc(READ_WRITE, 0x02, size_of::<TraceArgs>());
pub const CREATE_MEMORY: u64 = ioc(WRITE, 0x10, size_of::<MemoryArgs>());
pub const CREATE_VCPU: u64 = ioc(READ_WRITE, 0x11, size_of::<VcpuInit>());
pub const PIN: u64 = ioc(WRITE, 0x12, size_of::<PinArgs>());
pub const UNPIN: u64 = ioc(WRITE, 0x13, size_of::<PinArgs>());
pub const PAGE_STATE: u64 = ioc(READ_WRITE, 0x14, size_of::<PageState>());
pub const VM_STATS: u64 = ioc(READ_WRITE, 0x15, size_of::<VmStats>());
pub const IRQ: u64 = ioc(READ_WRITE, 0x16, size_of::<IrqArgs>());
pub const RUN: u64 = ioc(NONE, 0x20, 0);
pub const MEM_PIN: u64 = ioc(WRITE, 0x30, size_of::<MemPin>());
pub const MEM_UNPIN: u64 = ioc(WRITE, 0x31, size_of::<MemPin>());
pub const MEM_INFO: u64 = ioc(READ, 0x32, size_of::<MemInfo>());

pub const VCPU_OFF: u32 = 1;
pub const PIN_EXCLUSIVE: u32 = 1;
pub const MEM_PIN_EXCLUSIVE: u32 = 1;
/// `exit_reason` of a PKVM_RUN a signal interrupted (EINTR).
pub const EXIT_INTR: u64 = 0x100;

#[repr(C)]
#[derive(Default)]
pub struct MemoryArgs {
    pub ipa: u64,
    pub size: u64,
    pub flags: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct TraceArgs {
    pub buf: u64,
    pub size: u64,
    pub records: u64,
    pub lost: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct MemPin {
    pub offset: u64,
    pub flags: u32,
    pub pad: u32,
}

/// The memory file's state (PKVM_MEM_INFO).
#[repr(C)]
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub size: u64,
    /// 2 MiB blocks (one allocation each).
    pub blocks: u64,
    /// Blocks still one order-9 page in Linux (the host never mapped one
    /// of their pages).
    pub whole_blocks: u64,
    /// Blocks some but not all of whose pages the host maps.
    pub split_blocks: u64,
    /// Pages the driver holds a mapping pin for.
    pub mapped: u64,
    /// Pins taken through the file.
    pub pins: u64,
    /// Conversions waiting now.
    pub waiting: u64,
    /// Faults that mapped a page, and those refused (SIGBUS).
    pub faults: u64,
    pub refused: u64,
    /// Conversions the driver waited for, and their total wait.
    pub conversions: u64,
    pub wait_ns: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct VcpuInit {
    pub pc: u64,
    pub x0: u64,
    pub flags: u32,
    pub index: u32,
}

#[repr(C)]
#[derive(Default)]
pub struct PinArgs {
    pub ipa: u64,
    pub flags: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Default)]
pub struct PageState {
    pub ipa: u64,
    pub state: u32,
    pub pins: u32,
}

#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct VmStats {
    pub ipa: u64,
    pub table_pages: u64,
    pub level: u64,
    pub state: u64,
    pub shares: u64,
    pub unshares: u64,
    pub guards: u64,
    pub granules: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct IrqArgs {
    pub vcpu: u32,
    pub intid: u32,
    pub op: u32,
    pub pad: u32,
    pub arg: [u64; 2],
    pub pending: u64,
    pub active: u64,
}

/// The run structure: a vCPU fd's mapping at offset 0.
#[repr(C)]
pub struct Run {
    pub exit_reason: u64,
    pub exit: [u64; 5],
    pub reply: [u64; 4],
    pub irq_exits: u64,
}

/// An exit PKVM_RUN returned: the hyp's reason and its x3..x7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub reason: u64,
    pub x: [u64; 5],
}

/// An ioctl whose argument is a plain value.
fn ioctl_val(fd: &impl AsRawFd, req: u64, arg: u64) -> io::Result<i32> {
    debug_assert_eq!((req >> 16) & 0x3fff, 0);
    // SAFETY: a request without an argument structure reads no memory of
    // ours; `arg` is passed as a value.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::Ioctl, arg as libc::c_ulong) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An ioctl on the structure `arg`, whose size the request encodes.
fn ioctl_ref<T>(fd: &impl AsRawFd, req: u64, arg: &mut T) -> io::Result<i32> {
    assert_eq!((req >> 16) & 0x3fff, size_of::<T>() as u64, "request {req:#x} is not for this structure");
    // SAFETY: the driver reads and writes at most size_of::<T>() bytes at
    // `arg` (the size in the request), which is ours and live for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::Ioctl, arg as *mut T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An fd the driver returned.
fn owned(fd: i32) -> OwnedFd {
    // SAFETY: the driver installed `fd` for us just now; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `/dev/pkvm`.
pub struct Device {
    fd: OwnedFd,
}

impl Device {
    pub fn open(path: &str) -> io::Result<Device> {
        let f = File::options().read(true).write(true).open(path)?;
        Ok(Device { fd: f.into() })
    }

    pub fn api_version(&self) -> io::Result<i32> {
        ioctl_val(&self.fd, GET_API_VERSION, 0)
    }

    /// PKVM_TRACE_DRAIN: the hyp's trace records of the calling CPU into
    /// `buf` (64 bytes each): (records, records lost to overflow so far).
    pub fn trace_drain(&self, buf: &mut [u8]) -> io::Result<(usize, u64)> {
        let size = (buf.len() - buf.len() % hyp_abi::trace::RECORD_SIZE) as u64;
        let mut a = TraceArgs { buf: buf.as_mut_ptr() as u64, size, ..Default::default() };
        ioctl_ref(&self.fd, TRACE_DRAIN, &mut a)?;
        Ok((a.records as usize, a.lost))
    }

    pub fn create_vm(&self) -> io::Result<Vm> {
        Ok(Vm { fd: owned(ioctl_val(&self.fd, CREATE_VM, 0)?) })
    }
}

/// A VM fd. Its ioctls may be called from any thread.
pub struct Vm {
    fd: OwnedFd,
}

impl Vm {
    /// The VM's memory at [ipa, ipa + size): zeroed pages, donated to the
    /// guest at its next run.
    pub fn create_memory(&self, ipa: u64, size: u64) -> io::Result<Memory> {
        let mut a = MemoryArgs { ipa, size, flags: 0 };
        let fd = ioctl_ref(&self.fd, CREATE_MEMORY, &mut a)?;
        Ok(Memory { file: File::from(owned(fd)), ipa, size })
    }

    /// A vCPU entering at `pc` with x0 = `x0` (or powered off until the
    /// guest's PSCI CPU_ON); its index and its fd, run structure mapped.
    pub fn create_vcpu(&self, pc: u64, x0: u64, off: bool) -> io::Result<Vcpu> {
        let mut a = VcpuInit { pc, x0, flags: if off { VCPU_OFF } else { 0 }, index: 0 };
        let fd = owned(ioctl_ref(&self.fd, CREATE_VCPU, &mut a)?);
        let len = size_of::<Run>().next_multiple_of(4096);
        // SAFETY: a fresh shared mapping of the vCPU fd's run page; the
        // kernel checks the offset and length.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let run = NonNull::new(p.cast::<Run>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Vcpu { fd, index: a.index, run, len })
    }

    pub fn pin(&self, ipa: u64, exclusive: bool) -> io::Result<()> {
        let mut a = PinArgs { ipa, flags: if exclusive { PIN_EXCLUSIVE } else { 0 }, pad: 0 };
        ioctl_ref(&self.fd, PIN, &mut a).map(drop)
    }

    pub fn unpin(&self, ipa: u64) -> io::Result<()> {
        let mut a = PinArgs { ipa, flags: 0, pad: 0 };
        ioctl_ref(&self.fd, UNPIN, &mut a).map(drop)
    }

    /// The guest's stage-2 at `ipa` and its share/guard counts.
    /// PKVM_PAGE_STATE: (the host's state of the page behind `ipa`, its pins).
    pub fn page_state(&self, ipa: u64) -> io::Result<(u32, u32)> {
        let mut a = PageState { ipa, ..Default::default() };
        ioctl_ref(&self.fd, PAGE_STATE, &mut a)?;
        Ok((a.state, a.pins))
    }

    pub fn stats(&self, ipa: u64) -> io::Result<VmStats> {
        let mut a = VmStats { ipa, ..Default::default() };
        ioctl_ref(&self.fd, VM_STATS, &mut a)?;
        Ok(a)
    }

    /// `VCPU_IRQ` for vCPU `vcpu`: for `STATE`, the pending and active
    /// bits of the block of 32 INTIDs at `intid`.
    pub fn irq(&self, vcpu: u32, intid: u32, op: u32, arg: [u64; 2]) -> io::Result<(u64, u64)> {
        let mut a = IrqArgs { vcpu, intid, op, arg, ..Default::default() };
        ioctl_ref(&self.fd, IRQ, &mut a)?;
        Ok((a.pending, a.active))
    }
}

/// The VM's memory fd: the guest's RAM as a file, offset 0 = `ipa`.
pub struct Memory {
    file: File,
    pub ipa: u64,
    pub size: u64,
}

impl Memory {
    fn offset(&self, ipa: u64, len: usize) -> io::Result<u64> {
        ipa.checked_sub(self.ipa)
            .filter(|o| o.checked_add(len as u64).is_some_and(|e| e <= self.size))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
    }

    /// Writes `data` at `ipa`: any page before the guest first ran, a page
    /// it shares with the host afterwards (else EPERM).
    pub fn write(&self, ipa: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, self.offset(ipa, data.len())?)
    }

    /// Reads at `ipa`, under the same rule as [`Memory::write`].
    pub fn read(&self, ipa: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, self.offset(ipa, buf.len())?)
    }

    /// PKVM_MEM_PIN (exclusive or shared) / PKVM_MEM_UNPIN of the page at `ipa`.
    pub fn pin(&self, ipa: u64, exclusive: bool) -> io::Result<()> {
        let flags = if exclusive { MEM_PIN_EXCLUSIVE } else { 0 };
        let mut a = MemPin { offset: self.offset(ipa, 0)?, flags, pad: 0 };
        ioctl_ref(&self.file, MEM_PIN, &mut a).map(drop)
    }
    pub fn unpin(&self, ipa: u64) -> io::Result<()> {
        let mut a = MemPin { offset: self.offset(ipa, 0)?, flags: 0, pad: 0 };
        ioctl_ref(&self.file, MEM_UNPIN, &mut a).map(drop)
    }

    pub fn info(&self) -> io::Result<MemInfo> {
        let mut i = MemInfo::default();
        ioctl_ref(&self.file, MEM_INFO, &mut i)?;
        Ok(i)
    }

    /// A shared mapping of the whole file.
    pub fn map(&self) -> io::Result<Mapping> {
        let len = self.size as usize;
        // SAFETY: a new shared mapping of our fd; the kernel picks the
        // address; nothing else is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { base: p.cast(), len, ipa: self.ipa })
    }
}

/// A shared mapping of a memory file: the guest's RAM at host addresses.
/// Accesses go through raw pointers: a private page is a SIGBUS, and the
/// guest changes shared pages under our feet.
pub struct Mapping {
    base: *mut u8,
    pub len: usize,
    pub ipa: u64,
}

// SAFETY: the mapping is plain shared memory; every access is a volatile
// access through a raw pointer, whichever thread makes it.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// The host address of `ipa`, which must be in the mapping.
    pub fn at(&self, ipa: u64) -> *mut u8 {
        let off = ipa.checked_sub(self.ipa).filter(|o| *o < self.len as u64).expect("IPA outside the mapping");
        // SAFETY: `off` is inside our mapping (checked above).
        unsafe { self.base.add(off as usize) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our mapping of `len` bytes, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// A vCPU fd with its run structure mapped. One thread runs it.
pub struct Vcpu {
    fd: OwnedFd,
    pub index: u32,
    run: NonNull<Run>,
    len: usize,
}

// SAFETY: the run structure is touched only through `&mut self` (run) or
// read whole-word (irq_exits); the fd is thread-safe.
unsafe impl Send for Vcpu {}

impl Vcpu {
    /// PKVM_RUN with `reply` to the last exit; the next exit, or EINTR
    /// (ErrorKind::Interrupted) when a signal came first.
    pub fn run(&mut self, reply: [u64; 4]) -> io::Result<Exit> {
        let run = self.run.as_ptr();
        // SAFETY: `run` is our live shared mapping of the run page; the
        // kernel touches it only during the ioctl below, on this thread.
        unsafe {
            for (k, v) in reply.into_iter().enumerate() {
                std::ptr::write_volatile(&raw mut (*run).reply[k], v);
            }
        }
        ioctl_val(&self.fd, RUN, 0)?;
        // SAFETY: as above; the ioctl has returned.
        unsafe {
            let reason = std::ptr::read_volatile(&raw const (*run).exit_reason);
            let x = std::ptr::read_volatile(&raw const (*run).exit);
            Ok(Exit { reason, x })
        }
    }

    /// The run structure's `exit_reason` as the last PKVM_RUN left it.
    pub fn exit_reason(&self) -> u64 {
        // SAFETY: our live mapping; a plain aligned word.
        unsafe { std::ptr::read_volatile(&raw const (*self.run.as_ptr()).exit_reason) }
    }

    /// IRQ exits the driver handled for this vCPU (it reruns the guest).
    pub fn irq_exits(&self) -> u64 {
        // SAFETY: our live mapping; a plain aligned word.
        unsafe { std::ptr::read_volatile(&raw const (*self.run.as_ptr()).irq_exits) }
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        // SAFETY: our mapping of `len` bytes, unmapped once.
        unsafe { libc::munmap(self.run.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A header's structures: name → (field, size in bytes).
    type Structs = BTreeMap<String, Vec<(String, usize)>>;

    /// `#define NAME VALUE` lines and `struct name { fields }` of pkvm.h.
    fn header() -> (BTreeMap<String, String>, Structs) {
        let h = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../kmod/pkvm.h")).unwrap();
        let mut defs = BTreeMap::new();
        let mut structs = BTreeMap::new();
        let mut cur: Option<(String, Vec<(String, usize)>)> = None;
        for l in h.lines().map(str::trim) {
            if let Some(d) = l.strip_prefix("#define ") {
                let mut it = d.splitn(2, char::is_whitespace);
                let (k, v) = (it.next().unwrap(), it.next().unwrap_or("").trim());
                defs.insert(k.to_string(), v.to_string());
            } else if let Some(s) = l.strip_prefix("struct ").and_then(|s| s.strip_suffix(" {")) {
                cur = Some((s.to_string(), Vec::new()));
            } else if l == "};" {
                let (n, f) = cur.take().unwrap();
                structs.insert(n, f);
            } else if let Some((_, fields)) = cur.as_mut() {
                let (ty, name) = l.trim_end_matches(';').split_once(' ').unwrap();
                let size = match ty {
                    "__u64" => 8,
                    "__u32" => 4,
                    t => panic!("type {t}"),
                };
                let (name, n) = match name.split_once('[') {
                    Some((n, c)) => (n, c.trim_end_matches(']').parse::<usize>().unwrap()),
                    None => (name, 1),
                };
                fields.push((name.to_string(), size * n));
            }
        }
        (defs, structs)
    }

    fn num(s: &str) -> u64 {
        match s.strip_prefix("0x").or(s.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16).unwrap(),
            None => s.parse().unwrap(),
        }
    }

    /// The request number `_IO*(PKVMIO, nr[, struct x])` as the kernel's
    /// generic ioctl encoding computes it.
    fn request(def: &str, structs: &Structs) -> u64 {
        let (mac, args) = def.split_once('(').unwrap();
        let args: Vec<&str> = args.trim_end_matches(')').split(',').map(str::trim).collect();
        assert_eq!(args[0], "PKVMIO");
        let size = args.get(2).map_or(0, |s| structs[s.strip_prefix("struct ").unwrap()].iter().map(|f| f.1).sum());
        let dir = match mac {
            "_IO" => NONE,
            "_IOW" => WRITE,
            "_IOR" => READ,
            "_IOWR" => READ_WRITE,
            m => panic!("{m}"),
        };
        ioc(dir, num(args[1]), size)
    }

    #[test]
    fn numbers_match_the_header() {
        let (d, s) = header();
        assert_eq!(num(&d["PKVMIO"]), PKVMIO);
        assert_eq!(num(&d["PKVM_API_VERSION"]), API_VERSION as u64);
        for (name, ours) in [
            ("PKVM_GET_API_VERSION", GET_API_VERSION),
            ("PKVM_CREATE_VM", CREATE_VM),
            ("PKVM_TRACE_DRAIN", TRACE_DRAIN),
            ("PKVM_CREATE_MEMORY", CREATE_MEMORY),
            ("PKVM_CREATE_VCPU", CREATE_VCPU),
            ("PKVM_PIN", PIN),
            ("PKVM_UNPIN", UNPIN),
            ("PKVM_PAGE_STATE", PAGE_STATE),
            ("PKVM_VM_STATS", VM_STATS),
            ("PKVM_IRQ", IRQ),
            ("PKVM_RUN", RUN),
            ("PKVM_MEM_PIN", MEM_PIN),
            ("PKVM_MEM_UNPIN", MEM_UNPIN),
            ("PKVM_MEM_INFO", MEM_INFO),
        ] {
            assert_eq!(request(&d[name], &s), ours, "{name}");
        }
        assert_eq!(num(&d["PKVM_VCPU_OFF"]), VCPU_OFF as u64);
        assert_eq!(num(&d["PKVM_PIN_EXCLUSIVE"]), PIN_EXCLUSIVE as u64);
        assert_eq!(num(&d["PKVM_MEM_PIN_EXCLUSIVE"]), MEM_PIN_EXCLUSIVE as u64);
        assert_eq!(num(&d["PKVM_EXIT_INTR"]), EXIT_INTR);
        use hyp_abi::host::irq;
        for (name, ours) in [
            ("CONFIGURE", irq::CONFIGURE),
            ("LINE", irq::LINE),
            ("PULSE", irq::PULSE),
            ("STATE", irq::STATE),
            ("CLEAR", irq::CLEAR),
        ] {
            assert_eq!(num(&d[&format!("PKVM_IRQ_{name}")]), ours, "{name}");
        }
        use hyp_abi::host::exit;
        for (name, ours) in [
            ("MMIO", exit::MMIO),
            ("HYPERCALL", exit::HYPERCALL),
            ("SYSTEM_OFF", exit::SYSTEM_OFF),
            ("SYSTEM_RESET", exit::SYSTEM_RESET),
            ("GUEST_ABORT", exit::GUEST_ABORT),
            ("UNSHARE_PENDING", exit::UNSHARE_PENDING),
            ("GUEST_FATAL", exit::GUEST_FATAL),
            ("WFI", exit::WFI),
            ("CPU_ON", exit::CPU_ON),
            ("CPU_OFF", exit::CPU_OFF),
            ("SGI", exit::SGI),
        ] {
            assert_eq!(num(&d[&format!("PKVM_EXIT_{name}")]), ours, "{name}");
        }
    }

    /// Field by field, the header's layout is ours (names, offsets, sizes).
    #[test]
    fn layouts_match_the_header() {
        use std::mem::offset_of;
        let (_, s) = header();
        macro_rules! check {
            ($c:literal, $t:ty, [$($f:ident),*]) => {{
                let fields = &s[$c];
                let ours: Vec<(String, usize, usize)> = vec![$((stringify!($f).to_string(), offset_of!($t, $f), {
                    // SAFETY: every field is an integer or an array of
                    // them: all zeros is a valid value.
                    let v: $t = unsafe { std::mem::zeroed() };
                    std::mem::size_of_val(&v.$f)
                })),*];
                let mut off = 0;
                let theirs: Vec<(String, usize, usize)> =
                    fields.iter().map(|(n, sz)| { let o = off; off += sz; (n.clone(), o, *sz) }).collect();
                assert_eq!(ours, theirs, "struct {}", $c);
                assert_eq!(size_of::<$t>(), off, "struct {} size", $c);
            }};
        }
        check!("pkvm_memory", MemoryArgs, [ipa, size, flags]);
        check!("pkvm_vcpu_init", VcpuInit, [pc, x0, flags, index]);
        check!("pkvm_pin", PinArgs, [ipa, flags, pad]);
        check!("pkvm_page_state", PageState, [ipa, state, pins]);
        check!("pkvm_vm_stats", VmStats, [ipa, table_pages, level, state, shares, unshares, guards, granules]);
        check!("pkvm_irq", IrqArgs, [vcpu, intid, op, pad, arg, pending, active]);
        check!("pkvm_run", Run, [exit_reason, exit, reply, irq_exits]);
        check!("pkvm_mem_pin", MemPin, [offset, flags, pad]);
        check!("pkvm_trace", TraceArgs, [buf, size, records, lost]);
        check!(
            "pkvm_mem_info",
            MemInfo,
            [size, blocks, whole_blocks, split_blocks, mapped, pins, waiting, faults, refused, conversions, wait_ns]
        );
    }
}
