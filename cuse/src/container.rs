//! The legacy VFIO container and groups served on CUSE nodes: `/dev/vfio/vfio` and, on kernels
//! without VFIO groups, `/dev/vfio/<N>`, all from one shim core over the kernel backend.
//!
//! Each open of a node is one of:
//! - **adopted** by the preload: the process that opened the node serves it in-process (it can
//!   install device fds and pin its own private memory, which a CUSE daemon cannot). It says so
//!   with [`VFIO_SHIM_CUSE_ADOPT`] right after `open`; the daemon then keeps nothing but the
//!   open's record, freed on RELEASE.
//! - **served** here, for clients without the preload: the container or group lives in the
//!   daemon. A group's `SET_CONTAINER` names the container by an fd of the caller, which the
//!   daemon duplicates (`pidfd_getfd`), checks to be its container node by device number, and
//!   identifies with [`VFIO_SHIM_CUSE_IDENTIFY`]. `MAP_DMA` pins the caller's shared memory by
//!   file (`/proc/<pid>/map_files` + `IOMMU_IOAS_MAP_FILE`); private memory and
//!   `GET_DEVICE_FD` answer [`NOT_WITHOUT_PRELOAD`] with one log line.
//!
//! One client never reaches another's objects: file handles are only learnt through the
//! caller's own fds, and the identify command answers only the daemon's own threads.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use log::{debug, info, warn};
use nix::errno::Errno;
use vfio_shim::abi::*;
use vfio_shim::arg::BufferArg;
use vfio_shim::backend::DetachedDma;
use vfio_shim::{ContainerId, ContainerStep, FdTarget, GroupId, GroupReply, Shim};
use vfio_shim_sys::caller::{
    read_thread_memory, write_thread_memory, CallerProcess, PreparedMap, PRIVATE_MEMORY_ERRNO,
};
use vfio_shim_sys::kernel::MemoryOwner;
use vfio_shim_sys::{cuse_node, KernelBackend};
use zerocopy::FromBytes;

use crate::device::{Caller, CuseDevice, Ioctl, IoctlOutcome};
use crate::retry::{argsz_step, argsz_step_extended, cstr_step, fixed_step, ArgszArg, ArgszSpec, Extra, Step};

pub use vfio_shim::abi::{VFIO_SHIM_CUSE_ADOPT, VFIO_SHIM_CUSE_ADOPT_PROTOCOL as ADOPT_PROTOCOL};

/// What a served client gets for what only the preload can do: a device fd from
/// `GET_DEVICE_FD`, or a map of private memory.
pub const NOT_WITHOUT_PRELOAD: Errno = PRIVATE_MEMORY_ERRNO;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Container,
    Group(u32),
}

#[derive(Debug)]
enum OpenState {
    /// A container node opened, no VFIO ioctl yet.
    Fresh,
    /// The preload serves it in-process. An adopted group node keeps its idle group open in
    /// the core: that holds type1's one-opener slot for the group across every process.
    Adopted(Option<GroupId>),
    Container(ContainerId),
    Group(GroupId),
}

#[derive(Debug)]
struct Open {
    pid: u32,
    node: Node,
    state: OpenState,
    /// The "load the preload" line was logged for this open.
    told: bool,
}

/// Every node's state: one shim core, the opens of all nodes (file handles are unique across
/// nodes), and the container node's device number.
///
/// Locking: `inner` guards the core. A container's MAP or UNMAP releases it for its kernel
/// call (the pin), with the container in flight in the core: another client's container calls
/// go on meanwhile; a call on the same container, and every call that is not a container
/// ioctl (opens, releases, group calls), waits for `dma_done` until none it could disturb is
/// in flight.
pub struct Registry {
    limit: u32,
    inner: Mutex<Inner>,
    dma_done: Condvar,
    container_rdev: OnceLock<u64>,
    /// Callers pinned by pidfd, reused while [`CallerProcess::is_current`] (a map costs two
    /// syscalls instead of opening /proc again).
    callers: Mutex<HashMap<u32, Arc<CallerProcess>>>,
}

struct Inner {
    shim: Shim<KernelBackend>,
    opens: HashMap<u64, Open>,
    next_fh: u64,
    /// Calls waiting in [`Registry::lock`] for no DMA call to be in flight: while one waits,
    /// no new container call begins, so busy containers cannot starve it.
    quiesce_waiters: usize,
}

impl Registry {
    /// `ioctl_limit`: the sessions' per-direction limit.
    pub fn new(ioctl_limit: u32) -> Arc<Registry> {
        Self::with_backend(ioctl_limit, KernelBackend::new())
    }

    pub fn with_backend(ioctl_limit: u32, backend: KernelBackend) -> Arc<Registry> {
        Arc::new(Registry {
            limit: ioctl_limit,
            inner: Mutex::new(Inner {
                shim: Shim::with_config(backend, vfio_shim_sys::type1_params::config_or_default()),
                opens: HashMap::new(),
                next_fh: 1,
                quiesce_waiters: 0,
            }),
            dma_done: Condvar::new(),
            container_rdev: OnceLock::new(),
            callers: Mutex::new(HashMap::new()),
        })
    }

    /// The container node's device number (`st_rdev`), known once its CUSE_INIT is done.
    pub fn set_container_rdev(&self, rdev: u64) {
        let _ = self.container_rdev.set(rdev);
    }

    /// The core with no container's DMA call in flight: for calls that may touch any object.
    fn lock(&self) -> MutexGuard<'_, Inner> {
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
    fn lock_any(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens currently alive, and how many of them are adopted (tests, logs).
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock_any();
        let adopted = inner.opens.values().filter(|o| matches!(o.state, OpenState::Adopted(_))).count();
        (inner.opens.len(), adopted)
    }

    fn insert(inner: &mut Inner, pid: u32, node: Node, state: OpenState) -> u64 {
        let fh = inner.next_fh;
        inner.next_fh += 1;
        inner.opens.insert(fh, Open { pid, node, state, told: false });
        fh
    }

    fn release(&self, fh: u64) {
        // The pinned callers hold the last file each mapped: a container going away is a good
        // time to let those go (the next map pins its caller again, a few syscalls).
        self.callers.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let mut inner = self.lock();
        let Some(open) = inner.opens.remove(&fh) else { return };
        match open.state {
            OpenState::Container(id) => inner.shim.close_container(id),
            OpenState::Group(id) | OpenState::Adopted(Some(id)) => inner.shim.close_group(id),
            OpenState::Fresh | OpenState::Adopted(None) => {}
        }
        debug!("release fh {fh} ({:?}, opened by pid {})", open.node, open.pid);
    }

    /// Whether `fh` is a container of ours with no IOMMU driver set yet (never used, or used
    /// without SET_IOMMU).
    fn container_without_iommu(&self, fh: u64) -> bool {
        let inner = self.lock_any();
        match inner.opens.get(&fh).map(|o| &o.state) {
            Some(OpenState::Fresh) => true,
            Some(OpenState::Container(id)) => inner.shim.iommu_version(*id).is_none(),
            _ => false,
        }
    }

    /// The adoption handshake, the same on every node.
    fn adopt(&self, fh: u64, caller: &Caller) -> IoctlOutcome {
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
    fn resolve_fd(&self, caller: &Caller, fd: i32) -> Result<FdTarget, Errno> {
        let file = match self.caller(caller.pid)?.dup_fd(fd) {
            Ok(f) => f,
            Err(Errno::EBADF) => return Ok(FdTarget::Closed),
            Err(e) => return Err(e),
        };
        // The device number from the attributes in memory: no request to a FUSE server
        // behind an arbitrary file the caller passed.
        let ours = match (cuse_node::char_device_of(file.as_fd()), self.container_rdev.get()) {
            (Ok(Some(rdev)), Some(&ours)) => rdev == ours,
            _ => false,
        };
        if !ours {
            return Ok(FdTarget::Other);
        }
        let Ok(fh) = cuse_node::cuse_identify(file.as_fd()) else { return Ok(FdTarget::Other) };
        drop(file); // before taking the lock: our dup must not be the file's last reference later
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

    /// The caller thread `tid`, pinned (see [`CallerProcess`]).
    fn caller(&self, tid: u32) -> Result<Arc<CallerProcess>, Errno> {
        const MAX_CACHED: usize = 64; // three fds each
        let mut callers = self.callers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = callers.get(&tid) {
            if c.is_current() {
                return Ok(Arc::clone(c));
            }
            callers.remove(&tid);
        }
        let c = Arc::new(CallerProcess::open(tid)?);
        if callers.len() >= MAX_CACHED {
            callers.retain(|_, c| c.is_current());
            if callers.len() >= MAX_CACHED {
                callers.clear();
            }
        }
        callers.insert(tid, Arc::clone(&c));
        Ok(c)
    }

    fn forget_caller(&self, tid: u32) {
        self.callers.lock().unwrap_or_else(|e| e.into_inner()).remove(&tid);
    }

    fn tell_preload(open: &mut Open, fh: u64, what: &str) {
        if !open.told {
            open.told = true;
            warn!(
                "pid {} (fh {fh}): {what} needs the preload; run the program under \
                 `vfio-shim run` (LD_PRELOAD=libvfio_shim_preload.so)",
                open.pid
            );
        }
    }
}

/// A MAP_DMA or UNMAP_DMA argument read straight from the caller.
struct Direct {
    /// The pinned caller and its memory resolved, for a map.
    owner: Option<MemoryOwner>,
    /// The `minsz` bytes at `arg`.
    bytes: Vec<u8>,
}

/// The `vfio/vfio` node.
pub struct ContainerDevice {
    reg: Arc<Registry>,
}

impl ContainerDevice {
    pub fn new(reg: Arc<Registry>) -> Self {
        Self { reg }
    }

    /// The argument layout of each container ioctl: how much of the caller's struct to fetch
    /// (VFIO's `minsz`, or up to the `vfio_bitmap` a dirty-bitmap request carries) and how much
    /// is written back. Value-argument commands need no memory.
    fn spec(cmd: u32) -> Option<ArgszSpec> {
        const WITH_BITMAP: u32 = 48; // the struct up to the end of its vfio_bitmap
        match cmd {
            VFIO_IOMMU_GET_INFO => Some(ArgszSpec::in_out(minsz::IOMMU_INFO as u32).reading(u32::MAX)),
            VFIO_IOMMU_MAP_DMA => Some(ArgszSpec::input(minsz::DMA_MAP as u32)),
            // type1 copies minsz back (T1 vfio_iommu_type1_unmap_dma).
            VFIO_IOMMU_UNMAP_DMA => {
                Some(ArgszSpec::in_out(minsz::DMA_UNMAP as u32).reading(WITH_BITMAP).writing(minsz::DMA_UNMAP as u32))
            }
            VFIO_IOMMU_DIRTY_PAGES => Some(ArgszSpec::input(minsz::DIRTY_BITMAP as u32).reading(WITH_BITMAP)),
            _ => None,
        }
    }

    /// The user bitmap a dirty-bitmap request names (`vfio_bitmap` at offset 24 in both
    /// `UNMAP_DMA` + `GET_DIRTY_BITMAP` and `DIRTY_PAGES` + `GET_BITMAP`), fetched in and out:
    /// type1 keeps the caller's low bits of the first word it updates. A struct too short for
    /// it, or a zero size, fetches nothing (the core answers EINVAL); beyond the CUSE
    /// per-direction limit it is ENOMEM.
    fn bitmap_range(cmd: u32, a: &ArgszArg<'_>, limit: u32) -> Result<Extra, Errno> {
        let flag = match cmd {
            VFIO_IOMMU_UNMAP_DMA => VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
            VFIO_IOMMU_DIRTY_PAGES => VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP,
            _ => return Ok(Extra::default()),
        };
        let wants = leading_flags(a.data).is_some_and(|f| f & flag != 0);
        let Some(bitmap) = bitmap_of(a.data) else { return Ok(Extra::default()) };
        if !wants || bitmap.size == 0 || bitmap.data == 0 {
            return Ok(Extra::default());
        }
        if bitmap.size > u64::from(limit) {
            return Err(Errno::ENOMEM);
        }
        Ok(Extra { in_iovs: vec![(bitmap.data, bitmap.size)], out_iovs: vec![(bitmap.data, bitmap.size)] })
    }

    /// MAP_DMA and UNMAP_DMA without a dirty bitmap are nearly all of a client's traffic. Their
    /// fixed part (VFIO copies `minsz` bytes, a fault being EFAULT) is read straight from the
    /// caller in the first round, and UNMAP's written back the same way, so each takes one CUSE
    /// round trip instead of two (docs/cuse.md). The caller's thread is blocked in this request,
    /// so this reads exactly what a kernel copy-in would. `None`: use the retry engine. A map
    /// also gets its caller pinned (to find the memory); an unmap needs only the thread id.
    fn direct_argument(&self, caller: &Caller, io: &Ioctl<'_>) -> Result<Option<Direct>, Errno> {
        let minsz = match io.cmd {
            VFIO_IOMMU_MAP_DMA => minsz::DMA_MAP,
            VFIO_IOMMU_UNMAP_DMA => minsz::DMA_UNMAP,
            _ => return Ok(None),
        };
        if !io.in_data.is_empty() || io.out_size != 0 {
            return Ok(None); // a later retry round
        }
        let mut bytes = vec![0u8; minsz];
        match read_thread_memory(caller.pid, io.arg, &mut bytes) {
            Ok(()) => {}
            Err(Errno::EFAULT) => return Err(Errno::EFAULT), // what the kernel's copy-in says
            Err(_) => return Ok(None),                       // not allowed to read it (Yama, namespaces): retry rounds
        }
        let flags = leading_flags(&bytes).ok_or(Errno::EIO)?;
        if io.cmd == VFIO_IOMMU_UNMAP_DMA && flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP != 0 {
            return Ok(None); // the bitmap goes through the retry engine
        }
        let owner = match io.cmd {
            VFIO_IOMMU_MAP_DMA => {
                // Resolve the memory now, outside the lock. A VADDR update maps nothing.
                let map = vfio_iommu_type1_dma_map::read_from_bytes(&bytes).map_err(|_| Errno::EIO)?;
                let prepare = |c: &CallerProcess| {
                    (flags & VFIO_DMA_MAP_FLAG_VADDR == 0)
                        .then(|| c.prepare_map(map.vaddr, map.size, flags & VFIO_DMA_MAP_FLAG_WRITE != 0))
                };
                let mut pinned = self.reg.caller(caller.pid)?;
                let mut prepared = prepare(&pinned);
                if prepared.as_ref().is_some_and(PreparedMap::mm_gone) {
                    // The thread exec'd since it was pinned: pin it again.
                    self.reg.forget_caller(caller.pid);
                    pinned = self.reg.caller(caller.pid)?;
                    prepared = prepare(&pinned);
                }
                Some(MemoryOwner { caller: pinned, prepared })
            }
            _ => None,
        };
        Ok(Some(Direct { owner, bytes }))
    }

    fn identify(&self, fh: u64, caller: &Caller) -> IoctlOutcome {
        // Only the daemon's own threads (resolving a SET_CONTAINER) may learn file handles.
        if !std::path::Path::new(&format!("/proc/self/task/{}", caller.pid)).exists() {
            return IoctlOutcome::Error(Errno::ENOTTY);
        }
        match i32::try_from(fh) {
            Ok(v) => IoctlOutcome::Done { result: v, out: Vec::new() },
            Err(_) => IoctlOutcome::Error(Errno::EOVERFLOW),
        }
    }
}

impl CuseDevice for ContainerDevice {
    fn open(&self, caller: &Caller, _flags: u32) -> Result<u64, Errno> {
        let fh = Registry::insert(&mut self.reg.lock_any(), caller.pid, Node::Container, OpenState::Fresh);
        debug!("open container fh {fh} by pid {} uid {}", caller.pid, caller.uid);
        Ok(fh)
    }

    fn release(&self, fh: u64, _caller: &Caller) {
        self.reg.release(fh);
    }

    fn ioctl(&self, fh: u64, caller: &Caller, io: &Ioctl<'_>) -> IoctlOutcome {
        match io.cmd {
            VFIO_SHIM_CUSE_ADOPT => return self.reg.adopt(fh, caller),
            VFIO_SHIM_CUSE_IDENTIFY => return self.identify(fh, caller),
            _ => {}
        }
        // Without an IOMMU driver type1 answers every other request EINVAL before it reads the
        // argument (CT:333,348), so an unreadable argument is EINVAL too, not the fetch's EFAULT.
        if !matches!(io.cmd, VFIO_GET_API_VERSION | VFIO_CHECK_EXTENSION | VFIO_SET_IOMMU)
            && self.reg.container_without_iommu(fh)
        {
            return IoctlOutcome::Error(Errno::EINVAL);
        }
        // Fetch the argument before taking the lock: retry rounds go back to the caller.
        let limit = self.reg.limit;
        let mut direct = match self.direct_argument(caller, io) {
            Ok(d) => d,
            Err(e) => return IoctlOutcome::Error(e),
        };
        let (mut mem, out_len) = match (&mut direct, Self::spec(io.cmd)) {
            (Some(d), _) => (BufferArg::new(std::mem::take(&mut d.bytes)), 0),
            (None, None) => (BufferArg::default(), 0),
            (None, Some(spec)) => {
                let extra = |a: &ArgszArg<'_>| Self::bitmap_range(io.cmd, a, limit);
                match argsz_step_extended(io, spec, limit, &extra) {
                    Step::Ready(a) => {
                        let bitmap = a.extra_in.to_vec();
                        let user_base = if bitmap.is_empty() { 0 } else { bitmap_of(a.data).map_or(0, |b| b.data) };
                        (BufferArg { bytes: a.data.to_vec(), user_base, user: bitmap }, a.out_len as usize)
                    }
                    Step::Reply(r) => return r,
                }
            }
        };
        // A map found no direct path: pin the caller here, still outside the lock.
        let owner = match direct.as_mut().and_then(|d| d.owner.take()) {
            Some(o) => Some(o),
            None if io.cmd == VFIO_IOMMU_MAP_DMA => match self.reg.caller(caller.pid) {
                Ok(caller) => {
                    // Resolve the memory from the fetched struct, still outside the lock, so
                    // this map's pin too runs without it (a VADDR update maps nothing).
                    let prepared = vfio_iommu_type1_dma_map::read_from_prefix(&mem.bytes)
                        .ok()
                        .map(|(map, _)| map)
                        .filter(|map| map.flags & VFIO_DMA_MAP_FLAG_VADDR == 0)
                        .map(|map| caller.prepare_map(map.vaddr, map.size, map.flags & VFIO_DMA_MAP_FLAG_WRITE != 0));
                    Some(MemoryOwner { caller, prepared })
                }
                Err(e) => return IoctlOutcome::Error(e),
            },
            None => None,
        };

        let result = {
            let mut inner = self.reg.lock_any();
            let id = loop {
                let Inner { shim, opens, .. } = &mut *inner;
                let Some(open) = opens.get_mut(&fh) else { return IoctlOutcome::Error(Errno::EBADF) };
                let id = match open.state {
                    // An adopted open is the preload's: its ioctls never come here (a process that
                    // received the fd without the preload would be talking to a container it cannot see).
                    OpenState::Adopted(_) => return IoctlOutcome::Error(Errno::EBADFD),
                    OpenState::Container(id) => id,
                    OpenState::Fresh => match shim.open_container() {
                        Ok(id) => {
                            open.state = OpenState::Container(id);
                            id
                        }
                        Err(e) => return IoctlOutcome::Error(e),
                    },
                    OpenState::Group(_) => return IoctlOutcome::Error(Errno::EBADF),
                };
                // A call waiting for everything to settle goes first (`lock`).
                if inner.quiesce_waiters == 0 && !inner.shim.container_in_flight(id) {
                    break id;
                }
                inner = self.reg.dma_done.wait(inner).unwrap_or_else(|e| e.into_inner());
            };
            inner.shim.backend_mut().set_memory_owner(owner);
            let result = match inner.shim.container_ioctl_begin(id, io.cmd, io.arg, &mut mem) {
                Err(e) => Err(e),
                Ok(ContainerStep::Done(v)) => Ok(v),
                Ok(ContainerStep::Native(pending)) if pending.detached().is_none() => {
                    inner.shim.container_ioctl_finish(pending, None, &mut mem)
                }
                Ok(ContainerStep::Native(pending)) => {
                    // The pin runs without the lock: other clients' containers go on. From
                    // here the finish must run, whatever happens: the container is in flight.
                    inner.shim.backend_mut().set_memory_owner(None);
                    drop(inner);
                    let ran = pending
                        .detached()
                        .map(|call| catch_unwind(AssertUnwindSafe(|| call.run())).unwrap_or(Err(Errno::EIO)));
                    inner = self.reg.lock_any();
                    let shim = &mut inner.shim;
                    let r = catch_unwind(AssertUnwindSafe(|| shim.container_ioctl_finish(pending, ran, &mut mem)));
                    self.reg.dma_done.notify_all();
                    r.unwrap_or(Err(Errno::EIO))
                }
            };
            inner.shim.backend_mut().set_memory_owner(None);
            if result == Err(PRIVATE_MEMORY_ERRNO) && io.cmd == VFIO_IOMMU_MAP_DMA {
                if let Some(open) = inner.opens.get_mut(&fh) {
                    Registry::tell_preload(open, fh, "VFIO_IOMMU_MAP_DMA of private (anonymous) memory");
                }
            }
            result
        };
        // Only now touch the caller's memory again: never with the lock held.
        match result {
            Ok(v) if direct.is_some() => {
                // type1 copies UNMAP_DMA's minsz back on success (the new `size`); MAP writes nothing.
                let written = match io.cmd {
                    VFIO_IOMMU_UNMAP_DMA => write_thread_memory(caller.pid, io.arg, &mem.bytes),
                    _ => Ok(()),
                };
                match written {
                    Ok(()) => IoctlOutcome::Done { result: v as i32, out: Vec::new() },
                    Err(e) => IoctlOutcome::Error(e),
                }
            }
            Ok(v) => {
                // The struct's write-back, then the bitmap (the out ranges, in order).
                let mut out = mem.bytes;
                out.truncate(out_len);
                out.extend_from_slice(&mem.user);
                IoctlOutcome::Done { result: v as i32, out }
            }
            Err(e) => IoctlOutcome::Error(e),
        }
    }
}

/// A `vfio/<N>` node: IOMMU group `N`.
pub struct GroupDevice {
    reg: Arc<Registry>,
    number: u32,
}

impl GroupDevice {
    pub fn new(reg: Arc<Registry>, number: u32) -> Self {
        Self { reg, number }
    }

    fn group_of(&self, inner: &Inner, fh: u64) -> Result<GroupId, Errno> {
        match inner.opens.get(&fh).map(|o| &o.state) {
            Some(OpenState::Group(id)) => Ok(*id),
            Some(OpenState::Adopted(_)) => Err(Errno::EBADFD),
            _ => Err(Errno::EBADF),
        }
    }
}

impl CuseDevice for GroupDevice {
    /// type1 lets one file at a time open a group (GR: `group->opened_file`, EBUSY): the group
    /// is opened in the core right away, which enforces that across every process, adopted
    /// opens included.
    fn open(&self, caller: &Caller, _flags: u32) -> Result<u64, Errno> {
        let mut inner = self.reg.lock();
        let id = inner.shim.open_group(self.number)?;
        let fh = Registry::insert(&mut inner, caller.pid, Node::Group(self.number), OpenState::Group(id));
        debug!("open group {} fh {fh} by pid {} uid {}", self.number, caller.pid, caller.uid);
        Ok(fh)
    }

    fn release(&self, fh: u64, _caller: &Caller) {
        self.reg.release(fh);
    }

    fn ioctl(&self, fh: u64, caller: &Caller, io: &Ioctl<'_>) -> IoctlOutcome {
        let limit = self.reg.limit;
        let (mut mem, out_len, target) = match io.cmd {
            VFIO_SHIM_CUSE_ADOPT => return self.reg.adopt(fh, caller),
            VFIO_GROUP_GET_STATUS => match argsz_step(io, ArgszSpec::in_out(minsz::GROUP_STATUS as u32), limit) {
                Step::Ready(a) => (BufferArg::new(a.data.to_vec()), a.out_len as usize, None),
                Step::Reply(r) => return r,
            },
            VFIO_GROUP_SET_CONTAINER => match fixed_step(io, 4, 0, limit) {
                Step::Ready(bytes) => {
                    let fd = i32::from_ne_bytes(bytes.try_into().unwrap_or([0xff; 4]));
                    match self.reg.resolve_fd(caller, fd) {
                        Ok(target) => (BufferArg::new(bytes.to_vec()), 0, Some(target)),
                        Err(e) => return IoctlOutcome::Error(e),
                    }
                }
                Step::Reply(r) => return r,
            },
            VFIO_GROUP_GET_DEVICE_FD => {
                match cstr_step(io, vfio_shim::translator::PAGE_SIZE as u32, crate::session::page_size(), limit) {
                    Step::Ready(bytes) => (BufferArg::new(bytes.to_vec()), 0, None),
                    Step::Reply(r) => return r,
                }
            }
            _ => (BufferArg::default(), 0, None),
        };

        let mut inner = self.reg.lock();
        let id = match self.group_of(&inner, fh) {
            Ok(id) => id,
            Err(e) => return IoctlOutcome::Error(e),
        };
        let resolve = |_fd: i32| target.unwrap_or(FdTarget::Closed);
        match inner.shim.group_ioctl(id, io.cmd, &mut mem, &resolve) {
            Ok(GroupReply::Done) => {
                let mut out = mem.bytes;
                out.truncate(out_len);
                IoctlOutcome::Done { result: 0, out }
            }
            Ok(GroupReply::Device(grant)) => {
                // Everything type1 checks passed, but a CUSE daemon cannot install an fd in
                // its caller: only the preload can hand out device fds.
                inner.shim.close_device(grant);
                if let Some(open) = inner.opens.get_mut(&fh) {
                    Registry::tell_preload(open, fh, "VFIO_GROUP_GET_DEVICE_FD");
                }
                IoctlOutcome::Error(NOT_WITHOUT_PRELOAD)
            }
            Err(e) => IoctlOutcome::Error(e),
        }
    }
}

/// The `flags` word every argsz-style VFIO struct has after its `argsz` (read through the
/// smallest of them, `vfio_iommu_type1_dirty_bitmap`).
fn leading_flags(bytes: &[u8]) -> Option<u32> {
    let (head, _) = vfio_iommu_type1_dirty_bitmap::read_from_prefix(bytes).ok()?;
    Some(head.flags)
}

/// Where the `vfio_bitmap` of a dirty-bitmap request sits: after the fixed part of
/// `vfio_iommu_type1_dma_unmap` (`UNMAP_DMA` + `GET_DIRTY_BITMAP`), which is also where
/// `DIRTY_PAGES` + `GET_BITMAP` has it (after its header and the get's iova and size).
const BITMAP_AT: usize = std::mem::size_of::<vfio_iommu_type1_dma_unmap>();
const _: () = assert!(
    BITMAP_AT
        == std::mem::size_of::<vfio_iommu_type1_dirty_bitmap>()
            + std::mem::offset_of!(vfio_iommu_type1_dirty_bitmap_get, bitmap)
);

/// The `vfio_bitmap` of a dirty-bitmap request, if the bytes reach that far.
fn bitmap_of(bytes: &[u8]) -> Option<vfio_bitmap> {
    let (bitmap, _) = vfio_bitmap::read_from_prefix(bytes.get(BITMAP_AT..)?).ok()?;
    Some(bitmap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn the_bitmap_of_both_dirty_requests_is_found() {
        let bitmap = vfio_bitmap { pgsize: 4096, size: 8, data: 0x7f00_0000_1000 };
        let unmap = vfio_iommu_type1_dma_unmap {
            argsz: 48,
            flags: VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
            iova: 0x10_0000,
            size: 0x1000,
        };
        let mut bytes = unmap.as_bytes().to_vec();
        bytes.extend_from_slice(bitmap.as_bytes());
        assert_eq!(leading_flags(&bytes), Some(VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP));
        assert_eq!(bitmap_of(&bytes), Some(bitmap));
        assert_eq!(bitmap_of(&bytes[..47]), None, "a struct too short has none");

        let head = vfio_iommu_type1_dirty_bitmap { argsz: 48, flags: VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP };
        let get = vfio_iommu_type1_dirty_bitmap_get { iova: 0x10_0000, size: 0x1000, bitmap };
        let mut bytes = head.as_bytes().to_vec();
        bytes.extend_from_slice(get.as_bytes());
        assert_eq!(leading_flags(&bytes), Some(VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP));
        assert_eq!(bitmap_of(&bytes), Some(bitmap));
        assert_eq!(leading_flags(&bytes[..7]), None);
    }
}
