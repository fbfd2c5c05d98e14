//! The open family (`open`, `open64`, `__open_2`, `openat`, ...): absolute `/dev/vfio/vfio`,
//! `/dev/vfio/<N>` and `/dev/vfio/noiommu-<N>` are served by the core, every other path goes to
//! libc.

use crate::*;

#[derive(Clone, Copy)]
enum Target {
    Container,
    /// The group's number, and whether the node is `noiommu-<N>`.
    Group(u32, bool),
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
        match vfio_shim::nodes::group_number(bytes) {
            Some(n) => Some(Target::Group(n, false)),
            None => vfio_shim::nodes::noiommu_group_number(bytes).map(|n| Target::Group(n, true)),
        }
    }
}

fn open_emulated(t: Target, flags: c_int) -> c_int {
    emulate(|s| {
        let r = match t {
            Target::Container => s.open_container(flags),
            Target::Group(n, noiommu) => s.open_group(n, noiommu, flags),
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
                Some(t) if !inside() => crate::trace::traced(
                    // SAFETY: `classify` found a C string at `path`.
                    || vfio_shim::trace::describe_open(unsafe { CStr::from_ptr($path) }.to_bytes(), $flags),
                    || open_emulated(t, $flags),
                ),
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
