//! The hyp's console: `log` records to the PL011, one line each,
//! prefixed `[hyp]`. The level comes from `hyp.log=` on the command line.

use core::fmt::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};
use spin::Mutex;

use crate::dev::pl011::Pl011;

static UART: Mutex<Option<Pl011>> = Mutex::new(None);

struct Logger;
static LOGGER: Logger = Logger;

/// # Safety
/// `base` is the PL011 the DTB names as stdout, mapped as device memory.
pub unsafe fn init(base: u64) {
    // SAFETY: per the function contract.
    *UART.lock() = Some(unsafe { Pl011::new(base) });
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Info);
}

pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

/// Writes formatted text even if the console lock is held (panics, fatal
/// exceptions): this CPU is about to stop.
pub fn emergency(args: core::fmt::Arguments) {
    // SAFETY: called only on the way to power-off; a torn line is acceptable.
    unsafe { UART.force_unlock() };
    if let Some(u) = UART.lock().as_mut() {
        let _ = u.write_fmt(args);
        u.flush();
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut g = UART.lock();
        if let Some(u) = g.as_mut() {
            let _ = match r.level() {
                Level::Info => writeln!(u, "[hyp] {}", r.args()),
                l => writeln!(u, "[hyp] {}: {}", l, r.args()),
            };
        }
    }

    fn flush(&self) {
        if let Some(u) = UART.lock().as_mut() {
            u.flush();
        }
    }
}

/// A small fixed buffer for formatting without the heap.
pub struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Line {
    pub const fn new() -> Line {
        Line { buf: [0; 160], len: 0 }
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
