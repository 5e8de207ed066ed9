//! What a context learns from `SMCCC_ARCH_FEATURES` about the Spectre
//! firmware workarounds (`ARCH_WORKAROUND_1/2/3`), decided from the CPU's
//! ID registers (docs/abi.md, "Guest → hyp"; docs/isolation.md,
//! "Speculation").
//!
//! The hyp implements none of the three calls: it has no firmware-backed
//! branch-predictor invalidation to offer and no speculative-store-bypass
//! control of its own. So it never answers SUCCESS (0, "call it"). It says
//! "this PE does not need it" (1, the value KVM returns for an unaffected
//! CPU) where the ID registers prove that, and NOT_SUPPORTED (-1)
//! otherwise, which leaves the context to its own mitigations (Linux then
//! reports itself vulnerable, or unaffected by its own CPU lists).

use hyp_abi::{arch, smccc};

/// ID_AA64PFR0_EL1.CSV2 [59:56]: 1 = branch targets trained in one
/// context do not steer another's (Spectre-v2 cannot cross); 3 =
/// FEAT_CSV2_3, branch history as well (Spectre-BHB cannot cross).
const CSV2: u32 = 56;
/// ID_AA64MMFR1_EL1.ECBHB [63:60]: an exception clears the branch history.
const ECBHB: u32 = 60;

fn field(v: u64, shift: u32) -> u64 {
    (v >> shift) & 0xf
}

/// The answer to `SMCCC_ARCH_FEATURES(fid)` for the workaround calls, from
/// the CPU's (unsanitized) ID_AA64PFR0_EL1 and ID_AA64MMFR1_EL1; `None`
/// for any other `fid`.
pub fn workaround_answer(fid: u32, pfr0: u64, mmfr1: u64) -> Option<i64> {
    let csv2 = field(pfr0, CSV2);
    let unaffected = match fid {
        arch::ARCH_WORKAROUND_1 => csv2 >= 1,
        // No ID field says a CPU is immune to speculative store bypass;
        // where FEAT_SSBS exists, PSTATE.SSBS is the context's own (saved
        // in SPSR_EL2 with the rest of its PSTATE), as under KVM.
        arch::ARCH_WORKAROUND_2 => false,
        arch::ARCH_WORKAROUND_3 => csv2 >= 3 || field(mmfr1, ECBHB) != 0,
        _ => return None,
    };
    Some(if unaffected { arch::WORKAROUND_UNAFFECTED } else { smccc::NOT_SUPPORTED })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNAFFECTED: Option<i64> = Some(arch::WORKAROUND_UNAFFECTED);
    const NO: Option<i64> = Some(smccc::NOT_SUPPORTED);

    #[test]
    fn answers() {
        // Cortex-A57/A53 (CSV2 0, no ECBHB): nothing proven.
        for fid in [arch::ARCH_WORKAROUND_1, arch::ARCH_WORKAROUND_2, arch::ARCH_WORKAROUND_3] {
            assert_eq!(workaround_answer(fid, 0, 0), NO, "{fid:#x} without CSV2");
        }
        // Cortex-A76/Neoverse-N1 (CSV2 1): Spectre-v2 proven, BHB not.
        let pfr0 = 1 << CSV2;
        assert_eq!(workaround_answer(arch::ARCH_WORKAROUND_1, pfr0, 0), UNAFFECTED);
        assert_eq!(workaround_answer(arch::ARCH_WORKAROUND_3, pfr0, 0), NO);
        assert_eq!(workaround_answer(arch::ARCH_WORKAROUND_2, pfr0, 0), NO);
        // ECBHB or CSV2_3: BHB proven.
        assert_eq!(workaround_answer(arch::ARCH_WORKAROUND_3, pfr0, 1 << ECBHB), UNAFFECTED);
        assert_eq!(workaround_answer(arch::ARCH_WORKAROUND_3, 3 << CSV2, 0), UNAFFECTED);
        assert_eq!(workaround_answer(arch::ARCH_WORKAROUND_2, 3 << CSV2, 1 << ECBHB), NO);
        // Other fields do not count; other calls are not answered here.
        assert_eq!(workaround_answer(arch::ARCH_WORKAROUND_1, !(0xf << CSV2), !(0xf << ECBHB)), NO);
        assert_eq!(workaround_answer(arch::SMCCC_VERSION, u64::MAX, u64::MAX), None);
        assert_eq!(workaround_answer(0x8000_8001, u64::MAX, u64::MAX), None);
    }
}
