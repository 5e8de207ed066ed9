//! Guest images into the VM's memory fd, before the VM first runs: the
//! shared loader's writes ([`Piece`]s of vmm-devices' plans, then the DTB)
//! go to the driver one by one with pwrite, in their order; nothing of
//! guest RAM is staged here.

use std::io;

use vmm_devices::loader::{dtb_piece, ElfPlan, LinuxPlan, Piece};
use vmm_devices::platform::GUEST_RAM;

use crate::pkvm::Memory;

/// Zeroes written per call.
const ZEROS: usize = 64 << 10;

/// Applies `pieces` and the DTB through `write(IPA, bytes)`.
fn apply(pieces: &[Piece], dtb: &[u8], mut write: impl FnMut(u64, &[u8]) -> io::Result<()>) -> io::Result<()> {
    let dtb = dtb_piece(dtb).map_err(|e| io::Error::other(e.to_string()))?;
    let zeros = vec![0u8; ZEROS];
    for p in pieces.iter().chain([&dtb]) {
        match *p {
            Piece::Copy { at, bytes } => write(GUEST_RAM + at as u64, bytes)?,
            Piece::Zero { at, len } => {
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(ZEROS);
                    write(GUEST_RAM + (at + done) as u64, &zeros[..n])?;
                    done += n;
                }
            }
        }
    }
    Ok(())
}

/// Loads the checked ELF `plan` of `elf` and the DTB into `mem`.
pub fn load_elf(mem: &Memory, plan: &ElfPlan, elf: &[u8], dtb: &[u8]) -> io::Result<()> {
    apply(&plan.pieces(elf), dtb, |ipa, b| mem.write(ipa, b))
}

/// Loads the checked Linux `plan` (its Image and initramfs) and the DTB.
pub fn load_linux(mem: &Memory, plan: &LinuxPlan, image: &[u8], initrd: &[u8], dtb: &[u8]) -> io::Result<()> {
    apply(&plan.pieces(image, initrd), dtb, |ipa, b| mem.write(ipa, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_go_out_in_order_zeros_in_bounded_writes() {
        let bytes = [5u8; 10];
        let pieces = [
            Piece::Zero { at: 0, len: ZEROS + 100 },
            Piece::Copy { at: 0x2_0000, bytes: &bytes },
            Piece::Zero { at: 0x2_0004, len: 2 },
        ];
        let mut calls = Vec::new();
        apply(&pieces, &[1, 2, 3], |ipa, b| {
            calls.push((ipa - GUEST_RAM, b.to_vec()));
            Ok(())
        })
        .unwrap();
        let shape: Vec<(u64, usize)> = calls.iter().map(|(a, b)| (*a, b.len())).collect();
        assert_eq!(shape, [(0, ZEROS), (ZEROS as u64, 100), (0x2_0000, 10), (0x2_0004, 2), (0, 3)]);
        assert!(calls[0].1.iter().chain(&calls[1].1).chain(&calls[3].1).all(|&b| b == 0));
        assert_eq!(calls[4].1, [1, 2, 3], "the DTB last, over the zeroed window");
        // A failed write stops the load with its error; a DTB that does not fit is refused first.
        let e = apply(&pieces, &[1], |_, _| Err(io::Error::from_raw_os_error(libc::EPERM))).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        let mut wrote = false;
        assert!(apply(&pieces, &[], |_, _| {
            wrote = true;
            Ok(())
        })
        .is_err());
        assert!(!wrote);
    }
}
