//! The guest's GICv3 distributor and redistributors, emulated by the
//! VMM through MMIO exits (QEMU `virt`'s layout: GICD at 0x0800_0000, one
//! redistributor per vCPU from 0x080A_0000, 128 KiB each). What the guest
//! enables, prioritises and routes becomes CONFIGURE operations for the
//! vCPU concerned through the [`IrqControl`] seam; device lines become LINE
//! operations. The hyp alone writes the list registers (docs/abi.md).
//!
//! INTIDs 0..127: SGIs and PPIs per vCPU, SPIs 32..127 routed to one vCPU
//! each (GICD_IROUTER Aff0; IRM = 1 means vCPU 0). All interrupts are
//! non-secure group 1 (IGROUPR reads all ones, writes ignored); pending and
//! active state lives in the hyp (list registers, latched edges, lines) and
//! is read back and cleared through `VCPU_IRQ` STATE and CLEAR.

use alloc::vec;
use alloc::vec::Vec;

use hyp_abi::host::irq;

use crate::irq::{IrqControl, IrqOp};

pub const GICD: u64 = 0x0800_0000;
pub const GICD_SIZE: u64 = 0x1_0000;
pub const GICR: u64 = 0x080A_0000;
pub const GICR_STRIDE: u64 = 0x2_0000;
const NR: usize = irq::NR_INTIDS as usize;
/// The GIC node's phandle in the guest DTB (the root's interrupt-parent).
pub const PHANDLE: u32 = 0x8001;
const NR_SPI: usize = NR - 32;

/// GICD_CTLR: EnableGrp1NS [1], ARE_NS [4] (RAO), RWP [31] (0).
const CTLR_GRP1: u32 = 1 << 1;
const CTLR_ARE: u32 = 1 << 4;
/// GICR_WAKER: ProcessorSleep [1], ChildrenAsleep [2].
const WAKER_SLEEP: u32 = 1 << 1;
const WAKER_ASLEEP: u32 = 1 << 2;

struct Redist {
    waker: u32,
    /// SGI/PPI enables and priorities and configuration (ICFGR0/1).
    enabled: u32,
    prio: [u8; 32],
    cfg: [u32; 2],
}

/// The distributor and the redistributors of one VM; `I` reaches the hyp.
pub struct Gic<I: IrqControl> {
    irq: I,
    ctlr: u32,
    spi_enabled: [u32; NR_SPI / 32],
    spi_prio: [u8; NR_SPI],
    spi_cfg: [u32; NR_SPI / 16],
    /// Target vCPU of each SPI.
    route: [usize; NR_SPI],
    spi_line: [bool; NR_SPI],
    redists: Vec<Redist>,
    /// Configuration calls the hyp refused (must stay 0).
    pub errors: u64,
    /// ICPENDR/ICACTIVER bits not applied: their vCPU was in the guest.
    pub clear_busy: u64,
    /// vCPUs (bit n) that got a line raised or a pulse since the VMM last
    /// looked: it runs them if they idle.
    pub kicked: u64,
}

impl<I: IrqControl> Gic<I> {
    /// A GIC for `vcpus` vCPUs (0 for a stand-in), as at reset: every
    /// interrupt disabled, priority 0, SPIs routed to vCPU 0.
    pub fn new(irq: I, vcpus: usize) -> Gic<I> {
        Gic {
            irq,
            ctlr: CTLR_ARE,
            spi_enabled: [0; NR_SPI / 32],
            spi_prio: [0; NR_SPI],
            spi_cfg: [0; NR_SPI / 16],
            route: [0; NR_SPI],
            spi_line: [false; NR_SPI],
            redists: (0..vcpus)
                .map(|_| Redist { waker: WAKER_SLEEP | WAKER_ASLEEP, enabled: 0, prio: [0; 32], cfg: [0, 0] })
                .collect(),
            errors: 0,
            clear_busy: 0,
            kicked: 0,
        }
    }

    /// The hyp's interrupt control (e.g. for the VMM's own calls).
    pub fn irq(&mut self) -> &mut I {
        &mut self.irq
    }

    /// How many vCPUs (redistributors) the GIC has.
    pub fn vcpus(&self) -> usize {
        self.redists.len()
    }

    fn call(&mut self, vcpu: usize, intid: usize, op: IrqOp) {
        if self.irq.vcpu_irq(vcpu, intid as u32, op).is_err() {
            self.errors += 1;
        }
        if matches!(op, IrqOp::Pulse | IrqOp::Line { level: true }) {
            self.kicked |= 1 << vcpu;
        }
    }

    /// (pending, active) bits of the 32 INTIDs from `first` on `vcpu`, as
    /// the hyp has them (list registers, latched edges, asserted lines).
    fn states(&mut self, vcpu: usize, first: usize) -> (u32, u32) {
        match self.irq.vcpu_irq(vcpu, first as u32, IrqOp::State) {
            Ok(s) => s,
            Err(_) => {
                self.errors += 1;
                (0, 0)
            }
        }
    }

    /// GICD_I[SC]PENDR<r> / I[SC]ACTIVER<r> read for SPIs (r = 1..=3):
    /// each SPI's bit from the vCPU it is routed to.
    fn spi_states(&mut self, r: usize, active: bool) -> u32 {
        let mut out = 0;
        let mut asked = 0u64;
        for b in 0..32 {
            let to = self.route[(r - 1) * 32 + b];
            if asked & (1 << to) != 0 {
                continue;
            }
            asked |= 1 << to;
            let (p, a) = self.states(to, r * 32);
            let mine = (0..32).filter(|&k| self.route[(r - 1) * 32 + k] == to).fold(0u32, |m, k| m | 1 << k);
            out |= if active { a } else { p } & mine;
        }
        out
    }

    /// ICPENDR/ICACTIVER: clears `what` (pending or active) of the bits
    /// of `v`, INTIDs from `first`, on their vCPUs. A vCPU running on
    /// another CPU right now keeps its state (EBUSY; counted, not an error).
    fn clear_bits(&mut self, vcpu: Option<usize>, first: usize, v: u32, what: IrqOp) {
        for b in 0..32 {
            let i = first + b;
            if v & (1 << b) == 0 || i == irq::VTIMER as usize {
                continue;
            }
            let to = vcpu.unwrap_or_else(|| self.route[i - 32]);
            match self.irq.vcpu_irq(to, i as u32, what) {
                Ok(_) => {}
                Err(e) if e == -(hyp_abi::errno::EBUSY) => self.clear_busy += 1,
                Err(_) => self.errors += 1,
            }
        }
    }

    /// Tells the hyp what the guest decided for `intid` on `vcpu`.
    fn push(&mut self, vcpu: usize, intid: usize) {
        let on = self.ctlr & CTLR_GRP1 != 0;
        let (en, prio) = if intid < 32 {
            let r = &self.redists[vcpu];
            (r.enabled & (1 << intid) != 0, r.prio[intid])
        } else {
            let s = intid - 32;
            (self.spi_enabled[s / 32] & (1 << (s % 32)) != 0, self.spi_prio[s])
        };
        self.call(vcpu, intid, IrqOp::Configure { enabled: en && on, priority: prio });
    }

    fn push_all(&mut self) {
        for v in 0..self.redists.len() {
            for i in 0..32 {
                self.push(v, i);
            }
        }
        for s in 0..NR_SPI {
            self.push(self.route[s], s + 32);
        }
    }

    /// A device's level-sensitive line for SPI `intid` (32..127; others
    /// are ignored).
    #[inline]
    pub fn set_spi_line(&mut self, intid: usize, level: bool) {
        let Some(s) = intid.checked_sub(32).filter(|&s| s < NR_SPI) else {
            return;
        };
        if self.spi_line[s] == level {
            return;
        }
        self.spi_line[s] = level;
        self.call(self.route[s], intid, IrqOp::Line { level });
    }

    /// Handles an MMIO access if it is the GIC's: Some(value read).
    pub fn mmio(&mut self, ipa: u64, write: bool, size: u64, value: u64) -> Option<u64> {
        if (GICD..GICD + GICD_SIZE).contains(&ipa) {
            return Some(self.dist(ipa - GICD, write, size, value as u32) as u64);
        }
        let end = GICR + GICR_STRIDE * self.redists.len() as u64;
        if (GICR..end).contains(&ipa) {
            let v = ((ipa - GICR) / GICR_STRIDE) as usize;
            let off = (ipa - GICR) % GICR_STRIDE;
            return Some(self.redist(v, off, write, size, value));
        }
        None
    }

    fn dist(&mut self, off: u64, write: bool, size: u64, v: u32) -> u32 {
        match (off, write) {
            (0x0000, false) => self.ctlr,
            (0x0000, true) => {
                let old = self.ctlr;
                self.ctlr = CTLR_ARE | (v & CTLR_GRP1);
                if old != self.ctlr {
                    self.push_all();
                }
                0
            }
            // GICD_TYPER: ITLinesNumber = 128/32 - 1, IDbits = 16 - 1, CPUNumber.
            (0x0004, false) => 3 | (15 << 19) | (((self.redists.len() as u32).saturating_sub(1) & 7) << 5),
            // GICD_IIDR, GICD_PIDR2 (ArchRev 3).
            (0x0008, false) => 0x0100_143b,
            (0xffe8, false) => 0x3b,
            // IGROUPR: all group 1.
            (0x0080..=0x00ff, false) => u32::MAX,
            // ISENABLER/ICENABLER for SPIs (register 0 is the redistributor's).
            (0x0104..=0x017f, _) | (0x0184..=0x01ff, _) => {
                let set = off < 0x180;
                let r = (((off & 0x7f) / 4) as usize).wrapping_sub(1);
                if r >= NR_SPI / 32 {
                    return 0;
                }
                if write {
                    let old = self.spi_enabled[r];
                    self.spi_enabled[r] = if set { old | v } else { old & !v };
                    for b in 0..32 {
                        if (old ^ self.spi_enabled[r]) & (1 << b) != 0 {
                            let s = r * 32 + b;
                            self.push(self.route[s], s + 32);
                        }
                    }
                    0
                } else {
                    self.spi_enabled[r]
                }
            }
            // IPRIORITYR for SPIs, byte or word accesses.
            (0x0420..=0x047f, _) => {
                let first = (off - 0x420) as usize;
                let n = if size == 1 { 1 } else { 4 };
                let mut out = 0u32;
                for k in 0..n {
                    let s = first + k;
                    if s >= NR_SPI {
                        break;
                    }
                    if write {
                        self.spi_prio[s] = (v >> (8 * k)) as u8;
                        self.push(self.route[s], s + 32);
                    } else {
                        out |= (self.spi_prio[s] as u32) << (8 * k);
                    }
                }
                out
            }
            // ICFGR for SPIs.
            (0x0c08..=0x0c1f, _) => {
                let r = ((off - 0xc08) / 4) as usize;
                if write {
                    self.spi_cfg[r] = v & 0xaaaa_aaaa;
                    0
                } else {
                    self.spi_cfg[r]
                }
            }
            // IROUTER<n>, n = 32..127: Aff0 picks the vCPU; IRM [31] of the
            // upper word means any (vCPU 0).
            (0x6100..=0x63ff, _) => {
                let s = ((off - 0x6100) / 8) as usize;
                if write && off.is_multiple_of(8) {
                    let to = (v & 0xff) as usize;
                    let to = if to < self.redists.len() { to } else { 0 };
                    let from = self.route[s];
                    if from != to {
                        // Take the interrupt off the old vCPU, onto the new one.
                        self.call(from, s + 32, IrqOp::Configure { enabled: false, priority: 0 });
                        if self.spi_line[s] {
                            self.call(from, s + 32, IrqOp::Line { level: false });
                            self.call(to, s + 32, IrqOp::Line { level: true });
                        }
                        self.route[s] = to;
                        self.push(to, s + 32);
                    }
                    0
                } else if !write && off.is_multiple_of(8) {
                    self.route[s] as u32
                } else {
                    0
                }
            }
            // ISPENDR/ICPENDR, ISACTIVER/ICACTIVER for SPIs: read back from
            // the hyp; ICPENDR/ICACTIVER clear; ISACTIVER is WI.
            (0x0204..=0x027f, false)
            | (0x0284..=0x02ff, false)
            | (0x0304..=0x037f, false)
            | (0x0384..=0x03ff, false) => {
                let r = ((off & 0x7f) / 4) as usize;
                if r > NR_SPI / 32 {
                    return 0;
                }
                self.spi_states(r, off >= 0x300)
            }
            (0x0284..=0x02ff, true) | (0x0384..=0x03ff, true) => {
                let r = ((off & 0x7f) / 4) as usize;
                if r <= NR_SPI / 32 {
                    self.clear_bits(None, r * 32, v, clear(off < 0x300));
                }
                0
            }
            // ISPENDR for SPIs: an edge.
            (0x0204..=0x027f, true) => {
                let r = ((off - 0x204) / 4) as usize;
                for b in 0..32 {
                    let s = r * 32 + b;
                    if v & (1 << b) != 0 && s < NR_SPI {
                        self.call(self.route[s], s + 32, IrqOp::Pulse);
                    }
                }
                0
            }
            _ => 0,
        }
    }

    fn redist(&mut self, vcpu: usize, off: u64, write: bool, size: u64, value: u64) -> u64 {
        let last = vcpu + 1 == self.redists.len();
        let v = value as u32;
        match (off, write) {
            // GICR_TYPER: affinity Aff0 = vCPU [39:32], processor number
            // [23:8], Last [4].
            (0x0008, false) => ((vcpu as u64) << 32) | ((vcpu as u64) << 8) | ((last as u64) << 4),
            (0x000c, false) => vcpu as u64,
            (0x0004, false) => 0x0100_143b,
            (0xffe8, false) => 0x3b,
            (0x0014, false) => self.redists[vcpu].waker as u64,
            (0x0014, true) => {
                // Waking up or going to sleep completes at once.
                let sleep = v & WAKER_SLEEP;
                self.redists[vcpu].waker = sleep | if sleep != 0 { WAKER_ASLEEP } else { 0 };
                0
            }
            // SGI_base: IGROUPR0 all group 1.
            (0x1_0080, false) => u32::MAX as u64,
            (0x1_0100, _) | (0x1_0180, _) => {
                let r = &mut self.redists[vcpu];
                if !write {
                    return r.enabled as u64;
                }
                let old = r.enabled;
                r.enabled = if off == 0x1_0100 { old | v } else { old & !v };
                let changed = old ^ r.enabled;
                for i in 0..32 {
                    if changed & (1 << i) != 0 {
                        self.push(vcpu, i);
                    }
                }
                0
            }
            // ISPENDR0/ICPENDR0, ISACTIVER0/ICACTIVER0: read back from the
            // hyp; ICPENDR0/ICACTIVER0 clear; ISACTIVER0 is WI.
            (0x1_0200, false) | (0x1_0280, false) => self.states(vcpu, 0).0 as u64,
            (0x1_0300, false) | (0x1_0380, false) => self.states(vcpu, 0).1 as u64,
            (0x1_0280, true) | (0x1_0380, true) => {
                self.clear_bits(Some(vcpu), 0, v, clear(off == 0x1_0280));
                0
            }
            // ISPENDR0: SGI/PPI edges.
            (0x1_0200, true) => {
                for i in 0..32 {
                    if v & (1 << i) != 0 && i != irq::VTIMER as usize {
                        self.call(vcpu, i, IrqOp::Pulse);
                    }
                }
                0
            }
            (0x1_0400..=0x1_041f, _) => {
                let first = (off - 0x1_0400) as usize;
                let n = if size == 1 { 1 } else { 4 };
                let mut out = 0u64;
                for k in 0..n {
                    let i = first + k;
                    if i >= 32 {
                        break;
                    }
                    if write {
                        self.redists[vcpu].prio[i] = (v >> (8 * k)) as u8;
                        self.push(vcpu, i);
                    } else {
                        out |= (self.redists[vcpu].prio[i] as u64) << (8 * k);
                    }
                }
                out
            }
            (0x1_0c00, _) | (0x1_0c04, _) => {
                let r = ((off - 0x1_0c00) / 4) as usize;
                if write {
                    // SGIs are always edge; PPIs keep what QEMU virt's are.
                    self.redists[vcpu].cfg[r] = if r == 0 { 0xaaaa_aaaa } else { v & 0xaaaa_aaaa };
                    0
                } else {
                    self.redists[vcpu].cfg[r] as u64
                }
            }
            _ => 0,
        }
    }
}

/// Clear pending (ICPENDR) or active (ICACTIVER) state.
fn clear(pending: bool) -> IrqOp {
    IrqOp::Clear { pending, active: !pending }
}

/// The GIC and timer nodes of a guest DTB (QEMU `virt`'s, as Linux's
/// irq-gic-v3 and arm_arch_timer drivers expect them).
pub fn dtb_nodes(w: &mut vm_fdt::FdtWriter, vcpus: usize) -> Result<(), vm_fdt::Error> {
    let g = w.begin_node("intc@8000000")?;
    w.property_string("compatible", "arm,gic-v3")?;
    w.property_u32("#interrupt-cells", 3)?;
    w.property_null("interrupt-controller")?;
    w.property_u32("#redistributor-regions", 1)?;
    w.property_array_u64("reg", &[GICD, GICD_SIZE, GICR, GICR_STRIDE * vcpus as u64])?;
    w.property_u32("phandle", PHANDLE)?;
    // The maintenance interrupt is the hyp's: not described.
    w.end_node(g)?;
    let t = w.begin_node("timer")?;
    w.property_string("compatible", "arm,armv8-timer")?;
    w.property_u32("interrupt-parent", PHANDLE)?;
    // Secure, non-secure physical, virtual, hypervisor PPIs (cell 1 = PPI
    // number), level high (4). Only the virtual timer works for a guest.
    let mut cells = vec![];
    for ppi in [13u32, 14, 11, 10] {
        cells.extend([1, ppi, 4]);
    }
    w.property_array_u32("interrupts", &cells)?;
    w.property_null("always-on")?;
    w.end_node(t)?;
    Ok(())
}

#[cfg(test)]
mod tests;
