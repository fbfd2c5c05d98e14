//! seccomp for the supervisor (docs/supervisor.md): the filter a supervised program runs
//! under, which sends its VFIO opens and ioctls to the supervisor and lets everything else
//! through, and the listener's side of user notification (receive, answer, continue, install
//! an fd in the caller). A caller's fds are taken with `caller::take_fd`.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;

/// `AUDIT_ARCH_X86_64` (include/uapi/linux/audit.h): `EM_X86_64 | __AUDIT_ARCH_64BIT |
/// __AUDIT_ARCH_LE`.
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// VFIO's ioctl type, which iommufd shares (include/uapi/linux/vfio.h, iommufd.h).
const VFIO_TYPE: u32 = b';' as u32;

/// The upper 32 bits of the requests the supervisor makes a supervised thread issue itself
/// (the rewritten map, the KVM request naming a file): the kernel's `ioctl` takes an
/// `unsigned int` request and never sees them; the filter lets such a request run. A program
/// that sets them only makes its own call reach the kernel unserved.
pub const SUPERVISOR_MARK: u64 = 0x7666_7368 << 32;

/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// The low 32 bits of `args[1]` (little-endian): the kernel's `ioctl` takes an `unsigned int`
/// request, so those bits are the request it acts on, whatever the upper half holds.
const DATA_ARG1_LOW: u32 = 16 + 8;
/// Its upper 32 bits: [`SUPERVISOR_MARK`].
const DATA_ARG1_HIGH: u32 = 16 + 12;

/// A classic BPF program for `SECCOMP_SET_MODE_FILTER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterProgram(Vec<libc::sock_filter>);

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt: 0, jf: 0, k }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt, jf, k }
}

impl FilterProgram {
    /// The supervisor's filter: `open`, `openat`, `openat2`, every ioctl of VFIO's and
    /// iommufd's type `;` (a container is an iommufd, and type1 answers every request on its
    /// file) and `KVM_SET_DEVICE_ATTR` go to the listener; the requests in `trace` to the
    /// tracer (`SECCOMP_RET_TRACE`: they need the caller's own context, see
    /// docs/supervisor.md); a request marked [`SUPERVISOR_MARK`] and everything else runs. A
    /// call of another architecture (`int 0x80`) runs untouched: its numbers are another
    /// table's.
    pub fn supervisor(trace: &[u32]) -> Self {
        use libc::{
            BPF_ABS, BPF_ALU, BPF_AND, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_RSH, BPF_W, SECCOMP_RET_ALLOW,
            SECCOMP_RET_TRACE, SECCOMP_RET_USER_NOTIF,
        };
        let notify = [libc::SYS_open, libc::SYS_openat, libc::SYS_openat2];
        let mut p = vec![
            stmt(BPF_LD | BPF_W | BPF_ABS, DATA_ARCH),
            jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
            stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
            stmt(BPF_LD | BPF_W | BPF_ABS, DATA_NR),
        ];
        for nr in notify {
            p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, nr as u32, 0, 1));
            p.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF));
        }
        p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, libc::SYS_ioctl as u32, 1, 0));
        p.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
        // ioctl: the supervisor's own, the requests traced, KVM_SET_DEVICE_ATTR, type ';'.
        p.push(stmt(BPF_LD | BPF_W | BPF_ABS, DATA_ARG1_HIGH));
        p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, (SUPERVISOR_MARK >> 32) as u32, 0, 1));
        p.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
        for &request in trace {
            p.push(stmt(BPF_LD | BPF_W | BPF_ABS, DATA_ARG1_LOW));
            p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, request, 0, 1));
            p.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_TRACE));
        }
        p.push(stmt(BPF_LD | BPF_W | BPF_ABS, DATA_ARG1_LOW));
        p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, KVM_SET_DEVICE_ATTR, 0, 1));
        p.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF));
        // (request >> 8) & 0xff == ';'
        p.push(stmt(BPF_ALU | BPF_RSH | BPF_K, 8));
        p.push(stmt(BPF_ALU | BPF_AND | BPF_K, 0xff));
        p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, VFIO_TYPE, 0, 1));
        p.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF));
        p.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
        FilterProgram(p)
    }

    /// The program's instructions.
    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.0
    }
}

/// The call a trace stop runs to receive a file from the supervisor ([`Listener::deliver`]):
/// an ioctl on fd -1 with `VFIO_GET_API_VERSION`, which the filter sends to the listener.
pub const DELIVERY_REQUEST: u32 = 0x3b64;

/// `KVM_SET_DEVICE_ATTR`: `_IOW(KVMIO, 0xe1, struct kvm_device_attr)` (include/uapi/linux/kvm.h).
pub const KVM_SET_DEVICE_ATTR: u32 = 0x4018_aee1;

/// Sets no-new-privs and installs `program` for the calling thread with a new user
/// notification listener, whose fd it returns, leaving speculation mitigations as they are. Makes no allocation and touches no lock, so a
/// child may call it between `fork` and `exec`.
pub fn install_with_listener(program: &FilterProgram) -> Result<RawFd, Errno> {
    let prog = libc::sock_fprog { len: program.0.len() as u16, filter: program.0.as_ptr() as *mut libc::sock_filter };
    // SAFETY: prctl with integer arguments only.
    Errno::result(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
    // SAFETY: `prog` points at `program`'s instructions, which outlive the call; the kernel
    // copies them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            // SPEC_ALLOW: the filter is no sandbox, so the program keeps the speculation
            // mitigations it has without one (a filter otherwise forces SSBD on it, x86's
            // spec_store_bypass_disable=seccomp, slowing all of its code).
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            &prog as *const libc::sock_fprog,
        )
    };
    Errno::result(fd).map(|fd| fd as RawFd)
}

/// One notified call: which thread, which syscall, its raw arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    /// The kernel's cookie for this call, to answer it with.
    pub id: u64,
    /// The calling thread (in the listener's pid namespace).
    pub tid: u32,
    pub nr: i64,
    pub args: [u64; 6],
}

/// The listener end of a filter installed with [`install_with_listener`].
#[derive(Debug)]
pub struct Listener(OwnedFd);

impl Listener {
    /// The listener fd (ours: taken from the child with `pidfd_getfd`, or inherited).
    pub fn new(fd: OwnedFd) -> Self {
        Listener(fd)
    }

    /// The fd to poll for a pending call.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }

    /// `SECCOMP_IOCTL_NOTIF_RECV`: the next call (blocks unless polled first). `ENOENT` when
    /// the caller went away between the poll and the receive.
    pub fn receive(&self) -> Result<Notification, Errno> {
        // SAFETY: an all-zero seccomp_notif is valid, and the kernel requires it zeroed.
        let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: `n` is a live seccomp_notif the kernel fills.
        Errno::result(unsafe { libc::ioctl(self.0.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) })?;
        Ok(Notification { id: n.id, tid: n.pid, nr: n.data.nr as i64, args: n.data.args })
    }

    fn send(&self, id: u64, val: i64, error: i32, flags: u32) -> Result<(), Errno> {
        let mut resp = libc::seccomp_notif_resp { id, val, error, flags };
        // SAFETY: `resp` is a live seccomp_notif_resp the kernel reads.
        Errno::result(unsafe { libc::ioctl(self.0.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) }).map(drop)
    }

    /// Answers call `id` with `result` (a value, or -1 and the errno). `ENOENT` when the
    /// caller is gone (killed, or interrupted by a signal: it then restarts the call).
    pub fn answer(&self, id: u64, result: Result<i64, Errno>) -> Result<(), Errno> {
        match result {
            Ok(v) => self.send(id, v, 0, 0),
            Err(e) => self.send(id, 0, -(e as i32), 0),
        }
    }

    /// Lets the kernel run call `id` as the caller made it.
    pub fn continue_call(&self, id: u64) -> Result<(), Errno> {
        self.send(id, 0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32)
    }

    /// `SECCOMP_IOCTL_NOTIF_ADDFD`: installs `file` in the caller of `id` at its lowest free
    /// fd (close-on-exec when `cloexec`), as `dup` would. With `answer`, that fd number is
    /// also the call's result, atomically (`SECCOMP_ADDFD_FLAG_SEND`), and the call is
    /// answered. Returns the caller's fd number.
    pub fn install_fd(&self, id: u64, file: BorrowedFd<'_>, cloexec: bool, answer: bool) -> Result<i32, Errno> {
        let mut addfd = libc::seccomp_notif_addfd {
            id,
            flags: if answer { libc::SECCOMP_ADDFD_FLAG_SEND as u32 } else { 0 },
            srcfd: file.as_raw_fd() as u32,
            newfd: 0,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: `addfd` is a live seccomp_notif_addfd the kernel reads; `file` is open.
        let fd = unsafe { libc::ioctl(self.0.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ADDFD, &mut addfd) };
        Errno::result(fd)
    }

    /// Installs `file` in thread `tid`, which the caller made enter a call the filter sends
    /// here (a trace stop running [`DELIVERY_REQUEST`] on fd -1): that call's result is the
    /// new fd (close-on-exec). The notifications of other threads received meanwhile are
    /// returned, to be answered after. `ETIMEDOUT` when the thread's call does not come.
    pub fn deliver(&self, tid: u32, file: BorrowedFd<'_>) -> Result<Vec<Notification>, Errno> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut others = Vec::new();
        loop {
            let mut fds = [PollFd::new(self.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(10_000u16))? == 0 {
                return Err(Errno::ETIMEDOUT);
            }
            let n = match self.receive() {
                Ok(n) => n,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e),
            };
            if n.tid == tid && n.args[1] as u32 == DELIVERY_REQUEST && n.args[0] as i32 == -1 {
                self.install_fd(n.id, file, true, true)?;
                return Ok(others);
            }
            others.push(n);
        }
    }

    /// Whether call `id` still waits for its answer (`SECCOMP_IOCTL_NOTIF_ID_VALID`): what
    /// the supervisor read of the caller (its memory, its fds) is still the caller's.
    pub fn still_waiting(&self, id: u64) -> bool {
        let mut id = id;
        // SAFETY: `id` is a live u64 the kernel reads.
        unsafe { libc::ioctl(self.0.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) == 0 }
    }
}

#[cfg(test)]
mod tests;
