//! The SMMUv3, owned by the hyp: every host stream translates through the
//! host's DMA view (a stage-2 the core keeps in step with ownership and
//! pins, `HostMm::dma`), streams the stream table does not cover abort, and
//! with the SMMU disabled (before boot reaches it) global bypass aborts too.
//! The host never sees the SMMU: its node is left out of the host's DTB and
//! its MMIO is not the host's (an access gets an abort).
//!
//! The command queue carries the TLB invalidations the core asks for
//! (`MmEnv::tlbi_ipa` / `tlbi_vmid` on the DMA view): each is followed by a
//! CMD_SYNC, and the call waits for the SYNC to be consumed, so when a
//! transition returns no device can still use a removed translation. The
//! event queue is drained into trace records ([`drain_events`], its caller
//! records them). Tables and
//! queues come from the hyp's pool; if the SMMU is not coherent
//! (SMMU_IDR0.COHACC = 0) they are cleaned to the point of coherency after
//! every write and event records invalidated before they are read.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aarch64_cpu::asm::barrier;
use spin::Mutex;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

use hyp_core::mm::PAGE_SIZE;
use hyp_core::smmu_format::{self as s, idr0, Event, Queue, S2Context, CMD_BYTES, EVT_BYTES, STE_BYTES};

use crate::arch::aarch64::tlb;
use crate::pool;

register_structs! {
    /// Page 0 of the SMMU's register file.
    Regs {
        (0x00 => idr0: ReadOnly<u32>),
        (0x04 => idr1: ReadOnly<u32>),
        (0x08 => _idr2),
        (0x0c => idr3: ReadOnly<u32>),
        (0x10 => _idr4),
        (0x14 => idr5: ReadOnly<u32>),
        (0x18 => _iidr_aidr),
        (0x20 => cr0: ReadWrite<u32>),
        (0x24 => cr0ack: ReadOnly<u32>),
        (0x28 => cr1: ReadWrite<u32>),
        (0x2c => cr2: ReadWrite<u32>),
        (0x30 => _reserved0),
        (0x44 => gbpa: ReadWrite<u32>),
        (0x48 => _reserved1),
        (0x50 => irq_ctrl: ReadWrite<u32>),
        (0x54 => irq_ctrlack: ReadOnly<u32>),
        (0x58 => _reserved2),
        (0x60 => gerror: ReadOnly<u32>),
        (0x64 => _gerrorn: ReadWrite<u32>),
        (0x68 => _reserved3),
        (0x80 => strtab_base: ReadWrite<u64>),
        (0x88 => strtab_base_cfg: ReadWrite<u32>),
        (0x8c => _reserved4),
        (0x90 => cmdq_base: ReadWrite<u64>),
        (0x98 => cmdq_prod: ReadWrite<u32>),
        (0x9c => cmdq_cons: ReadWrite<u32>),
        (0xa0 => eventq_base: ReadWrite<u64>),
        (0xa8 => @END),
    }
}

register_structs! {
    /// Page 1 (base + 64 KiB): the event queue's indices.
    Page1 {
        (0x00 => _reserved0),
        (0xa8 => eventq_prod: ReadWrite<u32>),
        (0xac => eventq_cons: ReadWrite<u32>),
        (0xb0 => @END),
    }
}

/// The MMIO the SMMU's register file spans (two 64 KiB pages).
pub const MMIO_SIZE: u64 = 0x2_0000;

const CR0_SMMUEN: u32 = 1 << 0;
const CR0_EVENTQEN: u32 = 1 << 2;
const CR0_CMDQEN: u32 = 1 << 3;
/// CR1: queues and tables write-back cacheable, inner shareable.
const CR1_WB_ISH: u32 = 1 | 1 << 2 | 3 << 4 | 1 << 6 | 1 << 8 | 3 << 10;
/// CR2.RECINVSID: record events for stream IDs beyond the table.
const CR2_RECINVSID: u32 = 1 << 1;
const GBPA_UPDATE: u32 = 1 << 31;
const GBPA_ABORT: u32 = 1 << 20;
/// Read/write-allocate hints in the *_BASE registers.
const BASE_RA: u64 = 1 << 62;
/// CMDQ_CONS.ERR [30:24].
const CONS_ERR: u32 = 0x7f << 24;
/// EVENTQ_PROD.OVFLG / EVENTQ_CONS.OVACKFLG.
const OVFLG: u32 = 1 << 31;

/// Stream table entries: 2^8, the 256 requester IDs of PCIe bus 0 (all of
/// QEMU virt's devices without bridges); other streams abort.
const STRTAB_LOG2: u32 = 8;
const CMDQ_LOG2: u32 = 8;
const EVTQ_LOG2: u32 = 7;
/// Polls of a register before the SMMU is declared stuck.
const SPIN_LIMIT: u32 = 10_000_000;

struct Smmu {
    regs: &'static Regs,
    page1: &'static Page1,
    coherent: bool,
    vmid: u16,
    cmdq: u64,
    cmdq_q: Queue,
    evtq: u64,
    evtq_q: Queue,
    streams: u32,
    /// A batch is open ([`batch`]): invalidations are queued without a
    /// CMD_SYNC each; `unsynced` when one was since the last SYNC.
    batching: bool,
    unsynced: bool,
}

// SAFETY: the register blocks are MMIO only ever touched with the SMMU
// lock held; pool addresses are plain integers.
unsafe impl Send for Smmu {}

static SMMU: Mutex<Option<Smmu>> = Mutex::new(None);
/// Set at boot when the SMMU cannot snoop the caches: table writes must be
/// cleaned to the point of coherency (`MmEnv` does it).
static NONCOHERENT: AtomicBool = AtomicBool::new(false);
/// Events drained since boot, and the last one (stream, address, id | read << 8).
pub static EVENTS: AtomicU64 = AtomicU64::new(0);
static LAST: Mutex<Option<Event>> = Mutex::new(None);
/// Event queue overflows seen since boot (SMMU_EVENTQ_PROD.OVFLG toggled:
/// records were lost).
pub static OVERFLOWS: AtomicU64 = AtomicU64::new(0);

/// Is an SMMU that cannot snoop the caches walking tables?
pub fn noncoherent() -> bool {
    NONCOHERENT.load(Ordering::Relaxed)
}

/// Cleans `[pa, pa + len)` to the point of coherency, for a non-coherent
/// SMMU (a pool page the hyp maps: no window needed).
pub fn clean_poc(pa: u64, len: u64) {
    let line = tlb::dcache_line();
    let mut a = pa & !(line - 1);
    while a < pa + len {
        // SAFETY: cache maintenance by VA on pool memory the hyp maps
        // (identity); it changes no data.
        unsafe { core::arch::asm!("dc cvac, {0}", in(reg) a, options(nostack)) };
        a += line;
    }
    barrier::dsb(barrier::SY);
}

fn spin_until(mut f: impl FnMut() -> bool, what: &str) {
    for _ in 0..SPIN_LIMIT {
        if f() {
            return;
        }
        core::hint::spin_loop();
    }
    // Only the hyp programs the SMMU: a queue or register that never
    // completes is broken hardware (or a hyp bug), not anything a host or
    // guest did.
    panic!("SMMU: {what} did not complete");
}

/// Why the SMMU cannot be driven (printed with `{:?}` at the boot failure).
#[derive(Debug)]
#[allow(dead_code)] // the field is read through Debug only
pub enum InitError {
    NoStage2,
    NoAArch64Tables,
    No4K,
    /// The DMA view needs more input/output address bits than the SMMU has.
    TooWide(u8),
    NoMemory,
}

impl Smmu {
    fn write_cr0(&self, v: u32) {
        self.regs.cr0.set(v);
        spin_until(|| self.regs.cr0ack.get() == v, "CR0 update");
    }

    /// Appends `cmds` and a CMD_SYNC, then waits until the SMMU has
    /// consumed the SYNC: every command before it has completed.
    fn submit(&mut self, cmds: &[[u64; 2]]) {
        self.enqueue(cmds, true);
    }

    /// An invalidation: submitted, or inside a batch ([`batch`]) only
    /// queued (its completion is [`sync`]'s).
    fn invalidate(&mut self, cmd: [u64; 2]) {
        if self.batching {
            self.enqueue(&[cmd], false);
            self.unsynced = true;
        } else {
            self.submit(&[cmd]);
        }
    }

    /// Appends `cmds` (and a CMD_SYNC if `sync`) and publishes them; with
    /// the SYNC, waits until the SMMU has consumed it.
    fn enqueue(&mut self, cmds: &[[u64; 2]], sync: bool) {
        let q = self.cmdq_q;
        let mut prod = self.regs.cmdq_prod.get() & q.mask();
        let sync_cmd = s::cmd_sync();
        let tail: &[[u64; 2]] = if sync { core::slice::from_ref(&sync_cmd) } else { &[] };
        // Room for all of them (the usual case: the queue is drained by
        // every SYNC): no look at CONS per command.
        let roomy = q.free(prod, self.regs.cmdq_cons.get()) as usize >= cmds.len() + tail.len();
        for c in cmds.iter().chain(tail) {
            if !roomy {
                spin_until(|| !q.full(prod, self.regs.cmdq_cons.get()), "command queue space");
            }
            let slot = self.cmdq + (q.index(prod) * CMD_BYTES) as u64;
            // SAFETY: `slot` is an entry of the command queue, a pool page
            // only the hyp writes (the SMMU reads entries up to PROD only).
            unsafe {
                core::ptr::write_volatile(slot as *mut u64, c[0]);
                core::ptr::write_volatile((slot + 8) as *mut u64, c[1]);
            }
            if !self.coherent {
                clean_poc(slot, CMD_BYTES as u64);
            }
            prod = q.next(prod);
        }
        // The entries (and every table write before them) reach the SMMU
        // before it sees the new PROD.
        barrier::dsb(barrier::SY);
        self.regs.cmdq_prod.set(prod);
        if !sync {
            return;
        }
        spin_until(
            || {
                let cons = self.regs.cmdq_cons.get();
                if cons & CONS_ERR != 0 {
                    panic!("SMMU: command error {:#x} (CMDQ_CONS {cons:#x})", (cons & CONS_ERR) >> 24);
                }
                q.empty(prod, cons)
            },
            "CMD_SYNC",
        );
    }
}

/// What [`probe`] found.
pub struct Probe {
    base: u64,
    id0: u32,
    id1: u32,
    id5: u32,
    /// SMMU_IDR3.BBML = 2 ([`s::bbml2`]): the DMA view may hold valid
    /// blocks, split live (`Stage2::no_transient_faults`).
    pub bbml2: bool,
}

/// Reads the SMMU's ID registers and checks that the hyp can drive it with
/// a stage-2 of `ipa_bits`; records whether it is coherent, so that the
/// DMA view's tables are cleaned to the point of coherency from the first
/// one on (before [`init`] hands them to it).
pub fn probe(base: u64, ipa_bits: u8) -> Result<Probe, InitError> {
    // SAFETY: `base` is the SMMU's register file from the DTB, mapped as
    // device memory at EL2 (identity) and given to no one else.
    let regs = unsafe { &*(base as *const Regs) };
    let (id0, id1, id3, id5) = (regs.idr0.get(), regs.idr1.get(), regs.idr3.get(), regs.idr5.get());
    log::info!("SMMUv3 at {base:#x}: IDR0 {id0:#x} IDR1 {id1:#x} IDR3 {id3:#x} IDR5 {id5:#x}");
    if id0 & idr0::S2P == 0 {
        return Err(InitError::NoStage2);
    }
    if !idr0::ttf_aarch64(id0) {
        return Err(InitError::NoAArch64Tables);
    }
    if !s::gran4k(id5) {
        return Err(InitError::No4K);
    }
    if ipa_bits > s::oas_bits(id5) || ipa_bits > 48 {
        return Err(InitError::TooWide(s::oas_bits(id5)));
    }
    NONCOHERENT.store(id0 & idr0::COHACC == 0, Ordering::Relaxed);
    Ok(Probe { base, id0, id1, id5, bbml2: s::bbml2(id3) })
}

/// Takes the SMMU [`probe`] found: every stream of the table (bus 0)
/// translates through `ctx` (the DMA view), everything else aborts, faults
/// are recorded. The DMA view must be complete before this is called.
pub fn init(p: Probe, ctx: S2Context, ipa_bits: u8) -> Result<(), InitError> {
    let Probe { base, id0, id1, id5, .. } = p;
    // SAFETY: as in `probe`.
    let regs = unsafe { &*(base as *const Regs) };
    // SAFETY: as above, page 1.
    let page1 = unsafe { &*((base + 0x1_0000) as *const Page1) };
    // S2PS: the SMMU's whole output range (OAS, same encoding).
    let ctx = S2Context { ps: (id5 & 7) as u8, ..ctx };
    let coherent = id0 & idr0::COHACC != 0;
    // SIDSIZE [5:0], CMDQS [25:21], EVENTQS [20:16].
    let st_log2 = STRTAB_LOG2.min(id1 & 0x3f);
    let cmdq_q = Queue { log2: CMDQ_LOG2.min((id1 >> 21) & 0x1f) };
    let evtq_q = Queue { log2: EVTQ_LOG2.min((id1 >> 16) & 0x1f) };

    let pages = |bytes: usize| (bytes as u64).div_ceil(PAGE_SIZE) as usize;
    let st_bytes = STE_BYTES << st_log2;
    let strtab = pool::alloc_pages(pages(st_bytes)).ok_or(InitError::NoMemory)?;
    let cmdq = pool::alloc_pages(pages(CMD_BYTES << cmdq_q.log2)).ok_or(InitError::NoMemory)?;
    let evtq = pool::alloc_pages(pages(EVT_BYTES << evtq_q.log2)).ok_or(InitError::NoMemory)?;

    let mut smmu = Smmu {
        regs,
        page1,
        coherent,
        vmid: ctx.vmid,
        cmdq,
        cmdq_q,
        evtq,
        evtq_q,
        streams: 1 << st_log2,
        batching: false,
        unsynced: false,
    };
    // Off, and aborting whatever arrives while it is off.
    smmu.write_cr0(0);
    regs.gbpa.set(GBPA_UPDATE | GBPA_ABORT);
    spin_until(|| regs.gbpa.get() & GBPA_UPDATE == 0, "GBPA update");

    let ste = s::ste_s2(&ctx);
    for sid in 0..smmu.streams as u64 {
        let e = strtab + sid * STE_BYTES as u64;
        for (i, d) in ste.iter().enumerate() {
            // SAFETY: entry `sid` of the stream table, a pool allocation of
            // `streams` entries the SMMU does not use yet.
            unsafe { core::ptr::write_volatile((e + 8 * i as u64) as *mut u64, *d) };
        }
    }
    if !coherent {
        clean_poc(strtab, st_bytes as u64);
        clean_poc(evtq, (EVT_BYTES << evtq_q.log2) as u64);
    }
    barrier::dsb(barrier::SY);
    regs.cr1.set(if coherent { CR1_WB_ISH } else { 0 });
    regs.cr2.set(CR2_RECINVSID);
    regs.irq_ctrl.set(0);
    spin_until(|| regs.irq_ctrlack.get() == 0, "IRQ_CTRL update");
    regs.strtab_base.set(strtab | BASE_RA);
    regs.strtab_base_cfg.set(st_log2);
    regs.cmdq_base.set(cmdq | BASE_RA | cmdq_q.log2 as u64);
    regs.cmdq_prod.set(0);
    regs.cmdq_cons.set(0);
    regs.eventq_base.set(evtq | BASE_RA | evtq_q.log2 as u64);
    page1.eventq_prod.set(0);
    page1.eventq_cons.set(0);
    smmu.write_cr0(CR0_CMDQEN | CR0_EVENTQEN);
    // Nothing cached from before (firmware, a previous boot) survives.
    smmu.submit(&[s::cmd_cfgi_all(), s::cmd_tlbi_nsnh_all()]);
    smmu.write_cr0(CR0_CMDQEN | CR0_EVENTQEN | CR0_SMMUEN);
    log::info!(
        "SMMUv3: {} streams -> DMA view (VMID {}, {} bit, root {:#x}), {}coherent, GBPA abort, SMMUEN",
        smmu.streams,
        ctx.vmid,
        ipa_bits,
        ctx.root,
        if coherent { "" } else { "non-" }
    );
    *SMMU.lock() = Some(smmu);
    Ok(())
}

/// Invalidates the SMMU's stage-2 TLB entries of `vmid` for `ipa` and waits
/// for completion (CMD_TLBI_S2_IPA, CMD_SYNC). Out of line, as
/// `tlbi_vmid`: inlined into `hyp_env`'s TLBI, the lock made the CPUs' path
/// there (every stage-2 TLBI) set up a stack frame.
#[inline(never)]
pub fn tlbi_ipa(vmid: u16, ipa: u64) {
    if let Some(s) = SMMU.lock().as_mut() {
        debug_assert_eq!(vmid, s.vmid);
        s.invalidate(s::cmd_tlbi_s2_ipa(vmid, ipa));
    }
}

/// Invalidates every SMMU TLB entry of `vmid` and waits (CMD_TLBI_S12_VMALL,
/// CMD_SYNC).
#[inline(never)]
pub fn tlbi_vmid(vmid: u16) {
    if let Some(s) = SMMU.lock().as_mut() {
        s.invalidate(s::cmd_tlbi_s12_vmall(vmid));
    }
}

/// Opens a batch: [`tlbi_ipa`] and [`tlbi_vmid`] queue their invalidation
/// without a CMD_SYNC each until [`sync`]. The caller holds the host's
/// lock (every change of the DMA view does) and calls [`sync`] before it
/// lets go of it: nobody relies on the pages being unreachable before.
pub fn batch() {
    if let Some(s) = SMMU.lock().as_mut() {
        s.batching = true;
    }
}

/// Ends a batch: one CMD_SYNC, waited for, completes every invalidation
/// queued since [`batch`] (none queued: nothing to wait for).
pub fn sync() {
    if let Some(s) = SMMU.lock().as_mut() {
        if s.unsynced {
            s.enqueue(&[], true);
        }
        s.batching = false;
        s.unsynced = false;
    }
}

/// Takes every pending event record off the event queue, hands each to
/// `record` (the caller traces it: kind `dma`) and counts it; returns how
/// many there were. Called on the host's calls that look at DMA faults
/// (`DMA_EVENTS`, `TRACE_DRAIN`).
pub fn drain_events(mut record: impl FnMut(&Event)) -> u64 {
    let mut guard = SMMU.lock();
    let Some(s) = guard.as_mut() else { return 0 };
    let q = s.evtq_q;
    let prod_reg = s.page1.eventq_prod.get();
    // The records up to PROD are in memory before the SMMU makes PROD
    // visible; no read of them may be satisfied before this read of PROD
    // (a speculative read could see a stale record): a load barrier of
    // the outer-shareable domain the SMMU observes in (Linux: __iormb).
    barrier::dmb(barrier::OSHLD);
    let prod = prod_reg & q.mask();
    let cons_reg = s.page1.eventq_cons.get();
    let mut cons = cons_reg & q.mask();
    if s::evtq_overflowed(prod_reg, cons_reg) {
        // Records were lost since the last acknowledgement: counted (and
        // reported by DMA_EVENTS), acknowledged with the CONS write below.
        OVERFLOWS.fetch_add(1, Ordering::Relaxed);
        log::warn!("SMMUv3: event queue overflowed, records lost");
    }
    let mut n = 0;
    while !q.empty(prod, cons) {
        let slot = s.evtq + (q.index(cons) * EVT_BYTES) as u64;
        if !s.coherent {
            // The SMMU wrote the record to memory: drop any stale line.
            let line = tlb::dcache_line();
            let mut a = slot & !(line - 1);
            while a < slot + EVT_BYTES as u64 {
                // SAFETY: cache maintenance on a pool page the hyp maps.
                unsafe { core::arch::asm!("dc ivac, {0}", in(reg) a, options(nostack)) };
                a += line;
            }
            barrier::dsb(barrier::SY);
        }
        let mut r = [0u64; 4];
        for (i, w) in r.iter_mut().enumerate() {
            // SAFETY: a record of the event queue (pool memory) between CONS
            // and PROD: the SMMU has finished writing it.
            *w = unsafe { core::ptr::read_volatile((slot + 8 * i as u64) as *const u64) };
        }
        let e = Event::decode(&r);
        record(&e);
        *LAST.lock() = Some(e);
        n += 1;
        cons = q.next(cons);
    }
    // Every read of the records completes before CONS frees their slots
    // to the SMMU (Linux: __iomb, a full barrier of the outer-shareable
    // domain). Consumed; an overflow is acknowledged (OVACKFLG = OVFLG).
    barrier::dmb(barrier::OSH);
    s.page1.eventq_cons.set(cons | (prod_reg & OVFLG));
    let _ = s.regs.gerror.get();
    EVENTS.fetch_add(n, Ordering::Relaxed);
    n
}

/// The last event drained, if any.
pub fn last_event() -> Option<Event> {
    *LAST.lock()
}

/// Is there an SMMU the hyp drives?
pub fn present() -> bool {
    SMMU.lock().is_some()
}
