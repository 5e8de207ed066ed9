//! The seam between the GIC emulation and the hyp: per-vCPU interrupt
//! control (`VCPU_IRQ`, docs/abi.md). The hyp alone writes a vCPU's list
//! registers; the VMM tells it what the guest configured, which device
//! lines are up, and reads pending/active state back. The bare host shim
//! implements [`IrqControl`] with an HVC, a Linux VMM with its driver's
//! `VCPU_IRQ` ioctl.

use hyp_abi::host::irq;

/// One `VCPU_IRQ` operation on an INTID of a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqOp {
    /// What the guest decided for the INTID: enabled (the distributor's
    /// group enable included) and its priority.
    Configure { enabled: bool, priority: u8 },
    /// A level-sensitive device line goes up or down.
    Line { level: bool },
    /// An edge: the INTID becomes pending once.
    Pulse,
    /// Reads the pending and active bits of the 32 INTIDs from this one (a
    /// multiple of 32).
    State,
    /// Clears the pending (`pending`) and/or active (`active`) state.
    Clear { pending: bool, active: bool },
}

impl IrqOp {
    /// The operation's `VCPU_IRQ` words: (op, a, b), x4..x6 of the call.
    pub fn abi(self) -> (u64, u64, u64) {
        match self {
            IrqOp::Configure { enabled, priority } => (irq::CONFIGURE, enabled as u64, priority as u64),
            IrqOp::Line { level } => (irq::LINE, level as u64, 0),
            IrqOp::Pulse => (irq::PULSE, 0, 0),
            IrqOp::State => (irq::STATE, 0, 0),
            IrqOp::Clear { pending, active } => (irq::CLEAR, pending as u64 | (active as u64) << 1, 0),
        }
    }
}

/// The hyp's interrupt control for the vCPUs of one VM.
///
/// Contract: [`IrqControl::vcpu_irq`] performs `op` on INTID `intid`
/// (0..`hyp_abi::host::irq::NR_INTIDS`) of vCPU `vcpu` of this VM
/// synchronously, as `VCPU_IRQ` does: when it returns `Ok` the hyp's state
/// has changed (a raised line or pulse is deliverable at the vCPU's next
/// entry). It returns `Ok((pending, active))` for [`IrqOp::State`] and
/// `Ok((0, 0))` for the others, or the hyp's `Err(-errno)` unchanged
/// (`-EBUSY` from `Clear` while the vCPU runs on another CPU). Waking or
/// kicking the vCPU is the VMM's job, not this call's.
pub trait IrqControl {
    fn vcpu_irq(&mut self, vcpu: usize, intid: u32, op: IrqOp) -> Result<(u32, u32), i64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_words() {
        assert_eq!(IrqOp::Configure { enabled: true, priority: 0xa0 }.abi(), (irq::CONFIGURE, 1, 0xa0));
        assert_eq!(IrqOp::Line { level: false }.abi(), (irq::LINE, 0, 0));
        assert_eq!(IrqOp::Pulse.abi(), (irq::PULSE, 0, 0));
        assert_eq!(IrqOp::State.abi(), (irq::STATE, 0, 0));
        assert_eq!(IrqOp::Clear { pending: true, active: false }.abi(), (irq::CLEAR, 1, 0));
        assert_eq!(IrqOp::Clear { pending: false, active: true }.abi(), (irq::CLEAR, 2, 0));
    }
}
