//! Scenarios the host shim can run (`shim.test=NAME`).

pub mod boot;

use el1_rt::BootInfo;

use crate::report::Report;

/// Runs scenario `name`; false if there is none by that name.
pub fn run(name: &str, info: &BootInfo, r: &mut Report) -> bool {
    match name {
        "boot" | "demo" => true,
        _ => {
            let _ = info;
            let _ = r;
            false
        }
    }
}
