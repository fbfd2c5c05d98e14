//! iommufd (`/dev/iommu`): every command vfio-shim issues, as safe functions returning the
//! kernel's errno (the DMA maps are `unsafe fn`s: see their contracts).
//!
//! Kernel names are verbatim. Struct layouts come from the `iommufd-bindings` crate; numbers
//! and sizes were checked against the 7.3 uAPI header (`include/uapi/linux/iommufd.h`) and are
//! pinned as literals in `tests/golden.rs`.
//!
//! Every command is `_IO(';', nr)`: the kernel reads the struct's leading `size` field to learn
//! how much to copy, so each wrapper fills it with `size_of` the whole struct.
//!
//! Wrappers the backend never uses (`IOMMU_VFIO_IOAS`, allowed IOVAs, HWPT dirty tracking)
//! exist for the kernel-backend tests, behind the `test-wrappers` feature.
//! `IOMMU_VFIO_IOAS` in particular: the backend must never drive the kernel's
//! container compat layer, which is what the shim replaces.
#![allow(non_upper_case_globals)]

use std::os::fd::{AsRawFd, BorrowedFd};

use iommufd_bindings as iommufd;
use nix::errno::Errno;

use crate::ioctl::{argsz, ioctl};

pub use iommufd::{
    iommu_destroy, iommu_hw_info, iommu_hw_info_vtd, iommu_hwpt_alloc, iommu_hwpt_get_dirty_bitmap,
    iommu_hwpt_set_dirty_tracking, iommu_ioas_alloc, iommu_ioas_allow_iovas, iommu_ioas_copy, iommu_ioas_iova_ranges,
    iommu_ioas_map, iommu_ioas_map_file, iommu_ioas_unmap, iommu_iova_range, iommu_option, iommu_vfio_ioas,
};

/// `_IO(IOMMUFD_TYPE, cmd)`: neither direction nor size is encoded (the kernel reads `size`).
/// The one definition of every iommufd ioctl number; VFIO's are `vfio_shim::abi`'s.
const fn iommufd_io(cmd: u32) -> u32 {
    nix::request_code_none!(IOMMUFD_TYPE, cmd) as u32
}

/// `';'`, shared by VFIO and iommufd.
pub const IOMMUFD_TYPE: u32 = iommufd::IOMMUFD_TYPE as u32;

pub const IOMMU_DESTROY: u32 = iommufd_io(iommufd::IOMMUFD_CMD_DESTROY);
pub const IOMMU_IOAS_ALLOC: u32 = iommufd_io(iommufd::IOMMUFD_CMD_IOAS_ALLOC);
pub const IOMMU_IOAS_ALLOW_IOVAS: u32 = iommufd_io(iommufd::IOMMUFD_CMD_IOAS_ALLOW_IOVAS);
pub const IOMMU_IOAS_COPY: u32 = iommufd_io(iommufd::IOMMUFD_CMD_IOAS_COPY);
pub const IOMMU_IOAS_IOVA_RANGES: u32 = iommufd_io(iommufd::IOMMUFD_CMD_IOAS_IOVA_RANGES);
pub const IOMMU_IOAS_MAP: u32 = iommufd_io(iommufd::IOMMUFD_CMD_IOAS_MAP);
pub const IOMMU_IOAS_UNMAP: u32 = iommufd_io(iommufd::IOMMUFD_CMD_IOAS_UNMAP);
pub const IOMMU_OPTION: u32 = iommufd_io(iommufd::IOMMUFD_CMD_OPTION);
pub const IOMMU_VFIO_IOAS: u32 = iommufd_io(iommufd::IOMMUFD_CMD_VFIO_IOAS);
pub const IOMMU_HWPT_ALLOC: u32 = iommufd_io(iommufd::IOMMUFD_CMD_HWPT_ALLOC);
pub const IOMMU_GET_HW_INFO: u32 = iommufd_io(iommufd::IOMMUFD_CMD_GET_HW_INFO);
pub const IOMMU_HWPT_SET_DIRTY_TRACKING: u32 = iommufd_io(iommufd::IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING);
pub const IOMMU_HWPT_GET_DIRTY_BITMAP: u32 = iommufd_io(iommufd::IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP);
pub const IOMMU_IOAS_MAP_FILE: u32 = iommufd_io(iommufd::IOMMUFD_CMD_IOAS_MAP_FILE);

// enum iommufd_ioas_map_flags
pub const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = iommufd::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA;
pub const IOMMU_IOAS_MAP_WRITEABLE: u32 = iommufd::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE;
pub const IOMMU_IOAS_MAP_READABLE: u32 = iommufd::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE;
// enum iommufd_option, enum iommufd_option_ops
pub const IOMMU_OPTION_RLIMIT_MODE: u32 = iommufd::iommufd_option_IOMMU_OPTION_RLIMIT_MODE;
pub const IOMMU_OPTION_HUGE_PAGES: u32 = iommufd::iommufd_option_IOMMU_OPTION_HUGE_PAGES;
pub const IOMMU_OPTION_OP_SET: u16 = iommufd::iommufd_option_ops_IOMMU_OPTION_OP_SET as u16;
pub const IOMMU_OPTION_OP_GET: u16 = iommufd::iommufd_option_ops_IOMMU_OPTION_OP_GET as u16;
// enum iommufd_vfio_ioas_op
pub const IOMMU_VFIO_IOAS_GET: u16 = iommufd::iommufd_vfio_ioas_op_IOMMU_VFIO_IOAS_GET as u16;
pub const IOMMU_VFIO_IOAS_SET: u16 = iommufd::iommufd_vfio_ioas_op_IOMMU_VFIO_IOAS_SET as u16;
pub const IOMMU_VFIO_IOAS_CLEAR: u16 = iommufd::iommufd_vfio_ioas_op_IOMMU_VFIO_IOAS_CLEAR as u16;
// enum iommufd_hwpt_alloc_flags
pub const IOMMU_HWPT_ALLOC_NEST_PARENT: u32 = iommufd::iommufd_hwpt_alloc_flags_IOMMU_HWPT_ALLOC_NEST_PARENT;
pub const IOMMU_HWPT_ALLOC_DIRTY_TRACKING: u32 = iommufd::iommufd_hwpt_alloc_flags_IOMMU_HWPT_ALLOC_DIRTY_TRACKING;
// enum iommu_hwpt_data_type
pub const IOMMU_HWPT_DATA_NONE: u32 = iommufd::iommu_hwpt_data_type_IOMMU_HWPT_DATA_NONE;
// enum iommufd_hwpt_set_dirty_tracking_flags, enum iommufd_hwpt_get_dirty_bitmap_flags
pub const IOMMU_HWPT_DIRTY_TRACKING_ENABLE: u32 =
    iommufd::iommufd_hwpt_set_dirty_tracking_flags_IOMMU_HWPT_DIRTY_TRACKING_ENABLE;
pub const IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR: u32 =
    iommufd::iommufd_hwpt_get_dirty_bitmap_flags_IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR;
// enum iommu_hw_info_type
pub const IOMMU_HW_INFO_TYPE_NONE: u32 = iommufd::iommu_hw_info_type_IOMMU_HW_INFO_TYPE_NONE;
pub const IOMMU_HW_INFO_TYPE_INTEL_VTD: u32 = iommufd::iommu_hw_info_type_IOMMU_HW_INFO_TYPE_INTEL_VTD;
pub const IOMMU_HW_INFO_TYPE_ARM_SMMUV3: u32 = iommufd::iommu_hw_info_type_IOMMU_HW_INFO_TYPE_ARM_SMMUV3;
pub const IOMMU_HW_INFO_TYPE_AMD: u32 = iommufd::iommu_hw_info_type_IOMMU_HW_INFO_TYPE_AMD;
// enum iommufd_hw_capabilities
pub const IOMMU_HW_CAP_DIRTY_TRACKING: u64 = iommufd::iommufd_hw_capabilities_IOMMU_HW_CAP_DIRTY_TRACKING as u64;

/// `IOMMU_IOAS_ALLOC`: returns the new IOAS id.
pub fn ioas_alloc(iommufd: BorrowedFd<'_>) -> Result<u32, Errno> {
    let mut cmd = iommu_ioas_alloc { size: argsz::<iommu_ioas_alloc>(), ..Default::default() };
    // SAFETY: `cmd` is an `iommu_ioas_alloc` with no embedded pointers.
    unsafe { ioctl(iommufd, IOMMU_IOAS_ALLOC, &mut cmd) }?;
    Ok(cmd.out_ioas_id)
}

/// `IOMMU_DESTROY` of any object (IOAS, HWPT).
pub fn destroy(iommufd: BorrowedFd<'_>, id: u32) -> Result<(), Errno> {
    let mut cmd = iommu_destroy { size: argsz::<iommu_destroy>(), id };
    // SAFETY: `cmd` is an `iommu_destroy` with no embedded pointers.
    unsafe { ioctl(iommufd, IOMMU_DESTROY, &mut cmd) }
}

/// `IOMMU_IOAS_MAP` of process memory `[user_va, user_va + length)`; returns the IOVA
/// (the given one with `IOMMU_IOAS_MAP_FIXED_IOVA`, else the kernel's choice).
///
/// # Safety
/// From the call on, until the IOVA range is unmapped, every device attached to the IOAS may
/// read, and with `IOMMU_IOAS_MAP_WRITEABLE` write, `[user_va, user_va + length)` behind the
/// compiler's back. The caller guarantees that memory is meant for device access: a program's
/// buffer it asked to map (`VFIO_IOMMU_MAP_DMA`), never memory Rust code here owns.
pub unsafe fn ioas_map(
    iommufd: BorrowedFd<'_>,
    ioas_id: u32,
    flags: u32,
    user_va: u64,
    length: u64,
    iova: u64,
) -> Result<u64, Errno> {
    let mut cmd =
        iommu_ioas_map { size: argsz::<iommu_ioas_map>(), flags, ioas_id, __reserved: 0, user_va, length, iova };
    // SAFETY: `cmd` is an `iommu_ioas_map`; `user_va` is pinned by the kernel (EFAULT when
    // unmapped), and the caller vouches for the device's access to it.
    unsafe { ioctl(iommufd, IOMMU_IOAS_MAP, &mut cmd) }?;
    Ok(cmd.iova)
}

/// `IOMMU_IOAS_MAP_FILE` of `[start, start + length)` of `file` (memfd, hugetlbfs, shmem,
/// dma-buf); returns the IOVA.
///
/// # Safety
/// As [`ioas_map`]: devices may access those pages of `file` until the range is unmapped, also
/// where this or another process has them mapped; the caller guarantees they are meant for it.
pub unsafe fn ioas_map_file(
    iommufd: BorrowedFd<'_>,
    ioas_id: u32,
    flags: u32,
    file: BorrowedFd<'_>,
    start: u64,
    length: u64,
    iova: u64,
) -> Result<u64, Errno> {
    let mut cmd = iommu_ioas_map_file {
        size: argsz::<iommu_ioas_map_file>(),
        flags,
        ioas_id,
        fd: file.as_raw_fd(),
        start,
        length,
        iova,
    };
    // SAFETY: `cmd` is an `iommu_ioas_map_file` with no embedded pointers; `file` is open; the
    // caller vouches for the device's access to its pages.
    unsafe { ioctl(iommufd, IOMMU_IOAS_MAP_FILE, &mut cmd) }?;
    Ok(cmd.iova)
}

/// `IOMMU_IOAS_UNMAP`; returns the bytes unmapped. `iova == 0, length == u64::MAX`
/// unmaps everything and then succeeds even when nothing was mapped; any other range
/// with nothing mapped fails `ENOENT` (ioas.c:351-367).
pub fn ioas_unmap(iommufd: BorrowedFd<'_>, ioas_id: u32, iova: u64, length: u64) -> Result<u64, Errno> {
    let mut cmd = iommu_ioas_unmap { size: argsz::<iommu_ioas_unmap>(), ioas_id, iova, length };
    // SAFETY: `cmd` is an `iommu_ioas_unmap` with no embedded pointers.
    unsafe { ioctl(iommufd, IOMMU_IOAS_UNMAP, &mut cmd) }?;
    Ok(cmd.length)
}

/// What `IOMMU_IOAS_IOVA_RANGES` returns.
#[derive(Clone, Debug, PartialEq)]
pub struct IovaRanges {
    /// Allowed ranges, inclusive `start..=last`, ascending.
    pub ranges: Vec<iommu_iova_range>,
    pub out_iova_alignment: u64,
}

/// `IOMMU_IOAS_IOVA_RANGES`, retried with the count the kernel reports on `EMSGSIZE`.
pub fn ioas_iova_ranges(iommufd: BorrowedFd<'_>, ioas_id: u32) -> Result<IovaRanges, Errno> {
    // Two covers an IOAS with devices on x86 (below and above the MSI window) in one call.
    ioas_iova_ranges_with_capacity(iommufd, ioas_id, 2)
}

/// [`ioas_iova_ranges`] starting from a buffer of `capacity` ranges (tests use 0 to
/// exercise the `EMSGSIZE` retry).
pub fn ioas_iova_ranges_with_capacity(
    iommufd: BorrowedFd<'_>,
    ioas_id: u32,
    capacity: usize,
) -> Result<IovaRanges, Errno> {
    let mut ranges = vec![iommu_iova_range::default(); capacity];
    loop {
        let mut cmd = iommu_ioas_iova_ranges {
            size: argsz::<iommu_ioas_iova_ranges>(),
            ioas_id,
            num_iovas: u32::try_from(ranges.len()).map_err(|_| Errno::EOVERFLOW)?,
            __reserved: 0,
            allowed_iovas: ranges.as_mut_ptr() as u64,
            out_iova_alignment: 0,
        };
        // SAFETY: `allowed_iovas` points to `num_iovas` writable `iommu_iova_range`s owned
        // by `ranges`, which outlives the call; the kernel writes at most that many.
        match unsafe { ioctl(iommufd, IOMMU_IOAS_IOVA_RANGES, &mut cmd) } {
            Ok(()) => {
                ranges.truncate(cmd.num_iovas as usize);
                return Ok(IovaRanges { ranges, out_iova_alignment: cmd.out_iova_alignment });
            }
            // The kernel wrote the total back (ioas.c:103-109); ranges may change between
            // calls (a concurrent attach), so loop until the buffer fits.
            Err(Errno::EMSGSIZE) if cmd.num_iovas as usize > ranges.len() => {
                ranges.resize(cmd.num_iovas as usize, iommu_iova_range::default());
            }
            Err(e) => return Err(e),
        }
    }
}

/// `IOMMU_IOAS_ALLOW_IOVAS`: replaces the IOAS's allowed list with `ranges`.
#[cfg(any(test, feature = "test-wrappers"))]
pub fn ioas_allow_iovas(iommufd: BorrowedFd<'_>, ioas_id: u32, ranges: &[iommu_iova_range]) -> Result<(), Errno> {
    let mut cmd = iommu_ioas_allow_iovas {
        size: argsz::<iommu_ioas_allow_iovas>(),
        ioas_id,
        num_iovas: u32::try_from(ranges.len()).map_err(|_| Errno::EINVAL)?,
        __reserved: 0,
        allowed_iovas: ranges.as_ptr() as u64,
    };
    // SAFETY: `allowed_iovas` points to `num_iovas` readable ranges borrowed for the call;
    // the kernel only reads them.
    unsafe { ioctl(iommufd, IOMMU_IOAS_ALLOW_IOVAS, &mut cmd) }
}

/// `IOMMU_IOAS_COPY` of an existing mapping `[src_iova, src_iova + length)` of
/// `src_ioas_id` into `dst_ioas_id`; returns the destination IOVA. The pages are pinned again,
/// for the destination, from the mm the source mapping recorded (the supervisor's map of a
/// program's memory: docs/supervisor.md).
///
/// Safe: it gives devices access only to pages an earlier map already made device memory.
pub fn ioas_copy(
    iommufd: BorrowedFd<'_>,
    dst_ioas_id: u32,
    src_ioas_id: u32,
    flags: u32,
    length: u64,
    dst_iova: u64,
    src_iova: u64,
) -> Result<u64, Errno> {
    let mut cmd = iommu_ioas_copy {
        size: argsz::<iommu_ioas_copy>(),
        flags,
        dst_ioas_id,
        src_ioas_id,
        length,
        dst_iova,
        src_iova,
    };
    // SAFETY: `cmd` is an `iommu_ioas_copy` with no embedded pointers.
    unsafe { ioctl(iommufd, IOMMU_IOAS_COPY, &mut cmd) }?;
    Ok(cmd.dst_iova)
}

/// `IOMMU_OPTION`; returns `val64` (the current value for `IOMMU_OPTION_OP_GET`).
pub fn option(iommufd: BorrowedFd<'_>, option_id: u32, op: u16, object_id: u32, val64: u64) -> Result<u64, Errno> {
    let mut cmd = iommu_option { size: argsz::<iommu_option>(), option_id, op, __reserved: 0, object_id, val64 };
    // SAFETY: `cmd` is an `iommu_option` with no embedded pointers.
    unsafe { ioctl(iommufd, IOMMU_OPTION, &mut cmd) }?;
    Ok(cmd.val64)
}

/// `IOMMU_VFIO_IOAS`: selects the IOAS the kernel's legacy container compat acts on.
/// For tests and completeness only: the shim's backend never uses it.
#[cfg(any(test, feature = "test-wrappers"))]
pub fn vfio_ioas(iommufd: BorrowedFd<'_>, op: u16, ioas_id: u32) -> Result<u32, Errno> {
    let mut cmd = iommu_vfio_ioas { size: argsz::<iommu_vfio_ioas>(), ioas_id, op, __reserved: 0 };
    // SAFETY: `cmd` is an `iommu_vfio_ioas` with no embedded pointers.
    unsafe { ioctl(iommufd, IOMMU_VFIO_IOAS, &mut cmd) }?;
    Ok(cmd.ioas_id)
}

/// `IOMMU_HWPT_ALLOC` of a kernel-managed paging HWPT (`IOMMU_HWPT_DATA_NONE`) for device
/// `dev_id` over IOAS/HWPT `pt_id`; returns the HWPT id.
#[cfg(any(test, feature = "test-wrappers"))]
pub fn hwpt_alloc(iommufd: BorrowedFd<'_>, flags: u32, dev_id: u32, pt_id: u32) -> Result<u32, Errno> {
    let mut cmd = iommu_hwpt_alloc {
        size: argsz::<iommu_hwpt_alloc>(),
        flags,
        dev_id,
        pt_id,
        data_type: IOMMU_HWPT_DATA_NONE,
        ..Default::default()
    };
    // SAFETY: `cmd` is an `iommu_hwpt_alloc` with `data_uptr == 0, data_len == 0`.
    unsafe { ioctl(iommufd, IOMMU_HWPT_ALLOC, &mut cmd) }?;
    Ok(cmd.out_hwpt_id)
}

/// `IOMMU_HWPT_SET_DIRTY_TRACKING`.
#[cfg(any(test, feature = "test-wrappers"))]
pub fn hwpt_set_dirty_tracking(iommufd: BorrowedFd<'_>, hwpt_id: u32, enable: bool) -> Result<(), Errno> {
    let mut cmd = iommu_hwpt_set_dirty_tracking {
        size: argsz::<iommu_hwpt_set_dirty_tracking>(),
        flags: if enable { IOMMU_HWPT_DIRTY_TRACKING_ENABLE } else { 0 },
        hwpt_id,
        __reserved: 0,
    };
    // SAFETY: `cmd` is an `iommu_hwpt_set_dirty_tracking` with no embedded pointers.
    unsafe { ioctl(iommufd, IOMMU_HWPT_SET_DIRTY_TRACKING, &mut cmd) }
}

/// `u64` words the kernel writes for a dirty bitmap of `length` bytes at `page_size`
/// granularity: `((length - 1) >> __ffs(page_size)) + 1` bits (iova_bitmap.c:255-258).
/// `None` for the arguments the kernel rejects before touching the bitmap.
#[cfg(any(test, feature = "test-wrappers"))]
pub fn dirty_bitmap_words(length: u64, page_size: u64) -> Option<usize> {
    if length == 0 || page_size == 0 {
        return None;
    }
    let bits = ((length - 1) >> page_size.trailing_zeros()) + 1;
    usize::try_from(bits.div_ceil(64)).ok()
}

/// `IOMMU_HWPT_GET_DIRTY_BITMAP` of `[iova, iova + length)` into `bitmap`, one bit per
/// `page_size` starting at `iova`. `EINVAL` without a syscall when `bitmap` is shorter than
/// [`dirty_bitmap_words`], since the kernel would write past it.
#[cfg(any(test, feature = "test-wrappers"))]
pub fn hwpt_get_dirty_bitmap(
    iommufd: BorrowedFd<'_>,
    hwpt_id: u32,
    flags: u32,
    iova: u64,
    length: u64,
    page_size: u64,
    bitmap: &mut [u64],
) -> Result<(), Errno> {
    match dirty_bitmap_words(length, page_size) {
        Some(words) if words <= bitmap.len() => {}
        _ => return Err(Errno::EINVAL),
    }
    let mut cmd = iommu_hwpt_get_dirty_bitmap {
        size: argsz::<iommu_hwpt_get_dirty_bitmap>(),
        hwpt_id,
        flags,
        __reserved: 0,
        iova,
        length,
        page_size,
        data: bitmap.as_mut_ptr() as u64,
    };
    // SAFETY: `data` points to `bitmap`, checked above to hold every bit the kernel can
    // write for this `length`/`page_size`, and mutably borrowed for the call.
    unsafe { ioctl(iommufd, IOMMU_HWPT_GET_DIRTY_BITMAP, &mut cmd) }
}

/// What `IOMMU_GET_HW_INFO` reports about the IOMMU behind a bound device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HwInfo {
    /// `enum iommu_hw_info_type`.
    pub out_data_type: u32,
    /// `enum iommufd_hw_capabilities` bits.
    pub out_capabilities: u64,
    pub out_max_pasid_log2: u8,
    /// The type-specific data, exactly `data_len` bytes as the kernel reported it.
    pub data: Vec<u8>,
}

impl HwInfo {
    /// The VT-d registers when `out_data_type` is `IOMMU_HW_INFO_TYPE_INTEL_VTD`.
    pub fn vtd(&self) -> Option<iommu_hw_info_vtd> {
        if self.out_data_type != IOMMU_HW_INFO_TYPE_INTEL_VTD {
            return None;
        }
        // struct iommu_hw_info_vtd: u32 flags, u32 __reserved, u64 cap_reg, u64 ecap_reg.
        let u32_at = |o: usize| Some(u32::from_ne_bytes(self.data.get(o..o + 4)?.try_into().ok()?));
        let u64_at = |o: usize| Some(u64::from_ne_bytes(self.data.get(o..o + 8)?.try_into().ok()?));
        Some(iommu_hw_info_vtd {
            flags: u32_at(0)?,
            __reserved: u32_at(4)?,
            cap_reg: u64_at(8)?,
            ecap_reg: u64_at(16)?,
        })
    }
}

/// `IOMMU_GET_HW_INFO` for device `dev_id`; re-issued once if the type data is larger than
/// the first buffer.
pub fn get_hw_info(iommufd: BorrowedFd<'_>, dev_id: u32) -> Result<HwInfo, Errno> {
    // Large enough for every type 7.3 knows (the largest, arm_smmuv3, is 40 bytes).
    let mut data = vec![0u8; 64];
    loop {
        let mut cmd = iommu_hw_info {
            size: argsz::<iommu_hw_info>(),
            dev_id,
            data_len: u32::try_from(data.len()).map_err(|_| Errno::EOVERFLOW)?,
            data_uptr: data.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: `data_uptr` points to `data_len` writable bytes owned by `data`, which
        // outlives the call; the kernel copies at most `data_len` (device.c:1682-1697).
        unsafe { ioctl(iommufd, IOMMU_GET_HW_INFO, &mut cmd) }?;
        let len = cmd.data_len as usize;
        if len > data.len() {
            data.resize(len, 0);
            continue;
        }
        data.truncate(len);
        // SAFETY: both union members are plain `u32`s at the same offset.
        let out_data_type = unsafe { cmd.__bindgen_anon_1.out_data_type };
        return Ok(HwInfo {
            out_data_type,
            out_capabilities: cmd.out_capabilities,
            out_max_pasid_log2: cmd.out_max_pasid_log2,
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_bitmap_words_matches_kernel_index_math() {
        assert_eq!(dirty_bitmap_words(0, 4096), None);
        assert_eq!(dirty_bitmap_words(4096, 0), None);
        assert_eq!(dirty_bitmap_words(4096, 4096), Some(1));
        assert_eq!(dirty_bitmap_words(64 * 4096, 4096), Some(1));
        assert_eq!(dirty_bitmap_words(64 * 4096 + 1, 4096), Some(2));
        assert_eq!(dirty_bitmap_words(1 << 30, 4096), Some((1 << 18) / 64));
    }

    #[test]
    fn short_dirty_bitmap_is_refused_before_the_kernel() {
        // An fd that is not an iommufd: reaching the kernel would give ENOTTY, not EINVAL.
        let f = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsFd;
        let mut words = [0u64; 1];
        let r = hwpt_get_dirty_bitmap(f.as_fd(), 1, 0, 0, 65 * 4096, 4096, &mut words);
        assert_eq!(r, Err(Errno::EINVAL));
        let r = hwpt_get_dirty_bitmap(f.as_fd(), 1, 0, 0, 64 * 4096, 4096, &mut words);
        assert_eq!(r, Err(Errno::ENOTTY));
    }

    #[test]
    fn vtd_hw_info_decodes_registers() {
        let mut data = Vec::new();
        data.extend_from_slice(&1u32.to_ne_bytes());
        data.extend_from_slice(&0u32.to_ne_bytes());
        data.extend_from_slice(&0x00d2_0086_0466_02f0u64.to_ne_bytes());
        data.extend_from_slice(&0x0000_0000_00f0_105au64.to_ne_bytes());
        let info = HwInfo {
            out_data_type: IOMMU_HW_INFO_TYPE_INTEL_VTD,
            out_capabilities: 0,
            out_max_pasid_log2: 0,
            data: data.clone(),
        };
        let vtd = info.vtd().unwrap();
        assert_eq!(vtd.flags, 1);
        assert_eq!(vtd.cap_reg, 0x00d2_0086_0466_02f0);
        assert_eq!(vtd.ecap_reg, 0x00f0_105a);
        let short = HwInfo { data: data[..20].to_vec(), ..info.clone() };
        assert_eq!(short.vtd(), None);
        let other = HwInfo { out_data_type: IOMMU_HW_INFO_TYPE_AMD, ..info };
        assert_eq!(other.vtd(), None);
    }
}
