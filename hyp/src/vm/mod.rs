//! Guest VMs: the VM table, VM and vCPU lifecycle (host ABI), and the
//! stage-2 dump.
//!
//! Locks: the table lock only to find a VM; then host → hyp → VM, in that
//! order, for anything that touches two of them.

pub mod switch;

use alloc::sync::Arc;
use alloc::vec::Vec;

use hyp_core::ticket::{TicketGuard, TicketLock};
use spin::Mutex;

use hyp_abi::host as abi;
use hyp_core::mm::env::Vmid;
use hyp_core::mm::mem_protect::{host_guest, vm_tables};
use hyp_core::mm::mem_protect::{GuestMm, Ipa, Pa, Refused};
use hyp_core::mm::pgtable::Stage2;
use hyp_core::mm::prot::{Leaf, Owner, PageState};
use hyp_core::mm::{Error, PAGE_SIZE};
use hyp_core::vm::demand::Demand;
use hyp_core::vm::handles::Handles;

use crate::arch::aarch64::context::{self, Context};
use crate::arch::aarch64::tlb;
use crate::hyp_env::HypEnv;
use crate::owners::{self, HostLocked};
use crate::percpu::{PerCpu, VmSlot};
use crate::tracebuf::point;
use hyp_abi::trace::op;

pub const MAX_VCPUS: usize = 8;
/// First IPA of guest RAM: below it is the emulated device window (MMIO
/// exits to the host), as on QEMU `virt`.
pub const GUEST_RAM_BASE: u64 = hyp_core::vm::mmio_guard::WINDOW_END;
/// Guest IPA width.
pub const GUEST_IPA_BITS: u8 = 40;

/// What the next run of a vCPU must finish first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    None,
    /// An MMIO read: the host's value goes into x`srt`.
    MmioRead {
        srt: u8,
        size: u8,
        sign: bool,
        sf: bool,
        /// Length of the trapped instruction (2: a T16 one from AArch32 EL0).
        len: u8,
    },
    /// An MMIO write the host has seen (instruction length).
    MmioWrite {
        len: u8,
    },
    /// A hypercall forwarded to the host: its reply goes into x0, x1.
    Hypercall,
    /// An abort to inject at the faulting access.
    Abort {
        esr: u64,
        far: u64,
    },
}

pub struct Vcpu {
    /// Registers, saved while the vCPU is not running.
    pub ctx: Context,
    pub pending: Pending,
    pub running: bool,
    /// The guest powered off (or reset): it runs no more.
    pub stopped: bool,
    /// Its virtual interrupts (what the host asserted, what the hyp injects).
    pub irq: hyp_core::emul::vgic::State,
    /// Powered off (created so, or PSCI CPU_OFF): runs no more until the
    /// guest's CPU_ON.
    pub off: bool,
}

pub struct Vm {
    pub handle: u16,
    pub vmid: Vmid,
    pub mm: GuestMm,
    pub vcpus: Vec<Vcpu>,
    /// Destroy started: no more runs; pages are being reclaimed.
    pub dying: bool,
    /// A vCPU has run: the vCPU set is closed (as in pKVM, a protected VM's
    /// vCPUs are fixed before it first runs; the host cannot add one that
    /// starts wherever it likes in the guest's code).
    pub started: bool,
    pub vtcr: u64,
    /// The MMIO granules the guest guarded (MMIO_GUARD).
    pub guards: hyp_core::vm::mmio_guard::Guards,
    /// Successful MEM_SHARE / MEM_UNSHARE calls (VM_CALLS).
    pub shares: u64,
    pub unshares: u64,
    /// DONATE_GUEST was asked for an IPA below guest RAM (the MMIO window).
    /// Until then nothing is mapped there (DONATE_GUEST is the only way into
    /// a guest's stage-2), so a guest's fault in the window needs no walk
    /// to tell a stale TLB entry from an MMIO access.
    pub low_mapped: bool,
    /// A guest memory call was declined for want of this many table pages
    /// in the VM's memcache: its TOPUP exit says so (0: none).
    pub tables_short: u16,
}

/// Per VM slot (`handle & 0xff`), the guest memory the host donates on
/// demand (MEM_ON_DEMAND): a fault there on an IPA with no memory exits
/// `MEM_FAULT`. Kept apart from [`Vm`], whose layout the hot paths' code
/// depends on (a field more moved the 4K MEM_UNSHARE by +5 instructions).
/// Read and written only under the lock of the VM in that slot (or, at
/// VM_DESTROY, once it has left the table); empty while no VM has the
/// slot.
static DEMAND: Mutex<[Demand; 256]> = Mutex::new([Demand::NONE; 256]);

/// The on-demand range of `vm` (its lock held).
pub fn demand(vm: &Vm) -> Demand {
    DEMAND.lock()[vm.handle as usize & 0xff]
}

/// The VM whose vCPU runs on a CPU, kept in that CPU's [`VmSlot`] from its
/// VCPU_RUN to its exit: the guest's traps find it there without a lookup.
pub type OnCpu = Option<Arc<VmLock>>;

/// A VM behind its own lock: a ticket lock (FIFO, `hyp_core::ticket`), as
/// the host's. Its vCPUs take it on their own (every exit, MMIO access,
/// MMIO_GUARD) and the host's and the guest's memory calls take it while
/// they hold the host's lock: with a lock that let whichever CPU won the
/// race take it, a guest looping on its other vCPUs could keep a holder
/// of the host's lock, and everyone queued behind that, waiting without
/// bound (docs/isolation.md, "Fairness").
pub type VmLock = TicketLock<Vm>;

const _: () = assert!(size_of::<OnCpu>() == size_of::<VmSlot>() && align_of::<OnCpu>() == align_of::<VmSlot>());
// SAFETY: a `None` is a bit pattern (a null pointer) in a value that owns
// nothing; it is transmuted only to compare it with the slot's initial null.
const _: () = assert!(unsafe { core::mem::transmute::<OnCpu, usize>(None) } == 0);

/// The VM whose vCPU runs on `cpu` (`None` while the host runs there).
#[inline(always)]
pub fn on_cpu(cpu: &mut PerCpu) -> &mut OnCpu {
    // SAFETY: the slot is only ever used through here, as an `OnCpu`: same
    // size and alignment, and its initial null is `None` (both asserted
    // above); the borrow of `cpu` covers the one returned.
    unsafe { &mut *(core::ptr::addr_of_mut!(cpu.guest) as *mut OnCpu) }
}

/// Holds one VM's lock (take after the host's and the hyp's).
pub type VmLocked<'a> = TicketGuard<'a, Vm>;

static VMS: Mutex<Handles<Arc<VmLock>>> = Mutex::new(Handles::new());

/// Finds a live VM by handle (constant time: the handle names its slot).
pub fn get(handle: u64) -> Result<Arc<VmLock>, Error> {
    VMS.lock().get(handle).cloned().ok_or(Error::NoEnt)
}

fn create(ipa_bits: u64) -> Result<u16, Error> {
    let bits = if ipa_bits == 0 { GUEST_IPA_BITS } else { u8::try_from(ipa_bits).map_err(|_| Error::Inval)? };
    // A tree larger than the CPU's PA range is CONSTRAINED UNPREDICTABLE.
    if !hyp_core::pa_range::ipa_fits(bits, tlb::pa_bits()) {
        return Err(Error::Inval);
    }
    let mut t = VMS.lock();
    let handle = t.next().ok_or(Error::NoMem)?;
    // VMID 0 is the host's: the vectors tell a host HVC by it (vectors.S).
    // Destroy invalidates a VMID before its slot is reused.
    let vmid: Vmid = Handles::<()>::vmid(handle, tlb::vmid_bits());
    let mut env = HypEnv;
    let mut pgt = Stage2::new(&mut env, bits, Some(vmid))?;
    pgt.set_who(handle);
    // Its tables only from its memcache: pages its host donates (VM_TOPUP).
    pgt.use_own_tables();
    let vtcr = vtcr_for(&pgt);
    let vm = Vm {
        handle,
        vmid,
        mm: GuestMm { pgt, handle },
        vcpus: Vec::new(),
        dying: false,
        started: false,
        vtcr,
        guards: hyp_core::vm::mmio_guard::Guards::new(),
        shares: 0,
        unshares: 0,
        low_mapped: false,
        tables_short: 0,
    };
    t.insert(Arc::new(TicketLock::new(vm))).ok_or(Error::NoMem)
}

/// VTCR_EL2 for a stage-2 tree (a guest's, or the host's at boot): its size
/// and start level, 4K granule, write-back walks, inner shareable, PS from
/// the CPU's PA range (the same VTCR its TLB maintenance runs under).
pub fn vtcr_for(pgt: &Stage2) -> u64 {
    tlb::vtcr(pgt.t0sz(), pgt.sl0())
}

fn vcpu_create(vm: &mut VmLocked, entry: u64, x0: u64, flags: u64) -> Result<usize, Error> {
    if flags & !abi::VCPU_OFF != 0 {
        return Err(Error::Inval);
    }
    if vm.dying || vm.started {
        return Err(Error::Perm);
    }
    if vm.vcpus.len() >= MAX_VCPUS {
        return Err(Error::NoMem);
    }
    let mut ctx = Context::reset();
    ctx.gp.x[0] = x0;
    ctx.gp.elr = entry;
    ctx.gp.spsr = context::SPSR_EL1H_DAIF_MASKED;
    vm.vcpus.push(Vcpu {
        ctx,
        pending: Pending::None,
        running: false,
        stopped: false,
        irq: hyp_core::emul::vgic::State::new(),
        off: flags & abi::VCPU_OFF != 0,
    });
    Ok(vm.vcpus.len() - 1)
}

/// Destroys a VM: no more runs, every page scrubbed and given back to the
/// host. Repeatable: on EBUSY (pinned shared pages) the host unpins and
/// calls again. Returns the bytes reclaimed by this call.
fn destroy(host: &mut HostLocked, handle: u64) -> Result<[u64; 2], Error> {
    let vm_arc = get(handle)?;
    let mut vm = vm_arc.lock();
    if vm.vcpus.iter().any(|v| v.running) {
        return Err(Error::Busy);
    }
    vm.dying = true;
    let mut env = HypEnv;
    let r = host_guest::guest_teardown(&mut env, host, &mut vm.mm);
    point::transition(vm.handle, 0, op::TEARDOWN, 0, *r.as_ref().unwrap_or(&0), &r);
    let bytes = r.map_err(|e| refused(vm.handle, "VM_DESTROY", e))?;
    // All pages are back: forget the VM, free its tables and VMID.
    let handle = vm.handle;
    drop(vm);
    drop(vm_arc);
    let mut t = VMS.lock();
    let arc = t.remove(handle as u64).ok_or(Error::NoEnt)?;
    match Arc::try_unwrap(arc) {
        Ok(m) => {
            // The slot's next VM starts with no on-demand range.
            DEMAND.lock()[handle as usize & 0xff] = Demand::NONE;
            // Invalidates the VMID (TLBI VMALLS12E1IS under the VM's root and
            // VMID) before freeing the tables, and before the VMID is free
            // for another VM: nothing cached for this one can serve the next.
            let mut own = m.into_inner().mm.pgt.destroy_keeping_own(&mut env).unwrap_or_default();
            // Then its table memory goes back to the host, zeroed.
            let pages = match vm_tables::vm_tables_return(&mut env, host, handle, &mut own) {
                Ok(n) => n,
                Err(e) => {
                    // Not with the host's reserve (docs/isolation.md): the
                    // pages left stay the hyp's, recorded as this VM's.
                    log::error!("VM {handle}: {} table pages not given back: {e}", own.len());
                    0
                }
            };
            Ok([bytes, pages])
        }
        // Someone else still holds the VM (another CPU mid-call): keep it.
        Err(arc) => {
            let kept = t.restore(handle, arc);
            debug_assert!(kept, "the table lock is held since the removal");
            Err(Error::Busy)
        }
    }
}

fn state_code(l: Leaf) -> u64 {
    match l {
        Leaf::Mapped { state: PageState::Owned, .. } => abi::page_state::OWNED,
        Leaf::Mapped { state: PageState::SharedOwned, .. } => abi::page_state::SHARED_OWNED,
        Leaf::Mapped { state: PageState::SharedBorrowed, .. } => abi::page_state::SHARED_BORROWED,
        Leaf::Invalid(_) => abi::page_state::NONE,
    }
}

/// VM_CREATE → the new VM's handle.
pub fn host_vm_create(ipa_bits: u64) -> Result<u64, Error> {
    create(ipa_bits).map(|h| h as u64)
}

/// VM_DESTROY → bytes reclaimed by this call, table pages given back.
pub fn host_vm_destroy(handle: u64) -> Result<[u64; 2], Error> {
    let mut host = owners::host();
    destroy(&mut host, handle)
}

/// VCPU_CREATE → the vCPU index.
pub fn host_vcpu_create(handle: u64, entry: u64, x0: u64, flags: u64) -> Result<u64, Error> {
    get(handle).and_then(|vm| vcpu_create(&mut vm.lock(), entry, x0, flags)).map(|i| i as u64)
}

/// VCPU_IRQ: the host's VMM configures, asserts or pulses one interrupt of
/// a vCPU; injected at its next entry (or now, if it runs here: it cannot,
/// the host is calling).
pub fn host_vcpu_irq(handle: u64, vcpu: u64, intid: u64, op: u64, a: u64, b: u64) -> Result<[u64; 2], Error> {
    let vm = get(handle)?;
    let mut vm = vm.lock();
    let v = usize::try_from(vcpu).ok().and_then(|i| vm.vcpus.get_mut(i)).ok_or(Error::NoEnt)?;
    match op {
        abi::irq::CONFIGURE => v.irq.configure(intid, a, b).map(|_| [0; 2]),
        abi::irq::LINE if b == 0 => v.irq.set_line(intid, a).map(|_| [0; 2]),
        abi::irq::PULSE if a == 0 && b == 0 => v.irq.pulse(intid).map(|_| [0; 2]),
        abi::irq::STATE if a == 0 && b == 0 => {
            v.irq.states(v.ctx.lrs_mut(), intid).map(|(p, act)| [p as u64, act as u64])
        }
        abi::irq::CLEAR if b == 0 => {
            if v.running {
                return Err(Error::Busy);
            }
            let Vcpu { irq, ctx, .. } = v;
            irq.clear(ctx.lrs_mut(), intid, a).map(|_| [0; 2])
        }
        _ => Err(Error::Inval),
    }
}

/// DONATE_GUEST.
pub fn host_donate_guest(handle: u64, pa: u64, ipa: u64, size: u64) -> Result<(), Error> {
    let mut env = HypEnv;
    let mut host = owners::host();
    let vm = get(handle)?;
    let mut vm = vm.lock();
    if vm.dying {
        return Err(Error::Perm);
    }
    // Set before the attempt, whatever its outcome: only ever too cautious.
    if ipa < GUEST_RAM_BASE {
        vm.low_mapped = true;
    }
    let r = host_guest::host_donate_guest(&mut env, &mut host, &mut vm.mm, Pa(pa), Ipa(ipa), size);
    point::transition(vm.handle, 0, op::DONATE_GUEST, pa, size, &r);
    r.map_err(|e| refused(vm.handle, "DONATE_GUEST", e))
}

/// MEM_ON_DEMAND: the guest RAM `[ipa, ipa + size)` the host donates as
/// the guest touches it. Only before the first run: what a fault is must
/// not change under a running guest.
pub fn host_mem_on_demand(handle: u64, ipa: u64, size: u64) -> Result<(), Error> {
    let vm = get(handle)?;
    let vm = vm.lock();
    if vm.dying || vm.started {
        return Err(Error::Perm);
    }
    let ipa_end = 1u64 << vm.mm.pgt.ipa_bits();
    let d = Demand::declare(ipa, size, GUEST_RAM_BASE, ipa_end).map_err(|e| {
        log::debug!("VM {}: MEM_ON_DEMAND {ipa:#x}+{size:#x} refused: {e:?}", vm.handle);
        Error::Inval
    })?;
    DEMAND.lock()[vm.handle as usize & 0xff] = d;
    Ok(())
}

/// VM_TOPUP: the host donates `pages` pages at `pa` to the VM's memcache.
pub fn host_vm_topup(handle: u64, pa: u64, pages: u64) -> Result<(), Error> {
    let mut env = HypEnv;
    let mut host = owners::host();
    let vm = get(handle)?;
    let mut vm = vm.lock();
    if vm.dying {
        return Err(Error::Perm);
    }
    let r = vm_tables::host_topup_vm(&mut env, &mut host, &mut vm.mm, Pa(pa), pages);
    point::transition(vm.handle, 0, op::VM_TOPUP, pa, pages.wrapping_mul(PAGE_SIZE), &r);
    r.map_err(|e| refused(vm.handle, "VM_TOPUP", e))
}

/// A refused transition of VM `handle`'s memory (host call `call`): logged
/// with what and where, answered with its errno (docs/abi.md).
#[cold]
#[inline(never)]
fn refused(handle: u16, call: &str, e: Refused) -> Error {
    log::debug!("VM {handle}: {call} refused: {e}");
    e.error()
}

/// VM_STATS → (table pages below the root, level at `ipa`, state code).
pub fn host_vm_stats(handle: u64, ipa: u64) -> Result<[u64; 3], Error> {
    let mut env = HypEnv;
    let vm = get(handle)?;
    let vm = vm.lock();
    let m = vm.mm.pgt.lookup(&mut env, ipa)?;
    Ok([vm.mm.pgt.table_pages() as u64, m.level as u64, state_code(m.leaf)])
}

/// VM_DIGEST: FNV-1a over (start, end, state) of every mapped leaf.
pub fn host_vm_digest(handle: u64) -> Result<u64, Error> {
    let mut env = HypEnv;
    let vm = get(handle)?;
    let vm = vm.lock();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    vm.mm.pgt.for_each_leaf(&mut env, 0, vm.mm.pgt.ipa_limit(), |m, s, e| {
        if let Leaf::Mapped { state, .. } = m.leaf {
            for v in [s, e, state as u64] {
                for b in v.to_le_bytes() {
                    h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
                }
            }
        }
        Ok(())
    })?;
    Ok(h)
}

/// VM_CALLS → (MEM_SHARE, MEM_UNSHARE, MMIO_GUARD successes, granules
/// guarded).
pub fn host_vm_calls(handle: u64) -> Result<[u64; 4], Error> {
    let vm = get(handle)?;
    let vm = vm.lock();
    Ok([vm.shares, vm.unshares, vm.guards.calls, vm.guards.len() as u64])
}

/// PAGE_STATE → (host state code, pins, owning VM).
pub fn host_page_state(pa: u64) -> Result<[u64; 4], Error> {
    let mut env = HypEnv;
    let host = owners::host();
    host.leaf_at(&mut env, Pa(pa)).map_err(Error::from).map(|l| {
        let owner = match l {
            Leaf::Invalid(Owner::Guest(h) | Owner::VmTables(h)) => h as u64,
            _ => 0,
        };
        let held = match l {
            Leaf::Invalid(Owner::Hyp) => abi::page_state::HELD_BY_HYP,
            Leaf::Invalid(Owner::HypDonated) => abi::page_state::HELD_BY_HYP_DONATED,
            Leaf::Invalid(Owner::Guest(_)) => abi::page_state::HELD_BY_GUEST,
            Leaf::Invalid(Owner::VmTables(_)) => abi::page_state::HELD_BY_HYP_FOR_VM,
            _ => abi::page_state::HELD_BY_HOST,
        };
        [state_code(l), host.pins.count(pa) as u64, owner, held]
    })
}

/// PAGE_STATE with x2 = 1 → x6: does the host's DMA view map the page? Out
/// of line, apart from the VMMs' calls (which do not ask): a walk of the
/// view, or for a borrowed page the pins' mark, which the invariant checker
/// holds equal to the view.
#[inline(never)]
pub fn host_dma_maps(pa: u64) -> Result<bool, Error> {
    let mut env = HypEnv;
    let host = owners::host();
    let l = host.leaf_at(&mut env, Pa(pa)).map_err(Error::from)?;
    Ok(if matches!(l, Leaf::Mapped { state: PageState::SharedBorrowed, .. }) {
        host.pins.is_mapped(pa)
    } else {
        host.dma_maps(&mut env, pa)
    })
}

/// Every live VM (for the invariant checker; lock each after the host's
/// and the hyp's).
pub fn all() -> Vec<Arc<VmLock>> {
    VMS.lock().iter().cloned().collect()
}

/// Prints a stage-2 (0: the host's, else a VM's) as ranges.
pub fn dump_s2(which: u64) -> Result<(), Error> {
    let mut env = HypEnv;
    if which == 0 {
        let host = owners::host();
        dump(&mut env, "host", &host.pgt)
    } else {
        let vm = get(which)?;
        let vm = vm.lock();
        let name = alloc::format!("vm {}", vm.handle);
        dump(&mut env, &name, &vm.mm.pgt)
    }
}

fn describe(l: Leaf) -> alloc::string::String {
    match l {
        Leaf::Invalid(Owner::None) => "unmapped".into(),
        Leaf::Invalid(Owner::Hyp) => "hyp-owned (unmapped)".into(),
        Leaf::Invalid(Owner::HypDonated) => "hyp-donated (unmapped)".into(),
        Leaf::Invalid(Owner::Guest(h)) => alloc::format!("vm {h}-owned (unmapped)"),
        Leaf::Invalid(Owner::VmTables(h)) => alloc::format!("vm {h} tables (unmapped)"),
        Leaf::Mapped { attrs, state, .. } => alloc::format!(
            "{} {:?} {}{}{}",
            state.name(),
            attrs.mem,
            if attrs.perm.r { "r" } else { "-" },
            if attrs.perm.w { "w" } else { "-" },
            if attrs.perm.x { "x" } else { "-" }
        ),
    }
}

fn dump(env: &mut HypEnv, name: &str, pgt: &Stage2) -> Result<(), Error> {
    // Coalesce runs of leaves with the same meaning and level.
    let mut cur: Option<(u64, u64, u8, Leaf)> = None;
    let mut lines = 0u32;
    let mut flush = |c: (u64, u64, u8, Leaf)| {
        if c.3 != Leaf::Invalid(Owner::None) {
            let pa = match c.3 {
                Leaf::Mapped { pa, .. } => alloc::format!(" -> {pa:#x}"),
                _ => alloc::string::String::new(),
            };
            log::info!("s2 {}: {:#012x}..{:#012x}{} {} L{}", name, c.0, c.1, pa, describe(c.3), c.2);
            lines += 1;
        }
    };
    pgt.for_each_leaf(env, 0, pgt.ipa_limit(), |m, a, b| {
        let leaf = m.at(a);
        match cur {
            Some((s, e, lvl, l)) if e == a && lvl == m.level && l.offset(e - s) == leaf => cur = Some((s, b, lvl, l)),
            _ => {
                if let Some(c) = cur.take() {
                    flush(c);
                }
                cur = Some((a, b, m.level, leaf));
            }
        }
        Ok(())
    })?;
    if let Some(c) = cur {
        flush(c);
    }
    log::info!("s2 {}: {} table pages", name, pgt.table_pages());
    Ok(())
}
