use crate::arch::aarch64::trap::TrapFrame;

pub fn handle_guest_sync(_frame: &mut TrapFrame, _h: u16, _v: usize) {}
pub fn handle_guest_irq(_frame: &mut TrapFrame, _h: u16, _v: usize) {}
