//! The daemon's ioctl payload engine (FUSE_IOCTL_RETRY): one round of an argsz-style, fixed or
//! string argument, whose `in_data` and `arg` an unprivileged caller controls. Never panics, and
//! never asks the kernel for more than the per-direction limit or hands out more than it got.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_shim_cuse::device::{Ioctl, IoctlOutcome};
use vfio_shim_cuse::retry::{argsz_step, argsz_step_extended, cstr_step, fixed_step, ArgszSpec, Extra, Step};

fn u32_at(d: &[u8], i: usize) -> u32 {
    d.get(i..i + 4).map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap()))
}

fn u64_at(d: &[u8], i: usize) -> u64 {
    d.get(i..i + 8).map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap()))
}

fn check<T>(step: &Step<T>, limit: u32) {
    if let Step::Reply(IoctlOutcome::Retry { in_iovs, out_iovs }) = step {
        for iovs in [in_iovs, out_iovs] {
            let total = iovs.iter().try_fold(0u64, |a, &(_, l)| a.checked_add(l)).expect("no overflow");
            assert!(total <= u64::from(limit), "retry asks {total} bytes over the limit {limit}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 40 {
        return;
    }
    let (head, in_data) = data.split_at(40);
    // The kernel's limit is at least a page in practice; anything from 16 bytes up is tried.
    let limit = (u32_at(head, 0) % (1 << 20)).max(16);
    let io = Ioctl {
        cmd: u32_at(head, 4),
        arg: u64_at(head, 8),
        flags: u32_at(head, 16),
        in_data,
        out_size: u32_at(head, 20),
    };
    let spec = ArgszSpec {
        min_size: (u32_at(head, 24) % 4096).max(4),
        max_in: u32_at(head, 28),
        writes_back: head[32] & 1 != 0,
        max_out: u32_at(head, 36),
    };
    let step = argsz_step(&io, spec, limit);
    check(&step, limit);
    if let Step::Ready(arg) = &step {
        assert!(arg.data.len() as u64 <= u64::from(limit));
        let _ = (arg.u32_at(0), arg.u64_at(8));
    }
    // An extended command: a bitmap named inside the struct, as DIRTY_PAGES(GET_BITMAP) has.
    let extra = |a: &vfio_shim_cuse::retry::ArgszArg<'_>| {
        let (Some(addr), Some(len)) = (a.u64_at(8), a.u64_at(16)) else { return Ok(Extra::default()) };
        Ok(Extra { in_iovs: vec![], out_iovs: vec![(addr, len)] })
    };
    check(&argsz_step_extended(&io, spec, limit, &extra), limit);
    check(&fixed_step(&io, head[33].into(), head[34].into(), limit), limit);
    check(&cstr_step(&io, 4096, 4096, limit), limit);
});
