//! Physical address ranges: [`Region`], and [`carve`], which gives the
//! device MMIO the host may map (the device tree's regions minus the pages
//! the hyp keeps for itself: those it emulates for the host).

use alloc::vec::Vec;

/// A physical address range `[base, base + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub base: u64,
    pub size: u64,
}

impl Region {
    pub const fn end(&self) -> u64 {
        self.base + self.size
    }
    pub const fn contains(&self, a: u64, size: u64) -> bool {
        a >= self.base && size <= self.size && a - self.base <= self.size - size
    }
}

/// `regions` with every byte of `holes` taken out; regions are split where
/// a hole falls inside them, empty pieces dropped, the order kept.
pub fn carve(regions: &[Region], holes: &[Region]) -> Vec<Region> {
    let mut out: Vec<Region> = regions.iter().copied().filter(|r| r.size != 0).collect();
    for h in holes.iter().filter(|h| h.size != 0) {
        let mut next = Vec::with_capacity(out.len() + 1);
        for r in out {
            if h.end() <= r.base || r.end() <= h.base {
                next.push(r);
                continue;
            }
            if r.base < h.base {
                next.push(Region { base: r.base, size: h.base - r.base });
            }
            if h.end() < r.end() {
                next.push(Region { base: h.end(), size: r.end() - h.end() });
            }
        }
        out = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(base: u64, size: u64) -> Region {
        Region { base, size }
    }

    #[test]
    fn carves_pages_out_of_a_region() {
        // QEMU virt's redistributor region with two redistributors: page 0
        // of each RD_base frame goes.
        let redist = r(0x080a_0000, 0xf6_0000);
        let holes = [r(0x080a_0000, 0x1000), r(0x080c_0000, 0x1000)];
        let got = carve(&[r(0x0800_0000, 0x1_0000), redist], &holes);
        assert_eq!(
            got,
            [r(0x0800_0000, 0x1_0000), r(0x080a_1000, 0x1_f000), r(0x080c_1000, 0xf3_f000)],
            "the distributor is untouched"
        );
        for h in holes {
            assert!(!got.iter().any(|g| g.base < h.end() && h.base < g.end()), "{h:?} still mappable");
        }
        let total: u64 = got.iter().map(|g| g.size).sum();
        assert_eq!(total, 0x1_0000 + 0xf6_0000 - 0x2000);
    }

    #[test]
    fn holes_covering_or_outside_regions() {
        assert_eq!(carve(&[r(0x1000, 0x1000)], &[r(0, 0x10_0000)]), []);
        assert_eq!(carve(&[r(0x1000, 0x1000)], &[r(0x2000, 0x1000), r(0, 0x1000)]), [r(0x1000, 0x1000)]);
        assert_eq!(carve(&[r(0x1000, 0x3000)], &[r(0x3000, 0x1000)]), [r(0x1000, 0x2000)]);
        assert_eq!(carve(&[r(0x1000, 0)], &[]), []);
    }
}
