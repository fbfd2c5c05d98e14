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
//!
//! This file holds the object model (ids, the container, group and device records, `Shim`);
//! `container`, `dma`, `group` and `sharing` hold the calls on them; `status` the view that
//! `vfio-shim status` shows.

#![allow(non_upper_case_globals)] // kernel names (VFIO_TYPE1v2_IOMMU) kept verbatim

use std::collections::{BTreeMap, BTreeSet};

use nix::errno::Errno;
use zerocopy::IntoBytes;

use crate::abi::*;
use crate::arg::{read_sized, read_struct, ArgMemory};
use crate::backend::{
    Backend, DetachedDma, DeviceHandle, DmaOp, GroupDevice, IoasId, IommufdId, IovaRange, KvmFile, Prot,
};
use crate::device_name::{match_name, NameMatch};
use crate::dirty::DirtyBitmaps;
use crate::info::{self, InfoSource};
use crate::ledger::{Mapping, MappingLedger};

mod container;
mod dma;
mod group;
mod reset;
mod sharing;
mod status;

pub use sharing::{ContainerExport, GroupExport, IommuExport};
pub use status::{ContainerStatus, IommuKind};

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
    /// Mappings (by IOVA) this process adopted from another one that holds the container too
    /// (`SCM_RIGHTS`, exec), whose vaddr state it cannot know: type1 has one state for both,
    /// and the other process may have invalidated or set their vaddrs since the handoff (a
    /// live update: the old QEMU invalidates, the new one sets). `MAP_DMA` and `UNMAP_DMA`
    /// with the VADDR flag accept them either way; once this process sets or invalidates a
    /// vaddr, or unmaps, the mapping's state is its own again.
    foreign_vaddrs: BTreeSet<u64>,
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
    /// Its groups are no-IOMMU groups (CT:457, `container->noiommu`); meaningful while it has
    /// groups, since the next group's kind sets it again. Such a container takes no IOMMU
    /// group and only the no-IOMMU driver.
    noiommu: bool,
    /// `SET_IOMMU(VFIO_NOIOMMU_IOMMU)` has happened: the no-IOMMU driver, which maps nothing
    /// (CT:32-74). `iommu` stays `None`.
    noiommu_driver: bool,
    /// The kernel objects behind it are shared with another process (a fork parent, the
    /// sender of an `SCM_RIGHTS` message): releasing our view closes our fds only, it never
    /// unmaps, detaches or destroys anything the other process still uses.
    shared: bool,
    /// A MAP_DMA or UNMAP_DMA of it is between begin and finish.
    in_flight: bool,
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
    /// A no-IOMMU group (`/dev/vfio/noiommu-<number>`): its devices DMA untranslated.
    noiommu: bool,
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
    /// What `KVM_DEV_VFIO_FILE_ADD/DEL` of the group names to KVM instead of the group file
    /// (opened at the group's first such call): a file of each device's cdev opened for KVM
    /// alone ([`Backend::kvm_file_open`]). Like type1's group file, it is not the device's
    /// file, so the device's last close stays the program's while KVM holds it.
    kvm_files: Vec<KvmFile>,
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
    /// Containers with a MAP_DMA or UNMAP_DMA between [`Shim::container_ioctl_begin`] and
    /// [`Shim::container_ioctl_finish`] (`Container::in_flight`): the glue keeps every other
    /// call touching them out.
    in_flight: usize,
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
        Self {
            backend,
            config,
            containers: BTreeMap::new(),
            groups: BTreeMap::new(),
            next_id: 1,
            mapping_holds: 0,
            in_flight: 0,
        }
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
}

/// A container ioctl's first half ([`Shim::container_ioctl_begin`]).
pub enum ContainerStep<D> {
    /// Answered: the ioctl's return value.
    Done(i64),
    /// type1's checks passed; the native call is next, then [`Shim::container_ioctl_finish`].
    Native(PendingDma<D>),
}

/// A MAP_DMA or UNMAP_DMA waiting for its native call. Its container is in flight until the
/// call is finished; nothing else may touch that container meanwhile (the glue's duty).
pub struct PendingDma<D> {
    container: ContainerId,
    ctx: IommufdId,
    ioas: IoasId,
    op: DmaOp,
    detached: Option<D>,
    resume: Resume,
}

impl<D> PendingDma<D> {
    /// The call made ready to run without the core (and so without the glue's lock), if the
    /// backend could; otherwise the finish runs it through the backend.
    pub fn detached(&self) -> Option<&D> {
        self.detached.as_ref()
    }

    pub fn container(&self) -> ContainerId {
        self.container
    }

    /// The context, IOAS and native call it waits for (a glue that runs the call itself).
    pub fn native(&self) -> (IommufdId, IoasId, DmaOp) {
        (self.ctx, self.ioas, self.op)
    }
}

/// What the finish of a [`PendingDma`] records once the native call succeeded.
enum Resume {
    Map(Mapping),
    /// The victims lie from `first` through `end`, `count` of them, `unmapped` bytes; the
    /// caller's struct gets the size back.
    Unmap {
        unmap: vfio_iommu_type1_dma_unmap,
        first: u64,
        end: u64,
        count: u32,
        unmapped: u64,
    },
}

/// What a group ioctl produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupReply {
    Done,
    Device(DeviceGrant),
}

/// The kernel's `strndup_user(arg, PAGE_SIZE)` bound for GET_DEVICE_FD names.
pub const PAGE_SIZE: usize = 4096;

/// A cleanup step's answer. Its failure cannot reach the caller (the call has already failed,
/// or it is a close, which type1 never fails), so it is logged here, once, and not dropped.
fn logged<T>(what: &str, r: Result<T, Errno>) {
    if let Err(e) = r {
        log::warn!("{what} failed during cleanup: {e}");
    }
}
