//! The VFIO device cdev (`/dev/vfio/devices/vfioN`): binding to an iommufd, attaching to an
//! IOAS, PCI hot reset in the cdev form, and dma-buf export of a BAR. Structs from the
//! `vfio-bindings` crate; every VFIO number is `vfio_shim::abi`'s, pinned in `tests/golden.rs`.
#![allow(non_upper_case_globals)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use vfio_bindings::bindings::vfio;
use vfio_shim::hot_reset::{vfio_pci_hot_reset_header, HEADER_SIZE};

use crate::ioctl::{argsz, ioctl, ioctl_value};

pub use vfio::{vfio_device_attach_iommufd_pt, vfio_device_bind_iommufd, vfio_device_detach_iommufd_pt};
pub use vfio_shim::abi::{
    VFIO_BASE, VFIO_DEVICE_ATTACH_IOMMUFD_PT, VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_DETACH_IOMMUFD_PT,
    VFIO_DEVICE_FEATURE, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, VFIO_DEVICE_PCI_HOT_RESET, VFIO_TYPE,
};

/// `VFIO_DEVICE_BIND_IOMMUFD` of a device cdev to `iommufd`; returns the dev id.
pub fn device_bind_iommufd(device: BorrowedFd<'_>, iommufd: BorrowedFd<'_>) -> Result<u32, Errno> {
    let mut cmd = vfio_device_bind_iommufd {
        argsz: argsz::<vfio_device_bind_iommufd>(),
        flags: 0,
        iommufd: iommufd.as_raw_fd(),
        out_devid: 0,
        token_uuid_ptr: 0,
    };
    // SAFETY: `cmd` is a `vfio_device_bind_iommufd` without VFIO_DEVICE_BIND_FLAG_TOKEN, so
    // `token_uuid_ptr` is ignored.
    unsafe { ioctl(device, VFIO_DEVICE_BIND_IOMMUFD, &mut cmd) }?;
    Ok(cmd.out_devid)
}

/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` to IOAS or HWPT `pt_id`; returns the output `pt_id`:
/// the HWPT actually attached (the auto-created one when `pt_id` was an IOAS).
pub fn device_attach_iommufd_pt(device: BorrowedFd<'_>, pt_id: u32) -> Result<u32, Errno> {
    let mut cmd =
        vfio_device_attach_iommufd_pt { argsz: argsz::<vfio_device_attach_iommufd_pt>(), flags: 0, pt_id, pasid: 0 };
    // SAFETY: `cmd` is a `vfio_device_attach_iommufd_pt` with no embedded pointers.
    unsafe { ioctl(device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &mut cmd) }?;
    Ok(cmd.pt_id)
}

/// `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
pub fn device_detach_iommufd_pt(device: BorrowedFd<'_>) -> Result<(), Errno> {
    let mut cmd = vfio_device_detach_iommufd_pt { argsz: argsz::<vfio_device_detach_iommufd_pt>(), flags: 0, pasid: 0 };
    // SAFETY: `cmd` is a `vfio_device_detach_iommufd_pt` with no embedded pointers.
    unsafe { ioctl(device, VFIO_DEVICE_DETACH_IOMMUFD_PT, &mut cmd) }
}

/// `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO` into `buf`: a `vfio_pci_hot_reset_info` header (its
/// `argsz` set here to `buf.len()`) followed by room for the dependent devices.
pub fn device_pci_hot_reset_info(device: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(), Errno> {
    if buf.len() < HEADER_SIZE {
        return Err(Errno::EINVAL);
    }
    let argsz = u32::try_from(buf.len()).map_err(|_| Errno::EINVAL)?;
    buf[..4].copy_from_slice(&argsz.to_ne_bytes());
    // SAFETY: the kernel writes at most `argsz` bytes, all of `buf`, which is borrowed
    // mutably for the call.
    unsafe { ioctl(device, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buf.as_mut_ptr()) }
}

/// `VFIO_DEVICE_PCI_HOT_RESET` in the cdev form: no group fds (`count == 0`); the kernel checks
/// that the caller's iommufd owns every affected device.
pub fn device_pci_hot_reset_cdev(device: BorrowedFd<'_>) -> Result<(), Errno> {
    let mut header = vfio_pci_hot_reset_header { argsz: HEADER_SIZE as u32, flags: 0, count: 0 };
    // SAFETY: a header-only `vfio_pci_hot_reset` (empty group_fds[]) on our stack; the kernel
    // reads its 12 bytes.
    unsafe { ioctl(device, VFIO_DEVICE_PCI_HOT_RESET, &mut header) }
}

pub const VFIO_DEVICE_FEATURE_GET: u32 = 1 << 16;
/// vfio-pci's region of a file offset of the device's file, and the offset in that region:
/// it encodes the region in the offset, `index << VFIO_PCI_OFFSET_SHIFT` (40).
pub fn pci_region_of_offset(offset: u64) -> (u32, u64) {
    const VFIO_PCI_OFFSET_SHIFT: u32 = 40;
    ((offset >> VFIO_PCI_OFFSET_SHIFT) as u32, offset & ((1 << VFIO_PCI_OFFSET_SHIFT) - 1))
}

/// `VFIO_DEVICE_FEATURE_DMA_BUF` (vfio.h, 7.3).
pub const VFIO_DEVICE_FEATURE_DMA_BUF: u32 = 11;

/// `VFIO_DEVICE_FEATURE(GET | DMA_BUF)` for one range of one region: a dma-buf fd exporting
/// `[offset, offset + length)` of the device's region `region_index` (a PCI BAR).
pub fn device_dma_buf(device: BorrowedFd<'_>, region_index: u32, offset: u64, length: u64) -> Result<OwnedFd, Errno> {
    // struct vfio_device_feature { argsz, flags } + vfio_device_feature_dma_buf
    // { region_index, open_flags, flags, nr_ranges } + one vfio_region_dma_range.
    #[repr(C)]
    struct Request {
        argsz: u32,
        flags: u32,
        region_index: u32,
        open_flags: u32,
        dma_buf_flags: u32,
        nr_ranges: u32,
        offset: u64,
        length: u64,
    }
    impl crate::native_trace::Describe for Request {
        fn describe(&self) -> String {
            format!(
                "flags={:#x}, region={}, offset={:#x}, length={:#x}",
                self.flags, self.region_index, self.offset, self.length
            )
        }
    }
    let mut req = Request {
        argsz: std::mem::size_of::<Request>() as u32,
        flags: VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF,
        region_index,
        open_flags: (libc::O_RDWR | libc::O_CLOEXEC) as u32,
        dma_buf_flags: 0,
        nr_ranges: 1,
        offset,
        length,
    };
    // SAFETY: `req` is a complete vfio_device_feature + dma_buf request of `argsz` bytes with
    // no embedded pointers; on success the kernel returns a new fd that we take ownership of.
    let fd = unsafe { ioctl_value(device, VFIO_DEVICE_FEATURE, &mut req) }? as i32;
    // SAFETY: `fd` was just created by the kernel for us and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
