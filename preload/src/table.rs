//! Which fds are ours. The pass-through path reads one byte per fd from a static table with a
//! relaxed atomic load: no allocation, no lock, no logging. Everything else about our fds lives
//! in [`crate::state::State`] behind a mutex that only our fds ever take.

use std::sync::atomic::{AtomicU8, Ordering};

/// Fds at or above this are never ours (emulated objects get the lowest free numbers, and
/// the table is 1 MiB of zero pages that are only touched for fds we emulate).
pub const MAX_FDS: usize = 1 << 20;

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    None = 0,
    Container = 1,
    Group = 2,
    Device = 3,
    /// An fd the shim itself holds (a container's iommufd, a bound device cdev): invisible to
    /// the application, which never opened it, so its calls on the number get `EBADF`.
    Internal = 4,
}

static KINDS: [AtomicU8; MAX_FDS] = [const { AtomicU8::new(0) }; MAX_FDS];

#[inline(always)]
pub fn kind(fd: i32) -> Kind {
    if fd < 0 || fd as usize >= MAX_FDS {
        return Kind::None;
    }
    match KINDS[fd as usize].load(Ordering::Relaxed) {
        1 => Kind::Container,
        2 => Kind::Group,
        3 => Kind::Device,
        4 => Kind::Internal,
        _ => Kind::None,
    }
}

/// Only called with the state lock held, before the fd is handed to the caller or after it
/// is no longer theirs, so the relaxed order is enough.
pub fn set(fd: i32, k: Kind) {
    if fd >= 0 && (fd as usize) < MAX_FDS {
        KINDS[fd as usize].store(k as u8, Ordering::Relaxed);
    }
}
