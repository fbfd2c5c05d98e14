//! Container ioctls. A MAP or UNMAP makes its kernel call (the pin or unpin, which can take
//! seconds for a GiB) with the state lock released: the core checks it and marks the
//! container in flight (`Shim::container_ioctl_begin`), the kernel call runs on its own
//! (`DetachedDma`), and the core records it (`Shim::container_ioctl_finish`). Another
//! container's calls go on meanwhile; a call on the same container waits for it, as on type1's
//! per-container lock, and so does every call that is not a container ioctl (`emulate`), which
//! new container calls let pass first (`QUIESCE_WAITERS`).

use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;

use parking_lot::MutexGuard;
use vfio_shim::backend::DetachedDma;
use vfio_shim::{ContainerStep, Errno};
use vfio_shim_sys::own_memory::OwnMemory;

use crate::state::{Object, State};
use crate::{DMA_DONE, QUIESCE_WAITERS};

/// An ioctl on one of our container fds (the generic VFS ioctls excepted).
pub(crate) fn container_ioctl(
    guard: &mut MutexGuard<'_, Option<State>>,
    fd: c_int,
    req: u32,
    arg: u64,
) -> Result<c_int, Errno> {
    let id = loop {
        let state = guard.as_mut().expect("the state is made before any call");
        match state.object(fd) {
            // A call waiting for everything to settle goes first, or a busy loop on another
            // container could hold it back for ever.
            Some(Object::Container(_)) if QUIESCE_WAITERS.load(Relaxed) > 0 => DMA_DONE.wait(guard),
            Some(Object::Container(id)) if state.shim.container_in_flight(id) => DMA_DONE.wait(guard),
            Some(Object::Container(id)) => break id,
            // The number was closed and reused meanwhile.
            _ => return Err(Errno::EBADF),
        }
    };
    let state = guard.as_mut().expect("the state is made before any call");
    // SAFETY: `arg` is the program's own argument for the request it made.
    let mut mem = unsafe { OwnMemory::new(arg) };
    let pending = match state.shim.container_ioctl_begin(id, req, arg, &mut mem) {
        Ok(ContainerStep::Done(v)) => {
            state.publish_status();
            return Ok(v as c_int);
        }
        Ok(ContainerStep::Native(pending)) => pending,
        Err(e) => return Err(e),
    };
    // From here the finish must run, whatever happens: the container is in flight until then.
    let ran = pending.detached().map(|call| {
        MutexGuard::unlocked(guard, || catch_unwind(AssertUnwindSafe(|| call.run())).unwrap_or(Err(Errno::EIO)))
    });
    let state = guard.as_mut().expect("the state outlives every call");
    let result = catch_unwind(AssertUnwindSafe(|| state.shim.container_ioctl_finish(pending, ran, &mut mem)));
    let counts = state.shim.container_counts(id);
    state.status.counts(id, counts);
    DMA_DONE.notify_all();
    result.unwrap_or(Err(Errno::EIO)).map(|v| v as c_int)
}
