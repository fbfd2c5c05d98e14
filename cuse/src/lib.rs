//! vfio-shim-cuse: a character device served from userspace through /dev/cuse.
//!
//! Layers, like fuser's (which has no CUSE: it answers CUSE_INIT with ENOSYS):
//! - [`ll`]: the kernel ABI, request parsing and reply building; no I/O.
//! - [`channel`]: the /dev/cuse file descriptor: read one request, writev one reply.
//! - [`device`]: the device API, [`CuseDevice`] and what each request hands it.
//! - [`session`]: the CUSE_INIT handshake and the worker loop dispatching to a [`CuseDevice`].
//! - [`retry`]: the FUSE_IOCTL_RETRY engine for `_IO()` ioctls that carry their size in their
//!   first u32 (`argsz`), VFIO's style.
//! - [`container`]: the legacy VFIO container (`vfio/vfio`), one shim-core container per open,
//!   or adopted by the preload (handshake [`container::VFIO_SHIM_CUSE_ADOPT`]).
//! - `test_device`: a tiny VFIO-style device for the VM test (feature `test-device`).
//!
//! Kernel facts this relies on, with file:line in the 7.3 sources: `docs/cuse.md`.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod channel;
pub mod container;
pub mod device;
pub mod ll;
pub mod retry;
pub mod session;
#[cfg(any(test, feature = "test-device"))]
pub mod test_device;

pub use device::{Caller, CuseDevice, Ioctl, IoctlOutcome, PollRequest};
pub use session::{Config, Session, Stopper};
