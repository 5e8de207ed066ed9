//! ESR_EL2 decoding (exception class, abort syndrome), shared by the hyp's
//! messages and the trace decoder.

use core::fmt;

pub const EC_UNKNOWN: u8 = 0x00;
pub const EC_WFX: u8 = 0x01;
pub const EC_FP: u8 = 0x07;
/// A pointer-authentication instruction trapped (HCR_EL2.API clear).
pub const EC_PAC: u8 = 0x09;
pub const EC_HVC64: u8 = 0x16;
pub const EC_SMC64: u8 = 0x17;
pub const EC_SYS64: u8 = 0x18;
pub const EC_SVE: u8 = 0x19;
pub const EC_IABT_LOW: u8 = 0x20;
pub const EC_IABT_CUR: u8 = 0x21;
pub const EC_PC_ALIGN: u8 = 0x22;
pub const EC_DABT_LOW: u8 = 0x24;
pub const EC_DABT_CUR: u8 = 0x25;
pub const EC_SP_ALIGN: u8 = 0x26;
pub const EC_SERROR: u8 = 0x2f;
pub const EC_BRK: u8 = 0x3c;

/// The IPA of a stage-2 fault: HPFAR_EL2.FIPA [43:4] gives the page
/// (IPA[51:12]), FAR_EL2 the offset in it.
pub const fn fault_ipa(hpfar: u64, far: u64) -> u64 {
    (((hpfar >> 4) & 0xff_ffff_ffff) << 12) | (far & 0xfff)
}

/// A raw ESR value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Esr(pub u64);

impl Esr {
    pub const fn ec(self) -> u8 {
        ((self.0 >> 26) & 0x3f) as u8
    }
    pub const fn il(self) -> bool {
        self.0 & (1 << 25) != 0
    }
    pub const fn iss(self) -> u32 {
        (self.0 & 0x1ff_ffff) as u32
    }
    pub const fn is_abort(self) -> bool {
        matches!(self.ec(), EC_IABT_LOW | EC_IABT_CUR | EC_DABT_LOW | EC_DABT_CUR)
    }
    pub const fn is_data_abort(self) -> bool {
        matches!(self.ec(), EC_DABT_LOW | EC_DABT_CUR)
    }
    /// Fault status code (DFSC / IFSC).
    pub const fn fsc(self) -> u8 {
        (self.0 & 0x3f) as u8
    }
    /// Write, not read (data aborts).
    pub const fn wnr(self) -> bool {
        self.0 & (1 << 6) != 0
    }
    /// Fault on a stage-1 table walk.
    pub const fn s1ptw(self) -> bool {
        self.0 & (1 << 7) != 0
    }
    /// Cache maintenance.
    pub const fn cm(self) -> bool {
        self.0 & (1 << 8) != 0
    }
    /// Instruction syndrome valid (data aborts).
    pub const fn isv(self) -> bool {
        self.0 & (1 << 24) != 0
    }
    /// Access size in bytes (ISV).
    pub const fn sas_bytes(self) -> u8 {
        1 << ((self.0 >> 22) & 3)
    }
    /// Sign-extend (ISV).
    pub const fn sse(self) -> bool {
        self.0 & (1 << 21) != 0
    }
    /// Register transferred (ISV).
    pub const fn srt(self) -> u8 {
        ((self.0 >> 16) & 0x1f) as u8
    }
    /// 64-bit register (ISV).
    pub const fn sf(self) -> bool {
        self.0 & (1 << 15) != 0
    }
    /// HVC/SMC immediate.
    pub const fn imm16(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

pub fn ec_name(ec: u8) -> &'static str {
    match ec {
        EC_UNKNOWN => "unknown",
        EC_WFX => "WFI/WFE",
        EC_FP => "FP/SIMD access",
        EC_HVC64 => "HVC64",
        EC_SMC64 => "SMC64",
        EC_SYS64 => "MSR/MRS trap",
        EC_SVE => "SVE access",
        EC_IABT_LOW => "instruction abort (lower EL)",
        EC_IABT_CUR => "instruction abort (EL2)",
        EC_PC_ALIGN => "PC alignment",
        EC_DABT_LOW => "data abort (lower EL)",
        EC_DABT_CUR => "data abort (EL2)",
        EC_SP_ALIGN => "SP alignment",
        EC_SERROR => "SError",
        EC_BRK => "BRK",
        _ => "other",
    }
}

/// Fault status code: kind and level.
pub fn fsc_name(fsc: u8) -> (&'static str, Option<u8>) {
    let level = Some(fsc & 3);
    match fsc & 0x3c {
        0x00 => ("address size", level),
        0x04 => ("translation", level),
        0x08 => ("access flag", level),
        0x0c => ("permission", level),
        _ => match fsc {
            0x10 => ("synchronous external", None),
            0x21 => ("alignment", None),
            0x30 => ("TLB conflict", None),
            _ => ("other", None),
        },
    }
}

impl fmt::Display for Esr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EC={:#04x} ({})", self.ec(), ec_name(self.ec()))?;
        if self.is_abort() {
            let (kind, level) = fsc_name(self.fsc());
            write!(f, " FSC={:#04x} {} fault", self.fsc(), kind)?;
            if let Some(l) = level {
                write!(f, " level {}", l)?;
            }
            if self.is_data_abort() {
                write!(f, " {}", if self.wnr() { "write" } else { "read" })?;
                if self.isv() {
                    write!(f, " size={} srt=x{} sf={}", self.sas_bytes(), self.srt(), self.sf() as u8)?;
                }
                if self.cm() {
                    write!(f, " CM")?;
                }
            }
            if self.s1ptw() {
                write!(f, " S1PTW")?;
            }
        } else if matches!(self.ec(), EC_HVC64 | EC_SMC64) {
            write!(f, " imm={:#x}", self.imm16())?;
        } else {
            write!(f, " ISS={:#x}", self.iss())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn ipa_from_hpfar() {
        // FAR is a VA: only its page offset counts.
        assert_eq!(fault_ipa(0x123_4567 << 4, 0xffff_0000_0000_0abc), 0x12_3456_7abc);
        assert_eq!(fault_ipa(0x4_2800 << 4, 0x123), 0x4280_0123);
    }

    #[test]
    fn decodes_data_abort() {
        // Lower-EL data abort, ISV, 4 bytes, x3, write, translation fault level 3.
        let e = Esr((0x24 << 26) | (1 << 25) | (1 << 24) | (2 << 22) | (3 << 16) | (1 << 6) | 0x07);
        assert_eq!(
            format!("{e}"),
            "EC=0x24 (data abort (lower EL)) FSC=0x07 translation fault level 3 write size=4 srt=x3 sf=0"
        );
        assert_eq!(format!("{}", Esr(0x5a00_0000)), "EC=0x16 (HVC64) imm=0x0");
    }
}
