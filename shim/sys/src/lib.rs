//! vfio-shim-sys: the one thin layer that makes real syscalls, a module per kernel interface.
//! [`iommufd`] and [`vfio_device`] wrap every native iommufd and VFIO cdev ioctl the project
//! uses (through the private `ioctl` helper); [`procfs`] `PROCMAP_QUERY`; [`kvm`] KVM's VFIO
//! device attribute; [`cuse_node`] the daemon's nodes and handshakes; [`memfd`] sealed handoff
//! files; [`noiommu`] the group number of a no-IOMMU cdev's device; [`caller`] another
//! process's memory and files; [`random`] and [`process`] this
//! process; [`native_trace`] what they did, for `vfio-shim trace`; [`status_registry`] the
//! published containers `vfio-shim status` reads; for the static-binary supervisor
//! (docs/supervisor.md): [`supervised_start`] the program's start, [`seccomp`] its filter and
//! listener, [`ptrace`] a call rewritten at a trace stop and the tasks' events, [`private_nodes`] object identity and lifetime, [`remote_memory`] a supervised
//! program's argument memory. [`KernelBackend`] implements the core's `Backend` trait on them;
//! [`vtd`] derives type1's view of an Intel IOMMU from its registers.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod caller;
pub mod cuse_node;
mod ioctl;
pub mod iommufd;
pub mod kernel;
pub mod kvm;
pub mod memfd;
pub mod native_trace;
pub mod noiommu;
pub mod own_memory;
pub mod private_nodes;
pub mod privileges;
pub mod process;
pub mod procfs;
pub mod ptrace;
pub mod random;
pub mod remote_memory;
pub mod seccomp;
pub mod status_registry;
pub mod supervised_start;
pub mod type1_params;
pub mod vfio_device;
pub mod vtd;

pub use kernel::KernelBackend;

/// The errno of a std I/O error (`EIO` for one the kernel did not give), so std's file calls
/// carry errno like the rest of the layer.
pub fn errno_of(e: std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}
