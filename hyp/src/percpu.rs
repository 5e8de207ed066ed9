//! Per-CPU state. CPU 0 only for now (SMP brings the others up through
//! PSCI CPU_ON); every per-CPU item lives here from the start.

use aarch64_cpu::registers::Readable;

use crate::arch::aarch64::trap::{self, TrapFrame};

pub const MAX_CPUS: usize = 8;
pub const STACK_SIZE: u64 = 0x10000;

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

pub struct PerCpu {
    pub id: usize,
    pub running: Running,
    /// Frame used to enter a lower EL for the first time.
    pub frame: TrapFrame,
}

const INIT: PerCpu = PerCpu {
    id: 0,
    running: Running::Host,
    frame: TrapFrame {
        x: [0; 31],
        elr: 0,
        spsr: 0,
        _pad: 0,
    },
};
static mut CPUS: [PerCpu; MAX_CPUS] = [INIT; MAX_CPUS];

/// This CPU's state.
pub fn this_cpu() -> &'static mut PerCpu {
    let id = (aarch64_cpu::registers::MPIDR_EL1.get() & 0xff) as usize % MAX_CPUS;
    // SAFETY: each CPU only touches its own slot, with exceptions masked at
    // EL2, so no two references to one slot are live at once.
    unsafe { &mut (*core::ptr::addr_of_mut!(CPUS))[id] }
}

/// Top of this CPU's EL2 stack.
pub fn stack_top(cpu: &PerCpu) -> u64 {
    // SAFETY: linker symbol; only its address is used.
    let base = unsafe { &__stacks_start as *const u8 as u64 };
    base + (cpu.id as u64 + 1) * STACK_SIZE
}

/// First entry into the host with `cpu.frame`.
pub fn enter_host(cpu: &'static mut PerCpu) -> ! {
    cpu.running = Running::Host;
    let top = stack_top(cpu);
    trap::enter_lower(&cpu.frame, top)
}
