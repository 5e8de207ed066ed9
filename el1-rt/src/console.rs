//! The PL011 named by /chosen/stdout-path, behind a lock; `print!` macros.

use core::fmt::Write;

use spin::Mutex;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

register_structs! {
    Regs {
        (0x000 => dr: ReadWrite<u32>),
        (0x004 => _reserved0),
        (0x018 => fr: ReadOnly<u32>),
        (0x01c => @END),
    }
}

const FR_TXFF: u32 = 1 << 5;

pub struct Uart(&'static Regs);
// SAFETY: MMIO registers, only reached through the console lock.
unsafe impl Send for Uart {}

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                while self.0.fr.get() & FR_TXFF != 0 {}
                self.0.dr.set(b'\r' as u32);
            }
            while self.0.fr.get() & FR_TXFF != 0 {}
            self.0.dr.set(b as u32);
        }
        Ok(())
    }
}

static UART: Mutex<Option<Uart>> = Mutex::new(None);

pub fn init(fdt: &fdt::Fdt) {
    let node = fdt.chosen().stdout().or_else(|| fdt.find_compatible(&["arm,pl011"]));
    if let Some(base) = node.and_then(|n| n.reg()).and_then(|mut r| r.next()).map(|r| r.starting_address as usize) {
        // SAFETY: the DTB's UART, identity-mapped as device memory.
        *UART.lock() = Some(Uart(unsafe { &*(base as *const Regs) }));
    }
}

pub fn print(args: core::fmt::Arguments) {
    if let Some(u) = UART.lock().as_mut() {
        let _ = u.write_fmt(args);
    }
}

pub fn emergency(args: core::fmt::Arguments) {
    // SAFETY: on the way to power-off; a torn line is acceptable.
    unsafe { UART.force_unlock() };
    print(args);
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
