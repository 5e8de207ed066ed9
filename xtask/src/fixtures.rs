//! Malformed guest ELFs for the scenario that tests the host shim's loader.
//! Both pass the xtask's own checks (architecture, addresses, entry point)
//! and are wrong only in where their segment data lies in the file, which
//! only the loader looks at.

use std::path::PathBuf;

use anyhow::Result;

use crate::image::GuestSpec;
use crate::qemu::GUEST_RAM_BASE;

/// Where the fixtures are written.
pub fn path(name: &str) -> PathBuf {
    crate::paths::target_dir().join("xtask-fixtures").join(name)
}

/// An AArch64 ELF64 executable with one PT_LOAD at guest RAM + 512 KiB.
pub fn elf(p_offset: u64, p_filesz: u64, p_memsz: u64) -> Vec<u8> {
    let addr = GUEST_RAM_BASE + 0x8_0000;
    let mut v = Vec::new();
    v.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    v.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    v.extend_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&addr.to_le_bytes()); // e_entry
    v.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    v.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    v.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for h in [64u16, 56, 1, 64, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        v.extend_from_slice(&h.to_le_bytes());
    }
    v.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    v.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for f in [p_offset, addr, addr, p_filesz, p_memsz, 0x1000] {
        v.extend_from_slice(&f.to_le_bytes());
    }
    v.extend_from_slice(&[0u8; 16]);
    v
}

/// (file name, ELF): segment data whose end wraps around to inside the
/// file, and a file size so large that adding it to the load address wraps.
pub fn malformed() -> [(&'static str, Vec<u8>); 2] {
    [("bad-offset.elf", elf(u64::MAX - 0x3f, 0x48, 0x48)), ("bad-filesz.elf", elf(0x78, u64::MAX - 0xff, 0x2000))]
}

/// An arm64 Image header (Linux booting.rst) and `len` bytes in all.
pub fn arm64_image(text_offset: u64, image_size: u64, flags: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.max(64)];
    v[8..16].copy_from_slice(&text_offset.to_le_bytes());
    v[16..24].copy_from_slice(&image_size.to_le_bytes());
    v[24..32].copy_from_slice(&flags.to_le_bytes());
    v[0x38..0x3c].copy_from_slice(b"ARM\x64");
    v.truncate(len);
    v
}

/// Linux guests the host shim must refuse, each named for its flaw, in a
/// guest bundle of their own (the xtask's --linux-guest checks would stop
/// them before QEMU starts).
pub fn bad_linux_guests() -> Vec<u8> {
    let mut no_magic = arm64_image(0, 8192, 0, 4096);
    no_magic[0x38] = b'X';
    let guests = [
        ("linux-short", arm64_image(0, 8192, 0, 32)),
        ("linux-no-magic", no_magic),
        ("linux-no-size", arm64_image(0, 0, 0, 4096)),
        ("linux-big-endian", arm64_image(0, 8192, 1, 4096)),
        ("linux-too-big", arm64_image(0, 200 << 20, 0, 4096)),
        ("linux-wraps", arm64_image(0, u64::MAX - 0xfff, 0, 4096)),
        ("linux-odd-offset", arm64_image(0x123, 8192, 0, 4096)),
    ];
    let specs: Vec<GuestSpec> = guests
        .into_iter()
        .map(|(name, elf)| GuestSpec {
            name: name.into(),
            elf,
            mem: 128 << 20,
            vcpus: 1,
            kind: hyp_abi::guests::KIND_LINUX,
            initrd: vec![0; 4096],
            disk: Vec::new(),
            cmdline: String::new(),
        })
        .collect();
    crate::image::guest_bundle(&specs)
}

pub fn write() -> Result<()> {
    for (name, data) in malformed() {
        let p = path(name);
        std::fs::create_dir_all(p.parent().unwrap())?;
        std::fs::write(p, data)?;
    }
    std::fs::write(path("bad-linux.bundle"), bad_linux_guests())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The xtask lets them through: only the shim's loader can refuse them.
    #[test]
    fn fixtures_pass_the_xtask_checks() {
        for (name, data) in malformed() {
            crate::qemu::check_guest(std::path::Path::new(name), &data, 16 << 20).unwrap();
        }
        let good = elf(0x78, 0x10, 0x10);
        assert_eq!(good.len(), 0x78 + 16);
        use object::{Object, ObjectSegment};
        let f = object::File::parse(&good[..]).unwrap();
        assert_eq!(f.segments().next().unwrap().data().unwrap(), &[0u8; 16]);
    }

    /// Every bad Linux guest is one the xtask itself would refuse.
    #[test]
    fn bad_linux_guests_fail_the_xtask_checks() {
        let b = bad_linux_guests();
        let n = u64::from_le_bytes(b[8..16].try_into().unwrap()) as usize;
        assert_eq!(n, 7);
        for i in 0..n {
            let e = 16 + i * hyp_abi::guests::ENTRY_LEN;
            let at = |k: usize| u64::from_le_bytes(b[e + 8 * k..e + 8 * k + 8].try_into().unwrap()) as usize;
            let image = &b[at(1)..at(1) + at(2)];
            assert!(crate::qemu::check_linux_guest(image, 128 << 20, 4096).is_err(), "entry {i}");
        }
        assert!(crate::qemu::check_linux_guest(&arm64_image(0, 8192, 0, 4096), 128 << 20, 4096).is_ok());
    }
}
