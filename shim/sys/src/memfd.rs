//! Sealed memfds: the handoff description one process writes and another reads
//! (`memfd_create`, `F_ADD_SEALS`/`F_GET_SEALS`, `pread`).

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
pub use nix::fcntl::SealFlag;
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::memfd::{memfd_create, MFdFlags};

/// A close-on-exec memfd named `name` holding `bytes`, then sealed with `seals`.
pub fn sealed(name: &CStr, bytes: &[u8], seals: SealFlag) -> Result<OwnedFd, Errno> {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    let mut done = 0;
    while done < bytes.len() {
        match nix::unistd::write(&fd, &bytes[done..]) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    fcntl(fd.as_fd(), FcntlArg::F_ADD_SEALS(seals))?;
    Ok(fd)
}

/// The seals of `fd`: `EINVAL` for anything but a memfd (or a file without sealing).
pub fn seals(fd: BorrowedFd<'_>) -> Result<SealFlag, Errno> {
    fcntl(fd, FcntlArg::F_GET_SEALS).map(SealFlag::from_bits_retain)
}

/// `pread(2)` of up to `buf.len()` bytes at `offset`; `Ok(0)` at the end of the file.
pub fn read_at(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
    let offset = i64::try_from(offset).map_err(|_| Errno::EINVAL)?;
    loop {
        match nix::sys::uio::pread(fd, buf, offset) {
            Err(Errno::EINTR) => {}
            r => return r,
        }
    }
}
