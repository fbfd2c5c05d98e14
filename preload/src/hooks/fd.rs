//! The fd family: `close`, `dup`/`dup2`/`dup3`, `fcntl` and `close_range`/`closefrom` keep the
//! fd table in step with the program's fds; fds that are not ours pass straight through.

use crate::*;

/// # Safety
/// As `close(2)`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    match table::kind(fd) {
        // SAFETY: forwarding the caller's argument.
        Kind::None => return unsafe { (real().close)(fd) },
        // SAFETY: as above; our own code closing the fds it holds.
        _ if inside() => return unsafe { (real().close)(fd) },
        Kind::Internal => return not_open(),
        _ => {}
    }
    crate::trace::traced(|| format!("close(fd={fd})"), || close_ours(fd))
}

fn close_ours(fd: c_int) -> c_int {
    // The table update and the real close happen under one lock: closing first would let
    // another thread get the same number and have it forgotten here.
    let mut rc = 0;
    let mut err = 0;
    emulate(|s| {
        s.closing(|s| {
            let last = s.forget(fd);
            // SAFETY: closing the caller's fd.
            rc = unsafe { (real().close)(fd) };
            err = Errno::last_raw();
            if let Some(obj) = last {
                s.release(obj);
            }
        });
        Ok(0)
    });
    if rc < 0 {
        Errno::set_raw(err);
    }
    rc
}

/// Runs a real dup-like call on our fd `old` and records the new fd as an alias, dropping
/// whatever object `target` named before (dup2/dup3 close it implicitly).
fn dup_emulated(old: c_int, target: Option<c_int>, call: impl FnOnce() -> c_int) -> c_int {
    let mut rc = -1;
    let mut err = 0;
    emulate(|s| {
        rc = call();
        err = Errno::last_raw();
        if rc >= 0 {
            if rc as usize >= table::MAX_FDS {
                // SAFETY: closing the descriptor just created; we could not track it.
                unsafe { (real().close)(rc) };
                rc = -1;
                err = libc::EMFILE;
                return Ok(0);
            }
            s.closing(|s| {
                // dup2/dup3 closed the target's file already.
                if let Some(t) = target {
                    if t != old {
                        if let Some(obj) = s.forget(t) {
                            s.release(obj);
                        }
                    }
                }
                if target != Some(old) {
                    s.alias(old, rc);
                }
            });
        }
        Ok(0)
    });
    if rc < 0 {
        Errno::set_raw(err);
    }
    rc
}

/// The dup family: pass-through (two byte loads, nothing else) unless `old` or `target` is ours.
/// From one of the shim's internal fds is `EBADF` (not open for the application); onto one
/// would close the shim's own file under it, so it is refused with `EBUSY` (which dup2 can
/// return for a number being opened concurrently).
#[inline(always)]
fn dup_like(old: c_int, target: Option<c_int>, call: impl FnOnce() -> c_int) -> c_int {
    let (from, onto) = (table::kind(old), target.map_or(Kind::None, table::kind));
    if (from == Kind::None && onto == Kind::None) || inside() {
        return call();
    }
    if from == Kind::Internal {
        return not_open();
    }
    if onto == Kind::Internal {
        Errno::EBUSY.set();
        return -1;
    }
    dup_emulated(old, target, call)
}

/// # Safety
/// As `dup(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: forwarding the caller's argument.
    dup_like(fd, None, || unsafe { (real().dup)(fd) })
}

/// # Safety
/// As `dup2(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    dup_like(old, Some(new), || unsafe { (real().dup2)(old, new) })
}

/// # Safety
/// As `dup3(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    dup_like(old, Some(new), || unsafe { (real().dup3)(old, new, flags) })
}

fn fcntl_common(fd: c_int, cmd: c_int, arg: c_ulong, f: real::FcntlFn) -> c_int {
    // SAFETY (both calls): forwarding the caller's arguments.
    let call = || unsafe { f(fd, cmd, arg) };
    match table::kind(fd) {
        Kind::None => call(),
        _ if inside() => call(),
        Kind::Internal => not_open(),
        _ if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC => dup_emulated(fd, None, call),
        _ => call(),
    }
}

/// # Safety
/// As `fcntl(2)`.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_common(fd, cmd, arg, real().fcntl)
}

/// # Safety
/// As `fcntl64(2)`.
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_common(fd, cmd, arg, real().fcntl64)
}

/// `close_range(2)`: our objects in the range are released first; the shim's internal fds are
/// left open (the application never had them), by closing the gaps around them.
///
/// # Safety
/// As `close_range(2)`.
#[no_mangle]
pub unsafe extern "C" fn close_range(first: libc::c_uint, last: libc::c_uint, flags: c_int) -> c_int {
    if !ACTIVE.load(std::sync::atomic::Ordering::Relaxed) || inside() {
        // SAFETY: forwarding the caller's arguments.
        return unsafe { (real().close_range)(first, last, flags) };
    }
    close_range_emulated(first, last, flags)
}

/// glibc's `closefrom(3)`: `close_range(lowfd, ~0U, 0)` without an error.
///
/// # Safety
/// As `closefrom(3)`.
#[no_mangle]
pub unsafe extern "C" fn closefrom(lowfd: c_int) {
    if !ACTIVE.load(std::sync::atomic::Ordering::Relaxed) || inside() {
        // SAFETY: forwarding the caller's argument.
        return unsafe { (real().closefrom)(lowfd) };
    }
    close_range_emulated(lowfd.max(0) as libc::c_uint, libc::c_uint::MAX, 0);
}

/// `[first, last]` minus the (sorted, in-range) fds in `holes`, as inclusive ranges.
fn gaps_around(first: libc::c_uint, last: libc::c_uint, holes: &[c_int]) -> Vec<(u64, u64)> {
    let mut gaps = Vec::new();
    let mut from = u64::from(first);
    for fd in holes.iter().map(|f| *f as u64) {
        if fd > from {
            gaps.push((from, fd - 1));
        }
        from = fd + 1;
    }
    if from <= u64::from(last) {
        gaps.push((from, u64::from(last)));
    }
    gaps
}

fn close_range_emulated(first: libc::c_uint, last: libc::c_uint, flags: c_int) -> c_int {
    let mut rc = 0;
    let mut err = 0;
    emulate(|s| {
        let hi = last.min(c_int::MAX as libc::c_uint) as c_int;
        let (ours, _) = s.fds_in(first as c_int, hi);
        let mut gone = Vec::new();
        if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
            gone = ours.into_iter().filter_map(|fd| s.forget(fd)).collect();
        }
        let (_, internal) = s.fds_in(first as c_int, hi);
        let gaps = gaps_around(first, last, &internal);
        for (lo, hi) in gaps {
            // SAFETY: closing a range of the caller's fds that holds none of the shim's.
            let r = unsafe { (real().close_range)(lo as libc::c_uint, hi as libc::c_uint, flags) };
            if r < 0 && rc == 0 {
                rc = r;
                err = Errno::last_raw();
            }
        }
        // Our objects go once their files are closed.
        s.closing(|s| gone.into_iter().for_each(|obj| s.release(obj)));
        Ok(0)
    });
    if rc < 0 {
        Errno::set_raw(err);
    }
    rc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_range_gaps_skip_internal_fds() {
        assert_eq!(gaps_around(3, 10, &[]), vec![(3, 10)]);
        assert_eq!(gaps_around(3, 10, &[3]), vec![(4, 10)]);
        assert_eq!(gaps_around(3, 10, &[5, 6, 10]), vec![(3, 4), (7, 9)]);
        let max = libc::c_uint::MAX;
        assert_eq!(gaps_around(3, max, &[7]), vec![(3, 6), (8, u64::from(max))]);
        assert_eq!(gaps_around(5, 5, &[5]), vec![]);
    }
}
