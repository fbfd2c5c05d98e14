//! vfio-shim core: legacy VFIO container, group and type1 semantics over iommufd.
#![forbid(unsafe_code)]

pub mod abi;
pub mod backend;
pub mod ledger;
