//! vfio-shim core: legacy VFIO container, group and type1 semantics over iommufd.
#![forbid(unsafe_code)]
#![allow(non_camel_case_types)] // uAPI struct names are kept verbatim

pub mod abi;
pub mod arg;
pub mod backend;
pub mod device_name;
pub mod dirty;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod handoff;
pub mod hot_reset;
pub mod info;
pub mod ledger;
pub mod nodes;
pub mod trace;
pub mod translator;

pub use backend::Backend;
pub use nix::errno::Errno;
pub use translator::{
    BoundDevice, ContainerExport, ContainerId, ContainerStatus, ContainerStep, DeviceGrant, FdTarget, GroupExport,
    GroupId, GroupReply, IommuExport, IommuKind, PendingDma, Shim,
};
