//! What a guest sees when it touches a register the hyp traps
//! (docs/isolation.md, "Registers across the world switch", is the written
//! form of this table). Pure decisions, tested on the host; the EL2 side
//! applies them.

use super::exception::SysRegAccess;

/// The answer to one trapped access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// An undefined-instruction exception at the access.
    Undef,
    /// Reads as zero, writes ignored; the instruction completes.
    RazWi,
    /// The instruction completes and does nothing (set/way maintenance).
    Nop,
    /// An ID register: the CPU's value, sanitized by [`sanitize_id`].
    Id { crm: u8, op2: u8 },
    /// ICC_SGI1R_EL1: an SGI to the guest's own vCPUs.
    Sgi,
    /// A pointer-authentication key register (HCR_EL2.APK, set until the
    /// vCPU first uses PAuth): the vCPU's keys are loaded and the access
    /// runs again, untrapped.
    PauthKey,
}

/// Decides a trapped MSR/MRS/SYS access (ESR EC 0x18) from a guest.
/// `bench_pmu`: the PMU is left to guests (the accesses do not trap then;
/// this is only consulted if they do).
pub fn decide(a: &SysRegAccess) -> Action {
    match a.enc() {
        // Set/way cache maintenance acts on the physical CPU's caches,
        // shared with the host: ignored (guest memory is cleaned to PoC
        // when it is mapped).
        (1, 0, 7, 6 | 10 | 14, 2) => Action::Nop,
        // Other trapped system instructions.
        (1, ..) => Action::Undef,
        // Trace unit registers (op0 2, op1 1: TRC*, CPTR_EL2.TTA): UNDEF.
        (2, 1, ..) => Action::Undef,
        // Debug register space (MDSCR_EL1, DBGB/W*, OS lock, claim tags,
        // DCC): RAZ/WI.
        (2, ..) => Action::RazWi,
        // ID registers (TID3): the sanitized CPU view.
        (3, 0, 0, crm @ 1..=7, op2) => Action::Id { crm, op2 },
        // ACTLR_EL1 (TACR): RAZ/WI.
        (3, 0, 1, 0, 1) => Action::RazWi,
        // RAS error records: ERRIDR_EL1 / ERRSELR_EL1, ERX*: RAZ/WI.
        (3, 0, 5, 3..=5, _) => Action::RazWi,
        // PMU: PMINTENSET/CLR, PMMIR (op1 0), and the EL0 block (op1 3):
        // PMCR, PMCNTENSET/CLR, PMOVSCLR/SET, PMSWINC, PMSELR, PMCEID0/1,
        // PMCCNTR, PMXEVTYPER/CNTR, PMUSERENR, PMEVCNTRn, PMEVTYPERn, PMCCFILTR.
        (3, 0, 9, 14, 1 | 2 | 6) => Action::RazWi,
        (3, 3, 9, 12..=14, _) => Action::RazWi,
        (3, 3, 14, 8..=15, _) => Action::RazWi,
        // Physical timer (CNTHCTL_EL2.EL1PCEN clear): UNDEF.
        (3, 3, 14, 2, 0..=2) => Action::Undef,
        // SGIs (HCR_EL2.IMO traps their generation): group 1 SGIs go to
        // the guest's own vCPUs; group 0 (SGI0R) and the alias (ASGI1R) are
        // UNDEF (a guest has group 1 only).
        (3, 0, 12, 11, 5) => Action::Sgi,
        (3, 0, 12, 11, 6 | 7) => Action::Undef,
        // APIA/APIB/APDA/APDB KeyLo/Hi (CRm 1, 2) and APGAKeyLo/Hi (CRm 3).
        (3, 0, 2, 1 | 2, 0..=3) | (3, 0, 2, 3, 0 | 1) => Action::PauthKey,
        // LORegions, SCXTNUM, implementation-defined (TIDCP), and
        // anything else that traps: UNDEF.
        _ => Action::Undef,
    }
}

/// The vCPUs an ICC_SGI1R_EL1 value `v` written by vCPU `me` of a VM
/// with `n` vCPUs targets (bit i = vCPU i) and its INTID. vCPU i has
/// MPIDR Aff0 = i and Aff1-3 = 0: a target list at other affinities, or
/// with a range selector, reaches no vCPU; IRM (bit 40) means every vCPU
/// but the sender.
pub fn sgi_targets(v: u64, me: usize, n: usize) -> (u64, u64) {
    let intid = (v >> 24) & 0xf;
    let all = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
    let targets = if v & (1 << 40) != 0 {
        all & !(1u64 << (me % 64))
    } else if (v >> 16) & 0xff != 0 || (v >> 32) & 0xff != 0 || (v >> 44) & 0xf != 0 || (v >> 48) & 0xff != 0 {
        0
    } else {
        v & 0xffff & all
    };
    (targets, intid)
}

fn clear(v: u64, shift: u32) -> u64 {
    v & !(0xf << shift)
}

fn cap(v: u64, shift: u32, max: u64) -> u64 {
    let f = (v >> shift) & 0xf;
    if f > max {
        clear(v, shift) | (max << shift)
    } else {
        v
    }
}

/// The guest's view of ID register (CRm, op2) whose CPU value is `v`:
/// features the guest cannot use are hidden.
pub fn sanitize_id(crm: u8, op2: u8, v: u64, bench_pmu: bool) -> u64 {
    match (crm, op2) {
        // ID_DFR0_EL1 (AArch32): PerfMon [27:24].
        (1, 2) if !bench_pmu => clear(v, 24),
        // ID_AA64PFR0_EL1: SVE [35:32], MPAM [43:40], AMU [47:44] hidden;
        // CSV2 [59:56] at most 1 (SCXTNUM traps).
        (4, 0) => cap(clear(clear(clear(v, 32), 40), 44), 56, 1),
        // ID_AA64PFR1_EL1: SME [27:24], MTE [11:8], MPAM_frac [19:16],
        // CSV2_frac [35:32], GCS [47:44] and THE [51:48] hidden (their
        // registers are not switched: the fine-grained traps make them UNDEF).
        (4, 1) => clear(clear(clear(clear(clear(clear(v, 24), 8), 16), 32), 44), 48),
        // ID_AA64ZFR0_EL1, ID_AA64SMFR0_EL1: no SVE, no SME.
        (4, 4) | (4, 5) => 0,
        // ID_AA64DFR0_EL1: TraceVer [7:4], PMSVer [35:32], TraceFilt
        // [43:40], TraceBuffer [47:44] hidden; PMUVer [11:8] unless bench.
        (5, 0) => {
            let v = clear(clear(clear(clear(v, 4), 32), 40), 44);
            if bench_pmu {
                v
            } else {
                clear(v, 8)
            }
        }
        // ID_AA64MMFR1_EL1: LO [19:16] (LORegions trap).
        (7, 1) => clear(v, 16),
        // ID_AA64MMFR3_EL1: none of its features (TCR2, SCTLR2, S1PIE,
        // S1POE, ...: HCRX_EL2 and the fine-grained traps make their
        // registers UNDEF; none is switched).
        (7, 3) => 0,
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> SysRegAccess {
        SysRegAccess { op0, op1, crn, crm, op2, rt: 0, read: true }
    }

    #[test]
    fn table() {
        assert_eq!(decide(&acc(3, 3, 9, 12, 0)), Action::RazWi, "PMCR_EL0");
        assert_eq!(decide(&acc(3, 3, 9, 13, 0)), Action::RazWi, "PMCCNTR_EL0");
        assert_eq!(decide(&acc(3, 3, 14, 8, 0)), Action::RazWi, "PMEVCNTR0_EL0");
        assert_eq!(decide(&acc(3, 3, 14, 15, 7)), Action::RazWi, "PMCCFILTR_EL0");
        assert_eq!(decide(&acc(3, 0, 9, 14, 1)), Action::RazWi, "PMINTENSET_EL1");
        assert_eq!(decide(&acc(3, 3, 9, 14, 0)), Action::RazWi, "PMUSERENR_EL0");
        assert_eq!(decide(&acc(2, 0, 0, 2, 2)), Action::RazWi, "MDSCR_EL1");
        assert_eq!(decide(&acc(2, 0, 0, 0, 4)), Action::RazWi, "DBGBVR0_EL1");
        assert_eq!(decide(&acc(2, 0, 1, 0, 4)), Action::RazWi, "OSLAR_EL1");
        assert_eq!(decide(&acc(2, 1, 0, 1, 0)), Action::Undef, "TRCPRGCTLR (trace)");
        assert_eq!(decide(&acc(3, 3, 14, 2, 1)), Action::Undef, "CNTP_CTL_EL0");
        assert_eq!(decide(&acc(3, 3, 14, 2, 2)), Action::Undef, "CNTP_CVAL_EL0");
        assert_eq!(decide(&acc(3, 3, 14, 2, 0)), Action::Undef, "CNTP_TVAL_EL0");
        assert_eq!(decide(&acc(1, 0, 7, 14, 2)), Action::Nop, "DC CISW");
        assert_eq!(decide(&acc(1, 0, 7, 6, 2)), Action::Nop, "DC ISW");
        assert_eq!(decide(&acc(1, 0, 7, 10, 2)), Action::Nop, "DC CSW");
        assert_eq!(decide(&acc(3, 0, 1, 0, 1)), Action::RazWi, "ACTLR_EL1");
        assert_eq!(decide(&acc(3, 0, 10, 4, 0)), Action::Undef, "LORSA_EL1");
        assert_eq!(decide(&acc(3, 0, 12, 11, 5)), Action::Sgi, "ICC_SGI1R_EL1");
        assert_eq!(decide(&acc(3, 0, 12, 11, 7)), Action::Undef, "ICC_SGI0R_EL1");
        assert_eq!(decide(&acc(3, 0, 12, 11, 6)), Action::Undef, "ICC_ASGI1R_EL1");
        assert_eq!(decide(&acc(3, 0, 5, 3, 0)), Action::RazWi, "ERRIDR_EL1");
        assert_eq!(decide(&acc(3, 0, 13, 0, 7)), Action::Undef, "SCXTNUM_EL1");
        assert_eq!(decide(&acc(3, 0, 15, 2, 0)), Action::Undef, "IMPDEF");
        assert_eq!(decide(&acc(3, 0, 0, 4, 0)), Action::Id { crm: 4, op2: 0 }, "ID_AA64PFR0_EL1");
    }

    #[test]
    fn pauth_keys() {
        for (crm, op2) in [(1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 1), (2, 2), (2, 3), (3, 0), (3, 1)] {
            assert_eq!(decide(&acc(3, 0, 2, crm, op2)), Action::PauthKey, "key CRm {crm} op2 {op2}");
        }
        // Not keys: TTBR0_EL1 (CRm 0), nothing at APGA op2 2/3, other op1.
        assert_eq!(decide(&acc(3, 0, 2, 0, 0)), Action::Undef);
        assert_eq!(decide(&acc(3, 0, 2, 3, 2)), Action::Undef);
        assert_eq!(decide(&acc(3, 4, 2, 1, 0)), Action::Undef);
    }

    #[test]
    fn sgi_decoding() {
        // SGI 3 to vCPUs 1 and 2 of 4.
        assert_eq!(sgi_targets((3 << 24) | 0b0110, 0, 4), (0b0110, 3));
        // Beyond the VM's vCPUs: dropped.
        assert_eq!(sgi_targets((1 << 24) | 0xfff0, 0, 4), (0, 1));
        // Aff1 = 1, or a range selector: no vCPU there.
        assert_eq!(sgi_targets((1 << 16) | 1, 0, 4), (0, 0));
        assert_eq!(sgi_targets((1 << 44) | 1, 0, 4), (0, 0));
        // IRM: everyone but the sender.
        assert_eq!(sgi_targets((1 << 40) | (15 << 24), 2, 4), (0b1011, 15));
    }

    #[test]
    fn id_views() {
        // PFR0 with SVE = 1, AMU = 1, CSV2 = 2, EL1 = 1: SVE/AMU hidden, CSV2 1.
        let pfr0 = (1 << 32) | (1 << 44) | (2 << 56) | (1 << 4);
        assert_eq!(sanitize_id(4, 0, pfr0, false), (1 << 56) | (1 << 4));
        // PFR1 with SME = 2, BT = 1.
        assert_eq!(sanitize_id(4, 1, (2 << 24) | 1, false), 1);
        // GCS and THE (QEMU 10's -cpu max) hidden; MMFR3 all gone.
        assert_eq!(sanitize_id(4, 1, (1 << 44) | (1 << 48) | 1, false), 1);
        assert_eq!(sanitize_id(7, 3, 0x1111_1111, false), 0);
        // DFR0: PMUVer 5 hidden unless bench; DebugVer 6 kept.
        let dfr0 = (5 << 8) | 6 | (1 << 4);
        assert_eq!(sanitize_id(5, 0, dfr0, false), 6);
        assert_eq!(sanitize_id(5, 0, dfr0, true), (5 << 8) | 6);
        assert_eq!(sanitize_id(4, 4, 0x1234, false), 0);
        assert_eq!(sanitize_id(7, 1, 0xf_0000 | 0x2, false), 0x2);
        assert_eq!(sanitize_id(6, 1, 0xabc, false), 0xabc);
    }
}
