//! What `vfio-shim status` shows of the containers of one process (or one CUSE client):
//! read-only views of the object model, cheap enough to take after every call.

use super::*;

/// Which IOMMU driver a container has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuKind {
    /// No `SET_IOMMU` yet.
    None,
    Type1,
    Type1v2,
    NoIommu,
}

/// One container as `vfio-shim status` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: ContainerId,
    pub iommu: IommuKind,
    /// The IOAS behind it, once `SET_IOMMU` made one.
    pub ioas: Option<u32>,
    /// The group numbers set on it.
    pub groups: Vec<u32>,
    /// The devices of those groups, bound to its iommufd.
    pub devices: Vec<String>,
    pub mappings: u64,
    pub mapped_bytes: u64,
}

impl<B: Backend> Shim<B> {
    /// Every container, by id.
    pub fn containers_status(&self) -> Vec<ContainerStatus> {
        self.containers
            .iter()
            .map(|(&id, c)| {
                let groups: Vec<&Group> = c.groups.iter().filter_map(|g| self.groups.get(g)).collect();
                ContainerStatus {
                    id,
                    iommu: match (&c.iommu, c.noiommu_driver) {
                        (Some(i), _) if i.v2 => IommuKind::Type1v2,
                        (Some(_), _) => IommuKind::Type1,
                        (None, true) => IommuKind::NoIommu,
                        (None, false) => IommuKind::None,
                    },
                    ioas: c.iommu.as_ref().map(|i| i.ioas.0),
                    groups: groups.iter().map(|g| g.number).collect(),
                    devices: groups.iter().flat_map(|g| g.devices.iter().map(|d| d.info.name.clone())).collect(),
                    mappings: c.iommu.as_ref().map_or(0, |i| i.ledger.len() as u64),
                    mapped_bytes: c.iommu.as_ref().map_or(0, |i| i.ledger.mapped_bytes()),
                }
            })
            .collect()
    }

    /// A container's mapping count and mapped bytes (after a MAP or UNMAP, where nothing else
    /// can have changed).
    pub fn container_counts(&self, id: ContainerId) -> Option<(u64, u64)> {
        let c = self.containers.get(&id)?;
        Some(c.iommu.as_ref().map_or((0, 0), |i| (i.ledger.len() as u64, i.ledger.mapped_bytes())))
    }
}
