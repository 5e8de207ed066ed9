//! Stage-2 TLB maintenance run in the translation regime of the tree it
//! targets, descriptor publication, zeroing and cache maintenance to the
//! point of coherency: the instructions behind the hyp's `MmEnv`
//! (`crate::hyp_env`), which adds the pool and the counters.

use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;

use hyp_core::mm::env::S2Id;
use hyp_core::mm::zeroing::{self, Zeroing};
use hyp_core::mm::PAGE_SIZE;

use tock_registers::interfaces::Readable;

use super::sysreg::{CTR_EL0, DCZID_EL0, ID_AA64ISAR2_EL1};
use super::window;

// CTR_EL0 fields (`aarch64-cpu` does not describe the register).
/// CTR_EL0.DminLine [19:16]: log2 of the smallest D-cache line, in words.
const CTR_DMINLINE_SHIFT: u64 = 16;
/// CTR_EL0.DIC: I-cache invalidation to PoU not needed for I/D coherence.
pub const CTR_DIC: u64 = 1 << 29;

/// The smallest data cache line of any cache the CPU has, in bytes: the
/// stride that makes a by-VA maintenance loop miss no line.
pub fn dcache_line() -> u64 {
    4 << ((CTR_EL0.get() >> CTR_DMINLINE_SHIFT) & 0xf)
}

/// VMID width in use: 16 where the CPU has 16-bit VMIDs (FEAT_VMID16;
/// every VTCR then sets VS), else 8.
pub fn vmid_bits() -> u32 {
    if ID_AA64MMFR1_EL1.matches_all(ID_AA64MMFR1_EL1::VMIDBits::Bits16) {
        16
    } else {
        8
    }
}

/// The part of every VTCR_EL2 that does not depend on the tree (4K
/// granule, write-back walks, inner shareable, PS from the CPU's PA range,
/// VS from its VMID width), from the ID registers once: 0 until then (RES1
/// makes a computed value non-zero). Every CPU computes the same value.
static VTCR_COMMON: AtomicU64 = AtomicU64::new(0);

/// The PA bits VTCR_EL2.PS gives every stage-2 on this CPU (from PARange).
pub fn pa_bits() -> u8 {
    hyp_core::pa_range::pa_bits(ID_AA64MMFR0_EL1.get())
}

fn vtcr_common() -> u64 {
    let v = VTCR_COMMON.load(Ordering::Relaxed);
    if v != 0 {
        return v;
    }
    let parange = ID_AA64MMFR0_EL1.get() & 0xf;
    let vs = if vmid_bits() == 16 { VTCR_EL2::VS::Bits16 } else { VTCR_EL2::VS::Bits8 };
    let v = (vs
        + VTCR_EL2::IRGN0::NormalWBRAWA
        + VTCR_EL2::ORGN0::NormalWBRAWA
        + VTCR_EL2::SH0::Inner
        + VTCR_EL2::TG0::Granule4KB
        + VTCR_EL2::PS.val(parange.min(5))
        + VTCR_EL2::RES1::SET)
        .value;
    VTCR_COMMON.store(v, Ordering::Relaxed);
    v
}

/// VTCR_EL2 for a stage-2 of `t0sz`/`sl0` (4K granule, write-back walks,
/// inner shareable, PS from the CPU's PA range, 16-bit VMIDs where the CPU
/// has them). Every tree, the host's and the guests', is walked with the
/// VTCR this gives for its geometry. The ID registers are read once (the
/// TLB maintenance of every stage-2 change asks for its tree's VTCR).
/// Out of line for its callers outside TLB maintenance (boot, VM_CREATE):
/// inlined there, the first-use path moved VM_CREATE's new tree through a
/// stack copy (+180 instructions).
#[inline(never)]
pub fn vtcr(t0sz: u64, sl0: u64) -> u64 {
    tree_vtcr(t0sz, sl0)
}

/// [`vtcr`], inlined into the TLB maintenance.
#[inline(always)]
fn tree_vtcr(t0sz: u64, sl0: u64) -> u64 {
    vtcr_common() | (VTCR_EL2::T0SZ.val(t0sz) + VTCR_EL2::SL0.val(sl0)).value
}

/// VTTBR_EL2 of a tree: its root and VMID.
pub fn vttbr(root: u64, vmid: u16) -> u64 {
    (VTTBR_EL2::BADDR.val(root >> 1) + VTTBR_EL2::VMID.val(vmid as u64)).value
}

/// Runs `f` (TLB maintenance that ends with the DSB completing it) in the
/// translation regime of `s2`: TLBI by IPA, VMALLE1 and VMALLS12E1 act on
/// the VMID in VTTBR_EL2, and while it names that VMID the walker may fetch
/// through the root and VTCR next to it, so both are the tree's own (root |
/// VMID, its VTCR). The current pair is restored afterwards (no instruction
/// after `f`'s DSB runs before the maintenance completed), and one ISB
/// ends it all: the maintenance, or the restore, is in effect for what
/// follows.
#[inline(always)]
fn with_s2<F: FnOnce()>(s2: &S2Id, f: F) {
    let (want_vttbr, want_vtcr) = (vttbr(s2.root, s2.vmid), tree_vtcr(s2.t0sz as u64, s2.sl0 as u64));
    let (saved_vttbr, saved_vtcr) = (VTTBR_EL2.get(), VTCR_EL2.get());
    let switch = (want_vttbr, want_vtcr) != (saved_vttbr, saved_vtcr);
    if switch {
        // Both take effect together at the ISB.
        VTCR_EL2.set(want_vtcr);
        VTTBR_EL2.set(want_vttbr);
        barrier::isb(barrier::SY);
    }
    f();
    if switch {
        VTCR_EL2.set(saved_vtcr);
        VTTBR_EL2.set(saved_vttbr);
    }
    barrier::isb(barrier::SY);
}

/// Applies the data-cache operation `$op` (`"dc zva"`, `"dc civac"`) to
/// every `$step`-byte unit from `$start` (aligned to `$step`) up to `$end`:
/// sixteen per round while a whole round fits (two instructions per unit,
/// the operation and the next address: a DC operation takes its address in
/// a register and has no write-back form, so this is its floor), then one
/// at a time.
macro_rules! by_units {
    ($op:literal, $start:expr, $end:expr, $step:expr) => {{
        let (mut a, end, step): (u64, u64, u64) = ($start, $end, $step);
        let round = step * 16;
        if end > a && end - a >= round {
            // The first address of the last round that fits.
            let last = end - round;
            // SAFETY: the caller's: `$op` on every unit of [start, end).
            unsafe {
                core::arch::asm!(
                    "2:",
                    concat!($op, ", {a}"), "add {a}, {a}, {s}",
                    concat!($op, ", {a}"), "add {a}, {a}, {s}",
                    concat!($op, ", {a}"), "add {a}, {a}, {s}",
                    concat!($op, ", {a}"), "add {a}, {a}, {s}",
                    concat!($op, ", {a}"), "add {a}, {a}, {s}",
                    concat!($op, ", {a}"), "add {a}, {a}, {s}",
                    concat!($op, ", {a}"), "add {a}, {a}, {s}",
                    concat!($op, ", {a}"), "add {a}, {a}, {s}",
                    concat!($op, ", {a}"), "add {a}, {a}, {s}",
                    concat!($op, ", {a}"), "add {a}, {a}, {s}",
                    concat!($op, ", {a}"), "add {a}, {a}, {s}",
                    concat!($op, ", {a}"), "add {a}, {a}, {s}",
                    concat!($op, ", {a}"), "add {a}, {a}, {s}",
                    concat!($op, ", {a}"), "add {a}, {a}, {s}",
                    concat!($op, ", {a}"), "add {a}, {a}, {s}",
                    concat!($op, ", {a}"), "add {a}, {a}, {s}",
                    "cmp {a}, {last}",
                    "b.ls 2b",
                    a = inout(reg) a,
                    s = in(reg) step,
                    last = in(reg) last,
                    options(nostack),
                )
            };
        }
        while a < end {
            // SAFETY: as above, one unit.
            unsafe { core::arch::asm!(concat!($op, ", {0}"), in(reg) a, options(nostack)) };
            a += step;
        }
    }};
}

/// Zeroes `[pa, pa + size)` (page multiples, normal memory mapped at EL2
/// that only the hyp touches: the pool, or a window mapping) the way
/// `hyp_core::mm::zeroing` chooses from the ID registers: one SETP / SETM /
/// SETE sequence (FEAT_MOPS), DC ZVA blocks where allowed (unrolled:
/// [`by_units`]), else plain stores.
///
/// # Safety
/// The range is hyp memory or memory every lower EL has lost access to.
pub unsafe fn zero(pa: u64, size: u64) {
    match zeroing::zeroing(ID_AA64ISAR2_EL1.get(), DCZID_EL0.get(), PAGE_SIZE) {
        Zeroing::Mops => {
            // SAFETY: per the function contract. FEAT_MOPS is present and
            // usable at EL2 (no enable gates EL2); the three run in
            // sequence on the same registers (Xd the next byte, Xn the
            // bytes left: both updated, what is left 0 at the end), with
            // XZR as the value. The range is normal memory.
            unsafe {
                core::arch::asm!(
                    ".arch_extension mops",
                    "setp [{d}]!, {n}!, xzr",
                    "setm [{d}]!, {n}!, xzr",
                    "sete [{d}]!, {n}!, xzr",
                    d = inout(reg) pa => _,
                    n = inout(reg) size => _,
                    options(nostack),
                )
            };
        }
        // Per the function contract; `pa` is block-aligned (pa and size
        // are page multiples, block divides a page).
        Zeroing::DcZva { block } => by_units!("dc zva", pa, pa + size, block),
        // SAFETY: per the function contract.
        Zeroing::Stores => unsafe { core::ptr::write_bytes(pa as *mut u8, 0, size as usize) },
    }
}

/// Cleans `[va, va + len)` (normal memory the current EL2 map reaches at
/// `va`) to the point of coherency, by line, and waits for it: what the
/// hyp wrote reaches memory for an observer that reads around the caches
/// (a CPU with its MMU or caches off, a non-coherent device). For large
/// ranges at boot (out of line: `smmu::clean_poc` keeps a plain loop for
/// the single descriptors of the table-write paths).
#[inline(never)]
pub fn clean_to_poc(va: u64, len: u64) {
    let line = dcache_line();
    // Cache maintenance by VA on memory the caller names as mapped; it
    // changes no data.
    by_units!("dc cvac", va & !(line - 1), va + len, line);
    barrier::dsb(barrier::SY);
}

/// Copies `len` bytes from `src` to `dst` (normal memory mapped at EL2,
/// the ranges apart): one CPYFP / CPYFM / CPYFE sequence where the CPU
/// has FEAT_MOPS (`hyp_core::mm::zeroing::has_mops`), else the compiler's
/// copy. (Boot moves the DTB and the boot bundle with it: tens of MiB.)
///
/// # Safety
/// `[src, src + len)` is readable and `[dst, dst + len)` writable by the
/// hyp, nothing else uses either, and they do not overlap.
pub unsafe fn copy(dst: u64, src: u64, len: u64) {
    if zeroing::has_mops(ID_AA64ISAR2_EL1.get()) {
        // SAFETY: per the function contract. FEAT_MOPS is present and
        // usable at EL2; the three run in sequence on the same registers
        // (Xd, Xs the next bytes, Xn the bytes left: all updated, what is
        // left 0 at the end); forward-only suits ranges apart.
        unsafe {
            core::arch::asm!(
                ".arch_extension mops",
                "cpyfp [{d}]!, [{s}]!, {n}!",
                "cpyfm [{d}]!, [{s}]!, {n}!",
                "cpyfe [{d}]!, [{s}]!, {n}!",
                d = inout(reg) dst => _,
                s = inout(reg) src => _,
                n = inout(reg) len => _,
                options(nostack),
            )
        };
    } else {
        // SAFETY: per the function contract.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, len as usize) };
    }
}

/// TLB maintenance at boot, before the first entry to a lower EL: whatever
/// firmware or a previous boot left, for any VMID, stage 1 or 2, at EL2 or
/// EL1&0, is invalidated across the inner-shareable domain.
pub fn flush_all_at_boot() {
    // SAFETY: TLB maintenance only; no memory is accessed.
    unsafe { core::arch::asm!("dsb ishst", "tlbi alle2is", "tlbi alle1is", "dsb ish", "isb", options(nostack)) };
}

/// The same for one CPU coming up while others run (PSCI CPU_ON): only its
/// own TLBs can hold entries from before its reset.
pub fn flush_all_this_cpu() {
    // SAFETY: TLB maintenance only; no memory is accessed.
    unsafe { core::arch::asm!("dsb nshst", "tlbi alle2", "tlbi alle1", "dsb nsh", "isb", options(nostack)) };
}

/// Writes a live descriptor and orders it before later walks. Its
/// `DSB ISHST` is also the one [`tlbi_ipa`] relies on: the TLBI that
/// follows the write of an entry made invalid has no barrier of its own.
///
/// # Safety
/// `ptep` is a descriptor in a table page of a stage-2 whose lock the caller
/// holds.
pub unsafe fn write_pte(ptep: *mut u64, val: u64) {
    // SAFETY: per the function contract.
    unsafe { core::ptr::write_volatile(ptep, val) };
    barrier::dsb(barrier::ISHST);
}

/// Every earlier store (a new table's zeroing and entries) completes before
/// the store that makes the table reachable.
pub fn publish_barrier() {
    barrier::dsb(barrier::ISHST);
}

/// Invalidates the stage-2 entries for `ipa` of the tree `s2` (and the
/// combined stage-1+2 entries of its VMID), inner-shareable. Issued only
/// after the descriptor's write ([`write_pte`]), whose DSB ISHST already
/// completed it for every walker: no barrier of its own before the TLBI.
#[inline(always)]
pub fn tlbi_ipa(s2: &S2Id, ipa: u64) {
    with_s2(s2, || {
        // SAFETY: TLB maintenance only; the operand is IPA[55:12]. The
        // stage-2 invalidation completes (DSB) before the combined
        // entries are invalidated, so no walk refills them from it.
        unsafe {
            core::arch::asm!(
                "tlbi ipas2e1is, {0}",
                "dsb ish",
                "tlbi vmalle1is",
                "dsb ish",
                in(reg) ipa >> 12,
                options(nostack),
            )
        };
    });
}

/// Invalidates every entry of the tree's VMID, inner-shareable.
pub fn tlbi_vmid(s2: &S2Id) {
    with_s2(s2, || {
        // SAFETY: TLB maintenance only.
        unsafe { core::arch::asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", options(nostack)) };
    });
}

/// Zeroes memory the hyp does not map, through this CPU's window.
///
/// # Safety
/// Every lower EL has lost access to `[pa, pa + size)`.
pub unsafe fn zero_through_window(pa: u64, size: u64) {
    window::for_each_chunk(pa, size, |va, len| {
        // SAFETY: per the function contract; the window maps this piece at
        // `va` (page-aligned) as normal memory.
        unsafe { zero(va, len) };
    });
}

/// Cleans and invalidates `[pa, pa + size)` to the point of coherency, by
/// VA through this CPU's window (unrolled: [`by_units`]), and waits for it.
pub fn dcache_clean_inval_poc(pa: u64, size: u64) {
    let line = dcache_line();
    window::for_each_chunk(pa, size, |va, len| {
        // Cache maintenance by VA on normal memory the window maps (a line
        // never crosses a page); it changes no data.
        by_units!("dc civac", va & !(line - 1), va + len, line);
    });
    barrier::dsb(barrier::ISH);
}

/// Invalidates the instruction caches to the point of unification (after
/// the D-side was cleaned), unless CTR_EL0.DIC says it is not needed.
pub fn icache_inval_all() {
    if CTR_EL0.get() & CTR_DIC == 0 {
        // SAFETY: instruction cache maintenance only.
        unsafe { core::arch::asm!("ic ialluis", options(nostack)) };
    }
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
}
