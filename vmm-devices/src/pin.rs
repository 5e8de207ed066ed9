//! A [`GuestMem`] built from a host's way of pinning guest pages: guest RAM
//! is one range of IPAs, `[ram, ram + size)`. Before the first access to a
//! page in a session, [`PinnedMem`] asks the host's [`Pin`] to pin it; the
//! host grants the pin only on a page the guest shared with it (the bare
//! host shim asks the hyp for the page's state, `PAGE_STATE`, then takes a
//! shared `PIN`; a Linux VMM asks its driver), and the guest cannot take
//! the page back (MEM_UNSHARE waits) until the session ends and every pin
//! is dropped. The host never reads or writes a private page, so it never
//! takes a stage-2 fault for a device.

use alloc::vec::Vec;

use crate::mem::{pages, GuestMem, MemError, PAGE};

/// How a VMM holds one guest page for a device's access.
///
/// # Safety
///
/// An implementation promises, for every `Ok(ptr)` that [`Pin::pin`]
/// returns for the page at IPA `page`:
/// - `ptr` is the host address of that page's first byte, and the 4096
///   bytes from it are valid for volatile reads and writes until the
///   matching [`Pin::unpin`] of `page`;
/// - meanwhile the page stays shared by the guest with the host (the host
///   takes no fault on it) and no host memory but the guest's page is
///   reached through it.
///
/// The guest may write the page at any time: [`PinnedMem`] only uses
/// volatile accesses on it and never forms a reference to it.
pub unsafe trait Pin {
    /// Pins the guest page at IPA `page` (page-aligned, inside guest RAM:
    /// [`PinnedMem`] checked) if the guest shared it with the host, and
    /// returns where the host reaches it. `Err` names the page:
    /// [`MemError::NotShared`] if the guest has not shared it or took it
    /// back before the pin.
    fn pin(&mut self, page: u64) -> Result<*mut u8, MemError>;
    /// Drops the pin [`Pin::pin`] took on `page` (called exactly once per
    /// successful `pin`, at the end of the session).
    fn unpin(&mut self, page: u64);
}

/// Guest memory for one session (one MMIO exit): pages pinned on first use
/// and unpinned together when the session ends ([`PinnedMem::end`] or drop).
pub struct PinnedMem<P: Pin> {
    ram: u64,
    size: u64,
    /// (IPA, host address) of the pages pinned in this session, sorted.
    pinned: Vec<(u64, *mut u8)>,
    pin: P,
}

impl<P: Pin> PinnedMem<P> {
    /// Guest RAM is the IPAs `[ram, ram + size)`; `pin` reaches its pages.
    pub fn new(ram: u64, size: u64, pin: P) -> PinnedMem<P> {
        PinnedMem { ram, size, pinned: Vec::new(), pin }
    }

    /// Ends the session: every pin is dropped (dropping a `PinnedMem`
    /// does the same). It may start another session afterwards.
    pub fn end(&mut self) {
        self.release();
    }

    /// The host's `Pin` (e.g. to read what it counted).
    pub fn pinner(&self) -> &P {
        &self.pin
    }

    fn release(&mut self) {
        for (ipa, _) in core::mem::take(&mut self.pinned) {
            self.pin.unpin(ipa);
        }
    }

    /// The host address of the page at `page` (an IPA), pinned for the
    /// session.
    fn page(&mut self, page: u64) -> Result<*mut u8, MemError> {
        if page.checked_sub(self.ram).is_none_or(|o| o >= self.size) {
            return Err(MemError::OutOfRam(page));
        }
        let at = match self.pinned.binary_search_by_key(&page, |&(ipa, _)| ipa) {
            Ok(i) => return Ok(self.pinned[i].1),
            Err(at) => at,
        };
        let host = self.pin.pin(page)?;
        self.pinned.insert(at, (page, host));
        Ok(host)
    }

    /// Runs `f(host address, offset into the buffer, length)` for each
    /// page piece of `[ipa, ipa + len)`, every page pinned first.
    fn each(&mut self, ipa: u64, len: usize, mut f: impl FnMut(*mut u8, usize, usize)) -> Result<(), MemError> {
        self.check(ipa, len as u64)?;
        let mut done = 0;
        while done < len {
            let a = ipa + done as u64;
            let in_page = (a % PAGE) as usize;
            let n = (PAGE as usize - in_page).min(len - done);
            let page = self.page(a - in_page as u64)?;
            // In bounds: `in_page < PAGE`, inside the page `pin` returned.
            f(page.wrapping_add(in_page), done, n);
            done += n;
        }
        Ok(())
    }
}

impl<P: Pin> GuestMem for PinnedMem<P> {
    fn check(&mut self, ipa: u64, len: u64) -> Result<(), MemError> {
        for p in pages(ipa, len)? {
            self.page(p)?;
        }
        Ok(())
    }

    fn read(&mut self, ipa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.each(ipa, buf.len(), |host, at, n| {
            let mut i = 0;
            while i < n {
                let a = host.wrapping_add(i);
                if (a as usize).is_multiple_of(8) && n - i >= 8 {
                    // SAFETY: `a..a + 8` (8-aligned; inside the piece, so
                    // inside one page: `each` gives pieces of one page)
                    // lies in a page pinned for this session, which the
                    // `Pin` contract makes valid for volatile reads until
                    // it is unpinned at the end of the session. Volatile:
                    // the guest may write it meanwhile.
                    let v = unsafe { core::ptr::read_volatile(a as *const u64) };
                    buf[at + i..at + i + 8].copy_from_slice(&v.to_ne_bytes());
                    i += 8;
                } else {
                    // SAFETY: as above, one byte of the pinned page.
                    buf[at + i] = unsafe { core::ptr::read_volatile(a) };
                    i += 1;
                }
            }
        })
    }

    fn write(&mut self, ipa: u64, data: &[u8]) -> Result<(), MemError> {
        self.each(ipa, data.len(), |host, at, n| {
            let mut i = 0;
            while i < n {
                let a = host.wrapping_add(i);
                if (a as usize).is_multiple_of(8) && n - i >= 8 {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&data[at + i..at + i + 8]);
                    // SAFETY: as in read: 8 bytes of a page pinned for this
                    // session, valid for volatile writes by the `Pin`
                    // contract.
                    unsafe { core::ptr::write_volatile(a as *mut u64, u64::from_ne_bytes(w)) };
                    i += 8;
                } else {
                    // SAFETY: as in read, one byte of the pinned page.
                    unsafe { core::ptr::write_volatile(a, data[at + i]) };
                    i += 1;
                }
            }
        })
    }

    fn fence(&mut self) {
        // A full barrier (`dmb ish` on arm64).
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }
}

impl<P: Pin> Drop for PinnedMem<P> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;
    use std::rc::Rc;
    use std::vec;

    const RAM: u64 = 0x4000_0000;

    /// Guest RAM as a host buffer; which pages are shared; every pin and
    /// unpin, in order.
    struct FakePin {
        bytes: Vec<u64>,
        shared: BTreeSet<u64>,
        log: Rc<RefCell<Vec<(bool, u64)>>>,
    }

    impl FakePin {
        fn new(pages: usize) -> FakePin {
            FakePin { bytes: vec![0; pages * PAGE as usize / 8], shared: BTreeSet::new(), log: Rc::default() }
        }
        fn byte(&self, ipa: u64) -> u8 {
            let o = (ipa - RAM) as usize;
            self.bytes[o / 8].to_ne_bytes()[o % 8]
        }
    }

    // SAFETY: `bytes` is never resized, so every page of it stays at its
    // address; pinning is refused for pages not in `shared`.
    unsafe impl Pin for FakePin {
        fn pin(&mut self, page: u64) -> Result<*mut u8, MemError> {
            self.log.borrow_mut().push((true, page));
            if !self.shared.contains(&page) {
                return Err(MemError::NotShared(page));
            }
            let base = self.bytes.as_mut_ptr() as *mut u8;
            Ok(base.wrapping_add((page - RAM) as usize))
        }
        fn unpin(&mut self, page: u64) {
            self.log.borrow_mut().push((false, page));
        }
    }

    fn mem(shared: &[u64]) -> PinnedMem<FakePin> {
        let mut p = FakePin::new(4);
        p.shared.extend(shared.iter().map(|k| RAM + k * PAGE));
        PinnedMem::new(RAM, 4 * PAGE, p)
    }

    #[test]
    fn copies_across_pages_and_pins_each_once() {
        let mut m = mem(&[0, 1]);
        let data: Vec<u8> = (0..100).collect();
        m.write(RAM + PAGE - 37, &data).unwrap();
        let mut back = [0u8; 100];
        m.read(RAM + PAGE - 37, &mut back).unwrap();
        assert_eq!(&back[..], &data[..]);
        m.end();
        let p = m.pinner();
        assert_eq!(*p.log.borrow(), [(true, RAM), (true, RAM + PAGE), (false, RAM), (false, RAM + PAGE)]);
        assert_eq!(p.byte(RAM + PAGE - 37), 0);
        assert_eq!(p.byte(RAM + PAGE + 62), 99);
    }

    #[test]
    fn private_pages_are_refused_untouched() {
        let mut m = mem(&[0]);
        // Runs from a shared page into a private one: nothing is written.
        assert_eq!(m.write(RAM + PAGE - 8, &[0xff; 16]), Err(MemError::NotShared(RAM + PAGE)));
        let mut b = [0u8; 4];
        assert_eq!(m.read(RAM + 2 * PAGE, &mut b), Err(MemError::NotShared(RAM + 2 * PAGE)));
        assert_eq!(m.check(RAM + 4 * PAGE, 1), Err(MemError::OutOfRam(RAM + 4 * PAGE)));
        assert_eq!(m.check(RAM - 1, 2), Err(MemError::OutOfRam(RAM - PAGE)));
        assert_eq!(m.check(u64::MAX - 3, 8), Err(MemError::OutOfRam(!(PAGE - 1))));
        m.end();
        let p = m.pinner();
        assert_eq!(p.byte(RAM + PAGE - 8), 0, "the shared part was not written either");
        // Only the successful pin is dropped.
        assert_eq!(p.log.borrow().iter().filter(|(pin, _)| !pin).count(), 1);
    }

    #[test]
    fn drop_unpins_and_end_starts_a_new_session() {
        let mut m = mem(&[3]);
        let log = m.pinner().log.clone();
        m.check(RAM + 3 * PAGE, PAGE).unwrap();
        m.end();
        m.check(RAM + 3 * PAGE + 5, 1).unwrap();
        m.check(RAM + 3 * PAGE + 6, 1).unwrap();
        drop(m);
        let page = RAM + 3 * PAGE;
        assert_eq!(*log.borrow(), [(true, page), (false, page), (true, page), (false, page)]);
    }
}
