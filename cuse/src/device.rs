//! The device API of the daemon: what a served character device implements ([`CuseDevice`]) and
//! what it is handed for each request (the caller, an ioctl and its outcome, a poll).

use crate::ll::abi::{FUSE_IOCTL_32BIT, FUSE_IOCTL_UNRESTRICTED, FUSE_POLL_SCHEDULE_NOTIFY};
use nix::errno::Errno;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Who made a request, from its `fuse_in_header`.
///
/// `pid` is the calling *thread's* id in the pid namespace of the process that opened /dev/cuse
/// (`pid_nr_ns(task_pid(current), fc->pid_ns)`, fs/fuse/req.c:13); 0 when the caller is not
/// visible there. `uid`/`gid` are its fsuid/fsgid; RELEASE carries 0 for both (it is sent with
/// `nocreds`, fs/fuse/file.c:343) and the pid of whichever task dropped the last reference.
#[derive(Debug, Clone)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// The request's id (even; FUSE_INT_REQ_BIT clear).
    pub unique: u64,
    pub(crate) interrupted: Arc<AtomicBool>,
}

impl Caller {
    pub fn new(pid: u32, uid: u32, gid: u32, unique: u64) -> Caller {
        Caller { pid, uid, gid, unique, interrupted: Arc::new(AtomicBool::new(false)) }
    }

    /// Whether the kernel sent FUSE_INTERRUPT for this request (the caller got a signal). A long
    /// operation may give up with EINTR; it must still answer, because the caller keeps waiting
    /// for the answer, uninterruptibly once a request was read (fs/fuse/dev.c:702-749).
    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Acquire)
    }

    /// Marks the request interrupted (what the session does on FUSE_INTERRUPT; tests use it too).
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::Release);
    }
}

/// One FUSE_IOCTL round, as the kernel sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ioctl<'a> {
    pub cmd: u32,
    /// The caller's raw argument: a pointer in the caller's address space for pointer ioctls.
    pub arg: u64,
    /// FUSE_IOCTL_* flags (UNRESTRICTED always, on CUSE with CUSE_UNRESTRICTED_IOCTL;
    /// COMPAT|32BIT for a 32-bit caller on a 64-bit kernel, fs/fuse/ioctl.c:239-249).
    pub flags: u32,
    /// The bytes of the in-ranges asked for by the previous round's retry, concatenated
    /// (empty in the first round).
    pub in_data: &'a [u8],
    /// The total length of the out-ranges asked for by the previous round's retry: the most
    /// data a [`IoctlOutcome::Done`] may return.
    pub out_size: u32,
}

impl Ioctl<'_> {
    /// A 32-bit caller (compat ioctl on a 64-bit kernel, or a 32-bit kernel).
    pub fn is_32bit(&self) -> bool {
        self.flags & FUSE_IOCTL_32BIT != 0
    }

    /// Whether the kernel allows FUSE_IOCTL_RETRY for this call (ioctl.c:351-354).
    pub fn retry_allowed(&self) -> bool {
        self.flags & FUSE_IOCTL_UNRESTRICTED != 0
    }
}

/// The answer to one FUSE_IOCTL round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoctlOutcome {
    /// Finished: `out` (at most `out_size` bytes) is copied to the caller's out-ranges in order,
    /// then ioctl(2) returns `result` (a negative result is `-errno` for the caller, after the
    /// copy; fs/fuse/ioctl.c:395-409).
    Done { result: i32, out: Vec<u8> },
    /// Ask the kernel to copy these caller ranges in (and size the out buffer to the out
    /// ranges), then call again. Each is `(address, length)` in the caller's address space.
    Retry { in_iovs: Vec<(u64, u64)>, out_iovs: Vec<(u64, u64)> },
    /// Fail the ioctl with this errno; nothing is copied out. ENOSYS reaches the caller as
    /// ENOTTY (ioctl.c:26-31).
    Error(Errno),
}

impl IoctlOutcome {
    /// Done with a result and nothing to copy out.
    pub fn ok(result: i32) -> IoctlOutcome {
        IoctlOutcome::Done { result, out: Vec::new() }
    }
}

/// One FUSE_POLL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollRequest {
    /// The kernel's handle for this file, for [`Notifier::poll_wakeup`].
    pub kh: u64,
    pub flags: u32,
    /// Requested events, in poll(2) bits.
    pub events: u32,
}

impl PollRequest {
    /// Someone waits: the device should call [`Notifier::poll_wakeup`] with `kh` when ready.
    pub fn wants_notify(&self) -> bool {
        self.flags & FUSE_POLL_SCHEDULE_NOTIFY != 0
    }
}

/// What a CUSE device implements. Each method answers one request; the session turns the
/// return value into the reply, so every request is answered exactly once. Defaults answer
/// like fuser's `Filesystem` defaults (ENOSYS), which the kernel interprets per operation.
pub trait CuseDevice: Send + Sync {
    /// open(2) of the node: returns the file handle passed to the other methods for this open
    /// file. The default ENOSYS makes the kernel open every file with fh 0 and never send
    /// RELEASE for the connection's lifetime (fs/fuse/file.c:163-178, 112): override it
    /// whenever a file has state. `flags` are the open(2) flags less O_CREAT|O_EXCL|O_NOCTTY.
    fn open(&self, caller: &Caller, flags: u32) -> Result<u64, Errno> {
        let _ = (caller, flags);
        Err(Errno::ENOSYS)
    }

    /// The last close of an open file. Cannot fail (the kernel ignores the answer).
    fn release(&self, fh: u64, caller: &Caller) {
        let _ = (fh, caller);
    }

    /// One round of an ioctl. Pointer arguments are not readable directly: answer
    /// [`IoctlOutcome::Retry`] to get the bytes (see [`crate::retry`]).
    fn ioctl(&self, fh: u64, caller: &Caller, ioctl: &Ioctl<'_>) -> IoctlOutcome {
        let _ = (fh, caller, ioctl);
        IoctlOutcome::Error(Errno::ENOTTY)
    }

    /// poll(2)/select(2)/epoll: returns the ready events. The default ENOSYS makes the kernel
    /// answer every later poll on the connection with DEFAULT_POLLMASK itself (fs/fuse/poll.c:110-112),
    /// which is what a character device without a poll method gives.
    fn poll(&self, fh: u64, caller: &Caller, poll: &PollRequest) -> Result<u32, Errno> {
        let _ = (fh, caller, poll);
        Err(Errno::ENOSYS)
    }

    /// read(2): at most `size` bytes. (A kernel character device without read gives EINVAL:
    /// override to return that if it matters.)
    fn read(&self, fh: u64, caller: &Caller, size: u32, offset: u64) -> Result<Vec<u8>, Errno> {
        let _ = (fh, caller, size, offset);
        Err(Errno::ENOSYS)
    }

    /// write(2): returns how many bytes were taken.
    fn write(&self, fh: u64, caller: &Caller, data: &[u8], offset: u64) -> Result<u32, Errno> {
        let _ = (fh, caller, data, offset);
        Err(Errno::ENOSYS)
    }
}
