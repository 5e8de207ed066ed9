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
    pub elf: Vec<u8>,
    pub mem: u64,
    pub vcpus: u32,
}

/// The host shim's initrd: the guests to run.
pub fn guest_bundle(guests: &[GuestSpec]) -> Vec<u8> {
    use hyp_abi::guests::*;
    let mut v = Vec::new();
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&(guests.len() as u64).to_le_bytes());
    let mut off = (HEADER_LEN + ENTRY_LEN * guests.len()).div_ceil(4096) * 4096;
    let mut table = Vec::new();
    for g in guests {
        table.extend_from_slice(&g.mem.to_le_bytes());
        table.extend_from_slice(&(off as u64).to_le_bytes());
        table.extend_from_slice(&(g.elf.len() as u64).to_le_bytes());
        table.extend_from_slice(&g.vcpus.to_le_bytes());
        let mut name = [0u8; 36];
        let n = g.name.len().min(35);
        name[..n].copy_from_slice(&g.name.as_bytes()[..n]);
        table.extend_from_slice(&name);
        off = (off + g.elf.len()).div_ceil(4096) * 4096;
    }
    v.extend_from_slice(&table);
    for g in guests {
        align(&mut v, 4096);
        v.extend_from_slice(&g.elf);
    }
    v
}
