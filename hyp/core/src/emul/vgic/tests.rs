//! Host tests of a vCPU's virtual interrupts and its list registers (`emul/vgic.rs`).

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
