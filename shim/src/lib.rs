//! vfio-shim core: legacy VFIO container, group and type1 semantics over iommufd.
#![forbid(unsafe_code)]

pub mod abi;
pub mod backend;
pub mod ledger;
pub mod arg;
pub mod fake;
pub mod info;
pub mod translator;

pub use backend::Backend;
pub use nix::errno::Errno;
pub use translator::{ContainerId, DeviceGrant, FdTarget, GroupId, GroupReply, Shim};
