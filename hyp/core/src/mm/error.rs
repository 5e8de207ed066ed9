//! Errors of the memory-protection core, with their errno values.

/// Why a page-table update or ownership transition was refused.
/// A refused call has changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A page is not in the state the transition needs (EPERM).
    Perm,
    /// Bad address, size, alignment or range (EINVAL).
    Inval,
    /// Out of table pages (ENOMEM).
    NoMem,
    /// A host pin holds the page (EBUSY).
    Busy,
    /// No such VM / object (ENOENT).
    NoEnt,
}

impl Error {
    /// The positive Linux errno for this error.
    pub const fn errno(self) -> i64 {
        match self {
            Error::Perm => 1,
            Error::NoEnt => 2,
            Error::NoMem => 12,
            Error::Busy => 16,
            Error::Inval => 22,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Error::Perm => "EPERM",
            Error::NoEnt => "ENOENT",
            Error::NoMem => "ENOMEM",
            Error::Busy => "EBUSY",
            Error::Inval => "EINVAL",
        }
    }
}
