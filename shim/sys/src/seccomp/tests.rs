//! The filter and the listener against the host's kernel: a forked child runs under the
//! supervisor's filter and this test answers its calls.

use super::*;
use crate::caller::take_fd;
use std::os::fd::{AsFd, FromRawFd};

const VFIO_GET_API_VERSION: u32 = 0x3b64; // _IO(';', 100)
const VFIO_CHECK_EXTENSION: u32 = 0x3b65; // _IO(';', 101)
const VFIO_IOMMU_MAP_DMA: u32 = 0x3b71; // _IO(';', 113)
const IOMMU_IOAS_ALLOC: u32 = 0x3b81; // _IO(';', 0x81): iommufd's, sent unless marked
const RESULTS: usize = 8;

fn errno_or(rc: libc::c_long) -> i64 {
    if rc < 0 {
        -(Errno::last() as i64)
    } else {
        rc
    }
}

/// The child: installs the filter, tells the parent its listener fd, makes the calls and
/// reports each result (or -errno). Raw calls only: it runs between fork and _exit.
fn child(program: &FilterProgram, report: RawFd) -> ! {
    let listener = match install_with_listener(program) {
        Ok(fd) => fd as i64,
        Err(e) => -(e as i64),
    };
    // SAFETY (whole block): calls on integers and on buffers live for each call.
    unsafe {
        libc::write(report, (&listener as *const i64).cast(), 8);
        let mut out = [0i64; RESULTS];
        let vfio = libc::open(c"/dev/vfio/vfio".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        out[0] = errno_or(vfio as libc::c_long);
        out[1] = errno_or(libc::syscall(libc::SYS_ioctl, vfio, VFIO_GET_API_VERSION as libc::c_ulong));
        // the request's upper 32 bits are not the kernel's: still a VFIO call
        out[2] = errno_or(libc::syscall(libc::SYS_ioctl, vfio, 0xdead_0000_0000_0000u64 | VFIO_CHECK_EXTENSION as u64));
        out[3] = errno_or(libc::syscall(libc::SYS_ioctl, vfio, SUPERVISOR_MARK | IOMMU_IOAS_ALLOC as u64, 0usize));
        out[7] = errno_or(libc::syscall(libc::SYS_ioctl, vfio, IOMMU_IOAS_ALLOC as libc::c_ulong, 0usize));
        out[4] = errno_or(libc::syscall(libc::SYS_ioctl, vfio, VFIO_IOMMU_MAP_DMA as libc::c_ulong, 0usize));
        let other = libc::open(c"/proc/self/stat".as_ptr(), libc::O_RDONLY);
        out[5] = errno_or(other as libc::c_long);
        let mut st: libc::stat = std::mem::zeroed();
        out[6] = if libc::fstat(vfio, &mut st) == 0 {
            libc::major(st.st_rdev) as i64 * 256 + libc::minor(st.st_rdev) as i64
        } else {
            -1
        };
        libc::write(report, out.as_ptr().cast(), 8 * RESULTS);
        libc::_exit(0)
    }
}

#[test]
fn the_filter_sends_vfio_calls_and_opens_and_lets_the_rest_run() {
    // MAP_DMA traced: with no tracer attached the kernel fails it with ENOSYS, which shows the
    // filter chose "trace" for it.
    let program = FilterProgram::supervisor(&[VFIO_IOMMU_MAP_DMA]);
    let mut pipe = [0; 2];
    // SAFETY: a two-int array for the new fds.
    assert_eq!(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the child only makes raw calls (see `child`) before _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        child(&program, pipe[1]);
    }
    // SAFETY: our pipe's ends.
    let (read_end, _write_end) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let read_i64s = |n: usize| -> Vec<i64> {
        let mut buf = vec![0i64; n];
        // SAFETY: `buf` holds n i64s.
        let got = unsafe { libc::read(read_end.as_raw_fd(), buf.as_mut_ptr().cast(), 8 * n) };
        assert_eq!(got, 8 * n as isize, "the child's report");
        buf
    };
    let listener_fd = read_i64s(1)[0];
    assert!(listener_fd >= 0, "the child could not install the filter: errno {}", -listener_fd);
    // SAFETY: integer arguments; a new pidfd.
    let pidfd = unsafe { OwnedFd::from_raw_fd(libc::syscall(libc::SYS_pidfd_open, pid, 0) as RawFd) };
    let listener = Listener::new(take_fd(pidfd.as_fd(), listener_fd as RawFd).expect("pidfd_getfd of the listener"));

    // open("/dev/vfio/vfio"): answered with /dev/null installed in the child
    let n = listener.receive().unwrap();
    assert_eq!((n.nr, n.tid), (libc::SYS_openat, pid as u32));
    assert!(listener.still_waiting(n.id));
    let null = std::fs::File::open("/dev/null").unwrap();
    let fd = listener.install_fd(n.id, null.as_fd(), true, true).unwrap();
    // VFIO_GET_API_VERSION: notified, answered 7
    let n = listener.receive().unwrap();
    assert_eq!((n.nr, n.args[0], n.args[1]), (libc::SYS_ioctl, fd as u64, VFIO_GET_API_VERSION as u64));
    listener.answer(n.id, Ok(7)).unwrap();
    // CHECK_EXTENSION with garbage in the upper half: notified, answered EINVAL
    let n = listener.receive().unwrap();
    assert_eq!(n.args[1] as u32, VFIO_CHECK_EXTENSION);
    listener.answer(n.id, Err(Errno::EINVAL)).unwrap();
    // iommufd's IOAS_ALLOC, unmarked: notified (the container is an iommufd), answered EPERM
    let n = listener.receive().unwrap();
    assert_eq!(n.args[1], IOMMU_IOAS_ALLOC as u64);
    listener.answer(n.id, Err(Errno::EPERM)).unwrap();
    // /proc/self/stat: notified (every open is), continued: the kernel opens it
    let n = listener.receive().unwrap();
    assert_eq!(n.nr, libc::SYS_openat);
    listener.continue_call(n.id).unwrap();

    let out = read_i64s(RESULTS);
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert_eq!(out[0], fd as i64, "open got the installed fd");
    assert_eq!(out[1], 7, "GET_API_VERSION got the answer");
    assert_eq!(out[2], -(Errno::EINVAL as i64), "CHECK_EXTENSION got the errno");
    assert_eq!(out[3], -(Errno::ENOTTY as i64), "the marked request ran: /dev/null does not know it");
    assert_eq!(out[7], -(Errno::EPERM as i64), "the unmarked one got the answer");
    assert_eq!(out[4], -(Errno::ENOSYS as i64), "MAP_DMA traced, and no tracer: ENOSYS");
    assert!(out[5] >= 0, "the continued open ran: {}", out[5]);
    assert_eq!(out[6], 256 + 3, "the installed fd is /dev/null (1:3)");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
}
