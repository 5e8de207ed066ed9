//! The bench's Linux guest rows (`shim.bench_linux`, a run of `cargo xtask
//! bench` with `--linux-guest` on one host CPU): the protected Linux
//! guest's boot from its first instruction to its `/init` (the first line
//! `/init` prints), and its read of the whole 1 MiB virtio-blk disk (from
//! `/init`'s line naming the disk to its `sha256sum` of it: the sector
//! reads, the checksum's read of the rest, the page cache holding what was
//! read), from the VMM's exit profile (`vmm/profile.rs`). `[bench]` rows:
//! EL2 instructions, and as "all" EL2 plus the host VMM's (the guest's own
//! left out); `[bench-size]` rows: the host VMM's instructions, exits by
//! kind with their EL2 instructions, and the console's share of the EL2
//! work.

use el1_rt::bench::report;
use el1_rt::println;

use crate::report::Report;
use crate::vmm::profile::{self, Snapshot, CONSOLE, KINDS};
use crate::vmm::Guest;

const INIT: &str = "linux-guest: /init running";
const DISK: &str = "linux-guest: /dev/vda: ";
const READ: &str = "linux-guest: /dev/vda sha256";
/// The console lines the profile marks.
pub const MARKS: &[&str] = &[INIT, DISK, READ];

fn size(name: &str, v: u64) {
    println!("[bench-size] {name} = {v}");
}

/// Exits by kind, their EL2 instructions and the host VMM's, in `s`.
fn breakdown(what: &str, s: &Snapshot) {
    for k in 0..KINDS {
        let t = s.kinds[k];
        if t.exits > 0 {
            let n = profile::name(k);
            size(&alloc::format!("{what}: {n} exits"), t.exits);
            size(&alloc::format!("{what}: EL2 instructions in {n} exits"), t.el2);
        }
    }
}

/// The rows of the profiled guest `g`, after its power-off.
pub fn rows(g: &Guest, r: &mut Report) {
    let Some(p) = g.prof.as_deref() else { return };
    let (Some(start), Some(init)) = (p.at("start"), p.at(INIT)) else {
        r.fail("Linux guest bench: the guest's /init ran");
        return;
    };
    let boot = start.until(init);
    let all = boot.total(&[]);
    let what = "linux guest boot to /init";
    report(&alloc::format!("{what} (EL2; all = EL2 + host VMM)"), 1, (all.el2, all.el2 + all.host), boot.counters);
    size(&alloc::format!("{what}: host VMM instructions"), all.host);
    size(&alloc::format!("{what}: exits"), all.exits);
    let console = boot.kinds[CONSOLE];
    size(&alloc::format!("{what}: console MMIO share of EL2 (per mille)"), console.el2 * 1000 / all.el2.max(1));
    breakdown(what, &boot);
    let (Some(disk), Some(read)) = (p.at(DISK), p.at(READ)) else {
        r.fail("Linux guest bench: the guest read its disk");
        return;
    };
    let io = disk.until(read);
    let t = io.total(&[CONSOLE]);
    let what = "linux guest virtio-blk read 1 MiB";
    report(
        &alloc::format!("{what}, per KiB (EL2; all = EL2 + host VMM; console out)"),
        1024,
        (t.el2, t.el2 + t.host),
        io.counters,
    );
    size(&alloc::format!("{what}: host VMM instructions (console out)"), t.host);
    breakdown(what, &io);
    r.check(true, "Linux guest bench: boot and disk read profiled");
}
