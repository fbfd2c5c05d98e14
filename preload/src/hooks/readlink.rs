//! `readlink`: a no-IOMMU device's missing `iommu_group` link, on a kernel without VFIO
//! groups, reads as the group the shim serves for it (`vfio_shim_sys::noiommu`), so a program
//! that looks its group up there finds `/dev/vfio/noiommu-<N>`. Every other call is libc's,
//! looked at only when it failed with ENOENT.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::*;

/// # Safety
/// As `readlink(2)`.
#[no_mangle]
pub unsafe extern "C" fn readlink(path: *const c_char, buf: *mut c_char, size: libc::size_t) -> libc::ssize_t {
    // SAFETY: forwarding the caller's arguments.
    let n = unsafe { (real().readlink)(path, buf, size) };
    if n >= 0 || Errno::last() != Errno::ENOENT || path.is_null() || inside() {
        return n;
    }
    // SAFETY: the call above read `path` as a C string, so it is one.
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    if !bytes.ends_with(b"/iommu_group") {
        return n;
    }
    let Some(text) = vfio_shim_sys::noiommu::iommu_group_link(Path::new(OsStr::from_bytes(bytes))) else {
        Errno::set_raw(libc::ENOENT);
        return n;
    };
    // readlink(2): at most `size` bytes, no NUL, the count returned.
    let len = text.len().min(size);
    // SAFETY: the caller gave `size` writable bytes at `buf`; `len <= size`.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), len) };
    len as libc::ssize_t
}
