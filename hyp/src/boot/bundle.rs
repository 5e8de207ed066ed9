//! The boot bundle (the initrd QEMU loads for the hyp): header, the host's
//! arm64 Image, and the host's own initrd.

use hyp_abi::bundle::{HEADER_LEN, MAGIC};

pub struct Bundle {
    pub image: &'static [u8],
    pub text_offset: u64,
    /// Bytes the Image needs in memory (bss included).
    pub image_size: u64,
    /// (start, end) of what the host gets as its initrd.
    pub rest: (u64, u64),
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

impl Bundle {
    pub fn parse(initrd: (u64, u64)) -> Result<Self, &'static str> {
        let (start, end) = initrd;
        if end <= start {
            return Err("no initrd: run through `cargo xtask run`, which builds the bundle");
        }
        // SAFETY: QEMU loaded the initrd at [start, end) in RAM, which the
        // identity map covers; nothing else writes it during boot.
        let b = unsafe { core::slice::from_raw_parts(start as *const u8, (end - start) as usize) };
        if b.len() < HEADER_LEN || &b[..8] != MAGIC {
            return Err("bad magic");
        }
        let field = |i: usize| u64_at(b, 8 + 8 * i).ok_or("truncated header");
        let (host_off, host_len, rest_off, rest_len) = (field(0)?, field(1)?, field(2)?, field(3)?);
        let in_bounds = |off: u64, len: u64| off.checked_add(len).is_some_and(|e| e <= b.len() as u64);
        if !in_bounds(host_off, host_len) || !in_bounds(rest_off, rest_len) {
            return Err("section out of bounds");
        }
        let image = &b[host_off as usize..(host_off + host_len) as usize];
        // arm64 Image header: text_offset at 8, image_size at 16, magic at 56.
        if image.len() < 64 || &image[56..60] != b"ARM\x64" {
            return Err("host is not an arm64 Image (no ARM\\x64 magic)");
        }
        let text_offset = u64_at(image, 8).ok_or("truncated Image header")?;
        let mut image_size = u64_at(image, 16).ok_or("truncated Image header")?;
        if image_size == 0 {
            image_size = image.len() as u64;
        }
        if image_size < image.len() as u64 || text_offset >= 2 << 20 {
            return Err("inconsistent Image header");
        }
        Ok(Bundle { image, text_offset, image_size, rest: (start + rest_off, start + rest_off + rest_len) })
    }
}
