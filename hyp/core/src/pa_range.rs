//! The CPU's physical address range and the stage-2 trees it can walk.
//!
//! ID_AA64MMFR0_EL1.PARange says how many PA bits the CPU implements; VTCR_EL2.PS is set from it
//! (at most 48 bits: the 4 KiB granule's limit without FEAT_LPA2). A stage-2 whose input range
//! (T0SZ) is larger than that output range is CONSTRAINED UNPREDICTABLE in the Arm ARM: on
//! QEMU's Cortex-A53 (40-bit PA) a 44-bit VM livelocks on "spurious" stage-2 faults. So a VM may
//! not have more IPA bits than the CPU has PA bits, as KVM refuses (`kvm_ipa_limit`).

/// The largest output size VTCR_EL2.PS is set to (PARange 5): 48 bits.
pub const MAX_PA_BITS: u8 = 48;

/// PA bits for an ID_AA64MMFR0_EL1.PARange value (its low 4 bits), capped at
/// [`MAX_PA_BITS`]; reserved encodings count as the cap (later architecture versions only add
/// larger ranges).
pub const fn pa_bits(parange: u64) -> u8 {
    let bits = match parange & 0xf {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        _ => 48,
    };
    if bits > MAX_PA_BITS {
        MAX_PA_BITS
    } else {
        bits
    }
}

/// May a stage-2 of `ipa_bits` be walked on a CPU with `pa_bits` of physical address?
pub const fn ipa_fits(ipa_bits: u8, pa_bits: u8) -> bool {
    ipa_bits <= pa_bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parange_encodings() {
        assert_eq!([0, 1, 2, 3, 4, 5, 6, 7, 0xf].map(pa_bits), [32, 36, 40, 42, 44, 48, 48, 48, 48]);
        // Only the field's bits count.
        assert_eq!(pa_bits(0x1234_5672), 40);
    }

    #[test]
    fn a_44_bit_vm_does_not_fit_a_40_bit_cpu() {
        // Cortex-A53/A72 in QEMU: PARange 2 (40 bits) / 4 (44 bits).
        assert!(!ipa_fits(44, pa_bits(2)));
        assert!(ipa_fits(40, pa_bits(2)));
        assert!(ipa_fits(44, pa_bits(4)));
        assert!(ipa_fits(48, pa_bits(6)));
        assert!(!ipa_fits(48, pa_bits(4)));
    }
}
