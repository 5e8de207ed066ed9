//! The host's side of tracing: drain the hyp's records into a buffer it
//! shares with the hyp, print them (text or binary), and stage-2 dumps.

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use el1_rt::println;
use hyp_abi::host as abi;
use hyp_abi::trace::{Record, RECORD_SIZE};

use crate::hyp::call;
use crate::mem::HostMem;

static DUMP_S2: AtomicBool = AtomicBool::new(false);
/// 0 none, 1 text, 2 binary.
static TRACE_DUMP: AtomicU8 = AtomicU8::new(0);

pub fn configure(args: &str) {
    for t in args.split_ascii_whitespace() {
        match t {
            "shim.dump_s2" | "shim.dump_s2=1" => DUMP_S2.store(true, Ordering::Relaxed),
            "shim.trace_dump=text" => TRACE_DUMP.store(1, Ordering::Relaxed),
            "shim.trace_dump=bin" => TRACE_DUMP.store(2, Ordering::Relaxed),
            _ => {}
        }
    }
}

/// Prints the host's stage-2 and, if given, a VM's (when `--dump-s2`).
pub fn dump_s2(vm: Option<u64>) {
    if DUMP_S2.load(Ordering::Relaxed) {
        crate::hyp::dump_s2(0);
        if let Some(h) = vm {
            crate::hyp::dump_s2(h);
        }
    }
}

/// Drains every record the hyp holds and prints them; returns (records, lost).
pub fn drain_and_print(hm: &mut HostMem) -> Option<(u64, u64)> {
    let mode = TRACE_DUMP.load(Ordering::Relaxed);
    if mode == 0 {
        return None;
    }
    const SIZE: u64 = 64 * 1024;
    let buf = hm.alloc(SIZE, 4096)?;
    if call(abi::SHARE_HYP, [buf, SIZE, 0, 0, 0, 0]).is_err() {
        println!("[host] trace: could not share the drain buffer with the hyp");
        return None;
    }
    let (mut total, mut lost) = (0, 0);
    while let Ok(r) = call(abi::TRACE_DRAIN, [buf, SIZE, 0, 0, 0, 0]) {
        let n = r[0] as usize;
        lost = r[1];
        // SAFETY: our own buffer, shared with the hyp, which filled n records.
        let bytes = unsafe { core::slice::from_raw_parts(buf as *const u8, n * RECORD_SIZE) };
        for chunk in bytes.chunks(RECORD_SIZE) {
            let mut hex = alloc::string::String::new();
            for b in chunk {
                let _ = core::fmt::Write::write_fmt(&mut hex, format_args!("{:02x}", b));
            }
            match (mode, Record::from_bytes(chunk)) {
                (1, Some(rec)) => println!("[trace-dump] {} | {}", hex, rec),
                _ => println!("[trace-bin] {}", hex),
            }
        }
        total += n as u64;
        if n == 0 {
            break;
        }
    }
    let _ = call(abi::UNSHARE_HYP, [buf, SIZE, 0, 0, 0, 0]);
    hm.free(buf, SIZE);
    println!("[host] trace: drained {} records, {} lost to overflow", total, lost);
    Some((total, lost))
}
