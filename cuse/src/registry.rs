//! The state every legacy VFIO node shares: one shim core, the opens of all nodes (file
//! handles are unique across nodes), the adoption handshake, the callers held for maps, and
//! the core's lock with its DMA-in-flight rules.
//!
//! Each open of a node is one of:
//! - **adopted** by the preload: the process that opened the node serves it in-process (it can
//!   install device fds and pin its own private memory, which a CUSE daemon cannot). It says so
//!   with [`VFIO_SHIM_CUSE_ADOPT`] right after `open`; the daemon then keeps nothing but the
//!   open's record, freed on RELEASE.
//! - **served** here, for clients without the preload: the container or group lives in the
//!   daemon (`container.rs`, `group_node.rs`).
//!
//! One client never reaches another's objects: file handles are only learnt through the
//! caller's own fds, and the identify command answers only the daemon's own threads.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use log::{debug, info, warn};
use nix::errno::Errno;
use vfio_shim::abi::VFIO_SHIM_CUSE_ADOPT_PROTOCOL as ADOPT_PROTOCOL;
use vfio_shim::{ContainerId, FdTarget, GroupId, Shim};
use vfio_shim_sys::status_registry::{Publisher, Server};

use crate::callers::{CallerFd, Callers, KernelCallers};
use crate::device::{Caller, IoctlOutcome};

pub use vfio_shim::abi::VFIO_SHIM_CUSE_ADOPT;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node {
    Container,
    Group(u32),
    /// `noiommu-<N>`.
    NoIommuGroup(u32),
}

#[derive(Debug)]
pub(crate) enum OpenState {
    /// A container node opened, no VFIO ioctl yet.
    Fresh,
    /// The preload serves it in-process. An adopted group node keeps its idle group open in
    /// the core: that holds type1's one-opener slot for the group across every process.
    Adopted(Option<GroupId>),
    Container(ContainerId),
    Group(GroupId),
}

#[derive(Debug)]
pub(crate) struct Open {
    pub(crate) pid: u32,
    pub(crate) node: Node,
    pub(crate) state: OpenState,
    /// The "load the preload" line was logged for this open.
    told: bool,
}

impl Open {
    /// Logs once per open that `what` needs the preload.
    pub(crate) fn tell_preload(&mut self, fh: u64, what: &str) {
        if !self.told {
            self.told = true;
            warn!(
                "pid {} (fh {fh}): {what} needs the preload; run the program under \
                 `vfio-shim run` (LD_PRELOAD=libvfio_shim_preload.so)",
                self.pid
            );
        }
    }
}

/// Every node's state, over the callers `C` (the kernel's, or the fake world of host tests).
///
/// Locking: `inner` guards the core. A container's MAP or UNMAP releases it for its kernel
/// call (the pin), with the container in flight in the core: another client's container calls
/// go on meanwhile; a call on the same container, and every call that is not a container
/// ioctl (opens, releases, group calls), waits for `dma_done` until none it could disturb is
/// in flight.
pub struct Registry<C: Callers = KernelCallers> {
    pub(crate) limit: u32,
    pub(crate) callers: C,
    inner: Mutex<Inner<C>>,
    pub(crate) dma_done: Condvar,
    container_rdev: OnceLock<u64>,
    /// Callers held, reused while [`Callers::is_current`] (a map then costs two syscalls
    /// instead of opening /proc again).
    held: Mutex<HashMap<u32, Arc<C::Process>>>,
    /// The daemon's entry for `vfio-shim status` (the kernel registry's only: host tests
    /// publish nothing).
    status: Option<Mutex<Publisher>>,
}

pub(crate) struct Inner<C: Callers> {
    pub(crate) shim: Shim<C::Backend>,
    pub(crate) opens: HashMap<u64, Open>,
    next_fh: u64,
    /// Calls waiting in [`Registry::lock`] for no DMA call to be in flight: while one waits,
    /// no new container call begins, so busy containers cannot starve it.
    pub(crate) quiesce_waiters: usize,
}

impl Registry<KernelCallers> {
    /// The daemon's registry over the kernel. `ioctl_limit`: the sessions' per-direction limit.
    pub fn new(ioctl_limit: u32) -> Arc<Registry<KernelCallers>> {
        let mut backend = vfio_shim_sys::KernelBackend::new();
        // The daemon never hands a device fd out (a preload that adopts the group does, and
        // warns in the program's own name), so a no-IOMMU open it refuses is no user's.
        backend.warn_noiommu_opens(false);
        let mut reg = Registry::with_core(
            ioctl_limit,
            KernelCallers,
            Shim::with_config(backend, vfio_shim_sys::type1_params::config_or_default()),
        );
        Arc::get_mut(&mut reg).expect("just made").status = Some(Mutex::new(Publisher::new(Server::Daemon)));
        reg
    }
}

impl<C: Callers> Registry<C> {
    /// A registry serving `callers` from `shim`.
    pub fn with_core(ioctl_limit: u32, callers: C, shim: Shim<C::Backend>) -> Arc<Registry<C>> {
        Arc::new(Registry {
            limit: ioctl_limit,
            callers,
            inner: Mutex::new(Inner { shim, opens: HashMap::new(), next_fh: 1, quiesce_waiters: 0 }),
            dma_done: Condvar::new(),
            container_rdev: OnceLock::new(),
            held: Mutex::new(HashMap::new()),
            status: None,
        })
    }

    /// Republishes every container for `vfio-shim status`, each under the pid that opened it
    /// (after each call that may have changed them).
    pub(crate) fn publish_status(&self) {
        let Some(status) = &self.status else { return };
        let (containers, holders) = {
            let inner = self.lock_any();
            let holders: HashMap<ContainerId, i32> = inner
                .opens
                .values()
                .filter_map(|o| match o.state {
                    OpenState::Container(id) => Some((id, o.pid as i32)),
                    _ => None,
                })
                .collect();
            (inner.shim.containers_status(), holders)
        };
        let mut publisher = status.lock().unwrap_or_else(|e| e.into_inner());
        publisher.publish(&containers, |id| holders.get(&id).copied().unwrap_or(0));
    }

    /// The container node's device number (`st_rdev`), known once its CUSE_INIT is done.
    pub fn set_container_rdev(&self, rdev: u64) {
        let _ = self.container_rdev.set(rdev);
    }

    /// Runs `f` on the core, settled (tests, diagnostics).
    pub fn with_shim<R>(&self, f: impl FnOnce(&mut Shim<C::Backend>) -> R) -> R {
        f(&mut self.lock().shim)
    }

    /// The core with no container's DMA call in flight: for calls that may touch any object.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner<C>> {
        let mut inner = self.lock_any();
        if inner.shim.any_in_flight() {
            inner.quiesce_waiters += 1;
            while inner.shim.any_in_flight() {
                inner = self.dma_done.wait(inner).unwrap_or_else(|e| e.into_inner());
            }
            inner.quiesce_waiters -= 1;
            // Container calls held back for it go on once the lock is free again.
            self.dma_done.notify_all();
        }
        inner
    }

    /// The core as it is, DMA calls in flight or not: for reads and for the container path.
    pub(crate) fn lock_any(&self) -> MutexGuard<'_, Inner<C>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens currently alive, and how many of them are adopted (tests, logs).
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock_any();
        let adopted = inner.opens.values().filter(|o| matches!(o.state, OpenState::Adopted(_))).count();
        (inner.opens.len(), adopted)
    }

    pub(crate) fn insert(inner: &mut Inner<C>, pid: u32, node: Node, state: OpenState) -> u64 {
        let fh = inner.next_fh;
        inner.next_fh += 1;
        inner.opens.insert(fh, Open { pid, node, state, told: false });
        fh
    }

    pub(crate) fn release(&self, fh: u64) {
        // The held callers hold the last file each mapped: a container going away is a good
        // time to let those go (the next map holds its caller again, a few syscalls).
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let mut inner = self.lock();
        let Some(open) = inner.opens.remove(&fh) else { return };
        match open.state {
            OpenState::Container(id) => inner.shim.close_container(id),
            OpenState::Group(id) | OpenState::Adopted(Some(id)) => inner.shim.close_group(id),
            OpenState::Fresh | OpenState::Adopted(None) => {}
        }
        debug!("release fh {fh} ({:?}, opened by pid {})", open.node, open.pid);
    }

    /// What a container of ours answers every request but GET_API_VERSION, CHECK_EXTENSION and
    /// SET_IOMMU before reading its argument: EINVAL with no IOMMU driver set yet (never used,
    /// or used without SET_IOMMU), ENOTTY with the no-IOMMU driver; `None` with type1's.
    pub(crate) fn container_answer_before_argument(&self, fh: u64) -> Option<Errno> {
        let inner = self.lock_any();
        match inner.opens.get(&fh).map(|o| &o.state) {
            Some(OpenState::Fresh) => Some(Errno::EINVAL),
            Some(OpenState::Container(id)) if inner.shim.noiommu_driver(*id) => Some(Errno::ENOTTY),
            Some(OpenState::Container(id)) if inner.shim.iommu_version(*id).is_none() => Some(Errno::EINVAL),
            _ => None,
        }
    }

    /// The adoption handshake, the same on every node.
    pub(crate) fn adopt(&self, fh: u64, caller: &Caller) -> IoctlOutcome {
        let mut inner = self.lock();
        let Inner { shim, opens, .. } = &mut *inner;
        let Some(open) = opens.get_mut(&fh) else { return IoctlOutcome::Error(Errno::EBADF) };
        open.state = match open.state {
            OpenState::Fresh => OpenState::Adopted(None),
            // A group is opened here at open(2) (for type1's one-opener rule) but holds
            // nothing until SET_CONTAINER: it can still be handed over.
            OpenState::Group(id) if shim.group_is_idle(id) => OpenState::Adopted(Some(id)),
            // Too late: the daemon already serves it.
            _ => return IoctlOutcome::Error(Errno::EBUSY),
        };
        info!("fh {fh} ({:?}): adopted by the preload in pid {}", open.node, caller.pid);
        IoctlOutcome::Done { result: ADOPT_PROTOCOL, out: Vec::new() }
    }

    /// What the caller's fd `fd` is, for `SET_CONTAINER`. Called without the lock held: the
    /// identify command goes through the kernel to the container node's own workers.
    pub(crate) fn resolve_fd(&self, caller: &Caller, fd: i32) -> Result<FdTarget, Errno> {
        let process = self.caller(caller.pid)?;
        let fh = match self.callers.fd(&process, fd, self.container_rdev.get().copied())? {
            CallerFd::Closed => return Ok(FdTarget::Closed),
            CallerFd::Other => return Ok(FdTarget::Other),
            CallerFd::ContainerNode(fh) => fh,
        };
        let mut inner = self.lock();
        let Inner { shim, opens, .. } = &mut *inner;
        let Some(open) = opens.get_mut(&fh) else { return Ok(FdTarget::Other) };
        Ok(match open.state {
            OpenState::Container(id) => FdTarget::Container(id),
            OpenState::Fresh => {
                let id = shim.open_container()?;
                open.state = OpenState::Container(id);
                FdTarget::Container(id)
            }
            // The preload's container is invisible here: to this daemon it is no container.
            _ => FdTarget::Other,
        })
    }

    /// The process of caller thread `tid`, held (see [`Callers::hold`]).
    pub(crate) fn caller(&self, tid: u32) -> Result<Arc<C::Process>, Errno> {
        const MAX_HELD: usize = 64; // three fds each for the kernel's
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = held.get(&tid) {
            if self.callers.is_current(c) {
                return Ok(Arc::clone(c));
            }
            held.remove(&tid);
        }
        let c = Arc::new(self.callers.hold(tid)?);
        if held.len() >= MAX_HELD {
            held.retain(|_, c| self.callers.is_current(c));
            if held.len() >= MAX_HELD {
                held.clear();
            }
        }
        held.insert(tid, Arc::clone(&c));
        Ok(c)
    }

    pub(crate) fn forget_caller(&self, tid: u32) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).remove(&tid);
    }
}
