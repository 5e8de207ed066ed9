//! Where the hyp's memory goes at boot: the carve-out's size, and room for
//! it and the host's Image where QEMU left the DTB and the boot bundle.
//!
//! QEMU loads the hyp's Image 2 MiB into RAM, the boot bundle (the initrd)
//! at RAM + 128 MiB (RAM / 2 on machines below 256 MiB) and its DTB right
//! after the bundle. The carve-out starts at the base of RAM and grows
//! with RAM (its records and table reserves are about 1/150 of it), and
//! the host's Image follows it: on a machine with more than about 16 GiB
//! they reach the bundle. Then the DTB and the bundle move to the top of
//! the last RAM bank first, below the 4 MiB the host's own DTB takes.

use hyp_core::mm::mem_protect::HostMm;
use hyp_core::mm::region::Region;
use hyp_core::mm::PAGE_SIZE;

use super::bundle::Bundle;
use super::dt::Machine;

pub const MIB: u64 = 1 << 20;
pub const SZ_2M: u64 = 2 * MIB;

pub fn align_up(x: u64, a: u64) -> u64 {
    (x + a - 1) & !(a - 1)
}

pub fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b + blen && b < a + alen
}
use crate::arch::aarch64::tlb;

/// The carve-out's size for the machine `m` describes: 32 MiB for the
/// image, stacks and heap, plus 1/512 of RAM (the pin counts, a u32 per
/// page, in the buddy allocator's power-of-two block), plus the host's
/// table reserve (its stage-2 split down to pages over all RAM, about
/// 1/512 of it: `HostMm::reserve_tables`), the DMA view's (the same
/// again, where there is an SMMU: a view of blocks keeps it as a
/// reserve, a view of pages is built split that far) and a table hint
/// word per RAM page (1/2048 of it), of which the first 16 MiB come out
/// of the 32 (the default 1 GiB machine's carve-out is 34 MiB). VMs'
/// tables are in memory their hosts donate for them (VM_TOPUP), not here.
pub fn carve_out_size(m: &Machine) -> u64 {
    let total_ram: u64 = m.ram().iter().map(|r| r.size).sum();
    let span = m.ram().iter().fold((u64::MAX, 0), |(lo, hi), r| (lo.min(r.base), hi.max(r.end())));
    let level = hyp_core::mm::pgtable::geometry_for(m.host_ipa_bits()).map_or(1, |g| g.0);
    let host = HostMm::tables_needed(level, m.ram(), m.devices());
    let dma = if m.smmu.is_some() { HostMm::dma_tables_needed(level, m.ram()) } else { 0 };
    let hints = (span.1 - span.0) / 2048;
    align_up(32 * MIB + total_ram / 512 + ((host + dma) * PAGE_SIZE + hints).saturating_sub(16 * MIB), SZ_2M)
}

/// Where the DTB and the boot bundle are once the carve-out
/// `[base, base + size)` and the host's Image after it have room.
pub struct Room {
    pub dtb: u64,
    /// The bundle, (start, end).
    pub initrd: (u64, u64),
    /// Where they were, when they moved (the DTB must be parsed again).
    pub moved: Option<(u64, (u64, u64))>,
}

/// Makes room for the carve-out `[base, base + size)` and the host's
/// Image after it (at the next 2 MiB boundary plus its text offset):
/// when the DTB (`dtb_len` bytes) or the boot bundle lies there, both
/// move to the top of the last RAM bank, the bundle page-aligned, the
/// DTB after it, below its last 4 MiB (the host's DTB goes into that).
/// `Err` with that range when they do not fit there either.
pub fn make_room(m: &Machine, dtb: u64, dtb_len: u64, base: u64, size: u64) -> Result<Room, Region> {
    let initrd = m.initrd;
    let initrd_len = initrd.1 - initrd.0;
    let stay = Room { dtb, initrd, moved: None };
    // A bad bundle is reported where it is used.
    let Ok(b) = Bundle::parse(initrd) else {
        return Ok(stay);
    };
    let keep = Region { base, size: align_up(base + size, SZ_2M) + b.text_offset + b.image_size - base };
    if !overlaps(dtb, dtb_len, keep.base, keep.size) && !overlaps(initrd.0, initrd_len, keep.base, keep.size) {
        return Ok(stay);
    }
    let last = m.ram()[m.ram().len() - 1];
    let top = last.end().saturating_sub(4 * MIB) & !(SZ_2M - 1);
    let new_dtb = top.saturating_sub(dtb_len) & !7;
    let new_initrd = new_dtb.saturating_sub(initrd_len) & !(PAGE_SIZE - 1);
    let len = top - new_initrd;
    if !last.contains(new_initrd, len)
        || overlaps(new_initrd, len, keep.base, keep.size)
        || overlaps(new_initrd, len, dtb, dtb_len)
        || overlaps(new_initrd, len, initrd.0, initrd_len)
    {
        return Err(keep);
    }
    // SAFETY: the destinations are RAM in the boot map that nothing uses
    // (above the carve-out and the host's Image, below the host's DTB),
    // apart from each other and from the sources (checked above); the
    // sources are the bundle and the DTB QEMU loaded, read only here.
    unsafe {
        tlb::copy(new_initrd, initrd.0, initrd_len);
        tlb::copy(new_dtb, dtb, dtb_len);
    }
    Ok(Room { dtb: new_dtb, initrd: (new_initrd, new_initrd + initrd_len), moved: Some((dtb, initrd)) })
}
