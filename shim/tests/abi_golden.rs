//! Golden values of the legacy uAPI the core decodes: every ioctl number and struct size as a
//! literal (from Linux 7.3 `include/uapi/linux/vfio.h`), and every struct size cross-checked
//! against rust-vmm's bindgen output (`vfio-bindings`).
#![allow(non_upper_case_globals)]

use std::mem::size_of;

use vfio_bindings::bindings::vfio as vb;
use vfio_shim::abi::*;

#[test]
fn legacy_ioctl_numbers() {
    assert_eq!(VFIO_GET_API_VERSION, 0x3b64);
    assert_eq!(VFIO_CHECK_EXTENSION, 0x3b65);
    assert_eq!(VFIO_SET_IOMMU, 0x3b66);
    assert_eq!(VFIO_GROUP_GET_STATUS, 0x3b67);
    assert_eq!(VFIO_GROUP_SET_CONTAINER, 0x3b68);
    assert_eq!(VFIO_GROUP_UNSET_CONTAINER, 0x3b69);
    assert_eq!(VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
    assert_eq!(VFIO_DEVICE_GET_INFO, 0x3b6b);
    assert_eq!(VFIO_DEVICE_GET_REGION_INFO, 0x3b6c);
    assert_eq!(VFIO_DEVICE_GET_IRQ_INFO, 0x3b6d);
    assert_eq!(VFIO_DEVICE_SET_IRQS, 0x3b6e);
    assert_eq!(VFIO_DEVICE_RESET, 0x3b6f);
    assert_eq!(VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, 0x3b70);
    assert_eq!(VFIO_DEVICE_PCI_HOT_RESET, 0x3b71);
    assert_eq!(VFIO_IOMMU_GET_INFO, 0x3b70);
    assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3b71);
    assert_eq!(VFIO_IOMMU_UNMAP_DMA, 0x3b72);
    assert_eq!(VFIO_IOMMU_ENABLE, 0x3b73);
    assert_eq!(VFIO_IOMMU_DISABLE, 0x3b74);
    assert_eq!(VFIO_IOMMU_DIRTY_PAGES, 0x3b75);
    assert_eq!(VFIO_DEVICE_FEATURE, 0x3b75);
    assert_eq!(VFIO_DEVICE_BIND_IOMMUFD, 0x3b76);
    assert_eq!(VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3b77);
    assert_eq!(VFIO_DEVICE_DETACH_IOMMUFD_PT, 0x3b78);
}

#[test]
fn kvm_vfio_device_attr() {
    // <linux/kvm.h>: _IOW(KVMIO, 0xe1, struct kvm_device_attr), KVM_DEV_VFIO_FILE{,_ADD,_DEL}.
    assert_eq!(size_of::<kvm_device_attr>(), 24);
    assert_eq!(KVM_SET_DEVICE_ATTR, 0x4018_aee1);
    assert_eq!((KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, KVM_DEV_VFIO_FILE_DEL), (1, 1, 2));
    // vfio-shim's own CUSE handshakes: _IO(';', 240) and _IO(';', 241).
    assert_eq!((VFIO_SHIM_CUSE_ADOPT, VFIO_SHIM_CUSE_IDENTIFY), (0x3bf0, 0x3bf1));
}

#[test]
fn legacy_constants() {
    assert_eq!(VFIO_TYPE1_IOMMU as u32, vb::VFIO_TYPE1_IOMMU);
    assert_eq!(VFIO_TYPE1v2_IOMMU as u32, vb::VFIO_TYPE1v2_IOMMU);
    assert_eq!(VFIO_DMA_CC_IOMMU as u32, vb::VFIO_DMA_CC_IOMMU);
    assert_eq!(VFIO_UNMAP_ALL as u32, vb::VFIO_UNMAP_ALL);
    assert_eq!(VFIO_UPDATE_VADDR as u32, vb::VFIO_UPDATE_VADDR);
    assert_eq!((VFIO_UNMAP_ALL, VFIO_UPDATE_VADDR), (9, 10));
    assert_eq!(VFIO_DMA_UNMAP_FLAG_ALL, 2);
    assert_eq!(VFIO_DMA_UNMAP_FLAG_VADDR, 4);
    assert_eq!(VFIO_DMA_MAP_FLAG_VADDR, 4);
    assert_eq!(DMA_ENTRY_LIMIT_DEFAULT, 65535);
    assert_eq!(DIRTY_BITMAP_SIZE_MAX, 1 << 28);
}

#[test]
fn legacy_struct_sizes() {
    assert_eq!(size_of::<vfio_group_status>(), 8);
    assert_eq!(size_of::<vfio_iommu_type1_info>(), 24);
    assert_eq!(size_of::<vfio_info_cap_header>(), 8);
    assert_eq!(size_of::<vfio_iova_range>(), 16);
    assert_eq!(size_of::<vfio_iommu_type1_info_cap_iova_range>(), 16);
    assert_eq!(size_of::<vfio_iommu_type1_info_cap_migration>(), 32);
    assert_eq!(size_of::<vfio_iommu_type1_info_dma_avail>(), 12);
    assert_eq!(size_of::<vfio_iommu_type1_dma_map>(), 32);
    assert_eq!(size_of::<vfio_iommu_type1_dma_unmap>(), 24);
    assert_eq!(size_of::<vfio_bitmap>(), 24);
    assert_eq!(size_of::<vfio_iommu_type1_dirty_bitmap>(), 8);
    assert_eq!(size_of::<vfio_iommu_type1_dirty_bitmap_get>(), 40);
}

#[test]
fn struct_sizes_agree_with_vfio_bindings() {
    assert_eq!(size_of::<vfio_group_status>(), size_of::<vb::vfio_group_status>());
    assert_eq!(size_of::<vfio_iommu_type1_info>(), size_of::<vb::vfio_iommu_type1_info>());
    assert_eq!(size_of::<vfio_info_cap_header>(), size_of::<vb::vfio_info_cap_header>());
    assert_eq!(size_of::<vfio_iova_range>(), size_of::<vb::vfio_iova_range>());
    assert_eq!(
        size_of::<vfio_iommu_type1_info_cap_iova_range>(),
        size_of::<vb::vfio_iommu_type1_info_cap_iova_range>()
    );
    assert_eq!(size_of::<vfio_iommu_type1_info_cap_migration>(), size_of::<vb::vfio_iommu_type1_info_cap_migration>());
    assert_eq!(size_of::<vfio_iommu_type1_info_dma_avail>(), size_of::<vb::vfio_iommu_type1_info_dma_avail>());
    assert_eq!(size_of::<vfio_iommu_type1_dma_map>(), size_of::<vb::vfio_iommu_type1_dma_map>());
    assert_eq!(size_of::<vfio_iommu_type1_dma_unmap>(), size_of::<vb::vfio_iommu_type1_dma_unmap>());
    assert_eq!(size_of::<vfio_bitmap>(), size_of::<vb::vfio_bitmap>());
    assert_eq!(size_of::<vfio_iommu_type1_dirty_bitmap>(), size_of::<vb::vfio_iommu_type1_dirty_bitmap>());
    assert_eq!(size_of::<vfio_iommu_type1_dirty_bitmap_get>(), size_of::<vb::vfio_iommu_type1_dirty_bitmap_get>());
}

#[test]
fn generic_vfs_ioctl_numbers_agree_with_libc() {
    use vfio_shim::abi::{is_generic_vfs_ioctl, GENERIC_VFS_IOCTLS};
    for req in [libc::FIOCLEX, libc::FIONCLEX, libc::FIONBIO, libc::FIOASYNC, libc::FIOQSIZE] {
        assert!(is_generic_vfs_ioctl(req as u32), "{req:#x}");
    }
    // _IOWR('X', 119, int), _IOWR('X', 120, int), _IOWR('f', 11, struct fiemap) (32 bytes),
    // _IO(0, 2), _IOW(0x94, 9, int), _IOW(0x94, 13, struct file_clone_range) (32 bytes),
    // _IOWR(0x94, 54, struct file_dedupe_range) (24 bytes), _IOR(0x15, 0, struct fsuuid2)
    // (17 bytes), _IOR(0x15, 1, struct fs_sysfs_path) (129 bytes).
    let ioc = |dir: u32, ty: u32, nr: u32, size: u32| (dir << 30) | (size << 16) | (ty << 8) | nr;
    let expected = [
        ioc(3, b'X' as u32, 119, 4),
        ioc(3, b'X' as u32, 120, 4),
        ioc(3, b'f' as u32, 11, 32),
        ioc(0, 0, 2, 0),
        ioc(1, 0x94, 9, 4),
        ioc(1, 0x94, 13, 32),
        ioc(3, 0x94, 54, 24),
        ioc(2, 0x15, 0, 17),
        ioc(2, 0x15, 1, 129),
    ];
    assert_eq!(&GENERIC_VFS_IOCTLS[5..], &expected);
    // No VFIO request is one of them (VFIO's type is ';').
    assert!(!GENERIC_VFS_IOCTLS.iter().any(|r| (r >> 8) & 0xff == b';' as u32));
}
