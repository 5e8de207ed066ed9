//! ELF → flat arm64 Image, and the boot bundles.

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSegment};

/// Loadable bytes of an ELF, flattened from the lowest load address.
pub fn elf_to_image(elf: &[u8]) -> Result<Vec<u8>> {
    let file = object::File::parse(elf).context("parsing ELF")?;
    let segs: Vec<_> = file.segments().filter(|s| s.file_range().1 > 0).collect();
    let base = segs.iter().map(|s| s.address()).min().context("no loadable segments")?;
    let mut out = Vec::new();
    for s in segs {
        let data = s.data()?;
        let off = (s.address() - base) as usize;
        if out.len() < off + data.len() {
            out.resize(off + data.len(), 0);
        }
        out[off..off + data.len()].copy_from_slice(data);
    }
    if out.len() < 64 || &out[56..60] != b"ARM\x64" {
        bail!("no arm64 Image header at the start of the image");
    }
    Ok(out)
}

fn align(v: &mut Vec<u8>, a: usize) {
    let n = v.len().div_ceil(a) * a;
    v.resize(n, 0);
}

/// The hyp's initrd: header, host Image, host initrd.
pub fn boot_bundle(host_image: &[u8], host_initrd: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(hyp_abi::bundle::MAGIC);
    let host_off = 4096u64;
    let rest_off = (host_off + host_image.len() as u64).div_ceil(4096) * 4096;
    for x in [host_off, host_image.len() as u64, rest_off, host_initrd.len() as u64] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    align(&mut v, 4096);
    v.extend_from_slice(host_image);
    align(&mut v, 4096);
    v.extend_from_slice(host_initrd);
    v
}

/// One guest for the host shim.
pub struct GuestSpec {
    pub name: String,
    /// The AArch64 ELF, or the arm64 Image of a Linux guest.
    pub elf: Vec<u8>,
    pub mem: u64,
    pub vcpus: u32,
    /// `hyp_abi::guests::KIND_ELF` or `KIND_LINUX`.
    pub kind: u32,
    /// A Linux guest's initramfs and disk image (empty for an ELF).
    pub initrd: Vec<u8>,
    pub disk: Vec<u8>,
    /// A Linux guest's command line, after the VMM's own (empty: none).
    pub cmdline: String,
}

impl GuestSpec {
    pub fn elf(name: String, elf: Vec<u8>, mem: u64, vcpus: u32) -> Self {
        GuestSpec {
            name,
            elf,
            mem,
            vcpus,
            kind: hyp_abi::guests::KIND_ELF,
            initrd: Vec::new(),
            disk: Vec::new(),
            cmdline: String::new(),
        }
    }
}

/// The host shim's initrd: the guests to run (format: `hyp_abi::guests`).
pub fn guest_bundle(guests: &[GuestSpec]) -> Vec<u8> {
    use hyp_abi::guests::*;
    let page = |n: usize| n.div_ceil(4096) * 4096;
    let mut off = page(HEADER_LEN + ENTRY_LEN * guests.len());
    let mut table = Vec::new();
    let mut blobs: Vec<(usize, &[u8])> = Vec::new();
    for g in guests {
        table.extend_from_slice(&g.mem.to_le_bytes());
        let parts = [&g.elf[..], &g.initrd[..], &g.disk[..], g.cmdline.as_bytes()];
        let mut at_of = [(0u64, 0u64); 4];
        for (k, part) in parts.into_iter().enumerate() {
            let at = if part.is_empty() { 0 } else { off };
            at_of[k] = (at as u64, part.len() as u64);
            if k < 3 {
                table.extend_from_slice(&(at as u64).to_le_bytes());
                table.extend_from_slice(&(part.len() as u64).to_le_bytes());
            }
            if !part.is_empty() {
                blobs.push((off, part));
                off = page(off + part.len());
            }
        }
        table.extend_from_slice(&g.vcpus.to_le_bytes());
        table.extend_from_slice(&g.kind.to_le_bytes());
        let mut name = [0u8; NAME_LEN];
        let n = g.name.len().min(NAME_LEN - 1);
        name[..n].copy_from_slice(&g.name.as_bytes()[..n]);
        table.extend_from_slice(&name);
        table.extend_from_slice(&at_of[3].0.to_le_bytes());
        table.extend_from_slice(&at_of[3].1.to_le_bytes());
    }
    let mut v = Vec::new();
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&(guests.len() as u64).to_le_bytes());
    v.extend_from_slice(&table);
    for (at, b) in blobs {
        v.resize(at, 0);
        v.extend_from_slice(b);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyp_abi::guests::*;

    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    /// The bundle read back as docs/abi.md describes it.
    #[test]
    fn guest_bundle_layout() {
        let elf = GuestSpec::elf("guest-test".into(), vec![1; 5000], 64 << 20, 2);
        let linux = GuestSpec {
            name: "a-name-longer-than-thirty-two-bytes-is-cut".into(),
            elf: vec![2; 100],
            mem: 128 << 20,
            vcpus: 1,
            kind: KIND_LINUX,
            initrd: vec![3; 4097],
            disk: vec![4; 512],
            cmdline: "quiet loglevel=3".into(),
        };
        let b = guest_bundle(&[elf, linux]);
        assert_eq!(&b[..8], MAGIC);
        assert_eq!(u64_at(&b, 8), 2);
        let e = |i: usize, f: usize| u64_at(&b, HEADER_LEN + i * ENTRY_LEN + 8 * f);
        // ELF: image at the first page after the table; no initrd, no disk.
        assert_eq!((e(0, 0), e(0, 1), e(0, 2)), (64 << 20, 4096, 5000));
        assert_eq!((e(0, 3), e(0, 4), e(0, 5), e(0, 6)), (0, 0, 0, 0));
        let w = |i: usize, o: usize| u32::from_le_bytes(b[HEADER_LEN + i * ENTRY_LEN + o..][..4].try_into().unwrap());
        assert_eq!((w(0, 56), w(0, 60)), (2, KIND_ELF));
        assert_eq!(&b[HEADER_LEN + 64..HEADER_LEN + 75], b"guest-test\0");
        // Linux: each part page-aligned after the last.
        assert_eq!((e(1, 1), e(1, 2)), (3 * 4096, 100));
        assert_eq!((e(1, 3), e(1, 4)), (4 * 4096, 4097));
        assert_eq!((e(1, 5), e(1, 6)), (6 * 4096, 512));
        assert_eq!((w(1, 56), w(1, 60)), (1, KIND_LINUX));
        let name = &b[HEADER_LEN + ENTRY_LEN + 64..HEADER_LEN + ENTRY_LEN + 96];
        assert_eq!(&name[..31], b"a-name-longer-than-thirty-two-b");
        assert_eq!(name[31], 0);
        assert!(b[4096..4096 + 5000].iter().all(|&x| x == 1));
        assert!(b[4 * 4096..4 * 4096 + 4097].iter().all(|&x| x == 3));
        // The command line after the disk; none for the ELF.
        assert_eq!((e(0, 12), e(0, 13)), (0, 0));
        assert_eq!((e(1, 12), e(1, 13)), (7 * 4096, 16));
        assert!(b[6 * 4096..6 * 4096 + 512].iter().all(|&x| x == 4));
        assert_eq!(&b[7 * 4096..], b"quiet loglevel=3");
    }
}
