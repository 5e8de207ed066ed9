//! The thin aarch64 layer, importing nothing from the layers above it: boot
//! assembly, exception vectors and the trap frame they build (`frame.rs`),
//! the EL2 stage-1 and the per-CPU window, TLB and cache maintenance, SMC
//! calls, the lower-EL context and its EL2 controls, the virtual GIC's
//! save/restore (`vgic_sr.rs`), exception injection, the preemption timer.
//! The decisions these registers carry out are `hyp_core`'s.

pub mod context;
pub mod el1;
pub mod fpsimd;
pub mod frame;
pub mod hyp_map;
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
