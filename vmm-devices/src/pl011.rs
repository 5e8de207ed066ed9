//! The guest's PL011 UART (PL011 TRM, r1p5): what the guest writes to
//! UARTDR is cut into lines for the VMM to print; the transmit interrupt
//! rises after every character (the FIFO drains at once) and follows
//! UARTIMSC/UARTICR (TRM 3.3.13-3.3.17); the receive side never has data.
//! UARTFR says both FIFOs are empty and the UART never busy; the ID
//! registers let Linux's AMBA bus match the driver; other reads are 0 and
//! other writes are ignored.

use alloc::string::String;
use alloc::vec::Vec;

/// The size of the register window.
pub const SIZE: u64 = 0x1000;
/// UARTRIS/UARTMIS/UARTICR bit of the transmit interrupt.
pub const TXI: u32 = 1 << 5;
/// A line longer than this is handed out in pieces.
pub const MAX_LINE: usize = 1024;

const DR: u64 = 0x000;
const FR: u64 = 0x018;
const IMSC: u64 = 0x038;
const RIS: u64 = 0x03c;
const MIS: u64 = 0x040;
const ICR: u64 = 0x044;
/// UARTFR: TXFE [7], RXFE [4].
const FR_EMPTY: u64 = 0x90;
/// UARTPeriphID0-3 (PL011 r1p5: 0x00341011) and UARTPCellID0-3
/// (0xB105F00D), from 0xfe0, one byte per word.
const ID: [u8; 8] = [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

#[derive(Default)]
pub struct Pl011 {
    imsc: u32,
    ris: u32,
    /// The line so far.
    line: Vec<u8>,
}

impl Pl011 {
    pub fn new() -> Pl011 {
        Pl011::default()
    }

    /// A guest access at offset `off` of the window; returns the value
    /// read (0 for writes). Each complete line written goes to `out`
    /// (without its `\n`; `\r` is dropped).
    ///
    /// (Inlined: a VMM's MMIO exit path crosses the crate boundary here;
    /// the bench's MMIO round trip is a UART write.)
    #[inline(always)]
    pub fn mmio(&mut self, off: u64, write: bool, value: u64, out: &mut dyn FnMut(&str)) -> u64 {
        match (off, write) {
            (DR, true) => {
                match value as u8 {
                    b'\n' => self.end_line(out),
                    b'\r' => {}
                    b => {
                        self.line.push(b);
                        if self.line.len() >= MAX_LINE {
                            self.end_line(out);
                        }
                    }
                }
                self.ris |= TXI;
                0
            }
            (IMSC, true) => {
                self.imsc = value as u32 & 0x7ff;
                0
            }
            (ICR, true) => {
                self.ris &= !(value as u32);
                0
            }
            (FR, false) => FR_EMPTY,
            (IMSC, false) => self.imsc as u64,
            (RIS, false) => self.ris as u64,
            (MIS, false) => (self.ris & self.imsc) as u64,
            (0xfe0..=0xffc, false) if off.is_multiple_of(4) => ID[((off - 0xfe0) / 4) as usize] as u64,
            _ => 0,
        }
    }

    /// The level of the UART's interrupt line (UARTMIS not 0).
    #[inline]
    pub fn level(&self) -> bool {
        self.ris & self.imsc != 0
    }

    fn end_line(&mut self, out: &mut dyn FnMut(&str)) {
        out(&String::from_utf8_lossy(&self.line));
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec::Vec;

    #[test]
    fn lines_and_transmit_interrupt() {
        let mut u = Pl011::new();
        let mut lines: Vec<String> = Vec::new();
        for &b in b"hi\r\nthere" {
            u.mmio(DR, true, b as u64, &mut |l| lines.push(l.to_string()));
        }
        assert_eq!(lines, ["hi"]);
        assert_eq!(u.mmio(RIS, false, 0, &mut |_| {}), TXI as u64);
        assert!(!u.level(), "masked");
        u.mmio(IMSC, true, 0xffff_ffff, &mut |_| {});
        assert_eq!(u.mmio(IMSC, false, 0, &mut |_| {}), 0x7ff);
        assert!(u.level());
        assert_eq!(u.mmio(MIS, false, 0, &mut |_| {}), TXI as u64);
        u.mmio(ICR, true, TXI as u64, &mut |_| {});
        assert!(!u.level());
        assert_eq!(u.mmio(FR, false, 0, &mut |_| {}), 0x90);
    }

    #[test]
    fn ids_and_long_lines() {
        let mut u = Pl011::new();
        let id: Vec<u64> = (0..8).map(|k| u.mmio(0xfe0 + 4 * k, false, 0, &mut |_| {})).collect();
        assert_eq!(id, [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
        assert_eq!(u.mmio(0xfe2, false, 0, &mut |_| {}), 0);
        assert_eq!(u.mmio(0x800, false, 0, &mut |_| {}), 0);
        let mut n = Vec::new();
        for _ in 0..MAX_LINE + 5 {
            u.mmio(DR, true, b'x' as u64, &mut |l| n.push(l.len()));
        }
        u.mmio(DR, true, b'\n' as u64, &mut |l| n.push(l.len()));
        assert_eq!(n, [MAX_LINE, 5]);
    }
}
