//! What a mapping means: memory type, permissions, page state and owner.

/// Memory type of a stage-2 mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemType {
    /// Normal, inner/outer write-back cacheable, inner shareable.
    Normal,
    /// Device-nGnRE.
    Device,
}

/// Stage-2 access permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perm {
    pub r: bool,
    pub w: bool,
    pub x: bool,
}

impl Perm {
    pub const RWX: Perm = Perm { r: true, w: true, x: true };
    pub const RW: Perm = Perm { r: true, w: true, x: false };
    pub const R: Perm = Perm { r: true, w: false, x: false };
}

/// Attributes of a valid mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attrs {
    pub mem: MemType,
    pub perm: Perm,
}

impl Attrs {
    pub const NORMAL_RWX: Attrs = Attrs { mem: MemType::Normal, perm: Perm::RWX };
    pub const NORMAL_RW: Attrs = Attrs { mem: MemType::Normal, perm: Perm::RW };
    pub const DEVICE_RW: Attrs = Attrs { mem: MemType::Device, perm: Perm::RW };
}

/// pKVM page state of a mapped page, kept in descriptor bits 55-56.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageState {
    /// Mine, nobody else has it.
    Owned = 0,
    /// Mine, and shared with one other component.
    SharedOwned = 1,
    /// Someone else's, shared with me.
    SharedBorrowed = 2,
}

impl PageState {
    pub const fn name(self) -> &'static str {
        match self {
            PageState::Owned => "owned",
            PageState::SharedOwned => "shared-owned",
            PageState::SharedBorrowed => "shared-borrowed",
        }
    }
}

/// Who owns an unmapped page, as recorded in an invalid descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// Nobody recorded: in the host stage-2 this means "host-owned, not
    /// faulted in yet"; in other stage-2s, "no page".
    None,
    /// The hypervisor's own memory (image, stacks, page pool with its
    /// tables, per-CPU data): it never leaves the hyp.
    Hyp,
    /// A page the host donated to the hyp (DONATE_HYP): the hyp holds it
    /// until it gives it back (RECLAIM_HYP). Only in the host's stage-2.
    HypDonated,
    /// A guest VM, by handle.
    Guest(u16),
    /// A page the host donated for a VM's stage-2 tables (VM_TOPUP): the
    /// hyp holds it in that VM's memcache, or as one of its tables, until
    /// the VM is destroyed. Only in the host's stage-2.
    VmTables(u16),
}

/// A leaf entry, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leaf {
    /// Invalid descriptor carrying an owner annotation.
    Invalid(Owner),
    /// Valid block or page.
    Mapped { pa: u64, attrs: Attrs, state: PageState },
}

impl Leaf {
    /// The same leaf seen `off` bytes further on (valid leaves advance their PA).
    #[inline]
    pub fn offset(self, off: u64) -> Leaf {
        match self {
            Leaf::Mapped { pa, attrs, state } => Leaf::Mapped { pa: pa + off, attrs, state },
            inv => inv,
        }
    }

    pub fn is_valid(&self) -> bool {
        matches!(self, Leaf::Mapped { .. })
    }
}
