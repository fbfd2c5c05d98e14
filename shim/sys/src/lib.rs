//! vfio-shim-sys: the one thin layer that makes real syscalls. [`ioctl`] wraps every native
//! iommufd and VFIO cdev ioctl the project uses; [`KernelBackend`] implements the core's
//! `Backend` trait on them; [`vtd`] derives type1's view of an Intel IOMMU from its registers.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod caller;
pub mod ioctl;
pub mod kernel;
pub mod own_memory;
pub mod privileges;
pub mod process;
pub mod type1_params;
pub mod vtd;

pub use kernel::KernelBackend;
