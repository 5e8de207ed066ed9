//! What the device tree tells the hyp about the machine. Parsed before the
//! heap exists, so everything lands in fixed-size arrays.

use aarch64_cpu::registers::Readable;
use fdt::Fdt;
use log::info;

use hyp::mm::mem_protect::Region;

use crate::arch::aarch64::mmu;

pub const MAX_RAM: usize = 8;
pub const MAX_DEV: usize = 64;
pub const MAX_CPUS: usize = 8;

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
    pub gic_redist: Option<Region>,
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
            gic_redist: None,
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
            if let Some(regs) = node.reg() {
                for r in regs {
                    let reg = Region { base: r.starting_address as u64, size: r.size.unwrap_or(0) as u64 };
                    push(&mut m.devices, &mut m.ndev, reg)?;
                }
            }
            if node.property("ranges").is_some_and(|p| p.value.is_empty()) {
                for child in node.children() {
                    for r in child.reg().into_iter().flatten() {
                        let reg = Region { base: r.starting_address as u64, size: r.size.unwrap_or(0) as u64 };
                        push(&mut m.devices, &mut m.ndev, reg)?;
                    }
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
                let mut regs = node.reg().into_iter().flatten();
                m.gic_dist =
                    regs.next().map(|r| Region { base: r.starting_address as u64, size: r.size.unwrap_or(0) as u64 });
                m.gic_redist =
                    regs.next().map(|r| Region { base: r.starting_address as u64, size: r.size.unwrap_or(0) as u64 });
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

    pub fn devices(&self) -> &[Region] {
        &self.devices[..self.ndev]
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
        if let (Some(d), Some(r)) = (self.gic_dist, self.gic_redist) {
            info!("  gic     {} dist {:#x} redist {:#x}..{:#x}", self.gic_compat, d.base, r.base, r.end());
        }
        info!("  psci    method {}", self.psci_method);
        info!("  cpus    {} (mpidr {:#x}..)", self.ncpus, self.cpus[0]);
        info!("  devices {} MMIO regions", self.ndev);
        if self.initrd.1 > self.initrd.0 {
            info!("  initrd  {:#x}..{:#x}", self.initrd.0, self.initrd.1);
        }
    }
}
