//! A host test of the world switch's order (docs/isolation.md, "Order of
//! the switch"): the guest's EL1 system registers are loaded before its
//! stage 2 (VTTBR_EL2, with its VMID) at `VCPU_RUN`, and the host's stage 2
//! before the host's EL1 registers at the exit, so that no speculative walk
//! of the EL1&0 regime combines the host's stage-1 registers with a guest's
//! VMID. The switch is EL2 code (`hyp/src/vm/switch.rs`), not runnable
//! here: the test reads its source, where the order is the order of the
//! statements.

use std::path::Path;

/// The body of `fn name` in `src`: from its signature to the next
/// top-level `fn` (or the end).
fn body<'a>(src: &'a str, name: &str) -> &'a str {
    let start = src.find(&format!("pub fn {name}(")).unwrap_or_else(|| panic!("switch.rs has no fn {name}"));
    let rest = &src[start..];
    let end = rest[1..].find("\npub fn ").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

/// Byte offset of the only occurrence of `what` in `f`.
fn at(f: &str, what: &str) -> usize {
    let i = f.find(what).unwrap_or_else(|| panic!("`{what}` not found"));
    assert!(f[i + 1..].find(what).is_none(), "`{what}` occurs twice");
    i
}

/// Is every statement in `first` before every one in `then`, in `f`?
fn ordered(f: &str, first: &[&str], then: &[&str]) -> bool {
    let last = first.iter().map(|w| at(f, w)).max().unwrap_or(0);
    then.iter().map(|w| at(f, w)).all(|i| i > last)
}

fn switch_rs() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hyp/src/vm/switch.rs");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn entry_loads_guest_el1_registers_before_its_stage2() {
    let src = switch_rs();
    let f = body(&src, "vcpu_run");
    assert!(
        ordered(f, &["vcpu.ctx.restore_cpu(Kind::Guest"], &["VTCR_EL2.set(vtcr)", "VTTBR_EL2.set(vttbr)"]),
        "VCPU_RUN must load the guest's EL1 registers before VTCR_EL2/VTTBR_EL2"
    );
}

#[test]
fn exit_loads_host_stage2_before_its_el1_registers() {
    let src = switch_rs();
    let f = body(&src, "exit_to_host");
    assert!(
        ordered(
            f,
            &["VTCR_EL2.set(cpu.host_vtcr)", "VTTBR_EL2.set(cpu.host_vttbr)"],
            &["cpu.host.restore_cpu(Kind::Host"]
        ),
        "the exit must load the host's VTCR_EL2/VTTBR_EL2 before its EL1 registers"
    );
    // The guest's registers are saved before anything of the host's comes in.
    assert!(ordered(f, &["vcpu.ctx.save_cpu(Kind::Guest"], &["VTTBR_EL2.set(cpu.host_vttbr)"]));
}

#[test]
fn the_checks_see_a_reversed_order() {
    let reversed = "pub fn exit_to_host() {\n    cpu.host.restore_cpu(Kind::Host, l);\n    \
                    VTTBR_EL2.set(cpu.host_vttbr);\n}\n";
    let f = body(reversed, "exit_to_host");
    assert!(!ordered(f, &["VTTBR_EL2.set(cpu.host_vttbr)"], &["cpu.host.restore_cpu(Kind::Host"]));
}
