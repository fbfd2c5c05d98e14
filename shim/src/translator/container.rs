//! Containers: open and close, `CHECK_EXTENSION`, `SET_IOMMU` (the IOAS and the attach of
//! every group already set), and the container ioctl dispatch.

use super::*;

impl<B: Backend> Shim<B> {
    /// `open("/dev/vfio/vfio")`.
    pub fn open_container(&mut self) -> Result<ContainerId, Errno> {
        let ctx = self.backend.iommufd_open()?;
        let id = ContainerId(self.fresh_id());
        self.containers.insert(
            id,
            Container {
                ctx,
                open: true,
                groups: Vec::new(),
                iommu: None,
                noiommu: false,
                noiommu_driver: false,
                shared: false,
                in_flight: false,
            },
        );
        Ok(id)
    }

    /// The iommufd context behind a container (the glue may use its fd number).
    pub fn container_iommufd(&self, id: ContainerId) -> Option<IommufdId> {
        self.containers.get(&id).map(|c| c.ctx)
    }

    /// Whether groups are set on the container (they keep it, and its context, alive).
    pub fn container_has_groups(&self, id: ContainerId) -> bool {
        self.containers.get(&id).is_some_and(|c| !c.groups.is_empty())
    }

    /// `close()` of a container fd. Groups still set on it keep it alive (CT: kref per group).
    pub fn close_container(&mut self, id: ContainerId) {
        // A close is a VFIO call too: a device whose mapping went since the last call is
        // closed first, so closing everything releases everything (and the group's DMA
        // ownership with it), as on type1.
        self.settle_mappings();
        if let Some(c) = self.containers.get_mut(&id) {
            c.open = false;
        }
        self.reap_container(id);
    }

    pub(super) fn reap_container(&mut self, id: ContainerId) {
        let Some(c) = self.containers.get(&id) else {
            return;
        };
        if c.open || !c.groups.is_empty() {
            return;
        }
        let c = self.containers.remove(&id).expect("present");
        self.backend.iommufd_close(c.ctx);
    }

    /// An ioctl on a container fd. `arg` is the raw argument (a value for CHECK_EXTENSION
    /// and SET_IOMMU); `mem` is the memory it points at for the others. The native call of
    /// a MAP or UNMAP runs here, in line; a glue that can run it without its lock uses
    /// [`Shim::container_ioctl_begin`] and [`Shim::container_ioctl_finish`] instead.
    pub fn container_ioctl(
        &mut self,
        id: ContainerId,
        cmd: u32,
        arg: u64,
        mem: &mut dyn ArgMemory,
    ) -> Result<i64, Errno> {
        match self.container_ioctl_begin(id, cmd, arg, mem)? {
            ContainerStep::Done(v) => Ok(v),
            ContainerStep::Native(pending) => {
                // A detached call runs here, in line: its backend settles it in the finish.
                let ran = pending.detached().map(|call| call.run());
                self.container_ioctl_finish(pending, ran, mem)
            }
        }
    }

    /// A container ioctl up to its native call: every type1 check, in type1's order. A MAP
    /// or UNMAP that passed them comes back as [`ContainerStep::Native`], with its container
    /// in flight until [`Shim::container_ioctl_finish`].
    pub fn container_ioctl_begin(
        &mut self,
        id: ContainerId,
        cmd: u32,
        arg: u64,
        mem: &mut dyn ArgMemory,
    ) -> Result<ContainerStep<B::Detached>, Errno> {
        self.settle_mappings();
        let c = self.containers.get(&id).ok_or(Errno::EBADF)?;
        assert!(!c.in_flight, "a call on container {id:?} while its DMA call is in flight");
        let native = match cmd {
            VFIO_GET_API_VERSION => return Ok(ContainerStep::Done(VFIO_API_VERSION as i64)),
            VFIO_CHECK_EXTENSION => return Ok(ContainerStep::Done(self.check_extension(id, arg))),
            VFIO_SET_IOMMU => return self.set_iommu(id, arg).map(|_| ContainerStep::Done(0)),
            // The no-IOMMU driver answers every other ioctl ENOTTY (CT:46).
            _ if c.noiommu_driver => return Err(Errno::ENOTTY),
            // Without an IOMMU driver every other container ioctl is EINVAL (CT:333,348).
            _ if c.iommu.is_none() => return Err(Errno::EINVAL),
            VFIO_IOMMU_GET_INFO => return self.get_info(id, mem).map(|_| ContainerStep::Done(0)),
            VFIO_IOMMU_MAP_DMA => self.map_dma(id, mem)?,
            VFIO_IOMMU_UNMAP_DMA => self.unmap_dma(id, mem)?,
            VFIO_IOMMU_DIRTY_PAGES => return self.dirty_pages(id, mem).map(|_| ContainerStep::Done(0)),
            _ => return Err(Errno::ENOTTY),
        };
        let Some((op, resume)) = native else {
            return Ok(ContainerStep::Done(0));
        };
        let (backend, ctx, iommu) = self.iommu_mut(id);
        let ioas = iommu.ioas;
        let detached = backend.detach_dma(ctx, ioas, op);
        self.containers.get_mut(&id).expect("checked").in_flight = true;
        self.in_flight += 1;
        Ok(ContainerStep::Native(PendingDma { container: id, ctx, ioas, op, detached, resume }))
    }

    /// The rest of a MAP or UNMAP after its native call: `ran` is the detached call's result,
    /// or `None` to run it through the backend now. Records what type1 records.
    pub fn container_ioctl_finish(
        &mut self,
        pending: PendingDma<B::Detached>,
        ran: Option<Result<u64, Errno>>,
        mem: &mut dyn ArgMemory,
    ) -> Result<i64, Errno> {
        let PendingDma { container, ctx, ioas, op, resume, .. } = pending;
        // Every begin that returned a pending call counts one, and its finish takes it back.
        self.in_flight -= 1;
        if let Some(c) = self.containers.get_mut(&container) {
            c.in_flight = false;
        }
        let result = match (ran, op) {
            (Some(ran), _) => self.backend.complete_dma(ctx, ioas, op, ran),
            (None, DmaOp::Map { iova, vaddr, length, prot }) => {
                self.backend.ioas_map(ctx, ioas, iova, vaddr, length, prot).map(|()| 0)
            }
            (None, DmaOp::Unmap { iova, length }) => self.backend.ioas_unmap(ctx, ioas, iova, length),
        };
        result?;
        self.dma_done(container, resume, mem).map(|()| 0)
    }

    /// Whether a MAP or UNMAP of this container is between begin and finish.
    pub fn container_in_flight(&self, id: ContainerId) -> bool {
        self.containers.get(&id).is_some_and(|c| c.in_flight)
    }

    /// Whether any container's MAP or UNMAP is between begin and finish.
    pub fn any_in_flight(&self) -> bool {
        self.in_flight != 0
    }

    /// CT:184. A container with a driver asks it alone; one without polls every driver it may
    /// use: both while it has no group, else type1 for IOMMU groups and the no-IOMMU driver for
    /// no-IOMMU groups (CT:77-86).
    fn check_extension(&mut self, id: ContainerId, ext: u64) -> i64 {
        let c = &self.containers[&id];
        let (type1, noiommu) = if c.noiommu_driver {
            (false, true)
        } else if c.iommu.is_some() || !c.groups.is_empty() {
            (!c.noiommu, c.noiommu)
        } else {
            (true, true)
        };
        if type1 {
            let answer = Self::type1_extension(c.iommu.as_ref(), ext);
            if answer > 0 {
                return answer;
            }
        }
        // The no-IOMMU driver says 1 to its own type while the mode is on (CT:46-50).
        (noiommu && ext == VFIO_NOIOMMU_IOMMU && self.backend.noiommu_mode()) as i64
    }

    /// type1's answers (T1:2723); before SET_IOMMU the container polls type1 with no IOMMU.
    fn type1_extension(iommu: Option<&Iommu>, ext: u64) -> i64 {
        match ext {
            VFIO_TYPE1_IOMMU | VFIO_TYPE1v2_IOMMU | VFIO_UNMAP_ALL => 1,
            VFIO_UPDATE_VADDR => iommu.is_some() as i64,
            VFIO_DMA_CC_IOMMU => iommu.is_some_and(|i| i.coherent) as i64,
            _ => 0,
        }
    }

    fn set_iommu(&mut self, id: ContainerId, ty: u64) -> Result<(), Errno> {
        let c = self.containers.get(&id).expect("checked");
        // No group yet, or already set: EINVAL before the type is even looked at (CT:264).
        if c.groups.is_empty() || c.iommu.is_some() || c.noiommu_driver {
            return Err(Errno::EINVAL);
        }
        if c.noiommu {
            // Only the no-IOMMU driver may serve no-IOMMU groups, and only for its own type
            // while the mode is on; its open wants CAP_SYS_RAWIO (CT:32-40, 77-86).
            if ty != VFIO_NOIOMMU_IOMMU || !self.backend.noiommu_mode() {
                return Err(Errno::ENODEV);
            }
            if !self.backend.caller_has_rawio() {
                return Err(Errno::EPERM);
            }
            // Its attach_group does nothing: the devices stay bound, with no IOAS.
            self.containers.get_mut(&id).expect("checked").noiommu_driver = true;
            return Ok(());
        }
        let v2 = match ty {
            VFIO_TYPE1_IOMMU => false,
            VFIO_TYPE1v2_IOMMU => true,
            // type1's CHECK_EXTENSION says 1 to UNMAP_ALL, so the container asks it to open
            // one, and vfio_iommu_type1_open refuses the number (T1:2638-2640).
            VFIO_UNMAP_ALL => return Err(Errno::EINVAL),
            // No registered driver claims the type (CT:297).
            _ => return Err(Errno::ENODEV),
        };
        let ctx = c.ctx;
        let groups = c.groups.clone();
        let ioas = self.backend.ioas_alloc(ctx)?;
        for (n, gid) in groups.iter().enumerate() {
            if let Err(e) = self.attach_group_devices(*gid, ioas) {
                for g in &groups[..=n] {
                    self.detach_group_devices(*g);
                }
                logged("IOMMU_DESTROY of an IOAS", self.backend.ioas_destroy(ctx, ioas));
                return Err(e);
            }
        }
        let mut iommu = Iommu {
            v2,
            ioas,
            ledger: MappingLedger::new(),
            dma_avail: self.config.dma_entry_limit,
            pgsizes: 0,
            iova_ranges: Vec::new(),
            coherent: false,
            dirty: DirtyBitmaps::default(),
            foreign_vaddrs: BTreeSet::new(),
        };
        if let Err(e) = Self::refresh_domain_facts(&mut self.backend, ctx, &mut iommu) {
            for g in &groups {
                self.detach_group_devices(*g);
            }
            logged("IOMMU_DESTROY of an IOAS", self.backend.ioas_destroy(ctx, ioas));
            return Err(e);
        }
        self.containers.get_mut(&id).expect("checked").iommu = Some(iommu);
        Ok(())
    }

    /// Re-reads what type1 derives from its domains: page sizes, usable IOVA ranges and
    /// coherency. type1 recomputes them on every group attach and detach.
    pub(super) fn refresh_domain_facts(backend: &mut B, ctx: IommufdId, iommu: &mut Iommu) -> Result<(), Errno> {
        let geometry = backend.ioas_geometry(ctx, iommu.ioas)?;
        iommu.pgsizes = backend.ioas_pgsizes(ctx, iommu.ioas)?;
        iommu.coherent = backend.ioas_enforces_coherency(ctx, iommu.ioas)?;
        iommu.iova_ranges = geometry.ranges;
        Ok(())
    }

    fn attach_group_devices(&mut self, gid: GroupId, ioas: IoasId) -> Result<(), Errno> {
        let g = self.groups.get_mut(&gid).expect("group of a container");
        for n in 0..g.devices.len() {
            let handle = g.devices[n].handle;
            if let Err(e) = self.backend.device_attach(handle, ioas) {
                for d in &mut g.devices[..n] {
                    logged("VFIO_DEVICE_DETACH_IOMMUFD_PT", self.backend.device_detach(d.handle));
                    d.attached = false;
                }
                return Err(e);
            }
            g.devices[n].attached = true;
        }
        Ok(())
    }

    fn detach_group_devices(&mut self, gid: GroupId) {
        let g = self.groups.get_mut(&gid).expect("group of a container");
        for d in &mut g.devices {
            if d.attached {
                logged("VFIO_DEVICE_DETACH_IOMMUFD_PT", self.backend.device_detach(d.handle));
                d.attached = false;
            }
        }
    }

    pub(super) fn iommu_mut(&mut self, id: ContainerId) -> (&mut B, IommufdId, &mut Iommu) {
        let c = self.containers.get_mut(&id).expect("checked");
        (&mut self.backend, c.ctx, c.iommu.as_mut().expect("checked"))
    }

    /// Mappings of a container, ascending (for tests, state dumps and the CUSE daemon).
    pub fn mappings(&self, id: ContainerId) -> Vec<Mapping> {
        self.containers.get(&id).and_then(|c| c.iommu.as_ref()).map(|i| i.ledger.iter().collect()).unwrap_or_default()
    }

    /// The IOAS behind a container once `SET_IOMMU` has happened.
    pub fn container_ioas(&self, id: ContainerId) -> Option<IoasId> {
        self.containers.get(&id).and_then(|c| c.iommu.as_ref()).map(|i| i.ioas)
    }

    /// Whether the container's IOMMU driver is the no-IOMMU one (`SET_IOMMU(VFIO_NOIOMMU_IOMMU)`).
    pub fn noiommu_driver(&self, id: ContainerId) -> bool {
        self.containers.get(&id).is_some_and(|c| c.noiommu_driver)
    }

    /// Whether `SET_IOMMU` has happened and which version: `Some(true)` for TYPE1v2.
    pub fn iommu_version(&self, id: ContainerId) -> Option<bool> {
        self.containers.get(&id).and_then(|c| c.iommu.as_ref()).map(|i| i.v2)
    }
}
