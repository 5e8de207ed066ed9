//! The virtual interrupts of one vCPU and what goes into its GICv3 list
//! registers: pure decisions, tested on the host; the EL2 side
//! (`arch/aarch64/vgic_sr.rs`) moves the list registers in and out.
//!
//! The split is pKVM's: the host's VMM decides which interrupts are
//! configured and asserted (it emulates the distributor and the
//! redistributors), through `VCPU_IRQ` (docs/abi.md); the hyp alone writes
//! the list registers. The virtual timer's line (INTID 27) belongs to the
//! hyp, which asserts it while the guest's CNTV condition holds.
//!
//! Level-sensitive interrupts go into a list register with its EOI bit set,
//! so their deactivation raises a maintenance interrupt; [`State::retire`]
//! frees that register and [`State::flush`] injects the interrupt again if
//! its line is still asserted. Edge interrupts are latched once per pulse.

use crate::mm::Error;

/// INTIDs a vCPU can have: SGIs 0-15, PPIs 16-31, SPIs 32-127.
pub const NR_INTIDS: u32 = 128;
/// The guest's virtual timer (PPI 11 on QEMU `virt` and in the Arm BSA).
pub const VTIMER_INTID: u32 = 27;
/// List registers the architecture allows at most.
pub const MAX_LRS: usize = 16;

/// ICH_LR<n>_EL2 fields (GICv3 architecture specification, 12.4.6).
pub mod lr {
    /// State [63:62]: 0 invalid, 1 pending, 2 active, 3 pending and active.
    pub const STATE_SHIFT: u32 = 62;
    pub const PENDING: u64 = 1 << 62;
    pub const ACTIVE: u64 = 1 << 63;
    /// Group 1.
    pub const GROUP1: u64 = 1 << 60;
    /// Priority [55:48].
    pub const PRIO_SHIFT: u32 = 48;
    /// EOI maintenance interrupt on deactivation (HW = 0).
    pub const EOI: u64 = 1 << 41;
    /// vINTID [31:0].
    pub const INTID_MASK: u64 = 0xffff_ffff;

    pub fn state(v: u64) -> u64 {
        v >> STATE_SHIFT
    }
    pub fn intid(v: u64) -> u32 {
        (v & INTID_MASK) as u32
    }
}

/// The pending virtual interrupts of one vCPU and their configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// Enabled by the guest (through the host's distributor emulation).
    enabled: [u64; 2],
    /// Level-sensitive lines asserted.
    level: [u64; 2],
    /// Edges latched and not yet in a list register.
    edge: [u64; 2],
    prio: [u8; NR_INTIDS as usize],
}

fn bit(v: &[u64; 2], i: u32) -> bool {
    v[(i / 64) as usize] & (1 << (i % 64)) != 0
}

fn set(v: &mut [u64; 2], i: u32, on: bool) {
    let m = 1 << (i % 64);
    if on {
        v[(i / 64) as usize] |= m;
    } else {
        v[(i / 64) as usize] &= !m;
    }
}

/// The INTIDs whose bits are set in `v`, in order.
fn set_bits(v: &[u64; 2]) -> impl Iterator<Item = u32> + '_ {
    v.iter().enumerate().flat_map(|(k, &w)| {
        let mut m = w;
        core::iter::from_fn(move || {
            if m == 0 {
                return None;
            }
            let b = m.trailing_zeros();
            m &= m - 1;
            Some(k as u32 * 64 + b)
        })
    })
}

/// What decides whether the guest's CPU interface signals an interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mask {
    /// ICH_VMCR_EL2.VPMR: the priority mask.
    pub vpmr: u8,
    /// ICH_VMCR_EL2.VENG1: group 1 enabled.
    pub grp1: bool,
    /// ICH_VMCR_EL2.VBPR1: the group-1 binary point.
    pub bpr1: u8,
    /// The running priority ([`running_priority`]); 0x100 when idle.
    pub running: u16,
}

/// The running priority the active-priority registers `ap1r`
/// (ICH_AP1R<n>_EL2, n = 0..) show, with `pre` preemption bits (5..7): the
/// group priority of the most urgent active interrupt (bit k of the
/// registers stands for priority k << (8 - pre)); 0x100 when none is active.
pub fn running_priority(ap1r: &[u64], pre: u32) -> u16 {
    let pre = pre.clamp(5, 7);
    for (n, &r) in ap1r.iter().enumerate() {
        let r = r as u32;
        if r != 0 {
            return ((n as u32 * 32 + r.trailing_zeros()) << (8 - pre)) as u16;
        }
    }
    0x100
}

/// The group priority of `prio` under the group-1 binary point `bpr1`:
/// bits [7:bpr1] (GICv3 architecture specification, 4.8.3).
pub fn group_priority(prio: u8, bpr1: u8) -> u16 {
    (prio as u16) & (0xff << bpr1.min(8)) & 0xff
}

/// What [`State::flush`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flush {
    /// Interrupts written into a free list register.
    pub injected: u32,
    /// Interrupts that want a list register and found none (retried when
    /// the guest frees some: the caller sets ICH_HCR_EL2.UIE).
    pub overflow: u32,
    /// The virtual timer went into a list register.
    pub vtimer: bool,
    /// A list register holds an interrupt (pending or active) afterwards:
    /// the list registers must be loaded for the guest (the world switch
    /// skips them otherwise, the CPU's being all zero then).
    pub live: bool,
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

impl State {
    pub const fn new() -> State {
        State { enabled: [0; 2], level: [0; 2], edge: [0; 2], prio: [0; NR_INTIDS as usize] }
    }

    fn check(intid: u64) -> Result<u32, Error> {
        if intid < NR_INTIDS as u64 {
            Ok(intid as u32)
        } else {
            Err(Error::Inval)
        }
    }

    /// Enables or disables `intid` and sets its priority.
    pub fn configure(&mut self, intid: u64, enabled: u64, prio: u64) -> Result<(), Error> {
        let i = Self::check(intid)?;
        if enabled > 1 || prio > 0xff {
            return Err(Error::Inval);
        }
        set(&mut self.enabled, i, enabled == 1);
        self.prio[i as usize] = prio as u8;
        Ok(())
    }

    /// Asserts (1) or deasserts (0) the level-sensitive line `intid`. The
    /// virtual timer's line is the hyp's: EINVAL.
    pub fn set_line(&mut self, intid: u64, level: u64) -> Result<(), Error> {
        let i = Self::check(intid)?;
        if level > 1 || i == VTIMER_INTID {
            return Err(Error::Inval);
        }
        set(&mut self.level, i, level == 1);
        Ok(())
    }

    /// Latches one edge on `intid` (an SGI or an edge-triggered interrupt).
    pub fn pulse(&mut self, intid: u64) -> Result<(), Error> {
        let i = Self::check(intid)?;
        if i == VTIMER_INTID {
            return Err(Error::Inval);
        }
        set(&mut self.edge, i, true);
        Ok(())
    }

    /// The hyp's own line: the virtual timer's condition.
    #[inline(always)]
    pub fn set_vtimer(&mut self, asserted: bool) {
        set(&mut self.level, VTIMER_INTID, asserted);
    }

    /// Whether the physical PPI 27 may interrupt the guest: only to learn of
    /// a new assertion of its virtual timer (enabled, not yet recorded as
    /// asserted, not in a list register). A timer that is due but waits for
    /// a free list register must not take the CPU back again and again (the
    /// underflow maintenance interrupt or the next exit injects it).
    #[inline(always)]
    pub fn vtimer_ppi_wanted(&self, lrs: &[u64]) -> bool {
        self.enabled(VTIMER_INTID) && !self.asserted(VTIMER_INTID) && !Self::in_lrs(lrs, VTIMER_INTID)
    }

    /// Is the line of `intid` recorded as asserted (waiting for, or in, a
    /// list register)?
    #[inline(always)]
    pub fn asserted(&self, intid: u32) -> bool {
        intid < NR_INTIDS && bit(&self.level, intid)
    }

    #[inline(always)]
    pub fn enabled(&self, intid: u32) -> bool {
        intid < NR_INTIDS && bit(&self.enabled, intid)
    }

    pub fn priority(&self, intid: u32) -> u8 {
        self.prio[(intid % NR_INTIDS) as usize]
    }

    /// Frees the list registers of level-sensitive interrupts the guest has
    /// deactivated (state invalid, EOI bit set: what ICH_EISR_EL2 reports).
    /// Returns the INTIDs so retired, as a bit mask of list registers.
    pub fn retire(&mut self, lrs: &mut [u64]) -> u32 {
        let mut done = 0;
        for (n, v) in lrs.iter_mut().enumerate() {
            if *v & lr::EOI != 0 && lr::state(*v) == 0 {
                *v = 0;
                done |= 1 << n;
            }
        }
        done
    }

    /// Is `intid` in a list register (pending and/or active)?
    #[inline(always)]
    pub fn in_lrs(lrs: &[u64], intid: u32) -> bool {
        lrs.iter().any(|&v| lr::state(v) != 0 && lr::intid(v) == intid)
    }

    /// Brings the list registers up to date: a level interrupt whose line
    /// dropped before the guest acknowledged it is withdrawn; every enabled
    /// interrupt whose line is asserted or whose edge is latched goes into a
    /// free list register, highest priority (lowest value) first; a new
    /// edge on one that is active makes it pending and active.
    #[inline(always)]
    pub fn flush(&mut self, lrs: &mut [u64]) -> Flush {
        self.flush_hinted(lrs, true)
    }

    /// [`State::flush`], told whether a list register may hold an interrupt
    /// (`may_hold` false: the caller knows every one is invalid, and the
    /// look at each is skipped).
    #[inline(always)]
    pub fn flush_hinted(&mut self, lrs: &mut [u64], may_hold: bool) -> Flush {
        // Nothing asserted or latched and every list register empty (the
        // common entry: an MMIO exit answered): nothing to withdraw, adjust
        // or inject. The loops of `flush_busy` would find exactly that.
        if (self.level[0] | self.level[1] | self.edge[0] | self.edge[1]) == 0
            && (!may_hold || lrs.iter().all(|v| lr::state(*v) == 0))
        {
            return Flush::default();
        }
        self.flush_busy(lrs)
    }

    /// [`State::flush`] with something to do (out of line: the quick test
    /// above is inlined into the world switch).
    #[inline(never)]
    fn flush_busy(&mut self, lrs: &mut [u64]) -> Flush {
        let mut out = Flush::default();
        // Withdraw or adjust what is already there.
        for v in lrs.iter_mut() {
            let st = lr::state(*v);
            if st == 0 {
                continue;
            }
            let i = lr::intid(*v);
            if i >= NR_INTIDS {
                *v = 0;
                continue;
            }
            let is_level = *v & lr::EOI != 0;
            if is_level && !bit(&self.level, i) && st & 1 != 0 {
                // Pending only: withdrawn; pending and active: active only.
                *v = if st == 3 { *v & !lr::PENDING } else { 0 };
            }
            if bit(&self.edge, i) && self.enabled(i) {
                *v |= lr::PENDING;
                set(&mut self.edge, i, false);
            }
        }
        loop {
            let want: [u64; 2] = core::array::from_fn(|k| (self.level[k] | self.edge[k]) & self.enabled[k]);
            // The best candidate not yet in a list register.
            let mut best: Option<u32> = None;
            let mut waiting = 0;
            for i in set_bits(&want) {
                if Self::in_lrs(lrs, i) {
                    continue;
                }
                waiting += 1;
                if best.is_none_or(|b| self.prio[i as usize] < self.prio[b as usize]) {
                    best = Some(i);
                }
            }
            let Some(i) = best else { break };
            let Some(slot) = lrs.iter_mut().find(|v| lr::state(**v) == 0) else {
                // No room: every one left waits.
                out.overflow = waiting;
                break;
            };
            let level = bit(&self.level, i) && !bit(&self.edge, i);
            *slot = lr::PENDING
                | lr::GROUP1
                | ((self.prio[i as usize] as u64) << lr::PRIO_SHIFT)
                | if level { lr::EOI } else { 0 }
                | i as u64;
            set(&mut self.edge, i, false);
            out.injected += 1;
            out.vtimer |= i == VTIMER_INTID;
        }
        out.live = lrs.iter().any(|v| lr::state(*v) != 0);
        out
    }

    /// The pending and active state of the 32 INTIDs from `first` (0, 32,
    /// 64 or 96), as the distributor's ISPENDR/ISACTIVER show them: pending
    /// = an edge latched, a line asserted, or a list register pending;
    /// active = a list register active. Bit n is INTID `first + n`.
    pub fn states(&self, lrs: &[u64], first: u64) -> Result<(u32, u32), Error> {
        if !first.is_multiple_of(32) || first >= NR_INTIDS as u64 {
            return Err(Error::Inval);
        }
        let word = |v: &[u64; 2]| (v[(first / 64) as usize] >> (first % 64)) as u32;
        let (mut pending, mut active) = (word(&self.edge) | word(&self.level), 0u32);
        for &v in lrs {
            let i = lr::intid(v) as u64;
            if lr::state(v) == 0 || i < first || i >= first + 32 {
                continue;
            }
            let b = 1 << (i - first);
            if v & lr::PENDING != 0 {
                pending |= b;
            }
            if v & lr::ACTIVE != 0 {
                active |= b;
            }
        }
        Ok((pending, active))
    }

    /// Clears the pending (`what` bit 0) and/or active (bit 1) state of
    /// `intid`, as the distributor's ICPENDR/ICACTIVER do: a latched edge
    /// is dropped and the list register loses those bits (a level
    /// interrupt whose line is still asserted is pending again at the next
    /// flush, as on a GIC). The virtual timer's state is the hyp's: EINVAL.
    pub fn clear(&mut self, lrs: &mut [u64], intid: u64, what: u64) -> Result<(), Error> {
        let i = Self::check(intid)?;
        if what == 0 || what > 3 || i == VTIMER_INTID {
            return Err(Error::Inval);
        }
        if what & 1 != 0 {
            set(&mut self.edge, i, false);
        }
        let bits = (if what & 1 != 0 { lr::PENDING } else { 0 }) | (if what & 2 != 0 { lr::ACTIVE } else { 0 });
        for v in lrs.iter_mut() {
            if lr::state(*v) != 0 && lr::intid(*v) == i {
                *v &= !bits;
                // An edge interrupt's register is free once its state is
                // gone; a level one's (EOI set) is retired as if deactivated.
                if lr::state(*v) == 0 && *v & lr::EOI == 0 {
                    *v = 0;
                }
            }
        }
        Ok(())
    }

    /// Would the guest's CPU interface signal an interrupt now (what ends a
    /// WFI): a list register pending, its priority above the mask `vpmr`,
    /// its group priority (binary point `m`) above the running priority
    /// `m.running` of what the guest has active, with group 1 enabled?
    pub fn deliverable(lrs: &[u64], m: Mask) -> bool {
        m.grp1
            && lrs.iter().any(|&v| {
                let prio = ((v >> lr::PRIO_SHIFT) & 0xff) as u8;
                lr::state(v) & 1 != 0 && prio < m.vpmr && group_priority(prio, m.bpr1) < m.running
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lrs() -> [u64; 4] {
        [0; 4]
    }

    #[test]
    fn bad_arguments_change_nothing() {
        let mut s = State::new();
        let before = s.clone();
        assert_eq!(s.configure(128, 1, 0), Err(Error::Inval));
        assert_eq!(s.configure(33, 2, 0), Err(Error::Inval));
        assert_eq!(s.configure(33, 1, 256), Err(Error::Inval));
        assert_eq!(s.set_line(33, 2), Err(Error::Inval));
        assert_eq!(s.set_line(VTIMER_INTID as u64, 1), Err(Error::Inval));
        assert_eq!(s.pulse(VTIMER_INTID as u64), Err(Error::Inval));
        assert_eq!(s.pulse(u64::MAX), Err(Error::Inval));
        assert_eq!(s, before);
    }

    #[test]
    fn disabled_interrupts_wait() {
        let mut s = State::new();
        let mut l = lrs();
        s.set_line(33, 1).unwrap();
        assert_eq!(s.flush(&mut l).injected, 0);
        s.configure(33, 1, 0xa0).unwrap();
        let f = s.flush(&mut l);
        assert_eq!(f.injected, 1);
        assert_eq!(l[0], lr::PENDING | lr::GROUP1 | (0xa0 << 48) | lr::EOI | 33);
    }

    #[test]
    fn flush_hinted_agrees_with_flush() {
        // Every combination of what is asserted and what the list registers
        // hold, with the hint true whenever one may hold an interrupt (what
        // the world switch guarantees): the same list registers and result.
        for case in 0..64u32 {
            let mut s = State::new();
            let mut l = lrs();
            s.configure(33, 1, 0xa0).unwrap();
            s.configure(5, 1, 0x10).unwrap();
            if case & 1 != 0 {
                s.set_line(33, 1).unwrap();
            }
            if case & 2 != 0 {
                s.pulse(5).unwrap();
            }
            if case & 4 != 0 {
                l[1] = lr::ACTIVE | lr::GROUP1 | 33 | lr::EOI;
            }
            if case & 8 != 0 {
                l[2] = lr::PENDING | lr::GROUP1 | 5;
            }
            if case & 16 != 0 {
                // Stale bits in an invalid register.
                l[3] = lr::GROUP1 | 40;
            }
            let may_hold = l.iter().any(|v| lr::state(*v) != 0) || case & 32 != 0;
            let (mut s2, mut l2) = (s.clone(), l);
            let a = s.flush(&mut l);
            let b = s2.flush_hinted(&mut l2, may_hold);
            assert_eq!((a, l), (b, l2), "case {case:#b}");
            assert_eq!(s, s2, "case {case:#b}");
        }
    }

    #[test]
    fn flush_says_whether_a_list_register_is_live() {
        // The world switch loads the list registers only when this says so
        // (the CPU's are zero otherwise): every case where one holds an
        // interrupt must say live.
        let mut s = State::new();
        let mut l = lrs();
        assert!(!s.flush(&mut l).live, "nothing at all");
        s.configure(33, 1, 0xa0).unwrap();
        s.set_line(33, 1).unwrap();
        assert!(s.flush(&mut l).live, "just injected");
        // Still there (pending), nothing new: the quick path must not say
        // empty.
        assert!(s.flush(&mut l).live, "pending from before");
        // Acknowledged by the guest (active), line still up.
        l[0] = (l[0] & !lr::PENDING) | lr::ACTIVE;
        assert!(s.flush(&mut l).live, "active");
        // Line dropped while active: stays active until deactivated.
        s.set_line(33, 0).unwrap();
        assert!(s.flush(&mut l).live, "active, line down");
        // Deactivated (invalid, EOI set), retired: empty again.
        l[0] &= !lr::ACTIVE;
        s.retire(&mut l);
        assert!(!s.flush(&mut l).live, "retired");
        // Pending only, line dropped before the guest took it: withdrawn.
        s.set_line(33, 1).unwrap();
        assert!(s.flush(&mut l).live);
        s.set_line(33, 0).unwrap();
        assert!(!s.flush(&mut l).live, "withdrawn");
        // An invalid list register with stale bits holds nothing.
        l[1] = lr::GROUP1 | 40;
        assert!(!s.flush(&mut l).live, "stale bits, state invalid");
        // An edge on an interrupt in the last free list register.
        s.pulse(5).unwrap();
        s.configure(5, 1, 0).unwrap();
        assert!(s.flush(&mut l).live, "edge");
    }

    #[test]
    fn a_due_timer_without_a_free_list_register_does_not_hold_the_ppi() {
        let mut st = State::new();
        // Four other level lines, enabled, higher priority, fill all LRs.
        for i in 30..34 {
            st.configure(i, 1, 0x10).unwrap();
            st.set_line(i, 1).unwrap();
        }
        st.configure(VTIMER_INTID as u64, 1, 0xa0).unwrap();
        let mut lrs = [0u64; 4];
        st.flush(&mut lrs);
        // Not due yet: the PPI is how the hyp learns it fires.
        assert!(st.vtimer_ppi_wanted(&lrs));
        st.set_vtimer(true);
        let f = st.flush(&mut lrs);
        assert!(f.overflow > 0);
        assert!(!State::in_lrs(&lrs, VTIMER_INTID));
        // Due, waiting for a list register: the physical PPI stays off, or
        // the vCPU would exit before running an instruction, forever.
        assert!(!st.vtimer_ppi_wanted(&lrs));
    }

    #[test]
    fn level_is_reinjected_until_deasserted() {
        let mut s = State::new();
        let mut l = lrs();
        s.configure(40, 1, 0x80).unwrap();
        s.set_line(40, 1).unwrap();
        s.flush(&mut l);
        // The guest acknowledges then deactivates: state 0, EOI bit left.
        l[0] &= !lr::PENDING;
        l[0] |= lr::ACTIVE;
        assert_eq!(s.flush(&mut l).injected, 0, "active: not injected twice");
        l[0] &= !(lr::ACTIVE | lr::PENDING);
        assert_eq!(s.retire(&mut l), 1);
        assert_eq!(l[0], 0);
        assert_eq!(s.flush(&mut l).injected, 1, "still asserted: injected again");
        // Deasserted while pending: withdrawn.
        s.set_line(40, 0).unwrap();
        s.flush(&mut l);
        assert_eq!(l, [0; 4]);
    }

    #[test]
    fn edges_latch_once_and_pend_on_active() {
        let mut s = State::new();
        let mut l = lrs();
        s.configure(5, 1, 0).unwrap();
        s.pulse(5).unwrap();
        s.pulse(5).unwrap();
        assert_eq!(s.flush(&mut l).injected, 1);
        assert_eq!(l[0] & lr::EOI, 0, "edge: no EOI maintenance");
        assert_eq!(s.flush(&mut l).injected, 0, "two pulses before delivery coalesce");
        l[0] = (l[0] & !lr::PENDING) | lr::ACTIVE;
        s.pulse(5).unwrap();
        s.flush(&mut l);
        assert_eq!(lr::state(l[0]), 3, "a new edge while active: pending and active");
    }

    #[test]
    fn priority_order_and_overflow() {
        let mut s = State::new();
        let mut l = lrs();
        for (i, p) in [(32, 0x80), (33, 0x10), (34, 0x40), (35, 0x20), (36, 0xf0)] {
            s.configure(i, 1, p).unwrap();
            s.pulse(i).unwrap();
        }
        let f = s.flush(&mut l);
        assert_eq!((f.injected, f.overflow), (4, 1));
        let ids: [u32; 4] = core::array::from_fn(|k| lr::intid(l[k]));
        assert_eq!(ids, [33, 35, 34, 32]);
        // The guest handles one: room for the last.
        l[0] = 0;
        let f = s.flush(&mut l);
        assert_eq!((f.injected, f.overflow), (1, 0));
        assert_eq!(lr::intid(l[0]), 36);
    }

    #[test]
    fn vtimer_and_delivery() {
        let mut s = State::new();
        let mut l = lrs();
        s.set_vtimer(true);
        assert!(!s.flush(&mut l).vtimer, "PPI 27 disabled in the guest's redistributor");
        s.configure(27, 1, 0xa0).unwrap();
        assert!(s.flush(&mut l).vtimer);
        let idle = Mask { vpmr: 0xf0, grp1: true, bpr1: 3, running: 0x100 };
        assert!(State::deliverable(&l, idle));
        assert!(!State::deliverable(&l, Mask { vpmr: 0xa0, ..idle }), "masked by priority");
        assert!(!State::deliverable(&l, Mask { grp1: false, ..idle }), "group 1 disabled");
        // The guest in a handler at 0xa0 (AP1R0 bit 0xa0 >> 3 = 20): a
        // pending 0xa0 does not preempt it, a 0x80 does.
        let busy = Mask { running: running_priority(&[1 << 20], 5), ..idle };
        assert_eq!(busy.running, 0xa0);
        assert!(!State::deliverable(&l, busy), "same priority as the running one");
        assert!(State::deliverable(&l, Mask { running: 0xa8, ..idle }));
        // Binary point 6: 0xa0 and 0x80 are one group (0x80): no preemption.
        assert!(!State::deliverable(&l, Mask { bpr1: 6, running: 0x80, ..idle }));
        assert!(State::in_lrs(&l, 27));
    }

    #[test]
    fn pending_and_active_read_back_and_clear() {
        let mut s = State::new();
        let mut l = lrs();
        s.configure(33, 1, 0x80).unwrap();
        s.configure(40, 1, 0x80).unwrap();
        s.set_line(33, 1).unwrap();
        s.pulse(40).unwrap();
        s.pulse(70).unwrap(); // disabled: latched, pending, not injected
        assert_eq!(s.states(&l, 32), Ok(((1 << 1) | (1 << 8), 0)));
        assert_eq!(s.states(&l, 64), Ok((1 << 6, 0)));
        s.flush(&mut l);
        // The guest acknowledges 33: active (line still asserted: pending too).
        let k = l.iter().position(|&v| lr::intid(v) == 33).unwrap();
        l[k] = (l[k] & !lr::PENDING) | lr::ACTIVE;
        let (p, a) = s.states(&l, 32).unwrap();
        assert_eq!((p & 0b10, a), (0b10, 0b10));
        // ICACTIVER: 33 deactivated; its register retires and the asserted
        // line injects it again.
        s.clear(&mut l, 33, 2).unwrap();
        assert_eq!(s.states(&l, 32).unwrap().1, 0);
        assert_eq!(s.retire(&mut l).count_ones(), 1);
        s.flush(&mut l);
        assert!(State::in_lrs(&l, 33));
        // ICPENDR of the edge on 40: gone from its list register.
        s.clear(&mut l, 40, 1).unwrap();
        assert!(!State::in_lrs(&l, 40));
        assert_eq!(s.states(&l, 32).unwrap().0 & (1 << 8), 0);
        // ICPENDR of the latched, disabled 70: never injected when enabled.
        s.clear(&mut l, 70, 1).unwrap();
        s.configure(70, 1, 0).unwrap();
        s.flush(&mut l);
        assert!(!State::in_lrs(&l, 70));
    }

    #[test]
    fn bad_state_requests_change_nothing() {
        let mut s = State::new();
        let mut l = lrs();
        s.pulse(40).unwrap();
        let (before, lb) = (s.clone(), l);
        assert_eq!(s.states(&l, 16), Err(Error::Inval));
        assert_eq!(s.states(&l, 128), Err(Error::Inval));
        assert_eq!(s.clear(&mut l, 40, 0), Err(Error::Inval));
        assert_eq!(s.clear(&mut l, 40, 4), Err(Error::Inval));
        assert_eq!(s.clear(&mut l, 128, 1), Err(Error::Inval));
        assert_eq!(s.clear(&mut l, VTIMER_INTID as u64, 1), Err(Error::Inval));
        assert_eq!((s, l), (before, lb));
    }

    #[test]
    fn running_priority_from_the_active_priority_registers() {
        assert_eq!(running_priority(&[0, 0, 0, 0], 7), 0x100);
        assert_eq!(running_priority(&[1 << 4 | 1 << 9], 5), 4 << 3);
        assert_eq!(running_priority(&[0, 1 << 2], 6), (34 << 2) as u16);
        assert_eq!(running_priority(&[0, 0, 0, 1 << 31], 7), 127 << 1);
        assert_eq!(group_priority(0xa7, 3), 0xa0);
        assert_eq!(group_priority(0xa7, 7), 0x80);
        assert_eq!(group_priority(0xff, 8), 0);
    }
}
