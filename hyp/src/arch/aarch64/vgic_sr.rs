//! The EL2 side of the virtual GIC: moves a vCPU's list registers between
//! its context and the CPU, sets ICH_HCR_EL2 for guests (and clears it for
//! the host), reads the virtual timer's condition. What goes into the list
//! registers is decided by `hyp_core::emul::vgic`.

use aarch64_cpu::registers::*;
use tock_registers::interfaces::{Readable, Writeable};

use super::context::{self, feat};

/// ICH_VMCR_EL2: VENG1 [1], VPMR [31:24].
const VMCR_VENG1: u64 = 1 << 1;
const VMCR_VPMR_SHIFT: u32 = 24;
/// ICH_VMCR_EL2.VBPR1 [20:18].
const VMCR_VBPR1_SHIFT: u32 = 18;

/// ICH_MISR_EL2.EOI [0]: some bit of ICH_EISR_EL2 is set, i.e. a list
/// register holds an interrupt deactivated with EOI maintenance asked for
/// (state invalid, HW clear, EOI set: the hyp never sets HW).
const MISR_EOI: u64 = 1 << 0;

/// Does a list register in the CPU hold what `hyp_core::emul::vgic::State::retire`
/// frees? One register read instead of a look at each list register.
#[inline(always)]
pub fn eoi_pending() -> bool {
    present() && ICH_MISR_EL2.get() & MISR_EOI != 0
}

/// Is the virtual CPU interface there?
#[inline(always)]
pub fn present() -> bool {
    context::features() & feat::VGIC != 0
}

/// ICH_HCR_EL2 for a guest: the virtual interface on; an underflow
/// maintenance interrupt when interrupts wait for a free list register.
/// (EOI maintenance, for level-sensitive interrupts, needs no enable.)
#[inline(always)]
pub fn hcr_guest(overflow: bool) -> u64 {
    let mut v = ICH_HCR_EL2::En::SET;
    if overflow {
        v += ICH_HCR_EL2::UIE::SET;
    }
    v.value
}

/// Loads ICH_HCR_EL2 (0 for the host: the virtual interface off).
#[inline(always)]
pub fn set_hcr(v: u64) {
    if present() {
        ICH_HCR_EL2.set(v);
    }
}

macro_rules! lr_access {
    ($($n:literal => $reg:ident),*) => {
        fn read_lr(n: usize) -> u64 {
            match n {
                $($n => $reg.get(),)*
                _ => 0,
            }
        }
        fn write_lr(n: usize, v: u64) {
            match n {
                $($n => $reg.set(v),)*
                _ => {}
            }
        }
    };
}

lr_access!(0 => ICH_LR0_EL2, 1 => ICH_LR1_EL2, 2 => ICH_LR2_EL2, 3 => ICH_LR3_EL2,
    4 => ICH_LR4_EL2, 5 => ICH_LR5_EL2, 6 => ICH_LR6_EL2, 7 => ICH_LR7_EL2,
    8 => ICH_LR8_EL2, 9 => ICH_LR9_EL2, 10 => ICH_LR10_EL2, 11 => ICH_LR11_EL2,
    12 => ICH_LR12_EL2, 13 => ICH_LR13_EL2, 14 => ICH_LR14_EL2, 15 => ICH_LR15_EL2);

/// The CPU's list registers, while a guest runs (`out.len()` = [`context::nr_lrs`]).
pub fn read_lrs(out: &mut [u64]) {
    for (n, v) in out.iter_mut().enumerate() {
        *v = read_lr(n);
    }
}

/// Zeroes every list register the CPU has (ICH_VTR_EL2.ListRegs + 1), also
/// those above the power-of-two count the register table switches: their
/// reset value is UNKNOWN and they would otherwise be live in every guest.
pub fn clear_all_lrs() {
    let n = ((ICH_VTR_EL2.get() & 0x1f) + 1) as usize;
    for i in 0..n.min(16) {
        write_lr(i, 0);
    }
}

pub fn write_lrs(lrs: &[u64]) {
    for (n, v) in lrs.iter().enumerate() {
        write_lr(n, *v);
    }
}

/// What decides whether the running guest's CPU interface signals an
/// interrupt: its live ICH_VMCR_EL2 (priority mask, group-1 enable, binary
/// point) and active-priority registers (running priority).
pub fn mask_live() -> hyp_core::emul::vgic::Mask {
    let vmcr = ICH_VMCR_EL2.get();
    let f = context::features();
    let ap1r = [
        ICH_AP1R0_EL2.get(),
        if f & feat::VGIC_AP1 != 0 { ICH_AP1R1_EL2.get() } else { 0 },
        if f & feat::VGIC_AP23 != 0 { ICH_AP1R2_EL2.get() } else { 0 },
        if f & feat::VGIC_AP23 != 0 { ICH_AP1R3_EL2.get() } else { 0 },
    ];
    // ICH_VTR_EL2.PREbits [28:26]: preemption bits - 1.
    let pre = ((ICH_VTR_EL2.get() >> 26) & 7) as u32 + 1;
    hyp_core::emul::vgic::Mask {
        vpmr: (vmcr >> VMCR_VPMR_SHIFT) as u8,
        grp1: vmcr & VMCR_VENG1 != 0,
        bpr1: ((vmcr >> VMCR_VBPR1_SHIFT) & 7) as u8,
        running: hyp_core::emul::vgic::running_priority(&ap1r, pre),
    }
}

/// Does a virtual timer with these CNTV_CTL/CVAL values assert its
/// interrupt at virtual-counter time `now`? (Enabled, not masked, due.)
#[inline(always)]
pub fn vtimer_due(ctl: u64, cval: u64, now: u64) -> bool {
    let enabled = ctl & CNTV_CTL_EL0::ENABLE::SET.value != 0;
    let masked = ctl & CNTV_CTL_EL0::IMASK::SET.value != 0;
    enabled && !masked && now >= cval
}

/// The live virtual timer's condition (the guest's registers loaded).
pub fn vtimer_live() -> bool {
    CNTV_CTL_EL0.matches_all(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR + CNTV_CTL_EL0::ISTATUS::SET)
}

/// The guest's virtual counter now (CNTVOFF_EL2 is 0: it is the physical one).
#[inline(always)]
pub fn vcount() -> u64 {
    CNTVCT_EL0.get()
}
