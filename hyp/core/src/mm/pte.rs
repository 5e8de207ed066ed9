//! VMSAv8-64 stage-2 descriptors, 4 KiB granule.
//!
//! Valid leaf: bit 0 valid, bit 1 page (level 3) / block (0, levels 1-2),
//! MemAttr[5:2], S2AP[7:6], SH[9:8], AF[10], output address [47:12],
//! XN[54:53], software bits [56:55] = [`PageState`].
//!
//! MemAttr has two encodings (Arm ARM, "Stage 2 memory type and
//! Cacheability attributes"): without FEAT_S2FWB (or with HCR_EL2.FWB
//! clear) it is combined with stage 1's attributes, MemAttr[3:2] the outer
//! and [1:0] the inner cacheability (0b1111 Normal Write-Back) or, with
//! [3:2] = 0, the Device type in [1:0] (0b0001 Device-nGnRE). With
//! HCR_EL2.FWB set, MemAttr[2] = 1 chooses a Normal type that overrides
//! stage 1 (0b110: Normal Write-Back whatever stage 1 says, even with the
//! stage-1 MMU off), MemAttr[2] = 0 a Device type in [1:0] (0b0001
//! Device-nGnRE again). The CPUs' trees use the encoding of the mode the
//! hyp set at boot ([`set_fwb`]); the SMMU's (the DMA view) always the
//! first one: it walks without HCR_EL2 (STE.S2FWB is left clear); so does
//! the hyp's bookkeeping tree, which no walker reads (`Stage2::fwb`).
//! Invalid entry (bit 0 clear): bits [9:2] owner id (0 none, 1 the hyp's own
//! memory, 2 a guest, 3 donated to the hyp by the host), bits [31:16] VM
//! handle.

use super::prot::{Attrs, Leaf, MemType, Owner, PageState, Perm};

pub const VALID: u64 = 1 << 0;
/// Table descriptor at levels 0-2, page descriptor at level 3.
pub const TABLE_OR_PAGE: u64 = 1 << 1;
const MEMATTR_SHIFT: u32 = 2;
/// Stage-2 MemAttr without FWB: Normal, outer WB, inner WB.
pub const MEMATTR_NORMAL_WB: u64 = 0b1111;
/// Stage-2 MemAttr with HCR_EL2.FWB: Normal Write-Back, forced (stage 1's
/// type and cacheability do not weaken it).
pub const MEMATTR_FWB_NORMAL_WB: u64 = 0b0110;
/// Stage-2 MemAttr: Device-nGnRE (the same bits in both encodings).
pub const MEMATTR_DEVICE_NGNRE: u64 = 0b0001;
const MEMATTR_MASK: u64 = 0b1111 << MEMATTR_SHIFT;
const S2AP_R: u64 = 1 << 6;
const S2AP_W: u64 = 1 << 7;
const SH_INNER: u64 = 0b11 << 8;
const AF: u64 = 1 << 10;
/// XN[1:0] = 0b10: not executable at EL1 or EL0.
const XN: u64 = 0b10 << 53;
const XN_MASK: u64 = 0b11 << 53;
pub const OA_MASK: u64 = 0x0000_ffff_ffff_f000;
const SW_STATE_SHIFT: u32 = 55;
const SW_STATE_MASK: u64 = 0b11 << SW_STATE_SHIFT;

const OWNER_SHIFT: u32 = 2;
const OWNER_MASK: u64 = 0xff << OWNER_SHIFT;
const HANDLE_SHIFT: u32 = 16;
const HANDLE_MASK: u64 = 0xffff << HANDLE_SHIFT;
const OWNER_ID_HYP: u64 = 1;
const OWNER_ID_GUEST: u64 = 2;
const OWNER_ID_HYP_DONATED: u64 = 3;
const OWNER_ID_VM_TABLES: u64 = 4;

/// The boot's choice ([`set_fwb`]), kept as the MemAttr bits (in place,
/// bits [5:2]) of a Normal descriptor of a CPU's tree: a plain word, not an
/// atomic, so that the encodings of one transition share one load, and
/// OR-ed into a descriptor whose other bits fold to a constant (the
/// one-page forms encode three to five constant leaves up front).
#[cfg(not(test))]
struct Mode(core::cell::UnsafeCell<u64>);

// SAFETY: written once by `set_fwb` on the boot CPU before any other CPU
// runs and before any stage-2 exists (its contract); only read after.
#[cfg(not(test))]
unsafe impl Sync for Mode {}

#[cfg(not(test))]
static NORMAL: Mode = Mode(core::cell::UnsafeCell::new(MEMATTR_NORMAL_WB << MEMATTR_SHIFT));

#[cfg(test)]
std::thread_local! {
    /// Tests: the mode per test thread (tests of both modes run at once).
    static NORMAL: core::cell::Cell<u64> = const { core::cell::Cell::new(MEMATTR_NORMAL_WB << MEMATTR_SHIFT) };
}

/// Sets the MemAttr encoding of the CPUs' stage-2 trees: `true` when
/// HCR_EL2.FWB is set for every lower-EL context. Host tests: per thread.
///
/// # Safety
/// Called once at boot on the boot CPU, before any other CPU runs and
/// before any descriptor of a CPU's tree is written (every tree's
/// descriptors are in one mode, never changed).
pub unsafe fn set_fwb(on: bool) {
    let bits = memattr(MemType::Normal, on) << MEMATTR_SHIFT;
    #[cfg(not(test))]
    // SAFETY: per the function contract, nothing reads it concurrently.
    unsafe {
        *NORMAL.0.get() = bits
    };
    #[cfg(test)]
    NORMAL.with(|f| f.set(bits));
}

/// The MemAttr bits of a Normal descriptor of a CPU's tree, in place.
#[inline(always)]
fn normal_bits() -> u64 {
    #[cfg(not(test))]
    // SAFETY: written only before any reader exists (`set_fwb`).
    return unsafe { *NORMAL.0.get() };
    #[cfg(test)]
    return NORMAL.with(|f| f.get());
}

/// Stage-2 forced write-back (FEAT_S2FWB, HCR_EL2.FWB) in effect: the CPUs'
/// trees use the FWB encoding and every lower-EL access to memory they map
/// as Normal is Write-Back cacheable whatever the lower EL's stage 1 says.
#[inline(always)]
pub fn fwb() -> bool {
    normal_bits() == MEMATTR_FWB_NORMAL_WB << MEMATTR_SHIFT
}

/// MemAttr[3:0] of a Normal leaf in the encoding `fwb` selects, without a
/// branch: [`MEMATTR_NORMAL_WB`] (0b1111) or [`MEMATTR_FWB_NORMAL_WB`]
/// (0b0110), the two differing in bits 3 and 0.
#[inline(always)]
pub const fn normal_memattr(fwb: bool) -> u64 {
    MEMATTR_NORMAL_WB ^ ((fwb as u64) * (MEMATTR_NORMAL_WB ^ MEMATTR_FWB_NORMAL_WB))
}

/// MemAttr[3:0] of `mem` in the encoding `fwb` selects.
#[inline(always)]
pub const fn memattr(mem: MemType, fwb: bool) -> u64 {
    match (mem, fwb) {
        (MemType::Normal, false) => MEMATTR_NORMAL_WB,
        (MemType::Normal, true) => MEMATTR_FWB_NORMAL_WB,
        (MemType::Device, _) => MEMATTR_DEVICE_NGNRE,
    }
}

#[inline]
pub const fn is_valid(pte: u64) -> bool {
    pte & VALID != 0
}

/// `old` and `new` are both valid and differ only in the software bits
/// (the page state): the walker ignores those bits, so no TLB entry or
/// walk can depend on them and the change needs neither break-before-make
/// nor a TLB invalidation (Arm ARM: break-before-make is required for a
/// change of output address, memory type, shareability or block size, and
/// a TLB holds only what the walk used).
#[inline]
pub const fn sw_bits_only(old: u64, new: u64) -> bool {
    is_valid(old) && is_valid(new) && (old ^ new) & !SW_STATE_MASK == 0
}

/// A table descriptor (only meaningful at levels 0-2).
#[inline]
pub const fn is_table(pte: u64, level: u8) -> bool {
    level < 3 && pte & (VALID | TABLE_OR_PAGE) == (VALID | TABLE_OR_PAGE)
}

#[inline]
pub const fn table_pa(pte: u64) -> u64 {
    pte & OA_MASK
}

/// The output address of a valid leaf.
#[inline]
pub const fn oa(pte: u64) -> u64 {
    pte & OA_MASK
}

#[inline]
pub const fn make_table(pa: u64) -> u64 {
    (pa & OA_MASK) | VALID | TABLE_OR_PAGE
}

/// Encodes a leaf for `level` of a CPU's stage-2 (the host's, a guest's,
/// the hyp's bookkeeping tree), in the boot's MemAttr encoding ([`fwb`]).
#[inline(always)]
pub fn encode(leaf: Leaf, level: u8) -> u64 {
    encode_with(leaf, level, normal_bits() >> MEMATTR_SHIFT)
}

/// Encodes a leaf for `level` with `normal` (MemAttr[3:0] of a Normal
/// leaf: [`MEMATTR_NORMAL_WB`] or [`MEMATTR_FWB_NORMAL_WB`], a tree's own
/// encoding, `Stage2::encode`) as the Normal type's bits: for a constant
/// leaf, a constant OR-ed with `normal` shifted in place.
#[inline(always)]
pub const fn encode_with(leaf: Leaf, level: u8, normal: u64) -> u64 {
    match leaf {
        Leaf::Mapped { attrs: Attrs { mem: MemType::Normal, .. }, .. } => {
            (encode_in(leaf, level, false) & !MEMATTR_MASK) | (normal << MEMATTR_SHIFT)
        }
        _ => encode_in(leaf, level, false),
    }
}

/// Encodes a leaf for `level` with the MemAttr encoding `fwb` selects.
#[inline(always)]
pub const fn encode_in(leaf: Leaf, level: u8, fwb: bool) -> u64 {
    match leaf {
        Leaf::Invalid(owner) => encode_owner(owner),
        Leaf::Mapped { pa, attrs, state } => {
            let mut d = (pa & OA_MASK) | VALID | AF | SH_INNER;
            if level == 3 {
                d |= TABLE_OR_PAGE;
            }
            d |= memattr(attrs.mem, fwb) << MEMATTR_SHIFT;
            if attrs.perm.r {
                d |= S2AP_R;
            }
            if attrs.perm.w {
                d |= S2AP_W;
            }
            if !attrs.perm.x {
                d |= XN;
            }
            d | ((state as u64) << SW_STATE_SHIFT)
        }
    }
}

pub const fn encode_owner(owner: Owner) -> u64 {
    match owner {
        Owner::None => 0,
        Owner::Hyp => OWNER_ID_HYP << OWNER_SHIFT,
        Owner::HypDonated => OWNER_ID_HYP_DONATED << OWNER_SHIFT,
        Owner::Guest(h) => (OWNER_ID_GUEST << OWNER_SHIFT) | ((h as u64) << HANDLE_SHIFT),
        Owner::VmTables(h) => (OWNER_ID_VM_TABLES << OWNER_SHIFT) | ((h as u64) << HANDLE_SHIFT),
    }
}

/// Decodes a non-table entry (of either MemAttr encoding: Device-nGnRE
/// has the same bits in both, everything else the engine writes is Normal).
pub fn decode(pte: u64) -> Leaf {
    if !is_valid(pte) {
        let owner = match (pte & OWNER_MASK) >> OWNER_SHIFT {
            OWNER_ID_HYP => Owner::Hyp,
            OWNER_ID_HYP_DONATED => Owner::HypDonated,
            OWNER_ID_GUEST => Owner::Guest(((pte & HANDLE_MASK) >> HANDLE_SHIFT) as u16),
            OWNER_ID_VM_TABLES => Owner::VmTables(((pte & HANDLE_MASK) >> HANDLE_SHIFT) as u16),
            _ => Owner::None,
        };
        return Leaf::Invalid(owner);
    }
    let mem =
        if (pte & MEMATTR_MASK) >> MEMATTR_SHIFT == MEMATTR_DEVICE_NGNRE { MemType::Device } else { MemType::Normal };
    let perm = Perm { r: pte & S2AP_R != 0, w: pte & S2AP_W != 0, x: pte & XN_MASK == 0 };
    let state = match (pte & SW_STATE_MASK) >> SW_STATE_SHIFT {
        1 => PageState::SharedOwned,
        2 => PageState::SharedBorrowed,
        _ => PageState::Owned,
    };
    Leaf::Mapped { pa: pte & OA_MASK, attrs: Attrs { mem, perm }, state }
}

/// The valid descriptor `d` with its page state (software bits) set to
/// `state`: what [`encode`] gives for `d`'s leaf in that state, without
/// encoding it again.
#[inline(always)]
pub const fn with_state(d: u64, state: PageState) -> u64 {
    (d & !SW_STATE_MASK) | ((state as u64) << SW_STATE_SHIFT)
}

/// The same leaf re-encoded one level down (a block entry becomes a page
/// entry at level 3), offset by `off` bytes.
#[inline]
pub const fn child_of(pte: u64, child_level: u8, off: u64) -> u64 {
    if !is_valid(pte) {
        return pte;
    }
    let d = pte + off;
    if child_level == 3 {
        d | TABLE_OR_PAGE
    } else {
        d & !TABLE_OR_PAGE
    }
}

/// Fills a table page with `ENTRIES` descriptors `first + i * step` (a
/// block's children: `step` the child size for valid ones, 0 for invalid
/// ones) with plain stores, eight a round from registers set up once (the
/// compiler pairs them into STPs).
///
/// # Safety
/// `p` points at a table page of `ENTRIES` descriptors that no walker can
/// reach and nothing else references.
#[inline]
pub unsafe fn fill(p: *mut u64, first: u64, step: u64) {
    // SAFETY: per the function contract.
    let t = unsafe { core::slice::from_raw_parts_mut(p, super::ENTRIES) };
    if step == 0 {
        for c in t.chunks_exact_mut(8) {
            c.copy_from_slice(&[first; 8]);
        }
        return;
    }
    let (s2, s4) = (step * 2, step * 4);
    let (s3, s5, s6, s7) = (s2 + step, s4 + step, s4 + s2, s4 + s2 + step);
    let mut v = first;
    for c in t.chunks_exact_mut(8) {
        c.copy_from_slice(&[v, v + step, v + s2, v + s3, v + s4, v + s5, v + s6, v + s7]);
        v += step * 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let leaves = [
            Leaf::Invalid(Owner::None),
            Leaf::Invalid(Owner::Hyp),
            Leaf::Invalid(Owner::HypDonated),
            Leaf::Invalid(Owner::Guest(0xbeef)),
            Leaf::Invalid(Owner::VmTables(0xbeef)),
            Leaf::Mapped { pa: 0x4020_0000, attrs: Attrs::NORMAL_RWX, state: PageState::Owned },
            Leaf::Mapped { pa: 0x9000_0000, attrs: Attrs::DEVICE_RW, state: PageState::SharedOwned },
            Leaf::Mapped {
                pa: 0xffff_ffff_f000,
                attrs: Attrs { mem: MemType::Normal, perm: Perm::R },
                state: PageState::SharedBorrowed,
            },
        ];
        for l in leaves {
            for level in 1..=3 {
                let d = encode(l, level);
                assert_eq!(decode(d), l);
                assert!(!is_table(d, level) || level == 3);
            }
        }
    }

    #[test]
    fn memattr_in_both_encodings() {
        let normal =
            |fwb| encode_in(Leaf::Mapped { pa: 0x4000_0000, attrs: Attrs::NORMAL_RW, state: PageState::Owned }, 3, fwb);
        let device =
            |fwb| encode_in(Leaf::Mapped { pa: 0x0900_0000, attrs: Attrs::DEVICE_RW, state: PageState::Owned }, 3, fwb);
        // Without FWB: Normal, outer and inner Write-Back (0b1111);
        // Device-nGnRE (0b0001). Bits [5:2].
        assert_eq!(normal(false) & (0xf << 2), 0b1111 << 2);
        assert_eq!(device(false) & (0xf << 2), 0b0001 << 2);
        // With FWB: MemAttr[2] = 1, [1:0] = 0b10: Normal Write-Back forced
        // (0b0110); Device-nGnRE is MemAttr[2] = 0, [1:0] = 0b01 (0b0001).
        assert_eq!(normal(true) & (0xf << 2), 0b0110 << 2);
        assert_eq!(device(true) & (0xf << 2), 0b0001 << 2);
        // Nothing else differs, and both decode to what was encoded.
        assert_eq!(normal(true) ^ normal(false), (0b0110 ^ 0b1111) << 2);
        assert_eq!(device(true), device(false));
        for fwb in [false, true] {
            assert_eq!(
                decode(normal(fwb)),
                Leaf::Mapped { pa: 0x4000_0000, attrs: Attrs::NORMAL_RW, state: PageState::Owned }
            );
            assert_eq!(
                decode(device(fwb)),
                Leaf::Mapped { pa: 0x0900_0000, attrs: Attrs::DEVICE_RW, state: PageState::Owned }
            );
        }
    }

    #[test]
    fn a_trees_own_normal_bits_give_either_encoding() {
        let leaves = [
            Leaf::Mapped { pa: 0x4020_0000, attrs: Attrs::NORMAL_RWX, state: PageState::SharedOwned },
            Leaf::Mapped { pa: 0x0900_0000, attrs: Attrs::DEVICE_RW, state: PageState::Owned },
            Leaf::Invalid(Owner::Guest(9)),
        ];
        for l in leaves {
            for level in 1..=3 {
                assert_eq!(normal_memattr(false), MEMATTR_NORMAL_WB);
                assert_eq!(normal_memattr(true), MEMATTR_FWB_NORMAL_WB);
                assert_eq!(encode_with(l, level, MEMATTR_NORMAL_WB), encode_in(l, level, false));
                assert_eq!(encode_with(l, level, MEMATTR_FWB_NORMAL_WB), encode_in(l, level, true));
            }
        }
    }

    #[test]
    fn the_boot_mode_selects_the_cpu_encoding() {
        let l = Leaf::Mapped { pa: 0x4020_0000, attrs: Attrs::NORMAL_RWX, state: PageState::Owned };
        for on in [false, true] {
            // SAFETY: host tests: the mode is this thread's.
            unsafe { set_fwb(on) };
            assert_eq!(fwb(), on);
            assert_eq!(encode(l, 2), encode_in(l, 2, on));
        }
        // SAFETY: as above.
        unsafe { set_fwb(false) };
    }

    #[test]
    fn fill_writes_a_run() {
        let mut t = std::vec![0xdead_u64; super::super::ENTRIES];
        for (first, step) in
            [(0x4020_0000 | 0x7c3, 0x1000), (encode_owner(Owner::Guest(7)), 0), (0x4000_0701, 0x20_0000)]
        {
            // SAFETY: a private buffer of ENTRIES descriptors.
            unsafe { fill(t.as_mut_ptr(), first, step) };
            for (i, d) in t.iter().enumerate() {
                assert_eq!(*d, first + i as u64 * step, "entry {i}");
            }
        }
    }

    #[test]
    fn exact_bits() {
        // 4K page, normal WB, RW, XN, shared-owned.
        let d = encode(Leaf::Mapped { pa: 0x4000_1000, attrs: Attrs::NORMAL_RW, state: PageState::SharedOwned }, 3);
        assert_eq!(
            d,
            0x4000_1000 | 0b11 | (0xf << 2) | (0b11 << 6) | (0b11 << 8) | (1 << 10) | (0b10 << 53) | (1 << 55)
        );
        // 2M block has bit 1 clear.
        let b = encode(Leaf::Mapped { pa: 0x4020_0000, attrs: Attrs::NORMAL_RWX, state: PageState::Owned }, 2);
        assert_eq!(b & 0b11, 0b01);
        assert_eq!(child_of(b, 3, 0x1000) & 0b11, 0b11);
        assert_eq!(child_of(b, 3, 0x1000) & OA_MASK, 0x4020_1000);
        assert_eq!(encode_owner(Owner::Guest(3)), (2 << 2) | (3 << 16));
        // The hyp's own memory and pages donated to it are told apart.
        assert_eq!(encode_owner(Owner::Hyp), 1 << 2);
        assert_eq!(encode_owner(Owner::HypDonated), 3 << 2);
    }
}
