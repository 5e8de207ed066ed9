//! PSCI calls from the host (SMC, trapped): relayed to firmware when safe,
//! handled here otherwise. Calls that would start or resume a CPU at an
//! address of the host's choosing at EL2 are not relayed.

use hyp_abi::{arch, psci, smccc};

use crate::arch::aarch64::frame::TrapFrame;
use crate::arch::aarch64::psci::smc;
use crate::Status;

pub fn handle_host_smc(frame: &mut TrapFrame) {
    let fid = frame.x[0] as u32;
    let r: i64 = match fid {
        psci::VERSION | psci::AFFINITY_INFO | psci::MIGRATE_INFO_TYPE => {
            smc(fid, frame.x[1], frame.x[2], frame.x[3])[0] as i64
        }
        psci::FEATURES => match frame.x[1] as u32 {
            psci::VERSION
            | psci::FEATURES
            | psci::SYSTEM_OFF
            | psci::SYSTEM_RESET
            | psci::AFFINITY_INFO
            | psci::MIGRATE_INFO_TYPE => smc(fid, frame.x[1], 0, 0)[0] as i64,
            _ => psci::NOT_SUPPORTED,
        },
        psci::SYSTEM_OFF => {
            log::info!("host: PSCI SYSTEM_OFF");
            crate::shutdown(Status::Ok)
        }
        // A reset would restart the machine under the host's feet, hyp
        // included: the system ends here, reported as a host reset.
        psci::SYSTEM_RESET => {
            log::info!("host: PSCI SYSTEM_RESET (the hyp powers off instead)");
            crate::shutdown(Status::HostReset)
        }
        psci::CPU_ON => cpu_on(frame.x[1], frame.x[2], frame.x[3]),
        // Powers the calling CPU down; it comes back only through CPU_ON.
        psci::CPU_OFF => smc(fid, 0, 0, 0)[0] as i64,
        // Would resume at EL2 at a host-chosen address.
        psci::CPU_SUSPEND => psci::DENIED,
        arch::SMCCC_VERSION => arch::VERSION_1_1 as i64,
        // The host is told what a guest is (`hypercall::guest`): the hyp
        // relays none of the Spectre workaround calls to firmware.
        arch::SMCCC_ARCH_FEATURES => {
            crate::arch::aarch64::idregs::workaround_answer(frame.x[1] as u32).unwrap_or(smccc::NOT_SUPPORTED)
        }
        _ => smccc::NOT_SUPPORTED,
    };
    frame.x[0] = r as u64;
}

/// PSCI INVALID_ADDRESS.
const INVALID_ADDRESS: i64 = -9;

extern "C" {
    fn secondary_entry();
}

/// CPU_ON for the host: the CPU starts in the hyp (which sets up EL2 on it)
/// and only then enters the host at `entry`, at EL1. The entry point must be
/// host-owned RAM.
fn cpu_on(target: u64, entry: u64, context: u64) -> i64 {
    // Only a CPU of the logical map (never the boot CPU's twin in Aff0).
    let Some(idx) = crate::percpu::cpu_map().index_of(target) else {
        return psci::INVALID_PARAMETERS;
    };
    let host = crate::owners::host();
    let page = entry & !0xfff;
    let page = hyp_core::mm::mem_protect::Pa(page);
    let owned = host.check_ram(page, 4096).is_ok()
        && matches!(
            host.leaf_at(&mut crate::hyp_env::HypEnv, page),
            Ok(hyp_core::mm::prot::Leaf::Invalid(hyp_core::mm::prot::Owner::None))
                | Ok(hyp_core::mm::prot::Leaf::Mapped { state: hyp_core::mm::prot::PageState::Owned, .. })
        );
    drop(host);
    if !owned || entry & 3 != 0 {
        return INVALID_ADDRESS;
    }
    let cpu = crate::percpu::cpu(idx);
    cpu.host_entry = entry;
    cpu.host_context = context;
    // The hyp's identity map makes the symbol's address its PA.
    smc(psci::CPU_ON, target, secondary_entry as *const () as u64, idx as u64)[0] as i64
}
