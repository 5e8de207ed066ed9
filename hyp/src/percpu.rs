//! Per-CPU state: one slot per CPU (up to [`MAX_CPUS`]; the boot CPU's set
//! up first, the others when the host starts them with PSCI CPU_ON), found
//! through TPIDR_EL2 ([`this_cpu`]): what runs there at the lower EL, the
//! host's state while a guest runs, the CPU's EL2 stack; and the logical CPU
//! map (`hyp_core::cpu_map`: which MPIDR is logical CPU n; the slot, stack
//! and window of a CPU are its logical index's, never a field of MPIDR).

use aarch64_cpu::registers::Readable;
use hyp_core::cpu_map::CpuMap;

use crate::arch::aarch64::context::Context;
use crate::arch::aarch64::frame::{self, TrapFrame};

pub const MAX_CPUS: usize = 8;
const _: () = assert!(MAX_CPUS == hyp_core::cpu_map::MAX_CPUS);
// Every CPU has its own window slot.
const _: () = assert!(crate::arch::aarch64::window::WINDOW_CPUS >= MAX_CPUS);
pub const STACK_SIZE: u64 = 0x10000;

/// The logical CPU map, set once by boot from the DTB's `/cpus` (the host's
/// PSCI CPU_ON looks its target up in it).
static CPU_MAP: spin::Once<CpuMap> = spin::Once::new();

/// Sets the logical CPU map (boot, once, before the host runs).
pub fn set_cpu_map(map: CpuMap) {
    CPU_MAP.call_once(|| map);
}

/// The logical CPU map boot built.
pub fn cpu_map() -> &'static CpuMap {
    CPU_MAP.get().expect("cpu map: read before boot built it")
}

extern "C" {
    static __stacks_start: u8;
}

/// What a CPU is running at the lower EL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Running {
    Host,
    /// A guest vCPU: VM handle, vCPU index.
    Guest(u16, usize),
}

/// `repr(C)` with `id` first: the mapping window reads a CPU's logical index
/// as the first word TPIDR_EL2 points at (`arch::aarch64::window`).
#[repr(C)]
pub struct PerCpu {
    /// The logical CPU index (`hyp_core::cpu_map`), never derived from MPIDR.
    pub id: usize,
    pub running: Running,
    /// Frame used to enter a lower EL for the first time.
    pub frame: TrapFrame,
    /// The host's state while a guest vCPU runs on this CPU.
    pub host: Context,
    /// The host's physical ICC_PMR_EL1 and ICC_IGRPEN1_EL1 while a guest
    /// runs (the hyp opens both so interrupts take the CPU back).
    pub host_icc: [u64; 2],
    /// The host's enabled PMU counters (PMCNTENSET_EL0) while a guest runs:
    /// they are stopped so the host cannot count the guest's events.
    pub host_pmcnten: u64,
    /// The host's DISR_EL1 while a guest runs.
    pub host_disr: u64,
    /// The host's TRFCR_EL1 while a guest runs (`vm::switch`).
    pub host_trfcr: u64,
    /// The running guest's FP/SIMD registers are in the CPU (it used them
    /// in this run; the host's are in `host.fp`). Until then the host's
    /// stay in the CPU, trapped for the guest (CPTR_EL2.TFP).
    pub guest_fp: bool,
    /// The `context::feat::LAZY` groups switched for the running guest
    /// (it had used them before this run, or trapped on them in it).
    pub guest_lazy: u32,
    /// This CPU's redistributor SGI frame (the hyp timer's PPI), 0 if none.
    pub gicr_sgi: u64,
    /// The virtual timer's PPI (INTID 27) while a guest runs: enabled by
    /// the host before the entry, enabled now.
    pub vtimer_ppi: [bool; 2],
    /// The host's stage-2 controls (restored on every exit to the host).
    pub host_vttbr: u64,
    pub host_vtcr: u64,
    /// The VM whose vCPU runs here: `vm`'s (`vm::on_cpu`), which alone
    /// knows its type.
    pub guest: VmSlot,
    /// Where the host asked this CPU to start (PSCI CPU_ON) and its context.
    pub host_entry: u64,
    pub host_context: u64,
}

/// One pointer of per-CPU storage for the layer that runs VMs: `vm` keeps
/// the running VM there (an `Option<Arc<..>>`: null for none) and is the
/// only one to read or write it (`vm::on_cpu`). Per-CPU state sits below
/// `vm`, so it holds the pointer without naming its type.
#[repr(transparent)]
pub struct VmSlot(pub *mut ());

const ZERO_FRAME: TrapFrame = TrapFrame { x: [0; 31], elr: 0, spsr: 0, _pad: 0 };
#[allow(clippy::declare_interior_mutable_const)]
const INIT: PerCpu = PerCpu {
    id: 0,
    running: Running::Host,
    frame: ZERO_FRAME,
    host: Context::reset(),
    host_icc: [0; 2],
    host_pmcnten: 0,
    host_disr: 0,
    host_trfcr: 0,
    guest_fp: false,
    guest_lazy: 0,
    gicr_sgi: 0,
    vtimer_ppi: [false; 2],
    host_vttbr: 0,
    host_vtcr: 0,
    guest: VmSlot(core::ptr::null_mut()),
    host_entry: 0,
    host_context: 0,
};
static mut CPUS: [PerCpu; MAX_CPUS] = [INIT; MAX_CPUS];

/// The state of CPU `idx` (for the boot path that starts it).
pub fn cpu(idx: usize) -> &'static mut PerCpu {
    // SAFETY: written by the CPU starting `idx` before CPU_ON and read by
    // `idx` itself after it starts; never by both at once.
    unsafe { &mut (*core::ptr::addr_of_mut!(CPUS))[idx % MAX_CPUS] }
}

const _: () = assert!(core::mem::offset_of!(PerCpu, id) == 0);

/// Points TPIDR_EL2 at the slot of logical CPU `id` and records the index
/// there: the first thing every CPU does at EL2, before anything calls
/// [`this_cpu`] or maps a window. The boot CPU is 0; a secondary CPU gets
/// its index from the CPU_ON that started it (`hypercall::psci`).
pub fn init_this_cpu(id: usize) {
    use aarch64_cpu::registers::{Writeable, TPIDR_EL2};
    assert!(id < MAX_CPUS, "logical CPU {id} out of range");
    // SAFETY: only this CPU uses slot `id` (the map gives each CPU its own
    // index) and nothing refers to it yet.
    let slot = unsafe { &mut (*core::ptr::addr_of_mut!(CPUS))[id] };
    slot.id = id;
    TPIDR_EL2.set(slot as *mut PerCpu as u64);
}

/// This CPU's state (one register read: TPIDR_EL2, set by
/// [`init_this_cpu`]; nothing else writes it).
#[inline]
pub fn this_cpu() -> &'static mut PerCpu {
    // SAFETY: TPIDR_EL2 points at this CPU's slot of CPUS. Each CPU only
    // touches its own slot, with exceptions masked at EL2, so no two
    // references to one slot are live at once.
    unsafe { &mut *(aarch64_cpu::registers::TPIDR_EL2.get() as *mut PerCpu) }
}

/// Top of this CPU's EL2 stack.
pub fn stack_top(cpu: &PerCpu) -> u64 {
    // SAFETY: linker symbol; only its address is used.
    let base = unsafe { &__stacks_start as *const u8 as u64 };
    base + (cpu.id as u64 + 1) * STACK_SIZE
}

/// The host's trap frame while a guest vCPU runs on this CPU: the top of
/// this CPU's EL2 stack, where the host's VCPU_RUN built it and vectors.S
/// keeps it (the guest's traps build their frames below it).
pub fn host_frame(cpu: &PerCpu) -> &'static mut TrapFrame {
    let at = stack_top(cpu) - core::mem::size_of::<TrapFrame>() as u64;
    // SAFETY: while a guest runs here, those bytes hold the host's frame,
    // 16-byte aligned, and nothing else refers to them: the handler that
    // asks is running below the guest's frame, with exceptions masked.
    unsafe { &mut *(at as *mut TrapFrame) }
}

/// First entry into the host with `cpu.frame`.
pub fn enter_host(cpu: &'static mut PerCpu) -> ! {
    cpu.running = Running::Host;
    let top = stack_top(cpu);
    frame::enter_lower(&cpu.frame, top)
}
