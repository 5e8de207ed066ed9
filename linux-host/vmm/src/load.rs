//! Guest images into the VM's memory fd, before the VM first runs. The
//! shared loader (vmm-devices) writes a guest's RAM as a byte slice; here
//! that slice is a staging buffer whose untouched pages cost nothing (the
//! allocator maps them lazily), and only the pages with data go to the
//! driver, whose pages start zeroed.

use std::io;

use vmm_devices::loader::{write_dtb, ElfPlan, LinuxPlan};
use vmm_devices::platform::GUEST_RAM;

use crate::pkvm::Memory;

const PAGE: usize = 4096;

/// The runs of pages of `ram` that hold a byte other than 0: (offset, length).
pub fn data_runs(ram: &[u8]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (k, page) in ram.chunks(PAGE).enumerate() {
        if page.iter().all(|&b| b == 0) {
            continue;
        }
        match runs.last_mut() {
            Some((at, len)) if *at + *len == k * PAGE => *len += page.len(),
            _ => runs.push((k * PAGE, page.len())),
        }
    }
    runs
}

/// Stages the guest's RAM with `fill`, then writes what has data to `mem`.
fn load(mem: &Memory, dtb: &[u8], fill: impl FnOnce(&mut [u8])) -> io::Result<()> {
    let size = usize::try_from(mem.size).map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))?;
    let mut ram = vec![0u8; size];
    fill(&mut ram);
    write_dtb(dtb, &mut ram).map_err(|e| io::Error::other(e.to_string()))?;
    for (at, len) in data_runs(&ram) {
        mem.write(GUEST_RAM + at as u64, &ram[at..at + len])?;
    }
    Ok(())
}

/// Loads the checked ELF `plan` of `elf` and the DTB into `mem`.
pub fn load_elf(mem: &Memory, plan: &ElfPlan, elf: &[u8], dtb: &[u8]) -> io::Result<()> {
    load(mem, dtb, |ram| plan.write(elf, ram))
}

/// Loads the checked Linux `plan` (its Image and initramfs) and the DTB.
pub fn load_linux(mem: &Memory, plan: &LinuxPlan, image: &[u8], initrd: &[u8], dtb: &[u8]) -> io::Result<()> {
    load(mem, dtb, |ram| plan.write(image, initrd, ram))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pages_with_data_are_written() {
        let mut ram = vec![0u8; 8 * PAGE];
        assert!(data_runs(&ram).is_empty());
        ram[5] = 1;
        ram[PAGE + 7] = 2;
        ram[4 * PAGE] = 3;
        ram[8 * PAGE - 1] = 4;
        assert_eq!(data_runs(&ram), [(0, 2 * PAGE), (4 * PAGE, PAGE), (7 * PAGE, PAGE)]);
        let short = vec![9u8; PAGE + 10];
        assert_eq!(data_runs(&short), [(0, PAGE + 10)]);
    }
}
