//! FP/SIMD state of a lower-EL context.

#[repr(C, align(16))]
#[derive(Clone, Copy, Default)]
pub struct FpRegs {
    pub q: [u128; 32],
    pub fpsr: u64,
    pub fpcr: u64,
}

extern "C" {
    fn __fpsimd_save(area: *mut FpRegs);
    fn __fpsimd_restore(area: *const FpRegs);
}

impl FpRegs {
    pub fn save(&mut self) {
        // SAFETY: the area is 528 bytes, 16-byte aligned, as the asm expects.
        unsafe { __fpsimd_save(self) }
    }
    pub fn restore(&self) {
        // SAFETY: as for save.
        unsafe { __fpsimd_restore(self) }
    }
}
