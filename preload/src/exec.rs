//! exec: a container or group fd the application keeps open across `exec` (no
//! `O_CLOEXEC`) stays what it was under type1, where the kernel objects simply survive.
//!
//! The exec hooks hand the objects to the new image as `SCM_RIGHTS` hands them to another
//! process ([`crate::handoff`]): the native fds they need are kept open across the exec,
//! the description goes in a memfd, and `VFIO_SHIM_HANDOFF=<memfd>:<app fds>:<native fds>`
//! in the new environment tells the new image's preload (in its constructor) what to adopt.
//! Everything else of ours is close-on-exec, as the application's `O_CLOEXEC` fds are.
//! glibc's `execl*`, `posix_spawn` and `system` call the kernel through internal symbols
//! that no preload can interpose: after those the new image gets the bare fds
//! (docs/limitations.md).

use std::ffi::{c_char, c_int, CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use vfio_shim::Errno;

use crate::handoff;
use crate::real::real;
use crate::state::{dup_owned, set_cloexec, Object, State};

const VAR: &str = "VFIO_SHIM_HANDOFF";

/// What an exec in progress keeps open; dropped (closed) if the exec fails.
/// Its fds are held only to be closed if the exec fails (a successful one never returns).
pub struct ExecHandoff {
    _memfd: OwnedFd,
    /// Duplicates of the native fds, without close-on-exec (the backend's own stay as they
    /// are, so a failed exec changes nothing of theirs).
    _kept: Vec<OwnedFd>,
    pub env: CString,
}

fn is_cloexec(fd: c_int) -> bool {
    // SAFETY: F_GETFD only reads descriptor flags.
    let flags = unsafe { (real().fcntl)(fd, libc::F_GETFD, 0) };
    flags < 0 || flags & libc::FD_CLOEXEC != 0
}

fn list(fds: &[c_int]) -> String {
    fds.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(",")
}

impl State {
    /// Prepares the handoff of every container and group fd that survives the exec.
    pub fn prepare_exec(&self) -> Result<Option<ExecHandoff>, Errno> {
        let app_fds: Vec<c_int> = self
            .fds_in(0, c_int::MAX)
            .0
            .into_iter()
            .filter(|fd| matches!(self.object(*fd), Some(Object::Container(_) | Object::Group(_))))
            .filter(|fd| !is_cloexec(*fd))
            .collect();
        let Some((h, native)) = self.handoff_for(&app_fds)? else { return Ok(None) };
        let memfd = handoff::memfd_of(&h.encode()?)?;
        set_cloexec(memfd.as_raw_fd(), false);
        let kept = native.iter().map(|fd| dup_owned(*fd, false)).collect::<Result<Vec<_>, _>>()?;
        let numbers: Vec<c_int> = kept.iter().map(|fd| fd.as_raw_fd()).collect();
        let env = format!("{VAR}={}:{}:{}", memfd.as_raw_fd(), list(&app_fds), list(&numbers));
        Ok(Some(ExecHandoff { _memfd: memfd, _kept: kept, env: CString::new(env).expect("digits") }))
    }
}

/// `envp` without any earlier handoff variable, plus `ours`; null-terminated. The pointers
/// borrow from `envp` and `ours`, which outlive the exec call.
pub fn environment(envp: *const *const c_char, ours: &CStr) -> Vec<*const c_char> {
    let mut out = Vec::new();
    let mut p = envp;
    while !p.is_null() {
        // SAFETY: `envp` is a null-terminated array of C strings (exec's contract).
        let entry = unsafe { *p };
        if entry.is_null() {
            break;
        }
        // SAFETY: as above, `entry` is a C string.
        let bytes = unsafe { CStr::from_ptr(entry) }.to_bytes();
        if !(bytes.starts_with(VAR.as_bytes()) && bytes.get(VAR.len()) == Some(&b'=')) {
            out.push(entry);
        }
        // SAFETY: still inside the array: the terminator has not been reached.
        p = unsafe { p.add(1) };
    }
    out.push(ours.as_ptr());
    out.push(std::ptr::null());
    out
}

fn parse_list(s: &str) -> Option<Vec<c_int>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split(',').map(|f| f.parse().ok().filter(|f| *f >= 0)).collect()
}

/// The fds an exec handoff names: (memfd, application fds, native fds).
pub fn parse_var(v: &str) -> Option<(c_int, Vec<c_int>, Vec<c_int>)> {
    let mut parts = v.split(':');
    let memfd = parts.next()?.parse().ok().filter(|f: &c_int| *f >= 0)?;
    let app = parse_list(parts.next()?)?;
    let kept = parse_list(parts.next()?)?;
    parts.next().is_none().then_some((memfd, app, kept))
}

/// In the new image's constructor: the handoff of the image before, if any. Returns what to
/// adopt; the variable is removed so it reaches no further exec.
pub fn inherited() -> Option<(Vec<c_int>, Vec<Option<OwnedFd>>, vfio_shim::handoff::Handoff)> {
    let v = std::env::var(VAR).ok()?;
    std::env::remove_var(VAR);
    let Some((memfd, app, kept)) = parse_var(&v) else {
        log::warn!("exec: malformed {VAR}; nothing adopted");
        return None;
    };
    let h = handoff::read_handoff(memfd);
    // SAFETY: closing the handoff memfd the image before left us, read or not.
    unsafe { (real().close)(memfd) };
    let Some(h) = h else {
        log::warn!("exec: {VAR} names no handoff; nothing adopted");
        return None;
    };
    let kept = kept
        .into_iter()
        .map(|fd| {
            set_cloexec(fd, true);
            // SAFETY: the image before left this fd open for us alone (it is not in the
            // application's list), and nothing else in this image has seen it yet.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect();
    Some((app, kept, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable() {
        assert_eq!(parse_var("7:3,4:5,6,8"), Some((7, vec![3, 4], vec![5, 6, 8])));
        assert_eq!(parse_var("7:3:"), Some((7, vec![3], vec![])));
        for bad in ["", "7", "7:3", "x:3:4", "7:3:4:9", "7:-3:4", "7:3,,4:5"] {
            assert_eq!(parse_var(bad), None, "{bad}");
        }
    }

    #[test]
    fn environment_replaces_an_earlier_handoff() {
        let a = c"PATH=/bin";
        let old = c"VFIO_SHIM_HANDOFF=1:2:3";
        let near = c"VFIO_SHIM_HANDOFFX=1";
        let envp = [a.as_ptr(), old.as_ptr(), near.as_ptr(), std::ptr::null()];
        let ours = c"VFIO_SHIM_HANDOFF=9:3:4";
        let out = environment(envp.as_ptr(), ours);
        assert_eq!(out, vec![a.as_ptr(), near.as_ptr(), ours.as_ptr(), std::ptr::null()]);
    }
}
