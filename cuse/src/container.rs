//! The legacy VFIO container node `/dev/vfio/vfio` served from the shim core: argument
//! fetching (the direct path for MAP and UNMAP, the retry engine for the rest), the caller's
//! memory resolved outside the lock, and the DMA call run without it.
//!
//! A served container's `MAP_DMA` pins the caller's shared memory by file (the kernel
//! callers: `/proc/<pid>/map_files` + `IOMMU_IOAS_MAP_FILE`); private memory answers
//! [`NOT_WITHOUT_PRELOAD`] with one log line. Adoption and the shared state: `registry.rs`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use log::debug;
use nix::errno::Errno;
use vfio_shim::abi::*;
use vfio_shim::arg::BufferArg;
use vfio_shim::backend::DetachedDma;
use vfio_shim::ContainerStep;
use vfio_shim_sys::caller::PRIVATE_MEMORY_ERRNO;
use zerocopy::FromBytes;

use crate::callers::{Callers, KernelCallers, MapRequest};
use crate::device::{Caller, CuseDevice, Ioctl, IoctlOutcome};
use crate::registry::{Inner, Node, OpenState, Registry};
use crate::retry::{argsz_step_extended, ArgszArg, ArgszSpec, Extra, Step};

/// What a served client gets for what only the preload can do: a device fd from
/// `GET_DEVICE_FD`, or a map of private memory.
pub const NOT_WITHOUT_PRELOAD: Errno = PRIVATE_MEMORY_ERRNO;

/// A MAP_DMA or UNMAP_DMA argument read straight from the caller.
struct Direct<M> {
    /// The caller's memory resolved, for a map.
    memory: Option<M>,
    /// The `minsz` bytes at `arg`.
    bytes: Vec<u8>,
}

/// The `vfio/vfio` node.
pub struct ContainerDevice<C: Callers = KernelCallers> {
    reg: Arc<Registry<C>>,
}

impl<C: Callers> ContainerDevice<C> {
    pub fn new(reg: Arc<Registry<C>>) -> Self {
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
    fn direct_argument(&self, caller: &Caller, io: &Ioctl<'_>) -> Result<Option<Direct<C::Memory>>, Errno> {
        let minsz = match io.cmd {
            VFIO_IOMMU_MAP_DMA => minsz::DMA_MAP,
            VFIO_IOMMU_UNMAP_DMA => minsz::DMA_UNMAP,
            _ => return Ok(None),
        };
        if !io.in_data.is_empty() || io.out_size != 0 {
            return Ok(None); // a later retry round
        }
        let mut bytes = vec![0u8; minsz];
        match self.reg.callers.read(caller.pid, io.arg, &mut bytes) {
            Ok(()) => {}
            Err(Errno::EFAULT) => return Err(Errno::EFAULT), // what the kernel's copy-in says
            Err(_) => return Ok(None),                       // not allowed to read it (Yama, namespaces): retry rounds
        }
        let flags = leading_flags(&bytes).ok_or(Errno::EIO)?;
        if io.cmd == VFIO_IOMMU_UNMAP_DMA && flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP != 0 {
            return Ok(None); // the bitmap goes through the retry engine
        }
        let memory = match io.cmd {
            VFIO_IOMMU_MAP_DMA => {
                // Resolve the memory now, outside the lock.
                let map = vfio_iommu_type1_dma_map::read_from_bytes(&bytes).map_err(|_| Errno::EIO)?;
                let request = map_request(&map);
                let mut memory = self.reg.callers.memory(self.reg.caller(caller.pid)?, request);
                if self.reg.callers.memory_gone(&memory) {
                    // The thread exec'd since it was held: hold it again.
                    self.reg.forget_caller(caller.pid);
                    memory = self.reg.callers.memory(self.reg.caller(caller.pid)?, request);
                }
                Some(memory)
            }
            _ => None,
        };
        Ok(Some(Direct { memory, bytes }))
    }

    fn identify(&self, fh: u64, caller: &Caller) -> IoctlOutcome {
        // Only the daemon's own threads (resolving a SET_CONTAINER) may learn file handles.
        if !self.reg.callers.is_own_thread(caller.pid) {
            return IoctlOutcome::Error(Errno::ENOTTY);
        }
        match i32::try_from(fh) {
            Ok(v) => IoctlOutcome::Done { result: v, out: Vec::new() },
            Err(_) => IoctlOutcome::Error(Errno::EOVERFLOW),
        }
    }
}

impl<C: Callers> CuseDevice for ContainerDevice<C> {
    fn open(&self, caller: &Caller, _flags: u32) -> Result<u64, Errno> {
        let fh = Registry::insert(&mut self.reg.lock_any(), caller.pid, Node::Container, OpenState::Fresh);
        debug!("open container fh {fh} by pid {} uid {}", caller.pid, caller.uid);
        Ok(fh)
    }

    fn release(&self, fh: u64, _caller: &Caller) {
        self.reg.release(fh);
        self.reg.publish_status();
    }

    fn ioctl(&self, fh: u64, caller: &Caller, io: &Ioctl<'_>) -> IoctlOutcome {
        let outcome = self.serve_ioctl(fh, caller, io);
        self.reg.publish_status();
        outcome
    }
}

impl<C: Callers> ContainerDevice<C> {
    fn serve_ioctl(&self, fh: u64, caller: &Caller, io: &Ioctl<'_>) -> IoctlOutcome {
        match io.cmd {
            VFIO_SHIM_CUSE_ADOPT => return self.reg.adopt(fh, caller),
            VFIO_SHIM_CUSE_IDENTIFY => return self.identify(fh, caller),
            _ => {}
        }
        // Without an IOMMU driver type1 answers every other request EINVAL before it reads the
        // argument (CT:333,348), so an unreadable argument is EINVAL too, not the fetch's EFAULT;
        // the no-IOMMU driver answers them all ENOTTY (CT:46).
        if !matches!(io.cmd, VFIO_GET_API_VERSION | VFIO_CHECK_EXTENSION | VFIO_SET_IOMMU) {
            if let Some(e) = self.reg.container_answer_before_argument(fh) {
                return IoctlOutcome::Error(e);
            }
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
        // A map found no direct path: resolve the caller's memory from the fetched struct,
        // still outside the lock, so this map's pin too runs without it.
        let memory = match direct.as_mut().and_then(|d| d.memory.take()) {
            Some(m) => Some(m),
            None if io.cmd == VFIO_IOMMU_MAP_DMA => match self.reg.caller(caller.pid) {
                Ok(process) => {
                    let request = vfio_iommu_type1_dma_map::read_from_prefix(&mem.bytes)
                        .ok()
                        .and_then(|(map, _)| map_request(&map));
                    Some(self.reg.callers.memory(process, request))
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
            C::lend(inner.shim.backend_mut(), memory);
            C::rawio_of(inner.shim.backend_mut(), caller.pid);
            let result = match inner.shim.container_ioctl_begin(id, io.cmd, io.arg, &mut mem) {
                Err(e) => Err(e),
                Ok(ContainerStep::Done(v)) => Ok(v),
                Ok(ContainerStep::Native(pending)) if pending.detached().is_none() => {
                    inner.shim.container_ioctl_finish(pending, None, &mut mem)
                }
                Ok(ContainerStep::Native(pending)) => {
                    // The pin runs without the lock: other clients' containers go on. From
                    // here the finish must run, whatever happens: the container is in flight.
                    C::lend(inner.shim.backend_mut(), None);
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
            C::lend(inner.shim.backend_mut(), None);
            if result == Err(PRIVATE_MEMORY_ERRNO) && io.cmd == VFIO_IOMMU_MAP_DMA {
                if let Some(open) = inner.opens.get_mut(&fh) {
                    open.tell_preload(fh, "VFIO_IOMMU_MAP_DMA of private (anonymous) memory");
                }
            }
            result
        };
        // Only now touch the caller's memory again: never with the lock held.
        match result {
            Ok(v) if direct.is_some() => {
                // type1 copies UNMAP_DMA's minsz back on success (the new `size`); MAP writes nothing.
                let written = match io.cmd {
                    VFIO_IOMMU_UNMAP_DMA => self.reg.callers.write(caller.pid, io.arg, &mem.bytes),
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

/// The memory a map pins; a VADDR update pins none.
fn map_request(map: &vfio_iommu_type1_dma_map) -> Option<MapRequest> {
    (map.flags & VFIO_DMA_MAP_FLAG_VADDR == 0).then_some(MapRequest {
        vaddr: map.vaddr,
        size: map.size,
        write: map.flags & VFIO_DMA_MAP_FLAG_WRITE != 0,
    })
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
