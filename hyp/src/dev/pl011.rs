//! PL011 UART, transmit side (QEMU needs no baud-rate setup).

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

register_bitfields! [u32,
    FR [
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Busy transmitting.
        BUSY OFFSET(3) NUMBITS(1) []
    ]
];

register_structs! {
    Regs {
        (0x000 => dr: ReadWrite<u32>),
        (0x004 => _reserved0),
        (0x018 => fr: ReadOnly<u32, FR::Register>),
        (0x01c => @END),
    }
}

pub struct Pl011 {
    regs: &'static Regs,
}

// SAFETY: the register block is MMIO; all access goes through the console
// lock, so moving the handle between CPUs is fine.
unsafe impl Send for Pl011 {}

impl Pl011 {
    /// # Safety
    /// `base` is the MMIO address of a PL011, mapped as device memory, used
    /// by nobody else in the hyp.
    pub unsafe fn new(base: u64) -> Self {
        // SAFETY: per the function contract.
        Pl011 { regs: unsafe { &*(base as *const Regs) } }
    }

    pub fn putc(&mut self, c: u8) {
        while self.regs.fr.is_set(FR::TXFF) {}
        self.regs.dr.set(c as u32);
    }

    pub fn flush(&mut self) {
        while self.regs.fr.is_set(FR::BUSY) {}
    }
}

impl core::fmt::Write for Pl011 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.putc(b'\r');
            }
            self.putc(b);
        }
        Ok(())
    }
}
