//! A guest program (an AArch64 ELF for QEMU `virt`) and its DTB, placed in
//! the guest's memory through the memory fd before the VM first runs: the
//! guest platform of docs/abi.md (RAM at 0x4000_0000, the DTB in its first
//! 64 KiB, x0 = its address).

use vm_fdt::FdtWriter;

pub const GUEST_RAM: u64 = 0x4000_0000;
pub const DTB_WINDOW: u64 = 0x1_0000;
pub const UART: u64 = 0x0900_0000;
pub const UART_INTID: u32 = 33;
pub const GICD: u64 = 0x0800_0000;
pub const GICR: u64 = 0x080a_0000;
pub const GICR_STRIDE: u64 = 0x2_0000;
const GIC_PHANDLE: u32 = 0x8001;
const CLK_PHANDLE: u32 = 0x8003;

/// A loadable segment: where in guest RAM (an IPA) and its file bytes; the
/// rest of its memory size stays zero (the driver's pages start zeroed).
#[derive(Debug, PartialEq, Eq)]
pub struct Segment {
    pub ipa: u64,
    pub file: std::ops::Range<usize>,
}

/// An ELF guest: its entry point and segments.
#[derive(Debug)]
pub struct Program {
    pub entry: u64,
    pub segments: Vec<Segment>,
}

fn u16_at(b: &[u8], o: usize) -> u64 {
    u16::from_le_bytes([b[o], b[o + 1]]).into()
}
fn u32_at(b: &[u8], o: usize) -> u64 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap()).into()
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Checks an ELF file against a guest of `mem` bytes: a 64-bit
/// little-endian AArch64 executable whose PT_LOAD segments lie in guest RAM
/// above the DTB window and in the file, and whose entry is in guest RAM.
pub fn parse_elf(elf: &[u8], mem: u64) -> Result<Program, String> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 || u16_at(elf, 18) != 183 {
        return Err("not a 64-bit little-endian AArch64 ELF".into());
    }
    let (phoff, phentsize, phnum) = (u64_at(elf, 32), u16_at(elf, 54), u16_at(elf, 56));
    if phnum > 0 && phentsize < 56 {
        return Err("program header entries too small".into());
    }
    let table_end = phnum.checked_mul(phentsize).and_then(|n| n.checked_add(phoff));
    if table_end.is_none_or(|e| e > elf.len() as u64) {
        return Err("program headers outside the file".into());
    }
    let ram = GUEST_RAM..GUEST_RAM + mem;
    let mut segments = Vec::new();
    for i in 0..phnum {
        let ph = (phoff + i * phentsize) as usize;
        if u32_at(elf, ph) != 1 {
            continue;
        }
        // Loaded at its physical address, as QEMU loads an ELF.
        let (off, paddr) = (u64_at(elf, ph + 8), u64_at(elf, ph + 24));
        let (filesz, memsz) = (u64_at(elf, ph + 32), u64_at(elf, ph + 40));
        let memsz = memsz.max(filesz);
        if off.checked_add(filesz).is_none_or(|e| e > elf.len() as u64) {
            return Err(format!("segment {i}: data outside the file"));
        }
        let end = paddr.checked_add(memsz).ok_or(format!("segment {i}: wraps"))?;
        if memsz > 0 && (paddr < ram.start + DTB_WINDOW || end > ram.end) {
            return Err(format!(
                "segment {i} at {paddr:#x}..{end:#x} is not in guest RAM above the DTB ({:#x}..{:#x})",
                ram.start + DTB_WINDOW,
                ram.end
            ));
        }
        segments.push(Segment { ipa: paddr, file: off as usize..(off + filesz) as usize });
    }
    let entry = u64_at(elf, 24);
    if !ram.contains(&entry) {
        return Err(format!("entry point {entry:#x} is outside guest RAM"));
    }
    Ok(Program { entry, segments })
}

/// The guest's DTB: its memory, `bootargs`, the PL011 as its console, the
/// GICv3 and the virtual timer, PSCI over HVC and `vcpus` CPUs.
pub fn dtb(mem: u64, bootargs: &str, vcpus: u32) -> Result<Vec<u8>, vm_fdt::Error> {
    let mut w = FdtWriter::new()?;
    let root = w.begin_node("")?;
    w.property_string("compatible", "linux,dummy-virt")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("interrupt-parent", GIC_PHANDLE)?;
    let chosen = w.begin_node("chosen")?;
    w.property_string("bootargs", bootargs)?;
    w.property_string("stdout-path", "/pl011@9000000")?;
    w.end_node(chosen)?;
    let m = w.begin_node("memory@40000000")?;
    w.property_string("device_type", "memory")?;
    w.property_array_u64("reg", &[GUEST_RAM, mem])?;
    w.end_node(m)?;
    let gic = w.begin_node("intc@8000000")?;
    w.property_string("compatible", "arm,gic-v3")?;
    w.property_u32("#interrupt-cells", 3)?;
    w.property_null("interrupt-controller")?;
    w.property_array_u64("reg", &[GICD, 0x1_0000, GICR, GICR_STRIDE * u64::from(vcpus)])?;
    w.property_u32("phandle", GIC_PHANDLE)?;
    w.end_node(gic)?;
    let timer = w.begin_node("timer")?;
    w.property_string("compatible", "arm,armv8-timer")?;
    // Secure, non-secure, virtual and hypervisor PPIs (13, 14, 11, 10), level.
    w.property_array_u32("interrupts", &[1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4])?;
    w.end_node(timer)?;
    let clk = w.begin_node("apb-pclk")?;
    w.property_string("compatible", "fixed-clock")?;
    w.property_u32("#clock-cells", 0)?;
    w.property_u32("clock-frequency", 24_000_000)?;
    w.property_u32("phandle", CLK_PHANDLE)?;
    w.end_node(clk)?;
    let u = w.begin_node("pl011@9000000")?;
    w.property_string_list("compatible", vec!["arm,pl011".into(), "arm,primecell".into()])?;
    w.property_array_u64("reg", &[UART, 0x1000])?;
    w.property_array_u32("interrupts", &[0, UART_INTID - 32, 4])?;
    w.property_array_u32("clocks", &[CLK_PHANDLE, CLK_PHANDLE])?;
    w.property_string_list("clock-names", vec!["uartclk".into(), "apb_pclk".into()])?;
    w.end_node(u)?;
    let p = w.begin_node("psci")?;
    w.property_string_list("compatible", vec!["arm,psci-1.0".into(), "arm,psci-0.2".into()])?;
    w.property_string("method", "hvc")?;
    w.end_node(p)?;
    let cpus = w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    for i in 0..vcpus {
        let c = w.begin_node(&format!("cpu@{i}"))?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,armv8")?;
        w.property_u32("reg", i)?;
        w.property_string("enable-method", "psci")?;
        w.end_node(c)?;
    }
    w.end_node(cpus)?;
    w.end_node(root)?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF: one PT_LOAD of `data` at `paddr`, entry `entry`.
    fn elf(paddr: u64, entry: u64, data: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 64 + 56];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[18..20].copy_from_slice(&183u16.to_le_bytes());
        e[24..32].copy_from_slice(&entry.to_le_bytes());
        e[32..40].copy_from_slice(&64u64.to_le_bytes());
        e[54..56].copy_from_slice(&56u16.to_le_bytes());
        e[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        e[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
        e[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes());
        e[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes());
        e[ph + 32..ph + 40].copy_from_slice(&(data.len() as u64).to_le_bytes());
        e[ph + 40..ph + 48].copy_from_slice(&(data.len() as u64 + 16).to_le_bytes());
        e.extend_from_slice(data);
        e
    }

    #[test]
    fn loads_a_program() {
        let p = parse_elf(&elf(0x4008_0000, 0x4008_0000, b"code"), 1 << 20).unwrap();
        assert_eq!(p.entry, 0x4008_0000);
        assert_eq!(p.segments, [Segment { ipa: 0x4008_0000, file: 120..124 }]);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let e = |r: Result<Program, String>| r.unwrap_err();
        assert!(e(parse_elf(b"not an elf", 1 << 20)).contains("AArch64 ELF"));
        assert!(e(parse_elf(&elf(0x4000_0000, 0x4000_0000, b"x"), 1 << 20)).contains("above the DTB"));
        assert!(e(parse_elf(&elf(0x400f_fff0, 0x4008_0000, b"x"), 1 << 20)).contains("not in guest RAM"));
        assert!(e(parse_elf(&elf(0x4008_0000, 0x5000_0000, b"x"), 1 << 20)).contains("entry point"));
        assert!(e(parse_elf(&elf(u64::MAX - 4, 0x4008_0000, b"x"), 1 << 20)).contains("wraps"));
        let mut short = elf(0x4008_0000, 0x4008_0000, b"data");
        short.truncate(121);
        assert!(e(parse_elf(&short, 1 << 20)).contains("outside the file"));
        let mut far = elf(0x4008_0000, 0x4008_0000, b"x");
        far[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(e(parse_elf(&far, 1 << 20)).contains("program headers outside"));
    }

    #[test]
    fn the_dtb_fits_its_window() {
        let d = dtb(64 << 20, "test=all", 8).unwrap();
        assert!(d.len() as u64 <= DTB_WINDOW);
        assert_eq!(&d[..4], &[0xd0, 0x0d, 0xfe, 0xed]);
    }
}
