//! What the device tree tells the hyp about the machine. Parsed before the
//! heap exists, so everything lands in fixed-size arrays.

use aarch64_cpu::registers::Readable;
use fdt::node::FdtNode;
use fdt::Fdt;
use log::info;

use hyp_core::mm::region::Region;

use crate::arch::aarch64::mmu;

pub const MAX_RAM: usize = 8;
pub const MAX_DEV: usize = 64;
pub const MAX_CPUS: usize = crate::percpu::MAX_CPUS;
pub const MAX_HIDDEN: usize = 8;
pub const MAX_REDIST_REGIONS: usize = 4;

/// Devices the host must not program, by `compatible`, and why: each writes
/// memory at physical addresses the host would give it, past stage-2. Their
/// nodes are left out of the host's DTB and their MMIO out of what the host
/// may map (an access gets an abort).
const HIDDEN: [(&str, &str); 3] = [
    ("arm,gic-v3-its", "GIC ITS: its tables and command queue live at any PA"),
    ("qemu,fw-cfg-mmio", "fw_cfg: its DMA interface reads and writes any PA"),
    ("arm,smmu-v3", "SMMUv3: the hyp's (DMA isolation)"),
];

/// The `compatible` of the SMMU the hyp drives.
pub const SMMU_COMPAT: &str = "arm,smmu-v3";

/// Why the host may not have `node`, if it may not.
pub fn hidden(node: &FdtNode) -> Option<&'static str> {
    let compat = node.compatible()?;
    HIDDEN.iter().find(|(c, _)| compat.all().any(|x| x == *c)).map(|(_, why)| *why)
}

/// A device the host does not get.
#[derive(Clone, Copy)]
pub struct Hidden {
    pub region: Region,
    pub name: &'static str,
    pub why: &'static str,
}

#[derive(Debug)]
pub enum DtError {
    NoMemory,
    NoUart,
    TooMany,
}

pub struct Machine {
    ram: [Region; MAX_RAM],
    nram: usize,
    devices: [Region; MAX_DEV],
    ndev: usize,
    pub uart: u64,
    pub gic_dist: Option<Region>,
    /// GICv3 redistributor regions (`#redistributor-regions` of them).
    gic_redists: [Region; MAX_REDIST_REGIONS],
    n_redists: usize,
    /// `redistributor-stride`, if the DTB gives one.
    pub gic_redist_stride: Option<u64>,
    hidden: [Hidden; MAX_HIDDEN],
    nhidden: usize,
    /// The (first) SMMUv3's register file, hidden from the host.
    pub smmu: Option<Region>,
    pub gic_compat: &'static str,
    pub psci_method: &'static str,
    pub cpus: [u64; MAX_CPUS],
    pub ncpus: usize,
    /// (start, end) of the initrd QEMU loaded, or (0, 0).
    pub initrd: (u64, u64),
    pub bootargs: &'static str,
}

fn push(arr: &mut [Region], n: &mut usize, r: Region) -> Result<(), DtError> {
    if r.size == 0 {
        return Ok(());
    }
    *arr.get_mut(*n).ok_or(DtError::TooMany)? = r;
    *n += 1;
    Ok(())
}

fn be_cells(b: &[u8], cells: usize) -> Option<(u64, &[u8])> {
    if b.len() < cells * 4 {
        return None;
    }
    let mut v = 0u64;
    for i in 0..cells {
        v = (v << 32) | u32::from_be_bytes(b[i * 4..i * 4 + 4].try_into().ok()?) as u64;
    }
    Some((v, &b[cells * 4..]))
}

impl Machine {
    pub fn parse(fdt: &Fdt<'static>) -> Result<Self, DtError> {
        let mut m = Machine {
            ram: [Region { base: 0, size: 0 }; MAX_RAM],
            nram: 0,
            devices: [Region { base: 0, size: 0 }; MAX_DEV],
            ndev: 0,
            uart: 0,
            gic_dist: None,
            gic_redists: [Region { base: 0, size: 0 }; MAX_REDIST_REGIONS],
            n_redists: 0,
            gic_redist_stride: None,
            hidden: [Hidden { region: Region { base: 0, size: 0 }, name: "", why: "" }; MAX_HIDDEN],
            nhidden: 0,
            smmu: None,
            gic_compat: "none",
            psci_method: "none",
            cpus: [0; MAX_CPUS],
            ncpus: 0,
            initrd: (0, 0),
            bootargs: "",
        };
        for r in fdt.memory().regions() {
            let r = Region { base: r.starting_address as u64, size: r.size.unwrap_or(0) as u64 };
            push(&mut m.ram, &mut m.nram, r)?;
        }
        if m.nram == 0 {
            return Err(DtError::NoMemory);
        }
        m.ram[..m.nram].sort_unstable_by_key(|r| r.base);

        // Devices: every node under the root with `reg`, and children of
        // nodes with an identity `ranges`; PCI host bridges add their windows.
        for node in fdt.find_node("/").ok_or(DtError::NoMemory)?.children() {
            let name = node.name;
            if name.starts_with("memory") || name == "cpus" || name == "chosen" || name == "reserved-memory" {
                continue;
            }
            m.add_regs(node)?;
            if node.property("ranges").is_some_and(|p| p.value.is_empty()) {
                for child in node.children() {
                    m.add_regs(child)?;
                }
            }
            if node.property("device_type").and_then(|p| p.as_str()) == Some("pci") {
                if let Some(ranges) = node.property("ranges") {
                    // (pci addr: 3 cells, cpu addr: 2 cells, size: 2 cells)
                    let mut b = ranges.value;
                    while let Some((_, rest)) = be_cells(b, 3) {
                        let Some((cpu, rest)) = be_cells(rest, 2) else {
                            break;
                        };
                        let Some((size, rest)) = be_cells(rest, 2) else {
                            break;
                        };
                        push(&mut m.devices, &mut m.ndev, Region { base: cpu, size })?;
                        b = rest;
                    }
                }
            }
            let compat = node.compatible().map(|c| c.first()).unwrap_or("");
            if compat.starts_with("arm,gic") {
                m.gic_compat = compat;
                let mut regs = node
                    .reg()
                    .into_iter()
                    .flatten()
                    .map(|r| Region { base: r.starting_address as u64, size: r.size.unwrap_or(0) as u64 });
                m.gic_dist = regs.next();
                if compat == "arm,gic-v3" {
                    // reg: distributor, then #redistributor-regions regions.
                    let n = node.property("#redistributor-regions").and_then(|p| p.as_usize()).unwrap_or(1);
                    for r in regs.take(n) {
                        push(&mut m.gic_redists, &mut m.n_redists, r)?;
                    }
                    m.gic_redist_stride =
                        node.property("redistributor-stride").and_then(|p| p.as_usize()).map(|s| s as u64);
                }
            }
            if compat.starts_with("arm,psci") {
                m.psci_method = node.property("method").and_then(|p| p.as_str()).unwrap_or("none");
            }
        }
        let stdout = fdt.chosen().stdout().or_else(|| fdt.find_compatible(&["arm,pl011"]));
        m.uart = stdout
            .and_then(|n| n.reg())
            .and_then(|mut r| r.next())
            .map(|r| r.starting_address as u64)
            .ok_or(DtError::NoUart)?;
        for cpu in fdt.cpus() {
            if m.ncpus < MAX_CPUS {
                m.cpus[m.ncpus] = cpu.ids().first() as u64;
                m.ncpus += 1;
            }
        }
        let chosen = fdt.chosen();
        let chosen_node = fdt.find_node("/chosen");
        let start = chosen_node.and_then(|c| c.property("linux,initrd-start")).and_then(|p| p.as_usize());
        let end = chosen_node.and_then(|c| c.property("linux,initrd-end")).and_then(|p| p.as_usize());
        if let (Some(s), Some(e)) = (start, end) {
            if e > s {
                m.initrd = (s as u64, e as u64);
            }
        }
        m.bootargs = chosen.bootargs().unwrap_or("");
        Ok(m)
    }

    pub fn ram(&self) -> &[Region] {
        &self.ram[..self.nram]
    }

    /// Records a device node's `reg`: as MMIO the host may map, or, for a
    /// hidden device, as MMIO it may not.
    fn add_regs(&mut self, node: FdtNode<'_, 'static>) -> Result<(), DtError> {
        let why = hidden(&node);
        for r in node.reg().into_iter().flatten() {
            let region = Region { base: r.starting_address as u64, size: r.size.unwrap_or(0) as u64 };
            match why {
                None => push(&mut self.devices, &mut self.ndev, region)?,
                Some(why) if region.size != 0 => {
                    *self.hidden.get_mut(self.nhidden).ok_or(DtError::TooMany)? =
                        Hidden { region, name: node.name, why };
                    self.nhidden += 1;
                    if self.smmu.is_none() && node.compatible().is_some_and(|c| c.all().any(|x| x == SMMU_COMPAT)) {
                        self.smmu = Some(region);
                    }
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Device MMIO regions the host may map (hidden devices left out).
    pub fn devices(&self) -> &[Region] {
        &self.devices[..self.ndev]
    }

    /// Devices hidden from the host.
    pub fn hidden(&self) -> &[Hidden] {
        &self.hidden[..self.nhidden]
    }

    /// GICv3 redistributor regions (none for other GICs).
    pub fn gic_redists(&self) -> &[Region] {
        &self.gic_redists[..self.n_redists]
    }

    pub fn uart_is_device(&self) -> bool {
        self.uart < mmu::DEVICE_LIMIT
    }

    /// IPA width for the host stage-2: enough for all RAM and devices, at
    /// least 40 bits, at most what the CPU supports (and 48).
    pub fn host_ipa_bits(&self) -> u8 {
        let top = self.ram().iter().chain(self.devices()).map(|r| r.end()).max().unwrap_or(0);
        let need = 64 - top.saturating_sub(1).leading_zeros() as u8;
        let pa_bits = match aarch64_cpu::registers::ID_AA64MMFR0_EL1.get() & 0xf {
            0 => 32,
            1 => 36,
            2 => 40,
            3 => 42,
            4 => 44,
            _ => 48,
        };
        need.max(40).min(pa_bits)
    }

    pub fn log_summary(&self) {
        for r in self.ram() {
            info!("  memory  {:#012x}..{:#012x} ({} MiB)", r.base, r.end(), r.size >> 20);
        }
        info!("  uart    {:#012x} (pl011)", self.uart);
        if let Some(d) = self.gic_dist {
            info!("  gic     {} dist {:#x}", self.gic_compat, d.base);
        }
        for r in self.gic_redists() {
            info!("  redist  {:#012x}..{:#012x}", r.base, r.end());
        }
        info!("  psci    method {}", self.psci_method);
        info!("  cpus    {} (mpidr {:#x}..)", self.ncpus, self.cpus[0]);
        info!("  devices {} MMIO regions", self.ndev);
        for h in self.hidden() {
            info!("  hidden  {:#012x}..{:#012x} {} ({})", h.region.base, h.region.end(), h.name, h.why);
        }
        if self.initrd.1 > self.initrd.0 {
            info!("  initrd  {:#x}..{:#x}", self.initrd.0, self.initrd.1);
        }
    }
}
