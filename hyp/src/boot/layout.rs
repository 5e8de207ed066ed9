//! Where the hyp's memory goes at boot: the carve-out's size, and room for
//! it and the host's Image where QEMU left the DTB and the boot bundle.
//!
//! QEMU loads the hyp's Image 2 MiB into RAM, the boot bundle (the initrd)
//! at RAM + 128 MiB (RAM / 2 on machines below 256 MiB) and its DTB right
//! after the bundle. The carve-out starts at the base of RAM and grows
//! with RAM (its records and table reserves are about 1/150 of it), and
//! the host's Image follows it: on a machine with more than about 16 GiB (11 GiB with a 40 MiB Linux Image)
//! they reach the bundle. Then the DTB and the bundle move right above
//! them first.

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
/// move to the next 2 MiB boundary above all of them (and above where
/// they were, so no copy overwrites its source), the bundle first, the
/// DTB after it on the next page, as QEMU would have put them had the
/// carve-out been its kernel; never into the last RAM bank's last 4 MiB
/// (the host's DTB goes there).
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
    // Right above everything: the carve-out, the host's Image and where
    // QEMU put the two (the copies must not overwrite what they copy).
    let above = keep.end().max(initrd.1).max(dtb + dtb_len);
    let new_initrd = align_up(above, SZ_2M);
    let new_dtb = align_up(new_initrd + initrd_len, PAGE_SIZE);
    let len = new_dtb + dtb_len - new_initrd;
    let last = m.ram()[m.ram().len() - 1];
    // The host's DTB takes the last RAM bank's last 4 MiB.
    let host_dtb = last.end().saturating_sub(4 * MIB);
    let fits = m.ram().iter().any(|r| r.contains(new_initrd, len));
    if !fits || overlaps(new_initrd, len, host_dtb, 4 * MIB) {
        return Err(keep);
    }
    // SAFETY: the destinations are RAM in the boot map that nothing uses
    // (above the carve-out, the host's Image and the sources, below the
    // host's DTB: checked above), apart from each other; the sources are
    // the bundle and the DTB QEMU loaded, read only here.
    unsafe {
        tlb::copy(new_initrd, initrd.0, initrd_len);
        tlb::copy(new_dtb, dtb, dtb_len);
    }
    Ok(Room { dtb: new_dtb, initrd: (new_initrd, new_initrd + initrd_len), moved: Some((dtb, initrd)) })
}
