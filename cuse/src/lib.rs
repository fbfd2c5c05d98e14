//! vfio-shim-cuse: a character device served from userspace through /dev/cuse.
//!
//! Layers, like fuser's (which has no CUSE: it answers CUSE_INIT with ENOSYS):
//! - [`ll`]: the kernel ABI, request parsing and reply building; no I/O.
//! - [`channel`]: the /dev/cuse file descriptor: read one request, writev one reply.
//! - [`device`]: the device API, [`CuseDevice`] and what each request hands it.
//! - [`session`]: the CUSE_INIT handshake and the worker loop dispatching to a [`CuseDevice`].
//! - [`retry`]: the FUSE_IOCTL_RETRY engine for `_IO()` ioctls that carry their size in their
//!   first u32 (`argsz`), VFIO's style.
//! - [`registry`]: what every legacy VFIO node shares: the shim core, the opens, adoption by
//!   the preload (handshake [`registry::VFIO_SHIM_CUSE_ADOPT`]), the lock and its DMA rules.
//! - [`container`]: the legacy VFIO container (`vfio/vfio`), one shim-core container per open.
//! - [`group_node`]: a legacy VFIO group (`vfio/<N>`).
//! - [`callers`]: the daemon's reach into its callers' memory and fds ([`callers::Callers`]):
//!   the kernel's, or `fake_callers` on the fake backend for the host tests (`served_tests`).
//! - `test_device`: a tiny VFIO-style device for the VM test (feature `test-device`).
//!
//! Kernel facts this relies on, with file:line in the 7.3 sources: `docs/cuse.md`.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod callers;
pub mod channel;
pub mod container;
pub mod device;
#[cfg(test)]
pub mod fake_callers;
pub mod group_node;
pub mod ll;
pub mod registry;
pub mod retry;
#[cfg(test)]
mod served_tests;
pub mod session;
#[cfg(any(test, feature = "test-device"))]
pub mod test_device;

pub use device::{Caller, CuseDevice, Ioctl, IoctlOutcome, PollRequest};
pub use session::{Config, Session, Stopper};
