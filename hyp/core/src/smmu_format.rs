//! SMMUv3 data structures, as the hyp writes and reads them: stream table
//! entries for the host's DMA view, command-queue entries, event-queue
//! records, and the queue index arithmetic. Pure (no MMIO), host-tested;
//! `hyp/src/dev/smmu.rs` drives the hardware with them. Field positions are those
//! of the Arm SMMUv3 architecture (IHI 0070).

/// Bytes per stream table entry, command and event record.
pub const STE_BYTES: usize = 64;
pub const CMD_BYTES: usize = 16;
pub const EVT_BYTES: usize = 32;

/// SMMU_IDR0 fields the hyp needs.
pub mod idr0 {
    /// Stage 2 translation.
    pub const S2P: u32 = 1 << 0;
    /// Translation table formats [3:2]: 2 = AArch64, 3 = both.
    pub const fn ttf_aarch64(v: u32) -> bool {
        (v >> 2) & 3 >= 2
    }
    /// Coherent access to tables and queues.
    pub const COHACC: u32 = 1 << 4;
    /// 16-bit VMIDs.
    pub const VMID16: u32 = 1 << 18;
    /// Stream table levels [28:27]: 0 = linear only.
    pub const fn st_level(v: u32) -> u32 {
        (v >> 27) & 3
    }
}

/// SMMU_IDR3.BBML [12:11]: 2 when the SMMU supports break-before-make
/// level 2, a change of block size (a block replaced by a table of the same
/// translations) with no invalid entry between and no TLB conflict.
pub const fn bbml2(idr3: u32) -> bool {
    (idr3 >> 11) & 3 == 2
}

/// Did the event queue overflow (records lost) since software last
/// acknowledged it? SMMU_EVENTQ_PROD.OVFLG [31] differs from
/// SMMU_EVENTQ_CONS.OVACKFLG [31]; acknowledging writes OVFLG back as
/// OVACKFLG.
pub const fn evtq_overflowed(prod: u32, cons: u32) -> bool {
    (prod ^ cons) & (1 << 31) != 0
}

/// SMMU_IDR5.OAS [2:0] as bits.
pub const fn oas_bits(idr5: u32) -> u8 {
    match idr5 & 7 {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

/// SMMU_IDR5.GRAN4K [4]: the 4 KiB granule.
pub const fn gran4k(idr5: u32) -> bool {
    idr5 & (1 << 4) != 0
}

/// The stage-2 context every host stream gets: the DMA view's root, VMID
/// and geometry, as `Stage2` reports them (the same VMSAv8-64 stage-2
/// format the CPUs walk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct S2Context {
    pub vmid: u16,
    pub root: u64,
    pub t0sz: u8,
    /// VTCR_EL2.SL0 encoding (4 KiB granule).
    pub sl0: u8,
    /// SMMU_IDR5.OAS field (S2PS takes the same encoding).
    pub ps: u8,
}

/// A stream table entry translating through `ctx` (Config = stage 2 only,
/// stage 1 bypassed): dword 0 V | Config 0b110; dword 1 SHCFG = use the
/// incoming shareability; dword 2 S2VMID [15:0], S2T0SZ [37:32], S2SL0
/// [39:38], S2IR0/S2OR0 = write-back [41:40]/[43:42], S2SH0 = inner
/// shareable [45:44], S2TG = 4 KiB [47:46], S2PS [50:48], S2AA64 [51],
/// S2AFFD [53] (no access-flag faults: the hyp's descriptors set AF), S2R
/// [58] (faults are recorded in the event queue); dword 3 S2TTB [51:4].
pub fn ste_s2(ctx: &S2Context) -> [u64; 8] {
    let mut e = [0u64; 8];
    e[0] = 1 | (0b110 << 1);
    e[1] = 1 << 44;
    e[2] = ctx.vmid as u64
        | (ctx.t0sz as u64 & 0x3f) << 32
        | (ctx.sl0 as u64 & 3) << 38
        | 1 << 40
        | 1 << 42
        | 3 << 44
        | (ctx.ps as u64 & 7) << 48
        | 1 << 51
        | 1 << 53
        | 1 << 58;
    e[3] = ctx.root & 0x000f_ffff_ffff_fff0;
    e
}

/// A valid stream table entry that aborts every transaction (Config 0b000).
pub fn ste_abort() -> [u64; 8] {
    let mut e = [0u64; 8];
    e[0] = 1;
    e
}

/// Command opcodes.
pub mod op {
    pub const CFGI_STE: u8 = 0x03;
    pub const CFGI_ALL: u8 = 0x04;
    pub const TLBI_S12_VMALL: u8 = 0x28;
    pub const TLBI_S2_IPA: u8 = 0x2a;
    pub const TLBI_NSNH_ALL: u8 = 0x30;
    pub const SYNC: u8 = 0x46;
}

/// CMD_CFGI_ALL: every cached configuration (stream table entries).
pub fn cmd_cfgi_all() -> [u64; 2] {
    // Range = 31 in dword 1 [4:0]: all stream IDs.
    [op::CFGI_ALL as u64, 31]
}

/// CMD_TLBI_NSNH_ALL: every non-secure, non-hyp TLB entry.
pub fn cmd_tlbi_nsnh_all() -> [u64; 2] {
    [op::TLBI_NSNH_ALL as u64, 0]
}

/// CMD_TLBI_S12_VMALL: every entry of `vmid` (dword 0 [47:32]).
pub fn cmd_tlbi_s12_vmall(vmid: u16) -> [u64; 2] {
    [op::TLBI_S12_VMALL as u64 | (vmid as u64) << 32, 0]
}

/// CMD_TLBI_S2_IPA: the stage-2 entries of `vmid` for `ipa` (dword 1
/// [51:12]); not leaf-only, since a removed table entry may be the reason.
pub fn cmd_tlbi_s2_ipa(vmid: u16, ipa: u64) -> [u64; 2] {
    [op::TLBI_S2_IPA as u64 | (vmid as u64) << 32, ipa & 0x000f_ffff_ffff_f000]
}

/// CMD_SYNC with no completion signal (CS = 0b00): completion is seen as
/// SMMU_CMDQ_CONS passing it.
pub fn cmd_sync() -> [u64; 2] {
    [op::SYNC as u64, 0]
}

/// A queue's PROD/CONS arithmetic: `log2` entries, index in [log2-1:0],
/// wrap bit at [log2].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queue {
    pub log2: u32,
}

impl Queue {
    pub const fn mask(&self) -> u32 {
        (1 << (self.log2 + 1)) - 1
    }
    pub const fn index(&self, p: u32) -> usize {
        (p & ((1 << self.log2) - 1)) as usize
    }
    pub const fn next(&self, p: u32) -> u32 {
        (p + 1) & self.mask()
    }
    pub const fn empty(&self, prod: u32, cons: u32) -> bool {
        prod & self.mask() == cons & self.mask()
    }
    pub const fn full(&self, prod: u32, cons: u32) -> bool {
        (prod ^ cons) & self.mask() == 1 << self.log2
    }
    /// Free entries between `cons` and `prod` (the wrap bit counted in).
    pub const fn free(&self, prod: u32, cons: u32) -> u32 {
        (1 << self.log2) - (prod.wrapping_sub(cons) & self.mask())
    }
}

/// Event identifiers of interest.
pub mod evt {
    pub const C_BAD_STREAMID: u8 = 0x02;
    pub const C_BAD_STE: u8 = 0x04;
    pub const F_TRANSLATION: u8 = 0x10;
    pub const F_ADDR_SIZE: u8 = 0x11;
    pub const F_ACCESS: u8 = 0x12;
    pub const F_PERMISSION: u8 = 0x13;

    pub fn name(id: u8) -> &'static str {
        hyp_abi::trace::dma_event_name(id)
    }
}

/// A decoded event record: event ID (dword 0 [7:0]), StreamID (dword 0
/// [63:32]), RnW (dword 1 [35]: 1 = read), S2 (dword 1 [39]: stage 2),
/// the input address (dword 2) and the IPA/fetch address (dword 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub id: u8,
    pub stream: u32,
    pub read: bool,
    pub s2: bool,
    pub addr: u64,
    pub addr2: u64,
}

impl Event {
    pub fn decode(r: &[u64; 4]) -> Event {
        Event {
            id: r[0] as u8,
            stream: (r[0] >> 32) as u32,
            read: r[1] & (1 << 35) != 0,
            s2: r[1] & (1 << 39) != 0,
            addr: r[2],
            addr2: r[3],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bbml_and_event_queue_overflow_flags() {
        assert!(bbml2(2 << 11));
        assert!(!bbml2(1 << 11) && !bbml2(0) && !bbml2(3 << 11));
        // PROD.OVFLG toggles on each overflow; CONS.OVACKFLG echoes it.
        assert!(!evtq_overflowed(0x0000_0005, 0x0000_0003));
        assert!(evtq_overflowed(0x8000_0005, 0x0000_0003));
        assert!(!evtq_overflowed(0x8000_0005, 0x8000_0005));
        assert!(evtq_overflowed(0x0000_0001, 0x8000_0001));
    }

    #[test]
    fn ste_fields() {
        let ctx = S2Context { vmid: 7, root: 0x4123_4000, t0sz: 24, sl0: 1, ps: 4 };
        let e = ste_s2(&ctx);
        assert_eq!(e[0] & 1, 1, "valid");
        assert_eq!((e[0] >> 1) & 7, 0b110, "stage 2 only");
        assert_eq!(e[2] & 0xffff, 7);
        assert_eq!((e[2] >> 32) & 0x3f, 24);
        assert_eq!((e[2] >> 38) & 3, 1);
        assert_eq!((e[2] >> 46) & 3, 0, "4 KiB granule");
        assert_eq!((e[2] >> 48) & 7, 4);
        assert_eq!((e[2] >> 51) & 1, 1, "AArch64 tables");
        assert_eq!((e[2] >> 57) & 1, 0, "no stall");
        assert_eq!((e[2] >> 58) & 1, 1, "faults recorded");
        assert_eq!(e[3], 0x4123_4000);
        assert_eq!(e[4..], [0; 4]);
        assert_eq!(ste_abort()[0], 1);
    }

    #[test]
    fn commands() {
        assert_eq!(cmd_tlbi_s2_ipa(3, 0x4000_1234), [0x2a | 3 << 32, 0x4000_1000]);
        assert_eq!(cmd_tlbi_s12_vmall(0xffff), [0x28 | 0xffff << 32, 0]);
        assert_eq!(cmd_sync(), [0x46, 0]);
        assert_eq!(cmd_cfgi_all(), [0x04, 31]);
    }

    #[test]
    fn queue_wraps() {
        let q = Queue { log2: 2 };
        assert!(q.empty(0, 0));
        assert!(q.empty(4 | 1, 4 | 1));
        assert!(q.full(4, 0), "same index, other wrap");
        assert!(!q.full(3, 0));
        assert_eq!(q.next(3), 4);
        assert_eq!(q.next(7), 0);
        assert_eq!(q.index(6), 2);
    }

    #[test]
    fn queue_free_counts_across_the_wrap() {
        let q = Queue { log2: 3 };
        assert_eq!(q.free(0, 0), 8);
        assert_eq!(q.free(5, 2), 5);
        // PROD wrapped (bit 3 toggled), CONS not yet.
        assert_eq!(q.free(0b1_001, 0b0_110), 5);
        assert_eq!(q.free(0b1_110, 0b0_110), 0);
        assert!(q.full(0b1_110, 0b0_110));
        // CONS wrapped past PROD's wrap: both toggled back.
        assert_eq!(q.free(0b0_001, 0b1_111), 6);
    }

    #[test]
    fn event_decode() {
        let r = [0x0000_0008_0000_0010, 1 << 35 | 1 << 39, 0x4100_0000, 0x4100_0000];
        let e = Event::decode(&r);
        assert_eq!(e, Event { id: 0x10, stream: 8, read: true, s2: true, addr: 0x4100_0000, addr2: 0x4100_0000 });
        assert_eq!(evt::name(e.id), "translation fault");
        assert_eq!(oas_bits(4), 44);
        // QEMU 10's IDR0 (stage 1 and 2, coherent) and QEMU 7.2's (stage 1 only).
        let (q10, q72) = (std::hint::black_box(0x0d44101bu32), std::hint::black_box(0x0d40101au32));
        assert!(idr0::ttf_aarch64(q10) && q10 & idr0::S2P != 0 && q10 & idr0::COHACC != 0);
        assert!(q72 & idr0::S2P == 0, "QEMU 7.2: stage 1 only");
    }
}
