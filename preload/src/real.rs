//! The real libc entry points, resolved once with `dlsym(RTLD_NEXT)` (in the library's
//! constructor, or at the first hook call if another constructor calls in earlier).
//! A missing symbol aborts with a message: there is nothing sane to fall back to.

use std::ffi::{c_char, c_int, c_ulong, c_void, CStr};
use std::sync::OnceLock;

pub type OpenFn = unsafe extern "C" fn(*const c_char, c_int, libc::mode_t) -> c_int;
pub type Open2Fn = unsafe extern "C" fn(*const c_char, c_int) -> c_int;
pub type OpenatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, libc::mode_t) -> c_int;
pub type CloseFn = unsafe extern "C" fn(c_int) -> c_int;
pub type DupFn = unsafe extern "C" fn(c_int) -> c_int;
pub type Dup2Fn = unsafe extern "C" fn(c_int, c_int) -> c_int;
pub type Dup3Fn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
pub type FcntlFn = unsafe extern "C" fn(c_int, c_int, c_ulong) -> c_int;
pub type IoctlFn = unsafe extern "C" fn(c_int, c_ulong, c_ulong) -> c_int;
pub type CloseRangeFn = unsafe extern "C" fn(libc::c_uint, libc::c_uint, c_int) -> c_int;
pub type ClosefromFn = unsafe extern "C" fn(c_int);
pub type ExecveFn = unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;
pub type FexecveFn = unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char) -> c_int;
pub type ExecveatFn =
    unsafe extern "C" fn(c_int, *const c_char, *const *const c_char, *const *const c_char, c_int) -> c_int;
pub type SendmsgFn = unsafe extern "C" fn(c_int, *const libc::msghdr, c_int) -> libc::ssize_t;
pub type ReadlinkFn = unsafe extern "C" fn(*const c_char, *mut c_char, libc::size_t) -> libc::ssize_t;
pub type RecvmsgFn = unsafe extern "C" fn(c_int, *mut libc::msghdr, c_int) -> libc::ssize_t;

pub struct Real {
    pub open: OpenFn,
    pub open64: OpenFn,
    pub open_2: Open2Fn,
    pub open64_2: Open2Fn,
    pub openat: OpenatFn,
    pub openat64: OpenatFn,
    pub close: CloseFn,
    pub dup: DupFn,
    pub dup2: Dup2Fn,
    pub dup3: Dup3Fn,
    pub fcntl: FcntlFn,
    pub fcntl64: FcntlFn,
    pub ioctl: IoctlFn,
    pub close_range: CloseRangeFn,
    pub closefrom: ClosefromFn,
    pub sendmsg: SendmsgFn,
    pub recvmsg: RecvmsgFn,
    pub readlink: ReadlinkFn,
    pub execve: ExecveFn,
    pub execvpe: ExecveFn,
    pub fexecve: FexecveFn,
    pub execveat: ExecveatFn,
}

static REAL: OnceLock<Real> = OnceLock::new();

fn die(msg: &[u8]) -> ! {
    // SAFETY: writing a static byte string to stderr, then aborting.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::abort()
    }
}

fn sym(name: &CStr) -> *mut c_void {
    // SAFETY: `name` is NUL-terminated; RTLD_NEXT finds the next definition after ours.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    if p.is_null() {
        die(b"vfio-shim preload: dlsym(RTLD_NEXT) failed for a libc entry point; aborting\n");
    }
    p
}

macro_rules! resolve {
    ($name:literal, $ty:ty) => {
        // SAFETY: the symbol is libc's function of exactly this type (glibc's prototypes;
        // the variadic ones take their optional argument in the same register, see lib.rs).
        unsafe { std::mem::transmute::<*mut c_void, $ty>(sym($name)) }
    };
}

fn resolve_all() -> Real {
    Real {
        open: resolve!(c"open", OpenFn),
        open64: resolve!(c"open64", OpenFn),
        open_2: resolve!(c"__open_2", Open2Fn),
        open64_2: resolve!(c"__open64_2", Open2Fn),
        openat: resolve!(c"openat", OpenatFn),
        openat64: resolve!(c"openat64", OpenatFn),
        close: resolve!(c"close", CloseFn),
        dup: resolve!(c"dup", DupFn),
        dup2: resolve!(c"dup2", Dup2Fn),
        dup3: resolve!(c"dup3", Dup3Fn),
        fcntl: resolve!(c"fcntl", FcntlFn),
        fcntl64: resolve!(c"fcntl64", FcntlFn),
        ioctl: resolve!(c"ioctl", IoctlFn),
        close_range: resolve!(c"close_range", CloseRangeFn),
        closefrom: resolve!(c"closefrom", ClosefromFn),
        sendmsg: resolve!(c"sendmsg", SendmsgFn),
        recvmsg: resolve!(c"recvmsg", RecvmsgFn),
        readlink: resolve!(c"readlink", ReadlinkFn),
        execve: resolve!(c"execve", ExecveFn),
        execvpe: resolve!(c"execvpe", ExecveFn),
        fexecve: resolve!(c"fexecve", FexecveFn),
        execveat: resolve!(c"execveat", ExecveatFn),
    }
}

/// The real functions. After the constructor this is one atomic load.
#[inline(always)]
pub fn real() -> &'static Real {
    match REAL.get() {
        Some(r) => r,
        None => REAL.get_or_init(resolve_all),
    }
}

pub fn init() {
    let _ = real();
}
