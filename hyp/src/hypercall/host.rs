//! The host's hypercalls (HVC from EL1, vendor-hyp range): ownership
//! transitions, VM lifecycle, pins. Results follow the ABI in hyp-abi:
//! x0 = SMCCC status of the call itself, x1 = 0 or -errno, x2.. results.

use hyp::abi::{host as abi, smccc};
use hyp::mm::mem_protect;
use hyp::mm::Error;

use crate::arch::aarch64::tlb::HypEnv;
use crate::arch::aarch64::trap::TrapFrame;
use crate::{mem, vm, Status};

pub fn handle(frame: &mut TrapFrame) {
    let fid = frame.x[0] as u32;
    let a = [frame.x[1], frame.x[2], frame.x[3], frame.x[4]];
    let mut env = HypEnv;
    let r: Result<(), Error> = match fid {
        abi::SHARE_HYP | abi::UNSHARE_HYP | abi::DONATE_HYP | abi::RECLAIM_HYP => {
            let mut host = mem::host();
            let mut hyp = mem::hyp_lock(&host);
            let f = match fid {
                abi::SHARE_HYP => mem_protect::host_share_hyp::<HypEnv>,
                abi::UNSHARE_HYP => mem_protect::host_unshare_hyp::<HypEnv>,
                abi::DONATE_HYP => mem_protect::host_donate_hyp::<HypEnv>,
                _ => mem_protect::hyp_donate_host::<HypEnv>,
            };
            f(&mut env, &mut host, &mut hyp, a[0], a[1])
        }
        abi::PIN => {
            if a[1] > abi::PIN_EXCLUSIVE {
                Err(Error::Inval)
            } else {
                mem::host().pin(&mut env, a[0], a[1] == abi::PIN_EXCLUSIVE)
            }
        }
        abi::UNPIN => mem::host().unpin(a[0]),
        abi::SHUTDOWN => {
            log::info!("host: shutdown requested, status {}", a[0]);
            crate::shutdown(if a[0] == 0 {
                Status::Ok
            } else {
                Status::HostFailed
            })
        }
        abi::DUMP_S2 => vm::dump_s2(a[0]),
        abi::VCPU_RUN => match vm::run::vcpu_run(frame) {
            // The frame is now the guest's: leave it alone.
            Ok(()) => return,
            Err(e) => Err(e),
        },
        _ => match vm::host_call(fid, frame) {
            Some(r) => r,
            None => {
                frame.x[0] = smccc::NOT_SUPPORTED as u64;
                return;
            }
        },
    };
    frame.x[0] = smccc::SUCCESS as u64;
    frame.x[1] = super::errno(r);
}
