//! virtio-console (device ID 3, section 5.3) with one port and no
//! features of its own (no MULTIPORT, SIZE or EMERG_WRITE; its
//! configuration space reads 0): queue 0 receives (the host never has
//! input: its buffers stay with the device), queue 1 transmits. The
//! guest's bytes are cut into lines, which the VMM prints as
//! `[vm N hvc0] ...`.

use alloc::string::String;
use alloc::vec::Vec;

use super::device::{Out, VirtioDevice};
use super::queue::{self, Chain};
use super::stats::Stats;
use crate::mem::GuestMem;

pub const DEVICE_ID: u32 = 3;
/// Port 0's transmit queue (queue 0 is its receive queue).
pub const TX: usize = 1;
/// A transmit chain holds at most this many bytes (more is a bad request).
pub const MAX_CHAIN: u64 = 64 * 1024;
/// A line longer than this is cut (printed in pieces).
pub const MAX_LINE: usize = 1024;

#[derive(Default)]
pub struct Console {
    /// The line so far (at most [`MAX_LINE`] bytes).
    line: Vec<u8>,
}

impl Console {
    pub fn new() -> Console {
        Console::default()
    }

    /// One transmit chain: device-readable buffers only, at most
    /// [`MAX_CHAIN`] bytes, every page shared. Each line is handed to `out`
    /// as it completes (nothing piles up); nothing is written back.
    pub fn transmit(&mut self, chain: &Chain, m: &mut dyn GuestMem, st: &mut Stats, out: Out) -> u32 {
        let len = queue::total(&chain.segs);
        if chain.segs.iter().any(|s| s.write) || len > MAX_CHAIN {
            st.bad_requests += 1;
            return 0;
        }
        if queue::stream_check(m, &chain.segs, 0, len).is_err() {
            st.mem_errors += 1;
            return 0;
        }
        let mut buf = [0u8; 256];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(buf.len() as u64) as usize;
            // Checked above: the pages are pinned, the read cannot fail.
            if queue::stream_read(m, &chain.segs, at, &mut buf[..n]).is_err() {
                st.mem_errors += 1;
                return 0;
            }
            for &b in &buf[..n] {
                match b {
                    b'\n' => self.end_line(out),
                    b'\r' => {}
                    b => {
                        self.line.push(b);
                        if self.line.len() >= MAX_LINE {
                            self.end_line(out);
                        }
                    }
                }
            }
            at += n as u64;
        }
        0
    }

    fn end_line(&mut self, out: Out) {
        out(&String::from_utf8_lossy(&self.line));
        self.line.clear();
    }

    /// A device reset: a partial line is printed as it is.
    pub fn flush(&mut self, out: Out) {
        if !self.line.is_empty() {
            self.end_line(out);
        }
    }
}

impl VirtioDevice for Console {
    fn device_id(&self) -> u32 {
        DEVICE_ID
    }
    fn name(&self) -> &'static str {
        "virtio-console"
    }
    fn features(&self) -> u64 {
        0
    }
    fn num_queues(&self) -> usize {
        TX + 1
    }
    /// struct virtio_console_config (cols, rows, max_nr_ports, emerg_wr):
    /// 12 bytes, all 0 (none of the features that give them meaning).
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn consumes(&self, queue: usize) -> bool {
        queue == TX
    }
    fn serve(&mut self, _queue: usize, chain: &Chain, mem: &mut dyn GuestMem, stats: &mut Stats, out: Out) -> u32 {
        self.transmit(chain, mem, stats, out)
    }
    fn reset(&mut self, out: Out) {
        self.flush(out);
    }
}
