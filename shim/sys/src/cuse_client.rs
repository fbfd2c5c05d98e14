//! The client side of vfio-shim's CUSE daemon: telling its nodes from the kernel's VFIO nodes,
//! and the adopt handshake by which the preload serves an open of one in-process.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};
use vfio_shim::abi::{VFIO_SHIM_CUSE_ADOPT, VFIO_SHIM_CUSE_ADOPT_PROTOCOL};

/// Whether `path` is a character device served through CUSE (`/sys/dev/char/M:m` leads to
/// `/sys/devices/virtual/cuse/...`): vfio-shim's daemon, not the kernel's VFIO. `false` when
/// `path` does not exist or is anything else.
pub fn is_cuse_node(path: &CStr) -> bool {
    let Ok(st) = nix::sys::stat::stat(path) else { return false };
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFCHR {
        return false;
    }
    let link = format!("/sys/dev/char/{}:{}", libc::major(st.st_rdev), libc::minor(st.st_rdev));
    std::fs::read_link(link).is_ok_and(|t| t.to_string_lossy().contains("/cuse/"))
}

/// If `path` is vfio-shim's CUSE node, opens it for real with `flags` (so the kernel checks the
/// node's permissions and `/proc/self/fd` names it) and tells the daemon this open is served
/// in-process. `None` when there is no such node, or its daemon speaks another protocol (the
/// fd is closed again). An open the node refuses (EACCES; a group already open: EBUSY) is that
/// error.
pub fn open_adopted(path: &CStr, flags: i32) -> Result<Option<OwnedFd>, Errno> {
    if !is_cuse_node(path) {
        return Ok(None);
    }
    let fd = nix::fcntl::open(path, OFlag::from_bits_retain(flags), Mode::empty())?;
    // SAFETY: the handshake ioctl takes no argument and touches no memory.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), VFIO_SHIM_CUSE_ADOPT as _, 0) };
    Ok((rc == VFIO_SHIM_CUSE_ADOPT_PROTOCOL).then_some(fd))
}
