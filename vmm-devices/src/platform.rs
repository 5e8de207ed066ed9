//! The guest platform every VMM of this project gives its guests
//! (docs/abi.md, "The guest platform"; QEMU `virt`'s layout): the address
//! map, and [`Platform`], which takes a guest's MMIO exit to the device
//! model at that address and keeps the devices' interrupt lines in the
//! GIC.

use crate::gic::Gic;
use crate::irq::IrqControl;
use crate::irq_test::{self, IrqTest};
use crate::mem::GuestMem;
use crate::pl011::{self, Pl011};
use crate::virtio::Devices;
use alloc::vec::Vec;

/// Guest RAM starts here (its size is the guest's).
pub const GUEST_RAM: u64 = 0x4000_0000;
/// The guest DTB sits in the first 64 KiB of guest RAM.
pub const DTB_SIZE: usize = 0x1_0000;
/// A guest has 1 to 8 vCPUs.
pub const MAX_VCPUS: usize = 8;
/// The PL011 ([`crate::pl011`]).
pub const GUEST_UART: u64 = 0x0900_0000;
/// The PL011's interrupt: SPI 1, as on QEMU `virt`.
pub const UART_INTID: usize = 33;
/// The interrupt test device ([`crate::irq_test`]), SPI 2.
pub const GUEST_IRQ_TEST: u64 = 0x0b00_0000;
pub const IRQ_TEST_INTID: usize = 34;
/// A Linux guest's command line: the PL011 as its console (no earlycon: it
/// would map the UART through a fixmap that MMIO_GUARD never sees).
pub const LINUX_BOOTARGS: &str = "console=ttyAMA0 panic=-1";
/// The restricted DMA pool of a Linux guest (`restricted-dma-pool`): its
/// devices bounce all DMA through it, and Linux shares it page by page.
pub const DMA_POOL_SIZE: u64 = 4 << 20;

/// Which device a line of text output comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// The PL011 (printed `[vm N] ...` by the shim).
    Uart,
    /// A virtio device, the console (printed `[vm N hvc0] ...`).
    Virtio,
}

/// The device models of one guest: the GIC (which `I` connects to the
/// hyp), the PL011, the interrupt test device and the virtio devices.
pub struct Platform<I: IrqControl> {
    pub gic: Gic<I>,
    pub uart: Pl011,
    pub irq_test: IrqTest,
    /// None: the guest has no virtio device (its DTB names none).
    pub virtio: Option<Devices>,
    /// MMIO exits the virtio devices served.
    pub virtio_exits: u64,
}

impl<I: IrqControl> Platform<I> {
    pub fn new(irq: I, vcpus: usize, virtio: Option<Devices>) -> Platform<I> {
        Platform { gic: Gic::new(irq, vcpus), uart: Pl011::new(), irq_test: IrqTest::new(), virtio, virtio_exits: 0 }
    }

    /// A guest access of `size` bytes at `ipa` (`value`: what a write
    /// stores); Some(the value read, 0 for a write) if a device is there,
    /// None if nothing is. Only a virtio device reaches guest memory: then,
    /// and only then, `mem` is called once to open the session (one MMIO
    /// exit) the devices use; the session ends when the `M` is dropped,
    /// before this returns. Complete text lines go to `out`. Afterwards
    /// every device line the access changed is up to date in the GIC.
    #[inline(always)]
    pub fn mmio<M: GuestMem>(
        &mut self,
        ipa: u64,
        write: bool,
        size: u64,
        value: u64,
        mem: impl FnOnce() -> M,
        mut out: impl FnMut(Port, &str),
    ) -> Option<u64> {
        // (Inlined into the VMM, the virtio part out of line: PL011 and
        // test device accesses are the hot path of a VMM's MMIO exits.)
        if (GUEST_UART..GUEST_UART + pl011::SIZE).contains(&ipa) {
            let v = self.uart.mmio(ipa - GUEST_UART, write, value, &mut |l| out(Port::Uart, l));
            self.gic.set_spi_line(UART_INTID, self.uart.level());
            return Some(v);
        }
        if (GUEST_IRQ_TEST..GUEST_IRQ_TEST + irq_test::SIZE).contains(&ipa) {
            let v = self.irq_test.mmio(ipa - GUEST_IRQ_TEST, write, value);
            self.gic.set_spi_line(IRQ_TEST_INTID, self.irq_test.level());
            return Some(v);
        }
        if self.virtio.as_ref().is_some_and(|d| d.claims(ipa)) {
            return self.virtio_mmio(ipa, write, size, value, mem, &mut out);
        }
        self.gic.mmio(ipa, write, size, value)
    }

    /// The devices of the guest's DTB, as (name, base IPA, size): the GIC's
    /// distributor and redistributors, the PL011, the interrupt test device
    /// and each virtio-mmio slot. A guest's MMIO_GUARD calls should name
    /// only granules of these.
    pub fn devices(&self) -> Vec<(&'static str, u64, u64)> {
        use crate::gic::{GICD, GICD_SIZE, GICR, GICR_STRIDE};
        let mut v = Vec::from([
            ("GIC distributor", GICD, GICD_SIZE),
            ("GIC redistributors", GICR, GICR_STRIDE * self.gic.vcpus() as u64),
            ("PL011", GUEST_UART, pl011::SIZE),
            ("interrupt test device", GUEST_IRQ_TEST, irq_test::SIZE),
        ]);
        if let Some(d) = &self.virtio {
            let mut k = 0;
            while d.slot(k).is_some() {
                v.push((
                    "virtio-mmio",
                    crate::virtio::MMIO_BASE + k as u64 * crate::virtio::MMIO_SIZE,
                    crate::virtio::MMIO_SIZE,
                ));
                k += 1;
            }
        }
        v
    }

    /// The 4 KiB granules the guest's devices span (slots sharing a granule
    /// counted once).
    pub fn device_granules(&self) -> u64 {
        let mut g: Vec<u64> =
            self.devices().iter().flat_map(|&(_, base, size)| (base >> 12)..(base + size).div_ceil(4096)).collect();
        g.sort_unstable();
        g.dedup();
        g.len() as u64
    }

    /// [`Platform::mmio`] for a virtio device's window.
    #[inline(never)]
    fn virtio_mmio<M: GuestMem>(
        &mut self,
        ipa: u64,
        write: bool,
        size: u64,
        value: u64,
        mem: impl FnOnce() -> M,
        out: &mut dyn FnMut(Port, &str),
    ) -> Option<u64> {
        let devs = self.virtio.as_mut()?;
        let mut m = mem();
        let v = devs.mmio(&mut m, &mut |l| out(Port::Virtio, l), ipa, write, size, value);
        drop(m);
        self.virtio_exits += 1;
        for (intid, level) in devs.lines() {
            self.gic.set_spi_line(intid, level);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use std::string::{String, ToString};
    use std::vec::Vec;

    use super::*;
    use crate::irq::IrqOp;
    use crate::mem::fake::FakeMem;
    use crate::virtio::{Config, MMIO_BASE};

    /// Records the lines raised and lowered.
    #[derive(Default)]
    struct Lines(Vec<(u32, bool)>);

    impl IrqControl for Lines {
        fn vcpu_irq(&mut self, _vcpu: usize, intid: u32, op: IrqOp) -> Result<(u32, u32), i64> {
            if let IrqOp::Line { level } = op {
                self.0.push((intid, level));
            }
            Ok((0, 0))
        }
    }

    #[test]
    fn accesses_reach_their_device_and_lines_follow() {
        let virtio = Devices::new(Config { console: true, disk: None, dma_pool: None });
        let mut p = Platform::new(Lines::default(), 1, Some(virtio));
        let mut out: Vec<(Port, String)> = Vec::new();
        let mut sessions = 0;
        let mut access = |p: &mut Platform<Lines>, ipa, write, v| {
            p.mmio(
                ipa,
                write,
                4,
                v,
                || {
                    sessions += 1;
                    FakeMem::new(GUEST_RAM, 0x1000)
                },
                |port: Port, l: &str| out.push((port, l.to_string())),
            )
        };
        // The PL011: a line, its transmit interrupt unmasked.
        access(&mut p, GUEST_UART + 0x38, true, pl011::TXI as u64);
        for &b in b"ok\n" {
            access(&mut p, GUEST_UART, true, b as u64);
        }
        assert_eq!(access(&mut p, GUEST_UART + 0x18, false, 0), Some(0x90));
        // The test device's line, up and down.
        access(&mut p, GUEST_IRQ_TEST, true, 1);
        access(&mut p, GUEST_IRQ_TEST + 4, true, 0);
        // The virtio console's magic, the GIC's TYPER, and nothing.
        assert_eq!(access(&mut p, MMIO_BASE, false, 0), Some(0x7472_6976));
        assert!(access(&mut p, crate::gic::GICD + 4, false, 0).is_some());
        assert_eq!(access(&mut p, MMIO_BASE + 0x200, false, 0), None);
        assert_eq!(access(&mut p, 0x0c00_0000, false, 0), None);
        assert_eq!(out, [(Port::Uart, "ok".to_string())]);
        assert_eq!(sessions, 1, "only the virtio access opened a guest-memory session");
        assert_eq!(p.virtio_exits, 1);
        let lines = &p.gic.irq().0;
        assert_eq!(lines, &[(33, true), (34, true), (34, false)]);
    }

    /// The device list follows the DTB's: a Linux guest with 2 vCPUs and
    /// a console and a disk guards at most 16 + 64 + 1 + 1 + 1 granules
    /// (the two virtio slots share one).
    #[test]
    fn device_granules_follow_the_platform() {
        let virtio = Devices::new(Config {
            console: true,
            disk: Some(std::boxed::Box::new(crate::virtio::Disk::ReadOnly(&[0u8; 512]))),
            dma_pool: None,
        });
        let p = Platform::new(Lines::default(), 2, Some(virtio));
        let d = p.devices();
        assert_eq!(d.len(), 6);
        assert_eq!(d[1], ("GIC redistributors", crate::gic::GICR, 0x4_0000));
        assert_eq!(d[5], ("virtio-mmio", MMIO_BASE + 0x200, 0x200));
        assert_eq!(p.device_granules(), 16 + 64 + 1 + 1 + 1);
        let bare = Platform::new(Lines::default(), 1, None);
        assert_eq!(bare.device_granules(), 16 + 32 + 1 + 1);
    }
}
