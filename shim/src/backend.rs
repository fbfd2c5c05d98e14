//! The one seam between the pure translator and the world: every iommufd and VFIO-cdev
//! operation the translator needs, named after the native uAPI it stands for.
//!
//! Implementations: `vfio_shim_sys::KernelBackend` (real ioctls on `/dev/iommu` and
//! `/dev/vfio/devices/vfioN`) and [`crate::fake::FakeBackend`] (in memory, for host tests).
//! Errors are the errno the native call returned; the translator maps them to type1's.

use nix::errno::Errno;

use crate::hot_reset::vfio_pci_dependent_device;

/// One iommufd context (an open `/dev/iommu`). A legacy container owns exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IommufdId(pub u64);

/// An object id inside an iommufd context (IOAS, HWPT, device).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IoasId(pub u32);

/// An opened (and not yet closed) VFIO device cdev held by the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceHandle(pub u64);

/// A file of a device's cdev opened only to be named to KVM's VFIO device, never bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KvmFile(pub u64);

/// DMA permissions, from the device's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Prot {
    pub read: bool,
    pub write: bool,
}

/// An inclusive IOVA range `[start, last]`, as `IOMMU_IOAS_IOVA_RANGES` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IovaRange {
    pub start: u64,
    pub last: u64,
}

/// What `IOMMU_IOAS_IOVA_RANGES` says about an IOAS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoasGeometry {
    /// Usable IOVA ranges, ascending, already minus every reserved region.
    pub ranges: Vec<IovaRange>,
    /// `out_iova_alignment`: the smallest IOVA granule the attached domains accept.
    pub iova_alignment: u64,
}

/// A device of an IOMMU group, as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDevice {
    /// The device's name in its bus, e.g. `0000:00:03.0`; what `GET_DEVICE_FD` matches.
    pub name: String,
    /// The bound driver's name (`vfio-pci`), or `None` when no driver is bound.
    pub driver: Option<String>,
    /// The VFIO cdev (`/dev/vfio/devices/vfioN`) when the device is bound to a VFIO driver.
    pub cdev: Option<String>,
    /// An SR-IOV PF or VF: the only devices `GET_DEVICE_FD` takes a `vf_token` for.
    pub sriov: bool,
}

impl GroupDevice {
    /// No driver, or a driver with `driver_managed_dma` (VFIO drivers, pci-stub, pcieport):
    /// such a device does not claim its group for kernel DMA, so the group stays viable.
    pub fn allows_user_dma(&self) -> bool {
        match self.driver.as_deref() {
            None => true,
            Some(drv) => drv.contains("vfio") || drv == "pci-stub" || drv == "pcieport",
        }
    }
}

/// A native DMA map or unmap, as the translator asks the backend for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaOp {
    /// `IOMMU_IOAS_MAP` of the caller's `[vaddr, vaddr + length)` at `iova`.
    Map { iova: u64, vaddr: u64, length: u64, prot: Prot },
    /// `IOMMU_IOAS_UNMAP` of `[iova, iova + length)`.
    Unmap { iova: u64, length: u64 },
}

/// A [`DmaOp`] made ready to run apart from its backend, without `&mut` access to it, so the
/// glue can make the kernel call without the lock that guards the core: a long pin in one
/// container then holds up no other container's calls, as type1's per-container lock.
pub trait DetachedDma: Send + Sync {
    /// The native call: the bytes unmapped for an unmap, 0 for a map. A map pins memory the
    /// caller asked to map, as [`Backend::ioas_map`] does (the same contract).
    fn run(&self) -> Result<u64, Errno>;
}

/// Every native operation the translator performs.
///
/// Object lifetimes follow the kernel's: destroying an IOAS with devices attached fails with
/// `EBUSY`; closing a device detaches and unbinds it; closing an iommufd destroys its objects.
pub trait Backend {
    /// `open("/dev/iommu")`.
    fn iommufd_open(&mut self) -> Result<IommufdId, Errno>;
    /// `close()` of the iommufd. Every device bound to it must be closed first.
    fn iommufd_close(&mut self, ctx: IommufdId);

    /// `IOMMU_IOAS_ALLOC`.
    fn ioas_alloc(&mut self, ctx: IommufdId) -> Result<IoasId, Errno>;
    /// `IOMMU_DESTROY` of an IOAS.
    fn ioas_destroy(&mut self, ctx: IommufdId, ioas: IoasId) -> Result<(), Errno>;
    /// `IOMMU_IOAS_IOVA_RANGES` (the implementation retries on `EMSGSIZE` itself).
    fn ioas_geometry(&mut self, ctx: IommufdId, ioas: IoasId) -> Result<IoasGeometry, Errno>;
    /// `IOMMU_IOAS_MAP` with `IOMMU_IOAS_MAP_FIXED_IOVA` of process memory at `vaddr`. The core
    /// passes only addresses the application named in its own `VFIO_IOMMU_MAP_DMA`: the
    /// device's access to that memory is the application's request, as on type1.
    fn ioas_map(
        &mut self,
        ctx: IommufdId,
        ioas: IoasId,
        iova: u64,
        vaddr: u64,
        length: u64,
        prot: Prot,
    ) -> Result<(), Errno>;
    /// `IOMMU_IOAS_UNMAP` of `[iova, iova + length)`; returns the bytes unmapped.
    /// `length == u64::MAX` with `iova == 0` unmaps everything and returns 0 when nothing was
    /// mapped; any other range with nothing mapped is `ENOENT` (ioas.c:351-367).
    fn ioas_unmap(&mut self, ctx: IommufdId, ioas: IoasId, iova: u64, length: u64) -> Result<u64, Errno>;

    /// The IOMMU page sizes of the domain(s) backing `ioas` once devices are attached, as
    /// type1's `iova_pgsizes` reports them (the intersection over attached devices).
    fn ioas_pgsizes(&mut self, ctx: IommufdId, ioas: IoasId) -> Result<u64, Errno>;

    /// Whether every domain behind `ioas` enforces cache coherency (`VFIO_DMA_CC_IOMMU`).
    fn ioas_enforces_coherency(&mut self, ctx: IommufdId, ioas: IoasId) -> Result<bool, Errno>;

    /// The devices in IOMMU group `group` (`/sys/kernel/iommu_groups/<group>/devices`).
    /// `ENOENT` when there is no such group.
    fn group_devices(&mut self, group: u32) -> Result<Vec<GroupDevice>, Errno>;

    /// Claims IOMMU group `group` for this opener, as type1's one open file per group does
    /// system-wide (`/dev/vfio/<group>` is `EBUSY` while any process has it open): `EBUSY`
    /// while another opener holds it. Released by [`Backend::group_release`].
    fn group_claim(&mut self, group: u32) -> Result<(), Errno>;
    /// Drops this opener's claim on `group`.
    fn group_release(&mut self, group: u32);

    /// Whether vfio's unsafe no-IOMMU mode is on (`vfio.enable_unsafe_noiommu_mode`). Asked at
    /// each call that depends on it, as the kernel reads the parameter (writable at run time).
    fn noiommu_mode(&mut self) -> bool;
    /// The devices of no-IOMMU group `group`, the one behind `/dev/vfio/noiommu-<group>`: on a
    /// kernel with VFIO groups the members of its `vfio-noiommu` IOMMU group, without them the
    /// device of the cdev `noiommu-vfio<group>`. `ENOENT` when there is no such group.
    fn noiommu_group_devices(&mut self, group: u32) -> Result<Vec<GroupDevice>, Errno>;
    /// As [`Backend::group_claim`], for no-IOMMU group `group`.
    fn noiommu_group_claim(&mut self, group: u32) -> Result<(), Errno>;
    /// As [`Backend::group_release`], for no-IOMMU group `group`.
    fn noiommu_group_release(&mut self, group: u32);
    /// Whether the caller has `CAP_SYS_RAWIO` in its effective set: the kernel's `capable()`
    /// at every no-IOMMU group open, container attach, `SET_IOMMU` and device open.
    fn caller_has_rawio(&mut self) -> bool;
    /// A program got an fd of no-IOMMU device `name`: tell whoever watches the host, as the
    /// kernel logs "vfio-noiommu device opened by user" for a no-IOMMU group's device.
    fn noiommu_device_opened(&mut self, name: &str);

    /// `open()` of the device's VFIO cdev.
    fn device_open(&mut self, device: &GroupDevice) -> Result<DeviceHandle, Errno>;
    /// `VFIO_DEVICE_BIND_IOMMUFD`.
    fn device_bind(&mut self, dev: DeviceHandle, ctx: IommufdId) -> Result<(), Errno>;
    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` to an IOAS.
    fn device_attach(&mut self, dev: DeviceHandle, ioas: IoasId) -> Result<(), Errno>;
    /// `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
    fn device_detach(&mut self, dev: DeviceHandle) -> Result<(), Errno>;
    /// `close()` of the device cdev (the kernel unbinds it).
    fn device_close(&mut self, dev: DeviceHandle);
    /// `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO` on the device's cdev: the kernel's flags and the
    /// devices a slot or bus reset of it touches, in the cdev form (iommufd dev ids with
    /// `VFIO_PCI_HOT_RESET_FLAG_DEV_ID`). `ENODEV` when neither reset is possible.
    fn device_hot_reset_info(&mut self, dev: DeviceHandle) -> Result<(u32, Vec<vfio_pci_dependent_device>), Errno>;
    /// `VFIO_DEVICE_PCI_HOT_RESET` in the cdev form (no group fds): the kernel checks that this
    /// device's iommufd owns every affected device.
    fn device_hot_reset(&mut self, dev: DeviceHandle) -> Result<(), Errno>;
    /// The IOMMU group of the PCI device at `segment:bus:devfn`, if it has one.
    fn pci_iommu_group(&self, segment: u16, bus: u8, devfn: u8) -> Option<u32>;
    /// `open()` of the device's cdev for KVM's VFIO device alone: the file KVM holds for an
    /// emulated group, as it holds the group's own file on type1. Never bound, and distinct
    /// from the bound file the program's device fds share, so KVM holding it leaves the
    /// device's last close to the program, as on type1.
    fn kvm_file_open(&mut self, device: &GroupDevice) -> Result<KvmFile, Errno>;
    /// `close()` of such a file (KVM keeps its own reference while it holds it).
    fn kvm_file_close(&mut self, file: KvmFile);
    /// `KVM_SET_DEVICE_ATTR(KVM_DEV_VFIO_FILE, FILE_ADD or FILE_DEL)` of `file` on the KVM VFIO
    /// device `kvm_device`, the program's fd of it. KVM answers `EEXIST` for a file already
    /// added and `ENOENT` for one it does not hold.
    fn kvm_device_file(&mut self, kvm_device: i32, file: KvmFile, add: bool) -> Result<(), Errno>;
    /// A device's last close and its next open, as type1's `close_device` and `open_device`
    /// see them: the cdev file is closed (the kernel quiesces and resets the device, vfio-pci's
    /// `vfio_pci_core_disable`), opened again, bound to the same iommufd and attached to the
    /// same IOAS (`vfio_pci_core_enable`); the handle stays valid. `EBUSY`, with nothing
    /// changed, while the file is still held by a mapping of one of its regions.
    fn device_reopen(&mut self, dev: DeviceHandle) -> Result<(), Errno>;
    /// Whether this process maps a region of the device's file (which then holds the file,
    /// and type1's device and group with it, after the last fd is closed).
    fn device_mapped(&mut self, dev: DeviceHandle) -> Result<bool, Errno>;
    /// Whether another process holds the device's file, by an fd (inherited over fork or
    /// received) or a mapping of one of its regions: its last close here is then not the
    /// device's last close, and a reopen could not bind (a cdev binds once).
    fn device_held_elsewhere(&mut self, dev: DeviceHandle) -> Result<bool, Errno>;

    /// What runs a detached [`DmaOp`] (see [`DetachedDma`]).
    type Detached: DetachedDma;
    /// `op` made ready to run without the backend, or `None` when it must run through
    /// `ioas_map`/`ioas_unmap` (the default).
    fn detach_dma(&mut self, _ctx: IommufdId, _ioas: IoasId, _op: DmaOp) -> Option<Self::Detached> {
        None
    }
    /// The backend's part after a detached call ran: its bookkeeping, and fallbacks that need
    /// its tables. Returns the call's final result.
    fn complete_dma(
        &mut self,
        _ctx: IommufdId,
        _ioas: IoasId,
        _op: DmaOp,
        ran: Result<u64, Errno>,
    ) -> Result<u64, Errno> {
        ran
    }
}
