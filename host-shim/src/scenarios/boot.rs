//! Proof that the host runs deprivileged under a stage-2: the hyp's memory
//! (the no-map reserved region in our DTB) cannot be read or written.

use el1_rt::{println, BootInfo};

use crate::report::{expect_abort, read64, write64, Report};

/// The hyp's region, from /reserved-memory.
pub fn hyp_region(info: &BootInfo) -> Option<(u64, u64)> {
    let rm = info.fdt.find_node("/reserved-memory")?;
    rm.children()
        .find(|c| c.name.starts_with("hyp@"))
        .and_then(|c| c.reg())
        .and_then(|mut r| r.next())
        .map(|r| (r.starting_address as u64, r.size.unwrap_or(0) as u64))
}

pub fn run(info: &BootInfo, r: &mut Report) {
    r.check(el1_rt::current_el() == 1, "host runs at EL1");
    let Some((base, size)) = hyp_region(info) else {
        r.fail("DTB has a no-map reserved region for the hyp");
        return;
    };
    println!("[host] hyp memory (reserved, no-map): {:#x}..{:#x}", base, base + size);
    let target = base + size / 2;
    match expect_abort(|| {
        read64(target);
    }) {
        Some((far, esr)) => {
            println!(
                "[host] read of hyp memory at {:#x}: data abort delivered (FAR {:#x}, ESR {:#x})",
                target, far, esr
            );
            r.check(far == target, "abort on reading hyp memory reported at the right address");
        }
        None => r.fail("abort on reading hyp memory"),
    }
    let w = expect_abort(|| write64(base, 0xdead_beef));
    r.check(w.is_some_and(|(far, esr)| far == base && esr & (1 << 6) != 0), "abort on writing hyp memory (WnR set)");
}
