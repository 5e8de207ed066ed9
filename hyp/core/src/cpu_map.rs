//! Logical CPU numbers: which physical CPU (MPIDR) is the hyp's CPU 0, 1, ...
//!
//! Every per-CPU structure of the hyp (its `PerCpu` slot, EL2 stack, mapping window, trace ring)
//! is indexed by a logical number in `0..MAX_CPUS`, never by a field of MPIDR: on DynamIQ parts
//! every CPU has Aff0 = 0 (the core number is in Aff1), and multi-cluster parts repeat Aff0 in
//! every cluster, so any function of Aff0 alone gives two CPUs one slot. The map is built once at
//! boot from the device tree's `/cpus/cpu@*` `reg` values (as pKVM's `hyp_cpu_logical_map`): the
//! boot CPU is logical 0, the others follow in the tree's order. A CPU not in the map cannot be
//! started (PSCI CPU_ON from the host is refused with INVALID_PARAMETERS).

/// CPUs the hyp runs on at most (a tree listing more: the boot CPU and the first others).
pub const MAX_CPUS: usize = 8;

/// The affinity fields of MPIDR_EL1: Aff3 [39:32], Aff2 [23:16], Aff1 [15:8], Aff0 [7:0]. A
/// device tree's `reg` of a CPU node holds exactly these bits; MPIDR_EL1 also has RES1 bit 31, U
/// (bit 30) and MT (bit 24), which identify no CPU.
pub const MPIDR_HWID_MASK: u64 = 0xff_00ff_ffff;

/// Why the tree's CPUs make no usable map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMapError {
    /// The CPU the hyp boots on is not in the tree.
    BootCpuNotListed { mpidr: u64 },
    /// Two CPU nodes have the same affinity.
    Duplicate { mpidr: u64 },
    /// A `reg` value with bits outside the affinity fields.
    NotAnAffinity { reg: u64 },
}

/// Logical CPU index -> hardware affinity (MPIDR_EL1 & [`MPIDR_HWID_MASK`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuMap {
    hwid: [u64; MAX_CPUS],
    len: usize,
}

impl CpuMap {
    /// The map for a machine whose tree lists `listed` (CPU `reg` values, in tree order) and
    /// whose boot CPU reads `boot_mpidr` from MPIDR_EL1. The boot CPU becomes logical 0; the
    /// other listed CPUs follow in order, up to `MAX_CPUS` in all (later ones are left out).
    ///
    /// # Errors
    /// [`CpuMapError`] names the value at fault: a `reg` that is not an affinity, a duplicate,
    /// or a boot CPU the map would not contain.
    pub fn new(boot_mpidr: u64, listed: &[u64]) -> Result<CpuMap, CpuMapError> {
        let boot = boot_mpidr & MPIDR_HWID_MASK;
        let mut map = CpuMap { hwid: [0; MAX_CPUS], len: 1 };
        map.hwid[0] = boot;
        for (i, &reg) in listed.iter().enumerate() {
            if reg & !MPIDR_HWID_MASK != 0 {
                return Err(CpuMapError::NotAnAffinity { reg });
            }
            if listed[..i].contains(&reg) {
                return Err(CpuMapError::Duplicate { mpidr: reg });
            }
            if reg != boot && map.len < MAX_CPUS {
                map.hwid[map.len] = reg;
                map.len += 1;
            }
        }
        if !listed.contains(&boot) {
            return Err(CpuMapError::BootCpuNotListed { mpidr: boot });
        }
        Ok(map)
    }

    /// The logical index of the CPU whose MPIDR_EL1 (or tree `reg`, or PSCI target) is `mpidr`,
    /// or None for a CPU the hyp does not run on.
    pub fn index_of(&self, mpidr: u64) -> Option<usize> {
        let hwid = mpidr & MPIDR_HWID_MASK;
        // A PSCI target with bits outside the affinity fields names no CPU.
        if mpidr & !(MPIDR_HWID_MASK | MPIDR_NON_AFFINITY) != 0 {
            return None;
        }
        self.hwid[..self.len].iter().position(|&h| h == hwid)
    }

    /// The affinity of logical CPU `idx`.
    pub fn hwid(&self, idx: usize) -> Option<u64> {
        self.hwid[..self.len].get(idx).copied()
    }

    /// CPUs in the map (1..=MAX_CPUS).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never: the boot CPU is always in the map.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// MPIDR_EL1 bits that are not affinity: RES1 [31], U [30], MT [24].
const MPIDR_NON_AFFINITY: u64 = (1 << 31) | (1 << 30) | (1 << 24);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamiq_cpus_with_aff0_zero_get_distinct_indices() {
        // Cortex-A55/A76 style: core number in Aff1, Aff0 = 0, MT = 1 in MPIDR_EL1.
        let listed = [0x0, 0x100, 0x200, 0x300];
        let m = CpuMap::new(0x8100_0000, &listed).unwrap();
        assert_eq!(m.len(), 4);
        for n in 0..4u64 {
            assert_eq!(m.index_of(0x8100_0000 | n << 8), Some(n as usize), "cpu {n}");
            assert_eq!(m.index_of(n << 8), Some(n as usize), "reg of cpu {n}");
            assert_eq!(m.hwid(n as usize), Some(n << 8));
        }
        assert_eq!(m.index_of(0x400), None);
        // Aff0 % 8 (the old rule) would have put all four in slot 0.
        let slots: alloc::collections::BTreeSet<usize> = listed.iter().map(|&r| m.index_of(r).unwrap()).collect();
        assert_eq!(slots.len(), 4);
    }

    #[test]
    fn clusters_repeating_aff0_and_aff3() {
        // Two clusters of four, plus a CPU that differs only in Aff3 from CPU 0.
        let listed = [0x0, 0x1, 0x2, 0x3, 0x1_0000, 0x1_0001, 0x1_0002, 0x1_0003];
        let m = CpuMap::new(0x8000_0000, &listed).unwrap();
        assert_eq!(m.len(), 8);
        for (i, r) in listed.iter().enumerate() {
            assert_eq!(m.index_of(*r), Some(i));
        }
        let m = CpuMap::new(0, &[0x0, 0x1_0000_0000]).unwrap();
        assert_eq!(m.index_of(0x1_0000_0000), Some(1));
        assert_eq!(m.index_of(0), Some(0));
    }

    #[test]
    fn the_boot_cpu_is_logical_zero_wherever_the_tree_lists_it() {
        let m = CpuMap::new(0x8000_0200, &[0x0, 0x100, 0x200, 0x300]).unwrap();
        assert_eq!(m.index_of(0x200), Some(0));
        assert_eq!(m.index_of(0x0), Some(1));
        assert_eq!(m.index_of(0x100), Some(2));
        assert_eq!(m.index_of(0x300), Some(3));
    }

    #[test]
    fn more_cpus_than_the_hyp_runs_on() {
        let listed: alloc::vec::Vec<u64> = (0..12).map(|n| n << 8).collect();
        let m = CpuMap::new(0, &listed).unwrap();
        assert_eq!(m.len(), MAX_CPUS);
        assert_eq!(m.index_of(7 << 8), Some(7));
        assert_eq!(m.index_of(8 << 8), None);
        // Booting on a CPU past the limit: it is logical 0, then the first seven others.
        let m = CpuMap::new(9 << 8, &listed).unwrap();
        assert_eq!(m.len(), MAX_CPUS);
        assert_eq!(m.index_of(9 << 8), Some(0));
        assert_eq!(m.index_of(6 << 8), Some(7));
        assert_eq!(m.index_of(7 << 8), None);
    }

    #[test]
    fn bad_trees_are_refused_by_value() {
        assert_eq!(CpuMap::new(0x100, &[0x0, 0x200]), Err(CpuMapError::BootCpuNotListed { mpidr: 0x100 }));
        assert_eq!(CpuMap::new(0, &[0x0, 0x100, 0x100]), Err(CpuMapError::Duplicate { mpidr: 0x100 }));
        assert_eq!(CpuMap::new(0, &[0x0, 0x100_0000]), Err(CpuMapError::NotAnAffinity { reg: 0x100_0000 }));
        assert_eq!(CpuMap::new(0, &[]), Err(CpuMapError::BootCpuNotListed { mpidr: 0 }));
    }

    #[test]
    fn psci_targets_with_stray_bits_name_no_cpu() {
        let m = CpuMap::new(0, &[0x0, 0x100]).unwrap();
        assert_eq!(m.index_of(1 << 40 | 0x100), None);
        assert_eq!(m.index_of(1 << 63), None);
        // MPIDR_EL1's own non-affinity bits are ignored.
        assert_eq!(m.index_of(0xC100_0100), Some(1));
    }
}
