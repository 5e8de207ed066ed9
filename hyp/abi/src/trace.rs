//! Trace records: what the hyp logs about every stage-2 event. The layout is
//! shared by the hyp (which writes them), the host (which drains them) and
//! `cargo xtask trace` (which decodes them), so it lives in the core.

use core::fmt;

use crate::esr::{fsc_name, Esr};

/// Record kinds; also the bits of the trace mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// A stage-2 fault from a lower EL.
    Fault = 0,
    /// A block split into a table.
    Split = 1,
    /// A table merged back into a block.
    Merge = 2,
    /// An ownership transition (or pin), with its result.
    Transition = 3,
    /// A hypercall and its result.
    Hypercall = 4,
    /// An abort injected into the host or a guest.
    Inject = 5,
    /// Virtual interrupts put into a vCPU's list registers (the virtual
    /// timer among them), or waiting for a free one.
    Irq = 6,
    /// An SMMU event: a host device's DMA the SMMU refused (stream ID in
    /// `arg2`, input address in `ipa`, read/write in `level`: 1 = read,
    /// event ID in `arg`, the IPA/fetch address in `far`).
    Dma = 7,
}

impl Kind {
    pub const ALL: [Kind; 8] =
        [Kind::Fault, Kind::Split, Kind::Merge, Kind::Transition, Kind::Hypercall, Kind::Inject, Kind::Irq, Kind::Dma];
    /// Every kind's bit.
    pub const ALL_MASK: u32 = 0xff;

    pub fn from_u8(v: u8) -> Option<Kind> {
        Kind::ALL.get(v as usize).copied()
    }
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Fault => "fault",
            Kind::Split => "split",
            Kind::Merge => "merge",
            Kind::Transition => "transition",
            Kind::Hypercall => "hypercall",
            Kind::Inject => "inject",
            Kind::Irq => "irq",
            Kind::Dma => "dma",
        }
    }
}

/// Parses "faults,splits,transitions,hypercalls" (also "all") into a mask;
/// splits implies merges.
pub fn parse_mask(s: &str) -> Option<u32> {
    let mut m = 0;
    for w in s.split(',').filter(|w| !w.is_empty()) {
        m |= match w {
            "faults" | "fault" => Kind::Fault.bit() | Kind::Inject.bit(),
            "splits" | "split" | "merges" | "merge" => Kind::Split.bit() | Kind::Merge.bit(),
            "transitions" | "transition" => Kind::Transition.bit(),
            "hypercalls" | "hypercall" => Kind::Hypercall.bit(),
            "injects" | "inject" => Kind::Inject.bit(),
            "irqs" | "irq" => Kind::Irq.bit(),
            "dma" => Kind::Dma.bit(),
            "all" => Kind::ALL_MASK,
            _ => return None,
        };
    }
    Some(m)
}

/// How a fault was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Resolution {
    None = 0,
    /// Identity-mapped (host) at `level`.
    Mapped = 1,
    /// Already mapped: nothing to do.
    Spurious = 2,
    /// Abort injected into the faulting context.
    AbortInjected = 3,
    /// Exit to the host to emulate MMIO.
    MmioExit = 4,
    /// Exit to the host; an abort will be injected into the guest.
    GuestAbortExit = 5,
    /// MEM_UNSHARE waits for host pins.
    UnsharePending = 6,
    Ok = 7,
    /// Refused with -errno in `arg2`.
    Refused = 8,
    /// Exit to the host to donate memory on demand (`MEM_FAULT`); the
    /// instruction runs again.
    MemFaultExit = 9,
}

impl Resolution {
    pub fn from_u8(v: u8) -> Resolution {
        use Resolution::*;
        [None, Mapped, Spurious, AbortInjected, MmioExit, GuestAbortExit, UnsharePending, Ok, Refused, MemFaultExit]
            .get(v as usize)
            .copied()
            .unwrap_or(None)
    }
}

/// Ownership operations named in Transition records (`arg`).
pub mod op {
    pub const SHARE_HYP: u64 = 1;
    pub const UNSHARE_HYP: u64 = 2;
    pub const DONATE_HYP: u64 = 3;
    pub const RECLAIM_HYP: u64 = 4;
    pub const DONATE_GUEST: u64 = 5;
    pub const GUEST_SHARE: u64 = 6;
    pub const GUEST_UNSHARE: u64 = 7;
    pub const RELINQUISH: u64 = 8;
    pub const TEARDOWN: u64 = 9;
    pub const PIN: u64 = 10;
    pub const UNPIN: u64 = 11;
    pub const VM_TOPUP: u64 = 15;

    pub fn name(op: u64) -> &'static str {
        match op {
            SHARE_HYP => "host_share_hyp",
            UNSHARE_HYP => "host_unshare_hyp",
            DONATE_HYP => "host_donate_hyp",
            RECLAIM_HYP => "hyp_donate_host",
            DONATE_GUEST => "host_donate_guest",
            GUEST_SHARE => "guest_share_host",
            GUEST_UNSHARE => "guest_unshare_host",
            RELINQUISH => "guest_relinquish",
            TEARDOWN => "vm_teardown",
            PIN => "host_pin",
            UNPIN => "host_unpin",
            VM_TOPUP => "host_topup_vm",
            _ => "?",
        }
    }
}

/// The name of a guest memory call, for hypercall records.
pub fn call_name(fid: u64) -> Option<&'static str> {
    use crate::guest;
    Some(match u32::try_from(fid).ok()? {
        guest::MEM_SHARE => "MEM_SHARE",
        guest::MEM_UNSHARE => "MEM_UNSHARE",
        guest::MEM_RELINQUISH => "MEM_RELINQUISH",
        guest::MMIO_GUARD => "MMIO_GUARD",
        guest::HYP_MEMINFO => "HYP_MEMINFO",
        _ => return None,
    })
}

/// `who` of the hyp's own bookkeeping table.
pub const WHO_HYP: u16 = 0xffff;
/// `who` of the host's DMA view (the stage-2 the SMMU walks).
pub const WHO_DMA: u16 = 0xfffe;

/// One trace record: 64 bytes, little-endian on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// CNTPCT_EL0 when recorded.
    pub ts: u64,
    pub kind: u8,
    /// Physical CPU.
    pub cpu: u8,
    pub vcpu: u8,
    /// Mapping level (faults resolved by a mapping, splits, merges).
    pub level: u8,
    /// 0 = host, a VM handle, or WHO_HYP.
    pub who: u16,
    pub resolution: u8,
    pub _pad: u8,
    pub esr: u64,
    pub far: u64,
    /// IPA (faults, splits, merges, guest transitions) or PA (host transitions).
    pub ipa: u64,
    pub elr: u64,
    /// Fault: 0; Transition: op; Hypercall: function ID.
    pub arg: u64,
    /// Transition: size / result; Hypercall: x0 result.
    pub arg2: u64,
}

pub const RECORD_SIZE: usize = 64;

impl Record {
    pub fn to_bytes(&self) -> [u8; RECORD_SIZE] {
        let mut b = [0u8; RECORD_SIZE];
        b[0..8].copy_from_slice(&self.ts.to_le_bytes());
        b[8] = self.kind;
        b[9] = self.cpu;
        b[10] = self.vcpu;
        b[11] = self.level;
        b[12..14].copy_from_slice(&self.who.to_le_bytes());
        b[14] = self.resolution;
        b[15] = self._pad;
        for (i, v) in [self.esr, self.far, self.ipa, self.elr, self.arg, self.arg2].iter().enumerate() {
            b[16 + i * 8..24 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Record> {
        if b.len() < RECORD_SIZE {
            return None;
        }
        let q = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        Some(Record {
            ts: q(0),
            kind: b[8],
            cpu: b[9],
            vcpu: b[10],
            level: b[11],
            who: u16::from_le_bytes([b[12], b[13]]),
            resolution: b[14],
            _pad: b[15],
            esr: q(16),
            far: q(24),
            ipa: q(32),
            elr: q(40),
            arg: q(48),
            arg2: q(56),
        })
    }

    pub fn kind(&self) -> Option<Kind> {
        Kind::from_u8(self.kind)
    }
}

/// Who, as text.
pub struct Who(pub u16, pub u8);

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => write!(f, "host"),
            WHO_HYP => write!(f, "hyp"),
            WHO_DMA => write!(f, "dma-view"),
            h => write!(f, "vm{}/vcpu{}", h, self.1),
        }
    }
}

fn errno_name(e: i64) -> &'static str {
    match -e {
        1 => "EPERM",
        2 => "ENOENT",
        12 => "ENOMEM",
        16 => "EBUSY",
        22 => "EINVAL",
        _ => "error",
    }
}

/// SMMU event IDs (Arm SMMUv3) as words.
pub fn dma_event_name(id: u8) -> &'static str {
    match id {
        0x01 => "unsupported upstream transaction",
        0x02 => "bad stream ID",
        0x03 => "STE fetch abort",
        0x04 => "bad STE",
        0x06 => "stream disabled",
        0x07 => "transaction forbidden",
        0x0b => "table walk abort",
        0x10 => "translation fault",
        0x11 => "address size fault",
        0x12 => "access flag fault",
        0x13 => "permission fault",
        _ => "event",
    }
}

/// The decoded one-line form.
impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = Who(self.who, self.vcpu);
        let res = Resolution::from_u8(self.resolution);
        match self.kind() {
            Some(Kind::Fault) => {
                let esr = Esr(self.esr);
                let (fk, lvl) = fsc_name(esr.fsc());
                let access = if !esr.is_data_abort() {
                    "fetch"
                } else if esr.wnr() {
                    "write"
                } else {
                    "read"
                };
                write!(
                    f,
                    "fault  {who} {access} ipa={:#x} far={:#x} pc={:#x} esr={:#x} {fk}",
                    self.ipa, self.far, self.elr, self.esr
                )?;
                if let Some(l) = lvl {
                    write!(f, " L{l}")?;
                }
                if esr.s1ptw() {
                    write!(f, " s1ptw")?;
                }
                if esr.cm() {
                    write!(f, " cm")?;
                }
                if esr.is_data_abort() && esr.isv() {
                    write!(f, " isv size={} x{} sf={}", esr.sas_bytes(), esr.srt(), esr.sf() as u8)?;
                }
                match res {
                    Resolution::Mapped => write!(f, " -> mapped at level {}", self.level),
                    Resolution::Spurious => write!(f, " -> spurious"),
                    Resolution::AbortInjected => write!(f, " -> abort injected"),
                    Resolution::MmioExit => write!(f, " -> mmio exit"),
                    Resolution::GuestAbortExit => write!(f, " -> guest abort exit"),
                    Resolution::MemFaultExit => write!(f, " -> memory fault exit"),
                    Resolution::Refused => write!(f, " -> refused ({})", errno_name(self.arg2 as i64)),
                    r => write!(f, " -> {:?}", r),
                }
            }
            Some(Kind::Split) => {
                write!(f, "split  {who} ipa={:#x} level {} -> {}", self.ipa, self.level, self.level + 1)
            }
            Some(Kind::Merge) => {
                write!(f, "merge  {who} ipa={:#x} level {} <- {}", self.ipa, self.level, self.level + 1)
            }
            Some(Kind::Transition) => {
                write!(f, "trans  {who} {} addr={:#x} size={:#x}", op::name(self.arg), self.ipa, self.far)?;
                match res {
                    Resolution::Ok => write!(f, " -> ok"),
                    Resolution::UnsharePending => write!(f, " -> unshare pending"),
                    _ => write!(f, " -> refused ({})", errno_name(self.arg2 as i64)),
                }
            }
            Some(Kind::Hypercall) => {
                write!(f, "hvc    {who} fid={:#x}", self.arg)?;
                if let Some(n) = call_name(self.arg) {
                    write!(f, " ({n})")?;
                }
                write!(f, " x1={:#x} -> ret={:#x}", self.ipa, self.arg2)
            }
            Some(Kind::Inject) => {
                write!(f, "inject {who} abort far={:#x} pc={:#x} esr={:#x}", self.far, self.elr, self.esr)
            }
            Some(Kind::Irq) => {
                write!(f, "irq    {who} injected {} waiting {}", self.arg, self.arg2)?;
                if self.level != 0 {
                    write!(f, " vtimer")?;
                }
                write!(f, " in-lrs")?;
                for i in 0..128u32 {
                    let m = if i < 64 { self.far } else { self.ipa };
                    if m & (1 << (i % 64)) != 0 {
                        write!(f, " {i}")?;
                    }
                }
                Ok(())
            }
            Some(Kind::Dma) => {
                let access = if self.level != 0 { "read" } else { "write" };
                write!(
                    f,
                    "dma    stream={:#x} {access} addr={:#x} {} (event {:#x}) -> blocked",
                    self.arg2,
                    self.ipa,
                    dma_event_name(self.arg as u8),
                    self.arg
                )
            }
            None => write!(f, "unknown kind {}", self.kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn roundtrip_and_text() {
        let r = Record {
            ts: 1,
            kind: Kind::Fault as u8,
            cpu: 0,
            vcpu: 0,
            level: 0,
            who: 0,
            resolution: Resolution::AbortInjected as u8,
            _pad: 0,
            esr: 0x9200_0047,
            far: 0x4280_0000,
            ipa: 0x4280_0000,
            elr: 0x4220_1000,
            arg: 0,
            arg2: 0,
        };
        assert_eq!(Record::from_bytes(&r.to_bytes()), Some(r));
        assert_eq!(
            format!("{r}"),
            "fault  host write ipa=0x42800000 far=0x42800000 pc=0x42201000 esr=0x92000047 translation L3 -> abort injected"
        );
        assert_eq!(parse_mask("faults,splits"), Some(0b100111));
        assert_eq!(parse_mask("bogus"), None);
        assert_eq!(parse_mask("irqs"), Some(1 << 6));
        let irq = Record {
            kind: Kind::Irq as u8,
            who: 1,
            vcpu: 2,
            level: 1,
            arg: 1,
            arg2: 3,
            far: 1 << 27,
            ipa: 1,
            ..Default::default()
        };
        assert_eq!(format!("{irq}"), "irq    vm1/vcpu2 injected 1 waiting 3 vtimer in-lrs 27 64");
        let hvc = |fid: u32| Record {
            kind: Kind::Hypercall as u8,
            who: 1,
            arg: fid as u64,
            ipa: 0x0900_0000,
            arg2: 0,
            ..Default::default()
        };
        assert_eq!(
            format!("{}", hvc(crate::guest::MMIO_GUARD)),
            "hvc    vm1/vcpu0 fid=0xc6000007 (MMIO_GUARD) x1=0x9000000 -> ret=0x0"
        );
        assert_eq!(format!("{}", hvc(0xc600_0010)), "hvc    vm1/vcpu0 fid=0xc6000010 x1=0x9000000 -> ret=0x0");
        let dma = Record { kind: Kind::Dma as u8, arg: 0x10, arg2: 8, ipa: 0x4100_0000, ..Default::default() };
        assert_eq!(
            format!("{dma}"),
            "dma    stream=0x8 write addr=0x41000000 translation fault (event 0x10) -> blocked"
        );
        assert_eq!(parse_mask("dma"), Some(1 << 7));
    }
}
