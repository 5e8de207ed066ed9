//! How the hyp zeroes memory (its pool's pages, and the pages it scrubs
//! before the host gets them back from a guest: `cmo::scrub_for_host`),
//! decided from the CPU's ID registers; the EL2 binary runs the
//! instructions (`hyp/src/arch/aarch64/tlb.rs`, `zero`).
//!
//! - FEAT_MOPS (ID_AA64ISAR2_EL1.MOPS [19:16] non-zero): one SETP, SETM,
//!   SETE sequence with XZR as the data per contiguous piece, whatever its
//!   size: three instructions, the CPU stepping through the bytes. Usable at
//!   EL2 without any enable (HCRX_EL2.MSCEn and SCTLR_ELx.MSCEn gate EL1
//!   and EL0 only). An implementation may stop SETM early (an interrupt,
//!   its own chunking) and resume it: the registers then say what is left,
//!   and the count of instructions shows each execution.
//! - DC ZVA (DCZID_EL0.DZP [4] clear, the block 4 << BS [3:0] bytes at most
//!   a page): one per block, two instructions each (DC ZVA takes its address
//!   in a register and has no post-increment form): 65,536 for 2 MiB in
//!   64-byte blocks.
//! - Plain stores otherwise.
//!
//! Every path writes zeroes over the whole range before it returns; the
//! scrub's ordering (the guest's mapping gone first, the host's made only
//! after) does not depend on which.

/// ID_AA64ISAR2_EL1.MOPS, bits [19:16].
const ISAR2_MOPS_SHIFT: u32 = 16;
/// DCZID_EL0.BS [3:0]: log2 of the DC ZVA block, in 4-byte words.
const DCZID_BS_MASK: u64 = 0xf;
/// DCZID_EL0.DZP: DC ZVA prohibited.
const DCZID_DZP: u64 = 1 << 4;

/// The way [`zeroing`] chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zeroing {
    /// SETP / SETM / SETE (FEAT_MOPS) over each piece.
    Mops,
    /// DC ZVA, one per `block` bytes (a power of two dividing a page).
    DcZva { block: u64 },
    /// Plain stores.
    Stores,
}

/// FEAT_MOPS: the memory copy and set instructions.
#[inline(always)]
pub const fn has_mops(isar2: u64) -> bool {
    (isar2 >> ISAR2_MOPS_SHIFT) & 0xf != 0
}

/// The zeroing of page-multiple, page-aligned ranges on a CPU whose
/// ID_AA64ISAR2_EL1 is `isar2` and whose DCZID_EL0 is `dczid`, for pages
/// of `page` bytes: FEAT_MOPS where present, else DC ZVA where allowed and
/// its block divides a page, else stores.
#[inline(always)]
pub const fn zeroing(isar2: u64, dczid: u64, page: u64) -> Zeroing {
    if has_mops(isar2) {
        return Zeroing::Mops;
    }
    let block = 4u64 << (dczid & DCZID_BS_MASK);
    if dczid & DCZID_DZP == 0 && block <= page {
        Zeroing::DcZva { block }
    } else {
        Zeroing::Stores
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    #[test]
    fn mops_where_the_cpu_has_it() {
        // QEMU's `max`: ISAR2.MOPS = 1 (and 64-byte DC ZVA blocks, BS = 4).
        assert_eq!(zeroing(1 << 16, 4, PAGE), Zeroing::Mops);
        // Any non-zero MOPS value, even with DC ZVA prohibited.
        assert_eq!(zeroing(0xf << 16, DCZID_DZP, PAGE), Zeroing::Mops);
        // Other ISAR2 fields say nothing about MOPS.
        assert!(!has_mops(!(0xf << 16)));
    }

    #[test]
    fn dc_zva_without_mops() {
        // Cortex-A53/A76, Neoverse-V1: no MOPS, 64-byte blocks.
        assert_eq!(zeroing(0, 4, PAGE), Zeroing::DcZva { block: 64 });
        // A 2 KiB block (BS = 9) still divides a page.
        assert_eq!(zeroing(0, 9, PAGE), Zeroing::DcZva { block: 2048 });
        assert_eq!(zeroing(0, 10, PAGE), Zeroing::DcZva { block: PAGE });
    }

    #[test]
    fn stores_when_dc_zva_is_prohibited_or_too_large() {
        assert_eq!(zeroing(0, DCZID_DZP | 4, PAGE), Zeroing::Stores);
        // BS = 11: an 8 KiB block would zero past a 4 KiB page.
        assert_eq!(zeroing(0, 11, PAGE), Zeroing::Stores);
    }
}
