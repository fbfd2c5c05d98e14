//! Starting a program under the supervisor (docs/supervisor.md, "Shape"): a child installs the
//! filter with its listener and stops; the supervisor takes the listener with `pidfd_getfd`,
//! seizes the child with the ptrace options that follow every thread, fork and exec, and lets
//! it `execve` the program.

use std::ffi::{c_char, CString};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::caller::{take_fd, thread_pidfd};
use crate::seccomp::{install_with_listener, FilterProgram, Listener};

/// A program started under the filter, traced, and running.
#[derive(Debug)]
pub struct Started {
    pub pid: Pid,
    pub listener: Listener,
}

/// Starts `path` with `argv` and `envp` under `filter`. The child's exit status is 127 when
/// `execve` fails with `ENOENT`, 126 when it fails otherwise (as a shell reports them).
pub fn start(path: &CString, argv: &[CString], envp: &[CString], filter: &FilterProgram) -> Result<Started, Errno> {
    // Everything the child needs is made before the fork: it allocates nothing.
    let mut argv_p: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let mut pipe = [0i32; 2];
    // SAFETY: `pipe` is two ints the kernel fills.
    Errno::result(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just made and are owned here alone.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    // SAFETY: the child runs only async-signal-safe calls (prctl, seccomp, write, kill, close,
    // execve, _exit) on memory prepared above, then execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Errno::last());
    }
    if pid == 0 {
        // SAFETY: as above; every pointer is to memory made before the fork.
        unsafe { child(path, &argv_p, &envp_p, pipe[1], filter) }
    }
    drop(wr);
    let pid = Pid::from_raw(pid);
    let started = (|| {
        let mut number = [0u8; 4];
        let n = nix::unistd::read(rd.as_fd(), &mut number)?;
        if n != 4 {
            // The child could not install the filter: its exit says why.
            return Err(Errno::EPERM);
        }
        let listener_fd = i32::from_ne_bytes(number);
        match waitpid(pid, Some(WaitPidFlag::WUNTRACED))? {
            WaitStatus::Stopped(_, Signal::SIGSTOP) => {}
            other => {
                log::error!("supervisor: the child {pid} did not stop before exec: {other:?}");
                return Err(Errno::ECHILD);
            }
        }
        let pidfd = thread_pidfd(pid.as_raw() as u32)?;
        let listener = Listener::new(take_fd(pidfd.as_fd(), listener_fd)?);
        let options = Options::PTRACE_O_TRACESECCOMP
            | Options::PTRACE_O_TRACECLONE
            | Options::PTRACE_O_TRACEFORK
            | Options::PTRACE_O_TRACEVFORK
            | Options::PTRACE_O_TRACEEXEC
            | Options::PTRACE_O_TRACEEXIT
            | Options::PTRACE_O_EXITKILL;
        ptrace::seize(pid, options)?;
        kill(pid, Signal::SIGCONT)?;
        Ok(listener)
    })();
    match started {
        Ok(listener) => Ok(Started { pid, listener }),
        Err(e) => {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            Err(e)
        }
    }
}

/// The child's side, after the fork.
///
/// # Safety
/// Called once in a fresh fork child; `argv` and `envp` are NULL-terminated arrays of C strings
/// that live until the exec.
unsafe fn child(
    path: &CString,
    argv: &[*const c_char],
    envp: &[*const c_char],
    report: i32,
    filter: &FilterProgram,
) -> ! {
    let listener = match install_with_listener(filter) {
        Ok(fd) => fd,
        // SAFETY: leaving the child without running any of the parent's exit handlers.
        Err(e) => unsafe { libc::_exit(if e == Errno::EACCES { 126 } else { 125 }) },
    };
    let number = listener.to_ne_bytes();
    // SAFETY: writes 4 bytes we own to our end of the pipe; stops ourselves until seized and
    // continued; closes our listener copy (the supervisor has its own); execs.
    unsafe {
        libc::write(report, number.as_ptr().cast(), 4);
        libc::close(report);
        libc::kill(libc::getpid(), libc::SIGSTOP);
        libc::close(listener);
        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        let code = if *libc::__errno_location() == libc::ENOENT { 127 } else { 126 };
        libc::_exit(code)
    }
}
