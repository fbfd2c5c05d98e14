//! PCI hot reset on a device fd of a legacy group: `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO` answered
//! in the group form and `VFIO_DEVICE_PCI_HOT_RESET` checked against group fds, over the cdev
//! form the kernel speaks to our cdev-opened devices (vfio_pci_core.c:1345-1540).

use super::*;
use crate::hot_reset::*;

impl<B: Backend> Shim<B> {
    /// `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO`, answered as the kernel answers a group-opened
    /// device (vfio_pci_ioctl_get_pci_hot_reset_info: IOMMU group numbers, flags 0) from what
    /// it reports for our cdev-opened one. The kernel's order: the header read, `argsz`, then
    /// `ENOSPC` with the count needed in the header, the devices, and the header last.
    pub fn device_hot_reset_info(&mut self, dev: DeviceHandle, mem: &mut dyn ArgMemory) -> Result<i64, Errno> {
        let mut header: vfio_pci_hot_reset_header = read_struct(mem, 0)?;
        if (header.argsz as usize) < HEADER_SIZE {
            return Err(Errno::EINVAL);
        }
        header.flags = 0;
        let (flags, mut devices) = self.backend.device_hot_reset_info(dev)?;
        let count = u32::try_from(devices.len()).map_err(|_| Errno::ERANGE)?;
        if u64::from(count) > (u64::from(header.argsz) - HEADER_SIZE as u64) / 8 {
            header.count = count;
            mem.write(0, header.as_bytes())?;
            return Err(Errno::ENOSPC);
        }
        let mut reply = vfio_pci_hot_reset_header { argsz: header.argsz, flags, count };
        let backend = &self.backend;
        to_group_form(&mut reply, &mut devices, &|s, b, d| backend.pci_iommu_group(s, b, d))?;
        mem.write(HEADER_SIZE, devices.as_bytes())?;
        mem.write(0, reply.as_bytes())?;
        Ok(0)
    }

    /// `VFIO_DEVICE_PCI_HOT_RESET` with legacy group fds: checked as the kernel's group path
    /// checks them (`resolve` answers for a caller fd: its group, `EINVAL` for another open
    /// file, `EBADF` for none), then issued in the cdev form (an empty fd array). The kernel's
    /// order (vfio_pci_ioctl_pci_hot_reset): the header, `ENODEV` when no slot or bus reset
    /// reaches the device, `EINVAL` for more fds than affected devices, then the fds in order
    /// (the hot_reset client, type1 in the VM).
    pub fn device_hot_reset(
        &mut self,
        dev: DeviceHandle,
        mem: &mut dyn ArgMemory,
        resolve: &dyn Fn(i32) -> Result<GroupId, Errno>,
    ) -> Result<i64, Errno> {
        let header: vfio_pci_hot_reset_header = read_struct(mem, 0)?;
        if (header.argsz as usize) < HEADER_SIZE || header.flags != 0 || header.count == 0 {
            // An empty array is the cdev form, which a group-opened device refuses.
            return Err(Errno::EINVAL);
        }
        // The probe (ENODEV) and the bound on the array: one fd per affected device at most.
        let (_, affected) = self.backend.device_hot_reset_info(dev)?;
        if header.count as usize > affected.len() {
            return Err(Errno::EINVAL);
        }
        // The fds are read whatever argsz says (type1: argsz 12 with one fd resets).
        let mut fds = vec![0i32; header.count as usize];
        mem.read(HEADER_SIZE, fds.as_mut_bytes())?;
        let mut passed = Vec::with_capacity(fds.len());
        for fd in fds {
            let g = resolve(fd)?;
            passed.push(self.group_number(g).ok_or(Errno::EINVAL)?);
        }
        let mut affected_groups = Vec::with_capacity(affected.len());
        for d in affected {
            affected_groups.push(self.backend.pci_iommu_group(d.segment, d.bus, d.devfn).ok_or(Errno::EPERM)?);
        }
        groups_cover(&affected_groups, &passed)?;
        self.backend.device_hot_reset(dev).map(|()| 0)
    }
}
