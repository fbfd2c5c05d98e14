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
//!
//! This file holds the process state and what every hook uses (`emulate`, `inside`), the
//! constructor and the fork handlers; the exported hooks live in `hooks/`, a file per family
//! (open, fd, ioctl, SCM_RIGHTS, exec); container ioctls, which pin without the state lock, in
//! `dma.rs`; `VFIO_SHIM_TRACE`'s lines in `trace.rs`.
//!
//! Locking: one mutex guards the state; a container's MAP or UNMAP releases it for its kernel
//! call (the pin), with the container marked in flight. Calls on another container go on
//! meanwhile; every other call, and a call on the same container, waits until no call it
//! could disturb is in flight (type1 holds one lock per container).
#![deny(unsafe_op_in_unsafe_fn)]

mod dma;
mod exec;
mod handoff;
mod hooks;
mod real;
pub mod state;
pub mod table;
mod trace;

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_ulong, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use parking_lot::{Condvar, Mutex, MutexGuard};
use vfio_shim::arg::ArgMemory;
use vfio_shim::Errno;
use vfio_shim_sys::own_memory::OwnMemory;

use real::real;
use state::{Object, State};
use table::Kind;

static STATE: Mutex<Option<State>> = Mutex::new(None);
/// Signalled whenever a container's DMA call finishes (see `dma.rs`), and when a call that
/// waited for all of them to finish stops waiting.
static DMA_DONE: Condvar = Condvar::new();
/// Calls waiting for no DMA call to be in flight (`quiescent`, `before_fork`); changed only
/// with the state lock held. While one waits, no new container call begins.
static QUIESCE_WAITERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
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
/// failure, and panics stopped at the boundary (`EIO`). `f` sees a state with no DMA call in
/// flight: it may touch any object.
fn emulate(f: impl FnOnce(&mut State) -> Result<c_int, Errno>) -> c_int {
    emulate_locked(|guard| {
        let state = quiescent(guard);
        let r = f(state);
        state.publish_status();
        r
    })
}

/// As [`emulate`], with the lock itself: for a call that releases it during a kernel call.
fn emulate_locked(f: impl FnOnce(&mut MutexGuard<'_, Option<State>>) -> Result<c_int, Errno>) -> c_int {
    let saved = Errno::last_raw();
    INSIDE.with(|i| i.set(true));
    let out = catch_unwind(AssertUnwindSafe(|| {
        let mut guard = STATE.lock();
        guard.get_or_insert_with(|| {
            init_logging();
            OWNER.store(vfio_shim_sys::process::current_pid(), std::sync::atomic::Ordering::Relaxed);
            ACTIVE.store(true, std::sync::atomic::Ordering::Relaxed);
            State::new()
        });
        f(&mut guard)
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

/// The state once no container's DMA call is in flight (waiting for them with the lock
/// released).
fn quiescent<'a>(guard: &'a mut MutexGuard<'_, Option<State>>) -> &'a mut State {
    wait_until_settled(guard);
    guard.as_mut().expect("the state is made before any call")
}

/// Waits, lock released, until no container's DMA call is in flight; new container calls
/// hold back meanwhile (`QUIESCE_WAITERS`), so two busy containers cannot starve this one.
fn wait_until_settled(guard: &mut MutexGuard<'_, Option<State>>) {
    use std::sync::atomic::Ordering::Relaxed;
    if !guard.as_ref().is_some_and(|s| s.shim.any_in_flight()) {
        return;
    }
    QUIESCE_WAITERS.fetch_add(1, Relaxed);
    while guard.as_ref().is_some_and(|s| s.shim.any_in_flight()) {
        DMA_DONE.wait(guard);
    }
    QUIESCE_WAITERS.fetch_sub(1, Relaxed);
    // Container calls held back for it go on once the lock is free again.
    DMA_DONE.notify_all();
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

/// The application's view of one of our internal fds: not open.
fn not_open() -> c_int {
    Errno::EBADF.set();
    -1
}

// ------------------------------------------------------------------ constructor, fork

extern "C" fn before_fork() {
    // Hold the state lock across fork so the child never inherits it mid-update, nor a DMA
    // call in flight in a thread it does not have.
    let mut guard = STATE.lock();
    wait_until_settled(&mut guard);
    std::mem::forget(guard);
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
        state.status.forget_in_child();
        state.publish_status();
    }
}

/// At exit the status entry goes (the state itself is never dropped). A thread still inside
/// a call holds the lock: the entry then stays until `vfio-shim status` sees the pid gone.
extern "C" fn at_exit() {
    if let Some(mut guard) = STATE.try_lock() {
        if let Some(state) = guard.as_mut() {
            state.status.remove();
        }
    }
}

extern "C" fn constructor() {
    real::init();
    trace::init();
    // SAFETY: registering plain extern "C" handlers with no captured state.
    unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork_parent), Some(after_fork_child)) };
    // SAFETY: registering a plain extern "C" handler with no captured state.
    unsafe { libc::atexit(at_exit) };
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
