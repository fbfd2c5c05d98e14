//! `VFIO_SHIM_TRACE`: one line per legacy call this library serves (open of a container or
//! group node, ioctl on one of our files, close of one), with the native calls it became,
//! written to a file (appended, one `write` per line) or to stderr (`VFIO_SHIM_TRACE=stderr`);
//! `VFIO_SHIM_TRACE_FORMAT=json` for JSON lines. Read once at load. Off, a traced call costs
//! one relaxed load; calls on fds that are not ours never get here.

use std::ffi::c_int;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use vfio_shim::trace::{self, Line, Native, Node};
use vfio_shim::Errno;
use vfio_shim_sys::native_trace;
use vfio_shim_sys::own_memory::OwnMemory;

static ON: AtomicBool = AtomicBool::new(false);

struct Sink {
    /// `None`: stderr.
    path: Option<PathBuf>,
    json: bool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Reads the environment (from the constructor).
pub(crate) fn init() {
    let Some(dest) = std::env::var_os("VFIO_SHIM_TRACE").filter(|d| !d.is_empty()) else {
        return;
    };
    let json = std::env::var_os("VFIO_SHIM_TRACE_FORMAT").is_some_and(|f| f == "json");
    let path = if dest == "stderr" { None } else { Some(PathBuf::from(dest)) };
    if SINK.set(Sink { path, json }).is_ok() {
        native_trace::enable();
        ON.store(true, Relaxed);
    }
}

#[inline]
pub(crate) fn on() -> bool {
    ON.load(Relaxed)
}

/// Runs the legacy call `f`, described by `describe` (called first, while its arguments are
/// as the program passed them), and writes its line when tracing is on. errno is the call's.
#[inline]
pub(crate) fn traced(describe: impl FnOnce() -> String, f: impl FnOnce() -> c_int) -> c_int {
    if !on() {
        return f();
    }
    let call = describe();
    // Native calls made outside any legacy call (adopting an exec handoff at load) get a
    // line of their own rather than being charged to this one.
    let earlier = native_trace::take();
    if !earlier.is_empty() {
        emit("(outside a legacy call)", 0, None, &earlier, SystemTime::now(), 0);
    }
    let wall = SystemTime::now();
    let start = Instant::now();
    let rc = f();
    let errno = Errno::last();
    let micros = start.elapsed().as_micros() as u64;
    let natives = native_trace::take();
    emit(&call, rc.into(), (rc < 0).then_some(errno), &natives, wall, micros);
    errno.set();
    rc
}

/// `NAME(fd=N, args)` of an ioctl on one of our files.
pub(crate) fn describe_ioctl(node: Node, fd: c_int, req: u32, arg: u64) -> String {
    // SAFETY: `arg` is the program's argument for the request it made; it is only read here.
    let mut mem = unsafe { OwnMemory::new(arg) };
    trace::describe_ioctl(node, fd, req, arg, &mut mem)
}

fn emit(
    call: &str,
    result: i64,
    errno: Option<Errno>,
    natives: &[native_trace::NativeCall],
    wall: SystemTime,
    micros: u64,
) {
    let Some(sink) = SINK.get() else { return };
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let natives: Vec<Native<'_>> = natives.iter().map(|n| Native { call: &n.call, result: n.result }).collect();
    let line = Line {
        time: (since.as_secs(), since.subsec_micros()),
        pid: vfio_shim_sys::process::current_pid(),
        call,
        result,
        errno,
        natives: &natives,
        micros,
    };
    let text = if sink.json { line.json() } else { line.text() };
    // One write per line: lines of several processes appending to one file stay whole.
    let written = match &sink.path {
        None => std::io::stderr().write_all(text.as_bytes()),
        Some(path) => std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes())),
    };
    if let Err(e) = written {
        log::warn!("trace: cannot write to {:?}: {e}", sink.path);
    }
}
