//! The device models' [`Pin`] seam over the hyp's host ABI: guest RAM is
//! one host range (IPA `ram` at PA `pa`). Before the first access to a
//! page in a session the VMM asks the hyp for the page's host state
//! (`PAGE_STATE`): only 3, shared-borrowed (the guest shared it with the
//! host), will do. It then takes a shared `PIN`, which the hyp grants only
//! on such a page, so the guest cannot take the page back (MEM_UNSHARE
//! waits) until the session ends and the pin is dropped (`UNPIN`).

use core::cell::Cell;

use hyp_abi::host::{self as abi, page_state};
use vmm_devices::mem::MemError;
use vmm_devices::pin::Pin;

use crate::hyp;

pub struct HypPin<'a> {
    ram: u64,
    pa: u64,
    /// Hypercalls made (PAGE_STATE, PIN, UNPIN), added up here.
    calls: &'a Cell<u64>,
}

impl<'a> HypPin<'a> {
    /// Guest RAM IPA `ram` is host PA `pa`; hypercalls are counted in
    /// `calls`.
    pub fn new(ram: u64, pa: u64, calls: &'a Cell<u64>) -> HypPin<'a> {
        HypPin { ram, pa, calls }
    }

    fn pa(&self, page: u64) -> u64 {
        self.pa + (page - self.ram)
    }
}

// SAFETY: the host runs on an identity map of its RAM, so the PA returned
// is the page's address. The hyp grants a shared PIN only on a page in
// state shared-borrowed (the guest shared it with the host) and keeps it
// there, mapped in the host's stage-2, until the UNPIN: the guest's
// MEM_UNSHARE waits for it (an UNSHARE_PENDING exit). The PAGE_STATE call
// first only spares the PIN call on a private page.
unsafe impl Pin for HypPin<'_> {
    fn pin(&mut self, page: u64) -> Result<*mut u8, MemError> {
        let pa = self.pa(page);
        self.calls.set(self.calls.get() + 1);
        let state = hyp::call(abi::PAGE_STATE, [pa, 0, 0, 0, 0, 0]).map(|r| r[0]);
        if state != Ok(page_state::SHARED_BORROWED) {
            return Err(MemError::NotShared(page));
        }
        // The guest may have unshared it since: the pin is refused then.
        self.calls.set(self.calls.get() + 1);
        if hyp::pin(pa, false) != 0 {
            return Err(MemError::NotShared(page));
        }
        Ok(pa as *mut u8)
    }

    fn unpin(&mut self, page: u64) {
        self.calls.set(self.calls.get() + 1);
        let _ = hyp::unpin(self.pa(page));
    }
}
