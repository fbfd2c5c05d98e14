//! The exec family: the program's containers and groups survive `execve` as a handoff the new
//! image's preload adopts (exec.rs).

use crate::*;

extern "C" {
    static environ: *const *const c_char;
}

/// Runs an exec with the handoff of our objects that survive it in the new environment, and
/// takes the handoff back when the exec returns (it failed).
fn exec_with_handoff(envp: *const *const c_char, call: impl FnOnce(*const *const c_char) -> c_int) -> c_int {
    if !ACTIVE.load(std::sync::atomic::Ordering::Relaxed) || inside() {
        return call(envp);
    }
    let mut prepared = None;
    emulate(|s| {
        prepared = s.prepare_exec().inspect_err(|e| log::warn!("exec: no handoff: {e}")).ok().flatten();
        Ok(0)
    });
    let Some(handoff) = prepared else {
        return call(envp);
    };
    let env = exec::environment(envp, &handoff.env);
    let rc = call(env.as_ptr());
    let err = Errno::last_raw();
    drop(handoff);
    Errno::set_raw(err);
    rc
}

/// # Safety
/// As `execve(2)`.
#[no_mangle]
pub unsafe extern "C" fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    // SAFETY: forwarding the caller's arguments with a valid environment array.
    exec_with_handoff(envp, |e| unsafe { (real().execve)(path, argv, e) })
}

/// # Safety
/// As `execv(3)`.
#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: `environ` is the process environment, read as libc's execv reads it.
    let envp = unsafe { environ };
    // SAFETY: forwarding the caller's arguments with a valid environment array.
    exec_with_handoff(envp, |e| unsafe { (real().execve)(path, argv, e) })
}

/// # Safety
/// As `execvp(3)`.
#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: `environ` is the process environment, read as libc's execvp reads it.
    let envp = unsafe { environ };
    // SAFETY: forwarding the caller's arguments with a valid environment array.
    exec_with_handoff(envp, |e| unsafe { (real().execvpe)(file, argv, e) })
}

/// # Safety
/// As `execvpe(3)`.
#[no_mangle]
pub unsafe extern "C" fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    // SAFETY: forwarding the caller's arguments with a valid environment array.
    exec_with_handoff(envp, |e| unsafe { (real().execvpe)(file, argv, e) })
}

/// # Safety
/// As `fexecve(3)`.
#[no_mangle]
pub unsafe extern "C" fn fexecve(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    // SAFETY: forwarding the caller's arguments with a valid environment array.
    exec_with_handoff(envp, |e| unsafe { (real().fexecve)(fd, argv, e) })
}

/// # Safety
/// As `execveat(2)`.
#[no_mangle]
pub unsafe extern "C" fn execveat(
    dirfd: c_int,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarding the caller's arguments with a valid environment array.
    exec_with_handoff(envp, |e| unsafe { (real().execveat)(dirfd, path, argv, e, flags) })
}
