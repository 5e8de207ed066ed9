//! The hypercall ABI shared by the hyp, the host shim and guest payloads.
//!
//! All calls are SMCCC fast calls over HVC (64-bit convention):
//! function ID in w0, arguments in x1..x7, results in x0..x3.
//! See docs/abi.md for the semantics of each call.
#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(test)]
extern crate alloc;

/// ESR_EL2 decoding: exception classes and abort syndromes.
pub mod esr;
/// The trace record every party decodes (TRACE_DRAIN's format).
pub mod trace;

/// SMCCC function ID: fast call, SMC64, owning entity, function number.
pub const fn smccc_fast64(owner: u32, number: u32) -> u32 {
    (1 << 31) | (1 << 30) | (owner << 24) | number
}
/// SMCCC 32-bit fast call.
pub const fn smccc_fast32(owner: u32, number: u32) -> u32 {
    (1 << 31) | (owner << 24) | number
}

pub const OWNER_ARCH: u32 = 0;
pub const OWNER_STANDARD: u32 = 4;
pub const OWNER_VENDOR_HYP: u32 = 6;

/// SMCCC return codes (x0).
pub mod smccc {
    pub const SUCCESS: i64 = 0;
    pub const NOT_SUPPORTED: i64 = -1;
    pub const NOT_REQUIRED: i64 = -2;
    pub const INVALID_PARAMETER: i64 = -3;
}

/// Arm architecture calls (owner 0).
pub mod arch {
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    /// SMCCC v1.1.
    pub const VERSION_1_1: u64 = 0x1_0001;
    /// Spectre-v2 (branch target injection) firmware mitigation.
    pub const ARCH_WORKAROUND_1: u32 = 0x8000_8000;
    /// Spectre-v4 (speculative store bypass) firmware mitigation.
    pub const ARCH_WORKAROUND_2: u32 = 0x8000_7fff;
    /// Spectre-BHB (branch history injection) firmware mitigation.
    pub const ARCH_WORKAROUND_3: u32 = 0x8000_3fff;
    /// `SMCCC_ARCH_FEATURES` of an `ARCH_WORKAROUND_1`/`_3`: this PE does
    /// not need the mitigation (SMCCC; the value KVM returns).
    pub const WORKAROUND_UNAFFECTED: i64 = 1;
}

/// PSCI (standard service, owner 4) function IDs.
pub mod psci {
    pub const VERSION: u32 = 0x8400_0000;
    pub const CPU_SUSPEND: u32 = 0xc400_0001;
    pub const CPU_OFF: u32 = 0x8400_0002;
    pub const CPU_ON: u32 = 0xc400_0003;
    pub const AFFINITY_INFO: u32 = 0xc400_0004;
    pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    pub const FEATURES: u32 = 0x8400_000a;
    pub const NOT_SUPPORTED: i64 = -1;
    pub const INVALID_PARAMETERS: i64 = -2;
    pub const DENIED: i64 = -3;
    pub const ALREADY_ON: i64 = -4;
    /// AFFINITY_INFO answers.
    pub const AFF_ON: i64 = 0;
    pub const AFF_OFF: i64 = 1;
    /// PSCI 1.1.
    pub const VERSION_1_1: u64 = 0x1_0001;
}

/// Guest-facing vendor hypervisor calls, numbered as Linux's
/// include/linux/arm-smccc.h (KVM/pKVM), so a Linux pKVM guest works.
pub mod guest {
    /// VENDOR_HYP_KVM_FEATURES: bitmap of implemented function numbers.
    pub const KVM_FEATURES: u32 = 0x8600_0000;
    pub const CALL_UID: u32 = 0x8600_ff01;
    pub const HYP_MEMINFO: u32 = 0xc600_0002;
    pub const MEM_SHARE: u32 = 0xc600_0003;
    pub const MEM_UNSHARE: u32 = 0xc600_0004;
    pub const MMIO_GUARD: u32 = 0xc600_0007;
    /// Android's number.
    pub const MEM_RELINQUISH: u32 = 0xc600_0009;
    /// KVM's UID 28b46fb6-2ec5-11e9-a9ca-4b564d003a74, as x0..x3.
    pub const KVM_UID: [u32; 4] = [0xb66f_b428, 0xe911_c52e, 0x564b_caa9, 0x743a_004d];
    /// Function numbers this hyp implements (bit n of x0: number n).
    pub const FEATURE_BITS: u64 = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 7) | (1 << 9);
}

/// Host → hyp calls (vendor hyp range, numbers from 0x100). Results: x0 =
/// SMCCC SUCCESS if the call exists (NOT_SUPPORTED otherwise); x1 = 0 or a
/// negative errno; x2.. extra results.
pub mod host {
    use super::*;
    const fn id(n: u32) -> u32 {
        smccc_fast64(OWNER_VENDOR_HYP, 0x100 + n)
    }
    /// x1 = ipa_bits (0: default) → x2 = VM handle.
    pub const VM_CREATE: u32 = id(0);
    /// x1 = handle → x2 = bytes reclaimed, x3 = pages of the VM's table
    /// memory ([`VM_TOPUP`]) given back; EBUSY while pinned pages remain.
    pub const VM_DESTROY: u32 = id(1);
    /// x1 = handle, x2 = entry PC, x3 = x0 for the vCPU, x4 = flags
    /// ([`VCPU_OFF`]) → x2 = vCPU index (its MPIDR Aff0). Only before the
    /// VM's first VCPU_RUN (EPERM after: the vCPU set of a protected VM is
    /// fixed once it has run).
    pub const VCPU_CREATE: u32 = id(2);
    /// VCPU_CREATE flag: the vCPU starts powered off; the guest starts it
    /// with PSCI CPU_ON (entry and x0 are the guest's then).
    pub const VCPU_OFF: u64 = 1;
    /// x1 = handle, x2 = vCPU, x3 = value for a pending MMIO read (or x3..x6
    /// = x0..x3 for a forwarded hypercall) →
    /// x2 = exit reason, x3.. = exit details (see [`exit`]).
    pub const VCPU_RUN: u32 = id(3);
    /// x1 = handle, x2 = host PA, x3 = guest IPA, x4 = size.
    pub const DONATE_GUEST: u32 = id(4);
    /// x1 = PA, x2 = size.
    pub const SHARE_HYP: u32 = id(5);
    pub const UNSHARE_HYP: u32 = id(6);
    /// x1 = PA, x2 = flags ([`PIN_EXCLUSIVE`]).
    pub const PIN: u32 = id(7);
    /// x1 = PA.
    pub const UNPIN: u32 = id(8);
    /// x1 = PA, x2 = size.
    pub const DONATE_HYP: u32 = id(9);
    /// x1 = PA, x2 = size: the hyp gives pages it was donated back.
    pub const RECLAIM_HYP: u32 = id(10);
    /// x1 = guest handle, x2 = IPA → x2 = state of that IPA for the host's
    /// tests: see [`page_state`].
    pub const PAGE_STATE: u32 = id(11);
    /// x1 = handle, x2 = vCPU, x3 = INTID (0..127), x4 = operation
    /// ([`irq`]), x5/x6 = its operands: the host's VMM tells the hyp what
    /// its emulated distributor decided for that vCPU's interrupt.
    pub const VCPU_IRQ: u32 = id(12);
    /// x1 = PA, x2 = pages (1..=[`PIN_RANGE_MAX`]), x3 = flags
    /// ([`PIN_EXCLUSIVE`]): a pin on each of the pages, all or none.
    pub const PIN_RANGE: u32 = id(13);
    /// x1 = PA, x2 = pages (1..=[`PIN_RANGE_MAX`]): drops one pin from each
    /// of the pages, all or none.
    pub const UNPIN_RANGE: u32 = id(14);
    /// Most pages one PIN_RANGE / UNPIN_RANGE takes (1 MiB).
    pub const PIN_RANGE_MAX: u64 = 256;
    /// x1 = handle, x2 = PA (page-aligned), x3 = pages: the host donates
    /// the pages to the VM's table memcache, from which the hyp takes every
    /// table of the VM's stage-2 (all or none). The pages come back, zeroed,
    /// at VM_DESTROY. How many a donation takes: [`donation_table_pages`];
    /// the most the memory can ever need: [`vm_table_pages`].
    pub const VM_TOPUP: u32 = id(15);

    /// The level of the root of a VM's stage-2 of `ipa_bits` (0: the
    /// default 40): 0 above 43 bits, 1 above 34, else 2.
    pub const fn root_level(ipa_bits: u8) -> u8 {
        let bits = if ipa_bits == 0 { 40 } else { ipa_bits };
        if bits > 43 {
            0
        } else if bits > 34 {
            1
        } else {
            2
        }
    }

    /// The table pages DONATE_GUEST of `[pa, pa + size)` at guest `ipa`
    /// takes from the memcache of a VM's stage-2 of `ipa_bits` (0: the
    /// default 40) where that stage-2 has no table over the range yet.
    /// The hyp maps the range with the largest leaves that fit: a 1 GiB
    /// block (level 1) or a 2 MiB block (level 2) wherever the range
    /// covers the whole block and PA and IPA are both aligned to its size,
    /// 4 KiB pages elsewhere; so it needs a table below each level-0
    /// entry (IPA bits over 43), level-1 entry (1 GiB) and level-2 entry
    /// (2 MiB) the range touches that is not one such block. A 1 GiB
    /// donation with PA and IPA 1 GiB-aligned takes none below a level-1
    /// root (1 below a level-0 root), with PA and IPA only 2 MiB-aligned
    /// one, with 4 KiB-aligned ones (as pages) 513. Where an earlier
    /// donation already built some of those tables, fewer; never more. A
    /// guest call that later needs a block split (MEM_SHARE,
    /// MEM_UNSHARE, MEM_RELINQUISH of a page in a block) exits
    /// [`exit::TOPUP`] with the pages it needs.
    pub const fn donation_table_pages(ipa_bits: u8, pa: u64, ipa: u64, size: u64) -> u64 {
        if size == 0 {
            return 0;
        }
        let last = ipa.saturating_add(size - 1);
        let mut n = 0;
        // A table at level `parent + 1` per entry of `parent` touched and
        // not a block.
        let mut parent = root_level(ipa_bits);
        while parent < 3 {
            let shift = 12 + 9 * (3 - parent as u32);
            let mask = (1u64 << shift) - 1;
            let mut tables = (last >> shift) - (ipa >> shift) + 1;
            if parent >= 1 && (pa ^ ipa) & mask == 0 {
                // Entries the range covers whole: [first, end).
                let first = (ipa >> shift) + (ipa & mask != 0) as u64;
                let end = (last >> shift) + (last & mask == mask) as u64;
                tables -= end.saturating_sub(first);
            }
            n += tables;
            parent += 1;
        }
        n
    }

    /// The table pages a VM's stage-2 of `ipa_bits` (0: the default 40)
    /// can ever need over `[ipa, ipa + size)`: one per 2 MiB, per 1 GiB and
    /// (IPA bits over 43) per 512 GiB region the range touches, so that
    /// the memory split down to pages still has its tables. Topping a VM
    /// up by this before each DONATE_GUEST means neither that donation
    /// nor anything the guest then does with the memory finds its
    /// memcache short (DONATE_GUEST ENOMEM, exit [`exit::TOPUP`]), at the
    /// price of pages a guest that never splits its blocks never uses
    /// (514 for 1 GiB, against [`donation_table_pages`]' 0 or 1). Regions
    /// shared by two donations are counted for each (the excess comes
    /// back at VM_DESTROY).
    pub const fn vm_table_pages(ipa_bits: u8, ipa: u64, size: u64) -> u64 {
        split_tables(root_level(ipa_bits), ipa, size)
    }

    /// The table pages below a root at `start_level` over `[ipa, ipa +
    /// size)` split down to 4 KiB pages: one per region of each level
    /// below the root that the range touches.
    pub const fn split_tables(start_level: u8, ipa: u64, size: u64) -> u64 {
        if size == 0 {
            return 0;
        }
        let last = ipa.saturating_add(size - 1);
        let mut n = 0;
        let mut level = start_level + 1;
        while level <= 3 {
            // A table at `level` covers one entry of the level above.
            let shift = 12 + 9 * (4 - level as u32);
            n += (last >> shift) - (ipa >> shift) + 1;
            level += 1;
        }
        n
    }
    /// x1 = handle, x2 = IPA, x3 = size (both 4 KiB multiples, in guest
    /// RAM): the guest's memory on demand. A translation fault there on an
    /// IPA with no memory is the exit [`exit::MEM_FAULT`] (the host
    /// donates and runs the vCPU again) instead of [`exit::GUEST_ABORT`].
    /// Before the VM's first VCPU_RUN only (EPERM after); a second call
    /// replaces the range.
    pub const MEM_ON_DEMAND: u32 = id(16);
    /// x1 = which stage-2 (0 host, else VM handle): prints it as ranges.
    pub const DUMP_S2: u32 = id(0x20);
    /// x1 = status: ends the system with this status (0 = pass).
    pub const SHUTDOWN: u32 = id(0x21);
    /// x1 = handle, x2 = IPA → x2 = table pages below the root, x3 = level
    /// of the mapping at IPA, x4 = its state.
    pub const VM_STATS: u32 = id(0x22);
    /// x1 = PA of a buffer shared with the hyp (SHARE_HYP), x2 = its size →
    /// x2 = trace records copied (64 bytes each), x3 = records lost so far.
    pub const TRACE_DRAIN: u32 = id(0x23);
    /// Does nothing: the cheapest round trip (benchmarks).
    pub const NOP: u32 = id(0x24);
    /// → x2 = live descriptor writes, x3 = TLB invalidations, x4 = table
    /// pages allocated, x5 = table pages freed, since boot (all stage-2s).
    pub const STATS: u32 = id(0x25);
    /// Runs the global invariant checker now → x2 = checks run since boot,
    /// x3 = leaves it walked, x4 = refused calls proven to have changed
    /// nothing (`hyp.check_invariants`). A violation stops the system
    /// (status 4).
    pub const CHECK_INVARIANTS: u32 = id(0x26);
    /// x1 = handle → x2 = a digest of the VM's stage-2 (IPA ranges and
    /// page states, not PAs), to compare end states of two runs.
    pub const VM_DIGEST: u32 = id(0x27);
    /// x1 = handle → x2 = successful MEM_SHARE calls, x3 = successful
    /// MEM_UNSHARE calls, x4 = successful MMIO_GUARD calls (repeats
    /// included), x5 = MMIO granules guarded now; the guest's own counts.
    pub const VM_CALLS: u32 = id(0x28);
    /// Drains the SMMU's event queue into the trace (kind `dma`) → x2 =
    /// events drained by this call, x3 = events since boot, x4 = the last
    /// event's stream ID, x5 = its input address, x6 = its event ID | 1 << 8
    /// if it was a read; ENOENT without an SMMU.
    pub const DMA_EVENTS: u32 = id(0x29);

    /// Operations of [`VCPU_IRQ`] (x4).
    pub mod irq {
        /// x5 = 1 enabled / 0 disabled, x6 = priority (0..255, lower is more urgent).
        pub const CONFIGURE: u64 = 0;
        /// x5 = 1 asserts / 0 deasserts a level-sensitive line: pending while
        /// asserted, injected again after the guest deactivates it.
        pub const LINE: u64 = 1;
        /// One edge: pending once (SGIs, edge-triggered interrupts).
        pub const PULSE: u64 = 2;
        /// x3 = first INTID of a block of 32 (0, 32, 64, 96), x5 = x6 = 0 →
        /// x2 = pending bits, x3 = active bits of the block (as of the
        /// vCPU's last exit while it runs).
        pub const STATE: u64 = 3;
        /// x5 = what to clear: 1 pending, 2 active, 3 both; x6 = 0. EBUSY
        /// while the vCPU runs (its list registers are live on a CPU).
        pub const CLEAR: u64 = 4;
        /// INTIDs a vCPU has: SGIs 0-15, PPIs 16-31, SPIs 32-127.
        pub const NR_INTIDS: u64 = 128;
        /// The virtual timer's PPI: its line is the hyp's.
        pub const VTIMER: u64 = 27;
    }

    pub const PIN_SHARED: u64 = 0;
    pub const PIN_EXCLUSIVE: u64 = 1;

    /// Exit reasons returned by VCPU_RUN in x2.
    pub mod exit {
        /// MMIO access: x3 = IPA, x4 = size, x5 = 1 write / 0 read, x6 = value.
        pub const MMIO: u64 = 1;
        /// A hypercall for the host: x3 = function ID, x4.. = x1..
        pub const HYPERCALL: u64 = 2;
        /// PSCI SYSTEM_OFF from the guest.
        pub const SYSTEM_OFF: u64 = 3;
        /// PSCI SYSTEM_RESET from the guest.
        pub const SYSTEM_RESET: u64 = 4;
        /// The guest touched an IPA with no memory: x3 = IPA, x4 = ESR.
        /// An abort is injected into the guest when it runs again.
        pub const GUEST_ABORT: u64 = 5;
        /// MEM_UNSHARE waits for host pins on x3 = IPA (x4 = PA) to drop.
        pub const UNSHARE_PENDING: u64 = 6;
        /// A physical interrupt arrived while the guest ran, or its time
        /// slice ran out: x3 = 1 if the hyp's preemption timer fired (the
        /// guest had the CPU for a whole slice), 0 for another interrupt.
        pub const IRQ: u64 = 7;
        /// The guest caused an SError (an asynchronous external abort):
        /// x3 = ESR_EL2 of the SError, x4 = PC. The vCPU runs no more (EPERM);
        /// the rest of the machine keeps running.
        pub const GUEST_FATAL: u64 = 9;
        /// The guest waits for an interrupt (WFI, or WFE: x4 = 1) and none
        /// is deliverable: x3 = its virtual timer's deadline (CNTVCT ticks;
        /// u64::MAX if the timer cannot fire). Run it again when an
        /// interrupt is due; it continues after the instruction.
        pub const WFI: u64 = 10;
        /// The guest started vCPU x3 with PSCI CPU_ON (its entry and x0 set
        /// by the hyp): the host may run it now.
        pub const CPU_ON: u64 = 11;
        /// The guest powered this vCPU off (PSCI CPU_OFF): VCPU_RUN is
        /// EPERM until a CPU_ON starts it again.
        pub const CPU_OFF: u64 = 12;
        /// The guest sent an SGI (ICC_SGI1R_EL1): it is pending on the
        /// vCPUs of mask x3 (bit n = vCPU n, the sender left out); run
        /// the idle ones.
        pub const SGI: u64 = 13;
        /// A guest call needs table pages the VM's memcache does not have:
        /// x3 = pages it needs at least. Top the VM up (VM_TOPUP) and run
        /// it again: the guest's call is re-executed.
        pub const TOPUP: u64 = 14;
        /// A stage-2 translation fault in the range the host declared with
        /// [`super::MEM_ON_DEMAND`] on an IPA with no memory yet: x3 = IPA,
        /// x4/x5 = IPA and size the hyp suggests to donate (the 2 MiB
        /// block around x3, clipped to the range, while nothing of it is
        /// mapped; else x3's page), x6 = ESR. Nothing is injected: the
        /// faulting instruction runs again on the next VCPU_RUN (the same
        /// exit if x3 still has no memory).
        pub const MEM_FAULT: u64 = 15;
    }

    /// Answers of PAGE_STATE (x2; with x2 = 1 in the call, x6 = 1 when the
    /// host's DMA view maps the page).
    pub mod page_state {
        pub const NONE: u64 = 0;
        pub const OWNED: u64 = 1;
        pub const SHARED_OWNED: u64 = 2;
        pub const SHARED_BORROWED: u64 = 3;
        /// PAGE_STATE x5: who holds a page the host has not mapped (state
        /// NONE): the host itself (not faulted in yet), the hyp's own
        /// memory, a page donated to the hyp, a guest.
        pub const HELD_BY_HOST: u64 = 0;
        pub const HELD_BY_HYP: u64 = 1;
        pub const HELD_BY_HYP_DONATED: u64 = 2;
        pub const HELD_BY_GUEST: u64 = 3;
        /// Donated for a VM's table memory (VM_TOPUP); x4 = the VM.
        pub const HELD_BY_HYP_FOR_VM: u64 = 4;
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const K4: u64 = 4096;
        const M2: u64 = 2 << 20;
        const G1: u64 = 1 << 30;

        #[test]
        fn a_donation_takes_the_tables_of_its_blocks() {
            // 1 GiB: a block below a level-1 root, under a level-1 table
            // below a level-0 one; 2 MiB blocks in a level-2 table; pages.
            assert_eq!(donation_table_pages(0, G1, G1, G1), 0);
            assert_eq!(donation_table_pages(48, G1, G1, G1), 1);
            assert_eq!(donation_table_pages(40, 3 * G1 + M2, G1, G1), 1);
            assert_eq!(donation_table_pages(40, G1 + K4, G1, G1), 513);
            // The root's own level holds 2 MiB blocks below 35 bits.
            assert_eq!(donation_table_pages(34, M2, G1, 4 * M2), 0);
            assert_eq!(donation_table_pages(34, M2 + K4, G1, 4 * M2), 4);
            // A page; the ends of a range that is not whole blocks.
            assert_eq!(donation_table_pages(40, K4, G1, K4), 2);
            assert_eq!(donation_table_pages(40, G1 + M2 - K4, G1 + M2 - K4, M2 + 2 * K4), 3);
            assert_eq!(donation_table_pages(40, G1 - M2, G1 - M2, G1 + 2 * M2), 2);
            assert_eq!(donation_table_pages(48, G1 - M2, G1 - M2, G1 + 2 * M2), 3);
            assert_eq!(donation_table_pages(40, 0, G1, 0), 0);
            // Never more than the memory split down to pages.
            for (pa, ipa, size) in [(K4, G1, G1), (G1 - K4, G1 - M2, 3 * G1 + 5 * K4), (0, u64::MAX - K4 + 1, K4)] {
                for bits in [0, 34, 40, 44, 48] {
                    assert!(donation_table_pages(bits, pa, ipa, size) <= vm_table_pages(bits, ipa, size));
                }
            }
        }
    }
}

/// Linux errno values used in host results.
pub mod errno {
    pub const EPERM: i64 = 1;
    pub const ENOENT: i64 = 2;
    pub const ENOMEM: i64 = 12;
    pub const EBUSY: i64 = 16;
    pub const EINVAL: i64 = 22;
    pub const E2BIG: i64 = 7;
    pub const ENOSPC: i64 = 28;
}

/// The initrd QEMU loads for the hyp: a header, the host's arm64 Image, and
/// the rest (the host's own initrd, e.g. guest images).
pub mod bundle {
    pub const MAGIC: &[u8; 8] = b"HYPBNDL1";
    /// Header: magic, then u64 LE host_off, host_len, rest_off, rest_len.
    pub const HEADER_LEN: usize = 40;
}

/// The host shim's initrd: the guests to run.
/// Header: magic, u64 LE count; then per guest 96 bytes: u64 mem_size,
/// u64 image_off, u64 image_len, u64 initrd_off, u64 initrd_len, u64
/// disk_off, u64 disk_len, u32 vCPUs (1..=8), u32 kind, 32 bytes
/// NUL-padded name, u64 cmdline_off, u64 cmdline_len. Offsets are from the
/// start of the bundle; an ELF guest has no initrd, disk or command line
/// (their offsets and lengths are 0); a Linux guest's command line is
/// UTF-8 text appended to the VMM's own (at most `MAX_CMDLINE`
/// bytes).
pub mod guests {
    pub const MAGIC: &[u8; 8] = b"GUESTS04";
    /// vCPUs a guest may have.
    pub const MAX_VCPUS: u32 = 8;
    pub const ENTRY_LEN: usize = 112;
    /// The longest command line a Linux guest's entry may add.
    pub const MAX_CMDLINE: usize = 1024;
    pub const HEADER_LEN: usize = 16;
    pub const NAME_LEN: usize = 32;
    /// An AArch64 ELF loaded at its physical addresses.
    pub const KIND_ELF: u32 = 0;
    /// An arm64 Linux Image, with its initramfs and a disk image.
    pub const KIND_LINUX: u32 = 1;
}

/// The arm64 Linux Image header (Linux Documentation/arch/arm64/booting.rst)
/// and where a protected Linux guest's pieces go in its RAM.
pub mod arm64_image {
    /// Offset and value of the header's magic number.
    pub const MAGIC_OFFSET: usize = 0x38;
    pub const MAGIC: &[u8; 4] = b"ARM\x64";
    pub const HEADER_LEN: usize = 64;
    const SZ_2M: u64 = 2 << 20;
    const SZ_4K: u64 = 4096;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Header {
        /// Where the Image goes above a 2 MiB-aligned base.
        pub text_offset: u64,
        /// Bytes the kernel occupies from its start, BSS included.
        pub image_size: u64,
        pub flags: u64,
    }

    fn u64_at(b: &[u8], o: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(w)
    }

    /// Checks and reads the header; the error says what is wrong.
    pub fn parse(img: &[u8]) -> Result<Header, &'static str> {
        if img.len() < HEADER_LEN {
            return Err("shorter than the 64-byte arm64 Image header");
        }
        if &img[MAGIC_OFFSET..MAGIC_OFFSET + 4] != MAGIC {
            return Err("no arm64 Image magic (ARM\\x64 at offset 0x38)");
        }
        let h = Header { text_offset: u64_at(img, 8), image_size: u64_at(img, 16), flags: u64_at(img, 24) };
        if h.image_size == 0 {
            return Err("image_size is 0 (a kernel before 3.17 gives no size)");
        }
        if h.flags & 1 != 0 {
            return Err("a big-endian kernel");
        }
        if h.image_size < img.len() as u64 {
            return Err("image_size is smaller than the Image file");
        }
        if h.text_offset >= SZ_2M || !h.text_offset.is_multiple_of(SZ_4K) {
            return Err("text_offset is not a 4 KiB multiple below 2 MiB");
        }
        Ok(h)
    }

    /// Offsets from the base of guest RAM of a Linux guest's pieces.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Layout {
        /// The DTB, at the base of RAM (its window is `dtb_window` bytes).
        pub dtb: u64,
        /// The Image: the first 2 MiB boundary above the DTB window, plus
        /// text_offset; the kernel occupies image_size bytes from here.
        pub kernel: u64,
        /// The initramfs, page-aligned, right below the DMA pool.
        pub initrd: u64,
        /// The restricted DMA pool, 2 MiB-aligned at the top of RAM.
        pub pool: u64,
    }

    /// Places the DTB, kernel, initramfs and a DMA pool of `pool` bytes in
    /// `mem` bytes of RAM; None if they do not fit. Every sum is checked.
    pub fn layout(mem: u64, dtb_window: u64, h: &Header, initrd_len: u64, pool: u64) -> Option<Layout> {
        let kernel = dtb_window.checked_next_multiple_of(SZ_2M)?.checked_add(h.text_offset)?;
        let kernel_end = kernel.checked_add(h.image_size)?;
        let pool_at = mem.checked_sub(pool)? / SZ_2M * SZ_2M;
        let initrd = pool_at.checked_sub(initrd_len.checked_next_multiple_of(SZ_4K)?)?;
        (kernel_end <= initrd).then_some(Layout { dtb: 0, kernel, initrd, pool: pool_at })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn image(text_offset: u64, image_size: u64, flags: u64, len: usize) -> alloc::vec::Vec<u8> {
            let mut v = alloc::vec![0u8; len];
            v[8..16].copy_from_slice(&text_offset.to_le_bytes());
            v[16..24].copy_from_slice(&image_size.to_le_bytes());
            v[24..32].copy_from_slice(&flags.to_le_bytes());
            v[MAGIC_OFFSET..MAGIC_OFFSET + 4].copy_from_slice(MAGIC);
            v
        }

        #[test]
        fn header_checks() {
            let ok = image(0, 0x50_0000, 0xa, 4096);
            assert_eq!(parse(&ok), Ok(Header { text_offset: 0, image_size: 0x50_0000, flags: 0xa }));
            assert_eq!(parse(&ok[..63]), Err("shorter than the 64-byte arm64 Image header"));
            let mut bad = ok.clone();
            bad[MAGIC_OFFSET] = b'X';
            assert_eq!(parse(&bad), Err("no arm64 Image magic (ARM\\x64 at offset 0x38)"));
            assert!(parse(&image(0, 0, 0, 4096)).unwrap_err().contains("image_size is 0"));
            assert_eq!(parse(&image(0, 8192, 1, 4096)), Err("a big-endian kernel"));
            assert_eq!(parse(&image(0, 100, 0, 4096)), Err("image_size is smaller than the Image file"));
            assert!(parse(&image(0x20_0000, 8192, 0, 4096)).is_err());
            assert!(parse(&image(0x801, 8192, 0, 4096)).is_err());
            assert!(parse(&image(0x8_0000, 8192, 0, 4096)).is_ok());
        }

        #[test]
        fn layout_places_and_refuses() {
            let h = Header { text_offset: 0x1000, image_size: 0x50_0000, flags: 0 };
            let l = layout(128 << 20, 0x1_0000, &h, 0x12_3456, 4 << 20).unwrap();
            assert_eq!(l.kernel, 0x20_1000);
            assert_eq!(l.pool, (128 - 4) << 20);
            assert_eq!(l.initrd, l.pool - 0x12_4000);
            assert!(l.kernel + h.image_size <= l.initrd);
            // An odd memory size: the pool still 2 MiB-aligned, inside RAM.
            let l = layout((16 << 20) + 0x3000, 0x1_0000, &h, 4096, 4 << 20).unwrap();
            assert_eq!(l.pool, 12 << 20);
            // Does not fit; sizes that wrap.
            assert_eq!(layout(8 << 20, 0x1_0000, &h, 4 << 20, 4 << 20), None);
            assert_eq!(layout(2 << 20, 0x1_0000, &h, 0, 4 << 20), None);
            assert_eq!(layout(128 << 20, 0x1_0000, &h, u64::MAX - 10, 4 << 20), None);
            let huge = Header { text_offset: 0, image_size: u64::MAX - 0x10_0000, flags: 0 };
            assert_eq!(layout(128 << 20, 0x1_0000, &huge, 0, 4 << 20), None);
        }
    }
}

/// Host services: calls a guest makes to the host's VMM (function IDs
/// 0xC6000200..=0xC60002FF are forwarded by the hyp as HYPERCALL exits).
/// The host shim implements these for the guest test payloads; x0 (and x1)
/// of the reply go back to the guest.
pub mod services {
    /// x1 = IPA → x0 = 0 and x1 = the value the host read, or x0 = 1 if the
    /// host's access aborted.
    pub const HOST_READ: u32 = 0xc600_0200;
    /// x1 = IPA, x2 = value → x0 = 0, or 1 if the host's access aborted.
    pub const HOST_WRITE: u32 = 0xc600_0201;
    /// x1 = IPA, x2 = 1 exclusive / 0 shared / [`PIN_FOREIGN`] → x0 = 0 or
    /// -errno.
    pub const HOST_PIN: u32 = 0xc600_0202;
    /// HOST_PIN x2: a shared pin the host takes outside its VMM's
    /// bookkeeping, as another part of the host would (the VMM drops it too
    /// when the guest's MEM_UNSHARE waits on it).
    pub const PIN_FOREIGN: u64 = 2;
    /// x1 = IPA → x0 = 0 or -errno.
    pub const HOST_UNPIN: u32 = 0xc600_0203;
    /// x1 = IPA → x0 = table pages of the guest's stage-2, x1 = mapping level.
    pub const HOST_S2_INFO: u32 = 0xc600_0204;
    /// → x0 = exits the host has seen: UNSHARE_PENDING count, x1 = GUEST_ABORT count.
    pub const HOST_EXIT_COUNTS: u32 = 0xc600_0205;
    /// x1 = passed, x2 = failed, x3 = bytes relinquished: the guest's final tally.
    pub const HOST_RESULT: u32 = 0xc600_0206;
    /// x1 = IPA: the host tries to donate the page behind it to another VM
    /// → x0 = 0 or -errno.
    pub const HOST_DONATE_ELSEWHERE: u32 = 0xc600_0207;
    /// x1 = IPA: print the host's and this guest's stage-2 around it.
    pub const HOST_DUMP: u32 = 0xc600_0208;
    /// x1 = IPA of a page shared with the host: the host benchmarks
    /// PIN/UNPIN on it (prints `[bench]` lines).
    pub const BENCH_PIN: u32 = 0xc600_0209;
    /// → x0..x3 = the hyp's software counters (host STATS call).
    pub const HOST_COUNTERS: u32 = 0xc600_020a;
    /// x1 = calls made so far: the guest gives the CPU back to the host
    /// (VCPU_RUN returns); it continues on the next run.
    pub const YIELD: u32 = 0xc600_020b;
    /// → x0 = WFI/WFE exits, x1 = IRQ exits the host has seen for this
    /// VM, x2 = VCPU_IRQ calls the hyp refused (the VMM's bugs).
    pub const HOST_IRQ_COUNTS: u32 = 0xc600_020c;
    /// x1 = virtio slot, x2 = 0 → x0 = requests served, x1 = requests
    /// refused for memory not shared, x2 = bad requests, x3 = ring errors
    /// (DEVICE_NEEDS_RESET); x2 = 1 → x0 = bad register accesses, x1 =
    /// hypercalls the VMM's devices made to reach guest memory. x0 =
    /// -EINVAL (as u64) if there is no such slot or group.
    pub const HOST_VIRTIO_STATS: u32 = 0xc600_020d;

    /// The disk of the `virtio` scenario: byte `off` (0..512) of sector
    /// `sector`, derived from both, so a read of the wrong sector or at the
    /// wrong offset cannot match.
    pub const fn virtio_disk_byte(sector: u64, off: u64) -> u8 {
        ((sector.wrapping_mul(0x9e37_79b9) >> 7) ^ sector ^ off.wrapping_mul(7)) as u8
    }

    /// x1 = IPA, x2 = a byte: the host has its `edu` PCI device DMA 8
    /// bytes of that byte to the page behind the IPA (offset 0) → x0 = 0 if
    /// the DMA landed (the host read the bytes back, or no SMMU event came),
    /// 1 if the SMMU blocked it (an event names the device's stream and the
    /// page's address), 2 if neither, -19 (ENODEV) without an `edu` device.
    pub const HOST_DMA: u32 = 0xc600_020e;

    /// x1..x3 = the result of the last command (`remote`): x0 = the next
    /// command, x1..x3 its operands. With `test=remote` the guest obeys a
    /// test program of the host (the Linux host's memory-file test).
    pub const HOST_NEXT: u32 = 0xc600_020f;

    /// The commands of [`HOST_NEXT`] and what each returns as (status,
    /// value, extra) in the next call's x1..x3.
    pub mod remote {
        /// Power off (no result).
        pub const OFF: u64 = 0;
        /// x1 = IPA: MEM_SHARE → status = its x0.
        pub const SHARE: u64 = 1;
        /// x1 = IPA: MEM_UNSHARE → status = its x0, value = virtual-counter
        /// ticks from the call to its return, extra = the counter's frequency.
        pub const UNSHARE: u64 = 2;
        /// x1 = IPA → value = the guest's load of the u64 there.
        pub const READ: u64 = 3;
        /// x1 = IPA, x2 = value: the guest stores it.
        pub const WRITE: u64 = 4;
        /// x1 = IPA, x2 = length → value = [`fnv1a`] of those bytes.
        pub const DIGEST: u64 = 5;
        /// x1 = IPA: vCPU 1 starts storing an incrementing count there
        /// (status = CPU_ON's result) until [`STOP`].
        pub const COUNTER: u64 = 6;
        /// vCPU 1 stops counting and powers off → value = its last count.
        pub const STOP: u64 = 7;
        /// x1 = IPA: MEM_RELINQUISH → status = its x0.
        pub const RELINQUISH: u64 = 8;
        /// The status of a command the guest does not know.
        pub const UNKNOWN: u64 = u64::MAX;

        /// FNV-1a (64-bit) of `bytes`.
        pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
            bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
        }
    }
}
