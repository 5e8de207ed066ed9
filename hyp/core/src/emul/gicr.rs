//! The first 4 KiB page of a GICv3 redistributor's RD_base frame, as the
//! host sees it.
//!
//! With LPIs on, a redistributor reads the LPI property table and reads and
//! writes the LPI pending table at the physical addresses in GICR_PROPBASER
//! and GICR_PENDBASER: a DMA engine the host could aim at any page. The hyp
//! keeps this page out of the host's stage-2 and emulates every access to
//! it: the registers the host needs (GICR_CTLR, GICR_IIDR, GICR_TYPER,
//! GICR_STATUSR, GICR_WAKER) reach the hardware, LPIs are hidden
//! (GICR_TYPER says there are none, GICR_CTLR.EnableLPIs cannot be set) and
//! the LPI registers read as zero and ignore writes. The rest of the frame
//! (ID registers) and the SGI_base frame stay directly mapped; a GICv4
//! VLPI_base frame (virtual LPI tables) is not mapped at all.
//!
//! This module decides what one access does; the EL2 side
//! (`hyp/src/trap/host_gicr.rs` in the binary) performs it.

/// Size of the emulated page.
pub const PAGE: u64 = 0x1000;
/// Stride of GICv3 redistributors: RD_base and SGI_base, 64 KiB each.
pub const STRIDE_V3: u64 = 0x2_0000;
/// Stride with the GICv4 VLPI_base and reserved frames (GICR_TYPER.VLPIS).
pub const STRIDE_V4: u64 = 0x4_0000;
/// One 64 KiB redistributor frame.
pub const FRAME: u64 = 0x1_0000;
/// Offset of the GICv4 VLPI_base frame (GICR_VPROPBASER, GICR_VPENDBASER).
pub const VLPI_FRAME: u64 = 0x2_0000;

/// Register offsets in RD_base (GICv3 architecture specification, 12.10).
pub mod reg {
    pub const CTLR: u64 = 0x0000;
    pub const IIDR: u64 = 0x0004;
    pub const TYPER: u64 = 0x0008;
    pub const STATUSR: u64 = 0x0010;
    pub const WAKER: u64 = 0x0014;
    pub const SETLPIR: u64 = 0x0040;
    pub const CLRLPIR: u64 = 0x0048;
    pub const PROPBASER: u64 = 0x0070;
    pub const PENDBASER: u64 = 0x0078;
    pub const INVLPIR: u64 = 0x00a0;
    pub const INVALLR: u64 = 0x00b0;
    pub const SYNCR: u64 = 0x00c0;
}

/// GICR_CTLR fields.
pub mod ctlr {
    /// LPIs enabled: the redistributor uses PROPBASER/PENDBASER.
    pub const ENABLE_LPIS: u64 = 1 << 0;
}

/// GICR_TYPER fields.
pub mod typer {
    /// Physical LPIs supported.
    pub const PLPIS: u64 = 1 << 0;
    /// Virtual LPIs supported (GICv4).
    pub const VLPIS: u64 = 1 << 1;
    /// GICR_VPENDBASER.Dirty supported (GICv4).
    pub const DIRTY: u64 = 1 << 2;
    /// Direct LPI injection registers (SETLPIR, CLRLPIR, INVLPIR, ...).
    pub const DIRECT_LPI: u64 = 1 << 3;
    /// Last redistributor of its region.
    pub const LAST: u64 = 1 << 4;
    /// vPE IDs in GICR_VPENDBASER (GICv4.1).
    pub const RVPEID: u64 = 1 << 7;
    /// Which redistributors share LPI configuration tables.
    pub const COMMON_LPI_AFF: u64 = 3 << 24;
    /// Direct vSGI injection (GICv4.1).
    pub const VSGI: u64 = 1 << 26;
    /// Everything that advertises physical or virtual LPIs: read as zero.
    pub const LPI_FIELDS: u64 = PLPIS | VLPIS | DIRTY | DIRECT_LPI | RVPEID | COMMON_LPI_AFF | VSGI;
}

/// GICR_WAKER fields.
pub mod waker {
    pub const PROCESSOR_SLEEP: u64 = 1 << 1;
    pub const CHILDREN_ASLEEP: u64 = 1 << 2;
}

/// What one host access to the page does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read the hardware register, then clear `clear` in the value.
    Read { clear: u64 },
    /// Write the host's value with `clear` cleared to the hardware register.
    Write { clear: u64 },
    /// Read as zero, write ignored: an LPI register, a read-only register
    /// written, a register accessed with the wrong width, or reserved.
    RazWi,
    /// Not an access a GIC register can take (size 1 or 2, misaligned,
    /// outside the page): the hyp injects an abort, as for an access with
    /// no syndrome.
    Abort,
}

/// What a read of `width` bytes at `off` (one of the forwarded registers)
/// hides, or None if the access is not forwarded.
fn forwarded_read(off: u64, width: u8) -> Option<u64> {
    match (off, width) {
        (reg::CTLR, 4) => Some(ctlr::ENABLE_LPIS),
        (reg::IIDR | reg::STATUSR | reg::WAKER, 4) => Some(0),
        (reg::TYPER, 8) => Some(typer::LPI_FIELDS),
        (reg::TYPER, 4) => Some(typer::LPI_FIELDS & 0xffff_ffff),
        (o, 4) if o == reg::TYPER + 4 => Some(typer::LPI_FIELDS >> 32),
        _ => None,
    }
}

/// What a write of `width` bytes at `off` keeps from the host's value.
fn forwarded_write(off: u64, width: u8) -> Option<u64> {
    match (off, width) {
        (reg::CTLR, 4) => Some(ctlr::ENABLE_LPIS),
        (reg::STATUSR | reg::WAKER, 4) => Some(0),
        _ => None,
    }
}

/// Decides a host access of `size` bytes at offset `off` of the page.
pub fn decide(off: u64, size: u8, write: bool) -> Access {
    let size_ok = matches!(size, 4 | 8);
    if !size_ok || !off.is_multiple_of(size as u64) || off + size as u64 > PAGE {
        return Access::Abort;
    }
    let clear = if write { forwarded_write(off, size) } else { forwarded_read(off, size) };
    match clear {
        Some(clear) if write => Access::Write { clear },
        Some(clear) => Access::Read { clear },
        None => Access::RazWi,
    }
}

/// The value a register read gives the guest-visible register file: `size`
/// bytes, sign-extended if `sse`, truncated to 32 bits unless `sf`.
pub fn load_value(v: u64, size: u8, sse: bool, sf: bool) -> u64 {
    let bits = size as u32 * 8;
    let v = if bits < 64 { v & ((1u64 << bits) - 1) } else { v };
    let v = if sse && bits < 64 { (((v << (64 - bits)) as i64) >> (64 - bits)) as u64 } else { v };
    if sf {
        v
    } else {
        v & 0xffff_ffff
    }
}

/// The low `size` bytes of a stored register.
pub fn store_value(v: u64, size: u8) -> u64 {
    if size >= 8 {
        v
    } else {
        v & ((1u64 << (size as u32 * 8)) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lpi_registers_are_raz_wi() {
        for off in [reg::SETLPIR, reg::CLRLPIR, reg::PROPBASER, reg::PENDBASER, reg::INVLPIR, reg::INVALLR] {
            for write in [false, true] {
                assert_eq!(decide(off, 8, write), Access::RazWi, "{off:#x}");
                assert_eq!(decide(off, 4, write), Access::RazWi, "{off:#x}");
                assert_eq!(decide(off + 4, 4, write), Access::RazWi, "{off:#x} high half");
            }
        }
        assert_eq!(decide(reg::SYNCR, 4, false), Access::RazWi);
    }

    #[test]
    fn typer_hides_lpis_and_keeps_the_rest() {
        let Access::Read { clear } = decide(reg::TYPER, 8, false) else { panic!("TYPER not forwarded") };
        // A redistributor with LPIs: the last of its region, processor 3.
        let hw = typer::PLPIS | typer::DIRECT_LPI | typer::LAST | (3 << 8) | (0x0100_0203 << 32);
        let seen = hw & !clear;
        assert_eq!(seen & (typer::PLPIS | typer::DIRECT_LPI | typer::VLPIS), 0);
        assert_eq!(seen, typer::LAST | (3 << 8) | (0x0100_0203 << 32));
        let Access::Read { clear: lo } = decide(reg::TYPER, 4, false) else { panic!() };
        assert_eq!(lo, clear & 0xffff_ffff);
        assert_eq!(decide(reg::TYPER + 4, 4, false), Access::Read { clear: 0 });
        assert_eq!(decide(reg::TYPER, 8, true), Access::RazWi, "read-only");
    }

    #[test]
    fn ctlr_cannot_enable_lpis() {
        assert_eq!(decide(reg::CTLR, 4, true), Access::Write { clear: ctlr::ENABLE_LPIS });
        assert_eq!(decide(reg::CTLR, 4, false), Access::Read { clear: ctlr::ENABLE_LPIS });
        assert_eq!(decide(reg::CTLR, 8, false), Access::RazWi, "64-bit access to a 32-bit register");
    }

    #[test]
    fn waker_and_statusr_pass_through() {
        for off in [reg::WAKER, reg::STATUSR] {
            assert_eq!(decide(off, 4, false), Access::Read { clear: 0 });
            assert_eq!(decide(off, 4, true), Access::Write { clear: 0 });
        }
        assert_eq!(decide(reg::IIDR, 4, false), Access::Read { clear: 0 });
        assert_eq!(decide(reg::IIDR, 4, true), Access::RazWi, "read-only");
    }

    #[test]
    fn bad_sizes_and_alignment_abort() {
        assert_eq!(decide(reg::CTLR, 1, false), Access::Abort);
        assert_eq!(decide(reg::WAKER, 2, true), Access::Abort);
        assert_eq!(decide(reg::TYPER + 4, 8, false), Access::Abort);
        assert_eq!(decide(reg::WAKER + 2, 4, false), Access::Abort);
        assert_eq!(decide(PAGE - 4, 4, false), Access::RazWi, "last word: reserved");
        assert_eq!(decide(PAGE, 4, false), Access::Abort);
        assert_eq!(decide(0x800, 8, true), Access::RazWi, "reserved");
    }

    #[test]
    fn register_values() {
        assert_eq!(load_value(0x8000_0001, 4, false, false), 0x8000_0001);
        assert_eq!(load_value(0x8000_0001, 4, true, true), 0xffff_ffff_8000_0001, "ldrsw");
        assert_eq!(load_value(0x8000_0001, 4, true, false), 0x8000_0001);
        assert_eq!(load_value(0x1_2345_6789, 4, false, true), 0x2345_6789);
        assert_eq!(load_value(u64::MAX, 8, true, true), u64::MAX);
        assert_eq!(store_value(0xdead_beef_1234_5678, 4), 0x1234_5678);
        assert_eq!(store_value(0xdead_beef_1234_5678, 8), 0xdead_beef_1234_5678);
    }
}
