//! `sendmsg`/`recvmsg`: containers and groups passed with `SCM_RIGHTS` travel with a handoff
//! memfd the receiver's preload adopts (handoff.rs).

use crate::*;

/// # Safety
/// As `sendmsg(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> libc::ssize_t {
    // SAFETY: forwarding the caller's arguments.
    let pass = || unsafe { (real().sendmsg)(fd, msg, flags) };
    if msg.is_null() || !ACTIVE.load(std::sync::atomic::Ordering::Relaxed) || inside() {
        return pass();
    }
    // SAFETY: the caller's msghdr, valid for the duration of the call.
    let m = unsafe { &*msg };
    if m.msg_control.is_null() || m.msg_controllen == 0 || m.msg_controllen > RECV_ROOM {
        return pass();
    }
    // SAFETY: the caller's control buffer of `msg_controllen` bytes.
    let ctrl = unsafe { std::slice::from_raw_parts(m.msg_control as *const u8, m.msg_controllen) };
    let ours = |f: c_int| matches!(table::kind(f), Kind::Container | Kind::Group);
    if !handoff::cmsgs(ctrl).filter(handoff::is_rights).any(|c| handoff::fds_of(c.data).any(ours)) {
        return pass();
    }
    send_with_handoff(fd, m, ctrl, flags)
}

/// The application's message with the handoff appended. The fds to append are duplicated
/// under the state lock, so the send itself (which may block) runs without it.
fn send_with_handoff(fd: c_int, m: &libc::msghdr, ctrl: &[u8], flags: c_int) -> libc::ssize_t {
    use std::os::fd::AsRawFd;
    let app_fds = handoff::rights(ctrl);
    let mut prepared = None;
    emulate(|s| {
        let made = (|| {
            let Some((h, extras)) = s.handoff_for(&app_fds)? else {
                return Ok(None);
            };
            if app_fds.len() + extras.len() + 1 > handoff::SCM_MAX_FD {
                return Err(Errno::ETOOMANYREFS);
            }
            let memfd = handoff::memfd_of(&h.encode()?)?;
            let dups = extras.iter().map(|f| state::dup_owned(*f, true)).collect::<Result<Vec<_>, _>>()?;
            log::debug!("sendmsg: {} container/group fd(s) handed off with {} fd(s)", h.slots.len(), dups.len());
            Ok(Some((dups, memfd)))
        })();
        // The kernel would send the message: without a handoff the receiver gets bare fds.
        prepared =
            made.inspect_err(|e| log::warn!("sendmsg: no handoff for our container/group fds: {e}")).ok().flatten();
        Ok(0)
    });
    let Some((dups, memfd)) = prepared else {
        // SAFETY: forwarding the caller's message.
        return unsafe { (real().sendmsg)(fd, m, flags) };
    };
    let mut appended: Vec<c_int> = dups.iter().map(|d| d.as_raw_fd()).collect();
    appended.push(memfd.as_raw_fd());
    let buf = handoff::with_appended(ctrl, &appended);
    let mut mine = *m;
    mine.msg_control = buf.as_ptr() as *mut _;
    mine.msg_controllen = buf.len();
    // SAFETY: the caller's message with our control buffer, live across the call.
    let rc = unsafe { (real().sendmsg)(fd, &mine, flags) };
    let err = Errno::last_raw();
    drop((dups, memfd));
    if rc >= 0 {
        emulate(|s| {
            s.mark_sent(&app_fds);
            Ok(0)
        });
    }
    Errno::set_raw(err);
    rc
}

/// The receive buffer the kernel fills in place of the application's, and the room a
/// handoff can add to what the application's own buffer would hold: every fd one message
/// can carry. Bigger application buffers are passed through untouched.
const RECV_BUF: usize = 4096;
const HANDOFF_ROOM: usize = 16 + 4 * handoff::SCM_MAX_FD + 4;
const RECV_ROOM: usize = RECV_BUF - HANDOFF_ROOM;

/// # Safety
/// As `recvmsg(2)`.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> libc::ssize_t {
    // SAFETY: the caller's msghdr (or null), valid and writable for the duration of the call.
    match unsafe { msg.as_mut() } {
        Some(m) if !m.msg_control.is_null() && m.msg_controllen > 0 && m.msg_controllen <= RECV_ROOM && !inside() => {
            recv_adopting(fd, m, flags)
        }
        // SAFETY: forwarding the caller's arguments.
        _ => unsafe { (real().recvmsg)(fd, msg, flags) },
    }
}

/// Receives into a buffer with room for a handoff, adopts what one describes, and gives the
/// application what the kernel would have given it in its own buffer.
fn recv_adopting(fd: c_int, m: &mut libc::msghdr, flags: c_int) -> libc::ssize_t {
    let saved = Errno::last_raw();
    let room = m.msg_controllen;
    // Not zeroed: only what the kernel wrote is read back (no memset on this path).
    let mut buf = std::mem::MaybeUninit::<[u64; RECV_BUF / 8]>::uninit();
    let mut mine = *m;
    mine.msg_control = buf.as_mut_ptr().cast();
    mine.msg_controllen = room + HANDOFF_ROOM;
    // SAFETY: the caller's message with our control buffer of `msg_controllen` bytes.
    let rc = unsafe { (real().recvmsg)(fd, &mut mine, flags) };
    if rc < 0 {
        return rc;
    }
    m.msg_namelen = mine.msg_namelen;
    m.msg_flags = mine.msg_flags;
    let len = mine.msg_controllen.min(RECV_BUF);
    if len == 0 {
        m.msg_controllen = 0;
        Errno::set_raw(saved);
        return rc;
    }
    // SAFETY: the kernel wrote the first `len` bytes of `buf`.
    let got = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), len) };
    // SAFETY: the caller's control buffer of `room` bytes, writable.
    let out = unsafe { std::slice::from_raw_parts_mut(m.msg_control as *mut u8, room) };
    let delivered = catch_unwind(AssertUnwindSafe(|| {
        handoff::deliver(got, out, |app_fds, extras, h| {
            emulate(|s| {
                let r = s.adopt_handoff(app_fds, extras, h);
                s.sync_internal();
                match &r {
                    Ok(()) => {
                        log::debug!("recvmsg: adopted {} container/group fd(s)", app_fds.len())
                    }
                    Err(e) => log::warn!("recvmsg: a vfio-shim handoff could not be adopted: {e}"),
                }
                r.map(|()| 0)
            });
        })
    }));
    // A panic here is a bug of ours: the message stays received, without control data.
    let (used, truncated) = delivered.unwrap_or((0, true));
    m.msg_controllen = used;
    if truncated {
        m.msg_flags |= libc::MSG_CTRUNC;
    }
    Errno::set_raw(saved);
    rc
}
