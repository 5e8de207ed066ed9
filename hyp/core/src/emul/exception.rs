//! Architecture rules the hyp applies when it emulates the hardware: how an
//! exception is taken to EL1 (vector offset, PSTATE), what kind of stage-2
//! fault a syndrome reports, and which system register a trapped access
//! names. Pure functions, tested on the host.

/// SPSR fields.
pub const M_MASK: u64 = 0x1f;
pub const M_EL0T: u64 = 0b00000;
pub const M_EL1T: u64 = 0b00100;
pub const M_EL1H: u64 = 0b00101;
/// M[4]: the interrupted context was AArch32.
pub const M_AARCH32: u64 = 1 << 4;
pub const DAIF: u64 = 0b1111 << 6;
pub const SSBS: u64 = 1 << 12;
pub const PAN: u64 = 1 << 22;
pub const DIT: u64 = 1 << 24;
/// SCTLR_EL1.SPAN (bit 23): 0 = set PAN on exception entry to EL1.
pub const SCTLR_SPAN: u64 = 1 << 23;
/// SCTLR_EL1.DSSBS (bit 44): PSTATE.SSBS on exception entry.
pub const SCTLR_DSSBS: u64 = 1 << 44;

/// Vector offsets from VBAR_EL1.
pub const VEC_CUR_SP0: u64 = 0x000;
pub const VEC_CUR_SPX: u64 = 0x200;
pub const VEC_LOWER_A64: u64 = 0x400;
pub const VEC_LOWER_A32: u64 = 0x600;

/// Where an exception taken to EL1 from a context with SPSR `spsr` enters.
pub fn vector_offset(spsr: u64) -> u64 {
    if spsr & M_AARCH32 != 0 {
        return VEC_LOWER_A32;
    }
    match spsr & M_MASK {
        M_EL0T => VEC_LOWER_A64,
        M_EL1T => VEC_CUR_SP0,
        _ => VEC_CUR_SPX,
    }
}

/// PSTATE on entry to EL1h from `old` (the interrupted PSTATE) with EL1's
/// SCTLR `sctlr`: D, A, I, F masked; PAN set if SCTLR.SPAN is 0, else kept;
/// SSBS = SCTLR.DSSBS; DIT kept (from AArch64: bit 24 of an AArch32 SPSR
/// is J, its DIT is bit 21 and is also kept); SS, IL, BTYPE, UAO and the
/// condition flags clear (TCO too: this hyp offers no MTE).
pub fn entry_pstate(old: u64, sctlr: u64) -> u64 {
    let aarch32 = old & M_AARCH32 != 0;
    let mut p = M_EL1H | DAIF;
    p |= if aarch32 { (old >> 21) & 1 } else { (old >> 24) & 1 } << 24;
    // SPSR bit 22 is PAN from AArch64 and AArch32 alike.
    if sctlr & SCTLR_SPAN == 0 || old & PAN != 0 {
        p |= PAN;
    }
    if sctlr & SCTLR_DSSBS != 0 {
        p |= SSBS;
    }
    p
}

/// What a stage-2 abort's fault status code says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// No valid entry at this level: the only kind a lazy map resolves.
    Translation(u8),
    /// Access flag clear: the hyp always sets AF, so a stale TLB entry.
    AccessFlag(u8),
    /// The entry forbids the access: refused, never retried.
    Permission(u8),
    /// Anything else (address size, external abort on a walk, TLB conflict,
    /// alignment...): refused.
    Other(u8),
}

/// Classifies a DFSC/IFSC (ESR ISS[5:0]) of a stage-2 abort.
pub fn fault_kind(fsc: u8) -> FaultKind {
    let level = fsc & 3;
    match fsc & 0x3c {
        0x04 => FaultKind::Translation(level),
        0x08 => FaultKind::AccessFlag(level),
        0x0c => FaultKind::Permission(level),
        _ => FaultKind::Other(fsc),
    }
}

/// A trapped MSR/MRS/SYS access (ESR EC 0x18), decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
    /// General register transferred (31 = XZR).
    pub rt: u8,
    /// MRS (a read), not MSR / SYS.
    pub read: bool,
}

impl SysRegAccess {
    /// Decodes the ISS of an EC 0x18 syndrome: Op0 [21:20], Op2 [19:17],
    /// Op1 [16:14], CRn [13:10], Rt [9:5], CRm [4:1], Direction [0].
    pub fn from_iss(iss: u32) -> SysRegAccess {
        SysRegAccess {
            op0: ((iss >> 20) & 3) as u8,
            op2: ((iss >> 17) & 7) as u8,
            op1: ((iss >> 14) & 7) as u8,
            crn: ((iss >> 10) & 0xf) as u8,
            rt: ((iss >> 5) & 0x1f) as u8,
            crm: ((iss >> 1) & 0xf) as u8,
            read: iss & 1 != 0,
        }
    }

    /// (op0, op1, CRn, CRm, op2).
    pub fn enc(&self) -> (u8, u8, u8, u8, u8) {
        (self.op0, self.op1, self.crn, self.crm, self.op2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors() {
        assert_eq!(vector_offset(0x3c5), VEC_CUR_SPX); // EL1h
        assert_eq!(vector_offset(0x3c4), VEC_CUR_SP0); // EL1t
        assert_eq!(vector_offset(0x0), VEC_LOWER_A64); // EL0t
        assert_eq!(vector_offset(0x10), VEC_LOWER_A32); // AArch32 User
        assert_eq!(vector_offset(0x1d0), VEC_LOWER_A32);
    }

    #[test]
    fn pstate_on_entry() {
        // SPAN = 0: PAN set; DSSBS = 1: SSBS set; flags and SS dropped.
        let old = 0xf000_0000 | (1 << 21) | M_EL0T;
        assert_eq!(entry_pstate(old, SCTLR_DSSBS), M_EL1H | DAIF | PAN | SSBS);
        // SPAN = 1: PAN kept from the old PSTATE.
        assert_eq!(entry_pstate(M_EL1H, SCTLR_SPAN), M_EL1H | DAIF);
        assert_eq!(entry_pstate(M_EL1H | PAN, SCTLR_SPAN), M_EL1H | DAIF | PAN);
        // DIT: bit 24 from AArch64, bit 21 from AArch32 (bit 24 is J there).
        assert_eq!(entry_pstate(M_EL1H | DIT, SCTLR_SPAN), M_EL1H | DAIF | DIT);
        assert_eq!(entry_pstate(M_AARCH32 | DIT, SCTLR_SPAN), M_EL1H | DAIF);
        assert_eq!(entry_pstate(M_AARCH32 | (1 << 21), SCTLR_SPAN), M_EL1H | DAIF | DIT);
        // The old fixed value 0x3c5 was wrong whenever SPAN = 0.
        assert_ne!(entry_pstate(M_EL1H, 0), 0x3c5);
    }

    #[test]
    fn fault_kinds() {
        assert_eq!(fault_kind(0x07), FaultKind::Translation(3));
        assert_eq!(fault_kind(0x04), FaultKind::Translation(0));
        assert_eq!(fault_kind(0x09), FaultKind::AccessFlag(1));
        assert_eq!(fault_kind(0x0f), FaultKind::Permission(3));
        assert_eq!(fault_kind(0x10), FaultKind::Other(0x10));
        assert_eq!(fault_kind(0x00), FaultKind::Other(0x00));
    }

    #[test]
    fn sysreg_iss() {
        // MRS x3, PMCR_EL0: op0 3, op1 3, CRn 9, CRm 12, op2 0.
        let iss = (3 << 20) | (3 << 14) | (9 << 10) | (3 << 5) | (12 << 1) | 1;
        let a = SysRegAccess::from_iss(iss);
        assert_eq!(a.enc(), (3, 3, 9, 12, 0));
        assert_eq!(a.rt, 3);
        assert!(a.read);
        // DC CISW, x5: op0 1, op1 0, CRn 7, CRm 14, op2 2, write direction.
        let iss = (1 << 20) | (2 << 17) | (7 << 10) | (5 << 5) | (14 << 1);
        let a = SysRegAccess::from_iss(iss);
        assert_eq!(a.enc(), (1, 0, 7, 14, 2));
        assert!(!a.read);
    }
}
