//! The architecture layer (AArch64 only).

pub mod aarch64;
