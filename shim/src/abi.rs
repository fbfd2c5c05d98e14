//! The legacy VFIO uAPI (`<linux/vfio.h>`) as the translator sees it: ioctl numbers, flag
//! bits and the wire layout of every container/group argument struct.
//!
//! Kernel names are kept verbatim. Structs derive zerocopy's traits so decoding is a checked
//! copy from caller bytes, never a pointer cast. `tests/abi_golden.rs` pins every number and
//! size as a literal and cross-checks them against the `vfio-bindings` crate.
#![allow(non_camel_case_types, non_upper_case_globals)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `';'`: VFIO and iommufd share this ioctl type byte.
pub const VFIO_TYPE: u32 = b';' as u32;
pub const VFIO_BASE: u32 = 100;

/// `_IO(VFIO_TYPE, VFIO_BASE + n)`: VFIO ioctls encode neither direction nor size (the
/// kernel reads `argsz`). The one definition of every VFIO ioctl number in the project.
const fn vfio_io(n: u32) -> u32 {
    nix::request_code_none!(VFIO_TYPE, VFIO_BASE + n) as u32
}

pub const VFIO_API_VERSION: i32 = 0;

// Container ioctls (on /dev/vfio/vfio).
pub const VFIO_GET_API_VERSION: u32 = vfio_io(0);
pub const VFIO_CHECK_EXTENSION: u32 = vfio_io(1);
pub const VFIO_SET_IOMMU: u32 = vfio_io(2);
// Group ioctls (on /dev/vfio/<N>).
pub const VFIO_GROUP_GET_STATUS: u32 = vfio_io(3);
pub const VFIO_GROUP_SET_CONTAINER: u32 = vfio_io(4);
pub const VFIO_GROUP_UNSET_CONTAINER: u32 = vfio_io(5);
pub const VFIO_GROUP_GET_DEVICE_FD: u32 = vfio_io(6);
// Device ioctls (on a device fd). Numbers collide with the IOMMU ones below: always
// dispatch on the fd's kind first.
pub const VFIO_DEVICE_GET_INFO: u32 = vfio_io(7);
pub const VFIO_DEVICE_GET_REGION_INFO: u32 = vfio_io(8);
pub const VFIO_DEVICE_GET_IRQ_INFO: u32 = vfio_io(9);
pub const VFIO_DEVICE_SET_IRQS: u32 = vfio_io(10);
pub const VFIO_DEVICE_RESET: u32 = vfio_io(11);
pub const VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: u32 = vfio_io(12);
pub const VFIO_DEVICE_PCI_HOT_RESET: u32 = vfio_io(13);
pub const VFIO_DEVICE_FEATURE: u32 = vfio_io(17);
pub const VFIO_DEVICE_BIND_IOMMUFD: u32 = vfio_io(18);
pub const VFIO_DEVICE_ATTACH_IOMMUFD_PT: u32 = vfio_io(19);
pub const VFIO_DEVICE_DETACH_IOMMUFD_PT: u32 = vfio_io(20);
// type1 IOMMU ioctls (on a container with an IOMMU set).
pub const VFIO_IOMMU_GET_INFO: u32 = vfio_io(12);
pub const VFIO_IOMMU_MAP_DMA: u32 = vfio_io(13);
pub const VFIO_IOMMU_UNMAP_DMA: u32 = vfio_io(14);
pub const VFIO_IOMMU_ENABLE: u32 = vfio_io(15);
pub const VFIO_IOMMU_DISABLE: u32 = vfio_io(16);
pub const VFIO_IOMMU_DIRTY_PAGES: u32 = vfio_io(17);

// CHECK_EXTENSION / SET_IOMMU arguments.
pub const VFIO_TYPE1_IOMMU: u64 = 1;
pub const VFIO_SPAPR_TCE_IOMMU: u64 = 2;
pub const VFIO_TYPE1v2_IOMMU: u64 = 3;
pub const VFIO_DMA_CC_IOMMU: u64 = 4;
pub const VFIO_EEH: u64 = 5;
pub const __VFIO_RESERVED_TYPE1_NESTING_IOMMU: u64 = 6;
pub const VFIO_SPAPR_TCE_v2_IOMMU: u64 = 7;
pub const VFIO_NOIOMMU_IOMMU: u64 = 8;
pub const VFIO_UNMAP_ALL: u64 = 9;
pub const VFIO_UPDATE_VADDR: u64 = 10;

// Group status flags.
pub const VFIO_GROUP_FLAGS_VIABLE: u32 = 1 << 0;
pub const VFIO_GROUP_FLAGS_CONTAINER_SET: u32 = 1 << 1;

// GET_INFO.
pub const VFIO_IOMMU_INFO_PGSIZES: u32 = 1 << 0;
pub const VFIO_IOMMU_INFO_CAPS: u32 = 1 << 1;
pub const VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: u16 = 1;
pub const VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION: u16 = 2;
pub const VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: u16 = 3;

// MAP_DMA / UNMAP_DMA.
pub const VFIO_DMA_MAP_FLAG_READ: u32 = 1 << 0;
pub const VFIO_DMA_MAP_FLAG_WRITE: u32 = 1 << 1;
pub const VFIO_DMA_MAP_FLAG_VADDR: u32 = 1 << 2;
pub const VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: u32 = 1 << 0;
pub const VFIO_DMA_UNMAP_FLAG_ALL: u32 = 1 << 1;
pub const VFIO_DMA_UNMAP_FLAG_VADDR: u32 = 1 << 2;

// DIRTY_PAGES.
pub const VFIO_IOMMU_DIRTY_PAGES_FLAG_START: u32 = 1 << 0;
pub const VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP: u32 = 1 << 1;
pub const VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP: u32 = 1 << 2;

/// vfio-shim's own handshake on its CUSE node (not a kernel number): the preload tells the
/// daemon it serves this open in-process. `_IO(';', 240)`, unused by VFIO; answers
/// [`VFIO_SHIM_CUSE_ADOPT_PROTOCOL`].
pub const VFIO_SHIM_CUSE_ADOPT: u32 = vfio_io(240 - VFIO_BASE);
pub const VFIO_SHIM_CUSE_ADOPT_PROTOCOL: i32 = 1;
/// vfio-shim's own: the daemon asks its container node which open a file is (it answers its
/// file handle). Served only to the daemon's own threads, so a group's `SET_CONTAINER` can name
/// a container by fd. `_IO(';', 241)`.
pub const VFIO_SHIM_CUSE_IDENTIFY: u32 = vfio_io(241 - VFIO_BASE);

/// `KVMIO`: the ioctl type of KVM (`<linux/kvm.h>`).
pub const KVMIO: u32 = 0xAE;

/// `struct kvm_device_attr` (`<linux/kvm.h>`): the argument of `KVM_SET_DEVICE_ATTR`, which
/// the shim rewrites when it names a legacy group for KVM's VFIO device.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct kvm_device_attr {
    pub flags: u32,
    pub group: u32,
    pub attr: u64,
    pub addr: u64,
}

/// `_IOW(KVMIO, 0xe1, struct kvm_device_attr)`.
pub const KVM_SET_DEVICE_ATTR: u32 =
    nix::request_code_write!(KVMIO, 0xe1, core::mem::size_of::<kvm_device_attr>()) as u32;
/// `KVM_DEV_VFIO_FILE` (formerly `KVM_DEV_VFIO_GROUP`) and its `ADD`/`DEL` attributes.
pub const KVM_DEV_VFIO_FILE: u32 = 1;
pub const KVM_DEV_VFIO_FILE_ADD: u64 = 1;
pub const KVM_DEV_VFIO_FILE_DEL: u64 = 2;

/// type1's `dma_entry_limit` module parameter default (`U16_MAX`, T1:59).
pub const DMA_ENTRY_LIMIT_DEFAULT: u32 = 65535;
/// The requests `do_vfs_ioctl` (fs/ioctl.c) answers itself, before any driver's ioctl, for
/// every file: FIOCLEX, FIONCLEX, FIONBIO, FIOASYNC, FIOQSIZE, FIFREEZE, FITHAW, FS_IOC_FIEMAP,
/// FIGETBSZ, FICLONE, FICLONERANGE, FIDEDUPERANGE, FS_IOC_GETFSUUID, FS_IOC_GETFSSYSFSPATH
/// (x86_64 numbers; the kernel compares the low 32 bits). Glue forwards these to a real file of
/// the same kind (a character device on devtmpfs) so the kernel answers them.
pub const GENERIC_VFS_IOCTLS: [u32; 14] = [
    0x5451,
    0x5450,
    0x5421,
    0x5452,
    0x5460,
    0xc004_5877,
    0xc004_5878,
    0xc020_660b,
    0x0000_0002,
    0x4004_9409,
    0x4020_940d,
    0xc018_9436,
    0x8011_1500,
    0x8081_1501,
];

/// Whether the VFS, not the driver, answers `req` (see [`GENERIC_VFS_IOCTLS`]).
pub fn is_generic_vfs_ioctl(req: u32) -> bool {
    GENERIC_VFS_IOCTLS.contains(&req)
}

/// type1's `DIRTY_BITMAP_SIZE_MAX`: `INT_MAX` pages rounded up to u64 words, in bytes.
pub const DIRTY_BITMAP_SIZE_MAX: u64 = ((i32::MAX as u64).div_ceil(64) * 64) / 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct vfio_group_status {
    pub argsz: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct vfio_iommu_type1_info {
    pub argsz: u32,
    pub flags: u32,
    pub iova_pgsizes: u64,
    pub cap_offset: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct vfio_info_cap_header {
    pub id: u16,
    pub version: u16,
    pub next: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct vfio_iova_range {
    pub start: u64,
    pub end: u64,
}

/// Fixed part of `struct vfio_iommu_type1_info_cap_iova_range`; `nr_iovas` ranges follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct vfio_iommu_type1_info_cap_iova_range {
    pub header: vfio_info_cap_header,
    pub nr_iovas: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct vfio_iommu_type1_info_cap_migration {
    pub header: vfio_info_cap_header,
    pub flags: u32,
    pub pad: u32,
    pub pgsize_bitmap: u64,
    pub max_dirty_bitmap_size: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct vfio_iommu_type1_info_dma_avail {
    pub header: vfio_info_cap_header,
    pub avail: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct vfio_iommu_type1_dma_map {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}

/// Fixed part of `struct vfio_iommu_type1_dma_unmap`; a `vfio_bitmap` may follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct vfio_iommu_type1_dma_unmap {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    pub size: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct vfio_bitmap {
    pub pgsize: u64,
    pub size: u64,
    pub data: u64,
}

/// Fixed part of `struct vfio_iommu_type1_dirty_bitmap`; a `..._get` may follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct vfio_iommu_type1_dirty_bitmap {
    pub argsz: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct vfio_iommu_type1_dirty_bitmap_get {
    pub iova: u64,
    pub size: u64,
    pub bitmap: vfio_bitmap,
}

/// `offsetofend(struct, field)` for the fields the kernel uses as `minsz`.
pub mod minsz {
    pub const GROUP_STATUS: usize = 8;
    pub const IOMMU_INFO: usize = 16; // through iova_pgsizes
    pub const DMA_MAP: usize = 32; // through size
    pub const DMA_UNMAP: usize = 24; // through size
    pub const DIRTY_BITMAP: usize = 8; // through flags
}
