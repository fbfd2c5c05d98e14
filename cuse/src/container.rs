//! The legacy VFIO container served on the CUSE node: one container of the shim core per open
//! file, answering with type1's semantics through the kernel backend.
//!
//! Two kinds of open:
//! - **adopted** by the preload: the process that opened the node serves the container
//!   in-process (it can install device fds and pin its own memory, which a CUSE daemon cannot).
//!   It says so with [`VFIO_SHIM_CUSE_ADOPT`] right after `open`; the daemon then keeps nothing
//!   but the open's record, freed on RELEASE.
//! - **served** here, for clients without the preload: the container lives in the daemon and
//!   is created at the first VFIO ioctl. Groups are not served yet, and a real group rejects a
//!   CUSE fd (GR:156), so such a container never gets an IOMMU: it answers what a type1
//!   container without a group answers (API version, extensions, `EINVAL` for the rest).

use std::collections::HashMap;
use std::sync::Mutex;

use log::{debug, info};
use nix::errno::Errno;
use vfio_shim::abi::*;
use vfio_shim::arg::BufferArg;
use vfio_shim::{ContainerId, Shim};
use vfio_shim_sys::KernelBackend;

use crate::retry::{argsz_step, ArgszSpec, Step};
use crate::session::{Caller, CuseDevice, Ioctl, IoctlOutcome};

pub use vfio_shim::abi::{VFIO_SHIM_CUSE_ADOPT, VFIO_SHIM_CUSE_ADOPT_PROTOCOL as ADOPT_PROTOCOL};

#[derive(Debug)]
enum OpenState {
    /// Opened, no VFIO ioctl yet.
    Fresh,
    /// The preload serves it in-process.
    Adopted,
    /// Served here.
    Served(ContainerId),
}

#[derive(Debug)]
struct Open {
    pid: u32,
    state: OpenState,
}

/// The `vfio/vfio` device.
pub struct ContainerDevice {
    limit: u32,
    inner: Mutex<Inner>,
}

struct Inner {
    shim: Shim<KernelBackend>,
    opens: HashMap<u64, Open>,
    next_fh: u64,
}

impl ContainerDevice {
    /// `ioctl_limit`: the session's per-direction limit.
    pub fn new(ioctl_limit: u32) -> Self {
        Self {
            limit: ioctl_limit,
            inner: Mutex::new(Inner { shim: Shim::new(KernelBackend::new()), opens: HashMap::new(), next_fh: 1 }),
        }
    }

    /// Opens currently alive, and how many of them are adopted (tests, logs).
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let adopted = inner.opens.values().filter(|o| matches!(o.state, OpenState::Adopted)).count();
        (inner.opens.len(), adopted)
    }

    /// The argument layout of each container ioctl: how much of the caller's struct to fetch
    /// and whether it is written back. Value-argument commands need no memory.
    fn spec(cmd: u32) -> Option<ArgszSpec> {
        match cmd {
            VFIO_IOMMU_GET_INFO => Some(ArgszSpec::in_out(minsz::IOMMU_INFO as u32).reading(u32::MAX)),
            VFIO_IOMMU_MAP_DMA => Some(ArgszSpec::input(minsz::DMA_MAP as u32)),
            VFIO_IOMMU_UNMAP_DMA => Some(ArgszSpec::in_out(minsz::DMA_UNMAP as u32)),
            VFIO_IOMMU_DIRTY_PAGES => Some(ArgszSpec::input(minsz::DIRTY_BITMAP as u32).reading(u32::MAX)),
            _ => None,
        }
    }
}

impl CuseDevice for ContainerDevice {
    fn open(&self, caller: &Caller, _flags: u32) -> Result<u64, Errno> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let fh = inner.next_fh;
        inner.next_fh += 1;
        inner.opens.insert(fh, Open { pid: caller.pid, state: OpenState::Fresh });
        debug!("open fh {fh} by pid {} uid {}", caller.pid, caller.uid);
        Ok(fh)
    }

    fn release(&self, fh: u64, _caller: &Caller) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = inner.opens.remove(&fh) {
            if let OpenState::Served(id) = open.state {
                inner.shim.close_container(id);
            }
            debug!("release fh {fh} (opened by pid {})", open.pid);
        }
    }

    fn ioctl(&self, fh: u64, caller: &Caller, io: &Ioctl<'_>) -> IoctlOutcome {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Inner { shim, opens, .. } = &mut *inner;
        let Some(open) = opens.get_mut(&fh) else { return IoctlOutcome::Error(Errno::EBADF) };

        if io.cmd == VFIO_SHIM_CUSE_ADOPT {
            return match open.state {
                OpenState::Fresh => {
                    open.state = OpenState::Adopted;
                    info!("fh {fh}: adopted by the preload in pid {}", caller.pid);
                    IoctlOutcome::Done { result: ADOPT_PROTOCOL, out: Vec::new() }
                }
                // Too late: the daemon already serves it.
                _ => IoctlOutcome::Error(Errno::EBUSY),
            };
        }
        let id = match open.state {
            // An adopted open is the preload's: its ioctls never come here (a process that
            // received the fd without the preload would be talking to a container it cannot see).
            OpenState::Adopted => return IoctlOutcome::Error(Errno::EBADFD),
            OpenState::Served(id) => id,
            OpenState::Fresh => match shim.open_container() {
                Ok(id) => {
                    open.state = OpenState::Served(id);
                    id
                }
                Err(e) => return IoctlOutcome::Error(e),
            },
        };

        let (mut mem, out_len) = match Self::spec(io.cmd) {
            None => (BufferArg::default(), 0),
            Some(spec) => match argsz_step(io, spec, self.limit) {
                Step::Ready(a) => (BufferArg::new(a.data.to_vec()), a.out_len as usize),
                Step::Reply(r) => return r,
            },
        };
        match shim.container_ioctl(id, io.cmd, io.arg, &mut mem) {
            Ok(v) => {
                let mut out = mem.bytes;
                out.truncate(out_len);
                IoctlOutcome::Done { result: v as i32, out }
            }
            Err(e) => IoctlOutcome::Error(e),
        }
    }
}
