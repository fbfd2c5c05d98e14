//! The translator: legacy containers and groups, with type1's semantics, over a [`Backend`].
//!
//! Object model (mirrors drivers/vfio/container.c and group.c):
//! - a container owns one iommufd context; `SET_IOMMU` allocates its IOAS and attaches the
//!   devices of every group already set on it (type1 attaches domains there, CT:264);
//! - a group's `SET_CONTAINER` opens and binds every VFIO device of the IOMMU group to the
//!   container's iommufd, which claims DMA ownership as type1 does at that point (CT:436);
//! - `GET_DEVICE_FD` hands out the bound device; the glue turns the handle into a new fd;
//! - closing a container fd keeps it alive while groups are attached, closing a group fd keeps
//!   it alive while its device fds are open, as the kernel's references do.
//!
//! Every errno is type1's, in type1's order of checks; the line references are to the Linux
//! 7.3 tree (T1 = vfio_iommu_type1.c, CT = container.c, GR = group.c).

#![allow(non_upper_case_globals)] // kernel names (VFIO_TYPE1v2_IOMMU) kept verbatim

use std::collections::BTreeMap;

use nix::errno::Errno;
use zerocopy::IntoBytes;

use crate::abi::*;
use crate::arg::{read_sized, read_struct, ArgMemory};
use crate::backend::{Backend, DeviceHandle, GroupDevice, IoasId, IommufdId, IovaRange, Prot};
use crate::device_name::{match_name, NameMatch};
use crate::dirty::DirtyBitmaps;
use crate::info::{self, InfoSource};
use crate::ledger::{Mapping, MappingLedger};

/// A legacy container (an open `/dev/vfio/vfio`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(pub u64);

/// A legacy group (an open `/dev/vfio/<N>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u64);

/// What a file descriptor passed by the caller (to `SET_CONTAINER`) refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdTarget {
    Container(ContainerId),
    /// An open fd that is not one of our containers.
    Other,
    /// Not an open fd.
    Closed,
}

/// Tunables with type1's module-parameter defaults.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// type1's `dma_entry_limit` (T1:59).
    pub dma_entry_limit: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self { dma_entry_limit: DMA_ENTRY_LIMIT_DEFAULT }
    }
}

/// The type1 IOMMU state of a container after `SET_IOMMU`.
#[derive(Debug)]
struct Iommu {
    v2: bool,
    ioas: IoasId,
    ledger: MappingLedger,
    dma_avail: u32,
    pgsizes: u64,
    iova_ranges: Vec<IovaRange>,
    coherent: bool,
    dirty: DirtyBitmaps,
}

impl Iommu {
    fn min_pgsize(&self) -> u64 {
        info::min_pgsize(self.pgsizes)
    }

    /// type1's `vfio_iommu_iova_dma_valid` (T1:1630).
    fn iova_valid(&self, start: u64, last: u64) -> bool {
        self.iova_ranges.is_empty() || self.iova_ranges.iter().any(|r| start >= r.start && last <= r.last)
    }
}

#[derive(Debug)]
struct Container {
    ctx: IommufdId,
    /// The caller still holds the container fd.
    open: bool,
    groups: Vec<GroupId>,
    iommu: Option<Iommu>,
    /// The kernel objects behind it are shared with another process (a fork parent, the
    /// sender of an `SCM_RIGHTS` message): releasing our view closes our fds only, it never
    /// unmaps, detaches or destroys anything the other process still uses.
    shared: bool,
}

/// A VFIO device of a group, bound to the container's iommufd while the group is set (in
/// exports: the exporter's handle, or on import the one the importer's backend adopted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundDevice {
    pub info: GroupDevice,
    pub handle: DeviceHandle,
    pub attached: bool,
}

#[derive(Debug)]
struct Group {
    number: u32,
    /// The caller still holds the group fd.
    open: bool,
    container: Option<ContainerId>,
    /// The group's VFIO devices, bound to the container's iommufd while it is set.
    devices: Vec<BoundDevice>,
    /// Device fds handed out by `GET_DEVICE_FD` and not yet closed.
    device_users: u32,
    /// The same, per device: a device whose count drops to 0 had its last close.
    device_fds: Vec<(DeviceHandle, u32)>,
    /// Devices whose fds are all closed while a mapping of a region still holds the file:
    /// type1's device file, and the group it holds, live on until the mapping goes. Each
    /// counts in `device_users` until [`Shim::settle_mappings`] sees it gone.
    held_by_mapping: Vec<DeviceHandle>,
    /// Devices that could not be opened again after their last close, with why: the next
    /// `GET_DEVICE_FD` of the device answers that errno.
    lost: Vec<(DeviceHandle, Errno)>,
    /// The group's device files are registered with KVM's VFIO device (`KVM_DEV_VFIO_FILE_ADD`,
    /// rewritten to the cdevs): KVM holds them, so a last close cannot cycle a device.
    kvm_registered: bool,
    /// As [`Container::shared`].
    shared: bool,
    /// This opener holds the group's system-wide claim ([`Backend::group_claim`]); not when
    /// the group came from another process or a daemon holds the claim for us.
    claimed: bool,
}

/// All legacy objects of one process (or one CUSE client), over one backend.
pub struct Shim<B: Backend> {
    backend: B,
    config: Config,
    containers: BTreeMap<ContainerId, Container>,
    groups: BTreeMap<GroupId, Group>,
    next_id: u64,
    /// Devices over all groups held only by a mapping (`Group::held_by_mapping`).
    mapping_holds: usize,
}

/// The outcome of `VFIO_GROUP_GET_DEVICE_FD`: the glue installs a new fd for `handle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceGrant {
    pub group: GroupId,
    pub handle: DeviceHandle,
    /// Distinguishes grants of the same device: each `GET_DEVICE_FD` is its own file in
    /// type1, released by its own last close.
    pub serial: u64,
}

impl<B: Backend> Shim<B> {
    pub fn new(backend: B) -> Self {
        Self::with_config(backend, Config::default())
    }

    pub fn with_config(backend: B, config: Config) -> Self {
        Self { backend, config, containers: BTreeMap::new(), groups: BTreeMap::new(), next_id: 1, mapping_holds: 0 }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    // ---------------------------------------------------------------- containers

    /// `open("/dev/vfio/vfio")`.
    pub fn open_container(&mut self) -> Result<ContainerId, Errno> {
        let ctx = self.backend.iommufd_open()?;
        let id = ContainerId(self.fresh_id());
        self.containers.insert(id, Container { ctx, open: true, groups: Vec::new(), iommu: None, shared: false });
        Ok(id)
    }

    /// The iommufd context behind a container (the glue may use its fd number).
    pub fn container_iommufd(&self, id: ContainerId) -> Option<IommufdId> {
        self.containers.get(&id).map(|c| c.ctx)
    }

    /// `close()` of a container fd. Groups still set on it keep it alive (CT: kref per group).
    pub fn close_container(&mut self, id: ContainerId) {
        // A close is a VFIO call too: a device whose mapping went since the last call is
        // closed first, so closing everything releases everything (and the group's DMA
        // ownership with it), as on type1.
        self.settle_mappings();
        if let Some(c) = self.containers.get_mut(&id) {
            c.open = false;
        }
        self.reap_container(id);
    }

    fn reap_container(&mut self, id: ContainerId) {
        let Some(c) = self.containers.get(&id) else {
            return;
        };
        if c.open || !c.groups.is_empty() {
            return;
        }
        let c = self.containers.remove(&id).expect("present");
        self.backend.iommufd_close(c.ctx);
    }

    /// An ioctl on a container fd. `arg` is the raw argument (a value for CHECK_EXTENSION
    /// and SET_IOMMU); `mem` is the memory it points at for the others.
    pub fn container_ioctl(
        &mut self,
        id: ContainerId,
        cmd: u32,
        arg: u64,
        mem: &mut dyn ArgMemory,
    ) -> Result<i64, Errno> {
        self.settle_mappings();
        let c = self.containers.get(&id).ok_or(Errno::EBADF)?;
        match cmd {
            VFIO_GET_API_VERSION => Ok(VFIO_API_VERSION as i64),
            VFIO_CHECK_EXTENSION => Ok(Self::check_extension(c.iommu.as_ref(), arg)),
            VFIO_SET_IOMMU => self.set_iommu(id, arg).map(|_| 0),
            // Without an IOMMU driver every other container ioctl is EINVAL (CT:333,348).
            _ if c.iommu.is_none() => Err(Errno::EINVAL),
            VFIO_IOMMU_GET_INFO => self.get_info(id, mem).map(|_| 0),
            VFIO_IOMMU_MAP_DMA => self.map_dma(id, mem).map(|_| 0),
            VFIO_IOMMU_UNMAP_DMA => self.unmap_dma(id, mem).map(|_| 0),
            VFIO_IOMMU_DIRTY_PAGES => self.dirty_pages(id, mem).map(|_| 0),
            _ => Err(Errno::ENOTTY),
        }
    }

    /// type1's answers (T1:2723); before SET_IOMMU the container polls type1 with no
    /// IOMMU (CT:184).
    fn check_extension(iommu: Option<&Iommu>, ext: u64) -> i64 {
        match ext {
            VFIO_TYPE1_IOMMU | VFIO_TYPE1v2_IOMMU | VFIO_UNMAP_ALL => 1,
            VFIO_UPDATE_VADDR => iommu.is_some() as i64,
            VFIO_DMA_CC_IOMMU => iommu.is_some_and(|i| i.coherent) as i64,
            _ => 0,
        }
    }

    fn set_iommu(&mut self, id: ContainerId, ty: u64) -> Result<(), Errno> {
        let c = self.containers.get(&id).expect("checked");
        // No group yet, or already set: EINVAL before the type is even looked at (CT:264).
        if c.groups.is_empty() || c.iommu.is_some() {
            return Err(Errno::EINVAL);
        }
        let v2 = match ty {
            VFIO_TYPE1_IOMMU => false,
            VFIO_TYPE1v2_IOMMU => true,
            // type1's CHECK_EXTENSION says 1 to UNMAP_ALL, so the container asks it to open
            // one, and vfio_iommu_type1_open refuses the number (T1:2638-2640).
            VFIO_UNMAP_ALL => return Err(Errno::EINVAL),
            // No registered driver claims the type (CT:297).
            _ => return Err(Errno::ENODEV),
        };
        let ctx = c.ctx;
        let groups = c.groups.clone();
        let ioas = self.backend.ioas_alloc(ctx)?;
        for (n, gid) in groups.iter().enumerate() {
            if let Err(e) = self.attach_group_devices(*gid, ioas) {
                for g in &groups[..=n] {
                    self.detach_group_devices(*g);
                }
                logged("IOMMU_DESTROY of an IOAS", self.backend.ioas_destroy(ctx, ioas));
                return Err(e);
            }
        }
        let mut iommu = Iommu {
            v2,
            ioas,
            ledger: MappingLedger::new(),
            dma_avail: self.config.dma_entry_limit,
            pgsizes: 0,
            iova_ranges: Vec::new(),
            coherent: false,
            dirty: DirtyBitmaps::default(),
        };
        if let Err(e) = Self::refresh_domain_facts(&mut self.backend, ctx, &mut iommu) {
            for g in &groups {
                self.detach_group_devices(*g);
            }
            logged("IOMMU_DESTROY of an IOAS", self.backend.ioas_destroy(ctx, ioas));
            return Err(e);
        }
        self.containers.get_mut(&id).expect("checked").iommu = Some(iommu);
        Ok(())
    }

    /// Re-reads what type1 derives from its domains: page sizes, usable IOVA ranges and
    /// coherency. type1 recomputes them on every group attach and detach.
    fn refresh_domain_facts(backend: &mut B, ctx: IommufdId, iommu: &mut Iommu) -> Result<(), Errno> {
        let geometry = backend.ioas_geometry(ctx, iommu.ioas)?;
        iommu.pgsizes = backend.ioas_pgsizes(ctx, iommu.ioas)?;
        iommu.coherent = backend.ioas_enforces_coherency(ctx, iommu.ioas)?;
        iommu.iova_ranges = geometry.ranges;
        Ok(())
    }

    fn attach_group_devices(&mut self, gid: GroupId, ioas: IoasId) -> Result<(), Errno> {
        let g = self.groups.get_mut(&gid).expect("group of a container");
        for n in 0..g.devices.len() {
            let handle = g.devices[n].handle;
            if let Err(e) = self.backend.device_attach(handle, ioas) {
                for d in &mut g.devices[..n] {
                    logged("VFIO_DEVICE_DETACH_IOMMUFD_PT", self.backend.device_detach(d.handle));
                    d.attached = false;
                }
                return Err(e);
            }
            g.devices[n].attached = true;
        }
        Ok(())
    }

    fn detach_group_devices(&mut self, gid: GroupId) {
        let g = self.groups.get_mut(&gid).expect("group of a container");
        for d in &mut g.devices {
            if d.attached {
                logged("VFIO_DEVICE_DETACH_IOMMUFD_PT", self.backend.device_detach(d.handle));
                d.attached = false;
            }
        }
    }

    fn iommu_mut(&mut self, id: ContainerId) -> (&mut B, IommufdId, &mut Iommu) {
        let c = self.containers.get_mut(&id).expect("checked");
        (&mut self.backend, c.ctx, c.iommu.as_mut().expect("checked"))
    }

    /// T1:2836.
    fn get_info(&mut self, id: ContainerId, mem: &mut dyn ArgMemory) -> Result<(), Errno> {
        let mut head = [0u8; minsz::IOMMU_INFO];
        mem.read_sized(&mut head)?;
        let argsz = u32::from_ne_bytes(head[..4].try_into().expect("4 bytes"));
        let (_, _, iommu) = self.iommu_mut(id);
        let src = InfoSource { pgsizes: iommu.pgsizes, dma_avail: iommu.dma_avail, iova_ranges: &iommu.iova_ranges };
        let (reply, caps) = info::encode(&src, argsz);
        if let Some(caps) = caps {
            mem.write(size_of::<vfio_iommu_type1_info>(), &caps)?;
        }
        let n = (argsz as usize).min(size_of::<vfio_iommu_type1_info>());
        mem.write(0, &reply.as_bytes()[..n])
    }

    /// T1:2895 and `vfio_dma_do_map` (T1:1680).
    fn map_dma(&mut self, id: ContainerId, mem: &mut dyn ArgMemory) -> Result<(), Errno> {
        let map: vfio_iommu_type1_dma_map = read_sized(mem)?;
        let known = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE | VFIO_DMA_MAP_FLAG_VADDR;
        if map.flags & !known != 0 {
            return Err(Errno::EINVAL);
        }
        let set_vaddr = map.flags & VFIO_DMA_MAP_FLAG_VADDR != 0;
        let (iova, vaddr, size) = (map.iova, map.vaddr, map.size);
        if size == 0 {
            return Err(Errno::EINVAL);
        }
        let last = iova.checked_add(size - 1).ok_or(Errno::EOVERFLOW)?;
        vaddr.checked_add(size - 1).ok_or(Errno::EOVERFLOW)?;
        let prot =
            Prot { read: map.flags & VFIO_DMA_MAP_FLAG_READ != 0, write: map.flags & VFIO_DMA_MAP_FLAG_WRITE != 0 };
        let any_prot = prot.read || prot.write;
        if any_prot == set_vaddr {
            return Err(Errno::EINVAL);
        }

        let (backend, ctx, iommu) = self.iommu_mut(id);
        let pgsize = iommu.min_pgsize();
        if (size | iova | vaddr) & (pgsize - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        let existing = iommu.ledger.find_overlap(iova, size);
        if set_vaddr {
            return match existing {
                None => Err(Errno::ENOENT),
                Some(m) if !m.vaddr_invalid || m.iova != iova || m.size != size => Err(Errno::EINVAL),
                Some(m) => {
                    iommu.ledger.set_vaddr(m.iova, false, Some(vaddr));
                    Ok(())
                }
            };
        }
        if existing.is_some() {
            return Err(Errno::EEXIST);
        }
        if iommu.dma_avail == 0 {
            return Err(Errno::ENOSPC);
        }
        if !iommu.iova_valid(iova, last) {
            return Err(Errno::EINVAL);
        }
        backend.ioas_map(ctx, iommu.ioas, iova, vaddr, size, prot)?;
        let m = Mapping { iova, size, vaddr, prot, vaddr_invalid: false };
        iommu.ledger.insert(m);
        let pgsize = iommu.min_pgsize();
        iommu.dirty.mapped(&m, pgsize);
        iommu.dma_avail -= 1;
        Ok(())
    }

    /// T1:2914 and `vfio_dma_do_unmap` (T1:1391).
    fn unmap_dma(&mut self, id: ContainerId, mem: &mut dyn ArgMemory) -> Result<(), Errno> {
        let mut unmap: vfio_iommu_type1_dma_unmap = read_sized(mem)?;
        let argsz = unmap.argsz;
        let known = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VFIO_DMA_UNMAP_FLAG_VADDR | VFIO_DMA_UNMAP_FLAG_ALL;
        if unmap.flags & !known != 0 {
            return Err(Errno::EINVAL);
        }
        let get_dirty = unmap.flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP != 0;
        let unmap_all = unmap.flags & VFIO_DMA_UNMAP_FLAG_ALL != 0;
        let invalidate_vaddr = unmap.flags & VFIO_DMA_UNMAP_FLAG_VADDR != 0;
        if get_dirty && (unmap_all || invalidate_vaddr) {
            return Err(Errno::EINVAL);
        }
        let mut bitmap = vfio_bitmap::default();
        if get_dirty {
            if (argsz as usize) < minsz::DMA_UNMAP + size_of::<vfio_bitmap>() {
                return Err(Errno::EINVAL);
            }
            bitmap = read_struct(mem, minsz::DMA_UNMAP)?;
            if !access_ok(bitmap.data, bitmap.size) {
                return Err(Errno::EINVAL);
            }
            let npages = unmap.size.checked_shr(bitmap.pgsize.trailing_zeros()).unwrap_or(0);
            verify_bitmap_size(npages, bitmap.size)?;
        }

        let (backend, ctx, iommu) = self.iommu_mut(id);
        let pgsize = iommu.min_pgsize();
        let iova = unmap.iova;
        if iova & (pgsize - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        let last = if unmap_all {
            if iova != 0 || unmap.size != 0 {
                return Err(Errno::EINVAL);
            }
            u64::MAX
        } else {
            if unmap.size == 0 || unmap.size & (pgsize - 1) != 0 {
                return Err(Errno::EINVAL);
            }
            iova.checked_add(unmap.size - 1).ok_or(Errno::EOVERFLOW)?
        };
        if get_dirty && (!iommu.dirty.tracking() || bitmap.pgsize != pgsize) {
            return Err(Errno::EINVAL);
        }
        // v2 refuses to bisect a mapping at either end (T1:1476).
        if iommu.v2 && !unmap_all {
            if iommu.ledger.containing(iova).is_some_and(|m| m.iova != iova) {
                return Err(Errno::EINVAL);
            }
            if iommu.ledger.containing(last).is_some_and(|m| m.last() != last) {
                return Err(Errno::EINVAL);
            }
        }

        // v1 stops at a mapping that starts before the range: success, size 0 (T1:1490).
        let v2 = iommu.v2;
        let victims = |ledger: &MappingLedger| {
            ledger.overlapping(iova, last).take_while(move |m| v2 || m.iova >= iova).collect::<Vec<Mapping>>()
        };

        if invalidate_vaddr {
            let victims = victims(&iommu.ledger);
            if victims.iter().any(|m| m.vaddr_invalid) {
                return Err(Errno::EINVAL);
            }
            let mut unmapped = 0u64;
            for m in &victims {
                iommu.ledger.set_vaddr(m.iova, true, None);
                unmapped += m.size;
            }
            unmap.size = unmapped;
            return mem.write(0, unmap.as_bytes());
        }
        if get_dirty {
            for m in &victims(&iommu.ledger) {
                iommu.dirty.report(mem, bitmap.data, m, iova, pgsize)?;
            }
        }

        // The victims are every mapping from the first one through the last one: no other
        // mapping lies between them, so they are found again by position, without a list.
        let (mut span, mut count, mut unmapped) = (None::<(u64, u64)>, 0u32, 0u64);
        for m in iommu.ledger.overlapping(iova, last).take_while(|m| v2 || m.iova >= iova) {
            span = Some((span.map_or(m.iova, |s| s.0), m.last()));
            count += 1;
            unmapped += m.size;
        }
        if let Some((first, end)) = span {
            // One native unmap covers them all, and none of them is split.
            let (start, length) = if unmap_all { (0, u64::MAX) } else { (first, end - first + 1) };
            backend.ioas_unmap(ctx, iommu.ioas, start, length)?;
            for _ in 0..count {
                let m = iommu.ledger.first_overlapping(first, end).expect("counted above");
                iommu.ledger.remove(m.iova);
                iommu.dirty.unmapped(m.iova);
            }
            iommu.dma_avail += count;
        }
        unmap.size = unmapped;
        mem.write(0, unmap.as_bytes())
    }

    /// `VFIO_IOMMU_DIRTY_PAGES` (T1:2964). With no IOMMU dirty tracking every page of an
    /// IOMMU-mapped range reads dirty, as in type1 with IOMMU-backed groups.
    fn dirty_pages(&mut self, id: ContainerId, mem: &mut dyn ArgMemory) -> Result<(), Errno> {
        let (_, _, iommu) = self.iommu_mut(id);
        if !iommu.v2 {
            return Err(Errno::EACCES);
        }
        let dirty: vfio_iommu_type1_dirty_bitmap = read_sized(mem)?;
        let argsz = dirty.argsz;
        let known = VFIO_IOMMU_DIRTY_PAGES_FLAG_START
            | VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP
            | VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
        if dirty.flags & !known != 0 || dirty.flags.count_ones() != 1 {
            return Err(Errno::EINVAL);
        }
        match dirty.flags {
            VFIO_IOMMU_DIRTY_PAGES_FLAG_START => {
                let pgsize = iommu.min_pgsize();
                iommu.dirty.start(iommu.ledger.iter(), pgsize);
                Ok(())
            }
            VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP => {
                iommu.dirty.stop();
                Ok(())
            }
            _ => {
                let data_size = argsz as usize - minsz::DIRTY_BITMAP;
                if data_size < size_of::<vfio_iommu_type1_dirty_bitmap_get>() {
                    return Err(Errno::EINVAL);
                }
                let range: vfio_iommu_type1_dirty_bitmap_get = read_struct(mem, minsz::DIRTY_BITMAP)?;
                if range.size == 0 {
                    return Err(Errno::EINVAL);
                }
                let last = range.iova.checked_add(range.size - 1).ok_or(Errno::EOVERFLOW)?;
                if !access_ok(range.bitmap.data, range.bitmap.size) {
                    return Err(Errno::EINVAL);
                }
                let npages = range.size.checked_shr(range.bitmap.pgsize.trailing_zeros()).unwrap_or(0);
                verify_bitmap_size(npages, range.bitmap.size)?;
                let pgsize = iommu.min_pgsize();
                if range.bitmap.pgsize != pgsize
                    || range.iova & (pgsize - 1) != 0
                    || range.size & (pgsize - 1) != 0
                    || !iommu.dirty.tracking()
                {
                    return Err(Errno::EINVAL);
                }
                // The range must not bisect a mapping (T1:1321).
                if iommu.ledger.containing(range.iova).is_some_and(|m| m.iova != range.iova)
                    || iommu.ledger.containing(last).is_some_and(|m| m.last() != last)
                {
                    return Err(Errno::EINVAL);
                }
                let ranges: Vec<Mapping> = iommu.ledger.starting_in(range.iova, last).collect();
                for m in &ranges {
                    iommu.dirty.report(mem, range.bitmap.data, m, range.iova, pgsize)?;
                    iommu.dirty.reported(m, pgsize);
                }
                Ok(())
            }
        }
    }

    /// Mappings of a container, ascending (for tests, state dumps and the CUSE daemon).
    pub fn mappings(&self, id: ContainerId) -> Vec<Mapping> {
        self.containers.get(&id).and_then(|c| c.iommu.as_ref()).map(|i| i.ledger.iter().collect()).unwrap_or_default()
    }

    /// The IOAS behind a container once `SET_IOMMU` has happened.
    pub fn container_ioas(&self, id: ContainerId) -> Option<IoasId> {
        self.containers.get(&id).and_then(|c| c.iommu.as_ref()).map(|i| i.ioas)
    }

    /// Whether `SET_IOMMU` has happened and which version: `Some(true)` for TYPE1v2.
    pub fn iommu_version(&self, id: ContainerId) -> Option<bool> {
        self.containers.get(&id).and_then(|c| c.iommu.as_ref()).map(|i| i.v2)
    }

    // -------------------------------------------------------------------- groups

    /// `open("/dev/vfio/<number>")`. `ENOENT` when no such VFIO group exists, `EBUSY` when
    /// it is already open, here or in another process (GR: one opener at a time).
    pub fn open_group(&mut self, number: u32) -> Result<GroupId, Errno> {
        self.open_group_inner(number, true)
    }

    /// As [`Shim::open_group`] for a group whose system-wide claim someone else holds on our
    /// behalf: the CUSE daemon that serves the group node this process opened.
    pub fn open_group_served(&mut self, number: u32) -> Result<GroupId, Errno> {
        self.open_group_inner(number, false)
    }

    fn open_group_inner(&mut self, number: u32, claim: bool) -> Result<GroupId, Errno> {
        self.settle_mappings();
        let devices = self.backend.group_devices(number)?;
        // The kernel creates /dev/vfio/<N> only for groups with a VFIO device.
        if !devices.iter().any(|d| d.cdev.is_some()) {
            return Err(Errno::ENOENT);
        }
        if self.groups.values().any(|g| g.number == number) {
            return Err(Errno::EBUSY);
        }
        if claim {
            self.backend.group_claim(number)?;
        }
        let id = GroupId(self.fresh_id());
        self.groups.insert(
            id,
            Group {
                number,
                open: true,
                container: None,
                devices: Vec::new(),
                device_users: 0,
                device_fds: Vec::new(),
                held_by_mapping: Vec::new(),
                lost: Vec::new(),
                kvm_registered: false,
                shared: false,
                claimed: claim,
            },
        );
        Ok(id)
    }

    /// Open, but holding nothing: no container set and no device handed out.
    pub fn group_is_idle(&self, id: GroupId) -> bool {
        self.groups.get(&id).is_some_and(|g| g.container.is_none() && g.device_users == 0)
    }

    pub fn group_number(&self, id: GroupId) -> Option<u32> {
        self.groups.get(&id).map(|g| g.number)
    }

    /// `close()` of a group fd. Open device fds keep the group alive (they hold a
    /// reference to the group file, GR:262); the last one out detaches it.
    pub fn close_group(&mut self, id: GroupId) {
        self.settle_mappings();
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        g.open = false;
        self.reap_group(id);
    }

    fn reap_group(&mut self, id: GroupId) {
        let Some(g) = self.groups.get(&id) else {
            return;
        };
        if g.open || g.device_users > 0 {
            return;
        }
        if g.container.is_some() {
            self.detach_container(id, false);
        }
        let g = self.groups.remove(&id).expect("present");
        if g.claimed {
            self.backend.group_release(g.number);
        }
    }

    /// An ioctl on a group fd. `resolve` tells what a caller-supplied fd is.
    pub fn group_ioctl(
        &mut self,
        id: GroupId,
        cmd: u32,
        mem: &mut dyn ArgMemory,
        resolve: &dyn Fn(i32) -> FdTarget,
    ) -> Result<GroupReply, Errno> {
        self.settle_mappings();
        if !self.groups.contains_key(&id) {
            return Err(Errno::EBADF);
        }
        match cmd {
            VFIO_GROUP_GET_STATUS => self.get_status(id, mem).map(|_| GroupReply::Done),
            VFIO_GROUP_SET_CONTAINER => {
                let fd: i32 = read_struct(mem, 0)?;
                self.set_container(id, resolve(fd)).map(|_| GroupReply::Done)
            }
            VFIO_GROUP_UNSET_CONTAINER => self.unset_container(id).map(|_| GroupReply::Done),
            VFIO_GROUP_GET_DEVICE_FD => {
                let name = mem.read_cstr(PAGE_SIZE)?;
                self.get_device(id, &name).map(GroupReply::Device)
            }
            _ => Err(Errno::ENOTTY),
        }
    }

    /// GR:326. VIABLE when a container is set, or when no device of the group is claimed
    /// for kernel DMA (bound to a driver other than a VFIO one).
    fn get_status(&mut self, id: GroupId, mem: &mut dyn ArgMemory) -> Result<(), Errno> {
        let status: vfio_group_status = read_sized(mem)?;
        let argsz = status.argsz;
        let g = self.groups.get(&id).expect("checked");
        let flags = if g.container.is_some() {
            VFIO_GROUP_FLAGS_CONTAINER_SET | VFIO_GROUP_FLAGS_VIABLE
        } else {
            let devices = self.backend.group_devices(g.number)?;
            if devices.iter().all(driver_allows_user_dma) {
                VFIO_GROUP_FLAGS_VIABLE
            } else {
                0
            }
        };
        mem.write(0, vfio_group_status { argsz, flags }.as_bytes())
    }

    /// GR:98 and CT:421.
    fn set_container(&mut self, id: GroupId, target: FdTarget) -> Result<(), Errno> {
        let cid = match target {
            FdTarget::Closed => return Err(Errno::EBADF),
            _ if self.groups[&id].container.is_some() => return Err(Errno::EINVAL),
            FdTarget::Other => return Err(Errno::EBADFD),
            FdTarget::Container(cid) => cid,
        };
        let Some(c) = self.containers.get(&cid) else {
            return Err(Errno::EBADFD);
        };
        let ctx = c.ctx;
        let ioas = c.iommu.as_ref().map(|i| i.ioas);
        let vaddr_invalid = c.iommu.as_ref().is_some_and(|i| i.ledger.vaddr_invalid_count() > 0);
        let number = self.groups[&id].number;
        let infos = self.backend.group_devices(number)?;
        // iommu_group_claim_dma_owner: EPERM while a kernel driver uses the group for DMA
        // (a device on a driver without driver_managed_dma).
        if !infos.iter().all(driver_allows_user_dma) {
            return Err(Errno::EPERM);
        }
        // type1 refuses to attach (and pin) while a live update has vaddrs invalid.
        if vaddr_invalid {
            return Err(Errno::EBUSY);
        }

        // Claiming DMA ownership: bind every VFIO device of the group to the container.
        let mut bound: Vec<BoundDevice> = Vec::new();
        let undo = |backend: &mut B, bound: &[BoundDevice]| {
            for d in bound {
                if d.attached {
                    logged("VFIO_DEVICE_DETACH_IOMMUFD_PT", backend.device_detach(d.handle));
                }
                backend.device_close(d.handle);
            }
        };
        for info in infos {
            if info.cdev.is_none() {
                continue;
            }
            match open_and_bind(&mut self.backend, &info, ctx) {
                Ok(handle) => bound.push(BoundDevice { info, handle, attached: false }),
                Err(e) => {
                    undo(&mut self.backend, &bound);
                    return Err(e);
                }
            }
        }
        if let Some(ioas) = ioas {
            for n in 0..bound.len() {
                if let Err(e) = self.backend.device_attach(bound[n].handle, ioas) {
                    undo(&mut self.backend, &bound);
                    // iommufd refuses a domain whose aperture or reserved regions collide with
                    // existing mappings with EADDRINUSE; type1 with EINVAL (T1:2302-2315).
                    return Err(if e == Errno::EADDRINUSE { Errno::EINVAL } else { e });
                }
                bound[n].attached = true;
            }
        }
        let g = self.groups.get_mut(&id).expect("checked");
        g.devices = bound;
        g.container = Some(cid);
        let c = self.containers.get_mut(&cid).expect("checked");
        c.groups.push(id);
        let ctx = c.ctx;
        if let Some(iommu) = c.iommu.as_mut() {
            if let Err(e) = Self::refresh_domain_facts(&mut self.backend, ctx, iommu) {
                self.detach_container(id, true);
                return Err(e);
            }
        }
        Ok(())
    }

    /// GR:77.
    fn unset_container(&mut self, id: GroupId) -> Result<(), Errno> {
        let g = &self.groups[&id];
        if g.container.is_none() {
            return Err(Errno::EINVAL);
        }
        if g.device_users > 0 {
            return Err(Errno::EBUSY);
        }
        self.detach_container(id, true);
        Ok(())
    }

    /// CT:468: detach a group; the last group leaving drops the IOMMU and every mapping.
    /// `explicit` for `UNSET_CONTAINER` (or a failed `SET_CONTAINER`), which acts on the one
    /// kernel group every holder shares, as type1's does; otherwise our last fd of the group
    /// is gone, and when the group is shared with another process that only drops our
    /// references (type1 releases a group at its last close anywhere).
    fn detach_container(&mut self, id: GroupId, explicit: bool) {
        let g = self.groups.get_mut(&id).expect("checked");
        let Some(cid) = g.container.take() else {
            return;
        };
        let devices = std::mem::take(&mut g.devices);
        // Devices held by a mapping count as users, and a group with users is not detached.
        debug_assert!(g.held_by_mapping.is_empty());
        g.lost.clear();
        let native = explicit || !g.shared;
        for d in &devices {
            if d.attached && native {
                logged("VFIO_DEVICE_DETACH_IOMMUFD_PT", self.backend.device_detach(d.handle));
            }
            self.backend.device_close(d.handle);
        }
        let c = self.containers.get_mut(&cid).expect("group's container");
        c.groups.retain(|g| *g != id);
        let ctx = c.ctx;
        let native = native && (explicit || !c.shared);
        if c.groups.is_empty() {
            if let Some(iommu) = c.iommu.take() {
                if native {
                    if !iommu.ledger.is_empty() {
                        logged("IOMMU_IOAS_UNMAP of everything", self.backend.ioas_unmap(ctx, iommu.ioas, 0, u64::MAX));
                    }
                    logged("IOMMU_DESTROY of an IOAS", self.backend.ioas_destroy(ctx, iommu.ioas));
                }
            }
        } else if let Some(iommu) = c.iommu.as_mut() {
            logged("refreshing the domain facts", Self::refresh_domain_facts(&mut self.backend, ctx, iommu));
        }
        self.reap_container(cid);
    }

    /// GR:302: the name is matched first (ENODEV), then the container must have an IOMMU
    /// (EINVAL, CT:511).
    fn get_device(&mut self, id: GroupId, raw_name: &[u8]) -> Result<DeviceGrant, Errno> {
        let g = &self.groups[&id];
        // vfio_device_get_from_name: the group's VFIO devices in turn; an error stops it.
        let mut found = None;
        for d in self.backend.group_devices(g.number)?.into_iter().filter(|d| d.cdev.is_some()) {
            // The token cannot reach the kernel: the device was bound at SET_CONTAINER
            // (docs/limitations.md); vfio-pci's own checks of its form are made here.
            if let NameMatch::Yes { token: _ } = match_name(raw_name, &d.name, d.sriov)? {
                found = Some(d.name);
                break;
            }
        }
        let Some(name) = found else {
            return Err(Errno::ENODEV);
        };
        let Some(cid) = g.container else {
            return Err(Errno::EINVAL);
        };
        if self.containers[&cid].iommu.is_none() {
            return Err(Errno::EINVAL);
        }
        let handle = match g.devices.iter().find(|d| d.info.name == name) {
            Some(d) => d.handle,
            None => self.bind_late(id, cid, &name)?,
        };
        let g = &self.groups[&id];
        if let Some((_, e)) = g.lost.iter().find(|(h, _)| *h == handle) {
            return Err(*e);
        }
        let serial = self.fresh_id();
        let g = self.groups.get_mut(&id).expect("checked");
        // Still open through a mapping: type1 hands out another file of the open device.
        if let Some(at) = g.held_by_mapping.iter().position(|h| *h == handle) {
            g.held_by_mapping.remove(at);
            g.device_users -= 1;
            self.mapping_holds -= 1;
        }
        g.device_users += 1;
        match g.device_fds.iter_mut().find(|(h, _)| *h == handle) {
            Some((_, n)) => *n += 1,
            None => g.device_fds.push((handle, 1)),
        }
        Ok(DeviceGrant { group: id, handle, serial })
    }

    /// A device bound to a VFIO driver after its group was set on the container: type1
    /// attaches groups, not devices, so it is already in the container's domain and opens like
    /// the others. Here it is bound to the container's iommufd and attached to its IOAS now.
    fn bind_late(&mut self, id: GroupId, cid: ContainerId, name: &str) -> Result<DeviceHandle, Errno> {
        let number = self.groups[&id].number;
        let info = self
            .backend
            .group_devices(number)?
            .into_iter()
            .find(|d| d.name == name && d.cdev.is_some())
            .ok_or(Errno::ENODEV)?;
        let c = &self.containers[&cid];
        let (ctx, ioas) = (c.ctx, c.iommu.as_ref().map(|i| i.ioas));
        let handle = open_and_bind(&mut self.backend, &info, ctx)?;
        let attach = match ioas {
            Some(ioas) => self.backend.device_attach(handle, ioas).map(|()| true),
            None => Ok(false),
        };
        match attach {
            Ok(attached) => {
                let g = self.groups.get_mut(&id).expect("checked");
                g.devices.push(BoundDevice { info, handle, attached });
                Ok(handle)
            }
            Err(e) => {
                self.backend.device_close(handle);
                Err(e)
            }
        }
    }

    /// type1's `close_device` at a device's last close, and the `open_device` of its next
    /// `GET_DEVICE_FD`: the kernel quiesces the device (bus mastering and interrupts off) and
    /// resets it when our cdev file goes, and enables it afresh when we open it again, so the
    /// next user finds what type1's next open leaves. Skipped when the group goes anyway.
    fn close_and_reopen(&mut self, id: GroupId, dev: DeviceHandle) {
        let g = &self.groups[&id];
        if g.shared || g.kvm_registered || g.container.is_none() || !(g.open || g.device_users > 0) {
            return;
        }
        if let Err(e) = self.backend.device_reopen(dev) {
            let g = self.groups.get_mut(&id).expect("checked");
            log::error!("device of group {}: cannot open it again after its last close: {e}", g.number);
            g.lost.push((dev, e));
        }
    }

    /// Devices held only by a mapping of one of their regions whose mapping is gone now have
    /// their last close, as type1's file release at munmap, and a group held only by them goes
    /// with them. Called at the entry points while any is held, so each call sees what type1
    /// would.
    fn settle_mappings(&mut self) {
        if self.mapping_holds == 0 {
            return;
        }
        let held: Vec<(GroupId, DeviceHandle)> =
            self.groups.iter().flat_map(|(id, g)| g.held_by_mapping.iter().map(move |h| (*id, *h))).collect();
        for (id, dev) in held {
            if self.device_mapped(dev) {
                continue;
            }
            let g = self.groups.get_mut(&id).expect("listed");
            g.held_by_mapping.retain(|h| *h != dev);
            g.device_users -= 1;
            self.mapping_holds -= 1;
            self.close_and_reopen(id, dev);
            self.reap_group(id);
        }
    }

    /// Whether a mapping holds the device's file; an unanswerable question is logged and
    /// taken as no (the reopen that follows then reports what is wrong).
    fn device_mapped(&mut self, dev: DeviceHandle) -> bool {
        self.backend.device_mapped(dev).unwrap_or_else(|e| {
            log::error!("cannot tell whether a device region is still mapped: {e}");
            false
        })
    }

    /// The caller closed the last fd of a device obtained through `GET_DEVICE_FD`.
    pub fn close_device(&mut self, grant: DeviceGrant) {
        self.settle_mappings();
        let Some(g) = self.groups.get_mut(&grant.group) else {
            return;
        };
        g.device_users = g.device_users.saturating_sub(1);
        let last = match g.device_fds.iter_mut().find(|(h, _)| *h == grant.handle) {
            Some((_, n)) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        g.device_fds.retain(|(_, n)| *n > 0);
        // A group shared with another process may still have the device open there.
        if last && !g.shared && g.container.is_some() {
            if self.device_mapped(grant.handle) {
                // The file, and the group it holds, live on in the mapping (type1).
                let g = self.groups.get_mut(&grant.group).expect("checked");
                g.held_by_mapping.push(grant.handle);
                g.device_users += 1;
                self.mapping_holds += 1;
                return;
            }
            self.close_and_reopen(grant.group, grant.handle);
        }
        self.reap_group(grant.group);
    }

    /// The glue registered (`true`) or unregistered the group's device files with KVM.
    pub fn set_group_kvm_registered(&mut self, id: GroupId, registered: bool) {
        if let Some(g) = self.groups.get_mut(&id) {
            g.kvm_registered = registered;
        }
    }

    /// The device handles currently bound for a group (for KVM file add/del rewriting).
    pub fn group_devices(&self, id: GroupId) -> Vec<DeviceHandle> {
        self.groups.get(&id).map(|g| g.devices.iter().map(|d| d.handle).collect()).unwrap_or_default()
    }

    // ------------------------------------------------- sharing with other processes

    /// After fork, in both processes: every object so far is the other's too.
    pub fn mark_all_shared(&mut self) {
        self.containers.values_mut().for_each(|c| c.shared = true);
        self.groups.values_mut().for_each(|g| g.shared = true);
    }

    /// A container now held by another process too (its fd was sent).
    pub fn mark_container_shared(&mut self, id: ContainerId) {
        if let Some(c) = self.containers.get_mut(&id) {
            c.shared = true;
        }
    }

    /// A group, and the container it is set on, now held by another process too.
    pub fn mark_group_shared(&mut self, id: GroupId) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        g.shared = true;
        if let Some(c) = g.container {
            self.mark_container_shared(c);
        }
    }

    /// A container or group whose fds were all closed (it lived on through another object)
    /// is held by an fd again.
    pub fn reopen_container(&mut self, id: ContainerId) {
        if let Some(c) = self.containers.get_mut(&id) {
            c.open = true;
        }
    }

    /// As [`Shim::reopen_container`].
    pub fn reopen_group(&mut self, id: GroupId) {
        if let Some(g) = self.groups.get_mut(&id) {
            g.open = true;
        }
    }

    /// What another process needs to act on this container as its own holder would.
    pub fn export_container(&self, id: ContainerId) -> Option<ContainerExport> {
        let c = self.containers.get(&id)?;
        Some(ContainerExport {
            ctx: c.ctx,
            iommu: c.iommu.as_ref().map(|i| IommuExport {
                v2: i.v2,
                ioas: i.ioas,
                mappings: i.ledger.iter().collect(),
                dma_avail: i.dma_avail,
                pgsizes: i.pgsizes,
                iova_ranges: i.iova_ranges.clone(),
                coherent: i.coherent,
                dirty_tracking: i.dirty.tracking(),
            }),
        })
    }

    /// A group as [`Shim::export_container`] describes a container.
    pub fn export_group(&self, id: GroupId) -> Option<GroupExport> {
        let g = self.groups.get(&id)?;
        Some(GroupExport { number: g.number, container: g.container, devices: g.devices.clone() })
    }

    /// A container another process exported, over an iommufd context the backend adopted.
    /// Shared, and held by no fd until the glue says so ([`Shim::reopen_container`]): one
    /// that came only as a group's container lives on through that group.
    pub fn import_container(&mut self, ctx: IommufdId, iommu: Option<IommuExport>) -> ContainerId {
        let iommu = iommu.map(|e| {
            let mut ledger = MappingLedger::new();
            e.mappings.into_iter().for_each(|m| ledger.insert(m));
            // The exporter's bitmaps stay with it: ours start from zero, as a new START's.
            let mut dirty = DirtyBitmaps::default();
            if e.dirty_tracking {
                dirty.start(ledger.iter(), info::min_pgsize(e.pgsizes));
            }
            Iommu {
                v2: e.v2,
                ioas: e.ioas,
                ledger,
                dma_avail: e.dma_avail,
                pgsizes: e.pgsizes,
                iova_ranges: e.iova_ranges,
                coherent: e.coherent,
                dirty,
            }
        });
        let id = ContainerId(self.fresh_id());
        self.containers.insert(id, Container { ctx, open: false, groups: Vec::new(), iommu, shared: true });
        id
    }

    /// A group another process exported, set on `container` (imported before) when it was
    /// set there, with its devices as the backend adopted them. Shared, and held by no fd
    /// until the glue says so ([`Shim::reopen_group`]).
    pub fn import_group(
        &mut self,
        number: u32,
        container: Option<ContainerId>,
        devices: Vec<BoundDevice>,
    ) -> Result<GroupId, Errno> {
        if let Some(cid) = container {
            if !self.containers.contains_key(&cid) {
                return Err(Errno::EBADF);
            }
        }
        let id = GroupId(self.fresh_id());
        self.groups.insert(
            id,
            Group {
                number,
                open: false,
                container,
                devices,
                device_users: 0,
                device_fds: Vec::new(),
                held_by_mapping: Vec::new(),
                lost: Vec::new(),
                kvm_registered: false,
                shared: true,
                claimed: false,
            },
        );
        if let Some(cid) = container {
            self.containers.get_mut(&cid).expect("checked").groups.push(id);
        }
        Ok(id)
    }
}

/// A container's state as another process needs it ([`Shim::export_container`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerExport {
    pub ctx: IommufdId,
    pub iommu: Option<IommuExport>,
}

/// The type1 state of a container after `SET_IOMMU`, as exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IommuExport {
    pub v2: bool,
    pub ioas: IoasId,
    pub mappings: Vec<Mapping>,
    pub dma_avail: u32,
    pub pgsizes: u64,
    pub iova_ranges: Vec<IovaRange>,
    pub coherent: bool,
    pub dirty_tracking: bool,
}

/// A group's state as another process needs it ([`Shim::export_group`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupExport {
    pub number: u32,
    pub container: Option<ContainerId>,
    pub devices: Vec<BoundDevice>,
}

/// What a group ioctl produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupReply {
    Done,
    Device(DeviceGrant),
}

/// The kernel's `strndup_user(arg, PAGE_SIZE)` bound for GET_DEVICE_FD names.
pub const PAGE_SIZE: usize = 4096;

/// Opens a device's cdev and binds it to `ctx`; nothing is left open on failure.
fn open_and_bind<B: Backend>(backend: &mut B, info: &GroupDevice, ctx: IommufdId) -> Result<DeviceHandle, Errno> {
    let handle = backend.device_open(info)?;
    match backend.device_bind(handle, ctx) {
        Ok(()) => Ok(handle),
        Err(e) => {
            backend.device_close(handle);
            Err(e)
        }
    }
}

/// No driver, or a driver with `driver_managed_dma` (VFIO drivers, pci-stub, pcieport): such
/// devices don't claim the group for kernel DMA, so the group stays viable.
fn driver_allows_user_dma(d: &GroupDevice) -> bool {
    match d.driver.as_deref() {
        None => true,
        Some(drv) => drv.contains("vfio") || drv == "pci-stub" || drv == "pcieport",
    }
}

/// `access_ok()` on x86-64 with 4-level paging: the range lies below `TASK_SIZE_MAX`.
fn access_ok(addr: u64, size: u64) -> bool {
    const TASK_SIZE_MAX: u64 = (1 << 47) - 4096;
    size <= TASK_SIZE_MAX && addr <= TASK_SIZE_MAX - size
}

/// T1:1353.
fn verify_bitmap_size(npages: u64, bitmap_size: u64) -> Result<(), Errno> {
    let needed = npages.div_ceil(64) * 8;
    if npages == 0 || bitmap_size == 0 || bitmap_size > DIRTY_BITMAP_SIZE_MAX || bitmap_size < needed {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// A cleanup step's answer. Its failure cannot reach the caller (the call has already failed,
/// or it is a close, which type1 never fails), so it is logged here, once, and not dropped.
fn logged<T>(what: &str, r: Result<T, Errno>) {
    if let Err(e) = r {
        log::warn!("{what} failed during cleanup: {e}");
    }
}
