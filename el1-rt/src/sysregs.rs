//! The EL1/EL0 registers the isolation tests look at, read and written the
//! same way from the host shim and from a guest (both run at EL1), and the
//! state this payload found at entry (taken by start.S).
//!
//! Each register has a guest pattern and (where the host shim can afford
//! to change it) a host pattern: values different per register and per
//! side, within the register's writable bits, that keep the writer running.
//! Registers the architecture or the CPU does not let us write keep their
//! value; the tests compare what was read back, never what was meant.
//! Encodings without a name in the baseline assembler (PAuth, SME, GICv3,
//! RAS) are written `S3_<op1>_C<n>_C<m>_<op2>`.

use alloc::vec::Vec;

/// What start.S saw before touching anything (layout fixed by start.S).
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct EntryRegs {
    /// x1..x30 ORed together: 0 when every one was zero.
    pub gpr_or: u64,
    pub sp: u64,
    pub sctlr: u64,
    pub ttbr0: u64,
    pub tcr: u64,
    pub mair: u64,
    pub vbar: u64,
    pub cpacr: u64,
    pub fpcr: u64,
    pub fpsr: u64,
    /// V0..V31, low then high half each.
    pub v: [u64; 64],
}

const _: () = assert!(core::mem::offset_of!(EntryRegs, v) == 80);

#[no_mangle]
static mut EL1_RT_ENTRY: EntryRegs = EntryRegs {
    gpr_or: 0,
    sp: 0,
    sctlr: 0,
    ttbr0: 0,
    tcr: 0,
    mair: 0,
    vbar: 0,
    cpacr: 0,
    fpcr: 0,
    fpsr: 0,
    v: [0; 64],
};

/// The entry state start.S recorded.
pub fn entry() -> &'static EntryRegs {
    // SAFETY: written once by start.S before any Rust code runs; read-only after.
    unsafe { &*core::ptr::addr_of!(EL1_RT_ENTRY) }
}

/// Register groups: one PASS/FAIL line each in the isolation tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Mmu,
    Exception,
    ThreadId,
    Control,
    VTimer,
    PAuth,
    Tpidr2,
    Gic,
    Ras,
    /// Trapped for guests from here on.
    PTimer,
    Debug,
    Pmu,
}

impl Group {
    pub const SWITCHED: [Group; 9] = [
        Group::Mmu,
        Group::Exception,
        Group::ThreadId,
        Group::Control,
        Group::VTimer,
        Group::PAuth,
        Group::Tpidr2,
        Group::Gic,
        Group::Ras,
    ];
    pub const TRAPPED: [Group; 3] = [Group::PTimer, Group::Debug, Group::Pmu];

    pub fn name(self) -> &'static str {
        match self {
            Group::Mmu => "stage-1 MMU registers",
            Group::Exception => "exception registers",
            Group::ThreadId => "thread and context IDs",
            Group::Control => "EL1 controls (CPACR, CSSELR, CNTKCTL)",
            Group::VTimer => "virtual timer",
            Group::PAuth => "pointer-authentication keys",
            Group::Tpidr2 => "TPIDR2_EL0",
            Group::Gic => "GIC CPU interface",
            Group::Ras => "DISR_EL1",
            Group::PTimer => "physical timer",
            Group::Debug => "debug registers",
            Group::Pmu => "PMU registers",
        }
    }
}

pub struct Reg {
    pub name: &'static str,
    pub group: Group,
    read: fn() -> u64,
    write: fn(u64),
    /// The guest's pattern.
    pub guest: u64,
    /// The host shim's pattern, if it can change this register at all.
    pub host: Option<u64>,
    /// Value of a vCPU that has not run (0 unless the ABI says otherwise).
    pub reset: u64,
    /// Bits that hold state (others are read-only fields or status).
    pub mask: u64,
    /// Written by the guest in its MMU-off window, not from Rust.
    pub window: bool,
}

impl Reg {
    /// Reads the register; Err(ESR) if that took an exception.
    pub fn read(&self) -> Result<u64, u64> {
        let mut v = 0;
        crate::probe::try_insns(|| v = (self.read)())?;
        Ok(v)
    }
    /// Writes the register; Err(ESR) if that took an exception.
    pub fn write(&self, v: u64) -> Result<(), u64> {
        crate::probe::try_insns(|| (self.write)(v))
    }
}

/// SCTLR_EL1 of a vCPU that has not run (RES1 bits, MMU and caches off).
pub const SCTLR_RESET: u64 = 0x30d0_0800;
/// Top 16 bits of the guest's 64-bit patterns ("leaf"), and of the host's.
pub const GUEST_MARK: u64 = 0x1eaf << 48;
pub const HOST_MARK: u64 = 0x4057 << 48;
const G: u64 = GUEST_MARK;
const H: u64 = HOST_MARK;

macro_rules! reg {
    ($name:literal, $enc:literal, $group:ident, guest $g:expr, host $h:expr) => {
        reg!($name, $enc, $group, guest $g, host $h, reset 0, mask !0)
    };
    ($name:literal, $enc:literal, $group:ident, guest $g:expr, host $h:expr, reset $r:expr, mask $m:expr) => {
        Reg {
            name: $name,
            group: Group::$group,
            read: || {
                let v: u64;
                // SAFETY: reading a system register has no memory effect;
                // an exception it takes is caught by the probe hook.
                // Zeroed first: an access QEMU implements as a NOP leaves
                // the destination alone.
                unsafe { core::arch::asm!("mov {0}, xzr", concat!("mrs {0}, ", $enc), out(reg) v, options(nomem, nostack)) };
                v
            },
            write: |v| {
                // SAFETY: callers write the patterns of this table, chosen to
                // keep the writer running; an exception is caught by the probe.
                unsafe { core::arch::asm!(concat!("msr ", $enc, ", {}"), "isb", in(reg) v, options(nostack)) };
            },
            guest: $g,
            host: $h,
            reset: $r,
            mask: $m,
            window: false,
        }
    };
}

/// Written by the guest's window code (MMU off): SCTLR, TCR, TTBR0, MAIR,
/// VBAR, CPACR, in this order.
macro_rules! window_reg {
    ($name:literal, $enc:literal, $group:ident, guest $g:expr, reset $r:expr) => {
        Reg { window: true, ..reg!($name, $enc, $group, guest $g, host None, reset $r, mask !0) }
    };
}

/// The guest's SCTLR_EL1 pattern: MMU, caches, alignment checks and EE off
/// (the guest's window runs with the MMU off), harmless EL0 controls on.
pub const SCTLR_GUEST: u64 = SCTLR_RESET
    | (1 << 4) // SA0
    | (1 << 5) // CP15BEN
    | (1 << 7) // ITD
    | (1 << 8) // SED
    | (1 << 9) // UMA
    | (1 << 14) // DZE
    | (1 << 15) // UCT
    | (1 << 16) // nTWI
    | (1 << 18) // nTWE
    | (1 << 24) // E0E
    | (1 << 26); // UCI

/// The window registers, in the order the guest's window code writes them.
pub const WINDOW: [&str; 6] = ["SCTLR_EL1", "TCR_EL1", "TTBR0_EL1", "MAIR_EL1", "VBAR_EL1", "CPACR_EL1"];

/// Every register of the isolation tests. Order matters only within the
/// GIC group (CTLR before the BPRs).
pub static REGS: [Reg; 62] = [
    // Stage-1 MMU.
    window_reg!("SCTLR_EL1", "sctlr_el1", Mmu, guest SCTLR_GUEST, reset SCTLR_RESET),
    window_reg!("TTBR0_EL1", "ttbr0_el1", Mmu, guest G | 0x5eaf_0000, reset 0),
    reg!("TTBR1_EL1", "ttbr1_el1", Mmu, guest G | 0x0011_1000, host Some(H | 0x0022_2000)),
    // T0SZ 30, 16K granules, T1SZ 47, A1, EPD1, IPS 42 bits, AS, TBI0/1.
    window_reg!("TCR_EL1", "tcr_el1", Mmu, guest 0x0000_0073_6aef_b51e, reset 0),
    // Valid attribute encodings only (never used: the window has the MMU off).
    window_reg!("MAIR_EL1", "mair_el1", Mmu, guest 0xbb44_ff04_4400_bbff, reset 0),
    reg!("AMAIR_EL1", "amair_el1", Mmu, guest G | 0x0a11, host Some(H | 0x0a22)),
    // Exception handling.
    window_reg!("VBAR_EL1", "vbar_el1", Exception, guest G | 0x1_e800, reset 0),
    reg!("ELR_EL1", "elr_el1", Exception, guest G | 0xe1e0, host Some(H | 0xe1e0)),
    reg!("SPSR_EL1", "spsr_el1", Exception, guest 0x9040_03c5, host Some(0x6000_03c4)),
    reg!("ESR_EL1", "esr_el1", Exception, guest 0x5eaf_1eaf, host Some(0x5eaf_4057)),
    reg!("FAR_EL1", "far_el1", Exception, guest G | 0xfa20, host Some(H | 0xfa20)),
    reg!("AFSR0_EL1", "afsr0_el1", Exception, guest 0x1eaf_af50, host Some(0x4057_af50)),
    reg!("AFSR1_EL1", "afsr1_el1", Exception, guest 0x1eaf_af51, host Some(0x4057_af51)),
    reg!("PAR_EL1", "par_el1", Exception, guest G | 0x0a01, host Some(H | 0x0a01)),
    // Thread and context IDs.
    reg!("TPIDR_EL0", "tpidr_el0", ThreadId, guest G | 0x7e00, host Some(H | 0x7e00)),
    reg!("TPIDR_EL1", "tpidr_el1", ThreadId, guest G | 0x7e01, host Some(H | 0x7e01)),
    reg!("TPIDRRO_EL0", "tpidrro_el0", ThreadId, guest G | 0x7e03, host Some(H | 0x7e03)),
    reg!("CONTEXTIDR_EL1", "contextidr_el1", ThreadId, guest 0x1eaf_c1d0, host Some(0x4057_c1d0)),
    reg!("SP_EL0", "sp_el0", ThreadId, guest G | 0x5e00, host Some(H | 0x5e00)),
    // EL1 controls. CPACR: TTA, SMEN/ZEN/FPEN = EL0 traps only (guest);
    // FP/SIMD on (the host's Rust code uses it).
    window_reg!("CPACR_EL1", "cpacr_el1", Control, guest 0x1111_0000, reset 0),
    reg!("CSSELR_EL1", "csselr_el1", Control, guest 2, host Some(1)),
    reg!("CNTKCTL_EL1", "cntkctl_el1", Control, guest 0x3a6, host Some(0x251)),
    // Virtual timer: far-future deadlines, masked (guest) / disabled (host).
    reg!("CNTV_CTL_EL0", "cntv_ctl_el0", VTimer, guest 3, host Some(2), reset 0, mask 3),
    reg!("CNTV_CVAL_EL0", "cntv_cval_el0", VTimer, guest G | 0xc7a1, host Some(H | 0xc7a1)),
    // Pointer authentication keys (nothing here signs pointers).
    reg!("APIAKeyLo_EL1", "S3_0_C2_C1_0", PAuth, guest G | 0x4b00, host Some(H | 0x4b00)),
    reg!("APIAKeyHi_EL1", "S3_0_C2_C1_1", PAuth, guest G | 0x4b01, host Some(H | 0x4b01)),
    reg!("APIBKeyLo_EL1", "S3_0_C2_C1_2", PAuth, guest G | 0x4b02, host Some(H | 0x4b02)),
    reg!("APIBKeyHi_EL1", "S3_0_C2_C1_3", PAuth, guest G | 0x4b03, host Some(H | 0x4b03)),
    reg!("APDAKeyLo_EL1", "S3_0_C2_C2_0", PAuth, guest G | 0x4b04, host Some(H | 0x4b04)),
    reg!("APDAKeyHi_EL1", "S3_0_C2_C2_1", PAuth, guest G | 0x4b05, host Some(H | 0x4b05)),
    reg!("APDBKeyLo_EL1", "S3_0_C2_C2_2", PAuth, guest G | 0x4b06, host Some(H | 0x4b06)),
    reg!("APDBKeyHi_EL1", "S3_0_C2_C2_3", PAuth, guest G | 0x4b07, host Some(H | 0x4b07)),
    reg!("APGAKeyLo_EL1", "S3_0_C2_C3_0", PAuth, guest G | 0x4b08, host Some(H | 0x4b08)),
    reg!("APGAKeyHi_EL1", "S3_0_C2_C3_1", PAuth, guest G | 0x4b09, host Some(H | 0x4b09)),
    // SME's thread ID register.
    reg!("TPIDR2_EL0", "S3_3_C13_C0_5", Tpidr2, guest G | 0x7e02, host Some(H | 0x7e02)),
    // GICv3 CPU interface (a guest reaches the ICV_ registers). The host
    // leaves its EOI mode, group enables and active priorities alone (the
    // hyp's own interrupts depend on them) and unmasks priorities < 0xf0.
    reg!("ICC_CTLR_EL1", "S3_0_C12_C12_4", Gic, guest 0x2, host None, reset 0, mask 0x3),
    reg!("ICC_PMR_EL1", "S3_0_C4_C6_0", Gic, guest 0xa8, host Some(0xf0)),
    reg!("ICC_BPR0_EL1", "S3_0_C12_C8_3", Gic, guest 3, host Some(4)),
    reg!("ICC_BPR1_EL1", "S3_0_C12_C12_3", Gic, guest 5, host Some(6)),
    reg!("ICC_IGRPEN0_EL1", "S3_0_C12_C12_6", Gic, guest 1, host None),
    reg!("ICC_IGRPEN1_EL1", "S3_0_C12_C12_7", Gic, guest 1, host None),
    reg!("ICC_AP0R0_EL1", "S3_0_C12_C8_4", Gic, guest 0x1ea0_0000, host None),
    reg!("ICC_AP1R0_EL1", "S3_0_C12_C9_0", Gic, guest 0x0eaf_0000, host None),
    // Deferred SError record (a guest reaches VDISR_EL2).
    reg!("DISR_EL1", "S3_0_C12_C1_1", Ras, guest 0x8000_1eaf, host Some(0x8000_4057)),
    // Physical timer: far-future deadlines, never unmasked.
    reg!("CNTP_CTL_EL0", "cntp_ctl_el0", PTimer, guest 3, host Some(2), reset 0, mask 3),
    reg!("CNTP_CVAL_EL0", "cntp_cval_el0", PTimer, guest G | 0xc7a2, host Some(H | 0xc7a2)),
    // Debug: breakpoints and watchpoints disabled (E = 0), no debug enables.
    reg!("MDSCR_EL1", "mdscr_el1", Debug, guest 1 << 12, host Some((1 << 12) | (1 << 22))),
    reg!("DBGBVR0_EL1", "dbgbvr0_el1", Debug, guest 0x1eaf_0000_1000, host Some(0x4057_0000_2000)),
    reg!("DBGBCR0_EL1", "dbgbcr0_el1", Debug, guest 0x1e6, host Some(0x2062)),
    reg!("DBGWVR0_EL1", "dbgwvr0_el1", Debug, guest 0x1eaf_0000_3000, host Some(0x4057_0000_4000)),
    reg!("DBGWCR0_EL1", "dbgwcr0_el1", Debug, guest 0x1ffe, host Some(0x1ec)),
    reg!("MDCCINT_EL1", "mdccint_el1", Debug, guest 1 << 30, host Some(1 << 29)),
    // PMU: counters stopped (PMCR.E = 0), overflow interrupts and overflow
    // flags on different counters.
    reg!("PMCR_EL0", "pmcr_el0", Pmu, guest 0x28, host Some(0x50), reset 0, mask 0xff),
    reg!("PMSELR_EL0", "pmselr_el0", Pmu, guest 0x1e, host Some(0x5)),
    reg!("PMCNTENSET_EL0", "pmcntenset_el0", Pmu, guest 0x2, host Some(0x4)),
    reg!("PMINTENSET_EL1", "pmintenset_el1", Pmu, guest 0x2, host Some(0x4)),
    reg!("PMOVSSET_EL0", "pmovsset_el0", Pmu, guest 0x8, host Some(0x10)),
    reg!("PMUSERENR_EL0", "pmuserenr_el0", Pmu, guest 0x5, host Some(0xa)),
    reg!("PMCCFILTR_EL0", "pmccfiltr_el0", Pmu, guest 0xa800_0000, host Some(0x5400_0000)),
    reg!("PMEVTYPER0_EL0", "pmevtyper0_el0", Pmu, guest 0x8000_0011, host Some(0x4000_0008)),
    reg!("PMEVCNTR0_EL0", "pmevcntr0_el0", Pmu, guest 0x1eaf_0c01, host Some(0x4057_0c01)),
    reg!("PMCCNTR_EL0", "pmccntr_el0", Pmu, guest G | 0x0cc0, host Some(H | 0x0cc0)),
];

/// Indices of [`REGS`], exception registers last: an access that takes an
/// exception rewrites them.
fn exception_regs_last() -> impl Iterator<Item = usize> {
    let (exc, rest): (Vec<usize>, Vec<usize>) = (0..REGS.len()).partition(|&i| REGS[i].group == Group::Exception);
    rest.into_iter().chain(exc)
}

/// Reads every register of [`REGS`]: the value, or Err(ESR) if the read
/// took an exception. Exception registers are read first, before any other
/// read can take an exception.
pub fn read_all() -> [Result<u64, u64>; 62] {
    let mut out = [Ok(0); 62];
    let order: Vec<usize> = exception_regs_last().collect();
    for &i in order.iter().rev() {
        out[i] = REGS[i].read();
    }
    out
}

/// Writes pattern `value(reg)` into every register `pick` selects,
/// exception registers last (errors ignored: what stuck is what
/// [`read_all`] then reads).
pub fn write_patterns(pick: impl Fn(&Reg) -> Option<u64>) {
    for i in exception_regs_last() {
        if let Some(v) = pick(&REGS[i]) {
            let _ = REGS[i].write(v);
        }
    }
}

/// Index of a register by name.
pub fn index(name: &str) -> usize {
    REGS.iter().position(|r| r.name == name).expect("register in the table")
}
