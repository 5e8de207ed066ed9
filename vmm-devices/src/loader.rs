//! Guest images into guest RAM: an AArch64 ELF (its PT_LOAD segments) or
//! an arm64 Linux Image with its initramfs (Linux's arm64 boot protocol;
//! the layout in `hyp_abi::arm64_image`). Loading is two steps, so that a
//! VMM checks everything before it allocates anything: a plan
//! ([`ElfPlan::new`], [`LinuxPlan::new`]) checks the image against the
//! guest's RAM size, then `write` copies it into the guest's RAM (a host
//! byte slice: IPA [`GUEST_RAM`] is its byte 0). Only what the guest will
//! read is written: a 16 GiB guest costs no 16 GiB memset. The DTB goes at
//! the base of RAM ([`write_dtb`]). A VMM that reaches guest RAM through
//! calls rather than a slice (a file's pwrite) takes the same writes as
//! [`Piece`]s (`pieces`, [`dtb_piece`]), applied in their order.

use alloc::vec::Vec;
use core::ops::Range;

use hyp_abi::arm64_image;

use crate::platform::{DMA_POOL_SIZE, DTB_SIZE, GUEST_RAM, MAX_VCPUS};
use crate::virtio::DmaPool;

/// Why a guest cannot be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    NotElf,
    /// The guest does not fit its RAM (or the host's memory).
    NoMemory,
    /// A malformed ELF: what is wrong with it.
    BadElf(&'static str),
    /// A malformed arm64 Image, or one that does not fit.
    BadImage(&'static str),
    /// A device configuration the guest cannot have: why.
    BadConfig(&'static str),
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            LoadError::NotElf => write!(f, "not an AArch64 ELF"),
            LoadError::NoMemory => write!(f, "does not fit in host memory or guest RAM"),
            LoadError::BadElf(why) => write!(f, "malformed ELF: {why}"),
            LoadError::BadImage(why) => write!(f, "bad arm64 Image: {why}"),
            LoadError::BadConfig(why) => write!(f, "bad device configuration: {why}"),
        }
    }
}

/// One write of a load, at an offset of guest RAM (IPA [`GUEST_RAM`] is
/// offset 0): bytes of the image, or a range to zero. A plan's pieces are
/// in bounds of the RAM it was made for and are applied in order (ELF
/// segments may overlap: the later one wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Copy { at: usize, bytes: &'a [u8] },
    Zero { at: usize, len: usize },
}

impl Piece<'_> {
    /// Applies it to `ram`.
    ///
    /// # Panics
    ///
    /// If `ram` is shorter than the piece's end (a plan's pieces fit the
    /// RAM size it checked).
    pub fn apply(&self, ram: &mut [u8]) {
        match *self {
            Piece::Copy { at, bytes } => ram[at..at + bytes.len()].copy_from_slice(bytes),
            Piece::Zero { at, len } => ram[at..at + len].fill(0),
        }
    }
}

/// A loadable segment, checked against the file and guest RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    /// Offset into guest RAM.
    at: usize,
    /// Bytes from the file.
    file: Range<usize>,
    /// Bytes in memory (the rest zero-filled), at least the file's.
    memsz: usize,
}

/// An ELF guest, checked: where its segments go and its entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfPlan {
    segs: Vec<Segment>,
    /// The entry point (an IPA in guest RAM).
    pub entry: u64,
}

impl ElfPlan {
    /// Checks `elf` (a little-endian AArch64 ELF64) for a guest of `mem`
    /// bytes of RAM and `vcpus` vCPUs. Every sum is checked: the header
    /// fields are the image's, not ours.
    pub fn new(elf: &[u8], mem: u64, vcpus: usize) -> Result<ElfPlan, LoadError> {
        if !(1..=MAX_VCPUS).contains(&vcpus) {
            return Err(LoadError::BadElf("a guest has 1 to 8 vCPUs"));
        }
        if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || u16_at(elf, 18) != 183 {
            return Err(LoadError::NotElf);
        }
        if mem < DTB_SIZE as u64 {
            return Err(LoadError::NoMemory);
        }
        let segs = segments(elf, usize::try_from(mem).map_err(|_| LoadError::NoMemory)?)?;
        let entry = u64_at(elf, 24);
        if entry.checked_sub(GUEST_RAM).is_none_or(|e| e >= mem) {
            return Err(LoadError::BadElf("entry point outside guest RAM"));
        }
        Ok(ElfPlan { segs, entry })
    }

    /// The writes of [`ElfPlan::write`], in order: the DTB window zeroed,
    /// then each segment's bytes from `elf` (the one checked) and its
    /// zero-filled rest.
    pub fn pieces<'a>(&self, elf: &'a [u8]) -> Vec<Piece<'a>> {
        let mut v = alloc::vec![Piece::Zero { at: 0, len: DTB_SIZE }];
        for seg in &self.segs {
            let filesz = seg.file.len();
            v.push(Piece::Copy { at: seg.at, bytes: &elf[seg.file.clone()] });
            if seg.memsz > filesz {
                v.push(Piece::Zero { at: seg.at + filesz, len: seg.memsz - filesz });
            }
        }
        v
    }

    /// Copies the segments of `elf` (the one checked) into `ram`, zeroes
    /// their rest and the DTB window.
    ///
    /// # Panics
    ///
    /// If `ram` is shorter than the guest RAM the plan was made for.
    pub fn write(&self, elf: &[u8], ram: &mut [u8]) {
        for p in self.pieces(elf) {
            p.apply(ram);
        }
    }
}

/// The PT_LOAD segments of `elf` for a guest of `mem` bytes.
fn segments(elf: &[u8], mem: usize) -> Result<Vec<Segment>, LoadError> {
    let field = |o: usize| usize::try_from(u64_at(elf, o)).map_err(|_| LoadError::BadElf("field out of range"));
    let (phoff, phnum, phentsize) = (field(32)?, u16_at(elf, 56) as usize, u16_at(elf, 54) as usize);
    if phnum > 0 && phentsize < 56 {
        return Err(LoadError::BadElf("program header entries too small"));
    }
    let table_end = phnum.checked_mul(phentsize).and_then(|n| n.checked_add(phoff));
    if table_end.is_none_or(|e| e > elf.len()) {
        return Err(LoadError::BadElf("program headers outside the file"));
    }
    let mut out = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(elf, ph) != 1 {
            continue;
        }
        let (off, filesz) = (field(ph + 8)?, field(ph + 32)?);
        let memsz = field(ph + 40)?.max(filesz);
        let file = off..off.checked_add(filesz).ok_or(LoadError::BadElf("segment data outside the file"))?;
        if file.end > elf.len() {
            return Err(LoadError::BadElf("segment data outside the file"));
        }
        let at = u64_at(elf, ph + 24)
            .checked_sub(GUEST_RAM)
            .and_then(|a| usize::try_from(a).ok())
            .filter(|a| a.checked_add(memsz).is_some_and(|e| e <= mem))
            .ok_or(LoadError::BadElf("segment outside guest RAM"))?;
        if at < DTB_SIZE && memsz > 0 {
            return Err(LoadError::BadElf("segment overlaps the guest DTB"));
        }
        out.push(Segment { at, file, memsz });
    }
    Ok(out)
}

fn u16_at(b: &[u8], o: usize) -> u64 {
    u16::from_le_bytes([b[o], b[o + 1]]) as u64
}
fn u32_at(b: &[u8], o: usize) -> u64 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as u64
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(w)
}

/// A Linux guest's layout in its RAM (IPAs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinuxInfo {
    /// Where the Image starts (vCPU 0 enters here).
    pub kernel: u64,
    /// Bytes the kernel occupies from there, BSS included.
    pub kernel_size: u64,
    /// The initramfs: start, end.
    pub initrd: (u64, u64),
    /// The restricted DMA pool: base, size.
    pub pool: (u64, u64),
}

impl LinuxInfo {
    /// The restricted DMA pool as the virtio devices name it.
    pub fn dma_pool(&self) -> DmaPool {
        DmaPool { ipa: self.pool.0, size: self.pool.1 }
    }
}

/// A Linux guest, checked: its arm64 Image at the first 2 MiB boundary of
/// guest RAM above the DTB window plus text_offset, the initramfs below
/// the restricted DMA pool ([`DMA_POOL_SIZE`]) at the top of RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinuxPlan {
    pub info: LinuxInfo,
    /// The Image's length in the file (the rest of `kernel_size` is BSS).
    image_len: usize,
}

impl LinuxPlan {
    /// Checks `image` and places it and an initramfs of `initrd_len` bytes
    /// in `mem` bytes of guest RAM, for `vcpus` vCPUs.
    pub fn new(image: &[u8], initrd_len: usize, mem: u64, vcpus: usize) -> Result<LinuxPlan, LoadError> {
        if !(1..=MAX_VCPUS).contains(&vcpus) {
            return Err(LoadError::BadImage("a guest has 1 to 8 vCPUs"));
        }
        let h = arm64_image::parse(image).map_err(LoadError::BadImage)?;
        let l = arm64_image::layout(mem, DTB_SIZE as u64, &h, initrd_len as u64, DMA_POOL_SIZE)
            .ok_or(LoadError::BadImage("the kernel, initramfs and DMA pool do not fit in guest memory"))?;
        let info = LinuxInfo {
            kernel: GUEST_RAM + l.kernel,
            kernel_size: h.image_size,
            initrd: (GUEST_RAM + l.initrd, GUEST_RAM + l.initrd + initrd_len as u64),
            pool: (GUEST_RAM + l.pool, DMA_POOL_SIZE),
        };
        Ok(LinuxPlan { info, image_len: image.len() })
    }

    /// The writes of [`LinuxPlan::write`], in order: the DTB window
    /// zeroed, the Image, its BSS zeroed, the initramfs.
    ///
    /// # Panics
    ///
    /// If `image` is not the one the plan was made for.
    pub fn pieces<'a>(&self, image: &'a [u8], initrd: &'a [u8]) -> Vec<Piece<'a>> {
        assert_eq!(image.len(), self.image_len, "the Image of the plan");
        let k = (self.info.kernel - GUEST_RAM) as usize;
        let i = (self.info.initrd.0 - GUEST_RAM) as usize;
        let mut v = alloc::vec![Piece::Zero { at: 0, len: DTB_SIZE }, Piece::Copy { at: k, bytes: image }];
        // The BSS and the rest of the kernel's footprint start zeroed.
        let bss = self.info.kernel_size as usize - image.len();
        if bss > 0 {
            v.push(Piece::Zero { at: k + image.len(), len: bss });
        }
        v.push(Piece::Copy { at: i, bytes: initrd });
        v
    }

    /// Copies `image` and `initrd` (those checked) into `ram`, zeroes the
    /// kernel's BSS and the DTB window.
    ///
    /// # Panics
    ///
    /// If `ram` is shorter than the guest RAM the plan was made for, or
    /// `image` or `initrd` are not those of the plan.
    pub fn write(&self, image: &[u8], initrd: &[u8], ram: &mut [u8]) {
        for p in self.pieces(image, initrd) {
            p.apply(ram);
        }
    }
}

/// Checks that a DMA pool is whole pages of a guest's RAM (`mem` bytes),
/// after the DTB window.
pub fn check_pool(pool: DmaPool, mem: u64) -> Result<(), LoadError> {
    let dtb_end = GUEST_RAM + DTB_SIZE as u64;
    let fits = pool.size > 0
        && pool.ipa.is_multiple_of(crate::mem::PAGE)
        && pool.size.is_multiple_of(crate::mem::PAGE)
        && pool.ipa >= dtb_end
        && pool.ipa.checked_add(pool.size).is_some_and(|e| e <= GUEST_RAM + mem);
    if fits {
        Ok(())
    } else {
        Err(LoadError::BadConfig("the DMA pool must be whole pages of guest RAM after the DTB"))
    }
}

/// Writes `dtb` at the base of `ram` (the guest's RAM, its DTB window
/// zeroed by the plan's `write`).
pub fn write_dtb(dtb: &[u8], ram: &mut [u8]) -> Result<(), LoadError> {
    let p = dtb_piece(dtb)?;
    if ram.len() < DTB_SIZE {
        return Err(DTB_TOO_BIG);
    }
    p.apply(ram);
    Ok(())
}

const DTB_TOO_BIG: LoadError = LoadError::BadImage("the guest DTB does not fit its 64 KiB window");

/// The write of [`write_dtb`]: `dtb` at offset 0, checked to fit the DTB
/// window (after the plan's pieces, which zero that window).
pub fn dtb_piece(dtb: &[u8]) -> Result<Piece<'_>, LoadError> {
    if dtb.is_empty() || dtb.len() > DTB_SIZE {
        return Err(DTB_TOO_BIG);
    }
    Ok(Piece::Copy { at: 0, bytes: dtb })
}

#[cfg(test)]
mod tests;
