//! vfio-shim's CUSE nodes as files: telling them from the kernel's VFIO nodes, the adopt
//! handshake by which the preload serves an open of one in-process, and the identify handshake
//! by which the daemon recognises a caller's file of its own container node.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

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

/// The device number of `file` if it is a character device, from the attributes the kernel
/// holds (`statx` with `AT_STATX_DONT_SYNC`: a FUSE file's server is not asked).
pub fn char_device_of(file: BorrowedFd<'_>) -> Result<Option<u64>, Errno> {
    // SAFETY: an all-zero statx is a valid value of the plain-data struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c""` is a valid empty C string; with AT_EMPTY_PATH statx describes `file`
    // itself and writes only into `stx`.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE,
            &mut stx,
        )
    };
    Errno::result(rc)?;
    if u32::from(stx.stx_mode) & libc::S_IFMT != libc::S_IFCHR {
        return Ok(None);
    }
    Ok(Some(libc::makedev(stx.stx_rdev_major, stx.stx_rdev_minor)))
}

/// `VFIO_SHIM_CUSE_IDENTIFY` on a file of vfio-shim's own CUSE container node: the open's
/// file handle in the daemon. Only ever issued on a file whose device number was checked to be
/// that node, since another driver could give the number another meaning.
pub fn cuse_identify(node_file: BorrowedFd<'_>) -> Result<u64, Errno> {
    // SAFETY: an `_IO` command with an integer argument (0): no memory is passed.
    let rc = unsafe { libc::ioctl(node_file.as_raw_fd(), vfio_shim::abi::VFIO_SHIM_CUSE_IDENTIFY as _, 0) };
    Errno::result(rc).map(|fh| fh as u64)
}
