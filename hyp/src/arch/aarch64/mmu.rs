//! The hyp's EL2 stage-1, in two maps.
//!
//! The boot map ([`enable`], the boot CPU's first act): 1 GiB identity
//! blocks from two static tables, device memory below 1 GiB (QEMU `virt`
//! puts its devices there), normal read-write-execute memory up to
//! 512 GiB. It lives only while boot reads the DTB and the boot bundle and
//! writes the host's Image and DTB into host RAM.
//!
//! The final map ([`install_final`], before the first entry into the host;
//! secondary CPUs get it directly from [`enable_this_cpu`]): only what the
//! hyp needs, as `hyp_core::mm::stage1::plan` lists it: its image by section (text
//! r-x, rodata r--, data, bss and stacks rw-), its page pool rw-, its
//! devices (UART, GIC distributor and redistributors) as Device rw-, all
//! identity-mapped, with SCTLR_EL2.WXN on. Host and guest memory are not
//! mapped: the per-CPU window ([`super::window`]) maps a piece of it while
//! the hyp scrubs, cleans or writes it.

use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use log::info;

use hyp_core::mm::stage1::{self, MapError, Perm, PlanError, TableAlloc, Tables};

use super::window;

#[repr(C, align(4096))]
struct Table([u64; 512]);

static mut BOOT_L0: Table = Table([0; 512]);
static mut BOOT_L1: Table = Table([0; 512]);

/// TCR_EL2 bits 31 and 23 are RES1 (E2H = 0).
const TCR_EL2_RES1: u64 = (1 << 31) | (1 << 23);
/// SCTLR_EL2 RES1 bits (E2H = 0): 4, 5, 11, 16, 18, 22, 23, 28, 29.
const SCTLR_EL2_RES1: u64 = 0x30c5_0830;

/// Device memory in the boot map: [0, 1 GiB).
pub const DEVICE_LIMIT: u64 = 1 << 30;
/// End of the boot map's normal memory.
const BOOT_LIMIT: u64 = 1 << 39;

/// TTBR0_EL2 of the final map (0 until [`install_final`]).
static FINAL_TTBR: AtomicU64 = AtomicU64::new(0);

extern "C" {
    static __hyp_start: u8;
    static __rodata_start: u8;
    static __data_start: u8;
    static __stacks_start: u8;
    static __hyp_end: u8;
}

/// Builds the boot map (boot CPU, once) and turns the MMU and caches on.
pub fn enable() {
    // SAFETY: runs once on the boot CPU before anything else uses the boot
    // tables; the MMU is off so nothing walks them while they are written.
    let (l0, l1) = unsafe { (&mut *core::ptr::addr_of_mut!(BOOT_L0), &mut *core::ptr::addr_of_mut!(BOOT_L1)) };
    for (i, e) in l1.0.iter_mut().enumerate() {
        let base = (i as u64) << 30;
        *e = if base < DEVICE_LIMIT {
            stage1::leaf(base, Perm::Device, 1)
        } else {
            // Boot only, and the one writable-and-executable mapping: the
            // image runs from these blocks until the final map replaces them.
            stage1::leaf(base, Perm::ReadWrite, 1) & !stage1::XN
        };
    }
    l0.0[0] = stage1::table_desc(l1.0.as_ptr() as u64);
    program(l0.0.as_ptr() as u64);
    SCTLR_EL2.set(SCTLR_EL2_RES1);
    SCTLR_EL2.modify(SCTLR_EL2::M::Enable + SCTLR_EL2::C::Cacheable + SCTLR_EL2::I::Cacheable + SCTLR_EL2::SA::Enable);
    barrier::isb(barrier::SY);
}

/// Turns the MMU on with the final map: secondary CPUs (started by the host
/// through PSCI CPU_ON, after [`install_final`]).
pub fn enable_this_cpu() {
    let ttbr = FINAL_TTBR.load(Ordering::Acquire);
    if ttbr == 0 {
        // Cannot happen (the host runs only after install_final): stop
        // this CPU rather than run without a map.
        loop {
            aarch64_cpu::asm::wfe();
        }
    }
    program(ttbr);
    SCTLR_EL2.set(SCTLR_EL2_RES1);
    SCTLR_EL2.modify(
        SCTLR_EL2::M::Enable
            + SCTLR_EL2::C::Cacheable
            + SCTLR_EL2::I::Cacheable
            + SCTLR_EL2::SA::Enable
            + SCTLR_EL2::WXN::Enable,
    );
    barrier::isb(barrier::SY);
}

/// MAIR, TCR and TTBR0 for a 48-bit identity-capable map (MMU still off).
fn program(ttbr: u64) {
    const _: () = assert!(stage1::ATTR_DEVICE == 0 && stage1::ATTR_NORMAL == 1);
    MAIR_EL2.write(
        MAIR_EL2::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck
            + MAIR_EL2::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL2::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc,
    );
    let parange = ID_AA64MMFR0_EL1.get() & 0xf;
    TCR_EL2.write(
        TCR_EL2::T0SZ.val(64 - stage1::VA_BITS as u64)
            + TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::SH0::Inner
            + TCR_EL2::TG0::KiB_4
            // At most 48 bits: the 4 KiB granule's limit without FEAT_LPA2.
            + TCR_EL2::PS.val(parange.min(5)),
    );
    TCR_EL2.set(TCR_EL2.get() | TCR_EL2_RES1);
    TTBR0_EL2.set_baddr(ttbr);
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
    // SAFETY: invalidating this CPU's EL2 TLB has no effect on memory.
    unsafe { core::arch::asm!("tlbi alle2", "dsb nsh", "isb") };
}

/// Is `[pa, pa + len)` normal memory in the boot map?
pub fn is_normal(pa: u64, len: u64) -> bool {
    pa >= DEVICE_LIMIT && pa.checked_add(len).is_some_and(|e| e <= BOOT_LIMIT)
}

/// Why the final map could not be built.
#[derive(Debug)]
pub enum FinalError {
    Plan(PlanError),
    Map(&'static str, MapError),
}

impl core::fmt::Display for FinalError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FinalError::Plan(e) => write!(f, "{e}"),
            FinalError::Map(what, e) => write!(f, "mapping {what}: {e:?}"),
        }
    }
}

/// The image's section boundaries (linker/hyp.ld).
fn image() -> stage1::Image {
    // Linker symbols: only their addresses are used.
    stage1::Image {
        start: core::ptr::addr_of!(__hyp_start) as u64,
        rodata: core::ptr::addr_of!(__rodata_start) as u64,
        data: core::ptr::addr_of!(__data_start) as u64,
        stacks: core::ptr::addr_of!(__stacks_start) as u64,
        end: core::ptr::addr_of!(__hyp_end) as u64,
    }
}

/// Builds the final map (the image, the pool `[pool.0, pool.1)`, the
/// `devices` (name, base, size), the window's tables) in pool pages and
/// switches this CPU to it; from then on the DTB, the boot bundle and host
/// RAM are out of reach. Boot CPU, once, before the host first runs.
/// Table pages come from `a` (the hyp's pool, identity-mapped in both maps).
pub fn install_final<A: TableAlloc>(a: &mut A, pool: (u64, u64), devices: &[stage1::Device]) -> Result<(), FinalError> {
    let plan = stage1::plan(&image(), pool, devices).map_err(FinalError::Plan)?;
    let mut t = Tables::new(a).map_err(|e| FinalError::Map("root", e))?;
    for r in &plan {
        t.map(a, r.start, r.start, r.end - r.start, r.perm).map_err(|e| FinalError::Map(r.name, e))?;
        info!("EL2 stage-1: {:#012x}..{:#012x} {} {}", r.start, r.end, r.name, r.perm.name());
    }
    window::prepare(&mut t, a).map_err(|e| FinalError::Map("window", e))?;
    FINAL_TTBR.store(t.root(), Ordering::Release);
    switch(t.root());
    info!(
        "EL2 stage-1: final map on ({} table pages, WXN), window at {:#x}; boot map gone",
        t.pages(),
        stage1::WINDOW_BASE
    );
    super::hyp_map::keep(t);
    Ok(())
}

/// Replaces the boot map with the tables at `root`, WXN on. The two maps
/// translate the code running here the same way (identity) but with other
/// block sizes and permissions, so the switch goes through the MMU being
/// off (no TLB can then hold entries of both maps at once): MMU off,
/// TLBI ALLE2, new TTBR0, MMU on. Nothing between touches memory.
fn switch(root: u64) {
    let sctlr = SCTLR_EL2.get() | SCTLR_EL2::WXN::Enable.value;
    // TTBR0_EL2: BADDR = root, CnP = 0.
    let ttbr = root;
    // Every table write visible to the walker before it may walk them.
    barrier::dsb(barrier::ISH);
    // SAFETY: the code and stack in use are identity-mapped in both maps
    // (and with the MMU off, where instruction fetches go to the same PAs);
    // the block makes no memory access while the MMU is off.
    unsafe {
        core::arch::asm!(
            "mrs {tmp}, sctlr_el2",
            "bic {tmp}, {tmp}, #1",
            "msr sctlr_el2, {tmp}",
            "isb",
            "tlbi alle2",
            "dsb nsh",
            "msr ttbr0_el2, {ttbr}",
            "isb",
            "msr sctlr_el2, {sctlr}",
            "isb",
            tmp = out(reg) _,
            ttbr = in(reg) ttbr,
            sctlr = in(reg) sctlr,
            options(nostack),
        )
    };
}

/// `hyp.selftest=` checks of the final map: each must stop the hyp with an
/// unexpected-EL2-exception report (status 3).
#[derive(Clone, Copy, Debug)]
pub enum Probe {
    /// `wx`: write the first word of `.text` (read-only: permission fault).
    WriteText,
    /// `exec_data`: branch to a `ret` in `.data` (XN: permission fault).
    ExecData,
    /// `read_host`: read host RAM (not mapped: translation fault).
    ReadHost,
    /// `window`: read a host page through the window, then again after it
    /// is unmapped (the TLB invalidation must make it fault).
    Window,
}

/// A `ret` instruction in `.data`, for [`Probe::ExecData`].
static mut DATA_RET: u32 = 0xd65f_03c0;

impl Probe {
    pub fn parse(s: &str) -> Option<Probe> {
        match s {
            "wx" => Some(Probe::WriteText),
            "exec_data" => Some(Probe::ExecData),
            "read_host" => Some(Probe::ReadHost),
            "window" => Some(Probe::Window),
            _ => None,
        }
    }

    /// Runs the probe (`host_pa`: a page of host RAM). Returns only if the
    /// access did not fault, which is a failure.
    pub fn run(self, host_pa: u64) {
        match self {
            Probe::WriteText => {
                let p = image().start as *mut u32;
                info!("selftest: writing .text at {:#018x}", p as u64);
                // SAFETY: deliberately writing the hyp's own code; the value
                // written is the one there, so a map that allows it changes
                // nothing.
                unsafe { core::ptr::write_volatile(p, core::ptr::read_volatile(p)) };
            }
            Probe::ExecData => {
                let addr = core::hint::black_box(core::ptr::addr_of!(DATA_RET) as usize);
                info!("selftest: executing .data at {:#018x}", addr);
                // SAFETY: deliberately branching into .data: the word there is
                // a `ret`, so a map that allows it returns at once.
                let f: extern "C" fn() = unsafe { core::mem::transmute(addr) };
                f();
            }
            Probe::ReadHost => {
                info!("selftest: reading host RAM at {:#018x}", host_pa);
                // SAFETY: deliberately reading memory the hyp does not own.
                let v = unsafe { core::ptr::read_volatile(host_pa as *const u64) };
                core::hint::black_box(v);
            }
            Probe::Window => {
                let va = window::with_mapped(host_pa, 8, |va| {
                    // SAFETY: the window maps host_pa at va for this closure.
                    core::hint::black_box(unsafe { core::ptr::read_volatile(va as *const u64) });
                    va
                });
                info!(
                    "selftest: read host RAM {:#x} through the window at {:#018x}; again after the unmap",
                    host_pa, va
                );
                // SAFETY: deliberately reading the window after its unmap.
                let v = unsafe { core::ptr::read_volatile(va as *const u64) };
                core::hint::black_box(v);
            }
        }
    }
}
