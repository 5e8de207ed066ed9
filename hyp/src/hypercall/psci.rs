//! PSCI calls from the host (SMC, trapped): relayed to firmware when safe,
//! handled here otherwise. Calls that would start or resume a CPU at an
//! address of the host's choosing at EL2 are not relayed.

use hyp::abi::{arch, psci, smccc};

use crate::arch::aarch64::psci::smc;
use crate::arch::aarch64::trap::TrapFrame;
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
        psci::SYSTEM_RESET => {
            log::info!("host: PSCI SYSTEM_RESET");
            crate::arch::aarch64::psci::system_reset()
        }
        // CPU_ON/CPU_SUSPEND would enter EL2 at a host-chosen address: not
        // until the hyp initialises secondaries itself (SMP).
        psci::CPU_ON | psci::CPU_SUSPEND | psci::CPU_OFF => psci::DENIED,
        arch::SMCCC_VERSION => arch::VERSION_1_1 as i64,
        arch::SMCCC_ARCH_FEATURES => smccc::NOT_SUPPORTED,
        _ => smccc::NOT_SUPPORTED,
    };
    frame.x[0] = r as u64;
}
