//! Pass/fail lines, counted; probes that expect an abort (the shim's SIGBUS).

use el1_rt::println;

pub struct Report {
    pub passed: u32,
    pub failed: u32,
}

impl Report {
    pub fn new() -> Self {
        Report { passed: 0, failed: 0 }
    }

    pub fn check(&mut self, ok: bool, what: &str) -> bool {
        if ok {
            self.passed += 1;
            println!("[host] PASS {}", what);
        } else {
            self.failed += 1;
            println!("[host] FAIL {}", what);
        }
        ok
    }

    /// Checks a call's result against the one expected.
    pub fn expect(&mut self, got: i64, want: i64, what: &str) -> bool {
        if got != want {
            println!("[host]   got {got}, want {want}");
        }
        self.check(got == want, what)
    }

    pub fn fail(&mut self, what: &str) {
        self.check(false, what);
    }

    pub fn finish(&self) -> ! {
        println!("[host] result: {} passed, {} failed", self.passed, self.failed);
        crate::hyp::shutdown(if self.failed == 0 { 0 } else { 1 })
    }
}

pub use el1_rt::probe::{expect_abort, read64, write64};

/// Writes the guest program `prog` (A64 instruction words) to host memory
/// at `at` (4-byte aligned), word by word through the 64-bit accessors,
/// keeping the other half of each doubleword: the hostile scenarios'
/// hand-assembled guests.
pub fn write_code(at: u64, prog: &[u32]) {
    for (i, w) in prog.iter().enumerate() {
        let a = at + 4 * i as u64;
        let old = read64(a & !7);
        let shift = (a & 4) * 8;
        write64(a & !7, (old & !(0xffff_ffff << shift)) | ((*w as u64) << shift));
    }
}

pub fn install_abort_hook() {
    el1_rt::probe::install();
}
