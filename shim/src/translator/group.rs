//! Groups and their devices: open and close, `GET_STATUS`, `SET_CONTAINER`/`UNSET_CONTAINER`
//! (binding the group's devices claims DMA ownership), `GET_DEVICE_FD` with late binding, and a
//! device's close.

use super::*;

impl<B: Backend> Shim<B> {
    /// `open("/dev/vfio/<number>")`. `ENOENT` when no such VFIO group exists, `EBUSY` when
    /// it is already open, here or in another process (GR: one opener at a time).
    pub fn open_group(&mut self, number: u32) -> Result<GroupId, Errno> {
        self.open_node(number, false, true)
    }

    /// As [`Shim::open_group`] for a group whose system-wide claim someone else holds on our
    /// behalf: the CUSE daemon that serves the group node this process opened.
    pub fn open_group_served(&mut self, number: u32) -> Result<GroupId, Errno> {
        self.open_node(number, false, false)
    }

    /// `open("/dev/vfio/noiommu-<number>")`: as [`Shim::open_group`], and `EPERM` without
    /// CAP_SYS_RAWIO, checked before `EBUSY` (GR:428).
    pub fn open_noiommu_group(&mut self, number: u32) -> Result<GroupId, Errno> {
        self.open_node(number, true, true)
    }

    /// As [`Shim::open_group_served`] for a no-IOMMU group node.
    pub fn open_noiommu_group_served(&mut self, number: u32) -> Result<GroupId, Errno> {
        self.open_node(number, true, false)
    }

    fn open_node(&mut self, number: u32, noiommu: bool, claim: bool) -> Result<GroupId, Errno> {
        self.settle_mappings();
        let devices = node_devices(&mut self.backend, number, noiommu)?;
        // The kernel creates /dev/vfio/<N> only for groups with a VFIO device.
        if !devices.iter().any(|d| d.cdev.is_some()) {
            return Err(Errno::ENOENT);
        }
        if noiommu && !self.backend.caller_has_rawio() {
            return Err(Errno::EPERM);
        }
        if self.groups.values().any(|g| g.number == number && g.noiommu == noiommu) {
            return Err(Errno::EBUSY);
        }
        if claim {
            if noiommu {
                self.backend.noiommu_group_claim(number)?;
            } else {
                self.backend.group_claim(number)?;
            }
        }
        let id = GroupId(self.fresh_id());
        self.groups.insert(
            id,
            Group {
                number,
                noiommu,
                open: true,
                container: None,
                devices: Vec::new(),
                device_users: 0,
                device_fds: Vec::new(),
                held_by_mapping: Vec::new(),
                lost: Vec::new(),
                kvm_files: Vec::new(),
                shared: false,
                claimed: claim,
            },
        );
        Ok(id)
    }

    /// Open, but holding nothing: no container set and no device handed out.
    pub fn group_is_idle(&self, id: GroupId) -> bool {
        self.groups.get(&id).is_some_and(|g| g.container.is_none() && g.device_users == 0)
    }

    pub fn group_number(&self, id: GroupId) -> Option<u32> {
        self.groups.get(&id).map(|g| g.number)
    }

    /// `close()` of a group fd. Open device fds keep the group alive (they hold a
    /// reference to the group file, GR:262); the last one out detaches it.
    pub fn close_group(&mut self, id: GroupId) {
        self.settle_mappings();
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        g.open = false;
        self.reap_group(id);
    }

    fn reap_group(&mut self, id: GroupId) {
        let Some(g) = self.groups.get(&id) else {
            return;
        };
        if g.open || g.device_users > 0 {
            return;
        }
        if g.container.is_some() {
            self.detach_container(id, false);
        }
        let g = self.groups.remove(&id).expect("present");
        for f in g.kvm_files {
            self.backend.kvm_file_close(f);
        }
        if g.claimed && g.noiommu {
            self.backend.noiommu_group_release(g.number);
        } else if g.claimed {
            self.backend.group_release(g.number);
        }
    }

    /// An ioctl on a group fd. `resolve` tells what a caller-supplied fd is.
    pub fn group_ioctl(
        &mut self,
        id: GroupId,
        cmd: u32,
        mem: &mut dyn ArgMemory,
        resolve: &dyn Fn(i32) -> FdTarget,
    ) -> Result<GroupReply, Errno> {
        self.settle_mappings();
        if !self.groups.contains_key(&id) {
            return Err(Errno::EBADF);
        }
        match cmd {
            VFIO_GROUP_GET_STATUS => self.get_status(id, mem).map(|_| GroupReply::Done),
            VFIO_GROUP_SET_CONTAINER => {
                let fd: i32 = read_struct(mem, 0)?;
                self.set_container(id, resolve(fd)).map(|_| GroupReply::Done)
            }
            VFIO_GROUP_UNSET_CONTAINER => self.unset_container(id).map(|_| GroupReply::Done),
            VFIO_GROUP_GET_DEVICE_FD => {
                let name = mem.read_cstr(PAGE_SIZE)?;
                self.get_device(id, &name).map(GroupReply::Device)
            }
            _ => Err(Errno::ENOTTY),
        }
    }

    /// GR:326. VIABLE when a container is set, or when no device of the group is claimed
    /// for kernel DMA (bound to a driver other than a VFIO one).
    fn get_status(&mut self, id: GroupId, mem: &mut dyn ArgMemory) -> Result<(), Errno> {
        let status: vfio_group_status = read_sized(mem)?;
        let argsz = status.argsz;
        let g = self.groups.get(&id).expect("checked");
        let flags = if g.container.is_some() {
            VFIO_GROUP_FLAGS_CONTAINER_SET | VFIO_GROUP_FLAGS_VIABLE
        } else {
            let devices = node_devices(&mut self.backend, g.number, g.noiommu)?;
            if devices.iter().all(GroupDevice::allows_user_dma) {
                VFIO_GROUP_FLAGS_VIABLE
            } else {
                0
            }
        };
        mem.write(0, vfio_group_status { argsz, flags }.as_bytes())
    }

    /// GR:98 and CT:421.
    fn set_container(&mut self, id: GroupId, target: FdTarget) -> Result<(), Errno> {
        let cid = match target {
            FdTarget::Closed => return Err(Errno::EBADF),
            _ if self.groups[&id].container.is_some() => return Err(Errno::EINVAL),
            FdTarget::Other => return Err(Errno::EBADFD),
            FdTarget::Container(cid) => cid,
        };
        let Some(c) = self.containers.get(&cid) else {
            return Err(Errno::EBADFD);
        };
        let ctx = c.ctx;
        let ioas = c.iommu.as_ref().map(|i| i.ioas);
        let vaddr_invalid = c.iommu.as_ref().is_some_and(|i| i.ledger.vaddr_invalid_count() > 0);
        let mixes = !c.groups.is_empty() && c.noiommu != self.groups[&id].noiommu;
        let (number, noiommu) = (self.groups[&id].number, self.groups[&id].noiommu);
        // CT:424-434: a no-IOMMU group wants CAP_SYS_RAWIO; real and fake groups never mix.
        if noiommu && !self.backend.caller_has_rawio() {
            return Err(Errno::EPERM);
        }
        if mixes {
            return Err(Errno::EPERM);
        }
        let infos = node_devices(&mut self.backend, number, noiommu)?;
        // iommu_group_claim_dma_owner: EPERM while a kernel driver uses the group for DMA
        // (a device on a driver without driver_managed_dma). No-IOMMU groups claim nothing.
        if !noiommu && !infos.iter().all(GroupDevice::allows_user_dma) {
            return Err(Errno::EPERM);
        }
        // type1 refuses to attach (and pin) while a live update has vaddrs invalid.
        if vaddr_invalid {
            return Err(Errno::EBUSY);
        }

        // Claiming DMA ownership: bind every VFIO device of the group to the container.
        let mut bound: Vec<BoundDevice> = Vec::new();
        let undo = |backend: &mut B, bound: &[BoundDevice]| {
            for d in bound {
                if d.attached {
                    logged("VFIO_DEVICE_DETACH_IOMMUFD_PT", backend.device_detach(d.handle));
                }
                backend.device_close(d.handle);
            }
        };
        for info in infos {
            if info.cdev.is_none() {
                continue;
            }
            match open_and_bind(&mut self.backend, &info, ctx) {
                Ok(handle) => bound.push(BoundDevice { info, handle, attached: false }),
                Err(e) => {
                    undo(&mut self.backend, &bound);
                    return Err(e);
                }
            }
        }
        if let Some(ioas) = ioas {
            for n in 0..bound.len() {
                if let Err(e) = self.backend.device_attach(bound[n].handle, ioas) {
                    undo(&mut self.backend, &bound);
                    // iommufd refuses a domain whose aperture or reserved regions collide with
                    // existing mappings with EADDRINUSE; type1 with EINVAL (T1:2302-2315).
                    return Err(if e == Errno::EADDRINUSE { Errno::EINVAL } else { e });
                }
                bound[n].attached = true;
            }
        }
        let g = self.groups.get_mut(&id).expect("checked");
        g.devices = bound;
        g.container = Some(cid);
        let c = self.containers.get_mut(&cid).expect("checked");
        c.groups.push(id);
        c.noiommu = noiommu;
        let ctx = c.ctx;
        if let Some(iommu) = c.iommu.as_mut() {
            if let Err(e) = Self::refresh_domain_facts(&mut self.backend, ctx, iommu) {
                self.detach_container(id, true);
                return Err(e);
            }
        }
        Ok(())
    }

    /// GR:77.
    fn unset_container(&mut self, id: GroupId) -> Result<(), Errno> {
        let g = &self.groups[&id];
        if g.container.is_none() {
            return Err(Errno::EINVAL);
        }
        if g.device_users > 0 {
            return Err(Errno::EBUSY);
        }
        self.detach_container(id, true);
        Ok(())
    }

    /// CT:468: detach a group; the last group leaving drops the IOMMU and every mapping.
    /// `explicit` for `UNSET_CONTAINER` (or a failed `SET_CONTAINER`), which acts on the one
    /// kernel group every holder shares, as type1's does; otherwise our last fd of the group
    /// is gone, and when the group is shared with another process that only drops our
    /// references (type1 releases a group at its last close anywhere).
    fn detach_container(&mut self, id: GroupId, explicit: bool) {
        let g = self.groups.get_mut(&id).expect("checked");
        let Some(cid) = g.container.take() else {
            return;
        };
        let devices = std::mem::take(&mut g.devices);
        // Devices held by a mapping count as users, and a group with users is not detached.
        debug_assert!(g.held_by_mapping.is_empty());
        g.lost.clear();
        let native = explicit || !g.shared;
        for d in &devices {
            if d.attached && native {
                logged("VFIO_DEVICE_DETACH_IOMMUFD_PT", self.backend.device_detach(d.handle));
            }
            self.backend.device_close(d.handle);
        }
        let c = self.containers.get_mut(&cid).expect("group's container");
        c.groups.retain(|g| *g != id);
        let ctx = c.ctx;
        let native = native && (explicit || !c.shared);
        if c.groups.is_empty() {
            c.noiommu_driver = false;
            if let Some(iommu) = c.iommu.take() {
                if native {
                    if !iommu.ledger.is_empty() {
                        logged("IOMMU_IOAS_UNMAP of everything", self.backend.ioas_unmap(ctx, iommu.ioas, 0, u64::MAX));
                    }
                    logged("IOMMU_DESTROY of an IOAS", self.backend.ioas_destroy(ctx, iommu.ioas));
                }
            }
        } else if let Some(iommu) = c.iommu.as_mut() {
            logged("refreshing the domain facts", Self::refresh_domain_facts(&mut self.backend, ctx, iommu));
        }
        self.reap_container(cid);
    }

    /// GR:302: the name is matched first (ENODEV), then the container must have an IOMMU
    /// (EINVAL, CT:511).
    fn get_device(&mut self, id: GroupId, raw_name: &[u8]) -> Result<DeviceGrant, Errno> {
        let (number, noiommu) = (self.groups[&id].number, self.groups[&id].noiommu);
        // vfio_device_get_from_name: the group's VFIO devices in turn; an error stops it.
        let mut found = None;
        for d in node_devices(&mut self.backend, number, noiommu)?.into_iter().filter(|d| d.cdev.is_some()) {
            // The token cannot reach the kernel: the device was bound at SET_CONTAINER
            // (docs/limitations.md); vfio-pci's own checks of its form are made here.
            if let NameMatch::Yes { token: _ } = match_name(raw_name, &d.name, d.sriov)? {
                found = Some(d.name);
                break;
            }
        }
        let Some(name) = found else {
            return Err(Errno::ENODEV);
        };
        let Some(cid) = self.groups[&id].container else {
            return Err(Errno::EINVAL);
        };
        let c = &self.containers[&cid];
        if c.iommu.is_none() && !c.noiommu_driver {
            return Err(Errno::EINVAL);
        }
        // vfio_group_use_container (CT:514), at the device's first open only (vfio_main.c:
        // 547-561): another file of an open device comes without the check.
        if noiommu && !self.device_open_anywhere(id, &name) && !self.backend.caller_has_rawio() {
            return Err(Errno::EPERM);
        }
        let handle = match self.groups[&id].devices.iter().find(|d| d.info.name == name) {
            Some(d) => d.handle,
            None => self.bind_late(id, cid, &name)?,
        };
        let g = &self.groups[&id];
        if let Some((_, e)) = g.lost.iter().find(|(h, _)| *h == handle) {
            // A no-IOMMU cdev opens only with CAP_SYS_RAWIO, which a program may drop before a
            // device's last close and take back before its next open: the open type1 makes
            // then is this one, so the reopen is tried again now.
            if !(noiommu && *e == Errno::EPERM) {
                return Err(*e);
            }
            self.backend.device_reopen(handle)?;
            self.groups.get_mut(&id).expect("checked").lost.retain(|(h, _)| *h != handle);
        }
        if noiommu {
            // GR:287: the kernel logs every user of a device without DMA protection.
            self.backend.noiommu_device_opened(&name);
        }
        let serial = self.fresh_id();
        let g = self.groups.get_mut(&id).expect("checked");
        // Still open through a mapping: type1 hands out another file of the open device.
        if let Some(at) = g.held_by_mapping.iter().position(|h| *h == handle) {
            g.held_by_mapping.remove(at);
            g.device_users -= 1;
            self.mapping_holds -= 1;
        }
        g.device_users += 1;
        match g.device_fds.iter_mut().find(|(h, _)| *h == handle) {
            Some((_, n)) => *n += 1,
            None => g.device_fds.push((handle, 1)),
        }
        Ok(DeviceGrant { group: id, handle, serial })
    }

    /// Whether the device named `name` of group `id` is open (type1's `open_count > 0`): a
    /// device fd of ours, a mapping of one of its regions, or, for a group shared with another
    /// process, that process's file of it.
    fn device_open_anywhere(&mut self, id: GroupId, name: &str) -> bool {
        let g = &self.groups[&id];
        let Some(handle) = g.devices.iter().find(|d| d.info.name == name).map(|d| d.handle) else {
            return false;
        };
        if g.device_fds.iter().any(|(h, n)| *h == handle && *n > 0) || g.held_by_mapping.contains(&handle) {
            return true;
        }
        g.shared && self.backend.device_held_elsewhere(handle).unwrap_or(false)
    }

    /// A device bound to a VFIO driver after its group was set on the container: type1
    /// attaches groups, not devices, so it is already in the container's domain and opens like
    /// the others. Here it is bound to the container's iommufd and attached to its IOAS now.
    fn bind_late(&mut self, id: GroupId, cid: ContainerId, name: &str) -> Result<DeviceHandle, Errno> {
        let (number, noiommu) = (self.groups[&id].number, self.groups[&id].noiommu);
        let info = node_devices(&mut self.backend, number, noiommu)?
            .into_iter()
            .find(|d| d.name == name && d.cdev.is_some())
            .ok_or(Errno::ENODEV)?;
        let c = &self.containers[&cid];
        let (ctx, ioas) = (c.ctx, c.iommu.as_ref().map(|i| i.ioas));
        let handle = open_and_bind(&mut self.backend, &info, ctx)?;
        let attach = match ioas {
            Some(ioas) => self.backend.device_attach(handle, ioas).map(|()| true),
            None => Ok(false),
        };
        match attach {
            Ok(attached) => {
                let g = self.groups.get_mut(&id).expect("checked");
                g.devices.push(BoundDevice { info, handle, attached });
                Ok(handle)
            }
            Err(e) => {
                self.backend.device_close(handle);
                Err(e)
            }
        }
    }

    /// type1's `close_device` at a device's last close, and the `open_device` of its next
    /// `GET_DEVICE_FD`: the kernel quiesces the device (bus mastering and interrupts off) and
    /// resets it when our cdev file goes, and enables it afresh when we open it again, so the
    /// next user finds what type1's next open leaves. Skipped when the group goes anyway.
    /// A group shared with another process (fork, handoff) is cycled only when no other
    /// process holds the device's file: then this close is the device's last, as in type1
    /// (explorer seed 4, s4676); otherwise the other holder keeps it open and bound.
    fn close_and_reopen(&mut self, id: GroupId, dev: DeviceHandle) {
        let g = &self.groups[&id];
        if g.container.is_none() || !(g.open || g.device_users > 0) {
            return;
        }
        if g.shared {
            let number = g.number;
            match self.backend.device_held_elsewhere(dev) {
                Ok(false) => {}
                Ok(true) => return,
                Err(e) => {
                    // Unknown: leave it open (a reopen while another file is bound loses it).
                    log::error!("device of group {number}: cannot tell whether another process holds it: {e}");
                    return;
                }
            }
        }
        if let Err(e) = self.backend.device_reopen(dev) {
            let g = self.groups.get_mut(&id).expect("checked");
            log::error!("device of group {}: cannot open it again after its last close: {e}", g.number);
            g.lost.push((dev, e));
        }
    }

    /// Devices held only by a mapping of one of their regions whose mapping is gone now have
    /// their last close, as type1's file release at munmap, and a group held only by them goes
    /// with them. Called at the entry points while any is held, so each call sees what type1
    /// would.
    /// Not while a DMA call is in flight: releasing a group could take its container down
    /// under the call. The next call after it settles (a race with an munmap in another
    /// thread, whose order type1 does not fix either).
    pub(super) fn settle_mappings(&mut self) {
        if self.mapping_holds == 0 || self.in_flight != 0 {
            return;
        }
        let held: Vec<(GroupId, DeviceHandle)> =
            self.groups.iter().flat_map(|(id, g)| g.held_by_mapping.iter().map(move |h| (*id, *h))).collect();
        for (id, dev) in held {
            if self.device_mapped(dev) {
                continue;
            }
            let g = self.groups.get_mut(&id).expect("listed");
            g.held_by_mapping.retain(|h| *h != dev);
            g.device_users -= 1;
            self.mapping_holds -= 1;
            self.close_and_reopen(id, dev);
            self.reap_group(id);
        }
    }

    /// Whether a mapping holds the device's file; an unanswerable question is logged and
    /// taken as no (the reopen that follows then reports what is wrong).
    fn device_mapped(&mut self, dev: DeviceHandle) -> bool {
        self.backend.device_mapped(dev).unwrap_or_else(|e| {
            log::error!("cannot tell whether a device region is still mapped: {e}");
            false
        })
    }

    /// The caller closed the last fd of a device obtained through `GET_DEVICE_FD`.
    pub fn close_device(&mut self, grant: DeviceGrant) {
        self.settle_mappings();
        let Some(g) = self.groups.get_mut(&grant.group) else {
            return;
        };
        g.device_users = g.device_users.saturating_sub(1);
        let last = match g.device_fds.iter_mut().find(|(h, _)| *h == grant.handle) {
            Some((_, n)) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        g.device_fds.retain(|(_, n)| *n > 0);
        if last && g.container.is_some() {
            // A mapping of a region in this process holds the device file, shared or not (type1
            // answers UNSET_CONTAINER EBUSY then: explorer seed 4, s2169 and s25772).
            if self.device_mapped(grant.handle) {
                // The file, and the group it holds, live on in the mapping (type1).
                let g = self.groups.get_mut(&grant.group).expect("checked");
                g.held_by_mapping.push(grant.handle);
                g.device_users += 1;
                self.mapping_holds += 1;
                return;
            }
            // For a group shared with another process, only if that process holds no file of
            // the device (close_and_reopen checks).
            self.close_and_reopen(grant.group, grant.handle);
        }
        self.reap_group(grant.group);
    }

    /// `KVM_SET_DEVICE_ATTR(KVM_DEV_VFIO_FILE, FILE_ADD or FILE_DEL)` naming this group's file
    /// on the KVM VFIO device `kvm_device`. KVM cannot know an emulated group's file, so it
    /// gets the group's KVM files instead (`Group::kvm_files`: a cdev file per VFIO device;
    /// KVM takes cdevs since 6.6), one request each, and answers `EEXIST` and `ENOENT` by
    /// file as it does for the group's. A group file is added whole or not at all: a failed
    /// ADD takes back what it added.
    pub fn kvm_group_file(&mut self, id: GroupId, kvm_device: i32, add: bool) -> Result<(), Errno> {
        self.kvm_group_file_with(id, add, &mut |backend, file, add| backend.kvm_device_file(kvm_device, file, add))
    }

    /// As [`Shim::kvm_group_file`], each request made by `issue` (a glue that must make it in
    /// the program's own context: KVM answers only the VM's process).
    pub fn kvm_group_file_with(
        &mut self,
        id: GroupId,
        add: bool,
        issue: &mut dyn FnMut(&mut B, KvmFile, bool) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        let files = self.group_kvm_files(id)?;
        for (n, &file) in files.iter().enumerate() {
            if let Err(e) = issue(&mut self.backend, file, add) {
                if add {
                    for &done in &files[..n] {
                        logged("KVM_DEV_VFIO_FILE_DEL", issue(&mut self.backend, done, false));
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn group_kvm_files(&mut self, id: GroupId) -> Result<Vec<KvmFile>, Errno> {
        let g = self.groups.get(&id).ok_or(Errno::EBADF)?;
        if !g.kvm_files.is_empty() {
            return Ok(g.kvm_files.clone());
        }
        let (number, noiommu) = (g.number, g.noiommu);
        let mut files = Vec::new();
        for info in node_devices(&mut self.backend, number, noiommu)?.iter().filter(|d| d.cdev.is_some()) {
            match self.backend.kvm_file_open(info) {
                Ok(f) => files.push(f),
                Err(e) => {
                    for f in files {
                        self.backend.kvm_file_close(f);
                    }
                    return Err(e);
                }
            }
        }
        self.groups.get_mut(&id).expect("checked").kvm_files = files.clone();
        Ok(files)
    }
}

/// The devices behind a group node: `/dev/vfio/<number>` or `/dev/vfio/noiommu-<number>`.
fn node_devices<B: Backend>(backend: &mut B, number: u32, noiommu: bool) -> Result<Vec<GroupDevice>, Errno> {
    if noiommu {
        backend.noiommu_group_devices(number)
    } else {
        backend.group_devices(number)
    }
}

/// Opens a device's cdev and binds it to `ctx`; nothing is left open on failure.
fn open_and_bind<B: Backend>(backend: &mut B, info: &GroupDevice, ctx: IommufdId) -> Result<DeviceHandle, Errno> {
    let handle = backend.device_open(info)?;
    match backend.device_bind(handle, ctx) {
        Ok(()) => Ok(handle),
        Err(e) => {
            backend.device_close(handle);
            Err(e)
        }
    }
}
