//! Every exit from a lower EL lands here and goes to the host's or the
//! running guest's handler.

use crate::arch::aarch64::trap::TrapFrame;
use crate::percpu::{self, Running};

pub fn handle_sync(frame: &mut TrapFrame) {
    match percpu::this_cpu().running {
        Running::Host => crate::host::handle_sync(frame),
        Running::Guest(h, v) => crate::vm::run::handle_guest_sync(frame, h, v),
    }
}

pub fn handle_irq(frame: &mut TrapFrame) {
    match percpu::this_cpu().running {
        // Host interrupts are routed to EL1; one reaching EL2 is spurious.
        Running::Host => {}
        Running::Guest(h, v) => crate::vm::run::handle_guest_irq(frame, h, v),
    }
}
