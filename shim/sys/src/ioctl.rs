//! `ioctl(2)` with the kernel's errno: the one generic call the sys layer's wrapper modules
//! (`iommufd`, `vfio_device`, `procfs`) go through, and the `size`/`argsz` they fill.

use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

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
pub(crate) unsafe fn ioctl<T>(fd: BorrowedFd<'_>, request: u32, arg: *mut T) -> Result<(), Errno> {
    // The raw syscall, not libc's `ioctl`: inside the preload that symbol is the preload's own
    // hook, which would only pass our call on (a detour on every MAP and UNMAP).
    // SAFETY: the caller guarantees `arg` and what it points to; `fd` is open for the
    // lifetime of the borrow.
    let rc = unsafe { libc::syscall(libc::SYS_ioctl, fd.as_raw_fd(), request as libc::c_ulong, arg) };
    Errno::result(rc).map(drop)
}
