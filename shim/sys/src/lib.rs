//! vfio-shim-sys: the one thin layer that makes real syscalls, a module per kernel interface.
//! [`ioctl`] wraps every native iommufd and VFIO cdev ioctl the project uses; [`kvm`] KVM's
//! VFIO device attribute; [`cuse_client`] the daemon's nodes and adopt handshake; [`memfd`]
//! sealed handoff files; [`caller`] another process's memory and files; [`random`] and
//! [`process`] this process. [`KernelBackend`] implements the core's `Backend` trait on them;
//! [`vtd`] derives type1's view of an Intel IOMMU from its registers.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod caller;
pub mod cuse_client;
pub mod ioctl;
pub mod kernel;
pub mod kvm;
pub mod memfd;
pub mod own_memory;
pub mod privileges;
pub mod process;
pub mod random;
pub mod type1_params;
pub mod vtd;

pub use kernel::KernelBackend;
