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
mod tests;
