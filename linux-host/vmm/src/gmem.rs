//! `pkvm-vmm --gmem-test GUEST`: the memory file's rules (guest_memfd
//! semantics, docs/guest-memfd.md) checked with a real process, real GUP
//! pins and real conversions. The guest (guest-test's `test=remote`) does
//! what this program tells it through `HOST_NEXT`; this program maps the
//! guest's memory file and checks each rule from the host's side, one
//! `gmem: ...` line per rule (`gmem: FAIL ...` when it does not hold).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::Duration;

use hyp_abi::services::remote as cmd;
use hyp_abi::trace::{Kind, Record, RECORD_SIZE};
use vmm_devices::dtb::guest_dtb;
use vmm_devices::loader::ElfPlan;
use vmm_devices::platform::{Platform, GUEST_RAM};

use crate::machine::{Machine, Remote};
use crate::pkvm::{Device, Mapping, Memory, Vm};
use crate::refs::{self, Ring, Spliced};
use crate::{load, seams};

mod check;
mod others;
use check::{Tally, BLOCK, HOLD, PAGE};
pub use others::kill_child;
use others::{killed, other_vm_runs};

const MEM: u64 = 64 << 20;
/// Page `page` of 2 MiB block `n` of guest RAM.
const fn at(n: u64, page: u64) -> u64 {
    GUEST_RAM + n * BLOCK + page * PAGE
}
/// Where each check works (blocks the guest's image does not use).
const IMAGE: u64 = at(10, 0);
const IMAGE_LEN: usize = 64 << 10;
const PRE: u64 = at(11, 0);
const SPLIT: u64 = at(12, 5);
const COUNTER: u64 = at(13, 0);
const URING: u64 = at(14, 3);
const SPLICE: u64 = at(15, 7);
const EXCL: u64 = at(16, 9);
const RACE: u64 = at(17, 1);
const DIRECT: u64 = at(18, 2);
/// Conversions raced with GUP pins.
const RACES: u32 = 1000;
/// The null_blk device the host's /init makes (a read completes after
/// 500 ms), for the O_DIRECT check.
const NULLB: &str = "/dev/nullb0";

/// The guest's side of the conversation: the vCPU thread hands the
/// guest's result over and waits for the next command.
struct Link {
    to_ctl: Mutex<Sender<[u64; 3]>>,
    from_ctl: Mutex<Receiver<[u64; 4]>>,
}

impl Remote for Link {
    fn next(&self, result: [u64; 3]) -> [u64; 4] {
        let _ = self.to_ctl.lock().map(|t| t.send(result));
        // The test program gone: power off.
        self.from_ctl.lock().ok().and_then(|r| r.recv().ok()).unwrap_or([cmd::OFF, 0, 0, 0])
    }
}

/// This program's side.
struct Guest {
    tx: Sender<[u64; 4]>,
    rx: Receiver<[u64; 3]>,
}

impl Guest {
    fn send(&self, c: u64, a1: u64, a2: u64) {
        let _ = self.tx.send([c, a1, a2, 0]);
    }
    /// The guest's result, within `d`: None if it has not answered.
    fn poll(&self, d: Duration) -> Result<Option<[u64; 3]>, String> {
        match self.rx.recv_timeout(d) {
            Ok(r) => Ok(Some(r)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err("the guest stopped".into()),
        }
    }
    fn wait(&self) -> Result<[u64; 3], String> {
        self.poll(Duration::from_secs(120))?.ok_or_else(|| "no answer from the guest in 120 s (a deadlock?)".into())
    }
    fn call(&self, c: u64, a1: u64, a2: u64) -> Result<[u64; 3], String> {
        self.send(c, a1, a2);
        self.wait()
    }
    fn share(&self, ipa: u64) -> Result<u64, String> {
        Ok(self.call(cmd::SHARE, ipa, 0)?[0])
    }
    fn read(&self, ipa: u64) -> Result<u64, String> {
        Ok(self.call(cmd::READ, ipa, 0)?[1])
    }
}

/// The hyp's split and merge records of every CPU's trace ring (drained
/// with the calling thread on each CPU in turn), oldest first.
fn trace(dev: &Device) -> Result<Vec<Record>, String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut recs = Vec::new();
    let mut buf = vec![0u8; 256 * RECORD_SIZE];
    for cpu in 0..=cpus {
        // SAFETY: a cpu_set_t we own, filled by the libc helpers; the
        // last round (cpu == cpus) gives the thread every CPU back.
        let set = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for c in 0..cpus {
                if cpu == cpus || c == cpu {
                    libc::CPU_SET(c, &mut set);
                }
            }
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
        };
        if set != 0 {
            return Err(format!("sched_setaffinity: {}", std::io::Error::last_os_error()));
        }
        if cpu == cpus {
            break;
        }
        loop {
            let (n, _) = dev.trace_drain(&mut buf).map_err(|e| format!("PKVM_TRACE_DRAIN: {e}"))?;
            recs.extend(buf.chunks(RECORD_SIZE).take(n).filter_map(Record::from_bytes));
            if n < 256 {
                break;
            }
        }
    }
    recs.retain(|r| matches!(r.kind(), Some(Kind::Split | Kind::Merge)));
    recs.sort_by_key(|r| r.ts);
    Ok(recs)
}

/// Milliseconds an UNSHARE's result says the guest waited.
fn waited_ms(r: [u64; 3]) -> u64 {
    r[1].saturating_mul(1000) / r[2].max(1)
}

fn image() -> Vec<u8> {
    (0..IMAGE_LEN).map(|i| (i as u8).wrapping_mul(31) ^ (i >> 9) as u8).collect()
}

/// Runs the memory-file test with the guest-test ELF at `path`; true if
/// every check held.
pub fn run(dev: &Device, path: &str) -> Result<bool, String> {
    refs::install().map_err(|e| format!("SIGBUS handler: {e}"))?;
    let vm = dev.create_vm().map_err(|e| format!("PKVM_CREATE_VM: {e}"))?;
    let mem = vm.create_memory(GUEST_RAM, MEM).map_err(|e| format!("PKVM_CREATE_MEMORY: {e}"))?;
    let elf = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let plan = ElfPlan::new(&elf, MEM, 2).map_err(|e| format!("{path}: {e}"))?;
    let dtb = guest_dtb(MEM, "test=remote", 2, None, None);
    load::load_elf(&mem, &plan, &elf, &dtb).map_err(|e| format!("loading {path}: {e}"))?;
    let map = mem.map().map_err(|e| format!("mmap of the memory file: {e}"))?;
    let mut t = Tally { failed: 0, sigbus: 0 };
    before_run(&mut t, &mem, &map)?;
    let vcpus = (0..2)
        .map(|i| vm.create_vcpu(plan.entry, GUEST_RAM, i > 0).map_err(|e| format!("PKVM_CREATE_VCPU: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let (to_ctl, rx) = channel();
    let (tx, from_ctl) = channel();
    let link = Link { to_ctl: Mutex::new(to_ctl), from_ctl: Mutex::new(from_ctl) };
    let guest = Guest { tx, rx };
    let platform = Platform::new(seams::VmIrq(&vm), 2, None);
    let out = std::thread::scope(|s| {
        let machine = s.spawn(|| Machine::new(1, &vm, &mem, platform).with_remote(&link).run(vcpus));
        let r = guest.wait().and_then(|_| script(&mut t, dev, &guest, &vm, &mem, &map));
        if let Err(e) = &r {
            t.check(false, "the test ran to its end", e);
        }
        guest.send(cmd::OFF, 0, 0);
        machine.join()
    });
    let out = out.map_err(|_| "a vCPU thread panicked".to_string())?;
    if let Err(e) = &out.end {
        t.check(false, "the guest powered off", e);
    }
    let caught = refs::sigbus_count();
    t.check(
        caught == t.sigbus,
        &format!("{caught} SIGBUS, each one a check expected"),
        format!("expected {}", t.sigbus),
    );
    drop((map, mem, vm));
    let held = |w: &str| std::fs::read_to_string(format!("/sys/class/misc/pkvm/{w}")).unwrap_or_default();
    println!(
        "gmem: the VM is destroyed: the driver holds {} pages of {} VMs",
        held("pages").trim(),
        held("vms").trim()
    );
    println!("gmem: {} checks failed", t.failed);
    Ok(t.failed == 0)
}

/// Before the first run every page is the driver's: pwrite and a store
/// through the mapping both load the guest's memory.
fn before_run(t: &mut Tally, mem: &Memory, map: &Mapping) -> Result<(), String> {
    let info = mem.info().map_err(|e| format!("PKVM_MEM_INFO: {e}"))?;
    t.check(
        info.blocks == MEM / BLOCK && info.whole_blocks == MEM / BLOCK && info.split_blocks == 0 && info.mapped == 0,
        "the memory file: 64 MiB in 32 blocks of 2 MiB, each one allocation, none split",
        format_args!("{info:?}"),
    );
    mem.write(IMAGE, &image()).map_err(|e| format!("pwrite of the image: {e}"))?;
    let ok =
        refs::store(map.at(PRE), 0x5052_455f_5255_4e21).is_ok() && refs::load(map.at(PRE)) == Ok(0x5052_455f_5255_4e21);
    t.check(ok, "before the first run, pwrite and a store through the mapping load the guest's memory", "SIGBUS");
    Ok(())
}

fn script(t: &mut Tally, dev: &Device, g: &Guest, vm: &Vm, mem: &Memory, map: &Mapping) -> Result<(), String> {
    let info = || mem.info().map_err(|e| format!("PKVM_MEM_INFO: {e}"));
    let level = |ipa| vm.stats(ipa).map(|s| (s.level, s.table_pages)).map_err(|e| format!("PKVM_VM_STATS: {e}"));

    // The image is the guest's now, intact and private.
    let digest = g.call(cmd::DIGEST, IMAGE, IMAGE_LEN as u64)?[1];
    t.check(digest == cmd::fnv1a(image()), "the guest reads the image the host wrote with pwrite", digest);
    let pre = g.read(PRE)?;
    t.check(pre == 0x5052_455f_5255_4e21, "the guest reads the host's store made through the mapping", pre);
    let (l, s) = (t.bus(refs::load(map.at(IMAGE))), t.bus(refs::store(map.at(IMAGE), 1)));
    let eperm = mem.read(IMAGE, &mut [0u8; 8]).map_err(|e| e.raw_os_error());
    let same = g.call(cmd::DIGEST, IMAGE, IMAGE_LEN as u64)?[1] == digest;
    t.check(
        l && s && eperm == Err(Some(libc::EPERM)) && same,
        "the image is private now: a load and a store through the mapping get SIGBUS, pread EPERM, the guest's bytes are unchanged",
        format_args!("load {l}, store {s}, pread {eperm:?}, unchanged {same}"),
    );
    let (lv, _) = level(IMAGE)?;
    t.check(lv == 2, "the guest's stage-2 maps the file's 2 MiB blocks as blocks (level 2)", lv);

    // One 4 KiB share in a block: one path splits, in place, and merges back.
    g.call(cmd::WRITE, SPLIT, 0x6775_6573_7421)?;
    // What the trace rings hold so far is not this check's.
    trace(dev)?;
    let (l0, tp0) = level(SPLIT)?;
    let st = g.share(SPLIT)?;
    let (l1, tp1) = level(SPLIT)?;
    t.check(
        st == 0 && l0 == 2 && l1 == 3 && tp1 == tp0 + 1,
        "MEM_SHARE of one 4 KiB page splits one block path: level 2 -> 3, one table page more",
        format_args!("status {st}, level {l0} -> {l1}, table pages {tp0} -> {tp1}"),
    );
    let v = refs::load(map.at(SPLIT));
    t.check(
        v == Ok(0x6775_6573_7421),
        "the host reads the guest's data through the mapping, in place",
        format_args!("{v:?}"),
    );
    refs::store(map.at(SPLIT), 0x686f_7374).map_err(|_| "SIGBUS storing to a shared page")?;
    let v = g.read(SPLIT)?;
    t.check(v == 0x686f_7374, "the guest reads the host's store", v);
    let i = info()?;
    t.check(
        i.mapped == 1 && i.split_blocks == 1 && i.blocks == MEM / BLOCK,
        "the file tracks the subpage: 1 page mapped, 1 block split in Linux's view, 32 blocks",
        format_args!("{i:?}"),
    );
    let r = g.call(cmd::UNSHARE, SPLIT, 0)?;
    let (l2, tp2) = level(SPLIT)?;
    t.check(
        r[0] == 0 && l2 == 2 && tp2 == tp0,
        "MEM_UNSHARE merges the block back: level 2, table pages as before",
        format_args!("status {}, level {l2}, table pages {tp2}", r[0]),
    );
    // The hyp's trace (`hyp.trace=splits hyp.trace_vm=1 hyp.trace_quiet`):
    // one split of the block's path, one merge back, nothing else.
    let recs = trace(dev)?;
    let block = SPLIT & !(BLOCK - 1);
    for r in &recs {
        println!("gmem: trace: {r}");
    }
    let shape: Vec<(Option<Kind>, u64, u8)> = recs.iter().map(|r| (r.kind(), r.ipa & !(BLOCK - 1), r.level)).collect();
    t.check(
        shape == [(Some(Kind::Split), block, 2), (Some(Kind::Merge), block, 2)],
        "the hyp's trace has one split of the block at level 2 and one merge back, nothing else",
        format_args!("{shape:?}"),
    );
    let bus = t.bus(refs::load(map.at(SPLIT)));
    let v = g.read(SPLIT)?;
    t.check(
        bus && v == 0x686f_7374,
        "afterwards the host's load gets SIGBUS and the guest still reads the host's bytes (in place)",
        v,
    );
    let i = info()?;
    t.check(
        i.mapped == 0 && i.split_blocks == 0 && i.conversions == 1,
        "the block is whole again: 0 pages mapped, 0 blocks split, 1 conversion",
        format_args!("{i:?}"),
    );

    // vCPU 1 counts in a shared page while conversions wait.
    let st = g.share(COUNTER)?;
    let on = g.call(cmd::COUNTER, COUNTER, 0)?[0];
    t.check(st == 0 && on == 0, "vCPU 1 counts in a shared page", format_args!("share {st}, CPU_ON {on}"));
    let counter = || refs::load(map.at(COUNTER)).unwrap_or(0);

    // A long-term GUP pin: an io_uring fixed buffer.
    g.share(URING)?;
    refs::store(map.at(URING), 0x0075_7269_6e67).map_err(|_| "SIGBUS storing to a shared page")?;
    let ring = Ring::new().map_err(|e| format!("io_uring_setup: {e}"))?;
    let reg = ring.register(map.at(URING), PAGE as usize);
    t.check(
        reg.is_ok(),
        "an io_uring fixed buffer is registered over a shared page of the mapping",
        format_args!("{reg:?}"),
    );
    held_back(t, (dev, g, mem, map), URING, "the io_uring buffer is registered", &counter, || {
        ring.unregister().map_err(|e| format!("unregistering: {e}"))
    })?;

    // A page in a pipe: vmsplice.
    g.share(SPLICE)?;
    refs::store(map.at(SPLICE), 0x7370_6c69_6365).map_err(|_| "SIGBUS storing to a shared page")?;
    let pipe = Spliced::new(map.at(SPLICE), PAGE as usize).map_err(|e| format!("vmsplice: {e}"))?;
    println!("gmem: vmsplice puts a shared page of the mapping into a pipe");
    let mut drained = Vec::new();
    held_back(t, (dev, g, mem, map), SPLICE, "a pipe holds the page", &counter, || {
        drained = pipe.drain().map_err(|e| format!("reading the pipe: {e}"))?;
        Ok(())
    })?;
    t.check(
        drained[..8] == 0x7370_6c69_6365u64.to_le_bytes(),
        "the pipe gave the host's bytes",
        format_args!("{:?}", &drained[..8]),
    );

    // An O_DIRECT read in flight into the page.
    if std::path::Path::new(NULLB).exists() {
        g.share(DIRECT)?;
        refs::store(map.at(DIRECT), 0x6469_7265_6374).map_err(|_| "SIGBUS storing to a shared page")?;
        let io = refs::direct_read(NULLB, map.at(DIRECT), PAGE as usize).map_err(|e| format!("{NULLB}: {e}"))?;
        // Let the read reach the device (it pins the page first).
        std::thread::sleep(Duration::from_millis(100));
        held_back(t, (dev, g, mem, map), DIRECT, "an O_DIRECT read is in flight", &counter, || match io.join() {
            Ok(Ok(n)) if n == PAGE as usize => Ok(()),
            Ok(r) => Err(format!("the O_DIRECT read: {r:?}")),
            Err(_) => Err("the O_DIRECT thread panicked".into()),
        })?;
    } else {
        t.check(false, "an O_DIRECT read in flight holds a conversion back", format_args!("no {NULLB}"));
    }

    exclusive(t, g, vm, mem, map)?;
    // vCPU 1 stops: the race below wants the host's CPUs.
    let n = g.call(cmd::STOP, 0, 0)?[1];
    let st = g.call(cmd::UNSHARE, COUNTER, 0)?[0];
    race(t, g, vm, map)?;
    killed(t)?;

    let i = info()?;
    // The blocks the host mapped a page of (PRE before the run, the
    // others while shared; IMAGE's faults were refused) are order-0 pages.
    let mapped_blocks = [PRE, SPLIT, COUNTER, URING, SPLICE, EXCL, RACE, DIRECT].len() as u64;
    t.check(
        n > 0 && st == 0 && i.split_blocks == 0 && i.mapped == 0 && i.waiting == 0 && i.blocks == MEM / BLOCK,
        "at the end no block is split in Linux's view: 32 blocks, 0 pages mapped, no conversion waiting",
        format_args!("count {n}, unshare {st}, {i:?}"),
    );
    t.check(
        i.whole_blocks == MEM / BLOCK - mapped_blocks,
        "the 8 blocks the host mapped a page of are 512 order-0 pages each, the other 24 still one allocation",
        format_args!("{} whole", i.whole_blocks),
    );
    println!(
        "gmem: the driver mapped {} pages on faults, refused {} faults and waited for {} conversions ({} ms in all)",
        i.faults,
        i.refused,
        i.conversions,
        i.wait_ns / 1_000_000
    );
    Ok(())
}

/// The guest's MEM_UNSHARE of `ipa` while `what` (a reference the host
/// holds on the page): it waits, the page faults no more, vCPU 1 runs on;
/// once `release` drops the reference the conversion completes, the
/// mapping gives SIGBUS and the guest reads the host's bytes.
fn held_back(
    t: &mut Tally,
    (dev, g, mem, map): (&Device, &Guest, &Memory, &Mapping),
    ipa: u64,
    what: &str,
    counter: &dyn Fn() -> u64,
    release: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let before = g.read(ipa)?;
    g.send(cmd::UNSHARE, ipa, 0);
    let early = g.poll(HOLD)?;
    let waiting = mem.info().map(|i| i.waiting).unwrap_or(0);
    let bus = t.bus(refs::load(map.at(ipa)));
    let c0 = counter();
    let other = other_vm_runs(dev);
    std::thread::sleep(Duration::from_millis(50));
    let c1 = counter();
    t.check(
        early.is_none() && waiting == 1 && bus && c1 > c0 && other == Ok(3),
        &format!(
            "while {what}, the guest's MEM_UNSHARE waits, a load of the page gets SIGBUS, vCPU 1 and another VM run on"
        ),
        format_args!("answered {early:?}, waiting {waiting}, SIGBUS {bus}, counter {c0} -> {c1}, other VM {other:?}"),
    );
    let released = release();
    let r = match early {
        Some(r) => r,
        None => g.wait()?,
    };
    released?;
    let bus = t.bus(refs::load(map.at(ipa)));
    let after = g.read(ipa)?;
    t.check(
        r[0] == 0 && waited_ms(r) >= HOLD.as_millis() as u64 && bus && after == before,
        &format!(
            "once that reference goes, the MEM_UNSHARE completes (the guest waited at least {} ms), the mapping gives SIGBUS, the guest reads the host's bytes",
            HOLD.as_millis()
        ),
        format_args!("status {}, waited {} ms, SIGBUS {bus}, {before:#x} -> {after:#x}", r[0], waited_ms(r)),
    );
    Ok(())
}

/// An exclusive pin through the file: refused while another reference
/// exists; while held, nobody else pins or maps the page and the guest's
/// conversion waits for it.
fn exclusive(t: &mut Tally, g: &Guest, vm: &Vm, mem: &Memory, map: &Mapping) -> Result<(), String> {
    let err = |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error()).unwrap_or(0);
    g.share(EXCL)?;
    refs::store(map.at(EXCL), 0x6578_636c).map_err(|_| "SIGBUS storing to a shared page")?;
    let pipe = Spliced::new(map.at(EXCL), PAGE as usize).map_err(|e| format!("vmsplice: {e}"))?;
    let busy = err(mem.pin(EXCL, true));
    pipe.drain().map_err(|e| format!("reading the pipe: {e}"))?;
    let ok = mem.pin(EXCL, true);
    t.check(
        busy == libc::EBUSY && ok.is_ok(),
        "an exclusive pin through the file is refused (EBUSY) while a pipe holds the page, granted once it does not",
        format_args!("{busy}, then {ok:?}"),
    );
    let (second, vm_pin) = (err(mem.pin(EXCL, false)), err(vm.pin(EXCL, false)));
    let bus = t.bus(refs::load(map.at(EXCL)));
    t.check(
        second == libc::EBUSY && vm_pin == libc::EBUSY && bus,
        "while it is held, a second pin through the file or the VM gets EBUSY and a load through the mapping SIGBUS",
        format_args!("file {second}, VM {vm_pin}, SIGBUS {bus}"),
    );
    g.send(cmd::UNSHARE, EXCL, 0);
    let early = g.poll(HOLD)?;
    let pins = mem.info().map(|i| (i.pins, i.waiting)).unwrap_or_default();
    let unpin = mem.unpin(EXCL);
    let r = match early {
        Some(r) => r,
        None => g.wait()?,
    };
    t.check(
        early.is_none() && pins == (1, 1) && unpin.is_ok() && r[0] == 0 && waited_ms(r) >= HOLD.as_millis() as u64,
        "the guest's MEM_UNSHARE waits for the exclusive pin and completes once it is dropped",
        format_args!(
            "answered {early:?}, pins/waiting {pins:?}, unpin {unpin:?}, status {}, waited {} ms",
            r[0],
            waited_ms(r)
        ),
    );
    Ok(())
}

/// Conversions racing with io_uring registrations (GUP pins) from another
/// thread: whenever a registration holds the page, the hyp says it is
/// shared with the host and pinned; every conversion completes.
fn race(t: &mut Tally, g: &Guest, vm: &Vm, map: &Mapping) -> Result<(), String> {
    let stop = AtomicBool::new(false);
    let (pinned, refused, bad) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let ring = Ring::new().map_err(|e| format!("io_uring_setup: {e}"))?;
    let (mut done, mut waited) = (0u32, 0u32);
    let t0 = std::time::Instant::now();
    let r: Result<(), String> = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(SeqCst) {
                if ring.register(map.at(RACE), PAGE as usize).is_err() {
                    refused.fetch_add(1, SeqCst);
                    std::thread::sleep(Duration::from_micros(100));
                    continue;
                }
                pinned.fetch_add(1, SeqCst);
                // The pin is held: the page must be shared with the host
                // (state 3) and pinned, now and a moment later.
                for _ in 0..2 {
                    if !matches!(vm.page_state(RACE), Ok((3, p)) if p > 0) {
                        bad.fetch_add(1, SeqCst);
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                let _ = ring.unregister();
            }
        });
        let r = (|| {
            for _ in 0..RACES {
                g.share(RACE)?;
                let r = g.call(cmd::UNSHARE, RACE, 0)?;
                if r[0] != 0 {
                    return Err(format!("MEM_UNSHARE {}", r[0] as i64));
                }
                waited += (r[1] > r[2] / 1000) as u32;
                done += 1;
            }
            Ok(())
        })();
        stop.store(true, SeqCst);
        r
    });
    let (p, f, b) = (pinned.load(SeqCst), refused.load(SeqCst), bad.load(SeqCst));
    t.check(
        r.is_ok() && done == RACES && b == 0 && p > 0,
        &format!(
            "{RACES} conversions raced with io_uring registrations from another thread: each completed, and every registration saw a shared, pinned page"
        ),
        format_args!("{r:?}, {done} done, {b} bad states, {p} registrations"),
    );
    println!(
        "gmem: race: {p} registrations held the page, {f} were refused, {waited} conversions waited over 1 ms, in {} s",
        t0.elapsed().as_secs()
    );
    Ok(())
}
