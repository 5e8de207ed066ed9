//! The guest bundle in the host's initrd (format in hyp_abi::guests).

use alloc::string::String;
use alloc::vec::Vec;

use hyp_abi::guests::{ENTRY_LEN, HEADER_LEN, KIND_ELF, KIND_LINUX, MAGIC, MAX_CMDLINE, NAME_LEN};

/// What a bundle entry holds.
#[derive(Clone, Copy)]
pub enum Kind {
    /// An AArch64 ELF (in `GuestImage::elf`).
    Elf,
    /// An arm64 Linux Image (in `GuestImage::elf`), its initramfs, a
    /// disk image (possibly empty) and the command line added to the
    /// VMM's (possibly empty).
    Linux { initrd: &'static [u8], disk: &'static [u8], cmdline: &'static str },
}

pub struct GuestImage {
    pub name: String,
    pub mem: u64,
    /// The ELF, or a Linux guest's arm64 Image.
    pub elf: &'static [u8],
    /// vCPUs (1..=8).
    pub vcpus: usize,
    pub kind: Kind,
}

fn u64_at(b: &[u8], o: usize) -> Result<u64, &'static str> {
    Ok(u64::from_le_bytes(b.get(o..o + 8).ok_or("truncated")?.try_into().map_err(|_| "truncated")?))
}

fn u32_at(b: &[u8], o: usize) -> Result<u32, &'static str> {
    Ok(u32::from_le_bytes(b.get(o..o + 4).ok_or("truncated")?.try_into().map_err(|_| "truncated")?))
}

/// The bytes `[off, off + len)` of the bundle, checked.
fn part(b: &'static [u8], off: u64, len: u64) -> Result<&'static [u8], &'static str> {
    let off = usize::try_from(off).map_err(|_| "entry out of bounds")?;
    let len = usize::try_from(len).map_err(|_| "entry out of bounds")?;
    b.get(off..off.checked_add(len).ok_or("bad entry")?).ok_or("entry out of bounds")
}

pub fn parse(initrd: Option<(u64, u64)>) -> Result<Vec<GuestImage>, &'static str> {
    let Some((s, e)) = initrd else {
        return Ok(Vec::new());
    };
    // SAFETY: the initrd range from /chosen is RAM the boot loader filled
    // and nobody else writes.
    let b: &'static [u8] = unsafe { core::slice::from_raw_parts(s as *const u8, (e - s) as usize) };
    if b.len() < HEADER_LEN || &b[..8] != MAGIC {
        return Err("initrd is not a guest bundle");
    }
    let n = u64_at(b, 8)? as usize;
    let mut out = Vec::new();
    for i in 0..n.min(64) {
        let o = HEADER_LEN + i * ENTRY_LEN;
        let mem = u64_at(b, o)?;
        let image = part(b, u64_at(b, o + 8)?, u64_at(b, o + 16)?)?;
        let initrd = part(b, u64_at(b, o + 24)?, u64_at(b, o + 32)?)?;
        let disk = part(b, u64_at(b, o + 40)?, u64_at(b, o + 48)?)?;
        let vcpus = u32_at(b, o + 56)?;
        if !(1..=hyp_abi::guests::MAX_VCPUS).contains(&vcpus) {
            return Err("a guest has 1 to 8 vCPUs");
        }
        let kind = match u32_at(b, o + 60)? {
            KIND_ELF => Kind::Elf,
            KIND_LINUX => {
                let cmdline = part(b, u64_at(b, o + 96)?, u64_at(b, o + 104)?)?;
                if cmdline.len() > MAX_CMDLINE {
                    return Err("a guest's command line is longer than 1024 bytes");
                }
                let cmdline = core::str::from_utf8(cmdline).map_err(|_| "a guest's command line is not UTF-8")?;
                Kind::Linux { initrd, disk, cmdline }
            }
            _ => return Err("unknown guest kind"),
        };
        let name_b = b.get(o + 64..o + 64 + NAME_LEN).ok_or("truncated")?;
        let name =
            String::from_utf8_lossy(&name_b[..name_b.iter().position(|&c| c == 0).unwrap_or(NAME_LEN)]).into_owned();
        out.push(GuestImage { name, mem, elf: image, vcpus: vcpus as usize, kind });
    }
    Ok(out)
}
