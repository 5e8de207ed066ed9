//! A hostile host: bad and malicious arguments to every host call. Each must
//! be refused with the exact error and change nothing.

use el1_rt::println;
use hyp_abi::errno::*;
use hyp_abi::host as abi;

use crate::guests::GuestImage;
use crate::hyp::{self, call, errno};
use crate::mem::HostMem;
use crate::report::{expect_abort, read64, Report};

pub fn run(hm: &mut HostMem, _images: &[GuestImage], r: &mut Report) {
    let page = hm.alloc(2 << 20, 2 << 20).expect("host memory");
    let hyp_base = 0x4000_0000u64;
    let h = match hyp::vm_create() {
        Ok(h) => h,
        Err(e) => {
            println!("[host] vm_create: {e}");
            r.fail("vm_create");
            return;
        }
    };
    r.expect(hyp::donate(h, page + 1, 0x4000_0000, 4096), -EINVAL, "donate: unaligned PA is EINVAL");
    r.expect(hyp::donate(h, page, 0x4000_0001, 4096), -EINVAL, "donate: unaligned IPA is EINVAL");
    r.expect(hyp::donate(h, page, 0x4000_0000, 100), -EINVAL, "donate: unaligned size is EINVAL");
    r.expect(hyp::donate(h, page, 0x4000_0000, 0), -EINVAL, "donate: empty range is EINVAL");
    r.expect(hyp::donate(h, !0xfff_u64, 0x4000_0000, 0x2000), -EINVAL, "donate: wrapping PA range is EINVAL");
    r.expect(hyp::donate(h, page, !0xfff_u64, 0x2000), -EINVAL, "donate: wrapping IPA range is EINVAL");
    r.expect(hyp::donate(h, page, 1 << 40, 4096), -EINVAL, "donate: IPA beyond the guest's space is EINVAL");
    r.expect(hyp::donate(h, 0x0900_0000, 0x4000_0000, 4096), -EINVAL, "donate: device memory is EINVAL");
    r.expect(hyp::donate(h, hyp_base + 0x10_0000, 0x4000_0000, 4096), -EPERM, "donate: hyp memory is EPERM");
    r.expect(hyp::donate(h, page, 0x4000_0000, 1 << 62), -EINVAL, "donate: huge range is EINVAL");
    r.expect(hyp::donate(99, page, 0x4000_0000, 4096), -ENOENT, "donate: unknown VM is ENOENT");
    r.expect(hyp::donate(h, page, 0x4000_0000, 4096), 0, "donate: a good page");
    r.expect(hyp::donate(h, page, 0x4000_1000, 4096), -EPERM, "donate: the same page twice is EPERM");
    r.expect(hyp::donate(h, page + 0x1000, 0x4000_0000, 4096), -EPERM, "donate: onto an IPA already backed is EPERM");
    r.check(
        expect_abort(|| {
            read64(page);
        })
        .is_some(),
        "host lost access to the donated page",
    );
    r.expect(hyp::pin(page, false), -EPERM, "pin: a guest-private page is EPERM");
    r.expect(hyp::pin(page + 0x2000, false), -EPERM, "pin: a host-owned page is EPERM");
    r.expect(hyp::pin(page + 1, false), -EINVAL, "pin: unaligned is EINVAL");
    r.expect(errno(call(abi::PIN, [page, 7, 0, 0, 0, 0])), -EINVAL, "pin: unknown flags is EINVAL");
    r.expect(hyp::unpin(page + 0x2000), -EINVAL, "unpin: a page with no pin is EINVAL");
    r.expect(errno(call(abi::SHARE_HYP, [hyp_base, 4096, 0, 0, 0, 0])), -EPERM, "share_hyp: hyp memory is EPERM");
    r.expect(errno(call(abi::SHARE_HYP, [page, 4096, 0, 0, 0, 0])), -EPERM, "share_hyp: a guest's page is EPERM");
    r.expect(errno(call(abi::SHARE_HYP, [page + 0x3000, 4096, 0, 0, 0, 0])), 0, "share_hyp: a host page");
    r.expect(errno(call(abi::SHARE_HYP, [page + 0x3000, 4096, 0, 0, 0, 0])), -EPERM, "share_hyp: twice is EPERM");
    r.expect(
        errno(call(abi::DONATE_GUEST, [h, page + 0x3000, 0x4000_2000, 4096, 0, 0])),
        -EPERM,
        "donate: a page shared with the hyp is EPERM",
    );
    r.expect(errno(call(abi::UNSHARE_HYP, [page + 0x3000, 4096, 0, 0, 0, 0])), 0, "unshare_hyp");
    r.expect(
        errno(call(abi::UNSHARE_HYP, [page + 0x3000, 4096, 0, 0, 0, 0])),
        -EPERM,
        "unshare_hyp: not shared is EPERM",
    );
    r.expect(errno(call(abi::DONATE_HYP, [page + 0x4000, 0x2000, 0, 0, 0, 0])), 0, "donate_hyp: two host pages");
    r.check(
        expect_abort(|| {
            read64(page + 0x4000);
        })
        .is_some(),
        "host lost access to pages donated to the hyp",
    );
    r.expect(
        errno(call(abi::RECLAIM_HYP, [page + 0x4000, 0x3000, 0, 0, 0, 0])),
        -EPERM,
        "reclaim_hyp: range not all hyp's is EPERM",
    );
    r.expect(errno(call(abi::RECLAIM_HYP, [page + 0x4000, 0x2000, 0, 0, 0, 0])), 0, "reclaim_hyp: back to the host");
    r.check(
        expect_abort(|| {
            read64(page + 0x4000);
        })
        .is_none(),
        "host can use pages the hyp gave back",
    );
    r.expect(errno(call(0xc600_01ff, [0; 6])), -1, "unknown host call is NOT_SUPPORTED");
    r.expect(errno(call(abi::VCPU_RUN, [h, 0, 0, 0, 0, 0])), -ENOENT, "vcpu_run: no such vCPU is ENOENT");
    r.expect(errno(call(abi::VCPU_RUN, [h, 1 << 40, 0, 0, 0, 0])), -ENOENT, "vcpu_run: huge vCPU index is ENOENT");
    let destroyed = hyp::vm_destroy(h);
    r.check(destroyed == Ok(4096), "vm_destroy reclaims the one donated page");
    r.expect(errno(call(abi::VCPU_RUN, [h, 0, 0, 0, 0, 0])), -ENOENT, "vcpu_run: a destroyed VM is ENOENT");
    r.expect(hyp::vm_destroy(h).err().unwrap_or(0), -ENOENT, "vm_destroy: twice is ENOENT");
    r.check(
        expect_abort(|| {
            read64(page);
        })
        .is_none(),
        "the page is the host's again after destroy",
    );
    hm.free(page, 2 << 20);
}
