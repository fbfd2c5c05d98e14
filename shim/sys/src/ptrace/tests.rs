//! A call rewritten at a seccomp trace stop, against the host's kernel: a forked child makes
//! a traced ioctl, this test runs a `write` of scratch bytes in its place and another from its
//! exit, then sets the ioctl's result; a second traced ioctl is skipped with an errno.

use super::*;
use crate::seccomp::{install_with_listener, FilterProgram};
use nix::sys::signal::{kill, Signal};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const TRACED: u32 = 0x3b71; // VFIO_IOMMU_MAP_DMA

/// One ioctl by the raw instruction, so the registers it is made with are known; returns its
/// result and whether rdi, rsi and rdx came back as they went in.
fn traced_ioctl(fd: u64) -> (i64, bool) {
    let (rc, rdi, rsi, rdx): (i64, u64, u64, u64);
    let arg = 0x1234_5678u64;
    // SAFETY: an ioctl syscall on integers; the kernel clobbers rcx and r11 only.
    unsafe {
        std::arch::asm!("syscall",
            inlateout("rax") libc::SYS_ioctl => rc,
            inlateout("rdi") fd => rdi,
            inlateout("rsi") TRACED as u64 => rsi,
            inlateout("rdx") arg => rdx,
            lateout("rcx") _, lateout("r11") _,
            options(nostack));
    }
    (rc, rdi == fd && rsi == TRACED as u64 && rdx == arg)
}

fn child(program: &FilterProgram, report: RawFd) -> ! {
    // SAFETY (whole block): raw calls on integers and live buffers, between fork and _exit.
    unsafe {
        if install_with_listener(program).is_err() {
            libc::_exit(10);
        }
        libc::kill(libc::getpid(), libc::SIGSTOP); // the tracer seizes us here
        let (first, kept_first) = traced_ioctl(report as u64);
        let (second, kept_second) = traced_ioctl(report as u64);
        let out = [first, kept_first as i64, second, kept_second as i64];
        libc::write(report, out.as_ptr().cast(), 32);
        libc::_exit(0)
    }
}

fn seccomp_stop(pid: Pid) -> TraceStop {
    loop {
        match waitpid(pid, None).unwrap() {
            WaitStatus::PtraceEvent(_, _, e) if e == libc::PTRACE_EVENT_SECCOMP => return TraceStop::at(pid).unwrap(),
            WaitStatus::Stopped(_, sig) => {
                let pass = if sig == Signal::SIGCONT { None } else { Some(sig) };
                ptrace::cont(pid, pass).unwrap();
            }
            WaitStatus::PtraceEvent(..) => ptrace::cont(pid, None).unwrap(),
            other => panic!("the child did not reach its traced call: {other:?}"),
        }
    }
}

#[test]
fn a_traced_call_runs_another_call_then_returns_the_chosen_result() {
    let program = FilterProgram::supervisor(&[TRACED]);
    let (mut report, mut scratch) = ([0; 2], [0; 2]);
    // SAFETY: two-int arrays for the new fds.
    unsafe {
        assert_eq!(libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC), 0);
        assert_eq!(libc::pipe2(scratch.as_mut_ptr(), libc::O_CLOEXEC), 0);
    }
    // SAFETY: the child makes raw calls only (see `child`).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        child(&program, report[1]);
    }
    let pid = Pid::from_raw(pid);
    // SAFETY: our pipes' ends.
    let (report_read, _rw, scratch_read, _sw) = unsafe {
        (
            OwnedFd::from_raw_fd(report[0]),
            OwnedFd::from_raw_fd(report[1]),
            OwnedFd::from_raw_fd(scratch[0]),
            OwnedFd::from_raw_fd(scratch[1]),
        )
    };
    assert!(matches!(
        waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WUNTRACED)).unwrap(),
        WaitStatus::Stopped(_, Signal::SIGSTOP)
    ));
    ptrace::seize(pid, ptrace::Options::PTRACE_O_TRACESECCOMP | ptrace::Options::PTRACE_O_EXITKILL).unwrap();
    kill(pid, Signal::SIGCONT).unwrap();

    // First: the ioctl becomes write(scratch pipe, <scratch copy>, 8), then returns 1234.
    let mut stop = seccomp_stop(pid);
    let (nr, args) = stop.call();
    assert_eq!((nr, args[1] as u32, args[2]), (libc::SYS_ioctl, TRACED, 0x1234_5678));
    let wrote = stop.run_instead(libc::SYS_write, b"scratch!", |at| [scratch[1] as u64, at, 8, 0, 0, 0]).unwrap();
    assert_eq!(wrote, 8, "the write ran in the child");
    let mut got = [0u8; 8];
    // SAFETY: an 8-byte buffer.
    assert_eq!(unsafe { libc::read(scratch_read.as_raw_fd(), got.as_mut_ptr().cast(), 8) }, 8);
    assert_eq!(&got, b"scratch!", "from the copy below the child's red zone");
    // Then another call from that call's exit: the thread runs its syscall instruction again.
    let again = stop.run(libc::SYS_write, b"again!!!", |at| [scratch[1] as u64, at, 8, 0, 0, 0], || Ok(())).unwrap();
    assert_eq!(again, 8, "the second write ran in the child");
    // SAFETY: an 8-byte buffer.
    assert_eq!(unsafe { libc::read(scratch_read.as_raw_fd(), got.as_mut_ptr().cast(), 8) }, 8);
    assert_eq!(&got, b"again!!!");
    stop.finish(Ok(1234)).unwrap();

    // Second: skipped with EPERM.
    seccomp_stop(pid).skip(Err(Errno::EPERM)).unwrap();

    let mut out = [0i64; 4];
    // SAFETY: a 32-byte buffer.
    assert_eq!(unsafe { libc::read(report_read.as_raw_fd(), out.as_mut_ptr().cast(), 32) }, 32);
    assert_eq!(out, [1234, 1, -(Errno::EPERM as i64), 1], "results, and rdi/rsi/rdx preserved each time");
    assert!(matches!(waitpid(pid, None).unwrap(), WaitStatus::Exited(_, 0)));
}
