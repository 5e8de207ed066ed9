//! Host tests of the distributor and redistributor emulation against a
//! recording [`IrqControl`].

use std::vec::Vec;

use super::*;

/// Records every operation; answers STATE with `state[vcpu]`; fails every
/// operation with `fail` when set.
#[derive(Default)]
struct Rec {
    log: Vec<(usize, u32, IrqOp)>,
    state: Vec<(u32, u32)>,
    fail: Option<i64>,
}

impl IrqControl for Rec {
    fn vcpu_irq(&mut self, vcpu: usize, intid: u32, op: IrqOp) -> Result<(u32, u32), i64> {
        self.log.push((vcpu, intid, op));
        if let Some(e) = self.fail {
            return Err(e);
        }
        Ok(if op == IrqOp::State { self.state.get(vcpu).copied().unwrap_or_default() } else { (0, 0) })
    }
}

fn gic(vcpus: usize) -> Gic<Rec> {
    Gic::new(Rec::default(), vcpus)
}

fn take(g: &mut Gic<Rec>) -> Vec<(usize, u32, IrqOp)> {
    core::mem::take(&mut g.irq().log)
}

fn rd(g: &mut Gic<Rec>, ipa: u64) -> u64 {
    g.mmio(ipa, false, 4, 0).unwrap()
}

fn wr(g: &mut Gic<Rec>, ipa: u64, size: u64, v: u64) {
    g.mmio(ipa, true, size, v).unwrap();
}

const fn cfg(enabled: bool, priority: u8) -> IrqOp {
    IrqOp::Configure { enabled, priority }
}

#[test]
fn enables_and_priorities_configure_the_routed_vcpu() {
    let mut g = gic(2);
    // The group enable pushes every INTID of every vCPU (all disabled yet).
    wr(&mut g, GICD, 4, CTLR_GRP1 as u64);
    let all = take(&mut g);
    assert_eq!(all.len(), 2 * 32 + NR_SPI);
    assert!(all.iter().all(|&(_, _, op)| op == cfg(false, 0)));
    assert_eq!(rd(&mut g, GICD), (CTLR_ARE | CTLR_GRP1) as u64);
    // SPI 48: a byte priority, then its enable bit (ISENABLER1 bit 16).
    wr(&mut g, GICD + 0x420 + 16, 1, 0xa0);
    wr(&mut g, GICD + 0x104, 4, 1 << 16);
    assert_eq!(take(&mut g), [(0, 48, cfg(false, 0xa0)), (0, 48, cfg(true, 0xa0))]);
    assert_eq!(rd(&mut g, GICD + 0x104), 1 << 16);
    // Setting it again changes nothing: no call.
    wr(&mut g, GICD + 0x104, 4, 1 << 16);
    assert!(take(&mut g).is_empty());
    // A PPI of vCPU 1 through its redistributor (SGI frame ISENABLER0).
    wr(&mut g, GICR + GICR_STRIDE + 0x1_0100, 4, 1 << 30);
    assert_eq!(take(&mut g), [(1, 30, cfg(true, 0))]);
    // The group disable turns everything off, the enables kept.
    wr(&mut g, GICD, 4, 0);
    let off = take(&mut g);
    assert!(off.iter().all(|&(_, _, op)| matches!(op, IrqOp::Configure { enabled: false, .. })));
    assert_eq!(rd(&mut g, GICD + 0x104), 1 << 16);
    assert_eq!(g.errors, 0);
}

#[test]
fn lines_follow_their_routing() {
    let mut g = gic(2);
    g.set_spi_line(48, true);
    assert_eq!(take(&mut g), [(0, 48, IrqOp::Line { level: true })]);
    assert_eq!(core::mem::take(&mut g.kicked), 1);
    // The same level again is not a call.
    g.set_spi_line(48, true);
    assert!(take(&mut g).is_empty());
    // Routed to vCPU 1 while up: off the old vCPU, onto the new one.
    wr(&mut g, GICD + 0x6100 + 16 * 8, 4, 1);
    assert_eq!(
        take(&mut g),
        [
            (0, 48, cfg(false, 0)),
            (0, 48, IrqOp::Line { level: false }),
            (1, 48, IrqOp::Line { level: true }),
            (1, 48, cfg(false, 0)),
        ]
    );
    assert_eq!(core::mem::take(&mut g.kicked), 2);
    assert_eq!(rd(&mut g, GICD + 0x6100 + 16 * 8), 1);
    g.set_spi_line(48, false);
    assert_eq!(take(&mut g), [(1, 48, IrqOp::Line { level: false })]);
    assert_eq!(g.kicked, 0, "a line going down wakes nobody");
    // A vCPU that does not exist (or IRM, any) means vCPU 0.
    wr(&mut g, GICD + 0x6100 + 16 * 8, 4, 7);
    assert_eq!(rd(&mut g, GICD + 0x6100 + 16 * 8), 0);
    // INTIDs that are no SPI are ignored.
    take(&mut g);
    g.set_spi_line(5, true);
    g.set_spi_line(128, true);
    assert!(take(&mut g).is_empty());
}

#[test]
fn pending_state_is_read_back_and_cleared() {
    let mut g = gic(2);
    g.irq().state = vec![(0x0000_00f0, 0x1), (0x0001_0000, 0x2)];
    // SPIs 32..63: bit 16 (INTID 48) routed to vCPU 1, the rest to vCPU 0.
    wr(&mut g, GICD + 0x6100 + 16 * 8, 4, 1);
    take(&mut g);
    assert_eq!(rd(&mut g, GICD + 0x204), 0x0001_00f0);
    assert_eq!(rd(&mut g, GICD + 0x304), 0x1);
    let states = take(&mut g);
    assert_eq!(states.iter().filter(|(v, i, op)| *v == 0 && *i == 32 && *op == IrqOp::State).count(), 2);
    assert_eq!(states.iter().filter(|(v, i, op)| *v == 1 && *i == 32 && *op == IrqOp::State).count(), 2);
    // ICPENDR1 bits 0 and 16: each on its own vCPU.
    wr(&mut g, GICD + 0x284, 4, 1 | 1 << 16);
    let clear = IrqOp::Clear { pending: true, active: false };
    assert_eq!(take(&mut g), [(0, 32, clear), (1, 48, clear)]);
    // The redistributor's ICACTIVER0: the virtual timer's PPI is the hyp's.
    wr(&mut g, GICR + 0x1_0380, 4, 1 << 3 | 1 << 27);
    assert_eq!(take(&mut g), [(0, 3, IrqOp::Clear { pending: false, active: true })]);
    // A vCPU in the guest on another CPU: EBUSY is counted, not an error.
    g.irq().fail = Some(-hyp_abi::errno::EBUSY);
    wr(&mut g, GICR + 0x1_0280, 4, 1);
    assert_eq!((g.clear_busy, g.errors), (1, 0));
    g.irq().fail = Some(-22);
    wr(&mut g, GICR + 0x1_0280, 4, 1);
    assert_eq!(rd(&mut g, GICR + 0x1_0200), 0, "a refused STATE reads 0");
    assert_eq!((g.clear_busy, g.errors), (1, 2));
}

#[test]
fn edges_go_to_their_vcpu() {
    let mut g = gic(2);
    // ISPENDR0 of vCPU 1: SGI 1 and PPI 27 (the timer's: skipped).
    wr(&mut g, GICR + GICR_STRIDE + 0x1_0200, 4, 1 << 1 | 1 << 27);
    assert_eq!(take(&mut g), [(1, 1, IrqOp::Pulse)]);
    assert_eq!(g.kicked, 2);
    // GICD ISPENDR2: SPI 64 (routed to vCPU 0).
    wr(&mut g, GICD + 0x208, 4, 1);
    assert_eq!(take(&mut g), [(0, 64, IrqOp::Pulse)]);
}

#[test]
fn identification_and_windows() {
    let mut g = gic(4);
    // ITLinesNumber 3, IDbits 15, CPUNumber 3.
    assert_eq!(rd(&mut g, GICD + 4), 3 | 15 << 19 | 3 << 5);
    assert_eq!(rd(&mut g, GICD + 0xffe8), 0x3b);
    assert_eq!(rd(&mut g, GICD + 0x80), u32::MAX as u64);
    // GICR_TYPER: Aff0 and processor number; Last on the last frame only.
    let typer = |g: &mut Gic<Rec>, v: u64| g.mmio(GICR + v * GICR_STRIDE + 8, false, 8, 0).unwrap();
    assert_eq!(typer(&mut g, 2), 2 << 32 | 2 << 8);
    assert_eq!(typer(&mut g, 3), 3 << 32 | 3 << 8 | 1 << 4);
    // Waking a redistributor completes at once.
    assert_eq!(rd(&mut g, GICR + 0x14), (WAKER_SLEEP | WAKER_ASLEEP) as u64);
    wr(&mut g, GICR + 0x14, 4, 0);
    assert_eq!(rd(&mut g, GICR + 0x14), 0);
    // Outside both windows: not the GIC's.
    assert_eq!(g.mmio(GICD - 4, false, 4, 0), None);
    assert_eq!(g.mmio(GICR + 4 * GICR_STRIDE, false, 4, 0), None);
    assert_eq!(gic(0).mmio(GICR, false, 4, 0), None);
}

#[test]
fn hostile_accesses_never_panic() {
    for vcpus in [0, 1, 3] {
        let mut g = gic(vcpus);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let windows = [(GICD, GICD_SIZE), (GICR, GICR_STRIDE * vcpus as u64)];
        for (base, size) in windows {
            for off in 0..size {
                for width in [1, 2, 4, 8] {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let _ = g.mmio(base + off, x & 1 == 0, width, x);
                }
            }
        }
    }
}

#[test]
fn redistributor_priority_bytes_stay_in_their_frame() {
    // A word write at the last byte offsets of IPRIORITYR7 covers INTIDs
    // beyond 31: only those up to 31 are written.
    let mut g = gic(1);
    wr(&mut g, GICR + 0x1_041d, 4, 0x4433_2211);
    assert_eq!(take(&mut g), [(0, 29, cfg(false, 0x11)), (0, 30, cfg(false, 0x22)), (0, 31, cfg(false, 0x33))]);
    assert_eq!(g.mmio(GICR + 0x1_041c, false, 4, 0), Some(0x3322_1100));
}
