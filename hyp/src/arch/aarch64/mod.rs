//! The thin aarch64 layer: boot assembly, exception vectors, EL2 stage-1,
//! TLB maintenance, SMC calls and EL1 register state. Everything else in the
//! hyp is arch-independent.

pub mod context;
pub mod el1;
pub mod fpsimd;
pub mod frame;
pub mod hyptimer;
pub mod idregs;
pub mod inject;
pub mod mmu;
pub mod psci;
pub mod sysreg;
pub mod tlb;
pub mod vgic_sr;
pub mod window;

core::arch::global_asm!(include_str!("entry.S"));
core::arch::global_asm!(include_str!("vectors.S"));
core::arch::global_asm!(include_str!("fpsimd.S"));
