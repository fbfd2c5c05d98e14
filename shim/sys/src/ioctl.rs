//! `ioctl(2)` with the kernel's errno: the one generic call the sys layer's wrapper modules
//! (`iommufd`, `vfio_device`, `procfs`, `kvm`) go through, and the `size`/`argsz` they fill.
//! Each call is recorded for `vfio-shim trace` when tracing is on (`native_trace`).

use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

use crate::native_trace::{self, Describe};

/// The `size`/`argsz` every command carries: the whole struct. iommufd accepts any size from
/// the command's minimum up (iommufd/main.c:548-553, `copy_struct_from_user`).
pub(crate) fn argsz<T>() -> u32 {
    size_of::<T>() as u32
}

/// Issue `request` on `fd` with `arg`, turning `-1` into the thread's errno.
///
/// # Safety
/// `arg` must point to a live, writable `T` laid out as the kernel expects for `request`,
/// and every user pointer stored inside it must be valid for the accesses the kernel makes
/// through it (reads of inputs, writes of outputs) for the duration of the call.
pub(crate) unsafe fn ioctl<T: Describe>(fd: BorrowedFd<'_>, request: u32, arg: *mut T) -> Result<(), Errno> {
    // SAFETY: the caller's contract is this one's.
    unsafe { ioctl_value(fd, request, arg) }.map(drop)
}

/// As [`ioctl`], returning the call's non-negative result (an fd for some requests).
///
/// # Safety
/// As [`ioctl`].
pub(crate) unsafe fn ioctl_value<T: Describe>(fd: BorrowedFd<'_>, request: u32, arg: *mut T) -> Result<i64, Errno> {
    // The raw syscall, not libc's `ioctl`: inside the preload that symbol is the preload's own
    // hook, which would only pass our call on (a detour on every MAP and UNMAP).
    // SAFETY: the caller guarantees `arg` and what it points to; `fd` is open for the
    // lifetime of the borrow.
    let rc = unsafe { libc::syscall(libc::SYS_ioctl, fd.as_raw_fd(), request as libc::c_ulong, arg) };
    let result = Errno::result(rc);
    native_trace::record(
        || {
            // SAFETY: `arg` is a live `T` (the caller's contract), read after the kernel's writes.
            let args = unsafe { &*arg }.describe();
            format!("{}({args})", native_trace::request_name(request))
        },
        result,
    );
    result
}
