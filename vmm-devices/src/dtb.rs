//! The guest's device tree: memory, the PL011 and the interrupt test
//! device on the GICv3, the virtual timer, PSCI over HVC, the CPUs, a
//! Linux guest's initramfs, and the virtio devices (with their DMA pool's
//! `/reserved-memory`) if it has any. docs/abi.md describes it.

use alloc::vec::Vec;

use crate::loader::LinuxInfo;
use crate::platform::{GUEST_IRQ_TEST, GUEST_RAM, GUEST_UART, IRQ_TEST_INTID, UART_INTID};
use crate::virtio::Devices;

/// The PL011's clock (QEMU virt's `apb-pclk`, 24 MHz): its phandle.
const CLK_PHANDLE: u32 = 0x8003;

/// The DTB of a guest with `mem` bytes of RAM, the command line
/// `bootargs` and `vcpus` vCPUs; `linux` names a Linux guest's initramfs,
/// `virtio` its devices. Empty if the writer fails (it only fails on a
/// malformed tree, which this never builds).
pub fn guest_dtb(
    mem: u64,
    bootargs: &str,
    vcpus: usize,
    linux: Option<&LinuxInfo>,
    virtio: Option<&Devices>,
) -> Vec<u8> {
    build(mem, bootargs, vcpus, linux, virtio).unwrap_or_default()
}

fn build(
    mem: u64,
    bootargs: &str,
    vcpus: usize,
    linux: Option<&LinuxInfo>,
    virtio: Option<&Devices>,
) -> Result<Vec<u8>, vm_fdt::Error> {
    let mut w = vm_fdt::FdtWriter::new()?;
    let root = w.begin_node("")?;
    w.property_string("compatible", "linux,dummy-virt")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("interrupt-parent", crate::gic::PHANDLE)?;
    let chosen = w.begin_node("chosen")?;
    w.property_string("bootargs", bootargs)?;
    w.property_string("stdout-path", "/pl011@9000000")?;
    if let Some(l) = linux {
        w.property_u64("linux,initrd-start", l.initrd.0)?;
        w.property_u64("linux,initrd-end", l.initrd.1)?;
    }
    w.end_node(chosen)?;
    let clk = w.begin_node("apb-pclk")?;
    w.property_string("compatible", "fixed-clock")?;
    w.property_u32("#clock-cells", 0)?;
    w.property_u32("clock-frequency", 24_000_000)?;
    w.property_string("clock-output-names", "clk24mhz")?;
    w.property_u32("phandle", CLK_PHANDLE)?;
    w.end_node(clk)?;
    let m = w.begin_node("memory@40000000")?;
    w.property_string("device_type", "memory")?;
    w.property_array_u64("reg", &[GUEST_RAM, mem])?;
    w.end_node(m)?;
    crate::gic::dtb_nodes(&mut w, vcpus)?;
    let u = w.begin_node("pl011@9000000")?;
    w.property_string_list("compatible", alloc::vec!["arm,pl011".into(), "arm,primecell".into()])?;
    w.property_array_u64("reg", &[GUEST_UART, crate::pl011::SIZE])?;
    w.property_array_u32("interrupts", &[0, (UART_INTID - 32) as u32, 4])?;
    w.property_array_u32("clocks", &[CLK_PHANDLE, CLK_PHANDLE])?;
    w.property_string_list("clock-names", alloc::vec!["uartclk".into(), "apb_pclk".into()])?;
    w.end_node(u)?;
    let t = w.begin_node("irq-test@b000000")?;
    w.property_string("compatible", "pkvm-rs,irq-test")?;
    w.property_array_u64("reg", &[GUEST_IRQ_TEST, crate::irq_test::SIZE])?;
    w.property_array_u32("interrupts", &[0, (IRQ_TEST_INTID - 32) as u32, 4])?;
    w.end_node(t)?;
    if let Some(v) = virtio {
        v.dtb_nodes(&mut w)?;
    }
    let p = w.begin_node("psci")?;
    w.property_string_list("compatible", alloc::vec!["arm,psci-1.0".into(), "arm,psci-0.2".into()])?;
    w.property_string("method", "hvc")?;
    w.end_node(p)?;
    let cpus = w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    for i in 0..vcpus {
        let c = w.begin_node(&alloc::format!("cpu@{i}"))?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,armv8")?;
        w.property_u32("reg", i as u32)?;
        w.property_string("enable-method", "psci")?;
        w.end_node(c)?;
    }
    w.end_node(cpus)?;
    w.end_node(root)?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;
    use crate::virtio::{Config, DmaPool};

    fn cells(n: &fdt::node::FdtNode, prop: &str) -> Vec<u32> {
        let v = n.property(prop).unwrap().value;
        v.chunks(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect()
    }

    #[test]
    fn an_elf_guest() {
        let blob = guest_dtb(16 << 20, "test=irq", 3, None, None);
        let f = fdt::Fdt::new(&blob).unwrap();
        assert_eq!(f.chosen().bootargs(), Some("test=irq"));
        let m = f.memory().regions().next().unwrap();
        assert_eq!((m.starting_address as u64, m.size), (GUEST_RAM, Some(16 << 20)));
        assert_eq!(f.cpus().count(), 3);
        let gic = f.find_node("/intc@8000000").unwrap();
        let r: Vec<_> = gic.reg().unwrap().map(|r| (r.starting_address as u64, r.size)).collect();
        assert_eq!(r, [(0x0800_0000, Some(0x1_0000)), (0x080a_0000, Some(3 * 0x2_0000))]);
        let uart = f.find_node("/pl011@9000000").unwrap();
        assert_eq!(cells(&uart, "interrupts"), [0, 1, 4]);
        let t = f.find_node("/irq-test@b000000").unwrap();
        assert_eq!(cells(&t, "interrupts"), [0, 2, 4]);
        assert_eq!(cells(&f.find_node("/timer").unwrap(), "interrupts"), [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]);
        assert_eq!(f.find_node("/psci").unwrap().property("method").unwrap().as_str(), Some("hvc"));
        assert!(f.find_node("/chosen").unwrap().property("linux,initrd-start").is_none());
        assert!(f.find_node("/virtio_mmio@a000000").is_none());
    }

    #[test]
    fn a_linux_guest_with_virtio() {
        let info = LinuxInfo {
            kernel: GUEST_RAM + 0x20_0000,
            kernel_size: 0x10_0000,
            initrd: (0x4700_0000, 0x4700_1234),
            pool: (0x4780_0000, 0x40_0000),
        };
        let devs = Devices::new(Config { console: true, disk: None, dma_pool: Some(info.dma_pool()) });
        let blob = guest_dtb(128 << 20, crate::platform::LINUX_BOOTARGS, 1, Some(&info), Some(&devs));
        let f = fdt::Fdt::new(&blob).unwrap();
        let chosen = f.find_node("/chosen").unwrap();
        assert_eq!(chosen.property("linux,initrd-start").unwrap().as_usize(), Some(0x4700_0000));
        assert_eq!(chosen.property("linux,initrd-end").unwrap().as_usize(), Some(0x4700_1234));
        assert!(f.find_node("/reserved-memory/restricted-dma@47800000").is_some());
        assert!(f.find_node("/virtio_mmio@a000000").is_some());
        assert_eq!(devs.dma_pool, Some(DmaPool { ipa: 0x4780_0000, size: 0x40_0000 }));
    }
}
