//! The interrupt test device (docs/abi.md, "The guest platform"): a
//! level-sensitive line that a write of N to +0 asserts until N writes to
//! +4 acknowledge it; +8 reads the acknowledgements so far. Other reads
//! are 0, other writes ignored.

/// The size of the register window.
pub const SIZE: u64 = 0x1000;

#[derive(Default)]
pub struct IrqTest {
    /// Acknowledgements still needed before the line drops.
    owed: u64,
    acks: u64,
}

impl IrqTest {
    pub fn new() -> IrqTest {
        IrqTest::default()
    }

    /// A guest access at offset `off`; returns the value read (0 for
    /// writes).
    #[inline(always)]
    pub fn mmio(&mut self, off: u64, write: bool, value: u64) -> u64 {
        match (off, write) {
            (0, true) => {
                self.owed = value;
                self.acks = 0;
                0
            }
            (4, true) => {
                self.owed = self.owed.saturating_sub(1);
                self.acks += 1;
                0
            }
            (8, false) => self.acks,
            _ => 0,
        }
    }

    /// The level of its line.
    #[inline]
    pub fn level(&self) -> bool {
        self.owed > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asserted_until_acknowledged() {
        let mut t = IrqTest::new();
        assert!(!t.level());
        t.mmio(0, true, 2);
        assert!(t.level());
        t.mmio(4, true, 0);
        assert!(t.level());
        t.mmio(4, true, 0);
        assert!(!t.level());
        // Extra acknowledgements are counted, the line stays down.
        t.mmio(4, true, 0);
        assert_eq!((t.mmio(8, false, 0), t.level()), (3, false));
        assert_eq!(t.mmio(0, false, 0), 0);
        t.mmio(0, true, 1);
        assert_eq!(t.mmio(8, false, 0), 0, "a new assertion restarts the count");
    }
}
