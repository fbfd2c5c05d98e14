//! `libvfio_shim_driver.so`: the shim core over the kernel backend, behind three explicit C
//! entry points (`vfio_shim_driver_open/ioctl/close`). The VM tier links the legacy clients'
//! `.shim` builds against it, which proves the kernel backend on a real kernel before the
//! `LD_PRELOAD` library exists. It is test glue: one global lock, no fast path.
//!
//! Every fd it returns is a real kernel fd: a container is a dup of its iommufd, a group an
//! `O_PATH` fd of its sysfs directory, a device a dup of its bound cdev.
#![deny(unsafe_op_in_unsafe_fn)]

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_ulong, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};

use vfio_shim::{ContainerId, DeviceGrant, Errno, FdTarget, GroupId, GroupReply, Shim};
use vfio_shim_sys::own_memory::OwnMemory;
use vfio_shim_sys::KernelBackend;

#[derive(Clone, Copy, Debug)]
enum Emulated {
    Container(ContainerId),
    Group(GroupId),
    Device(DeviceGrant),
}

struct Driver {
    shim: Shim<KernelBackend>,
    fds: HashMap<c_int, Emulated>,
}

fn driver() -> &'static Mutex<Driver> {
    static DRIVER: OnceLock<Mutex<Driver>> = OnceLock::new();
    DRIVER.get_or_init(|| {
        let _ = env_logger::Builder::from_env(env_logger::Env::new().filter("VFIO_SHIM_LOG")).try_init();
        Mutex::new(Driver { shim: Shim::new(KernelBackend::new()), fds: HashMap::new() })
    })
}

fn fd_is_open(fd: c_int) -> bool {
    // SAFETY: F_GETFD reads descriptor flags only; any fd number is acceptable.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

fn dup_cloexec(fd: c_int) -> Result<c_int, Errno> {
    // SAFETY: duplicating a descriptor has no memory-safety preconditions.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        Err(Errno::last())
    } else {
        Ok(new)
    }
}

/// `/dev/vfio/<N>` -> `Some(N)`.
fn group_number(path: &str) -> Option<u32> {
    let n = path.strip_prefix("/dev/vfio/")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

fn fail(e: Errno) -> c_int {
    e.set();
    -1
}

/// Runs `f`, turning a panic into `EIO` instead of unwinding into C.
fn guarded(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| fail(Errno::EIO))
}

impl Driver {
    fn open(&mut self, path: &str) -> Result<c_int, Errno> {
        if path == "/dev/vfio/vfio" {
            let id = self.shim.open_container()?;
            let ctx = self.shim.container_iommufd(id).expect("just opened");
            let raw = self.shim.backend().iommufd_raw_fd(ctx).expect("live context");
            let fd = dup_cloexec(raw).inspect_err(|_| self.shim.close_container(id))?;
            self.fds.insert(fd, Emulated::Container(id));
            return Ok(fd);
        }
        let n = group_number(path).ok_or(Errno::ENOENT)?;
        let id = self.shim.open_group(n)?;
        let dir = std::ffi::CString::new(format!("/sys/kernel/iommu_groups/{n}")).expect("no NUL");
        // SAFETY: `dir` is a valid NUL-terminated path.
        let fd = unsafe { libc::open(dir.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if fd < 0 {
            let e = Errno::last();
            self.shim.close_group(id);
            return Err(e);
        }
        self.fds.insert(fd, Emulated::Group(id));
        Ok(fd)
    }

    fn ioctl(&mut self, kind: Emulated, req: u32, arg: c_ulong) -> Result<c_int, Errno> {
        let mut mem = OwnMemory { arg: arg as u64 };
        match kind {
            Emulated::Container(id) => {
                self.shim.container_ioctl(id, req, arg as u64, &mut mem).map(|v| v as c_int)
            }
            Emulated::Group(id) => {
                let fds = &self.fds;
                let resolve = |other: i32| match fds.get(&other) {
                    Some(Emulated::Container(c)) => FdTarget::Container(*c),
                    Some(_) => FdTarget::Other,
                    None if fd_is_open(other) => FdTarget::Other,
                    None => FdTarget::Closed,
                };
                match self.shim.group_ioctl(id, req, &mut mem, &resolve)? {
                    GroupReply::Done => Ok(0),
                    GroupReply::Device(grant) => {
                        let raw = self.shim.backend().device_raw_fd(grant.handle).expect("bound");
                        match dup_cloexec(raw) {
                            Ok(new) => {
                                self.fds.insert(new, Emulated::Device(grant));
                                Ok(new)
                            }
                            Err(e) => {
                                self.shim.close_device(grant);
                                Err(e)
                            }
                        }
                    }
                }
            }
            Emulated::Device(_) => unreachable!("device ioctls pass through"),
        }
    }

    fn close(&mut self, fd: c_int) {
        match self.fds.remove(&fd) {
            Some(Emulated::Container(id)) => self.shim.close_container(id),
            Some(Emulated::Group(id)) => self.shim.close_group(id),
            Some(Emulated::Device(grant)) => self.shim.close_device(grant),
            None => {}
        }
    }
}

/// `open(2)` for the legacy VFIO paths; anything else goes to libc.
///
/// # Safety
/// `path` must be a valid NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn vfio_shim_driver_open(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: the caller passes a valid C string, as for open(2).
    let cpath = unsafe { CStr::from_ptr(path) };
    let Ok(p) = cpath.to_str() else {
        // SAFETY: forwarding the caller's arguments unchanged.
        return unsafe { libc::open(path, flags) };
    };
    if p != "/dev/vfio/vfio" && group_number(p).is_none() {
        // SAFETY: forwarding the caller's arguments unchanged.
        return unsafe { libc::open(path, flags) };
    }
    guarded(|| {
        let mut d = driver().lock().unwrap_or_else(|e| e.into_inner());
        d.open(p).unwrap_or_else(fail)
    })
}

/// `ioctl(2)`: emulated container and group fds are served by the shim, device and other
/// fds go to the kernel.
///
/// # Safety
/// As `ioctl(2)`: `arg` must be what the request expects.
#[no_mangle]
pub unsafe extern "C" fn vfio_shim_driver_ioctl(fd: c_int, req: c_ulong, arg: c_ulong) -> c_int {
    let kind = {
        let d = driver().lock().unwrap_or_else(|e| e.into_inner());
        d.fds.get(&fd).copied()
    };
    match kind {
        None | Some(Emulated::Device(_)) => {
            // SAFETY: forwarding the caller's arguments unchanged.
            unsafe { libc::ioctl(fd, req as _, arg) }
        }
        Some(kind) => guarded(|| {
            let mut d = driver().lock().unwrap_or_else(|e| e.into_inner());
            d.ioctl(kind, req as u32, arg).unwrap_or_else(fail)
        }),
    }
}

/// `close(2)`, releasing the emulated object first.
#[no_mangle]
pub extern "C" fn vfio_shim_driver_close(fd: c_int) -> c_int {
    guarded(|| {
        let mut d = driver().lock().unwrap_or_else(|e| e.into_inner());
        d.close(fd);
        // SAFETY: closing a descriptor number under the same lock as the table update, so no
        // other thread can reuse the number in between.
        unsafe { libc::close(fd) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_paths() {
        assert_eq!(group_number("/dev/vfio/12"), Some(12));
        assert_eq!(group_number("/dev/vfio/vfio"), None);
        assert_eq!(group_number("/dev/vfio/devices/vfio0"), None);
        assert_eq!(group_number("/dev/vfio/"), None);
    }

}
