//! The daemon's reach into the processes it serves: their memory and fds, and how the core's
//! backend maps a caller's memory rather than the daemon's. [`Callers`] is the seam that lets
//! the registry and the node handlers run on the host over the fake backend
//! ([`crate::fake_callers`]); [`KernelCallers`] is the real thing (pidfds, `process_vm_readv`,
//! `/proc/<pid>/map_files`, the CUSE identify command), all of it in `vfio_shim_sys`.

use std::sync::Arc;

use nix::errno::Errno;
use vfio_shim::backend::Backend;
use vfio_shim_sys::caller::{read_thread_memory, write_thread_memory, CallerProcess, PreparedMap};
use vfio_shim_sys::kernel::MemoryOwner;
use vfio_shim_sys::{cuse_node, KernelBackend};

/// What a caller's fd is, as `VFIO_GROUP_SET_CONTAINER` needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerFd {
    /// No such fd in the caller.
    Closed,
    /// An open of the daemon's container node, by its file handle.
    ContainerNode(u64),
    /// Anything else.
    Other,
}

/// One map's memory request, as the caller's `VFIO_IOMMU_MAP_DMA` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRequest {
    pub vaddr: u64,
    pub size: u64,
    pub write: bool,
}

/// Everything the daemon does to its callers. `tid` is the calling thread (FUSE's `pid`),
/// blocked in its ioctl while the daemon serves it.
pub trait Callers: Send + Sync + 'static {
    /// The backend of the daemon's core.
    type Backend: Backend + Send;
    /// A caller process held for a while, so that repeated maps skip finding it again
    /// (kernel: its pidfd and /proc directory).
    type Process: Send + Sync;
    /// A caller's memory lent to the backend for one call, resolved ahead of it (outside the
    /// core's lock).
    type Memory: Send;

    /// Holds the process of thread `tid`.
    fn hold(&self, tid: u32) -> Result<Self::Process, Errno>;
    /// Whether `process` still is the process it was held as (no exec, no exit since).
    fn is_current(&self, process: &Self::Process) -> bool;
    /// The caller's memory for a map (`None`: a call that pins nothing, the backend resolves
    /// whatever it still needs itself).
    fn memory(&self, process: Arc<Self::Process>, map: Option<MapRequest>) -> Self::Memory;
    /// The memory was resolved against an address space that is gone (the thread exec'd).
    fn memory_gone(&self, memory: &Self::Memory) -> bool;
    /// Copies from the caller as a kernel copy-in would: `EFAULT` for memory it does not have;
    /// another errno when the daemon may not read it (then the retry rounds are the way).
    fn read(&self, tid: u32, addr: u64, buf: &mut [u8]) -> Result<(), Errno>;
    /// Copies to the caller, as a kernel copy-out would.
    fn write(&self, tid: u32, addr: u64, bytes: &[u8]) -> Result<(), Errno>;
    /// What the caller's fd `fd` is; `container_rdev` is the container node's device number.
    fn fd(&self, process: &Self::Process, fd: i32, container_rdev: Option<u64>) -> Result<CallerFd, Errno>;
    /// Whether `tid` is one of the daemon's own threads.
    fn is_own_thread(&self, tid: u32) -> bool;
    /// Points the backend's maps at `memory` (`None`: the daemon's own, the default).
    fn lend(backend: &mut Self::Backend, memory: Option<Self::Memory>);
    /// Makes the backend's CAP_SYS_RAWIO checks (no-IOMMU nodes) ask about caller thread
    /// `tid`, the one whose call is served now, as the kernel's `capable()` asks about the
    /// calling thread.
    fn rawio_of(backend: &mut Self::Backend, tid: u32);
}

/// The kernel's callers.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelCallers;

impl Callers for KernelCallers {
    type Backend = KernelBackend;
    type Process = CallerProcess;
    type Memory = MemoryOwner;

    fn hold(&self, tid: u32) -> Result<CallerProcess, Errno> {
        CallerProcess::open(tid)
    }

    fn is_current(&self, process: &CallerProcess) -> bool {
        process.is_current()
    }

    fn memory(&self, process: Arc<CallerProcess>, map: Option<MapRequest>) -> MemoryOwner {
        let prepared = map.map(|m| process.prepare_map(m.vaddr, m.size, m.write));
        MemoryOwner { caller: process, prepared }
    }

    fn memory_gone(&self, memory: &MemoryOwner) -> bool {
        memory.prepared.as_ref().is_some_and(PreparedMap::mm_gone)
    }

    fn read(&self, tid: u32, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
        read_thread_memory(tid, addr, buf)
    }

    fn write(&self, tid: u32, addr: u64, bytes: &[u8]) -> Result<(), Errno> {
        write_thread_memory(tid, addr, bytes)
    }

    fn fd(&self, process: &CallerProcess, fd: i32, container_rdev: Option<u64>) -> Result<CallerFd, Errno> {
        use std::os::fd::AsFd;
        let file = match process.dup_fd(fd) {
            Ok(f) => f,
            Err(Errno::EBADF) => return Ok(CallerFd::Closed),
            Err(e) => return Err(e),
        };
        // The device number from the attributes in memory: no request to a FUSE server
        // behind an arbitrary file the caller passed.
        let ours = match (cuse_node::char_device_of(file.as_fd()), container_rdev) {
            (Ok(Some(rdev)), Some(ours)) => rdev == ours,
            _ => false,
        };
        if !ours {
            return Ok(CallerFd::Other);
        }
        // Our dup is dropped on return, before the caller takes any lock: it must never be
        // the file's last reference while the registry is locked (its RELEASE needs the lock).
        Ok(cuse_node::cuse_identify(file.as_fd()).map_or(CallerFd::Other, CallerFd::ContainerNode))
    }

    fn is_own_thread(&self, tid: u32) -> bool {
        std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
    }

    fn lend(backend: &mut KernelBackend, memory: Option<MemoryOwner>) {
        backend.set_memory_owner(memory);
    }

    fn rawio_of(backend: &mut KernelBackend, tid: u32) {
        backend.rawio_of(Some(tid));
    }
}
