//! The GIC model's [`IrqControl`] seam over the hyp's host ABI: one
//! `VCPU_IRQ` HVC per operation, for the VM this guest is.

use hyp_abi::host::VCPU_IRQ;
use vmm_devices::irq::{IrqControl, IrqOp};

use crate::hyp;

pub struct HypIrq {
    handle: u64,
}

impl HypIrq {
    pub fn new(handle: u64) -> HypIrq {
        HypIrq { handle }
    }
}

impl IrqControl for HypIrq {
    fn vcpu_irq(&mut self, vcpu: usize, intid: u32, op: IrqOp) -> Result<(u32, u32), i64> {
        let (op, a, b) = op.abi();
        hyp::call(VCPU_IRQ, [self.handle, vcpu as u64, intid as u64, op, a, b]).map(|r| (r[0] as u32, r[1] as u32))
    }
}
