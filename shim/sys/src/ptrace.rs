//! ptrace for the supervisor (docs/supervisor.md, "Pinning"): a supervised thread stopped at
//! a seccomp trace stop runs a call of the supervisor's choosing in its own context (so
//! `IOMMU_IOAS_MAP` records its mm), then returns to the program with the result the
//! supervisor sets and its argument registers as they were. x86-64 only.

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::uio::{process_vm_writev, RemoteIoVec};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The x86-64 System V red zone: the 128 bytes below the stack pointer a leaf function may
/// use without moving it; scratch data goes below them.
const RED_ZONE: u64 = 128;

/// A thread stopped at `PTRACE_EVENT_SECCOMP` (the filter's `SECCOMP_RET_TRACE`), with the
/// registers it stopped with.
#[derive(Debug)]
pub struct TraceStop {
    tid: Pid,
    entry: libc::user_regs_struct,
    /// [`TraceStop::run_instead`] ran a call: the thread is at that call's exit.
    ran: bool,
}

impl TraceStop {
    /// Reads the registers of `tid`, which the caller saw stop at `PTRACE_EVENT_SECCOMP`.
    pub fn at(tid: Pid) -> Result<Self, Errno> {
        Ok(TraceStop { tid, entry: ptrace::getregs(tid)?, ran: false })
    }

    /// Whether [`TraceStop::run_instead`] ran a call (finish with [`TraceStop::finish`]),
    /// or not (finish with [`TraceStop::skip`] or [`TraceStop::resume`]).
    pub fn ran(&self) -> bool {
        self.ran
    }

    /// The stopped thread.
    pub fn tid(&self) -> Pid {
        self.tid
    }

    /// The call it stopped in: number and arguments.
    pub fn call(&self) -> (i64, [u64; 6]) {
        let r = &self.entry;
        (r.orig_rax as i64, [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9])
    }

    /// Where [`TraceStop::run`] puts `len` scratch bytes: below the thread's red zone, 16-byte
    /// aligned (the same address for the same length, so a caller can point into them).
    pub fn scratch_at(&self, len: usize) -> u64 {
        (self.entry.rsp - RED_ZONE - len as u64) & !15
    }

    /// Runs call `nr` in the thread instead of the one it stopped in. `scratch` is first
    /// copied to the thread's stack below its red zone; `args` gets that copy's address and
    /// returns the call's arguments. Returns the call's raw result (negative errno on failure)
    /// and leaves the thread stopped at the call's exit; [`TraceStop::finish`] lets it go.
    ///
    /// The scratch copy is the thread's own memory: another thread of the program can change
    /// it before the kernel reads it, and the call then acts on what it finds, with the
    /// thread's rights (docs/supervisor.md, "TOCTOU").
    pub fn run_instead(&mut self, nr: i64, scratch: &[u8], args: impl FnOnce(u64) -> [u64; 6]) -> Result<i64, Errno> {
        self.run(nr, scratch, args, || Ok(()))
    }

    /// As [`TraceStop::run_instead`], and again from the exit of a call run before (the
    /// thread executes its `syscall` instruction once more): calls in sequence in the
    /// thread's context. `while_in_call` runs once the thread is in the call, before its
    /// result is waited for: a call the filter sends to the listener is answered there.
    pub fn run(
        &mut self,
        nr: i64,
        scratch: &[u8],
        args: impl FnOnce(u64) -> [u64; 6],
        while_in_call: impl FnOnce() -> Result<(), Errno>,
    ) -> Result<i64, Errno> {
        let at = self.scratch_at(scratch.len());
        if !scratch.is_empty() {
            let remote = [RemoteIoVec { base: at as usize, len: scratch.len() }];
            let written = process_vm_writev(self.tid, &[std::io::IoSlice::new(scratch)], &remote)?;
            if written != scratch.len() {
                return Err(Errno::EFAULT);
            }
        }
        let a = args(at);
        let mut regs = self.entry;
        (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9) = (a[0], a[1], a[2], a[3], a[4], a[5]);
        let again = self.ran;
        if again {
            // From an exit stop: back to the `syscall` instruction (2 bytes), number in rax.
            regs.rip -= 2;
            regs.rax = nr as u64;
        }
        regs.orig_rax = nr as u64;
        ptrace::setregs(self.tid, regs)?;
        ptrace::syscall(self.tid, None)?;
        self.ran = true;
        while_in_call()?;
        // A call entered again stops at its entry first, and at a seccomp stop when the filter
        // traces it; the call's own exit stop is the second syscall stop.
        let mut syscall_stops = if again { 2 } else { 1 };
        loop {
            // __WALL: the thread may be any thread of the program, not only a leader.
            match waitpid(self.tid, Some(WaitPidFlag::__WALL))? {
                WaitStatus::PtraceSyscall(_) | WaitStatus::Stopped(_, nix::sys::signal::Signal::SIGTRAP) => {
                    syscall_stops -= 1;
                    if syscall_stops == 0 {
                        break;
                    }
                }
                WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_SECCOMP) => {}
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => return Err(Errno::ESRCH),
                other => {
                    log::warn!("ptrace: {other:?} instead of a syscall stop of {}", self.tid);
                    return Err(Errno::EIO);
                }
            }
            ptrace::syscall(self.tid, None)?;
        }
        Ok(ptrace::getregs(self.tid)?.rax as i64)
    }

    /// Lets the thread go on from [`TraceStop::run_instead`]'s exit stop: its registers as it
    /// stopped, the call returning `result` (a value, or -1 and the errno).
    pub fn finish(self, result: Result<i64, Errno>) -> Result<(), Errno> {
        let mut regs = self.entry;
        regs.rax = raw(result);
        ptrace::setregs(self.tid, regs)?;
        ptrace::cont(self.tid, None)
    }

    /// Lets the thread go on from the trace stop with its own call, untouched (a call on a
    /// file that is not the supervisor's).
    pub fn resume(self) -> Result<(), Errno> {
        ptrace::cont(self.tid, None)
    }

    /// Lets the thread go on from the trace stop without running its call: it returns
    /// `result`, as seccomp(2) documents for a call number set to -1.
    pub fn skip(self, result: Result<i64, Errno>) -> Result<(), Errno> {
        let mut regs = self.entry;
        regs.orig_rax = u64::MAX;
        regs.rax = raw(result);
        ptrace::setregs(self.tid, regs)?;
        ptrace::cont(self.tid, None)
    }
}

/// What a supervised task reports that the supervisor must act on; every other stop is
/// handled by [`next_event`] itself.
#[derive(Debug)]
pub enum TraceEvent {
    /// A traced call (the filter's `SECCOMP_RET_TRACE`), stopped before it runs.
    Seccomp(Box<TraceStop>),
    /// A task exited with this status.
    Exited(Pid, i32),
    /// A task was killed by this signal.
    Killed(Pid, i32),
}

/// The next event of any supervised task: `None` when none is pending (`block == false`),
/// `ECHILD` once no task is left. New threads and processes, execs and group-stops are let go
/// on, and a task about to exit is detached (its exit then reaches only its parent); a signal is delivered as it was sent. (A job-control stop does not stop a supervised
/// program: its group-stop is continued; docs/supervisor.md, limits.)
pub fn next_event(block: bool) -> Result<Option<TraceEvent>, Errno> {
    let mut flags = WaitPidFlag::__WALL;
    if !block {
        flags |= WaitPidFlag::WNOHANG;
    }
    loop {
        let status = waitpid(None::<Pid>, Some(flags))?;
        match status {
            WaitStatus::StillAlive => return Ok(None),
            WaitStatus::Exited(pid, code) => return Ok(Some(TraceEvent::Exited(pid, code))),
            WaitStatus::Signaled(pid, sig, _) => return Ok(Some(TraceEvent::Killed(pid, sig as i32))),
            WaitStatus::PtraceEvent(pid, _, libc::PTRACE_EVENT_SECCOMP) => match TraceStop::at(pid) {
                Ok(stop) => return Ok(Some(TraceEvent::Seccomp(Box::new(stop)))),
                // Killed meanwhile: its exit is the next event.
                Err(Errno::ESRCH) => continue,
                Err(e) => return Err(e),
            },
            // A task about to exit is let go: its parent must be able to wait for it as soon as
            // it is gone (a tracer holds a traced task's exit back from its parent until it has
            // seen it: the kselftest harness polls the child's pidfd, then waits WNOHANG).
            WaitStatus::PtraceEvent(pid, _, libc::PTRACE_EVENT_EXIT) => match ptrace::detach(pid, None) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => log::warn!("ptrace: cannot let exiting {pid} go: {e}"),
            },
            WaitStatus::PtraceEvent(pid, _, _) | WaitStatus::PtraceSyscall(pid) => go_on(pid, None),
            WaitStatus::Stopped(pid, sig) => go_on(pid, Some(sig)),
            WaitStatus::Continued(_) => {}
        }
    }
}

/// A file that polls readable when a supervised task has something to report (`SIGCHLD`) or
/// a signal came for the program (see [`ChildEvents::forwarded`]): both blocked for the
/// process and read through a signalfd, so one `poll` waits for tasks, notifications and
/// releases together.
#[derive(Debug)]
pub struct ChildEvents(nix::sys::signalfd::SignalFd);

/// The signals a supervisor passes on to the program: what a service manager, libvirt or a
/// user sends the command's pid to stop or steer the program behind it.
const FORWARDED: [nix::sys::signal::Signal; 6] = {
    use nix::sys::signal::Signal::*;
    [SIGTERM, SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2]
};

impl ChildEvents {
    /// Blocks `SIGCHLD` and the forwarded signals in the calling thread (the supervisor's only
    /// one) and opens the fd. Call it after the program started: a mask is inherited through
    /// fork and exec, and the program must run with its caller's.
    pub fn new() -> Result<Self, Errno> {
        use nix::sys::signal::{SigSet, Signal};
        use nix::sys::signalfd::{SfdFlags, SignalFd};
        let mut set = SigSet::empty();
        set.add(Signal::SIGCHLD);
        for sig in FORWARDED {
            set.add(sig);
        }
        set.thread_block()?;
        Ok(ChildEvents(SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?))
    }

    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }

    /// Empties the fd (task events themselves are read with [`next_event`]) and returns the
    /// signals another process sent the supervisor, to pass on to the program. One the kernel
    /// sent (a terminal's ^C goes to the whole foreground process group, the program
    /// included) is not passed on again.
    pub fn forwarded(&mut self) -> Vec<nix::sys::signal::Signal> {
        let mut out = Vec::new();
        while let Ok(Some(info)) = self.0.read_signal() {
            let Ok(sig) = nix::sys::signal::Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            // SI_USER (kill), SI_QUEUE (sigqueue), SI_TKILL (tgkill): a process sent it.
            let from_process = matches!(info.ssi_code, libc::SI_USER | libc::SI_QUEUE | libc::SI_TKILL);
            if FORWARDED.contains(&sig) && from_process {
                out.push(sig);
            }
        }
        out
    }

    /// Passes `sig` on to process `pid`.
    pub fn forward(&self, pid: Pid, sig: nix::sys::signal::Signal) {
        match nix::sys::signal::kill(pid, sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => log::warn!("supervisor: passing {sig} on to {pid}: {e}"),
        }
    }
}

/// Lets a stopped task go on; one that died meanwhile reports its exit next.
fn go_on(pid: Pid, sig: Option<nix::sys::signal::Signal>) {
    match ptrace::cont(pid, sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => log::warn!("ptrace: cannot continue {pid}: {e}"),
    }
}

fn raw(result: Result<i64, Errno>) -> u64 {
    match result {
        Ok(v) => v as u64,
        Err(e) => (-(e as i64)) as u64,
    }
}

#[cfg(test)]
mod tests;
