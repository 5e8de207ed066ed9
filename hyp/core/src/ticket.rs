//! A ticket lock: a spin lock that serves its callers in the order they
//! came (FIFO), as pKVM's `hyp_spinlock`. The hyp's host lock is one
//! (`hyp/src/owners.rs`; docs/isolation.md, "Fairness"): every memory call
//! of the host and of every guest takes it, and with a test-and-set lock a
//! CPU that releases and comes back at once (a guest calling MEM_SHARE in a
//! loop) may win every time against a CPU that waits.
//!
//! One 32-bit word: the ticket being served (`owner`) in its low half, the
//! next ticket to hand out (`next`) in its high half. On AArch64 (the hyp)
//! taking the lock is one exclusive add of 1 << 16 to the word, which also
//! returns the owner at that moment: if it equals the ticket taken, the
//! lock is ours with no second load (an exclusive load-acquire add and a
//! compare of the halves, against `spin`'s exclusive compare-and-swap);
//! otherwise the CPU waits in WFE, woken when the holder's store to the
//! word clears its exclusive monitor. Releasing it is a 16-bit
//! store-release of owner + 1 into the low half, which only the holder
//! writes (a `next` wrapping past 0xffff drops off the word's top, an
//! owner's increment never carries into `next`). The accesses of two sizes
//! to one word are asm (Rust's atomics have no mixed-size rule); other
//! targets (the host's tests) run the same algorithm with 32-bit atomics.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

/// `T` behind a FIFO spin lock.
#[repr(C)]
pub struct TicketLock<T> {
    /// `owner` (bits 0..16) and `next` (bits 16..32).
    word: AtomicU32,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands `data` to one holder at a time (`lock`,
// `try_lock`), so sharing the lock between threads shares `T` only by
// moving access, which `T: Send` allows.
unsafe impl<T: Send> Sync for TicketLock<T> {}

/// The lock held: access to the data; released when dropped.
pub struct TicketGuard<'a, T> {
    lock: &'a TicketLock<T>,
    /// Shared between threads only where `&mut T` may be (`T: Sync`): the
    /// guard hands out `&T` and `&mut T`, and a reference to the lock
    /// alone would make it `Sync` for any `T: Send`.
    _data: PhantomData<&'a mut T>,
}

/// The ticket half of a lock word (the asm's `#16, lsl #12`).
#[cfg(any(test, not(target_arch = "aarch64")))]
const NEXT: u32 = 1 << 16;

impl<T> TicketLock<T> {
    pub const fn new(data: T) -> Self {
        TicketLock { word: AtomicU32::new(0), data: UnsafeCell::new(data) }
    }

    /// Takes a ticket and waits for its turn.
    #[inline(always)]
    pub fn lock(&self) -> TicketGuard<'_, T> {
        acquire(&self.word);
        TicketGuard { lock: self, _data: PhantomData }
    }

    /// The lock if nobody holds it or waits for it. Tests only: its 32-bit
    /// compare-and-swap would race with the asm's 16-bit release store.
    #[cfg(test)]
    pub fn try_lock(&self) -> Option<TicketGuard<'_, T>> {
        let w = self.word.load(Ordering::Relaxed);
        if (w >> 16) as u16 != w as u16 {
            return None;
        }
        self.word
            .compare_exchange(w, w.wrapping_add(NEXT), Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| TicketGuard { lock: self, _data: PhantomData })
    }

    /// The data, the lock consumed (nobody can hold it).
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }

    /// Tickets handed out and not yet done: the holder and its waiters.
    pub fn queued(&self) -> u16 {
        let w = self.word.load(Ordering::Relaxed);
        ((w >> 16) as u16).wrapping_sub(w as u16)
    }
}

/// Takes a ticket from `word` and waits until it is served.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn acquire(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned lock word; the asm only reads and
    // writes it (the exclusive add of a ticket, then loads of its owner
    // half), with acquire ordering on the load that finds the turn ours.
    unsafe {
        core::arch::asm!(
            "2: ldaxr {old:w}, [{p}]",
            "add {new:w}, {old:w}, #16, lsl #12",
            "stxr {tmp:w}, {new:w}, [{p}]",
            "cbnz {tmp:w}, 2b",
            // Our ticket (old's high half) against the owner (its low half).
            "eor {new:w}, {old:w}, {old:w}, ror #16",
            "cbz {new:w}, 4f",
            "sevl",
            "3: wfe",
            "ldaxrh {tmp:w}, [{p}]",
            "eor {new:w}, {tmp:w}, {old:w}, lsr #16",
            "cbnz {new:w}, 3b",
            "4:",
            p = in(reg) word.as_ptr(),
            old = out(reg) _,
            new = out(reg) _,
            tmp = out(reg) _,
            options(nostack),
        )
    };
}

/// Serves the next ticket of `word`, held by the caller.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn release(word: &AtomicU32) {
    // SAFETY: the caller holds the lock, so only it writes the owner half
    // (the low 16 bits of the little-endian word, at its address); the
    // store-release orders the critical section's accesses before it.
    unsafe {
        core::arch::asm!(
            "ldrh {o:w}, [{p}]",
            "add {o:w}, {o:w}, #1",
            "stlrh {o:w}, [{p}]",
            p = in(reg) word.as_ptr(),
            o = out(reg) _,
            options(nostack),
        )
    };
}

#[cfg(not(target_arch = "aarch64"))]
fn acquire(word: &AtomicU32) {
    let ticket = (word.fetch_add(NEXT, Ordering::Acquire) >> 16) as u16;
    while word.load(Ordering::Acquire) as u16 != ticket {
        core::hint::spin_loop();
    }
}

#[cfg(not(target_arch = "aarch64"))]
fn release(word: &AtomicU32) {
    // The owner half alone: `next` may move under us.
    let mut w = word.load(Ordering::Relaxed);
    loop {
        let n = (w & !0xffff) | (w as u16).wrapping_add(1) as u32;
        match word.compare_exchange_weak(w, n, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(x) => w = x,
        }
    }
}

impl<T> Deref for TicketGuard<'_, T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the guard is the lock's only holder.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for TicketGuard<'_, T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard is the lock's only holder, borrowed mutably.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for TicketGuard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        release(&self.lock.word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::vec::Vec;

    fn wait_queued(l: &TicketLock<u64>, n: u16) {
        while l.queued() != n {
            std::thread::yield_now();
        }
    }

    /// A guard is shared between threads only where `&mut T` may be: a
    /// guard of a `Cell` is not `Sync` (else two threads could reach the
    /// `Cell` through one guard). Checked when the test compiles: the
    /// path below names one item only while the guard is not `Sync`
    /// (with a `Sync` guard both impls apply and the call is ambiguous).
    #[test]
    fn a_guard_is_sync_only_for_sync_data() {
        trait OneUnlessSync<A> {
            fn item() {}
        }
        impl<T: ?Sized> OneUnlessSync<()> for T {}
        impl<T: ?Sized + Sync> OneUnlessSync<u8> for T {}
        <TicketGuard<'static, core::cell::Cell<u8>> as OneUnlessSync<_>>::item();
        fn is_sync<T: Sync>() {}
        is_sync::<TicketGuard<'static, u64>>();
    }

    #[test]
    fn mutual_exclusion() {
        let l = Arc::new(TicketLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let mut g = l.lock();
                        // A read and a write apart: a second holder would lose updates.
                        let v = *g;
                        std::hint::black_box(());
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*l.lock(), 80_000);
        assert_eq!(l.queued(), 0);
    }

    /// The property a test-and-set lock lacks: a caller that releases
    /// cannot take the lock back ahead of one already waiting, and waiters
    /// are served in the order they came.
    #[test]
    fn first_come_first_served() {
        let l = Arc::new(TicketLock::new(0u64));
        let order = Arc::new(Mutex::new(Vec::new()));
        let g = l.lock();
        let mut waiters = Vec::new();
        for id in 1..=3u64 {
            let (l2, o2) = (l.clone(), order.clone());
            waiters.push(std::thread::spawn(move || {
                let mut g = l2.lock();
                o2.lock().unwrap().push(id);
                *g += id;
            }));
            // The holder and `id` waiters have tickets.
            wait_queued(&l, 1 + id as u16);
        }
        drop(g);
        // Released with three waiting: a new caller does not get in first.
        assert!(l.try_lock().is_none(), "the lock went to a newcomer ahead of its waiters");
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [1, 2, 3]);
        assert_eq!(*l.try_lock().expect("free once everyone is done"), 6);
    }
}
