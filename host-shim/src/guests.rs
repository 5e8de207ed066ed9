//! The guest bundle in the host's initrd (format in hyp_abi::guests).

use alloc::string::String;
use alloc::vec::Vec;

use hyp_abi::guests::{ENTRY_LEN, HEADER_LEN, MAGIC};

pub struct GuestImage {
    pub name: String,
    pub mem: u64,
    pub elf: &'static [u8],
    /// vCPUs (1..=8).
    pub vcpus: usize,
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
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
    let n = u64_at(b, 8).ok_or("truncated")? as usize;
    let mut out = Vec::new();
    for i in 0..n.min(64) {
        let o = HEADER_LEN + i * ENTRY_LEN;
        let mem = u64_at(b, o).ok_or("truncated")?;
        let off = u64_at(b, o + 8).ok_or("truncated")? as usize;
        let len = u64_at(b, o + 16).ok_or("truncated")? as usize;
        let vcpus = u32::from_le_bytes(b.get(o + 24..o + 28).ok_or("truncated")?.try_into().map_err(|_| "truncated")?);
        if !(1..=hyp_abi::guests::MAX_VCPUS).contains(&vcpus) {
            return Err("a guest has 1 to 8 vCPUs");
        }
        let name_b = b.get(o + 28..o + 64).ok_or("truncated")?;
        let name = String::from_utf8_lossy(&name_b[..name_b.iter().position(|&c| c == 0).unwrap_or(36)]).into_owned();
        let elf = b.get(off..off.checked_add(len).ok_or("bad entry")?).ok_or("entry out of bounds")?;
        out.push(GuestImage { name, mem, elf, vcpus: vcpus as usize });
    }
    Ok(out)
}
