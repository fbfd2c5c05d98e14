//! The CUSE session: the CUSE_INIT handshake, then worker threads that read requests, hand
//! them to a [`CuseDevice`] (device.rs) and write the answers.
//!
//! All workers share the one /dev/cuse fd. CUSE refuses FUSE_DEV_IOC_CLONE (fs/fuse/cuse.c:635-636
//! clears the channel's ioctl op: "CUSE is not prepared for FUSE_DEV_IOC_CLONE"), and sharing is
//! safe: a read dequeues exactly one request under `fiq->lock` (fs/fuse/dev.c:1607-1610) and a
//! reply is matched to its request by `unique` in the fd's processing list under `fpq->lock`
//! (dev.c:1936-1939), whichever thread writes it.

use crate::channel::{self, Channel, Readiness};
use crate::device::{Caller, CuseDevice, Ioctl, IoctlOutcome, PollRequest};
use crate::ll::abi::*;
use crate::ll::reply::{self, Reply};
use crate::ll::{Operation, Request};
use log::{debug, error, info, warn};
use nix::errno::Errno;
use nix::poll::PollTimeout;
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::collections::HashMap;
use std::fmt;
use std::os::fd::AsFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Session parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The node's name under /dev (`vfio/vfio` makes /dev/vfio/vfio).
    pub devname: String,
    /// Worker threads.
    pub threads: usize,
    /// max_read/max_write offered in the CUSE_INIT reply (the kernel raises both to at least
    /// 4096, fs/fuse/cuse.c:342-343); read/write requests are split to this size.
    pub max_write: u32,
    /// 0/0 asks the kernel for a dynamic major (cuse.c:355-358).
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Bytes per ioctl direction the kernel accepts: FUSE_DEFAULT_MAX_PAGES_PER_REQ pages.
    pub ioctl_limit: u32,
}

impl Config {
    pub fn new(devname: &str) -> Config {
        Config {
            devname: devname.to_owned(),
            threads: 4,
            max_write: 4096,
            dev_major: 0,
            dev_minor: 0,
            ioctl_limit: ioctl_limit(page_size()),
        }
    }
}

/// The system page size (4096 if sysconf cannot say).
pub fn page_size() -> u32 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) => u32::try_from(n).unwrap_or(4096),
        _ => 4096,
    }
}

/// The kernel's per-direction ioctl limit for a CUSE connection: `fc->max_pages` pages, and
/// CUSE never raises `max_pages` from FUSE_DEFAULT_MAX_PAGES_PER_REQ (fs/fuse/inode.c:977).
pub fn ioctl_limit(page_size: u32) -> u32 {
    FUSE_DEFAULT_MAX_PAGES_PER_REQ.saturating_mul(page_size)
}

/// A session failure, with the errno behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub what: String,
    pub errno: Errno,
}

impl Error {
    fn new(what: impl Into<String>, errno: Errno) -> Error {
        Error { what: what.into(), errno }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.errno.desc())
    }
}

impl std::error::Error for Error {}

/// What the CUSE_INIT handshake settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitInfo {
    pub kernel_major: u32,
    pub kernel_minor: u32,
    /// The minor version answered: min(kernel's, ours).
    pub minor: u32,
}

/// Stops a running session from any thread: workers finish the request in hand, then return.
#[derive(Debug, Clone)]
pub struct Stopper {
    fd: Arc<EventFd>,
}

impl Stopper {
    pub fn stop(&self) {
        // The eventfd stays readable once written: every worker's poll sees it.
        if let Err(e) = self.fd.write(1) {
            error!("cannot signal the session to stop: {e}");
        }
    }
}

/// Sends notifications on the session's channel from any thread.
#[derive(Debug, Clone)]
pub struct Notifier {
    chan: Arc<Channel>,
}

impl Notifier {
    /// Wakes the pollers of the file whose FUSE_POLL carried `kh` (fs/fuse/notify.c:9).
    pub fn poll_wakeup(&self, kh: u64) -> Result<(), Errno> {
        self.chan.send(&reply::notify_poll(kh))
    }
}

/// A CUSE device being served.
pub struct Session<D: CuseDevice> {
    chan: Arc<Channel>,
    device: D,
    config: Config,
    stop: Arc<EventFd>,
    /// Requests being handled, by unique, with their interrupt flag.
    inflight: Mutex<HashMap<u64, Arc<AtomicBool>>>,
    buf_size: usize,
    /// Set by the first worker that sees the connection die (one log line, not one per worker).
    disconnected: AtomicBool,
}

impl<D: CuseDevice> Session<D> {
    /// Opens /dev/cuse for `device`; [`Session::init`] then creates the node.
    pub fn new(device: D, config: Config) -> Result<Session<D>, Error> {
        let chan = Channel::open(Path::new(channel::CUSE_DEVICE))
            .map_err(|e| Error::new(format!("open {}", channel::CUSE_DEVICE), e))?;
        Session::with_channel(chan, device, config)
    }

    /// A session over an already open channel.
    pub fn with_channel(chan: Channel, device: D, config: Config) -> Result<Session<D>, Error> {
        let stop = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| Error::new("eventfd", e))?;
        let buf_size = channel::request_buffer_size(config.max_write.max(4096), config.ioctl_limit);
        Ok(Session {
            chan: Arc::new(chan),
            device,
            config,
            stop: Arc::new(stop),
            inflight: Mutex::new(HashMap::new()),
            buf_size,
            disconnected: AtomicBool::new(false),
        })
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stopper(&self) -> Stopper {
        Stopper { fd: Arc::clone(&self.stop) }
    }

    pub fn notifier(&self) -> Notifier {
        Notifier { chan: Arc::clone(&self.chan) }
    }

    /// Answers CUSE_INIT: protocol 7.min(kernel, 46), CUSE_UNRESTRICTED_IOCTL, the configured
    /// name and device number. When this returns Ok the node exists: the kernel creates the
    /// device while processing the reply write (cuse_process_init_reply runs as the request's
    /// end callback: fs/fuse/dev.c:665, 1990), and a refusal (name in use, bad version) aborts
    /// the connection at once (cuse.c:429), which is checked here.
    pub fn init(&self) -> Result<InitInfo, Error> {
        let mut buf = vec![0u8; self.buf_size];
        loop {
            match self.chan.wait(self.stop.as_fd(), PollTimeout::NONE) {
                Ok(Some(Readiness::Stop)) => return Err(Error::new("stopped before CUSE_INIT", Errno::EINTR)),
                Ok(_) => {}
                Err(e) => return Err(Error::new("poll /dev/cuse", e)),
            }
            let n = match self.chan.receive(&mut buf) {
                Ok(n) => n,
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => return Err(Error::new("read CUSE_INIT", e)),
            };
            let req = match Request::parse(&buf[..n]) {
                Ok(r) => r,
                Err(e) => {
                    if let (true, Some(u)) = (e.needs_reply(), e.unique()) {
                        self.send(&reply::error(u, Errno::EIO));
                    }
                    return Err(Error::new(format!("bad first request: {e}"), Errno::EPROTO));
                }
            };
            let Operation::CuseInit(arg) = req.op else {
                // Nothing else can come before the connection is initialized; never leave it hanging.
                warn!("opcode {} before CUSE_INIT: answered EIO", req.header.opcode);
                if req.needs_reply() {
                    self.send(&reply::error(req.unique(), Errno::EIO));
                }
                continue;
            };
            return self.answer_init(req.unique(), &arg);
        }
    }

    fn answer_init(&self, unique: u64, arg: &cuse_init_in) -> Result<InitInfo, Error> {
        let refuse = |what: String, errno: Errno| {
            self.send(&reply::error(unique, errno));
            Err(Error::new(what, errno))
        };
        if arg.major != FUSE_KERNEL_VERSION {
            return refuse(format!("kernel speaks FUSE {}.{}, we speak 7.x", arg.major, arg.minor), Errno::EPROTO);
        }
        let minor = arg.minor.min(FUSE_KERNEL_MINOR_VERSION);
        if minor < CUSE_MIN_MINOR {
            return refuse(format!("kernel FUSE minor {} < {CUSE_MIN_MINOR}", arg.minor), Errno::EPROTO);
        }
        if arg.flags & CUSE_UNRESTRICTED_IOCTL == 0 {
            return refuse("kernel does not offer CUSE_UNRESTRICTED_IOCTL".into(), Errno::EPROTO);
        }
        let out = cuse_init_out {
            major: FUSE_KERNEL_VERSION,
            minor,
            flags: CUSE_UNRESTRICTED_IOCTL,
            max_read: self.config.max_write,
            max_write: self.config.max_write,
            dev_major: self.config.dev_major,
            dev_minor: self.config.dev_minor,
            ..Default::default()
        };
        let r = match reply::cuse_init(unique, &out, &self.config.devname) {
            Ok(r) => r,
            Err(e) => return refuse(format!("device name {:?}", self.config.devname), e),
        };
        self.chan.send(&r).map_err(|e| Error::new("write CUSE_INIT reply", e))?;
        if self.chan.is_disconnected() {
            return Err(Error::new(
                format!("the kernel refused device {:?} (name or number in use? see dmesg)", self.config.devname),
                Errno::ENODEV,
            ));
        }
        info!("serving /dev/{} (FUSE 7.{minor}, kernel 7.{})", self.config.devname, arg.minor);
        Ok(InitInfo { kernel_major: arg.major, kernel_minor: arg.minor, minor })
    }

    /// Serves requests on `config.threads` workers until [`Stopper::stop`] or until the
    /// connection dies (ENODEV: the channel was aborted, e.g. via /sys/class/cuse/*/abort).
    /// Dropping the session afterwards closes /dev/cuse, which removes the node and fails
    /// every request still queued with ECONNABORTED (fs/fuse/dev.c:2130-2141).
    pub fn run(&self) -> Result<(), Error> {
        let threads = self.config.threads.max(1);
        let results: Vec<Result<(), Error>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|i| std::thread::Builder::new().name(format!("cuse-worker-{i}")).spawn_scoped(s, || self.worker()))
                .collect();
            handles
                .into_iter()
                .map(|h| match h {
                    Ok(h) => h.join().unwrap_or_else(|_| Err(Error::new("worker panicked", Errno::EIO))),
                    Err(e) => {
                        self.stopper().stop();
                        Err(Error::new(format!("spawn worker: {e}"), Errno::EAGAIN))
                    }
                })
                .collect()
        });
        results.into_iter().collect()
    }

    /// One worker: wait, read, dispatch, until stopped or disconnected.
    pub fn worker(&self) -> Result<(), Error> {
        let mut buf = vec![0u8; self.buf_size];
        let waiter = self.chan.waiter(self.stop.as_fd()).map_err(|e| Error::new("epoll for /dev/cuse", e))?;
        loop {
            match waiter.wait(PollTimeout::NONE) {
                Ok(Some(Readiness::Stop)) => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    self.stopper().stop();
                    return Err(Error::new("poll /dev/cuse", e));
                }
            }
            match self.chan.receive(&mut buf) {
                Ok(n) => self.dispatch(&buf[..n]),
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(Errno::ENODEV) => {
                    if !self.disconnected.swap(true, Ordering::AcqRel) {
                        info!("CUSE connection closed by the kernel");
                    }
                    self.stopper().stop();
                    return Ok(());
                }
                Err(e) => {
                    self.stopper().stop();
                    return Err(Error::new("read /dev/cuse", e));
                }
            }
        }
    }

    /// Handles one frame. Every request that expects an answer gets exactly one, whatever the
    /// device does (a panic included): see [`Pending`].
    pub fn dispatch(&self, frame: &[u8]) {
        let req = match Request::parse(frame) {
            Ok(r) => r,
            Err(e) => {
                warn!("unparsable request: {e}");
                if let (true, Some(u)) = (e.needs_reply(), e.unique()) {
                    self.send(&reply::error(u, Errno::EIO));
                }
                return;
            }
        };
        if let Operation::Interrupt(arg) = req.op {
            self.interrupt(req.unique(), arg.unique);
            return;
        }
        if !req.needs_reply() {
            return;
        }
        let unique = req.unique();
        let flag = Arc::new(AtomicBool::new(false));
        self.lock_inflight().insert(unique, Arc::clone(&flag));
        let caller =
            Caller { pid: req.header.pid, uid: req.header.uid, gid: req.header.gid, unique, interrupted: flag };
        let pending = Pending { session_chan: &self.chan, unique, answered: false };
        let outcome = catch_unwind(AssertUnwindSafe(|| self.handle(&req, &caller, pending)));
        if outcome.is_err() {
            error!("device panicked on opcode {} (request {unique}): answered EIO", req.header.opcode);
        }
        self.lock_inflight().remove(&unique);
    }

    fn handle(&self, req: &Request<'_>, caller: &Caller, pending: Pending<'_>) {
        let unique = req.unique();
        let dev = &self.device;
        match req.op {
            Operation::Open(arg) => match dev.open(caller, arg.flags) {
                Ok(fh) => pending.send(&reply::open(unique, fh, 0)),
                Err(e) => pending.send(&reply::error(unique, e)),
            },
            Operation::Release(arg) => {
                dev.release(arg.fh, caller);
                pending.send(&reply::empty(unique));
            }
            Operation::Ioctl { arg, in_data } => {
                let io = Ioctl { cmd: arg.cmd, arg: arg.arg, flags: arg.flags, in_data, out_size: arg.out_size };
                match dev.ioctl(arg.fh, caller, &io) {
                    IoctlOutcome::Done { result, out } => {
                        if out.len() > arg.out_size as usize {
                            // The kernel would fail it with EIO (fs/fuse/ioctl.c:391-393).
                            error!("ioctl {:#x}: {} bytes out, room for {}: EIO", arg.cmd, out.len(), arg.out_size);
                            pending.send(&reply::error(unique, Errno::EIO));
                        } else {
                            pending.send(&reply::ioctl_done(unique, result, &out));
                        }
                    }
                    IoctlOutcome::Retry { in_iovs, out_iovs } => {
                        if !io.retry_allowed() {
                            // Restricted ioctls cannot retry (ioctl.c:351-354).
                            pending.send(&reply::error(unique, Errno::EIO));
                            return;
                        }
                        match reply::ioctl_retry(unique, &in_iovs, &out_iovs, u64::from(self.config.ioctl_limit)) {
                            Ok(r) => pending.send(&r),
                            Err(e) => {
                                error!("ioctl {:#x}: retry beyond the kernel's limits: {}", arg.cmd, e.desc());
                                pending.send(&reply::error(unique, e));
                            }
                        }
                    }
                    IoctlOutcome::Error(e) => pending.send(&reply::error(unique, e)),
                }
            }
            Operation::Poll(arg) => {
                let p = PollRequest { kh: arg.kh, flags: arg.flags, events: arg.events };
                match dev.poll(arg.fh, caller, &p) {
                    Ok(revents) => pending.send(&reply::poll(unique, revents)),
                    Err(e) => pending.send(&reply::error(unique, e)),
                }
            }
            Operation::Read(arg) => match dev.read(arg.fh, caller, arg.size, arg.offset) {
                Ok(data) if data.len() <= arg.size as usize => pending.send(&reply::read(unique, &data)),
                Ok(data) => {
                    error!("read: {} bytes for a {}-byte request: EIO", data.len(), arg.size);
                    pending.send(&reply::error(unique, Errno::EIO));
                }
                Err(e) => pending.send(&reply::error(unique, e)),
            },
            Operation::Write { arg, data } => match dev.write(arg.fh, caller, data, arg.offset) {
                Ok(n) => pending.send(&reply::write(unique, n.min(arg.size))),
                Err(e) => pending.send(&reply::error(unique, e)),
            },
            // CUSE's file operations have no flush or fsync (fs/fuse/cuse.c:184-194): never sent.
            Operation::Flush(_) | Operation::Fsync(_) | Operation::Unknown { .. } => {
                pending.send(&reply::error(unique, Errno::ENOSYS))
            }
            // A second CUSE_INIT cannot happen on one connection.
            Operation::CuseInit(_) => pending.send(&reply::error(unique, Errno::EIO)),
            // Handled in dispatch, never reaches here; answering it would be wrong.
            Operation::Interrupt(_) => pending.disarm(),
        }
    }

    /// FUSE_INTERRUPT: flag the target so a long operation can notice. No answer is needed
    /// (the kernel just waits for the target's own answer), except when the target is not
    /// registered yet: another worker read it but has not reached `dispatch`'s bookkeeping.
    /// Then EAGAIN makes the kernel queue the interrupt again (fs/fuse/dev.c:1957); if the target
    /// has finished meanwhile, the kernel answers that EAGAIN with ENOENT and drops it.
    fn interrupt(&self, interrupt_unique: u64, target: u64) {
        let found = match self.lock_inflight().get(&target) {
            Some(flag) => {
                flag.store(true, Ordering::Release);
                true
            }
            None => false,
        };
        if found {
            debug!("request {target} interrupted");
        } else {
            match self.chan.send(&reply::interrupt_again(interrupt_unique)) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => warn!("requeue interrupt of {target}: {}", e.desc()),
            }
        }
    }

    fn send(&self, r: &Reply<'_>) {
        send_logged(&self.chan, r);
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<AtomicBool>>> {
        // A poisoned map is still a valid map: the panicking thread held it only for an insert.
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn send_logged(chan: &Channel, r: &Reply<'_>) {
    match chan.send(r) {
        Ok(()) => {}
        // The request is gone: its connection is being torn down.
        Err(Errno::ENOENT) => debug!("reply to a request no longer waiting"),
        Err(e) => warn!("write reply: {}", e.desc()),
    }
}

/// The obligation to answer one request. Dropping it unanswered (an early return, a panic in
/// the device) answers EIO, so the caller, who cannot be interrupted while the request is in
/// userspace, is never left waiting.
struct Pending<'s> {
    session_chan: &'s Channel,
    unique: u64,
    answered: bool,
}

impl Pending<'_> {
    fn send(mut self, r: &Reply<'_>) {
        self.answered = true;
        send_logged(self.session_chan, r);
    }

    /// For requests that must get no answer.
    fn disarm(mut self) {
        self.answered = true;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.answered {
            send_logged(self.session_chan, &reply::error(self.unique, Errno::EIO));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ll::request::tests::frame;
    use crate::test_device::{TestDevice, TEST_INCREMENT, TEST_PID, TEST_SLEEP};
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::OwnedFd;
    use std::time::{Duration, Instant};
    use zerocopy::IntoBytes;

    /// The kernel's end of a fake /dev/cuse.
    struct Kernel {
        fd: OwnedFd,
    }

    impl Kernel {
        fn send(&self, frame: &[u8]) {
            assert_eq!(nix::unistd::write(&self.fd, frame).unwrap(), frame.len());
        }

        /// The next reply, or None within `ms`.
        fn recv_within(&self, ms: u16) -> Option<Vec<u8>> {
            let mut fds = [nix::poll::PollFd::new(self.fd.as_fd(), nix::poll::PollFlags::POLLIN)];
            if nix::poll::poll(&mut fds, PollTimeout::from(ms)).unwrap() == 0 {
                return None;
            }
            let mut buf = vec![0u8; 1 << 18];
            let n = nix::unistd::read(&self.fd, &mut buf).unwrap();
            buf.truncate(n);
            Some(buf)
        }

        fn recv(&self) -> Vec<u8> {
            self.recv_within(5000).expect("no reply within 5 s")
        }
    }

    fn pair() -> (Kernel, Channel) {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .unwrap();
        // The kernel side blocks.
        nix::fcntl::fcntl(&a, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty())).unwrap();
        (Kernel { fd: a }, Channel::from_fd(b))
    }

    fn head(r: &[u8]) -> (u32, i32, u64) {
        (
            u32::from_ne_bytes(r[0..4].try_into().unwrap()),
            i32::from_ne_bytes(r[4..8].try_into().unwrap()),
            u64::from_ne_bytes(r[8..16].try_into().unwrap()),
        )
    }

    fn init_frame(minor: u32, flags: u32) -> Vec<u8> {
        let arg = cuse_init_in { major: 7, minor, unused: 0, flags };
        frame(opcode::CUSE_INIT, 2, arg.as_bytes())
    }

    fn ioctl_frame(unique: u64, fh: u64, cmd: u32, arg: u64, in_data: &[u8], out_size: u32) -> Vec<u8> {
        let a = fuse_ioctl_in { fh, flags: FUSE_IOCTL_UNRESTRICTED, cmd, arg, in_size: in_data.len() as u32, out_size };
        let mut body = a.as_bytes().to_vec();
        body.extend_from_slice(in_data);
        frame(opcode::FUSE_IOCTL, unique, &body)
    }

    fn config() -> Config {
        let mut c = Config::new("vfio-shim-test");
        c.threads = 3;
        c
    }

    #[test]
    fn init_handshake() {
        let (k, chan) = pair();
        let s = Session::with_channel(chan, TestDevice::new(131072), config()).unwrap();
        k.send(&init_frame(46, CUSE_UNRESTRICTED_IOCTL));
        let info = s.init().unwrap();
        assert_eq!(info, InitInfo { kernel_major: 7, kernel_minor: 46, minor: 46 });
        let r = k.recv();
        assert_eq!(head(&r), (r.len() as u32, 0, 2));
        let out = cuse_init_out::read_from_bytes_prefix(&r[16..]);
        assert_eq!((out.major, out.minor, out.flags), (7, 46, CUSE_UNRESTRICTED_IOCTL));
        assert_eq!((out.max_read, out.max_write, out.dev_major, out.dev_minor), (4096, 4096, 0, 0));
        assert_eq!(&r[16 + 72..], b"DEVNAME=vfio-shim-test\0");
    }

    /// zerocopy's read_from_prefix, without the tuple.
    trait Prefix: Sized {
        fn read_from_bytes_prefix(b: &[u8]) -> Self;
    }
    impl<T: zerocopy::FromBytes> Prefix for T {
        fn read_from_bytes_prefix(b: &[u8]) -> T {
            T::read_from_prefix(b).unwrap().0
        }
    }

    #[test]
    fn init_newer_kernel_gets_our_minor() {
        let (k, chan) = pair();
        let s = Session::with_channel(chan, TestDevice::new(131072), config()).unwrap();
        k.send(&init_frame(99, CUSE_UNRESTRICTED_IOCTL | 0x100));
        assert_eq!(s.init().unwrap().minor, FUSE_KERNEL_MINOR_VERSION);
        let out = cuse_init_out::read_from_bytes_prefix(&k.recv()[16..]);
        assert_eq!((out.minor, out.flags), (46, CUSE_UNRESTRICTED_IOCTL));
    }

    #[test]
    fn init_refusals_are_answered() {
        for (minor, flags, name) in [(15, CUSE_UNRESTRICTED_IOCTL, "ok"), (46, 0, "ok"), (46, 1, "../bad")] {
            let (k, chan) = pair();
            let mut c = config();
            c.devname = name.into();
            let s = Session::with_channel(chan, TestDevice::new(131072), c).unwrap();
            k.send(&init_frame(minor, flags));
            let e = s.init().unwrap_err();
            let r = k.recv();
            assert_eq!(head(&r), (16, -(e.errno as i32), 2), "{e}");
        }
        // A foreign-endian kernel: refused, nothing to answer.
        let (k, chan) = pair();
        let s = Session::with_channel(chan, TestDevice::new(131072), config()).unwrap();
        k.send(&frame(opcode::CUSE_INIT_BSWAP_RESERVED, 2, &[0; 16]));
        assert_eq!(s.init().unwrap_err().errno, Errno::EPROTO);
        assert_eq!(k.recv_within(50), None);
    }

    #[test]
    fn init_reports_a_dead_connection() {
        let (k, chan) = pair();
        let s = Session::with_channel(chan, TestDevice::new(131072), config()).unwrap();
        drop(k);
        assert_eq!(s.init().unwrap_err().errno, Errno::ENODEV);
    }

    /// Runs `body` against a served TestDevice plus the quirks of [`Quirky`].
    fn serve(body: impl FnOnce(&Kernel, &Session<Quirky>)) {
        let (k, chan) = pair();
        let s = Session::with_channel(chan, Quirky(TestDevice::new(131072)), config()).unwrap();
        std::thread::scope(|sc| {
            let h = sc.spawn(|| s.run());
            body(&k, &s);
            s.stopper().stop();
            h.join().unwrap().unwrap();
        });
    }

    /// Waits until a worker has request `unique` in hand (no sleeps that a slow machine outruns).
    fn wait_in_hand<D: CuseDevice>(s: &Session<D>, unique: u64) {
        wait_inflight(s, unique, true)
    }

    fn wait_inflight<D: CuseDevice>(s: &Session<D>, unique: u64, present: bool) {
        let t = Instant::now();
        while s.lock_inflight().contains_key(&unique) != present {
            assert!(t.elapsed() < Duration::from_secs(10), "request {unique} never in hand: {present}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The test device, plus a command that panics and one that returns too much data.
    struct Quirky(TestDevice);
    const PANIC: u32 = 0x1234;
    const TOO_MUCH: u32 = 0x1235;
    const BIG_RETRY: u32 = 0x1236;
    const FORBIDDEN: u32 = 0x1237;

    impl CuseDevice for Quirky {
        fn open(&self, caller: &Caller, flags: u32) -> Result<u64, Errno> {
            if flags == 0o7777 {
                return Err(Errno::EACCES);
            }
            self.0.open(caller, flags)
        }
        fn release(&self, fh: u64, caller: &Caller) {
            self.0.release(fh, caller)
        }
        fn ioctl(&self, fh: u64, caller: &Caller, io: &Ioctl<'_>) -> IoctlOutcome {
            match io.cmd {
                PANIC => panic!("device bug"),
                TOO_MUCH => IoctlOutcome::Done { result: 0, out: vec![0; io.out_size as usize + 1] },
                BIG_RETRY => IoctlOutcome::Retry { in_iovs: vec![(0x1000, 1 << 20)], out_iovs: vec![] },
                FORBIDDEN => IoctlOutcome::Error(Errno::from_raw(600)),
                _ => self.0.ioctl(fh, caller, io),
            }
        }
    }

    fn open(k: &Kernel, unique: u64) -> u64 {
        k.send(&frame(opcode::FUSE_OPEN, unique, fuse_open_in { flags: 2, open_flags: 0 }.as_bytes()));
        let r = k.recv();
        assert_eq!(head(&r), (32, 0, unique));
        u64::from_ne_bytes(r[16..24].try_into().unwrap())
    }

    #[test]
    fn open_ioctl_release() {
        serve(|k, _| {
            let fh = open(k, 10);
            // Round 1: the retry asks for the fixed part, in and out.
            k.send(&ioctl_frame(12, fh, TEST_INCREMENT, 0x1000, &[], 0));
            let r = k.recv();
            assert_eq!(head(&r), (64, 0, 12));
            assert_eq!(&r[16..32], [0u32, FUSE_IOCTL_RETRY, 1, 1].as_bytes());
            assert_eq!(&r[32..48], [0x1000u64, 16].as_bytes());
            assert_eq!(&r[48..64], [0x1000u64, 16].as_bytes());
            // Round 2: the struct; the answer carries the incremented copy.
            let mut st = 16u32.to_ne_bytes().to_vec();
            st.extend_from_slice(&3u32.to_ne_bytes());
            st.extend_from_slice(&9u64.to_ne_bytes());
            k.send(&ioctl_frame(14, fh, TEST_INCREMENT, 0x1000, &st, 16));
            let r = k.recv();
            assert_eq!(head(&r), (48, 0, 14));
            assert_eq!(&r[32..40], &st[..8]);
            assert_eq!(&r[40..48], &10u64.to_ne_bytes());
            // The caller's pid from the header (the fixture's 4242).
            k.send(&ioctl_frame(16, fh, TEST_PID, 0, &[], 0));
            let r = k.recv();
            assert_eq!(i32::from_ne_bytes(r[16..20].try_into().unwrap()), 4242);
            // Unknown command.
            k.send(&ioctl_frame(18, fh, 0x3b64, 0, &[], 0));
            assert_eq!(head(&k.recv()), (16, -(Errno::ENOTTY as i32), 18));
            // Release answers with an empty success.
            let rel = fuse_release_in { fh, ..Default::default() };
            k.send(&frame(opcode::FUSE_RELEASE, 20, rel.as_bytes()));
            assert_eq!(head(&k.recv()), (16, 0, 20));
            k.send(&ioctl_frame(22, fh, TEST_PID, 0, &[], 0));
            assert_eq!(head(&k.recv()), (16, -(Errno::EBADF as i32), 22));
        });
    }

    #[test]
    fn every_request_is_answered() {
        serve(|k, _| {
            let fh = open(k, 10);
            // Open refused by the device.
            k.send(&frame(opcode::FUSE_OPEN, 12, fuse_open_in { flags: 0o7777, open_flags: 0 }.as_bytes()));
            assert_eq!(head(&k.recv()), (16, -(Errno::EACCES as i32), 12));
            // A device panic: EIO, and the worker lives on.
            k.send(&ioctl_frame(14, fh, PANIC, 0, &[], 0));
            assert_eq!(head(&k.recv()), (16, -(Errno::EIO as i32), 14));
            // More data than the out room: EIO (the kernel would refuse it).
            k.send(&ioctl_frame(16, fh, TOO_MUCH, 0, &[], 8));
            assert_eq!(head(&k.recv()), (16, -(Errno::EIO as i32), 16));
            // A retry beyond the kernel's limit: ENOMEM, as the kernel would.
            k.send(&ioctl_frame(18, fh, BIG_RETRY, 0, &[], 0));
            assert_eq!(head(&k.recv()), (16, -(Errno::ENOMEM as i32), 18));
            // An errno the kernel would refuse: EIO.
            k.send(&ioctl_frame(20, fh, FORBIDDEN, 0, &[], 0));
            assert_eq!(head(&k.recv()), (16, -(Errno::EIO as i32), 20));
            // Defaults: poll, read, write ENOSYS; flush, fsync, unknown opcodes ENOSYS.
            let poll = fuse_poll_in { fh, kh: 1, flags: 0, events: 1 };
            k.send(&frame(opcode::FUSE_POLL, 22, poll.as_bytes()));
            assert_eq!(head(&k.recv()), (16, -(Errno::ENOSYS as i32), 22));
            let read = fuse_read_in { fh, size: 10, ..Default::default() };
            k.send(&frame(opcode::FUSE_READ, 24, read.as_bytes()));
            assert_eq!(head(&k.recv()), (16, -(Errno::ENOSYS as i32), 24));
            let write = fuse_write_in { fh, size: 2, ..Default::default() };
            let mut body = write.as_bytes().to_vec();
            body.extend_from_slice(b"hi");
            k.send(&frame(opcode::FUSE_WRITE, 26, &body));
            assert_eq!(head(&k.recv()), (16, -(Errno::ENOSYS as i32), 26));
            k.send(&frame(opcode::FUSE_FLUSH, 28, fuse_flush_in::default().as_bytes()));
            assert_eq!(head(&k.recv()), (16, -(Errno::ENOSYS as i32), 28));
            k.send(&frame(opcode::FUSE_FSYNC, 30, fuse_fsync_in::default().as_bytes()));
            assert_eq!(head(&k.recv()), (16, -(Errno::ENOSYS as i32), 30));
            k.send(&frame(1, 32, b"name\0"));
            assert_eq!(head(&k.recv()), (16, -(Errno::ENOSYS as i32), 32));
            // A second CUSE_INIT.
            k.send(&init_frame(46, 1));
            assert_eq!(head(&k.recv()), (16, -(Errno::EIO as i32), 2));
            // Garbled frames: EIO when the header names a request, silence otherwise.
            k.send(&frame(opcode::FUSE_IOCTL, 34, &[0; 20]));
            assert_eq!(head(&k.recv()), (16, -(Errno::EIO as i32), 34));
            let mut lying = frame(opcode::FUSE_OPEN, 36, &[0; 8]);
            lying[0] = 200;
            k.send(&lying);
            assert_eq!(head(&k.recv()), (16, -(Errno::EIO as i32), 36));
            k.send(&[1, 2, 3]);
            k.send(&frame(opcode::FUSE_FORGET, 38, &[0; 8]));
            assert_eq!(k.recv_within(100), None);
            // Still serving.
            k.send(&ioctl_frame(40, fh, TEST_PID, 0, &[], 0));
            assert_eq!(head(&k.recv()).2, 40);
        });
    }

    #[test]
    fn interrupt_reaches_a_running_request() {
        serve(|k, s| {
            let fh = open(k, 10);
            let t = Instant::now();
            k.send(&ioctl_frame(12, fh, TEST_SLEEP, 30_000, &[], 0));
            wait_in_hand(s, 12);
            k.send(&frame(opcode::FUSE_INTERRUPT, 13, &12u64.to_ne_bytes()));
            assert_eq!(head(&k.recv()), (16, -(Errno::EINTR as i32), 12));
            assert!(t.elapsed() < Duration::from_secs(10));
            // An interrupt for a request not (or no longer) in hand: asked to be queued again.
            wait_inflight(s, 12, false);
            k.send(&frame(opcode::FUSE_INTERRUPT, 13, &12u64.to_ne_bytes()));
            assert_eq!(head(&k.recv()), (16, -(Errno::EAGAIN as i32), 13));
        });
    }

    #[test]
    fn stop_finishes_requests_in_hand() {
        serve(|k, s| {
            let fh = open(k, 10);
            k.send(&ioctl_frame(12, fh, TEST_SLEEP, 200, &[], 0));
            wait_in_hand(s, 12);
            s.stopper().stop();
            // The sleeping request still gets its answer.
            assert_eq!(head(&k.recv()), (32, 0, 12));
        });
    }

    #[test]
    fn run_ends_when_the_connection_dies() {
        let (k, chan) = pair();
        let s = Session::with_channel(chan, TestDevice::new(131072), config()).unwrap();
        drop(k);
        assert_eq!(s.run(), Ok(()));
    }

    #[test]
    fn poll_wakeup_notification() {
        let (k, chan) = pair();
        let s = Session::with_channel(chan, TestDevice::new(131072), config()).unwrap();
        s.notifier().poll_wakeup(0x55).unwrap();
        let r = k.recv();
        assert_eq!(head(&r), (24, notify::FUSE_NOTIFY_POLL, 0));
        assert_eq!(&r[16..], &0x55u64.to_ne_bytes());
    }
}
