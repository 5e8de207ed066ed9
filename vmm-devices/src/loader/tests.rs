//! Host tests of the loaders: hostile ELF headers, Linux Image layouts,
//! DMA pool placement, the DTB window.

use std::vec;
use std::vec::Vec;

use super::*;

const MIB: u64 = 1 << 20;

/// A little-endian AArch64 ELF64 with one program header per `(type,
/// offset, paddr, filesz, memsz)`, the headers at 64, then `data`.
fn elf(entry: u64, phs: &[(u32, u64, u64, u64, u64)], data: &[u8]) -> Vec<u8> {
    let mut e = vec![0u8; 64 + 56 * phs.len()];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2;
    e[5] = 1;
    e[18..20].copy_from_slice(&183u16.to_le_bytes());
    e[24..32].copy_from_slice(&entry.to_le_bytes());
    e[32..40].copy_from_slice(&64u64.to_le_bytes());
    e[54..56].copy_from_slice(&56u16.to_le_bytes());
    e[56..58].copy_from_slice(&(phs.len() as u16).to_le_bytes());
    for (i, &(kind, off, paddr, filesz, memsz)) in phs.iter().enumerate() {
        let p = 64 + 56 * i;
        e[p..p + 4].copy_from_slice(&kind.to_le_bytes());
        e[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
        e[p + 24..p + 32].copy_from_slice(&paddr.to_le_bytes());
        e[p + 32..p + 40].copy_from_slice(&filesz.to_le_bytes());
        e[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
    }
    e.extend_from_slice(data);
    e
}

const TEXT: u64 = GUEST_RAM + 0x8_0000;

#[test]
fn elf_segments_are_copied_and_zero_filled() {
    let data: Vec<u8> = (1..=16).collect();
    // Three program headers: the data is at 64 + 3 * 56 = 232.
    let e = elf(TEXT, &[(1, 232, TEXT, 16, 40), (4, 0, 0, 0, 0), (1, 232, TEXT + 0x1000, 8, 8)], &data);
    let plan = ElfPlan::new(&e, MIB, 1).unwrap();
    assert_eq!(plan.entry, TEXT);
    let mut ram = vec![0xffu8; MIB as usize];
    plan.write(&e, &mut ram);
    assert!(ram[..DTB_SIZE].iter().all(|&b| b == 0), "the DTB window is zeroed");
    assert_eq!(&ram[0x8_0000..0x8_0010], &data[..]);
    assert!(ram[0x8_0010..0x8_0028].iter().all(|&b| b == 0), "memsz beyond filesz is zeroed");
    assert_eq!(ram[0x8_0028], 0xff, "nothing past the segment is written");
    assert_eq!(&ram[0x8_1000..0x8_1008], &data[..8]);
    assert_eq!(ram[DTB_SIZE], 0xff);
}

#[test]
fn hostile_elf_headers_are_refused_with_the_reason() {
    let ok = elf(TEXT, &[(1, 120, TEXT, 8, 8)], &[0; 8]);
    assert!(ElfPlan::new(&ok, MIB, 8).is_ok());
    let bad_elf = |e: &[u8], why| assert_eq!(ElfPlan::new(e, MIB, 1), Err(LoadError::BadElf(why)));
    assert_eq!(ElfPlan::new(&ok, MIB, 0), Err(LoadError::BadElf("a guest has 1 to 8 vCPUs")));
    assert_eq!(ElfPlan::new(&ok, MIB, 9), Err(LoadError::BadElf("a guest has 1 to 8 vCPUs")));
    for patch in [(0, 0x7e), (4, 1), (18, 62)] {
        let mut e = ok.clone();
        e[patch.0] = patch.1;
        assert_eq!(ElfPlan::new(&e, MIB, 1), Err(LoadError::NotElf), "{patch:?}");
    }
    assert_eq!(ElfPlan::new(&ok[..63], MIB, 1), Err(LoadError::NotElf));
    assert_eq!(ElfPlan::new(&ok, DTB_SIZE as u64 - 1, 1), Err(LoadError::NoMemory));
    let mut small = ok.clone();
    small[54] = 32;
    bad_elf(&small, "program header entries too small");
    let mut far = ok.clone();
    far[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    bad_elf(&far, "program headers outside the file");
    bad_elf(&elf(TEXT, &[(1, 120, TEXT, 9, 9)], &[0; 8]), "segment data outside the file");
    bad_elf(&elf(TEXT, &[(1, u64::MAX, TEXT, 2, 2)], &[0; 8]), "segment data outside the file");
    bad_elf(&elf(TEXT, &[(1, 120, GUEST_RAM - 8, 8, 8)], &[0; 8]), "segment outside guest RAM");
    bad_elf(&elf(TEXT, &[(1, 120, GUEST_RAM + MIB - 4, 8, 8)], &[0; 8]), "segment outside guest RAM");
    bad_elf(&elf(TEXT, &[(1, 120, TEXT, 0, u64::MAX)], &[0; 8]), "segment outside guest RAM");
    bad_elf(&elf(TEXT, &[(1, 120, GUEST_RAM + 0x100, 8, 8)], &[0; 8]), "segment overlaps the guest DTB");
    bad_elf(&elf(GUEST_RAM + MIB, &[(1, 120, TEXT, 8, 8)], &[0; 8]), "entry point outside guest RAM");
    bad_elf(&elf(0, &[(1, 120, TEXT, 8, 8)], &[0; 8]), "entry point outside guest RAM");
}

/// An arm64 Image header (`len` bytes) with these fields.
fn image(text_offset: u64, image_size: u64, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|i| i as u8 | 1).collect();
    v[8..16].copy_from_slice(&text_offset.to_le_bytes());
    v[16..24].copy_from_slice(&image_size.to_le_bytes());
    v[24..32].copy_from_slice(&0u64.to_le_bytes());
    v[0x38..0x3c].copy_from_slice(b"ARM\x64");
    v
}

#[test]
fn linux_layout_and_copy() {
    let img = image(0x1000, 0x3000, 0x2000);
    let initrd = [7u8; 100];
    let mem = 16 * MIB;
    let plan = LinuxPlan::new(&img, initrd.len(), mem, 2).unwrap();
    let i = plan.info;
    assert_eq!(i.kernel, GUEST_RAM + 2 * MIB + 0x1000);
    assert_eq!(i.kernel_size, 0x3000);
    assert_eq!(i.pool, (GUEST_RAM + mem - DMA_POOL_SIZE, DMA_POOL_SIZE));
    assert_eq!(i.initrd, (i.pool.0 - 4096, i.pool.0 - 4096 + 100));
    assert_eq!(i.dma_pool(), DmaPool { ipa: i.pool.0, size: DMA_POOL_SIZE });
    let mut ram = vec![0xffu8; mem as usize];
    plan.write(&img, &initrd, &mut ram);
    let k = (i.kernel - GUEST_RAM) as usize;
    assert_eq!(&ram[k..k + img.len()], &img[..]);
    assert!(ram[k + img.len()..k + 0x3000].iter().all(|&b| b == 0), "the BSS is zeroed");
    assert_eq!(ram[k + 0x3000], 0xff);
    let r = (i.initrd.0 - GUEST_RAM) as usize;
    assert_eq!(&ram[r..r + 100], &initrd[..]);
    assert!(ram[..DTB_SIZE].iter().all(|&b| b == 0));
}

#[test]
fn linux_images_that_cannot_load() {
    let img = image(0, 0x3000, 0x2000);
    assert_eq!(LinuxPlan::new(&img, 0, 16 * MIB, 0), Err(LoadError::BadImage("a guest has 1 to 8 vCPUs")));
    assert_eq!(
        LinuxPlan::new(&img[..10], 0, 16 * MIB, 1),
        Err(LoadError::BadImage("shorter than the 64-byte arm64 Image header"))
    );
    let too_big = Err(LoadError::BadImage("the kernel, initramfs and DMA pool do not fit in guest memory"));
    assert_eq!(LinuxPlan::new(&img, 0, 6 * MIB, 1), too_big);
    assert_eq!(LinuxPlan::new(&img, usize::MAX - 10, 16 * MIB, 1), too_big);
}

#[test]
fn pool_placement() {
    let mem = 0x10_0000;
    let pool = |ipa, size| check_pool(DmaPool { ipa: GUEST_RAM + ipa, size }, mem);
    assert_eq!(pool(0x10000, 0x4000), Ok(()));
    assert_eq!(pool(0xfc000, 0x4000), Ok(()));
    let refused = Err(LoadError::BadConfig("the DMA pool must be whole pages of guest RAM after the DTB"));
    assert_eq!(pool(0x10000, 0), refused, "empty");
    assert_eq!(pool(0x10800, 0x4000), refused, "not page-aligned");
    assert_eq!(pool(0x10000, 0x4800), refused, "not whole pages");
    assert_eq!(pool(0xff000, 0x2000), refused, "past the end of RAM");
    assert_eq!(pool(0xf000, 0x2000), refused, "over the DTB window");
    assert_eq!(check_pool(DmaPool { ipa: !0xfff, size: 0x2000 }, mem), refused, "wraps");
}

#[test]
fn dtb_window() {
    let mut ram = vec![0u8; DTB_SIZE];
    assert!(write_dtb(&[], &mut ram).is_err());
    assert!(write_dtb(&vec![1; DTB_SIZE + 1], &mut ram).is_err());
    assert!(write_dtb(&[1; 8], &mut ram[..100]).is_err());
    write_dtb(&[9; 8], &mut ram).unwrap();
    assert_eq!(&ram[..9], &[9, 9, 9, 9, 9, 9, 9, 9, 0]);
}

#[test]
fn pieces_are_the_writes_in_order() {
    let data: Vec<u8> = (1..=16).collect();
    // Two overlapping segments: the second's bytes win where they meet.
    let e = elf(TEXT, &[(1, 176, TEXT, 16, 32), (1, 184, TEXT + 8, 8, 8)], &data);
    let plan = ElfPlan::new(&e, MIB, 1).unwrap();
    let p = plan.pieces(&e);
    assert_eq!(
        p,
        [
            Piece::Zero { at: 0, len: DTB_SIZE },
            Piece::Copy { at: 0x8_0000, bytes: &data[..] },
            Piece::Zero { at: 0x8_0010, len: 16 },
            Piece::Copy { at: 0x8_0008, bytes: &data[8..] },
        ]
    );
    // Applied in order they are `write`.
    let (mut a, mut b) = (vec![0xffu8; MIB as usize], vec![0xffu8; MIB as usize]);
    plan.write(&e, &mut a);
    for piece in &p {
        piece.apply(&mut b);
    }
    assert!(a == b);
    assert_eq!(&a[0x8_0008..0x8_0010], &data[8..]);

    let img = image(0x1000, 0x3000, 0x2000);
    let initrd = [7u8; 100];
    let plan = LinuxPlan::new(&img, initrd.len(), 16 * MIB, 1).unwrap();
    let (k, r) = ((plan.info.kernel - GUEST_RAM) as usize, (plan.info.initrd.0 - GUEST_RAM) as usize);
    assert_eq!(
        plan.pieces(&img, &initrd),
        [
            Piece::Zero { at: 0, len: DTB_SIZE },
            Piece::Copy { at: k, bytes: &img[..] },
            Piece::Zero { at: k + 0x2000, len: 0x1000 },
            Piece::Copy { at: r, bytes: &initrd[..] },
        ]
    );
    // An Image without BSS has no zero piece for it.
    let whole = image(0x1000, 0x2000, 0x2000);
    let plan = LinuxPlan::new(&whole, 0, 16 * MIB, 1).unwrap();
    assert_eq!(plan.pieces(&whole, &[]).len(), 3);
    assert_eq!(dtb_piece(&[9; 8]), Ok(Piece::Copy { at: 0, bytes: &[9; 8] }));
    assert!(dtb_piece(&[]).is_err() && dtb_piece(&vec![1; DTB_SIZE + 1]).is_err());
}
