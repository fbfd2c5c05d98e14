//! Sharing with other processes: what fork, `SCM_RIGHTS` and exec hand over (marks, export
//! and import of containers and groups).

use super::*;

impl<B: Backend> Shim<B> {
    /// After fork, in both processes: every object so far is the other's too.
    pub fn mark_all_shared(&mut self) {
        self.containers.values_mut().for_each(|c| c.shared = true);
        self.groups.values_mut().for_each(|g| g.shared = true);
    }

    /// A container now held by another process too (its fd was sent).
    pub fn mark_container_shared(&mut self, id: ContainerId) {
        if let Some(c) = self.containers.get_mut(&id) {
            c.shared = true;
        }
    }

    /// A group, and the container it is set on, now held by another process too.
    pub fn mark_group_shared(&mut self, id: GroupId) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        g.shared = true;
        if let Some(c) = g.container {
            self.mark_container_shared(c);
        }
    }

    /// A container or group whose fds were all closed (it lived on through another object)
    /// is held by an fd again.
    pub fn reopen_container(&mut self, id: ContainerId) {
        if let Some(c) = self.containers.get_mut(&id) {
            c.open = true;
        }
    }

    /// As [`Shim::reopen_container`].
    pub fn reopen_group(&mut self, id: GroupId) {
        if let Some(g) = self.groups.get_mut(&id) {
            g.open = true;
        }
    }

    /// What another process needs to act on this container as its own holder would.
    pub fn export_container(&self, id: ContainerId) -> Option<ContainerExport> {
        let c = self.containers.get(&id)?;
        Some(ContainerExport {
            ctx: c.ctx,
            noiommu_driver: c.noiommu_driver,
            iommu: c.iommu.as_ref().map(|i| IommuExport {
                v2: i.v2,
                ioas: i.ioas,
                mappings: i.ledger.iter().collect(),
                dma_avail: i.dma_avail,
                pgsizes: i.pgsizes,
                iova_ranges: i.iova_ranges.clone(),
                coherent: i.coherent,
                dirty_tracking: i.dirty.tracking(),
            }),
        })
    }

    /// A group as [`Shim::export_container`] describes a container.
    pub fn export_group(&self, id: GroupId) -> Option<GroupExport> {
        let g = self.groups.get(&id)?;
        Some(GroupExport { number: g.number, noiommu: g.noiommu, container: g.container, devices: g.devices.clone() })
    }

    /// A container another process exported, over an iommufd context the backend adopted.
    /// Shared, and held by no fd until the glue says so ([`Shim::reopen_container`]): one
    /// that came only as a group's container lives on through that group. `noiommu_driver`:
    /// its IOMMU driver is the no-IOMMU one (`iommu` is then `None`).
    pub fn import_container(
        &mut self,
        ctx: IommufdId,
        iommu: Option<IommuExport>,
        noiommu_driver: bool,
    ) -> ContainerId {
        let iommu = iommu.map(|e| {
            let mut ledger = MappingLedger::new();
            e.mappings.into_iter().for_each(|m| ledger.insert(m));
            // The exporter's bitmaps stay with it: ours start from zero, as a new START's.
            let mut dirty = DirtyBitmaps::default();
            if e.dirty_tracking {
                dirty.start(ledger.iter(), info::min_pgsize(e.pgsizes));
            }
            let foreign_vaddrs = ledger.iter().map(|m| m.iova).collect();
            Iommu {
                v2: e.v2,
                ioas: e.ioas,
                ledger,
                dma_avail: e.dma_avail,
                pgsizes: e.pgsizes,
                iova_ranges: e.iova_ranges,
                coherent: e.coherent,
                dirty,
                foreign_vaddrs,
            }
        });
        let id = ContainerId(self.fresh_id());
        self.containers.insert(
            id,
            Container {
                ctx,
                open: false,
                groups: Vec::new(),
                iommu,
                // Its groups' kind comes with them (import_group).
                noiommu: noiommu_driver,
                noiommu_driver,
                shared: true,
                in_flight: false,
            },
        );
        id
    }

    /// A group another process exported, set on `container` (imported before) when it was
    /// set there, with its devices as the backend adopted them. Shared, and held by no fd
    /// until the glue says so ([`Shim::reopen_group`]). `noiommu`: a no-IOMMU group.
    pub fn import_group(
        &mut self,
        number: u32,
        noiommu: bool,
        container: Option<ContainerId>,
        devices: Vec<BoundDevice>,
    ) -> Result<GroupId, Errno> {
        if let Some(cid) = container {
            if !self.containers.contains_key(&cid) {
                return Err(Errno::EBADF);
            }
        }
        let id = GroupId(self.fresh_id());
        self.groups.insert(
            id,
            Group {
                number,
                noiommu,
                open: false,
                container,
                devices,
                device_users: 0,
                device_fds: Vec::new(),
                held_by_mapping: Vec::new(),
                lost: Vec::new(),
                kvm_files: Vec::new(),
                shared: true,
                claimed: false,
            },
        );
        if let Some(cid) = container {
            let c = self.containers.get_mut(&cid).expect("checked");
            c.groups.push(id);
            c.noiommu = noiommu;
        }
        Ok(id)
    }
}

/// A container's state as another process needs it ([`Shim::export_container`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerExport {
    pub ctx: IommufdId,
    /// `SET_IOMMU(VFIO_NOIOMMU_IOMMU)` has happened (`iommu` is `None`).
    pub noiommu_driver: bool,
    pub iommu: Option<IommuExport>,
}

/// The type1 state of a container after `SET_IOMMU`, as exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IommuExport {
    pub v2: bool,
    pub ioas: IoasId,
    pub mappings: Vec<Mapping>,
    pub dma_avail: u32,
    pub pgsizes: u64,
    pub iova_ranges: Vec<IovaRange>,
    pub coherent: bool,
    pub dirty_tracking: bool,
}

/// A group's state as another process needs it ([`Shim::export_group`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupExport {
    pub number: u32,
    /// `/dev/vfio/noiommu-<number>`.
    pub noiommu: bool,
    pub container: Option<ContainerId>,
    pub devices: Vec<BoundDevice>,
}
