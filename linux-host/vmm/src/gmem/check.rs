//! What the memory-file test's parts share (`gmem.rs`, `others.rs`): the
//! tally of its checks and the sizes it works with.

use std::time::Duration;

pub const PAGE: u64 = 4096;
pub const BLOCK: u64 = 2 << 20;
/// How long a reference is held while the guest's conversion waits.
pub const HOLD: Duration = Duration::from_millis(300);

/// The checks' tally.
pub struct Tally {
    pub failed: u32,
    /// SIGBUS signals the checks expected.
    pub sigbus: u64,
}

impl Tally {
    pub fn check(&mut self, ok: bool, line: &str, detail: impl std::fmt::Display) {
        if ok {
            println!("gmem: {line}");
        } else {
            self.failed += 1;
            println!("gmem: FAIL {line} ({detail})");
        }
    }
    /// A probe that must fault.
    pub fn bus<T>(&mut self, r: Result<T, ()>) -> bool {
        self.sigbus += 1;
        r.is_err()
    }
}
