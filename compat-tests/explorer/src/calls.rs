//! The fd-level calls the explorer makes on VFIO objects, behind one trait so the same
//! executor runs against the process's real `/dev/vfio/*` (libc: type1, the kernel compat, or
//! the shim through LD_PRELOAD) and, on the host, against the shim's core over its fake
//! backend (`replay.rs`). Each call returns `(ret, errno)` with errno 0 on success.

use std::ffi::CString;

pub trait Calls {
    fn open(&mut self, path: &str, flags: i32) -> (i64, i32);
    fn close(&mut self, fd: i32) -> (i64, i32);
    fn fcntl(&mut self, fd: i32, cmd: i32, arg: i64) -> (i64, i32);
    /// `arg` is a value or points into the caller's own memory.
    fn ioctl(&mut self, fd: i32, req: u32, arg: u64) -> (i64, i32);
    /// CAP_SYS_RAWIO into (`keep`) or out of this thread's effective set.
    fn set_rawio(&mut self, keep: bool) -> (i64, i32);
}

/// `ret` and errno of a libc call returning an int.
pub fn call(f: impl FnOnce() -> i64) -> (i64, i32) {
    // SAFETY: resetting errno, a thread-local, so a success leaves 0.
    unsafe { *libc::__errno_location() = 0 };
    let r = f();
    (r, if r < 0 { std::io::Error::last_os_error().raw_os_error().unwrap_or(0) } else { 0 })
}

/// The process's own libc: whatever serves `/dev/vfio/*` here answers.
pub struct Libc;

impl Calls for Libc {
    fn open(&mut self, path: &str, flags: i32) -> (i64, i32) {
        let c = CString::new(path).expect("no NUL in paths");
        // SAFETY: a valid C path.
        call(|| unsafe { libc::open(c.as_ptr(), flags) } as i64)
    }

    fn close(&mut self, fd: i32) -> (i64, i32) {
        // SAFETY: closing one of the sequence's fds, or a number that is not open.
        call(|| unsafe { libc::close(fd) } as i64)
    }

    fn fcntl(&mut self, fd: i32, cmd: i32, arg: i64) -> (i64, i32) {
        // SAFETY: the fcntl commands the explorer uses take no pointers.
        call(|| unsafe { libc::fcntl(fd, cmd, arg) } as i64)
    }

    fn ioctl(&mut self, fd: i32, req: u32, arg: u64) -> (i64, i32) {
        // SAFETY: a VFIO or VFS ioctl whose argument is a value or points into our own memory;
        // a wrong request on a wrong fd is exactly what the explorer probes, and the kernel
        // checks it.
        call(|| unsafe { libc::ioctl(fd, req as libc::c_ulong, arg) } as i64)
    }

    fn set_rawio(&mut self, keep: bool) -> (i64, i32) {
        const CAP_SYS_RAWIO: u32 = 17;
        const V3: u32 = 0x2008_0522; // _LINUX_CAPABILITY_VERSION_3
        let mut header = [V3, 0u32]; // version, pid 0: this thread
        let mut data = [0u32; 6]; // two { effective, permitted, inheritable }
                                  // SAFETY: capget into local buffers of the v3 layout.
        let r = call(|| unsafe { libc::syscall(libc::SYS_capget, header.as_mut_ptr(), data.as_mut_ptr()) });
        if r.0 < 0 {
            return r;
        }
        let bit = 1u32 << CAP_SYS_RAWIO;
        data[0] = if keep { data[0] | bit } else { data[0] & !bit };
        // SAFETY: capset from the same local buffers.
        call(|| unsafe { libc::syscall(libc::SYS_capset, header.as_mut_ptr(), data.as_ptr()) })
    }
}
