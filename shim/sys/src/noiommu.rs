//! The IOMMU group a no-IOMMU device would have: on a kernel without VFIO groups a device on
//! a `noiommu-vfioN` cdev has no `iommu_group` link, yet legacy programs (DPDK's
//! `rte_vfio_get_group_num`) read its group number there before opening
//! `/dev/vfio/noiommu-<N>`. The shim numbers such a group after the cdev (`N`), which is what
//! `KernelBackend` serves as `/dev/vfio/noiommu-<N>`.

use std::fs;
use std::path::Path;

/// For `<device>/iommu_group`, when the device has no such link and is on a `noiommu-vfioN`
/// cdev: the link's text, `../../../kernel/iommu_groups/<N>` (only the last component means
/// anything; there is no such directory to follow). `None` for every other path.
pub fn iommu_group_link(link: &Path) -> Option<String> {
    if link.file_name()? != "iommu_group" || fs::symlink_metadata(link).is_ok() {
        return None;
    }
    Some(format!("../../../kernel/iommu_groups/{}", group_number(link.parent()?)?))
}

/// The no-IOMMU group the shim serves for the device at sysfs path `device`: `N` of its cdev
/// `noiommu-vfio<N>` (`/dev/vfio/noiommu-<N>`); `None` for a device on no such cdev.
pub fn group_number(device: &Path) -> Option<u32> {
    crate::kernel::vfio_cdev(device)?.strip_prefix("noiommu-vfio")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_link_of_a_noiommu_cdev_device_is_made_up() {
        let dir = std::env::temp_dir().join(format!("vfio-shim-noiommu-{}", std::process::id()));
        let dev = dir.join("0000:00:0a.0");
        fs::create_dir_all(dev.join("vfio-dev/noiommu-vfio4")).unwrap();
        assert_eq!(iommu_group_link(&dev.join("iommu_group")).as_deref(), Some("../../../kernel/iommu_groups/4"));
        assert_eq!(iommu_group_link(&dev.join("driver")), None);
        let other = dir.join("0000:00:0b.0");
        fs::create_dir_all(other.join("vfio-dev/vfio1")).unwrap();
        assert_eq!(iommu_group_link(&other.join("iommu_group")), None);
        // A real link wins (a kernel with groups has one for every no-IOMMU device).
        std::os::unix::fs::symlink("../../../kernel/iommu_groups/0", dev.join("iommu_group")).unwrap();
        assert_eq!(iommu_group_link(&dev.join("iommu_group")), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
