//! Boot: from the first instruction to the host running at EL1.
//!
//! reset → MMU on (EL2 stage-1 boot map) → DTB parsed (memory, UART,
//! GIC, PSCI, CPUs) → console → hyp carve-out and allocator → host Image
//! and DTB placed → final EL2 stage-1 (the hyp's own memory and devices
//! only) → host stage-2 (empty; filled lazily on faults) → eret to the host
//! at EL1h with x0 = DTB.

pub mod bundle;
pub mod dt;
pub mod host_dt;
pub mod layout;

use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_cpu::registers::*;
use log::{info, LevelFilter};

use hyp_core::cpu_map::CpuMap;
use hyp_core::mm::mem_protect::host_hyp::hyp_claim_own;
use hyp_core::mm::mem_protect::{HostMm, HypMm, Pa};
use hyp_core::mm::pgtable::Stage2;
use hyp_core::mm::region::Region;

use crate::arch::aarch64::context::{self, Context, Kind};
use crate::arch::aarch64::tlb;
use crate::arch::aarch64::{el1, mmu};
use crate::hyp_env::HypEnv;
use crate::{owners, percpu, pool, Status};

use layout::{align_up, overlaps, MIB, SZ_2M};

extern "C" {
    static __hyp_start: u8;
    static __hyp_end: u8;
    static __stacks_start: u8;
}

/// Hyp command-line options (`hyp.*` in /chosen/bootargs).
pub struct Options {
    pub log: LevelFilter,
    /// `hyp.trace=faults,splits,...`: kinds to record and stream.
    pub trace: u32,
    /// `hyp.trace_vm=N`: only VM N's records.
    pub trace_vm: Option<u32>,
    /// `hyp.trace_buf=N`: ring size (records per CPU).
    pub trace_buf: Option<u32>,
    /// `hyp.trace_quiet`: record without streaming to the console.
    pub trace_quiet: bool,
    /// `hyp.selftest=panic|hang|fault`: deliberately break, to test the runner;
    /// `wx|exec_data|read_host|window`: probe the final EL2 stage-1 (`mmu::Probe`).
    pub selftest: Option<&'static str>,
}

fn parse_options(bootargs: &'static str) -> Options {
    let mut o = Options {
        log: LevelFilter::Info,
        trace: 0,
        trace_vm: None,
        trace_buf: None,
        trace_quiet: false,
        selftest: None,
    };
    for tok in bootargs.split_ascii_whitespace() {
        if let Some(v) = tok.strip_prefix("hyp.log=") {
            o.log = match v {
                "off" => LevelFilter::Off,
                "error" => LevelFilter::Error,
                "warn" => LevelFilter::Warn,
                "debug" => LevelFilter::Debug,
                "trace" => LevelFilter::Trace,
                _ => LevelFilter::Info,
            };
        } else if let Some(v) = tok.strip_prefix("hyp.trace=") {
            o.trace = hyp_abi::trace::parse_mask(v).unwrap_or(hyp_abi::trace::Kind::ALL_MASK);
        } else if let Some(v) = tok.strip_prefix("hyp.trace_vm=") {
            o.trace_vm = v.parse().ok();
        } else if let Some(v) = tok.strip_prefix("hyp.trace_buf=") {
            o.trace_buf = v.parse().ok();
        } else if tok == "hyp.check_invariants" {
            crate::checker::enable(1);
        } else if let Some(v) = tok.strip_prefix("hyp.check_invariants=") {
            crate::checker::enable(v.parse().unwrap_or(1));
        } else if tok == "hyp.bench_pmu" {
            el1::set_bench_pmu(true);
        } else if tok == "hyp.trace_quiet" {
            o.trace_quiet = true;
        } else if let Some(v) = tok.strip_prefix("hyp.selftest=") {
            o.selftest = Some(v);
        }
    }
    o
}

/// Rust entry on the boot CPU (from entry.S): x0 = DTB, x1 = load address.
#[no_mangle]
extern "C" fn hyp_main(dtb: u64, load_addr: u64) -> ! {
    // The boot CPU is logical CPU 0 (`hyp_core::cpu_map`).
    crate::percpu::init_this_cpu(0);
    mmu::enable();
    // SAFETY: the DTB QEMU hands over is in normal memory, mapped by the
    // identity map; fdt validates the header before trusting sizes.
    let fdt = match unsafe { fdt::Fdt::from_ptr(dtb as *const u8) } {
        Ok(f) => f,
        // No DTB: no console to complain on. Stop; the runner reports the
        // missing status line as a failure.
        Err(_) => crate::arch::aarch64::psci::system_off(),
    };
    let mut m = match dt::Machine::parse(&fdt) {
        Ok(m) => m,
        Err(_) => crate::arch::aarch64::psci::system_off(),
    };
    // SAFETY: the UART is the one /chosen/stdout-path names, below 1 GiB
    // (device memory in the identity map; checked by Machine::parse).
    unsafe { crate::console::init(m.uart) };
    // The carve-out and room for it and the host's Image: the DTB and
    // the boot bundle move out of the way if they are there (`layout`).
    let hyp_base = m.ram()[0].base;
    let hyp_size = layout::carve_out_size(&m);
    let room = layout::make_room(&m, dtb, fdt.total_size() as u64, hyp_base, hyp_size).unwrap_or_else(|keep| {
        fail(format_args!(
            "no room for the DTB and the boot bundle out of the way of the carve-out and the host's Image ({:#x}..{:#x})",
            keep.base,
            keep.end()
        ))
    });
    let (dtb, fdt) = match room.moved {
        None => (dtb, fdt),
        Some(_) => {
            // SAFETY: a copy of the DTB QEMU handed over, in normal memory
            // nothing else uses during boot (`make_room`).
            let fdt = match unsafe { fdt::Fdt::from_ptr(room.dtb as *const u8) } {
                Ok(f) => f,
                Err(e) => fail(format_args!("the moved DTB: {e:?}")),
            };
            m = match dt::Machine::parse(&fdt) {
                Ok(m) => m,
                Err(e) => fail(format_args!("the moved DTB: {e:?}")),
            };
            m.initrd = room.initrd;
            (room.dtb, fdt)
        }
    };
    let opts = parse_options(m.bootargs);
    crate::console::set_level(opts.log);
    let map = CpuMap::new(MPIDR_EL1.get(), &m.cpus[..m.ncpus]).unwrap_or_else(|e| fail(format_args!("/cpus: {e:?}")));
    percpu::set_cpu_map(map);
    crate::tracebuf::configure(opts.trace, opts.trace_vm, opts.trace_buf, !opts.trace_quiet);
    // After the checker's and the trace's options, before the host runs.
    crate::hypercall::host::configure_watch();

    // SAFETY: linker symbols; only their addresses are used.
    let (img_start, img_end) = unsafe { (&__hyp_start as *const u8 as u64, &__hyp_end as *const u8 as u64) };
    info!(
        "pkvm-rs hyp: running at EL{}, loaded at {:#x} ({} KiB)",
        CurrentEL.read(CurrentEL::EL),
        load_addr,
        (img_end - img_start) / 1024
    );
    if load_addr != img_start {
        fail(format_args!("loaded at {load_addr:#x} but linked at {img_start:#x}"));
    }
    m.log_summary();
    if let Some((old_dtb, old)) = room.moved {
        info!(
            "  moved   DTB {old_dtb:#x} -> {dtb:#x}, initrd {:#x}..{:#x} -> {:#x} (room for the carve-out and the host's Image)",
            old.0, old.1, m.initrd.0
        );
    }
    if !m.uart_is_device() {
        fail(format_args!("UART {:#x} is not in the device window", m.uart));
    }

    // The hyp's carve-out: from the base of the first RAM bank
    // (`layout::carve_out_size`).
    let ram0 = m.ram()[0];
    let ram_span = m.ram().iter().fold((u64::MAX, 0), |(lo, hi), r| (lo.min(r.base), hi.max(r.base + r.size)));
    if !(img_start >= hyp_base && img_end <= hyp_base + hyp_size && hyp_size < ram0.size) {
        fail(format_args!("hyp image {img_start:#x}..{img_end:#x} not inside carve-out"));
    }
    for (what, a, len) in [("DTB", dtb, fdt.total_size() as u64), ("initrd", m.initrd.0, m.initrd.1 - m.initrd.0)] {
        if len != 0 && overlaps(a, len, hyp_base, hyp_size) {
            fail(format_args!("{what} at {a:#x} overlaps the hyp carve-out"));
        }
    }
    if !mmu::is_normal(hyp_base, hyp_size) {
        fail(format_args!("RAM {hyp_base:#x} is not in the normal-memory window"));
    }
    let pool = align_up(img_end, 4096);
    // SAFETY: [pool, carve-out end) is hyp memory nobody else uses yet (the
    // host has not started), mapped normal.
    unsafe { pool::init(pool, hyp_base + hyp_size - pool, ram_span) };
    info!(
        "hyp memory: {:#x}..{:#x} ({} MiB, pool {} KiB)",
        hyp_base,
        hyp_base + hyp_size,
        hyp_size / MIB,
        (hyp_base + hyp_size - pool) / 1024
    );

    if opts.selftest == Some("panic") {
        panic!("selftest: deliberate panic");
    }
    if opts.selftest == Some("fault") {
        // SAFETY: deliberately faulting to test the fatal-exception path.
        unsafe { core::ptr::read_volatile(0xffff_ffff_0000 as *const u64) };
    }
    if opts.selftest == Some("hang") {
        info!("selftest: hanging");
        loop {
            aarch64_cpu::asm::wfe();
        }
    }

    // The host: its Image from the boot bundle, its DTB rewritten.
    let b = match bundle::Bundle::parse(m.initrd) {
        Ok(b) => b,
        Err(e) => fail(format_args!("boot bundle: {e}")),
    };
    let host_load = align_up(hyp_base + hyp_size, SZ_2M) + b.text_offset;
    let host_end = host_load + b.image_size;
    if !ram0.contains(host_load, b.image_size) || overlaps(host_load, b.image_size, m.initrd.0, m.initrd.1 - m.initrd.0)
    {
        fail(format_args!("no room for the host Image at {host_load:#x}..{host_end:#x}"));
    }
    let host_dtb_bytes = match host_dt::build(&fdt, &m, Region { base: hyp_base, size: hyp_size }, b.rest) {
        Ok(v) => v,
        Err(e) => fail(format_args!("host DTB: {e:?}")),
    };
    let last = m.ram()[m.ram().len() - 1];
    let host_dtb = (last.end() - host_dtb_bytes.len() as u64 - SZ_2M) & !(SZ_2M - 1);
    if overlaps(host_dtb, SZ_2M, m.initrd.0, m.initrd.1 - m.initrd.0)
        || overlaps(host_dtb, SZ_2M, host_load, b.image_size)
    {
        fail(format_args!("no room for the host DTB at {host_dtb:#x}"));
    }
    // SAFETY: both destinations are host RAM outside the carve-out, the
    // bundle and each other (checked above); the host has not started.
    unsafe {
        core::ptr::copy(b.image.as_ptr(), host_load as *mut u8, b.image.len());
        core::ptr::write_bytes(
            (host_load + b.image.len() as u64) as *mut u8,
            0,
            (b.image_size - b.image.len() as u64) as usize,
        );
        core::ptr::copy_nonoverlapping(host_dtb_bytes.as_ptr(), host_dtb as *mut u8, host_dtb_bytes.len());
    }
    info!(
        "host: Image {} KiB at {:#x}, DTB at {:#x}, initrd {:#x}..{:#x}",
        b.image.len() / 1024,
        host_load,
        host_dtb,
        b.rest.0,
        b.rest.1
    );
    // What the hyp wrote for the host reaches memory before the host runs
    // with its MMU and caches off (non-cacheable reads see memory; without
    // FEAT_S2FWB nothing makes them cacheable), as the arm64 boot protocol
    // has a loader clean the Image to the point of coherency: the Image
    // and its BSS, the DTB, and the host's initrd when boot moved it.
    tlb::clean_to_poc(host_load, b.image_size);
    tlb::clean_to_poc(host_dtb, host_dtb_bytes.len() as u64);
    if room.moved.is_some() {
        tlb::clean_to_poc(b.rest.0, b.rest.1 - b.rest.0);
    }
    drop(host_dtb_bytes);

    // The final EL2 stage-1: from here on the DTB (and every `&'static str`
    // parsed from it), the boot bundle and host RAM are out of reach.
    let probe = opts.selftest.and_then(mmu::Probe::parse);
    let pool_end = hyp_base + hyp_size;
    let mut devices = alloc::vec![("uart", m.uart, 0x1000)];
    devices.extend(m.gic_dist.map(|r| ("gic-dist", r.base, r.size)));
    devices.extend(m.gic_redists().iter().map(|r| ("gic-redist", r.base, r.size)));
    devices.extend(m.smmu.map(|r| ("smmu", r.base, r.size.max(crate::dev::smmu::MMIO_SIZE))));
    if let Err(e) = mmu::install_final(&mut pool::PoolPages, (pool, pool_end), &devices) {
        fail(format_args!("EL2 stage-1: {e}"));
    }
    if let Some(p) = probe {
        p.run(host_load);
        fail(format_args!("selftest {p:?}: the access did not fault"));
    }

    // Host stage-2: empty (lazy identity map), the carve-out recorded as
    // the hyp's own memory (never given to anyone, RECLAIM_HYP included);
    // the hyp's bookkeeping table records the same pages.
    let mut env = HypEnv;
    let ipa_bits = m.host_ipa_bits();
    // Stage-2 forced write-back where the CPU has it: the MemAttr encoding
    // of every CPU stage-2 from the first descriptor on, HCR_EL2.FWB for
    // the host and guests (`el1::init_el2_controls`).
    // SAFETY: the boot CPU alone runs, and no stage-2 exists yet.
    unsafe { hyp_core::mm::pte::set_fwb(el1::has_s2fwb()) };
    info!("stage-2 forced write-back (FEAT_S2FWB): {}", if hyp_core::mm::pte::fwb() { "on" } else { "off" });
    let host_pgt =
        Stage2::new(&mut env, ipa_bits, Some(0)).unwrap_or_else(|e| fail(format_args!("host stage-2: {e:?}")));
    let mut hyp_pgt = Stage2::new(&mut env, ipa_bits, None).unwrap_or_else(|e| fail(format_args!("hyp table: {e:?}")));
    hyp_pgt.set_who(hyp_abi::trace::WHO_HYP);
    // Devices: what the DTB lists minus hidden devices (`dt`) and the pages
    // the hyp emulates for the host.
    if let Err(e) = crate::trap::host_gicr::init(m.gic_redists(), m.gic_redist_stride) {
        fail(format_args!("GIC redistributors: {e}"));
    }
    let devices = hyp_core::mm::region::carve(m.devices(), &crate::trap::host_gicr::pages());
    let mut host = HostMm::new(host_pgt, m.ram().to_vec(), devices);
    let mut hyp_mm = HypMm::new(hyp_pgt);
    if let Err(e) = hyp_claim_own(&mut env, &mut host, &mut hyp_mm, Pa(hyp_base), hyp_size) {
        fail(format_args!("recording the carve-out: {e}"));
    }
    if let Some(r) = m.smmu {
        take_smmu(&mut env, &mut host, r.base, ipa_bits);
    }
    // From here on the host's tables (and its DMA view's) come from their
    // reserves: no guest's use of its memory can take what the host needs.
    // Their pages come from the pool 2 MiB at a time while 2 MiB or more
    // is still wanted, then page by page (a buddy allocation each cost boot
    // ~190 instructions a page: 20,000 pages at 20 GiB), not zeroed: the
    // core writes a table's entries before any walker sees it.
    let mut left = host.reserve_pages_needed();
    let mut chunk = (0u64, 0u64);
    let reserved = host.reserve_tables_with(&mut env, |_| {
        if chunk.0 == chunk.1 && left >= 512 {
            if let Some(pa) = pool::alloc_pages_unzeroed(512) {
                chunk = (pa, pa + SZ_2M);
            }
        }
        left = left.saturating_sub(1);
        if chunk.0 < chunk.1 {
            chunk.0 += hyp_core::mm::PAGE_SIZE;
            Some(chunk.0 - hyp_core::mm::PAGE_SIZE)
        } else {
            pool::alloc_table_page()
        }
    });
    debug_assert_eq!(chunk.0, chunk.1, "boot took whole 2 MiB pieces only while it needed them");
    if let Err(e) = reserved {
        fail(format_args!("the host's table reserves: {e:?} (the carve-out is too small)"));
    }
    let vtcr = crate::vm::vtcr_for(&host.pgt);
    let vttbr = host.pgt.root_pa();
    info!(
        "host stage-2: {} bit IPA, start level {}, {} root page(s), VTCR_EL2 {:#x}",
        ipa_bits,
        host.pgt.start_level(),
        host.pgt.root_pages(),
        vtcr
    );
    // SAFETY: once, on the boot CPU, before the first entry to a lower EL
    // (nothing takes the host's lock before that).
    unsafe { owners::install(host, hyp_mm) };

    // EL2 controls, the hyp's GIC needs, then into the host.
    VTCR_EL2.set(vtcr);
    VTTBR_EL2.set(vttbr);
    context::detect_features();
    el1::init_el2_controls();
    Context::reset().restore_cpu(Kind::Host, context::feat::LAZY);
    if let (Some(d), Some(r)) = (m.gic_dist, m.gic_redists().first().copied()) {
        // SAFETY: the DTB's GIC regions, device memory in the EL2 map.
        unsafe { crate::dev::gicv3::init_dist(d.base) };
        GIC_REDIST.store(r.base, Ordering::Relaxed);
        GIC_REDIST_SIZE.store(r.size, Ordering::Relaxed);
    }
    init_cpu_gic(percpu::this_cpu());
    // No stale TLB entry, of any VMID or EL, survives into the first entry.
    tlb::flush_all_at_boot();
    // Trace records carry system-counter ticks: `cargo xtask trace` reads
    // their rate here (QEMU virt: 62.5 MHz up to QEMU 9.0, 1 GHz after).
    info!("system counter: {} Hz", CNTFRQ_EL0.get());
    let (used, total) = pool::usage();
    info!(
        "entering host at {:#x} (EL1h, MMU off), x0 = DTB {:#x}; hyp pool {} / {} KiB used",
        host_load,
        host_dtb,
        used / 1024,
        total / 1024
    );
    HOST_VTTBR.store(vttbr, Ordering::Relaxed);
    HOST_VTCR.store(vtcr, Ordering::Relaxed);
    let cpu = percpu::this_cpu();
    cpu.host_vttbr = vttbr;
    cpu.host_vtcr = vtcr;
    cpu.frame = Default::default();
    cpu.frame.x[0] = host_dtb;
    cpu.frame.elr = host_load;
    cpu.frame.spsr = context::SPSR_EL1H_DAIF_MASKED;
    crate::hypercall::host::BOOT_NS.store(crate::arch::aarch64::hyptimer::now_ns(), Ordering::Relaxed);
    percpu::enter_host(cpu)
}

/// The GIC redistributor region (0 if none), for every CPU's own set-up.
/// The SMMU's VMID for the host's DMA view (the SMMU's own namespace).
const DMA_VMID: u16 = 1;

/// Builds the host's DMA view and hands it to the SMMU: from here on no
/// host device reaches memory the host may not. An SMMU the hyp cannot
/// drive (no stage 2: QEMU before 10.0) stops the boot: with it left alone,
/// PCIe devices would bypass it and reach every page.
fn take_smmu(env: &mut HypEnv, host: &mut HostMm, base: u64, ipa_bits: u8) {
    let probe = crate::dev::smmu::probe(base, ipa_bits)
        .unwrap_or_else(|e| fail(format_args!("SMMUv3 at {base:#x}: {e:?} (stage 2 needs QEMU >= 10.0)")));
    let pgt = Stage2::new(env, ipa_bits, Some(DMA_VMID)).unwrap_or_else(|e| fail(format_args!("DMA view: {e:?}")));
    if crate::dev::smmu::noncoherent() {
        // The root's zeroes reach memory before the SMMU can walk it (its
        // tables and descriptors are cleaned as they are written).
        crate::dev::smmu::clean_poc(pgt.root_pa(), pgt.root_pages() as u64 * hyp_core::mm::PAGE_SIZE);
    }
    if let Err(e) = host.enable_dma(env, pgt, probe.bbml2) {
        fail(format_args!("DMA view: {e:?}"));
    }
    let dma = host.dma.as_ref().expect("just built");
    let ctx = hyp_core::smmu_format::S2Context {
        vmid: DMA_VMID,
        root: dma.root_pa(),
        t0sz: dma.t0sz() as u8,
        sl0: dma.sl0() as u8,
        ps: 0,
    };
    if let Err(e) = crate::dev::smmu::init(probe, ctx, ipa_bits) {
        fail(format_args!("SMMUv3 at {base:#x}: {e:?} (stage 2 needs QEMU >= 10.0)"));
    }
}

static GIC_REDIST: AtomicU64 = AtomicU64::new(0);
static GIC_REDIST_SIZE: AtomicU64 = AtomicU64::new(0);

/// This CPU's redistributor: woken, the hyp timer's PPI configured.
fn init_cpu_gic(cpu: &mut percpu::PerCpu) {
    let base = GIC_REDIST.load(Ordering::Relaxed);
    if base == 0 {
        log::warn!("no GICv3 redistributors: guests cannot be preempted");
        return;
    }
    // SAFETY: the DTB's redistributor region, device memory in the EL2 map.
    let sgi = unsafe { crate::dev::gicv3::init_redist(base, GIC_REDIST_SIZE.load(Ordering::Relaxed), MPIDR_EL1.get()) };
    match sgi {
        Some(s) => cpu.gicr_sgi = s,
        None => log::warn!("cpu {}: no redistributor found: guests cannot be preempted here", cpu.id),
    }
}

/// The host's stage-2 controls, for secondary CPUs.
static HOST_VTTBR: AtomicU64 = AtomicU64::new(0);
static HOST_VTCR: AtomicU64 = AtomicU64::new(0);

/// Rust entry of a secondary CPU (from entry.S), started by PSCI CPU_ON on
/// the host's behalf: EL2 is set up here exactly as on the boot CPU, then
/// the CPU enters the host at the entry point the host asked for, with x0 =
/// its context ID, at EL1h with the MMU off.
#[no_mangle]
extern "C" fn hyp_secondary_main(idx: u64) -> ! {
    percpu::init_this_cpu(idx as usize);
    // Nothing this CPU's TLBs held before its reset survives, and no
    // translation (EL2's own, or a stage-2 of the host's) happens before
    // they are gone.
    tlb::flush_all_this_cpu();
    mmu::enable_this_cpu();
    let cpu = percpu::this_cpu();
    crate::checker::CPUS_UP.fetch_add(1, Ordering::Relaxed);
    cpu.host_vttbr = HOST_VTTBR.load(Ordering::Relaxed);
    cpu.host_vtcr = HOST_VTCR.load(Ordering::Relaxed);
    VTCR_EL2.set(cpu.host_vtcr);
    VTTBR_EL2.set(cpu.host_vttbr);
    el1::init_el2_controls();
    Context::reset().restore_cpu(Kind::Host, context::feat::LAZY);
    init_cpu_gic(cpu);
    log::info!("cpu {}: up, entering host at {:#x}", idx, cpu.host_entry);
    cpu.frame = Default::default();
    cpu.frame.x[0] = cpu.host_context;
    cpu.frame.elr = cpu.host_entry;
    cpu.frame.spsr = context::SPSR_EL1H_DAIF_MASKED;
    percpu::enter_host(cpu)
}

/// A boot failure: say why and stop with a failure status.
pub fn fail(args: core::fmt::Arguments) -> ! {
    log::error!("boot failed: {}", args);
    crate::shutdown(Status::BootFailed)
}
