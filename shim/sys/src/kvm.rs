//! KVM's VFIO pseudo-device (`KVM_DEV_TYPE_VFIO`): `KVM_SET_DEVICE_ATTR`, the one KVM request
//! vfio-shim makes itself (the preload turns a legacy group's `FILE_ADD`/`FILE_DEL` into one
//! request per device cdev of the group).

use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use vfio_shim::abi::{kvm_device_attr, KVM_SET_DEVICE_ATTR};

use crate::ioctl::ioctl;

/// `KVM_SET_DEVICE_ATTR` on a KVM device fd. For `KVM_DEV_VFIO_FILE`, `attr.addr` is the
/// address of an `int` fd, which the kernel reads with `copy_from_user`: a bad address is
/// `EFAULT`, never an access of ours.
pub fn set_device_attr(kvm_device: BorrowedFd<'_>, attr: &kvm_device_attr) -> Result<(), Errno> {
    // The kernel only reads a set request's attr; a copy of our own keeps even a driver that
    // misreads the number from writing into the caller's struct.
    let mut copy = *attr;
    // SAFETY: `copy` is a live, writable `kvm_device_attr` of the size the request encodes;
    // what `addr` names is read by the kernel with fault handling.
    unsafe { ioctl(kvm_device, KVM_SET_DEVICE_ATTR, &mut copy) }
}
