//! The VMM's [`GuestMem`]: guest RAM is one host range (IPA `ram` at PA
//! `pa`, `size` bytes). Before the first access to a page in a session the
//! VMM asks the hyp for the page's host state (`PAGE_STATE`): only 3,
//! shared-borrowed (the guest shared it with the host), will do. It then
//! takes a shared `PIN`, which the hyp grants only on such a page, so the
//! guest cannot take the page back (MEM_UNSHARE waits) until the session
//! ends and every pin is dropped. The host never reads or writes a private
//! page, so it never takes a stage-2 fault for a device.

use alloc::vec::Vec;

use hyp_abi::host::{self as abi, page_state};

use super::mem::{pages, GuestMem, MemError, PAGE};
use crate::hyp;

pub struct PinnedMem {
    ram: u64,
    pa: u64,
    size: u64,
    /// PAs pinned in this session, sorted.
    pinned: Vec<u64>,
    /// Hypercalls made (PAGE_STATE, PIN, UNPIN).
    pub calls: u64,
}

impl PinnedMem {
    pub fn new(ram: u64, pa: u64, size: u64) -> PinnedMem {
        PinnedMem { ram, pa, size, pinned: Vec::new(), calls: 0 }
    }

    /// The PA of the page at `page` (an IPA), pinned for the session.
    fn page(&mut self, page: u64) -> Result<u64, MemError> {
        let off = page.checked_sub(self.ram).filter(|&o| o < self.size).ok_or(MemError::OutOfRam(page))?;
        let pa = self.pa + off;
        let Err(at) = self.pinned.binary_search(&pa) else {
            return Ok(pa);
        };
        self.calls += 1;
        let state = hyp::call(abi::PAGE_STATE, [pa, 0, 0, 0, 0, 0]).map(|r| r[0]);
        if state != Ok(page_state::SHARED_BORROWED) {
            return Err(MemError::NotShared(page));
        }
        // The guest may have unshared it since: the pin is refused then.
        self.calls += 1;
        if hyp::pin(pa, false) != 0 {
            return Err(MemError::NotShared(page));
        }
        self.pinned.insert(at, pa);
        Ok(pa)
    }

    /// Runs `f(pa, offset into the buffer, length)` for each page piece of
    /// `[ipa, ipa + len)`, every page pinned first.
    fn each(&mut self, ipa: u64, len: usize, mut f: impl FnMut(u64, usize, usize)) -> Result<(), MemError> {
        self.check(ipa, len as u64)?;
        let mut done = 0;
        while done < len {
            let a = ipa + done as u64;
            let n = ((PAGE - a % PAGE) as usize).min(len - done);
            let pa = self.page(a & !(PAGE - 1))? + a % PAGE;
            f(pa, done, n);
            done += n;
        }
        Ok(())
    }
}

impl GuestMem for PinnedMem {
    fn check(&mut self, ipa: u64, len: u64) -> Result<(), MemError> {
        for p in pages(ipa, len)? {
            self.page(p)?;
        }
        Ok(())
    }

    fn read(&mut self, ipa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.each(ipa, buf.len(), |pa, at, n| {
            let mut i = 0;
            while i < n {
                let a = pa + i as u64;
                if a.is_multiple_of(8) && n - i >= 8 {
                    // SAFETY: `a..a + 8` (8-aligned, so inside one page) is
                    // in a page of this guest that the hyp reports shared
                    // with the host and that we hold pinned, so the host's
                    // stage-2 maps it (identity, RAM) until the session
                    // ends. Volatile: the guest may write it meanwhile.
                    let v = unsafe { core::ptr::read_volatile(a as *const u64) };
                    buf[at + i..at + i + 8].copy_from_slice(&v.to_ne_bytes());
                    i += 8;
                } else {
                    // SAFETY: as above, one byte.
                    buf[at + i] = unsafe { core::ptr::read_volatile(a as *const u8) };
                    i += 1;
                }
            }
        })
    }

    fn write(&mut self, ipa: u64, data: &[u8]) -> Result<(), MemError> {
        self.each(ipa, data.len(), |pa, at, n| {
            let mut i = 0;
            while i < n {
                let a = pa + i as u64;
                if a.is_multiple_of(8) && n - i >= 8 {
                    let v = u64::from_ne_bytes(data[at + i..at + i + 8].try_into().unwrap());
                    // SAFETY: as in read: 8 bytes of a pinned page the guest
                    // shared with the host.
                    unsafe { core::ptr::write_volatile(a as *mut u64, v) };
                    i += 8;
                } else {
                    // SAFETY: as in read, one byte.
                    unsafe { core::ptr::write_volatile(a as *mut u8, data[at + i]) };
                    i += 1;
                }
            }
        })
    }

    fn fence(&mut self) {
        // SAFETY: a barrier, no memory access of its own.
        unsafe { core::arch::asm!("dmb ish") };
    }
}

impl PinnedMem {
    /// Ends the session: every pin is dropped. Returns the hypercalls the
    /// session made.
    pub fn end(mut self) -> u64 {
        self.release();
        self.calls
    }

    fn release(&mut self) {
        for pa in core::mem::take(&mut self.pinned) {
            self.calls += 1;
            let _ = hyp::unpin(pa);
        }
    }
}

impl Drop for PinnedMem {
    fn drop(&mut self) {
        self.release();
    }
}
