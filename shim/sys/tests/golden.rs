//! Every ioctl number, flag and struct layout the sys layer uses, as literals read from the
//! Linux 7.3 uAPI headers (include/uapi/linux/iommufd.h, include/uapi/linux/vfio.h).
//! A binding-crate update that changes any of them fails here.

use std::mem::{offset_of, size_of};

use vfio_shim_sys::iommufd::*;
use vfio_shim_sys::vfio_device::*;

#[test]
fn iommufd_ioctl_numbers() {
    // _IO(IOMMUFD_TYPE = ';', IOMMUFD_CMD_*), iommufd.h:38-60, 74-886.
    assert_eq!(IOMMUFD_TYPE, 0x3b);
    assert_eq!(IOMMU_DESTROY, 0x3b80);
    assert_eq!(IOMMU_IOAS_ALLOC, 0x3b81);
    assert_eq!(IOMMU_IOAS_ALLOW_IOVAS, 0x3b82);
    assert_eq!(IOMMU_IOAS_COPY, 0x3b83);
    assert_eq!(IOMMU_IOAS_IOVA_RANGES, 0x3b84);
    assert_eq!(IOMMU_IOAS_MAP, 0x3b85);
    assert_eq!(IOMMU_IOAS_UNMAP, 0x3b86);
    assert_eq!(IOMMU_OPTION, 0x3b87);
    assert_eq!(IOMMU_VFIO_IOAS, 0x3b88);
    assert_eq!(IOMMU_HWPT_ALLOC, 0x3b89);
    assert_eq!(IOMMU_GET_HW_INFO, 0x3b8a);
    assert_eq!(IOMMU_HWPT_SET_DIRTY_TRACKING, 0x3b8b);
    assert_eq!(IOMMU_HWPT_GET_DIRTY_BITMAP, 0x3b8c);
    assert_eq!(IOMMU_IOAS_MAP_FILE, 0x3b8f);
}

#[test]
fn vfio_cdev_ioctl_numbers() {
    // _IO(VFIO_TYPE = ';', VFIO_BASE = 100 + n), vfio.h:71-72, 940, 980, 1003.
    assert_eq!(VFIO_TYPE, 0x3b);
    assert_eq!(VFIO_BASE, 100);
    assert_eq!(VFIO_DEVICE_BIND_IOMMUFD, 0x3b76);
    assert_eq!(VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3b77);
    assert_eq!(VFIO_DEVICE_DETACH_IOMMUFD_PT, 0x3b78);
}

#[test]
fn vfio_cdev_numbers_agree_with_the_core_abi() {
    use vfio_shim::abi;
    assert_eq!(VFIO_DEVICE_BIND_IOMMUFD, abi::VFIO_DEVICE_BIND_IOMMUFD);
    assert_eq!(VFIO_DEVICE_ATTACH_IOMMUFD_PT, abi::VFIO_DEVICE_ATTACH_IOMMUFD_PT);
    assert_eq!(VFIO_DEVICE_DETACH_IOMMUFD_PT, abi::VFIO_DEVICE_DETACH_IOMMUFD_PT);
}

#[test]
fn flag_and_enum_values() {
    // enum iommufd_ioas_map_flags (iommufd.h:188-190)
    assert_eq!(IOMMU_IOAS_MAP_FIXED_IOVA, 1);
    assert_eq!(IOMMU_IOAS_MAP_WRITEABLE, 2);
    assert_eq!(IOMMU_IOAS_MAP_READABLE, 4);
    // enum iommufd_option, iommufd_option_ops (iommufd.h:343-355)
    assert_eq!(IOMMU_OPTION_RLIMIT_MODE, 0);
    assert_eq!(IOMMU_OPTION_HUGE_PAGES, 1);
    assert_eq!(IOMMU_OPTION_OP_SET, 0);
    assert_eq!(IOMMU_OPTION_OP_GET, 1);
    // enum iommufd_vfio_ioas_op (iommufd.h:388-390)
    assert_eq!(IOMMU_VFIO_IOAS_GET, 0);
    assert_eq!(IOMMU_VFIO_IOAS_SET, 1);
    assert_eq!(IOMMU_VFIO_IOAS_CLEAR, 2);
    // enum iommufd_hwpt_alloc_flags, iommu_hwpt_data_type (iommufd.h:436-439, 517)
    assert_eq!(IOMMU_HWPT_ALLOC_NEST_PARENT, 1);
    assert_eq!(IOMMU_HWPT_ALLOC_DIRTY_TRACKING, 2);
    assert_eq!(IOMMU_HWPT_DATA_NONE, 0);
    // enum iommu_hw_info_type (iommufd.h:718-723), iommufd_hw_capabilities
    assert_eq!(IOMMU_HW_INFO_TYPE_NONE, 0);
    assert_eq!(IOMMU_HW_INFO_TYPE_INTEL_VTD, 1);
    assert_eq!(IOMMU_HW_INFO_TYPE_ARM_SMMUV3, 2);
    assert_eq!(IOMMU_HW_INFO_TYPE_AMD, 4);
    assert_eq!(IOMMU_HW_CAP_DIRTY_TRACKING, 1);
    // dirty tracking flags
    assert_eq!(IOMMU_HWPT_DIRTY_TRACKING_ENABLE, 1);
    assert_eq!(IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR, 1);
}

#[test]
fn iommufd_struct_sizes() {
    assert_eq!(size_of::<iommu_destroy>(), 8);
    assert_eq!(size_of::<iommu_ioas_alloc>(), 12);
    assert_eq!(size_of::<iommu_iova_range>(), 16);
    assert_eq!(size_of::<iommu_ioas_iova_ranges>(), 32);
    assert_eq!(size_of::<iommu_ioas_allow_iovas>(), 24);
    assert_eq!(size_of::<iommu_ioas_map>(), 40);
    assert_eq!(size_of::<iommu_ioas_map_file>(), 40);
    assert_eq!(size_of::<iommu_ioas_copy>(), 40);
    assert_eq!(size_of::<iommu_ioas_unmap>(), 24);
    assert_eq!(size_of::<iommu_option>(), 24);
    assert_eq!(size_of::<iommu_vfio_ioas>(), 12);
    assert_eq!(size_of::<iommu_hwpt_alloc>(), 48);
    assert_eq!(size_of::<iommu_hw_info>(), 40);
    assert_eq!(size_of::<iommu_hw_info_vtd>(), 24);
    assert_eq!(size_of::<iommu_hwpt_set_dirty_tracking>(), 16);
    assert_eq!(size_of::<iommu_hwpt_get_dirty_bitmap>(), 48);
}

#[test]
fn vfio_cdev_struct_sizes() {
    assert_eq!(size_of::<vfio_device_bind_iommufd>(), 24);
    assert_eq!(size_of::<vfio_device_attach_iommufd_pt>(), 16);
    assert_eq!(size_of::<vfio_device_detach_iommufd_pt>(), 12);
}

#[test]
fn output_field_offsets() {
    // The fields the wrappers read back.
    assert_eq!(offset_of!(iommu_ioas_alloc, out_ioas_id), 8);
    assert_eq!(offset_of!(iommu_ioas_iova_ranges, num_iovas), 8);
    assert_eq!(offset_of!(iommu_ioas_iova_ranges, allowed_iovas), 16);
    assert_eq!(offset_of!(iommu_ioas_iova_ranges, out_iova_alignment), 24);
    assert_eq!(offset_of!(iommu_iova_range, last), 8);
    assert_eq!(offset_of!(iommu_ioas_map, iova), 32);
    assert_eq!(offset_of!(iommu_ioas_map_file, fd), 12);
    assert_eq!(offset_of!(iommu_ioas_map_file, iova), 32);
    assert_eq!(offset_of!(iommu_ioas_copy, dst_iova), 24);
    assert_eq!(offset_of!(iommu_ioas_unmap, length), 16);
    assert_eq!(offset_of!(iommu_option, op), 8);
    assert_eq!(offset_of!(iommu_option, val64), 16);
    assert_eq!(offset_of!(iommu_vfio_ioas, op), 8);
    assert_eq!(offset_of!(iommu_hwpt_alloc, out_hwpt_id), 16);
    assert_eq!(offset_of!(iommu_hwpt_alloc, data_uptr), 32);
    assert_eq!(offset_of!(iommu_hw_info, data_len), 12);
    assert_eq!(offset_of!(iommu_hw_info, data_uptr), 16);
    assert_eq!(offset_of!(iommu_hw_info, out_max_pasid_log2), 28);
    assert_eq!(offset_of!(iommu_hw_info, out_capabilities), 32);
    assert_eq!(offset_of!(iommu_hw_info_vtd, cap_reg), 8);
    assert_eq!(offset_of!(iommu_hw_info_vtd, ecap_reg), 16);
    assert_eq!(offset_of!(iommu_hwpt_get_dirty_bitmap, data), 40);
    assert_eq!(offset_of!(vfio_device_bind_iommufd, out_devid), 12);
    assert_eq!(offset_of!(vfio_device_attach_iommufd_pt, pt_id), 8);
    assert_eq!(offset_of!(vfio_device_detach_iommufd_pt, pasid), 8);
}
