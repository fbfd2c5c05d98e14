//! The /dev/cuse file descriptor: wait, read one request, write one reply. All I/O of the crate
//! happens here; everything above works on byte slices.

use crate::ll::abi::{fuse_in_header, fuse_ioctl_in, fuse_write_in, FUSE_MIN_READ_BUFFER};
use crate::ll::reply::Reply;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// Where the kernel's CUSE control device lives.
pub const CUSE_DEVICE: &str = "/dev/cuse";

/// The smallest read buffer that holds every request the kernel may send on a connection that
/// offered `max_write` and allows `ioctl_limit` bytes per ioctl direction.
///
/// The kernel refuses a read shorter than `max(FUSE_MIN_READ_BUFFER, header + fuse_write_in +
/// max_write)` with EINVAL (fs/fuse/dev.c:1570), and a request longer than the buffer is not
/// split: it is failed with EIO towards its caller, silently (dev.c:1616-1622). An ioctl carries
/// up to `ioctl_limit` bytes of in-data after `fuse_ioctl_in` (fs/fuse/ioctl.c:304-309).
pub fn request_buffer_size(max_write: u32, ioctl_limit: u32) -> usize {
    let header = size_of::<fuse_in_header>();
    let write = header + size_of::<fuse_write_in>() + max_write as usize;
    let ioctl = header + size_of::<fuse_ioctl_in>() + ioctl_limit as usize;
    FUSE_MIN_READ_BUFFER.max(write).max(ioctl)
}

/// What [`Channel::wait`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The channel has something: a request, or the error of a dead connection.
    Channel,
    /// The stop fd is readable.
    Stop,
}

/// An open /dev/cuse (or, in tests, any fd that delivers one frame per read).
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// Opens the CUSE control device. Non-blocking, so that several workers can poll it and
    /// the one that loses the race for a request gets EAGAIN instead of sleeping in read(2)
    /// where a stop request could not reach it (fs/fuse/dev.c:1583 returns EAGAIN for
    /// O_NONBLOCK). Opening it makes the kernel queue CUSE_INIT (fs/fuse/cuse.c:535).
    pub fn open(path: &Path) -> Result<Channel, Errno> {
        let fd = nix::fcntl::open(path, OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK, Mode::empty())?;
        Ok(Channel { fd })
    }

    /// Wraps an fd that already speaks the protocol (must be non-blocking for [`Channel::wait`]
    /// to be the only place that sleeps).
    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel { fd }
    }

    /// Sleeps until the channel or `stop` is readable (or `timeout` passes: `None` then).
    pub fn wait(&self, stop: BorrowedFd<'_>, timeout: PollTimeout) -> Result<Option<Readiness>, Errno> {
        loop {
            let mut fds = [PollFd::new(stop, PollFlags::POLLIN), PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, timeout) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
            let any = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            if any(&fds[0]) {
                return Ok(Some(Readiness::Stop));
            }
            // POLLERR is how a dead connection shows (fs/fuse/dev.c:2121); read() then says ENODEV.
            if any(&fds[1]) {
                return Ok(Some(Readiness::Channel));
            }
        }
    }

    /// A worker's own wait: an epoll instance holding the stop fd and this channel, the
    /// channel with `EPOLLEXCLUSIVE`. A plain poll(2) puts every worker on the connection's
    /// wait queue non-exclusively, so each request woke them all and all but one read EAGAIN.
    /// With exclusive
    /// entries a request wakes one worker waiting in epoll_wait (fs/eventpoll.c
    /// ep_poll_callback); the stop fd still wakes everyone.
    pub fn waiter(&self, stop: BorrowedFd<'_>) -> Result<Waiter, Errno> {
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(stop, EpollEvent::new(EpollFlags::EPOLLIN, WAKE_STOP))?;
        epoll.add(self.fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, WAKE_CHANNEL))?;
        Ok(Waiter { epoll })
    }

    /// Whether the connection is dead, without waiting.
    pub fn is_disconnected(&self) -> bool {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => fds[0].revents().is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)),
            Err(_) => false,
        }
    }

    /// Reads one request into `buf` (one read returns exactly one request) and returns its
    /// length. EAGAIN: another worker took it. ENODEV: the connection is gone (dev.c:1592);
    /// an end-of-file (only test fds give one) is reported the same way.
    pub fn receive(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        match nix::unistd::read(&self.fd, buf) {
            Ok(0) => Err(Errno::ENODEV),
            Ok(n) => Ok(n),
            Err(e) => Err(e),
        }
    }

    /// Writes one reply with one writev(2): the kernel takes a reply whole or not at all
    /// (fs/fuse/dev.c:1908 wants `len` to equal the write's size). ENOENT means the request is
    /// no longer waiting (its connection is being aborted, or an interrupt's target finished).
    pub fn send(&self, reply: &Reply<'_>) -> Result<(), Errno> {
        loop {
            match nix::sys::uio::writev(&self.fd, &reply.iovecs()) {
                Ok(n) if n == reply.len() => return Ok(()),
                Ok(_) => return Err(Errno::EIO),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

const WAKE_STOP: u64 = 0;
const WAKE_CHANNEL: u64 = 1;

/// See [`Channel::waiter`].
#[derive(Debug)]
pub struct Waiter {
    epoll: nix::sys::epoll::Epoll,
}

impl Waiter {
    /// Blocks until the stop fd or the channel is readable (stop first), or `timeout` passes
    /// (then `Ok(None)`).
    pub fn wait(&self, timeout: PollTimeout) -> Result<Option<Readiness>, Errno> {
        use nix::sys::epoll::EpollEvent;
        let mut events = [EpollEvent::empty(); 2];
        loop {
            match self.epoll.wait(&mut events, timeout) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    let ready = &events[..n];
                    if ready.iter().any(|e| e.data() == WAKE_STOP) {
                        return Ok(Some(Readiness::Stop));
                    }
                    return Ok(Some(Readiness::Channel));
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_size() {
        // The defaults: max_write 4096, 32 pages of 4 KiB per ioctl direction.
        assert_eq!(request_buffer_size(4096, 131072), 40 + 32 + 131072);
        assert_eq!(request_buffer_size(0, 0), 8192);
        assert_eq!(request_buffer_size(1 << 20, 131072), 40 + 40 + (1 << 20));
    }
}
