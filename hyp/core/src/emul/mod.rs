//! What a trapped access means, decided without touching the hardware: the
//! EL2 binary reads the syndrome and registers, asks here, and acts.
//!
//! - [`exception`]: architecture rules the hyp emulates (exception entry
//!   PSTATE and vectors, stage-2 fault kinds, trapped-access decoding).
//! - [`spectre`]: the `SMCCC_ARCH_FEATURES` answers for the Spectre
//!   workaround calls, from the CPU's ID registers.
//! - [`sys_regs`]: what a guest sees on a trapped system register or
//!   instruction (RAZ/WI, UNDEF, NOP, sanitized ID values, SGIs).
//! - [`vgic`]: a vCPU's virtual interrupts and what goes into its list
//!   registers (`arch/aarch64/vgic_sr.rs` in the binary moves them).
//! - [`gicr`]: the host's accesses to a GIC redistributor's RD_base page
//!   (`trap/host_gicr.rs` in the binary performs them).

pub mod exception;
pub mod gicr;
pub mod spectre;
pub mod sys_regs;
pub mod vgic;
