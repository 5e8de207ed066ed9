//! The Linux host's side of vmm-devices' seams: guest memory a device may
//! reach ([`GuestMem`]) through the driver's memory fd and page pins, and
//! the hyp's interrupt control ([`IrqControl`]) through `PKVM_IRQ`.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::io;

use vmm_devices::irq::{IrqControl, IrqOp};
use vmm_devices::mem::{pages, GuestMem, MemError};

use crate::pkvm::{Memory, Vm};

/// Guest memory for one device session (one MMIO exit). A page is pinned
/// with `PKVM_PIN` (which the hyp grants only on a page the guest shares
/// with the host) at its first use and stays pinned until the session
/// ends, so the guest cannot take it back meanwhile (its MEM_UNSHARE
/// waits); bytes move with pread/pwrite on the memory fd, which the driver
/// refuses (EPERM) for a page that is not shared. The VMM never maps a
/// guest page.
pub struct LinuxMem<'a> {
    vm: &'a Vm,
    mem: &'a Memory,
    pinned: BTreeSet<u64>,
    /// Counts the ioctls made to reach guest memory (PIN, UNPIN, pread,
    /// pwrite).
    calls: &'a Cell<u64>,
}

impl<'a> LinuxMem<'a> {
    pub fn new(vm: &'a Vm, mem: &'a Memory, calls: &'a Cell<u64>) -> LinuxMem<'a> {
        LinuxMem { vm, mem, pinned: BTreeSet::new(), calls }
    }

    fn count(&self) {
        self.calls.set(self.calls.get() + 1);
    }

    fn in_ram(&self, page: u64) -> bool {
        page.checked_sub(self.mem.ipa).is_some_and(|o| o < self.mem.size)
    }

    /// A driver error on `page`: outside the memory or not shared.
    fn error(&self, page: u64, e: &io::Error) -> MemError {
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EBUSY) => MemError::NotShared(page),
            _ if !self.in_ram(page) => MemError::OutOfRam(page),
            _ => MemError::NotShared(page),
        }
    }

    /// The first page of `[ipa, ipa + len)` a copy failed on.
    fn first_bad(&mut self, ipa: u64, len: usize, e: io::Error) -> MemError {
        let first = pages(ipa, len as u64).ok().and_then(|mut p| p.next()).unwrap_or(ipa);
        self.error(first, &e)
    }

    /// Ends the session: every pin dropped.
    pub fn end(&mut self) {
        for page in std::mem::take(&mut self.pinned) {
            self.count();
            // The driver holds the pin: it drops it at teardown if this fails.
            let _ = self.vm.unpin(page);
        }
    }
}

impl Drop for LinuxMem<'_> {
    fn drop(&mut self) {
        self.end();
    }
}

impl GuestMem for LinuxMem<'_> {
    fn check(&mut self, ipa: u64, len: u64) -> Result<(), MemError> {
        for page in pages(ipa, len)? {
            if self.pinned.contains(&page) {
                continue;
            }
            if !self.in_ram(page) {
                return Err(MemError::OutOfRam(page));
            }
            self.count();
            self.vm.pin(page, false).map_err(|e| self.error(page, &e))?;
            self.pinned.insert(page);
        }
        Ok(())
    }

    fn read(&mut self, ipa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.check(ipa, buf.len() as u64)?;
        self.count();
        self.mem.read(ipa, buf).map_err(|e| self.first_bad(ipa, buf.len(), e))
    }

    fn write(&mut self, ipa: u64, data: &[u8]) -> Result<(), MemError> {
        self.check(ipa, data.len() as u64)?;
        self.count();
        self.mem.write(ipa, data).map_err(|e| self.first_bad(ipa, data.len(), e))
    }

    fn fence(&mut self) {
        // pread/pwrite are system calls: the kernel's entry and exit order
        // them; this orders the VMM's own accesses around them too.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// `VCPU_IRQ` through the VM fd.
pub struct VmIrq<'a>(pub &'a Vm);

impl IrqControl for VmIrq<'_> {
    fn vcpu_irq(&mut self, vcpu: usize, intid: u32, op: IrqOp) -> Result<(u32, u32), i64> {
        let (op, a, b) = op.abi();
        let vcpu = u32::try_from(vcpu).map_err(|_| -i64::from(libc::EINVAL))?;
        match self.0.irq(vcpu, intid, op as u32, [a, b]) {
            Ok((p, q)) => Ok((p as u32, q as u32)),
            Err(e) => Err(-i64::from(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }
}
