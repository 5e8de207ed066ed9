//! The device tree the host boots with: QEMU's, with the hyp's memory taken
//! away (a no-map /reserved-memory node), the devices the host may not
//! program left out (`dt::hidden`: the GIC ITS, fw_cfg, the SMMU) along
//! with every `msi-parent`/`msi-map`/`iommus`/`iommu-map` reference to them, `hyp.*` options removed from
//! the command line, and /chosen's initrd narrowed to the host's part of the
//! boot bundle.

use alloc::string::String;
use alloc::vec::Vec;

use fdt::node::FdtNode;
use fdt::Fdt;
use vm_fdt::{FdtReserveEntry, FdtWriter};

use hyp_core::mm::region::Region;

use super::dt::{self, Machine};

struct Ctx<'a> {
    fdt: &'a Fdt<'a>,
    /// Phandles of hidden nodes.
    hidden: Vec<u32>,
    hyp: Region,
    initrd: (u64, u64),
    bootargs: &'a str,
    addr_cells: usize,
    size_cells: usize,
}

fn cells(v: u64, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in (0..n).rev() {
        out.extend_from_slice(&((v >> (32 * i)) as u32).to_be_bytes());
    }
    out
}

fn hyp_reservation(w: &mut FdtWriter, c: &Ctx) -> Result<(), vm_fdt::Error> {
    let n = w.begin_node(&alloc::format!("hyp@{:x}", c.hyp.base))?;
    let mut reg = cells(c.hyp.base, c.addr_cells);
    reg.extend(cells(c.hyp.size, c.size_cells));
    w.property("reg", &reg)?;
    w.property_null("no-map")?;
    w.end_node(n)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// An `msi-parent`, `msi-map`, `iommus` or `iommu-map` value without the
/// entries that name a hidden MSI controller or IOMMU (the SMMU: the host
/// must not look for it); None if it cannot be parsed (then it goes too).
fn without_hidden(c: &Ctx, name: &str, v: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = v;
    while !rest.is_empty() {
        // msi-map: (rid-base, phandle, msi-base, length); msi-parent:
        // (phandle, #msi-cells of that controller).
        let (phandle, len) = if name == "msi-map" || name == "iommu-map" {
            (be32(rest.get(4..8)?), 16)
        } else {
            let phandle = be32(rest.get(..4)?);
            let ctrl = c.fdt.find_phandle(phandle)?;
            let cells_name = if name == "iommus" { "#iommu-cells" } else { "#msi-cells" };
            let cells = ctrl.property(cells_name).and_then(|p| p.as_usize()).unwrap_or(0);
            (phandle, 4 * (1 + cells))
        };
        let entry = rest.get(..len)?;
        if !c.hidden.contains(&phandle) {
            out.extend_from_slice(entry);
        }
        rest = &rest[len..];
    }
    Some(out)
}

fn copy(w: &mut FdtWriter, node: FdtNode, name: &str, depth: usize, c: &Ctx) -> Result<(), vm_fdt::Error> {
    let n = w.begin_node(name)?;
    let chosen = depth == 1 && name == "chosen";
    let reserved = depth == 1 && name == "reserved-memory";
    // `iommu-map-mask` goes with the last `iommu-map` entry.
    let iommu_map_left =
        node.property("iommu-map").and_then(|p| without_hidden(c, "iommu-map", p.value)).is_some_and(|v| !v.is_empty());
    for p in node.properties() {
        if chosen && matches!(p.name, "bootargs" | "linux,initrd-start" | "linux,initrd-end") {
            continue;
        }
        if p.name == "iommu-map-mask" && !iommu_map_left {
            continue;
        }
        if matches!(p.name, "msi-parent" | "msi-map" | "iommus" | "iommu-map") {
            if let Some(v) = without_hidden(c, p.name, p.value).filter(|v| !v.is_empty()) {
                w.property(p.name, &v)?;
            }
            continue;
        }
        w.property(p.name, p.value)?;
    }
    if chosen {
        w.property_string("bootargs", c.bootargs)?;
        if c.initrd.1 > c.initrd.0 {
            w.property_u64("linux,initrd-start", c.initrd.0)?;
            w.property_u64("linux,initrd-end", c.initrd.1)?;
        }
    }
    let mut has_reserved = false;
    for child in node.children().filter(|n| dt::hidden(n).is_none()) {
        has_reserved |= depth == 0 && child.name == "reserved-memory";
        copy(w, child, child.name, depth + 1, c)?;
    }
    if reserved {
        hyp_reservation(w, c)?;
    }
    if depth == 0 && !has_reserved {
        let r = w.begin_node("reserved-memory")?;
        w.property_u32("#address-cells", c.addr_cells as u32)?;
        w.property_u32("#size-cells", c.size_cells as u32)?;
        w.property_null("ranges")?;
        hyp_reservation(w, c)?;
        w.end_node(r)?;
    }
    w.end_node(n)
}

pub fn build(fdt: &Fdt, m: &Machine, hyp: Region, initrd: (u64, u64)) -> Result<Vec<u8>, vm_fdt::Error> {
    let mut reserve = Vec::new();
    for r in fdt.memory_reservations() {
        reserve.push(FdtReserveEntry::new(r.address() as u64, r.size() as u64)?);
    }
    let mut w = FdtWriter::new_with_mem_reserv(&reserve)?;
    let bootargs: String =
        m.bootargs.split_ascii_whitespace().filter(|t| !t.starts_with("hyp.")).collect::<Vec<_>>().join(" ");
    let root = fdt.root();
    let sizes = root.cell_sizes();
    let hidden = fdt
        .all_nodes()
        .filter(|n| dt::hidden(n).is_some())
        .filter_map(|n| n.property("phandle").or_else(|| n.property("linux,phandle")))
        .filter_map(|p| p.as_usize())
        .map(|p| p as u32)
        .collect();
    let c = Ctx {
        fdt,
        hidden,
        hyp,
        initrd,
        bootargs: &bootargs,
        addr_cells: sizes.address_cells,
        size_cells: sizes.size_cells,
    };
    let root_node = fdt.find_node("/").ok_or(vm_fdt::Error::InvalidString)?;
    copy(&mut w, root_node, "", 0, &c)?;
    w.finish()
}
