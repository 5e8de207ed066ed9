//! How a device reaches guest memory: only through pages the guest has
//! shared with the host. The device code sees the [`GuestMem`] trait
//! alone; a VMM implements it, e.g. with [`crate::pin::PinnedMem`], which
//! asks the host's hyp interface about each page and holds a shared pin on
//! it until the access is over, so the guest cannot take the page back
//! mid-copy and the host never touches (never faults on) a private page.

/// Guest pages are 4 KiB.
pub const PAGE: u64 = 4096;

/// Why a guest address cannot be used. Each names the page (its IPA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// Not in the guest's RAM (or the range wraps).
    OutOfRam(u64),
    /// Guest RAM the guest has not shared with the host (private), or a
    /// page it took back before the host could pin it.
    NotShared(u64),
}

/// Guest memory as a device may see it, for the length of one MMIO exit
/// (a "session"): pages checked once stay usable until the session ends.
///
/// Contract for implementations: an access to a page the guest has not
/// shared with the host fails with [`MemError::NotShared`] and reads or
/// writes nothing of it; a page that passed `check` (or an access) stays
/// shared, and its bytes the guest's, until the session ends (the guest's
/// MEM_UNSHARE waits); every error names the first bad page.
pub trait GuestMem {
    /// Makes every page of `[ipa, ipa + len)` usable for this session, or
    /// names the first that is not. Nothing is read or written.
    fn check(&mut self, ipa: u64, len: u64) -> Result<(), MemError>;
    /// Copies guest bytes at `ipa` into `buf` (checking the pages first:
    /// on an error nothing was copied from the bad page on).
    fn read(&mut self, ipa: u64, buf: &mut [u8]) -> Result<(), MemError>;
    /// Copies `data` to the guest at `ipa` (pages checked as for `read`).
    fn write(&mut self, ipa: u64, data: &[u8]) -> Result<(), MemError>;
    /// Orders this device's earlier guest-memory accesses before its later
    /// ones as the guest's other CPUs see them (a full barrier).
    fn fence(&mut self);
}

/// The pages `[ipa, ipa + len)` touches, or OutOfRam if the range wraps.
pub fn pages(ipa: u64, len: u64) -> Result<impl Iterator<Item = u64>, MemError> {
    let last = ipa.checked_add(len.max(1) - 1).ok_or(MemError::OutOfRam(ipa & !(PAGE - 1)))?;
    Ok((ipa / PAGE..=last / PAGE).map(|p| p * PAGE))
}

pub fn read_u16(m: &mut dyn GuestMem, ipa: u64) -> Result<u16, MemError> {
    let mut b = [0; 2];
    m.read(ipa, &mut b)?;
    Ok(u16::from_le_bytes(b))
}

pub fn write_u16(m: &mut dyn GuestMem, ipa: u64, v: u16) -> Result<(), MemError> {
    m.write(ipa, &v.to_le_bytes())
}

/// Guest memory for the host tests: a byte array at `base` and the set of
/// pages the "guest" has shared; every check is recorded.
#[cfg(test)]
pub mod fake {
    use super::*;
    use alloc::collections::BTreeSet;
    use alloc::vec;
    use alloc::vec::Vec;

    pub struct FakeMem {
        pub base: u64,
        pub bytes: Vec<u8>,
        pub shared: BTreeSet<u64>,
        /// Pages checked (and so "pinned") in the current session.
        pub pinned: BTreeSet<u64>,
        /// Reads/writes that reached a page not shared: must stay 0.
        pub violations: u64,
    }

    impl FakeMem {
        pub fn new(base: u64, size: usize) -> FakeMem {
            FakeMem { base, bytes: vec![0; size], shared: BTreeSet::new(), pinned: BTreeSet::new(), violations: 0 }
        }
        pub fn share(&mut self, ipa: u64, len: u64) {
            for p in pages(ipa, len).unwrap() {
                self.shared.insert(p);
            }
        }
        pub fn unshare(&mut self, ipa: u64) {
            self.shared.remove(&(ipa & !(PAGE - 1)));
        }
        pub fn end_session(&mut self) {
            self.pinned.clear();
        }
        fn at(&self, ipa: u64) -> usize {
            (ipa - self.base) as usize
        }
        pub fn put(&mut self, ipa: u64, data: &[u8]) {
            let a = self.at(ipa);
            self.bytes[a..a + data.len()].copy_from_slice(data);
        }
        pub fn get(&self, ipa: u64, len: usize) -> &[u8] {
            let a = self.at(ipa);
            &self.bytes[a..a + len]
        }
        fn page_ok(&mut self, p: u64) -> Result<(), MemError> {
            if p < self.base || p >= self.base + self.bytes.len() as u64 {
                return Err(MemError::OutOfRam(p));
            }
            if !self.shared.contains(&p) {
                return Err(MemError::NotShared(p));
            }
            self.pinned.insert(p);
            Ok(())
        }
    }

    impl GuestMem for FakeMem {
        fn check(&mut self, ipa: u64, len: u64) -> Result<(), MemError> {
            for p in pages(ipa, len)? {
                self.page_ok(p)?;
            }
            Ok(())
        }
        fn read(&mut self, ipa: u64, buf: &mut [u8]) -> Result<(), MemError> {
            self.check(ipa, buf.len() as u64)?;
            for (i, b) in buf.iter_mut().enumerate() {
                let a = ipa + i as u64;
                if !self.shared.contains(&(a & !(PAGE - 1))) {
                    self.violations += 1;
                }
                *b = self.bytes[self.at(a)];
            }
            Ok(())
        }
        fn write(&mut self, ipa: u64, data: &[u8]) -> Result<(), MemError> {
            self.check(ipa, data.len() as u64)?;
            for (i, b) in data.iter().enumerate() {
                let a = ipa + i as u64;
                if !self.shared.contains(&(a & !(PAGE - 1))) {
                    self.violations += 1;
                }
                let at = self.at(a);
                self.bytes[at] = *b;
            }
            Ok(())
        }
        fn fence(&mut self) {}
    }
}
