//! `libvfio_shim_preload.so`: loaded with `LD_PRELOAD` into an unmodified, dynamically linked
//! program, it serves the legacy VFIO container (`/dev/vfio/vfio`) and groups (`/dev/vfio/<N>`)
//! in-process through the shim core and its kernel backend (iommufd + VFIO cdevs).
//!
//! ABI note: `open`, `openat`, `fcntl` and `ioctl` are C-variadic. This toolchain cannot define
//! variadic functions, so the hooks are fixed-arity with the optional argument spelled out. On
//! x86-64 System V a variadic call passes its integer arguments in the same registers as a
//! fixed one, so the hook sees the caller's value; when the caller passed none the register
//! holds garbage, which is only ever read where libc would read it too (`mode` with `O_CREAT` or
//! `O_TMPFILE`; `fcntl`'s argument for commands that take one, forwarded untouched).
//!
//! Pass-through cost for fds that are not ours: one relaxed byte load from a static table
//! ([`table::kind`]) and a tail call to libc; no allocation, lock or logging.
#![deny(unsafe_op_in_unsafe_fn)]

mod exec;
mod handoff;
mod real;
pub mod state;
pub mod table;

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_ulong, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use parking_lot::Mutex;
use vfio_shim::arg::ArgMemory;
use vfio_shim::Errno;
use vfio_shim_sys::own_memory::OwnMemory;

use real::real;
use state::{Object, State};
use table::Kind;

static STATE: Mutex<Option<State>> = Mutex::new(None);
/// Set once the process has any emulated object: until then `close_range` needs no care.
static ACTIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// The pid the state belongs to: set with the state, and by a fork child for its copy.
static OWNER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

thread_local! {
    /// Set while this thread is inside the shim, so a hook re-entered from our own code (a
    /// backend `open`, a logger write) goes straight to libc instead of deadlocking.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

fn init_logging() {
    if std::env::var_os("VFIO_SHIM_LOG").is_some() {
        let _ = env_logger::Builder::from_env(env_logger::Env::new().filter("VFIO_SHIM_LOG"))
            .format_timestamp(None)
            .try_init();
    }
}

/// Runs `f` on the process state with errno saved and restored on success, errno set on
/// failure, and panics stopped at the boundary (`EIO`).
fn emulate(f: impl FnOnce(&mut State) -> Result<c_int, Errno>) -> c_int {
    let saved = Errno::last_raw();
    INSIDE.with(|i| i.set(true));
    let out = catch_unwind(AssertUnwindSafe(|| {
        let mut guard = STATE.lock();
        let state = guard.get_or_insert_with(|| {
            init_logging();
            OWNER.store(vfio_shim_sys::process::current_pid(), std::sync::atomic::Ordering::Relaxed);
            ACTIVE.store(true, std::sync::atomic::Ordering::Relaxed);
            State::new()
        });
        f(state)
    }));
    INSIDE.with(|i| i.set(false));
    match out {
        Ok(Ok(v)) => {
            Errno::set_raw(saved);
            v
        }
        Ok(Err(e)) => {
            e.set();
            -1
        }
        Err(_) => {
            Errno::EIO.set();
            -1
        }
    }
}

fn inside() -> bool {
    INSIDE.with(|i| i.get()) || in_vfork_child()
}

/// In the child of a `vfork` (CPython's subprocess closes fds with `close_range` and execs
/// there): it runs in our memory, state included, but with its own copy of our fds, so
/// releasing an object there would close the child's copies and forget the parent's. Every
/// hook passes straight through to libc in it. A real fork child owns its copy of the state
/// (`after_fork_child`). Checked only once the process has objects: no cost before.
fn in_vfork_child() -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    ACTIVE.load(Relaxed) && OWNER.load(Relaxed) != vfio_shim_sys::process::current_pid()
}

#[derive(Clone, Copy)]
enum Target {
    Container,
    Group(u32),
}

/// Whether `path` names a legacy VFIO node we serve.
///
/// # Safety
/// `path` is null or a valid C string.
#[inline]
unsafe fn classify(path: *const c_char) -> Option<Target> {
    if path.is_null() {
        return None;
    }
    // Cheap reject before measuring the string: every path we serve starts with "/dev/v".
    // SAFETY: `path` is a valid C string, so at least its first bytes up to NUL are readable.
    let head = unsafe { [*path as u8, if *path == 0 { 0 } else { *path.add(1) as u8 }] };
    if head != [b'/', b'd'] {
        return None;
    }
    // SAFETY: as above.
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    if vfio_shim::nodes::is_container_path(bytes) {
        Some(Target::Container)
    } else {
        vfio_shim::nodes::group_number(bytes).map(Target::Group)
    }
}

fn open_emulated(t: Target, flags: c_int) -> c_int {
    emulate(|s| {
        let r = match t {
            Target::Container => s.open_container(flags),
            Target::Group(n) => s.open_group(n, flags),
        };
        s.sync_internal();
        r
    })
}

// ------------------------------------------------------------------------------- open

/// One hook per libc open entry point. Only absolute `/dev/vfio/vfio` and `/dev/vfio/<N>` are
/// served; everything else (relative paths under a dirfd included) goes to libc.
macro_rules! open_hook {
    ($name:ident, $real:ident, ($($arg:ident: $ty:ty),*), $path:ident, $flags:ident) => {
        /// # Safety
        /// As the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
            // SAFETY: `path` comes from the caller of the libc function: null or a C string.
            match unsafe { classify($path) } {
                Some(t) if !inside() => open_emulated(t, $flags),
                // SAFETY: forwarding the caller's arguments.
                _ => unsafe { (real().$real)($($arg),*) },
            }
        }
    };
}

open_hook!(open, open, (path: *const c_char, flags: c_int, mode: libc::mode_t), path, flags);
open_hook!(open64, open64, (path: *const c_char, flags: c_int, mode: libc::mode_t), path, flags);
open_hook!(__open_2, open_2, (path: *const c_char, flags: c_int), path, flags);
open_hook!(__open64_2, open64_2, (path: *const c_char, flags: c_int), path, flags);
open_hook!(openat, openat, (dirfd: c_int, path: *const c_char, flags: c_int, mode: libc::mode_t), path, flags);
open_hook!(openat64, openat64, (dirfd: c_int, path: *const c_char, flags: c_int, mode: libc::mode_t), path, flags);

// ------------------------------------------------------------------------ close / dup

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

/// The application's view of one of our internal fds: not open.
fn not_open() -> c_int {
    Errno::EBADF.set();
    -1
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

// ------------------------------------------------------------------------------ ioctl

const KVM_SET_DEVICE_ATTR: c_ulong = vfio_shim::abi::KVM_SET_DEVICE_ATTR as c_ulong;

/// # Safety
/// As `ioctl(2)`: `arg` is what `req` expects.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: c_ulong) -> c_int {
    let kind = table::kind(fd);
    if kind == Kind::None || inside() {
        if req == KVM_SET_DEVICE_ATTR && !inside() {
            return kvm_set_device_attr(fd, arg);
        }
        // SAFETY: forwarding the caller's arguments.
        return unsafe { (real().ioctl)(fd, req, arg) };
    }
    match kind {
        Kind::Internal => not_open(),
        // The VFS answers these before any driver; our container and group files are
        // character devices on devtmpfs like type1's, so the kernel answers them the same.
        Kind::Container | Kind::Group if vfio_shim::abi::is_generic_vfs_ioctl(req as u32) => {
            // SAFETY: forwarding the caller's arguments to the caller's own fd.
            unsafe { (real().ioctl)(fd, req, arg) }
        }
        // Device fds are real cdevs: the kernel serves them, except the two requests that
        // carry group ids or group fds.
        Kind::Device => match req as u32 {
            vfio_shim::abi::VFIO_DEVICE_GET_PCI_HOT_RESET_INFO => emulate(|s| s.hot_reset_info(fd, arg)),
            vfio_shim::abi::VFIO_DEVICE_PCI_HOT_RESET => emulate(|s| s.hot_reset(fd, arg)),
            // SAFETY: forwarding the caller's arguments.
            _ => unsafe { (real().ioctl)(fd, req, arg) },
        },
        _ => emulate(|s| match s.object(fd) {
            Some(Object::Container(id)) => s.container_ioctl(id, req as u32, arg),
            Some(Object::Group(id)) => s.closing(|s| s.group_ioctl(id, req as u32, arg)),
            _ => Err(Errno::EBADF),
        }),
    }
}

/// KVM's VFIO device learns about groups for coherency and (on some platforms) interrupt
/// bypass. An emulated group is not a file KVM knows, so `FILE_ADD`/`FILE_DEL` of one becomes
/// the same request for each of the group's device cdevs (which KVM accepts since 6.6).
fn kvm_set_device_attr(fd: c_int, arg: c_ulong) -> c_int {
    use vfio_shim::abi::{kvm_device_attr, KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, KVM_DEV_VFIO_FILE_DEL};
    use zerocopy::FromBytes;
    // SAFETY: `arg` is the program's own argument for the request it made.
    let mut mem = unsafe { OwnMemory::new(arg) };
    let passthrough = |a: c_ulong| {
        // SAFETY: forwarding the program's own request and argument.
        unsafe { (real().ioctl)(fd, KVM_SET_DEVICE_ATTR, a) }
    };
    let Ok(attr) = vfio_shim::arg::read_struct::<kvm_device_attr>(&mut mem, 0) else {
        return passthrough(arg);
    };
    if attr.group != KVM_DEV_VFIO_FILE || !(attr.attr == KVM_DEV_VFIO_FILE_ADD || attr.attr == KVM_DEV_VFIO_FILE_DEL) {
        return passthrough(arg);
    }
    let mut file_fd = [0u8; 4];
    if mem.read_user(attr.addr, &mut file_fd).is_err() {
        return passthrough(arg);
    }
    let file_fd = i32::read_from_bytes(&file_fd).expect("4 bytes");
    if table::kind(file_fd) != Kind::Group {
        return passthrough(arg);
    }
    emulate(|s| {
        let Some(Object::Group(g)) = s.object(file_fd) else {
            return Err(Errno::EBADF);
        };
        s.shim.kvm_group_file(g, fd, attr.attr == KVM_DEV_VFIO_FILE_ADD).map(|()| 0)
    })
}

// ------------------------------------------------------------------------ SCM_RIGHTS

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

// ------------------------------------------------------------------------------ exec

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

// ------------------------------------------------------------------ constructor, fork

extern "C" fn before_fork() {
    // Hold the state lock across fork so the child never inherits it mid-update.
    std::mem::forget(STATE.lock());
}

extern "C" fn after_fork_parent() {
    // SAFETY: `before_fork` left the lock held by this thread.
    unsafe { STATE.force_unlock() };
    // The child holds every object too now: our closes must not tear them down under it.
    if let Some(state) = STATE.lock().as_mut() {
        state.shim.mark_all_shared();
    }
}

extern "C" fn after_fork_child() {
    OWNER.store(vfio_shim_sys::process::current_pid(), std::sync::atomic::Ordering::Relaxed);
    vfio_shim_sys::own_memory::forget_pid();
    // SAFETY: the child's only thread is the one that held the lock in `before_fork`.
    unsafe { STATE.force_unlock() };
    if let Some(state) = STATE.lock().as_mut() {
        state.mark_inherited();
    }
}

extern "C" fn constructor() {
    real::init();
    // SAFETY: registering plain extern "C" handlers with no captured state.
    unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork_parent), Some(after_fork_child)) };
    if std::env::var_os("VFIO_SHIM_HANDOFF").is_some() {
        emulate(|s| {
            if let Some((app_fds, mut kept, h)) = exec::inherited() {
                match s.adopt_handoff(&app_fds, &mut kept, h) {
                    Ok(()) => log::debug!("exec: adopted {} container/group fd(s)", app_fds.len()),
                    Err(e) => log::warn!("exec: the handoff could not be adopted: {e}"),
                }
                s.sync_internal();
            }
            Ok(0)
        });
    }
}

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = constructor;

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
