//! Checks of a Linux guest's run that no list of expected lines can make:
//! the hypercall trace against the host's counts, whatever the kernel.

use std::collections::{BTreeMap, BTreeSet};

use vmm_devices::platform::{GUEST_IRQ_TEST, GUEST_UART, MAX_VCPUS};

/// The MMIO ranges of a guest's devices (docs/abi.md, "The guest
/// platform"): the GIC's distributor and up to 8 redistributors, the PL011,
/// the interrupt test device and the virtio-mmio slots.
fn device_ranges() -> [(u64, u64); 5] {
    use vmm_devices::gic::{GICD, GICD_SIZE, GICR, GICR_STRIDE};
    use vmm_devices::virtio::{MAX_SLOTS, MMIO_BASE, MMIO_SIZE};
    [
        (GICD, GICD + GICD_SIZE),
        (GICR, GICR + GICR_STRIDE * MAX_VCPUS as u64),
        (GUEST_UART, GUEST_UART + vmm_devices::pl011::SIZE),
        (GUEST_IRQ_TEST, GUEST_IRQ_TEST + vmm_devices::irq_test::SIZE),
        (MMIO_BASE, MMIO_BASE + MMIO_SIZE * MAX_SLOTS as u64),
    ]
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// What the trace says one VM did: successful calls per name, the IPAs it
/// guarded and shared.
#[derive(Default)]
struct Calls {
    count: BTreeMap<String, u64>,
    guarded: BTreeSet<u64>,
    shared: BTreeSet<u64>,
}

/// `[hyp] trace <ts> | hvc    vmN/vcpuK fid=0x... (NAME) x1=IPA -> ret=0x0`
/// → (N, NAME, IPA) of a successful call.
fn successful_call(line: &str) -> Option<(u64, &str, u64)> {
    let rest = line.strip_prefix("[hyp] trace ")?.split_once(" | hvc")?.1.trim_start();
    let (who, rest) = rest.split_once(' ')?;
    let vm = who.strip_prefix("vm")?.split_once('/')?.0.parse().ok()?;
    let name = rest.split_once('(')?.1.split_once(')')?.0;
    let x1 = hex(rest.split_once(" x1=")?.1.split_whitespace().next()?)?;
    rest.ends_with("-> ret=0x0").then_some((vm, name, x1))
}

/// `[host] vm N: the guest's successful calls: MEM_SHARE a, MEM_UNSHARE b,
/// MMIO_GUARD c (d granules guarded now)` → (N, [a, b, c, d]).
fn host_counts(line: &str) -> Option<(u64, [u64; 4])> {
    let rest = line.strip_prefix("[host] vm ")?;
    let (vm, rest) = rest.split_once(": the guest's successful calls: ")?;
    let nums: Vec<u64> = rest
        .split(|c: char| !c.is_ascii_digit() && c != '_')
        .filter(|w| !w.is_empty() && !w.contains('_'))
        .filter_map(|w| w.parse().ok())
        .collect();
    Some((vm.parse().ok()?, nums.try_into().ok()?))
}

/// `[host] vm N: Image at ..., DMA pool at IPA 0x... (K KiB)` → (N, pool
/// start, pool end).
fn pool(line: &str) -> Option<(u64, u64, u64)> {
    let rest = line.strip_prefix("[host] vm ")?;
    let (vm, rest) = rest.split_once(": Image at IPA ")?;
    let p = rest.split_once("DMA pool at IPA ")?.1;
    let (start, size) = p.split_once(" (")?;
    let kib: u64 = size.strip_suffix(" KiB)")?.parse().ok()?;
    let start = hex(start)?;
    Some((vm.parse().ok()?, start, start + kib * 1024))
}

/// The trace of a Linux guest's hypercalls (`--trace hypercalls`) against
/// the host's counts: each VM's successful MEM_SHARE, MEM_UNSHARE and
/// MMIO_GUARD records as many as VM_CALLS counted, its distinct guarded
/// granules as many as it says are guarded, each of them in one of the
/// guest's devices, and every page of its restricted DMA pool shared.
pub fn trace_matches_host(output: &str) -> Result<(), String> {
    let mut vms: BTreeMap<u64, Calls> = BTreeMap::new();
    let (mut hosts, mut pools) = (Vec::new(), BTreeMap::new());
    for l in output.lines() {
        if let Some((vm, name, x1)) = successful_call(l) {
            let c = vms.entry(vm).or_default();
            *c.count.entry(name.to_string()).or_default() += 1;
            match name {
                "MMIO_GUARD" => _ = c.guarded.insert(x1),
                "MEM_SHARE" => _ = c.shared.insert(x1),
                _ => {}
            }
        } else if let Some(h) = host_counts(l) {
            hosts.push(h);
        } else if let Some((vm, s, e)) = pool(l) {
            pools.insert(vm, (s, e));
        }
    }
    if hosts.is_empty() {
        return Err("no host count of the guest's calls (VM_CALLS)".into());
    }
    let ranges = device_ranges();
    for (vm, [share, unshare, guard, guarded]) in hosts {
        let c = vms.remove(&vm).unwrap_or_default();
        let n = |name: &str| c.count.get(name).copied().unwrap_or(0);
        let traced = [n("MEM_SHARE"), n("MEM_UNSHARE"), n("MMIO_GUARD"), c.guarded.len() as u64];
        if traced != [share, unshare, guard, guarded] {
            return Err(format!(
                "vm {vm}: the trace has MEM_SHARE {}, MEM_UNSHARE {}, MMIO_GUARD {} ({} granules), the host counted \
                 {share}, {unshare}, {guard} ({guarded})",
                traced[0], traced[1], traced[2], traced[3]
            ));
        }
        if let Some(g) = c.guarded.iter().find(|&&g| !ranges.iter().any(|&(s, e)| (s..e).contains(&g))) {
            return Err(format!("vm {vm}: MMIO_GUARD of {g:#x}, which is none of the guest's devices"));
        }
        let Some(&(s, e)) = pools.get(&vm) else {
            return Err(format!("vm {vm}: no DMA pool line"));
        };
        if let Some(p) = (s..e).step_by(4096).find(|p| !c.shared.contains(p)) {
            return Err(format!("vm {vm}: page {p:#x} of the restricted DMA pool was never shared"));
        }
    }
    Ok(())
}

/// Every Linux guest the host loaded (`[host] vm N: Linux guest ...
/// loaded`) ran `/init` to its end: its report (the kernel, the virtio
/// disk's SHA-256 as the xtask computes it, a line through the virtio
/// console) and its power-off, whatever the kernel's version.
pub fn each_linux_guest_ran(output: &str) -> Result<(), String> {
    let vms: Vec<String> = output
        .lines()
        .filter_map(|l| l.strip_prefix("[host] vm ")?.split_once(": Linux guest '").map(|(n, _)| n.to_string()))
        .collect();
    if vms.is_empty() {
        return Err("no Linux guest was loaded".into());
    }
    let sha = crate::linux_guest::disk_sha256();
    for vm in &vms {
        let want = [
            format!("[vm {vm}] linux-guest: /init running: Linux (none) "),
            format!("[vm {vm}] linux-guest: /dev/vda sha256 {sha}"),
            format!("[vm {vm} hvc0] linux-guest: hello through the virtio console"),
            format!("[vm {vm}] linux-guest: poweroff -f"),
            format!("[host] vm {vm}: powered off ("),
        ];
        for w in want {
            if !output.lines().any(|l| l.starts_with(&w)) {
                return Err(format!("vm {vm}: missing: {w}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "\
[host] vm 1: Image at IPA 0x40200000 (3000 KiB with BSS), initramfs at IPA 0x47800000 (1200 KiB), DMA pool at IPA 0x47c00000 (8 KiB)
[hyp] trace 1a | hvc    vm1/vcpu0 fid=0xc6000007 (MMIO_GUARD) x1=0x8000000 -> ret=0x0
[hyp] trace 1b | hvc    vm1/vcpu0 fid=0xc6000007 (MMIO_GUARD) x1=0x9000000 -> ret=0x0
[hyp] trace 1c | hvc    vm1/vcpu0 fid=0xc6000007 (MMIO_GUARD) x1=0x9000000 -> ret=0x0
[hyp] trace 1d | hvc    vm1/vcpu0 fid=0xc6000003 (MEM_SHARE) x1=0x47c00000 -> ret=0x0
[hyp] trace 1e | hvc    vm1/vcpu0 fid=0xc6000003 (MEM_SHARE) x1=0x47c01000 -> ret=0x0
[hyp] trace 1f | hvc    vm1/vcpu0 fid=0xc6000003 (MEM_SHARE) x1=0x44000000 -> ret=0x0
[hyp] trace 20 | hvc    vm1/vcpu0 fid=0xc6000003 (MEM_SHARE) x1=0x44000000 -> ret=0xffffffffffffffff
[host] vm 1: the guest's successful calls: MEM_SHARE 3, MEM_UNSHARE 0, MMIO_GUARD 3 (2 granules guarded now)
";

    #[test]
    fn a_conforming_run_passes() {
        trace_matches_host(RUN).unwrap();
    }

    #[test]
    fn each_difference_is_named() {
        let e = trace_matches_host(&RUN.replace("MEM_SHARE 3,", "MEM_SHARE 4,")).unwrap_err();
        assert!(e.contains("the trace has MEM_SHARE 3") && e.contains("host counted 4"), "{e}");
        let e = trace_matches_host(
            &RUN.replace("x1=0x9000000 -> ret=0x0\n[hyp] trace 1d", "x1=0xc000000 -> ret=0x0\n[hyp] trace 1d"),
        )
        .unwrap_err();
        assert!(e.contains("MMIO_GUARD 3 (3 granules)") && e.contains("host counted 3, 0, 3 (2)"), "{e}");
        let odd = RUN.replace("(2 granules", "(3 granules").replace(
            "[hyp] trace 1d",
            "[hyp] trace 21 | hvc    vm1/vcpu0 fid=0xc6000007 (MMIO_GUARD) x1=0x30000000 -> ret=0x0\n[hyp] trace 1d",
        );
        let odd = odd.replace("MMIO_GUARD 3 (", "MMIO_GUARD 4 (");
        let e = trace_matches_host(&odd).unwrap_err();
        assert!(e.contains("MMIO_GUARD of 0x30000000, which is none of the guest's devices"), "{e}");
        let e = trace_matches_host(&RUN.replace("(8 KiB)", "(12 KiB)")).unwrap_err();
        assert!(e.contains("page 0x47c02000 of the restricted DMA pool was never shared"), "{e}");
        assert!(trace_matches_host("").unwrap_err().contains("no host count"));
    }

    #[test]
    fn every_linux_guest_must_finish() {
        let sha = crate::linux_guest::disk_sha256();
        let vm = |n: u32| {
            format!(
                "[host] vm {n}: Linux guest 'linux{n}' loaded, 64 MiB\n[vm {n}] linux-guest: /init running: Linux (none) \
                 7.2.8 #1\n[vm {n}] linux-guest: /dev/vda sha256 {sha}\n[vm {n} hvc0] linux-guest: hello through the \
                 virtio console\n[vm {n}] linux-guest: poweroff -f\n[host] vm {n}: powered off (9 MMIO exits)\n"
            )
        };
        let two = vm(1) + &vm(2);
        each_linux_guest_ran(&two).unwrap();
        let e = each_linux_guest_ran(&two.replace("[vm 2 hvc0]", "[vm 3 hvc0]")).unwrap_err();
        assert!(e.contains("vm 2: missing: [vm 2 hvc0]"), "{e}");
        let e = each_linux_guest_ran(&two.replace(&sha, "00")).unwrap_err();
        assert!(e.contains("vm 1: missing") && e.contains("sha256"), "{e}");
        assert!(each_linux_guest_ran("").is_err());
    }
}
