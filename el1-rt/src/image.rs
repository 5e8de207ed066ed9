//! Where this payload lies in memory.

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// (start, end) of the loaded image, stack and bss included.
pub fn range() -> (u64, u64) {
    // SAFETY: linker symbols; only their (PC-relative) addresses are taken.
    unsafe { (&__image_start as *const u8 as u64, &__image_end as *const u8 as u64) }
}
