//! `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO` and `VFIO_DEVICE_PCI_HOT_RESET` between the group form
//! legacy callers speak and the cdev form the kernel speaks to cdev-opened devices.
//!
//! For a cdev-opened device the kernel reports iommufd dev ids with
//! `VFIO_PCI_HOT_RESET_FLAG_DEV_ID` (vfio_pci_core.c:1393); a legacy caller expects IOMMU group
//! numbers and no flags, as for a group-opened device. The reset itself takes group fds in the
//! legacy form and an empty array in the cdev form (vfio_pci_core.c:1511).

use nix::errno::Errno;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const VFIO_PCI_HOT_RESET_FLAG_DEV_ID: u32 = 1 << 0;
pub const VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED: u32 = 1 << 1;
/// `offsetofend(struct vfio_pci_hot_reset_info, count)`, also for `vfio_pci_hot_reset`.
pub const HEADER_SIZE: usize = 12;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct vfio_pci_hot_reset_header {
    pub argsz: u32,
    pub flags: u32,
    pub count: u32,
}

/// `struct vfio_pci_dependent_device`: `group_id` or `devid`, then the PCI address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct vfio_pci_dependent_device {
    pub id: u32,
    pub segment: u16,
    pub bus: u8,
    pub devfn: u8,
}

/// Rewrites a successful cdev-form reply (header + `count` entries) into the group form:
/// every entry's id becomes its IOMMU group (`group_of(segment, bus, devfn)`), flags 0.
/// A device without a group fails like the kernel's group path (`EPERM`, "cannot reset
/// non-isolated devices").
pub fn to_group_form(
    header: &mut vfio_pci_hot_reset_header,
    devices: &mut [vfio_pci_dependent_device],
    group_of: &dyn Fn(u16, u8, u8) -> Option<u32>,
) -> Result<(), Errno> {
    if header.flags & VFIO_PCI_HOT_RESET_FLAG_DEV_ID != 0 {
        for d in devices.iter_mut() {
            d.id = group_of(d.segment, d.bus, d.devfn).ok_or(Errno::EPERM)?;
        }
    }
    header.flags = 0;
    Ok(())
}

/// Checks a legacy reset request against the affected devices, as the kernel's group path
/// does (vfio_pci_dev_set_hot_reset): every affected device's group must be among the groups
/// passed, else `EINVAL`.
pub fn groups_cover(affected_groups: &[u32], passed_groups: &[u32]) -> Result<(), Errno> {
    if affected_groups.iter().all(|g| passed_groups.contains(g)) {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_ids_become_group_numbers() {
        let mut h = vfio_pci_hot_reset_header {
            argsz: 28,
            flags: VFIO_PCI_HOT_RESET_FLAG_DEV_ID | VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED,
            count: 2,
        };
        let mut d = [
            vfio_pci_dependent_device { id: 1, segment: 0, bus: 0, devfn: 0x50 },
            vfio_pci_dependent_device { id: u32::MAX, segment: 0, bus: 0, devfn: 0x58 },
        ];
        to_group_form(&mut h, &mut d, &|_, _, devfn| Some(devfn as u32 / 8)).unwrap();
        assert_eq!(h.flags, 0);
        assert_eq!((d[0].id, d[1].id), (10, 11));
        let mut d2 = d;
        h.flags = VFIO_PCI_HOT_RESET_FLAG_DEV_ID;
        assert_eq!(to_group_form(&mut h, &mut d2, &|_, _, _| None), Err(Errno::EPERM));
        assert_eq!(std::mem::size_of::<vfio_pci_dependent_device>(), 8);
    }

    #[test]
    fn coverage() {
        assert_eq!(groups_cover(&[10, 11], &[11, 10]), Ok(()));
        assert_eq!(groups_cover(&[10, 11], &[10]), Err(Errno::EINVAL));
    }
}
