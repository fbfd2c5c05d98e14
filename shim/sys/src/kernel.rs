//! [`KernelBackend`]: the translator's [`Backend`] on real file descriptors, native iommufd
//! ioctls only. It never issues a legacy VFIO container ioctl on an iommufd, nor
//! `IOMMU_VFIO_IOAS`: that is the kernel's compat layer the shim replaces.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use vfio_shim::backend::{
    Backend, DetachedDma, DeviceHandle, DmaOp, GroupDevice, IoasGeometry, IoasId, IommufdId, IovaRange, KvmFile, Prot,
};
use vfio_shim::hot_reset::{vfio_pci_dependent_device, vfio_pci_hot_reset_header, HEADER_SIZE};

use crate::caller::{CallerProcess, PreparedMap, ProcessId};
use crate::iommufd::{self, HwInfo};
use crate::vfio_device;
use crate::vtd::{self, VtdBootParams};

mod supervised;

/// The kernel's `PAGE_SIZE`: the pinning granule, and type1's floor for `iova_pgsizes`.
fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| s.is_power_of_two()).unwrap_or(4096)
}

fn errno_of(e: &io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

struct Device {
    /// The bound cdev file; `/dev/null` after a last close whose reopen failed (`released`).
    fd: OwnedFd,
    /// The cdev path it was opened by: what `/proc/self/maps` shows for its BAR mmaps.
    cdev: String,
    /// The iommufd the device is bound to and the dev id `VFIO_DEVICE_BIND_IOMMUFD` gave.
    bound: Option<(IommufdId, u32)>,
    attached: Option<IoasId>,
    /// The device's file was closed at a last close but could not be opened again (a
    /// no-IOMMU cdev without CAP_SYS_RAWIO): `bound` names the iommufd the next
    /// `device_reopen` binds it to.
    released: bool,
}

/// Whose memory `ioas_map` maps while a CUSE daemon serves a caller.
pub struct MemoryOwner {
    pub caller: Arc<CallerProcess>,
    /// The map of the request being served, resolved ahead.
    pub prepared: Option<PreparedMap>,
}

/// Real `/dev/iommu` contexts and `/dev/vfio/devices/vfioN` cdevs, addressed by handles that
/// are never reused (fd numbers are).
pub struct KernelBackend {
    sysfs: PathBuf,
    dev: PathBuf,
    next_handle: u64,
    /// Shared with detached DMA calls ([`KernelDetached`]), which keep the file open while they run.
    iommufds: BTreeMap<IommufdId, Arc<OwnedFd>>,
    devices: HashMap<DeviceHandle, Device>,
    vtd_params: Option<VtdBootParams>,
    /// Set while a CUSE daemon serves a client's ioctl: maps then pin that caller's shared
    /// memory by file (`IOMMU_IOAS_MAP_FILE`) instead of this process's memory by address.
    memory_owner: Option<MemoryOwner>,
    /// Pages pinned for CUSE callers, charged as type1 charges them (per process, against its
    /// RLIMIT_MEMLOCK), since the daemon's own pins are charged to the daemon.
    caller_charges: BTreeMap<(IommufdId, IoasId, u64), (ProcessId, u64)>,
    charged_pages: HashMap<ProcessId, u64>,
    /// Charges of CUSE callers' maps detached and not yet completed, by (ctx, IOAS, IOVA).
    pending_charges: HashMap<(IommufdId, IoasId, u64), (ProcessId, u64)>,
    /// Group claims: the group's sysfs directory, opened and `flock`ed exclusively. Every
    /// opener through the shim (preload processes, the daemon's clients) takes the same lock,
    /// which the kernel drops with the last file of the claim, a killed process's included.
    /// Never unlocked explicitly: `LOCK_UN` would drop a fork child's claim too (the lock
    /// belongs to the open file, which the child shares); closing our fd does not.
    group_claims: HashMap<u32, OwnedFd>,
    /// The same for no-IOMMU groups, on the directory their devices are found in.
    noiommu_claims: HashMap<u32, OwnedFd>,
    /// Device cdev files opened for KVM's VFIO device alone (`Backend::kvm_file_open`).
    kvm_files: HashMap<KvmFile, OwnedFd>,
    /// Whose `CAP_SYS_RAWIO` the no-IOMMU checks ask for: the calling thread's when unset (a
    /// preload process); the daemon and the supervisor set their caller's thread.
    rawio_caller: Option<u32>,
    /// `warn_noiommu_opens(false)`.
    quiet_noiommu_opens: bool,
    /// Serving a supervised program (docs/supervisor.md): how files are opened, and each
    /// context's staging IOAS.
    supervised: Option<supervised::Supervised>,
}

impl Default for KernelBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelBackend {
    /// On `/sys` and `/dev`.
    pub fn new() -> Self {
        Self::with_roots("/sys", "/dev")
    }

    /// On another sysfs and /dev root (tests use a fake tree).
    pub fn with_roots(sysfs: impl Into<PathBuf>, dev: impl Into<PathBuf>) -> Self {
        KernelBackend {
            sysfs: sysfs.into(),
            dev: dev.into(),
            next_handle: 1,
            iommufds: BTreeMap::new(),
            devices: HashMap::new(),
            vtd_params: None,
            memory_owner: None,
            caller_charges: BTreeMap::new(),
            charged_pages: HashMap::new(),
            pending_charges: HashMap::new(),
            group_claims: HashMap::new(),
            noiommu_claims: HashMap::new(),
            rawio_caller: None,
            quiet_noiommu_opens: false,
            kvm_files: HashMap::new(),
            supervised: None,
        }
    }

    /// Whose memory `ioas_map` addresses refer to: `None` (the default) for this process's,
    /// `Some(caller)` for a CUSE caller's. Returns the previous owner.
    pub fn set_memory_owner(&mut self, owner: Option<MemoryOwner>) -> Option<MemoryOwner> {
        std::mem::replace(&mut self.memory_owner, owner)
    }

    /// The open `/dev/iommu` behind `ctx`, for glue that must hand the number out.
    pub fn iommufd_raw_fd(&self, ctx: IommufdId) -> Option<RawFd> {
        self.iommufds.get(&ctx).map(|fd| fd.as_raw_fd())
    }

    /// Whether a no-IOMMU device handed out is announced in the kernel log (default: yes).
    pub fn warn_noiommu_opens(&mut self, on: bool) {
        self.quiet_noiommu_opens = !on;
    }

    /// Whose `CAP_SYS_RAWIO` the no-IOMMU checks ask for until the next call of this: the
    /// CUSE daemon and the supervisor name the thread whose call they serve; `None` is the
    /// calling thread.
    pub fn rawio_of(&mut self, tid: Option<u32>) {
        self.rawio_caller = tid;
    }

    /// Every fd the backend holds open (iommufds and device cdevs), for glue that must keep
    /// them out of the application's reach.
    pub fn raw_fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.iommufds
            .values()
            .map(|fd| fd.as_raw_fd())
            .chain(self.devices.values().map(|d| d.fd.as_raw_fd()))
            .chain(self.group_claims.values().map(|f| f.as_raw_fd()))
            .chain(self.noiommu_claims.values().map(|f| f.as_raw_fd()))
            .chain(self.kvm_files.values().map(|f| f.as_raw_fd()))
    }

    /// The open device cdev behind `dev`.
    pub fn device_raw_fd(&self, dev: DeviceHandle) -> Option<RawFd> {
        self.devices.get(&dev).map(|d| d.fd.as_raw_fd())
    }

    /// The cdev path a device was opened by.
    pub fn device_cdev(&self, dev: DeviceHandle) -> Option<&str> {
        self.devices.get(&dev).map(|d| d.cdev.as_str())
    }

    /// An iommufd another process handed over (`SCM_RIGHTS`), as a context of ours. `EBADF`
    /// unless `fd` is an open of `<dev>/iommu`.
    pub fn adopt_iommufd(&mut self, fd: OwnedFd) -> Result<IommufdId, Errno> {
        same_char_device(fd.as_fd(), &self.dev.join("iommu"))?;
        let ctx = IommufdId(self.handle());
        self.iommufds.insert(ctx, Arc::new(fd));
        Ok(ctx)
    }

    /// A device cdev another process opened, bound to `ctx` (as `dev_id`) and maybe attached
    /// to `attached`. `EBADF` unless `fd` is an open of `cdev`, a VFIO device cdev.
    pub fn adopt_device(
        &mut self,
        fd: OwnedFd,
        cdev: &str,
        ctx: IommufdId,
        dev_id: u32,
        attached: Option<IoasId>,
    ) -> Result<DeviceHandle, Errno> {
        let devices = self.dev.join("vfio/devices");
        if Path::new(cdev).parent().is_none_or(|p| p != devices) || !self.iommufds.contains_key(&ctx) {
            return Err(Errno::EBADF);
        }
        same_char_device(fd.as_fd(), Path::new(cdev))?;
        let dev = DeviceHandle(self.handle());
        self.devices
            .insert(dev, Device { fd, cdev: cdev.to_owned(), bound: Some((ctx, dev_id)), attached, released: false });
        Ok(dev)
    }

    /// The dev id of a bound device (for `IOMMU_GET_HW_INFO`, `IOMMU_HWPT_ALLOC`).
    pub fn device_dev_id(&self, dev: DeviceHandle) -> Option<u32> {
        self.devices.get(&dev)?.bound.map(|(_, id)| id)
    }

    /// If `[vaddr, vaddr + length)` lies in one mmap of a VFIO device region of ours, the
    /// device, the region index and the offset in the region (vfio-pci encodes the region in
    /// the file offset: `index << VFIO_PCI_OFFSET_SHIFT`, 40).
    fn device_bar_at(&self, vaddr: u64, length: u64) -> Option<(DeviceHandle, u32, u64)> {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        let end = vaddr.checked_add(length)?;
        for line in maps.lines() {
            let mut f = line.split_whitespace();
            let range = f.next()?;
            let (start, stop) = range.split_once('-')?;
            let (start, stop) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(stop, 16).ok()?);
            if vaddr < start || vaddr >= stop {
                continue;
            }
            if end > stop {
                return None;
            }
            let offset = u64::from_str_radix(f.nth(1)?, 16).ok()? + (vaddr - start);
            let path = f.nth(2)?;
            let dev = self.devices.iter().find(|(_, d)| d.cdev == path).map(|(h, _)| *h)?;
            let (region, offset) = vfio_device::pci_region_of_offset(offset);
            return Some((dev, region, offset));
        }
        None
    }

    /// Drops the caller charges of one IOAS's mappings starting in `[iova, iova + length)`
    /// (the translator unmaps whole mappings), or, with `ioas` `None`, every charge of `ctx`.
    fn uncharge(&mut self, ctx: IommufdId, ioas: Option<IoasId>, iova: u64, length: u64) {
        if self.caller_charges.is_empty() {
            return;
        }
        let last = iova.saturating_add(length.saturating_sub(1));
        let gone: Vec<_> = match ioas {
            Some(ioas) => self.caller_charges.range((ctx, ioas, iova)..=(ctx, ioas, last)).map(|(k, _)| *k).collect(),
            None => self
                .caller_charges
                .range((ctx, IoasId(0), 0)..=(ctx, IoasId(u32::MAX), u64::MAX))
                .map(|(k, _)| *k)
                .collect(),
        };
        for k in gone {
            let Some((process, pages)) = self.caller_charges.remove(&k) else {
                continue;
            };
            self.give_back(process, pages);
        }
    }

    /// Takes `pages` off `process`'s charge; a process charged nothing has no entry.
    fn give_back(&mut self, process: ProcessId, pages: u64) {
        if let Some(n) = self.charged_pages.get_mut(&process) {
            *n = n.saturating_sub(pages);
            if *n == 0 {
                self.charged_pages.remove(&process);
            }
        }
    }

    fn handle(&mut self) -> u64 {
        let h = self.next_handle;
        self.next_handle += 1;
        h
    }

    /// After `IOMMU_IOAS_MAP` of this process's memory: iommufd cannot pin a VM_PFNMAP mapping
    /// such as a BAR mmap (pages.c, EFAULT); type1 maps one by its PFNs. The same BAR range is
    /// then mapped through a VFIO dma-buf.
    #[allow(clippy::too_many_arguments)]
    fn map_fallback(
        &mut self,
        ctx: IommufdId,
        ioas: IoasId,
        vaddr: u64,
        length: u64,
        iova: u64,
        flags: u32,
        ran: Result<(), Errno>,
    ) -> Result<(), Errno> {
        match ran {
            Err(Errno::EFAULT) => match self.device_bar_at(vaddr, length) {
                Some((dev, region, offset)) => {
                    self.map_region_dma_buf(ctx, ioas, dev, (region, offset), length, iova, flags)
                }
                None => Err(Errno::EFAULT),
            },
            other => other,
        }
    }

    /// Maps `[offset, offset + length)` of device `dev`'s region (`region`, `offset`) at `iova`
    /// through a VFIO dma-buf of it: a BAR range a program mapped and asked to map for DMA.
    #[allow(clippy::too_many_arguments)]
    fn map_region_dma_buf(
        &self,
        ctx: IommufdId,
        ioas: IoasId,
        dev: DeviceHandle,
        (region, offset): (u32, u64),
        length: u64,
        iova: u64,
        flags: u32,
    ) -> Result<(), Errno> {
        let buf = vfio_device::device_dma_buf(self.device(dev)?.fd.as_fd(), region, offset, length)?;
        // SAFETY: a dma-buf of the device's own BAR, which the application mapped and asked to
        // map for DMA (peer-to-peer, as type1 maps its PFNs).
        unsafe { iommufd::ioas_map_file(self.iommufd(ctx)?, ioas.0, flags, buf.as_fd(), 0, length, iova) }.map(drop)
    }

    /// The memlock charge `detach_dma` took for a CUSE caller's map, taken out (no hashing on
    /// the preload's path, which never has one).
    fn pending_charge(&mut self, ctx: IommufdId, ioas: IoasId, iova: u64) -> Option<(ProcessId, u64)> {
        if self.pending_charges.is_empty() {
            return None;
        }
        self.pending_charges.remove(&(ctx, ioas, iova))
    }

    fn iommufd(&self, ctx: IommufdId) -> Result<BorrowedFd<'_>, Errno> {
        self.iommufds.get(&ctx).map(|fd| fd.as_fd()).ok_or(Errno::EBADF)
    }

    fn device(&self, dev: DeviceHandle) -> Result<&Device, Errno> {
        self.devices.get(&dev).ok_or(Errno::EBADF)
    }

    fn vtd_params(&mut self) -> VtdBootParams {
        *self.vtd_params.get_or_insert_with(|| {
            fs::read_to_string("/proc/cmdline").map(|c| VtdBootParams::from_cmdline(&c)).unwrap_or_default()
        })
    }

    /// `IOMMU_GET_HW_INFO` of every device attached to `ioas` in `ctx`.
    fn attached_hw_info(&self, ctx: IommufdId, ioas: IoasId) -> Result<Vec<HwInfo>, Errno> {
        let fd = self.iommufd(ctx)?;
        self.devices
            .values()
            .filter(|d| d.attached == Some(ioas))
            .filter_map(|d| d.bound.filter(|(c, _)| *c == ctx))
            .map(|(_, dev_id)| iommufd::get_hw_info(fd, dev_id))
            .collect()
    }

    fn iova_alignment(&self, ctx: IommufdId, ioas: IoasId) -> Result<u64, Errno> {
        Ok(iommufd::ioas_iova_ranges(self.iommufd(ctx)?, ioas.0)?.out_iova_alignment)
    }
}

/// type1's last step (vfio_iommu_type1.c:1264-1267): sizes below `PAGE_SIZE` are hidden and
/// `PAGE_SIZE` is claimed instead.
fn type1_page_floor(pgsizes: u64, page: u64) -> u64 {
    let page_mask = !(page - 1);
    if pgsizes & !page_mask != 0 {
        (pgsizes & page_mask) | page
    } else {
        pgsizes
    }
}

/// Page sizes from the IOAS alignment alone, for IOMMUs whose default domain this crate does
/// not model (AMD, SMMUv3, virtio-iommu...): `out_iova_alignment` is the largest smallest
/// page over the attached domains (io_pagetable.c:1317-1319), so every multiple of it is
/// claimed. A superset of what type1 would report (as the kernel's compat does); only the
/// smallest page, which clients use for alignment, is exact.
fn pgsizes_from_alignment(alignment: u64, page: u64) -> u64 {
    !(alignment.max(page) - 1)
}

impl KernelBackend {
    /// The devices of IOMMU group `group` as sysfs lists them.
    fn iommu_group_devices(&self, group: u32) -> Result<Vec<GroupDevice>, Errno> {
        let dir = self.sysfs.join("kernel/iommu_groups").join(group.to_string()).join("devices");
        let entries = fs::read_dir(&dir).map_err(|e| errno_of(&e))?;
        let mut devices = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| errno_of(&e))?;
            // PCI device names are ASCII; anything else is not a device this can judge.
            let name = entry.file_name().into_string().map_err(|_| Errno::EIO)?;
            let path = entry.path();
            devices.push(GroupDevice {
                // A PF has an SR-IOV capability (sriov_totalvfs), a VF a physfn link.
                sriov: path.join("sriov_totalvfs").exists() || path.join("physfn").exists(),
                driver: driver_name(&path)?,
                cdev: vfio_cdev(&path).map(|n| self.dev.join("vfio/devices").join(n).to_string_lossy().into_owned()),
                name,
            });
        }
        devices.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(devices)
    }

    /// Whether IOMMU group `group` is one VFIO made for a device without an IOMMU.
    fn is_noiommu_iommu_group(&self, group: u32) -> bool {
        let name = self.sysfs.join("kernel/iommu_groups").join(group.to_string()).join("name");
        fs::read(name).is_ok_and(|n| n.trim_ascii_end() == b"vfio-noiommu")
    }

    /// Where no-IOMMU group `group` lives: a `vfio-noiommu` IOMMU group (a kernel with VFIO
    /// groups), or the device of cdev `noiommu-vfio<group>` when that device has no IOMMU group
    /// at all (a kernel without them). Any other IOMMU group of that number has an IOMMU.
    fn noiommu_group_dir(&self, group: u32) -> Result<NoIommuDir, Errno> {
        let iommu_group = self.sysfs.join("kernel/iommu_groups").join(group.to_string());
        if self.is_noiommu_iommu_group(group) {
            return Ok(NoIommuDir::IommuGroup(iommu_group));
        }
        let dev = self.sysfs.join(format!("class/vfio-dev/noiommu-vfio{group}/device"));
        if dev.exists() && !dev.join("iommu_group").exists() {
            return Ok(NoIommuDir::Cdev(dev));
        }
        Err(Errno::ENOENT)
    }
}

/// Where a no-IOMMU group's devices are found ([`KernelBackend::noiommu_group_dir`]).
enum NoIommuDir {
    IommuGroup(PathBuf),
    /// The device behind a `noiommu-vfioN` cdev.
    Cdev(PathBuf),
}

/// Claims `key` in `claims` by an exclusive `flock` of `dir`: `EBUSY` while any opener through
/// the shim holds it (see `KernelBackend::group_claims`).
fn claim(claims: &mut HashMap<u32, OwnedFd>, key: u32, dir: &Path) -> Result<(), Errno> {
    // Ours already: a second file would be refused by flock anyway, and replacing the entry
    // would drop the file that holds the lock.
    if claims.contains_key(&key) {
        return Err(Errno::EBUSY);
    }
    let file = OwnedFd::from(fs::File::open(dir).map_err(|e| errno_of(&e))?);
    // SAFETY: flock(2) on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = Errno::last();
        return Err(if e == Errno::EWOULDBLOCK { Errno::EBUSY } else { e });
    }
    claims.insert(key, file);
    Ok(())
}

impl Backend for KernelBackend {
    fn iommufd_open(&mut self) -> Result<IommufdId, Errno> {
        let path = self.dev.join("iommu");
        let fd = self.open_object(&path)?;
        // type1 charges RLIMIT_MEMLOCK per process (vfio_iommu_type1.c:769); iommufd
        // defaults to per user. Switching needs CAP_SYS_RESOURCE and an empty context
        // (ioas.c:642-655), so try it now and live with per-user when refused.
        match iommufd::option(fd.as_fd(), iommufd::IOMMU_OPTION_RLIMIT_MODE, iommufd::IOMMU_OPTION_OP_SET, 0, 1) {
            Ok(_) => {}
            Err(Errno::EPERM) => {
                log::debug!("iommufd: no CAP_SYS_RESOURCE, memlock stays accounted per user")
            }
            Err(e) => log::warn!("iommufd: IOMMU_OPTION_RLIMIT_MODE failed: {e}"),
        }
        let ctx = IommufdId(self.handle());
        self.iommufds.insert(ctx, Arc::new(fd));
        if let Err(e) = self.alloc_staging(ctx) {
            self.iommufds.remove(&ctx);
            return Err(e);
        }
        Ok(ctx)
    }

    fn iommufd_close(&mut self, ctx: IommufdId) {
        self.uncharge(ctx, None, 0, u64::MAX);
        if self.iommufds.remove(&ctx).is_some() {
            recorded_close(&self.dev.join("iommu"));
        }
    }

    fn ioas_alloc(&mut self, ctx: IommufdId) -> Result<IoasId, Errno> {
        iommufd::ioas_alloc(self.iommufd(ctx)?).map(IoasId)
    }

    fn ioas_destroy(&mut self, ctx: IommufdId, ioas: IoasId) -> Result<(), Errno> {
        iommufd::destroy(self.iommufd(ctx)?, ioas.0)?;
        self.uncharge(ctx, Some(ioas), 0, u64::MAX);
        Ok(())
    }

    fn ioas_geometry(&mut self, ctx: IommufdId, ioas: IoasId) -> Result<IoasGeometry, Errno> {
        let r = iommufd::ioas_iova_ranges(self.iommufd(ctx)?, ioas.0)?;
        Ok(IoasGeometry {
            ranges: r.ranges.iter().map(|r| IovaRange { start: r.start, last: r.last }).collect(),
            iova_alignment: r.out_iova_alignment,
        })
    }

    fn ioas_map(
        &mut self,
        ctx: IommufdId,
        ioas: IoasId,
        iova: u64,
        vaddr: u64,
        length: u64,
        prot: Prot,
    ) -> Result<(), Errno> {
        let flags = map_flags(prot);
        if let Some(owner) = self.memory_owner.as_mut() {
            // The daemon cannot pin another process's memory by address (IOMMU_IOAS_MAP pins
            // current->mm); it maps the file behind a shared mapping instead, resolved ahead
            // (outside the daemon's lock) when the glue could.
            let prepared =
                owner.prepared.take().filter(|p| (p.vaddr, p.length, p.write) == (vaddr, length, prot.write));
            let prepared = prepared.unwrap_or_else(|| owner.caller.prepare_map(vaddr, length, prot.write));
            let backing = prepared.backing?;
            let memlock = prepared.memlock?;
            let page = page_size();
            let pages = length.div_ceil(page);
            let charged = self.charged_pages.get(&memlock.process).copied().unwrap_or(0);
            if let Some(limit) = memlock.limit {
                // vfio_pin_pages_remote: `mm->locked_vm + npage > limit` is ENOMEM.
                if memlock.locked / page + charged + pages > limit / page {
                    return Err(Errno::ENOMEM);
                }
            }
            // SAFETY: the pages behind the caller's own `vaddr`, which it asked to map (the
            // Backend contract); devices reach them as they would on type1.
            unsafe {
                iommufd::ioas_map_file(
                    self.iommufd(ctx)?,
                    ioas.0,
                    flags,
                    backing.file.as_fd(),
                    backing.offset,
                    length,
                    iova,
                )
            }?;
            self.caller_charges.insert((ctx, ioas, iova), (memlock.process, pages));
            *self.charged_pages.entry(memlock.process).or_default() += pages;
            return Ok(());
        }
        // SAFETY: `vaddr` is memory the application asked to map (the Backend contract).
        let ran = unsafe { iommufd::ioas_map(self.iommufd(ctx)?, ioas.0, flags, vaddr, length, iova) };
        self.map_fallback(ctx, ioas, vaddr, length, iova, flags, ran.map(drop))
    }

    fn ioas_unmap(&mut self, ctx: IommufdId, ioas: IoasId, iova: u64, length: u64) -> Result<u64, Errno> {
        let unmapped = iommufd::ioas_unmap(self.iommufd(ctx)?, ioas.0, iova, length)?;
        self.uncharge(ctx, Some(ioas), iova, length);
        Ok(unmapped)
    }

    type Detached = KernelDetached;

    /// Maps of this process's memory, every unmap, and a CUSE caller's map whose memory was
    /// resolved ahead: its memlock charge is taken now and settled in `complete_dma`. A map
    /// that must fail (unresolvable memory, over the limit) stays with `ioas_map`, which
    /// answers the errno.
    fn detach_dma(&mut self, ctx: IommufdId, ioas: IoasId, op: DmaOp) -> Option<KernelDetached> {
        let iommufd = Arc::clone(self.iommufds.get(&ctx)?);
        let DmaOp::Map { iova, vaddr, length, prot } = op else {
            return Some(KernelDetached { iommufd, ioas, op, backing: None });
        };
        let Some(owner) = self.memory_owner.as_mut() else {
            return Some(KernelDetached { iommufd, ioas, op, backing: None });
        };
        let prepared = owner.prepared.take().filter(|p| (p.vaddr, p.length, p.write) == (vaddr, length, prot.write))?;
        let (Ok(backing), Ok(memlock)) = (&prepared.backing, &prepared.memlock) else {
            owner.prepared = Some(prepared);
            return None;
        };
        let page = page_size();
        let pages = length.div_ceil(page);
        let charged = self.charged_pages.get(&memlock.process).copied().unwrap_or(0);
        if memlock.limit.is_some_and(|limit| memlock.locked / page + charged + pages > limit / page) {
            let owner = self.memory_owner.as_mut().expect("checked");
            owner.prepared = Some(prepared);
            return None;
        }
        let backing = (Arc::clone(&backing.file), backing.offset);
        *self.charged_pages.entry(memlock.process).or_default() += pages;
        self.pending_charges.insert((ctx, ioas, iova), (memlock.process, pages));
        Some(KernelDetached { iommufd, ioas, op, backing: Some(backing) })
    }

    fn complete_dma(&mut self, ctx: IommufdId, ioas: IoasId, op: DmaOp, ran: Result<u64, Errno>) -> Result<u64, Errno> {
        match op {
            DmaOp::Map { iova, vaddr, length, prot } => match self.pending_charge(ctx, ioas, iova) {
                // A CUSE caller's map: its charge stays with the mapping, or goes back.
                Some((process, pages)) => {
                    match ran {
                        Ok(_) => {
                            self.caller_charges.insert((ctx, ioas, iova), (process, pages));
                        }
                        Err(_) => self.give_back(process, pages),
                    }
                    ran.map(|_| 0)
                }
                None => self.map_fallback(ctx, ioas, vaddr, length, iova, map_flags(prot), ran.map(drop)).map(|()| 0),
            },
            DmaOp::Unmap { iova, length } => {
                let unmapped = ran?;
                self.uncharge(ctx, Some(ioas), iova, length);
                Ok(unmapped)
            }
        }
    }

    /// VT-d devices: the default paging domain's sizes (see [`vtd::paging_domain_pgsizes`]).
    /// Others: [`pgsizes_from_alignment`]. Intersected over attached devices as type1
    /// intersects over its domains (vfio_iommu_type1.c:1251-1254). No device attached:
    /// `PAGE_MASK`, type1's value before any domain (vfio_iommu_type1.c:2650).
    fn ioas_pgsizes(&mut self, ctx: IommufdId, ioas: IoasId) -> Result<u64, Errno> {
        let page = page_size();
        let infos = self.attached_hw_info(ctx, ioas)?;
        let params = self.vtd_params();
        let mut pgsizes = u64::MAX;
        let mut alignment = None;
        for info in &infos {
            pgsizes &= match info.vtd() {
                Some(vtd) => vtd::paging_domain_pgsizes(&vtd, info.out_capabilities, &params),
                None => {
                    let a = match alignment {
                        Some(a) => a,
                        None => *alignment.insert(self.iova_alignment(ctx, ioas)?),
                    };
                    pgsizes_from_alignment(a, page)
                }
            };
        }
        if infos.is_empty() {
            pgsizes = !(page - 1);
        }
        Ok(type1_page_floor(pgsizes, page))
    }

    /// type1 answers the AND of `enforce_cache_coherency` over its domains, true with none
    /// (vfio_iommu_type1.c:2696-2710). Per device: VT-d needs snoop control
    /// ([`vtd::enforces_cache_coherency`]); AMD always succeeds (amd/iommu.c:3193-3197);
    /// anything else is reported not coherent, since SMMUv3 depends on firmware CANWBS
    /// (arm-smmu-v3.c:2789-2806) that userspace cannot see, and drivers without the op
    /// never enforce it.
    fn ioas_enforces_coherency(&mut self, ctx: IommufdId, ioas: IoasId) -> Result<bool, Errno> {
        Ok(self.attached_hw_info(ctx, ioas)?.iter().all(|info| match info.vtd() {
            Some(vtd) => vtd::enforces_cache_coherency(&vtd),
            None => info.out_data_type == iommufd::IOMMU_HW_INFO_TYPE_AMD,
        }))
    }

    fn group_claim(&mut self, group: u32) -> Result<(), Errno> {
        let dir = self.sysfs.join("kernel/iommu_groups").join(group.to_string());
        claim(&mut self.group_claims, group, &dir)
    }

    fn group_release(&mut self, group: u32) {
        // Closing our file of the claim: the lock goes with the last file of it (a fork child
        // may still hold a duplicate; then the group stays claimed, as its open file does).
        self.group_claims.remove(&group);
    }

    fn group_devices(&mut self, group: u32) -> Result<Vec<GroupDevice>, Errno> {
        // A vfio-noiommu group has /dev/vfio/noiommu-<N>, never /dev/vfio/<N>.
        if self.is_noiommu_iommu_group(group) {
            return Err(Errno::ENOENT);
        }
        self.iommu_group_devices(group)
    }

    fn noiommu_mode(&mut self) -> bool {
        fs::read(self.sysfs.join("module/vfio/parameters/enable_unsafe_noiommu_mode"))
            .is_ok_and(|v| v.first() == Some(&b'Y'))
    }

    fn noiommu_group_devices(&mut self, group: u32) -> Result<Vec<GroupDevice>, Errno> {
        match self.noiommu_group_dir(group)? {
            NoIommuDir::IommuGroup(_) => self.iommu_group_devices(group),
            NoIommuDir::Cdev(dev) => {
                let name = fs::canonicalize(&dev).map_err(|e| errno_of(&e))?;
                let name = name.file_name().and_then(|n| n.to_str()).ok_or(Errno::EIO)?.to_string();
                Ok(vec![GroupDevice {
                    sriov: dev.join("sriov_totalvfs").exists() || dev.join("physfn").exists(),
                    driver: driver_name(&dev)?,
                    cdev: Some(
                        self.dev.join(format!("vfio/devices/noiommu-vfio{group}")).to_string_lossy().into_owned(),
                    ),
                    name,
                }])
            }
        }
    }

    fn noiommu_group_claim(&mut self, group: u32) -> Result<(), Errno> {
        let dir = match self.noiommu_group_dir(group)? {
            NoIommuDir::IommuGroup(dir) | NoIommuDir::Cdev(dir) => dir,
        };
        claim(&mut self.noiommu_claims, group, &dir)
    }

    fn noiommu_group_release(&mut self, group: u32) {
        self.noiommu_claims.remove(&group);
    }

    fn caller_has_rawio(&mut self) -> bool {
        use crate::privileges::{effective, sets_of, CAP_SYS_RAWIO};
        let effective = match self.rawio_caller {
            Some(tid) => sets_of(tid as libc::pid_t).map(|(effective, _)| effective),
            None => effective(),
        };
        effective.is_ok_and(|e| e & (1 << CAP_SYS_RAWIO) != 0)
    }

    fn noiommu_device_opened(&mut self, name: &str) {
        if self.quiet_noiommu_opens {
            return;
        }
        // The kernel's own words (GR:287), in the kernel log where an operator looks for them,
        // and in the shim's log.
        let comm = fs::read_to_string("/proc/self/comm").unwrap_or_default();
        let line = format!(
            "vfio-shim: {name}: vfio-noiommu device opened by user ({}:{})",
            comm.trim_end(),
            std::process::id()
        );
        log::warn!("{line}");
        if let Err(e) = fs::OpenOptions::new().write(true).open(self.dev.join("kmsg")).and_then(|mut k| {
            use std::io::Write;
            k.write_all(format!("<4>{line}\n").as_bytes())
        }) {
            log::warn!("cannot write the no-IOMMU warning to the kernel log: {e}");
        }
    }

    fn device_open(&mut self, device: &GroupDevice) -> Result<DeviceHandle, Errno> {
        // No cdev: not bound to a VFIO driver, nothing to open.
        let cdev = device.cdev.as_deref().ok_or(Errno::ENODEV)?;
        let fd = self.open_object(Path::new(cdev))?;
        let dev = DeviceHandle(self.handle());
        self.devices.insert(dev, Device { fd, cdev: cdev.to_string(), bound: None, attached: None, released: false });
        Ok(dev)
    }

    fn device_bind(&mut self, dev: DeviceHandle, ctx: IommufdId) -> Result<(), Errno> {
        let dev_id = vfio_device::device_bind_iommufd(self.device(dev)?.fd.as_fd(), self.iommufd(ctx)?)?;
        if let Some(d) = self.devices.get_mut(&dev) {
            d.bound = Some((ctx, dev_id));
        }
        Ok(())
    }

    fn device_attach(&mut self, dev: DeviceHandle, ioas: IoasId) -> Result<(), Errno> {
        vfio_device::device_attach_iommufd_pt(self.device(dev)?.fd.as_fd(), ioas.0)?;
        if let Some(d) = self.devices.get_mut(&dev) {
            d.attached = Some(ioas);
        }
        Ok(())
    }

    fn device_detach(&mut self, dev: DeviceHandle) -> Result<(), Errno> {
        vfio_device::device_detach_iommufd_pt(self.device(dev)?.fd.as_fd())?;
        if let Some(d) = self.devices.get_mut(&dev) {
            d.attached = None;
        }
        Ok(())
    }

    fn device_close(&mut self, dev: DeviceHandle) {
        if let Some(d) = self.devices.remove(&dev) {
            recorded_close(Path::new(&d.cdev));
        }
    }

    fn device_hot_reset_info(&mut self, dev: DeviceHandle) -> Result<(u32, Vec<vfio_pci_dependent_device>), Errno> {
        use zerocopy::FromBytes;
        let device = self.device(dev)?.fd.as_fd();
        let mut entries = 64usize;
        loop {
            let mut buf = vec![0u8; HEADER_SIZE + 8 * entries];
            match vfio_device::device_pci_hot_reset_info(device, &mut buf) {
                Ok(_) => {}
                Err(Errno::ENOSPC) => {
                    let needed =
                        vfio_pci_hot_reset_header::read_from_bytes(&buf[..HEADER_SIZE]).map_err(|_| Errno::EIO)?;
                    if needed.count as usize <= entries {
                        return Err(Errno::EIO);
                    }
                    entries = needed.count as usize;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let header = vfio_pci_hot_reset_header::read_from_bytes(&buf[..HEADER_SIZE]).map_err(|_| Errno::EIO)?;
            let end = HEADER_SIZE + 8 * (header.count as usize).min(entries);
            let devices = buf[HEADER_SIZE..end]
                .chunks_exact(8)
                .map(|e| vfio_pci_dependent_device::read_from_bytes(e).map_err(|_| Errno::EIO))
                .collect::<Result<_, _>>()?;
            return Ok((header.flags, devices));
        }
    }

    fn device_hot_reset(&mut self, dev: DeviceHandle) -> Result<(), Errno> {
        vfio_device::device_pci_hot_reset_cdev(self.device(dev)?.fd.as_fd())
    }

    /// From `<sysfs>/bus/pci/devices/<addr>/iommu_group`.
    fn pci_iommu_group(&self, segment: u16, bus: u8, devfn: u8) -> Option<u32> {
        let addr = format!("{segment:04x}:{bus:02x}:{:02x}.{}", devfn >> 3, devfn & 7);
        let link = std::fs::read_link(self.sysfs.join("bus/pci/devices").join(addr).join("iommu_group")).ok()?;
        link.file_name()?.to_str()?.parse().ok()
    }

    fn kvm_file_open(&mut self, device: &GroupDevice) -> Result<KvmFile, Errno> {
        let cdev = device.cdev.as_deref().ok_or(Errno::ENODEV)?;
        let fd = open_rw(Path::new(cdev))?;
        let file = KvmFile(self.handle());
        self.kvm_files.insert(file, fd);
        Ok(file)
    }

    fn kvm_file_close(&mut self, file: KvmFile) {
        self.kvm_files.remove(&file);
    }

    fn kvm_device_file(&mut self, kvm_device: i32, file: KvmFile, add: bool) -> Result<(), Errno> {
        use vfio_shim::abi::{kvm_device_attr, KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, KVM_DEV_VFIO_FILE_DEL};
        let cdev: i32 = self.kvm_files.get(&file).ok_or(Errno::EBADF)?.as_raw_fd();
        let attr = kvm_device_attr {
            flags: 0,
            group: KVM_DEV_VFIO_FILE,
            attr: if add { KVM_DEV_VFIO_FILE_ADD } else { KVM_DEV_VFIO_FILE_DEL },
            addr: &cdev as *const i32 as u64,
        };
        // SAFETY: `kvm_device` is the program's fd of KVM's VFIO device, open for the call the
        // program is making (the Backend contract).
        let kvm_device = unsafe { BorrowedFd::borrow_raw(kvm_device) };
        crate::kvm::set_device_attr(kvm_device, &attr)
    }

    fn device_mapped(&mut self, dev: DeviceHandle) -> Result<bool, Errno> {
        region_mapped(&self.device(dev)?.cdev)
    }

    fn device_held_elsewhere(&mut self, dev: DeviceHandle) -> Result<bool, Errno> {
        crate::procfs::held_by_another_process(Path::new(&self.device(dev)?.cdev))
    }

    fn device_reopen(&mut self, dev: DeviceHandle) -> Result<(), Errno> {
        let d = self.device(dev)?;
        let (ctx, _) = d.bound.ok_or(Errno::EINVAL)?;
        let ioas = d.attached;
        // A mapping of a region holds the file: type1 does not close the device then either.
        if !d.released && region_mapped(&d.cdev)? {
            return Err(Errno::EBUSY);
        }
        let cdev = PathBuf::from(&d.cdev);
        let fresh = match self.open_object(&cdev) {
            Ok(fd) => fd,
            Err(e) => {
                // The last close still happens (vfio-pci quiesces and resets the device when its
                // file goes, as type1's close_device): the old file is replaced by an inert one
                // and the next reopen binds afresh.
                let inert = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
                let d = self.devices.get_mut(&dev).expect("checked");
                d.fd = inert;
                d.released = true;
                return Err(e);
            }
        };
        let iommufd = self.iommufd(ctx)?.try_clone_to_owned().map_err(|e| errno_of(&e))?;
        // The old file goes first (its release is close_device): a cdev binds only once.
        let d = self.devices.get_mut(&dev).expect("checked");
        recorded_close(Path::new(&d.cdev));
        d.fd = fresh;
        d.released = false;
        d.bound = None;
        d.attached = None;
        let dev_id = vfio_device::device_bind_iommufd(d.fd.as_fd(), iommufd.as_fd())?;
        d.bound = Some((ctx, dev_id));
        if let Some(ioas) = ioas {
            vfio_device::device_attach_iommufd_pt(d.fd.as_fd(), ioas.0)?;
            d.attached = Some(ioas);
        }
        Ok(())
    }
}

/// `IOMMU_IOAS_MAP` flags for a type1 protection: a fixed IOVA, readable and writable as asked.
fn map_flags(prot: Prot) -> u32 {
    let mut flags = iommufd::IOMMU_IOAS_MAP_FIXED_IOVA;
    if prot.read {
        flags |= iommufd::IOMMU_IOAS_MAP_READABLE;
    }
    if prot.write {
        flags |= iommufd::IOMMU_IOAS_MAP_WRITEABLE;
    }
    flags
}

/// A map of this process's memory or an unmap, run on a shared reference to the iommufd:
/// the glue runs it without its lock, and the file stays open until it is done even if the
/// container goes meanwhile.
pub struct KernelDetached {
    iommufd: Arc<OwnedFd>,
    ioas: IoasId,
    op: DmaOp,
    /// A CUSE caller's map: the file behind its shared memory, and the offset of `vaddr` in it.
    backing: Option<(Arc<OwnedFd>, u64)>,
}

impl DetachedDma for KernelDetached {
    fn run(&self) -> Result<u64, Errno> {
        let fd = self.iommufd.as_fd();
        match self.op {
            DmaOp::Map { iova, length, prot, .. } if self.backing.is_some() => {
                let (file, offset) = self.backing.as_ref().expect("checked");
                // SAFETY: the pages behind the CUSE caller's own `vaddr`, which it asked to map.
                unsafe { iommufd::ioas_map_file(fd, self.ioas.0, map_flags(prot), file.as_fd(), *offset, length, iova) }
                    .map(|_| 0)
            }
            DmaOp::Map { iova, vaddr, length, prot } => {
                // SAFETY: `vaddr` is memory the application asked to map (the Backend contract,
                // which DetachedDma::run carries over).
                unsafe { iommufd::ioas_map(fd, self.ioas.0, map_flags(prot), vaddr, length, iova) }.map(|_| 0)
            }
            DmaOp::Unmap { iova, length } => iommufd::ioas_unmap(fd, self.ioas.0, iova, length),
        }
    }
}

/// Whether this process maps any region of the device file at `path` (`/proc/self/maps`
/// names the file of every shared mapping).
fn region_mapped(path: &str) -> Result<bool, Errno> {
    let maps = fs::read_to_string("/proc/self/maps").map_err(|e| errno_of(&e))?;
    Ok(maps.lines().any(|l| l.split_whitespace().nth(5) == Some(path)))
}

/// `EBADF` unless `fd` is an open of the character device at `path`.
fn same_char_device(fd: BorrowedFd<'_>, path: &Path) -> Result<(), Errno> {
    use nix::sys::stat::{fstat, stat, SFlag};
    let (theirs, node) = (fstat(fd)?, stat(path)?);
    let is_chr = |st: &libc::stat| st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFCHR.bits();
    if !is_chr(&theirs) || !is_chr(&node) || theirs.st_rdev != node.st_rdev {
        return Err(Errno::EBADF);
    }
    Ok(())
}

/// `open(path, O_RDWR | O_CLOEXEC)` of an iommufd or a VFIO cdev, recorded for the trace.
fn open_rw(path: &Path) -> Result<OwnedFd, Errno> {
    let fd = open(path, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty());
    crate::native_trace::record(
        || format!("open({})", path.display()),
        fd.as_ref().map(|f| f.as_raw_fd() as i64).map_err(|e| *e),
    );
    fd
}

/// Records the close of such a file: the caller drops its last fd.
fn recorded_close(path: &Path) {
    crate::native_trace::record(|| format!("close({})", path.display()), Ok(0));
}

/// Basename of `<dev>/driver` (a sysfs device directory): `None` when no driver is bound (no
/// link), an error when the link cannot be read. An unreadable link is not "no driver": a
/// group would then look viable with a device still on a kernel driver.
pub fn driver_name(dev: &Path) -> Result<Option<String>, Errno> {
    match fs::read_link(dev.join("driver")) {
        Ok(target) => Ok(Some(target.file_name().ok_or(Errno::EIO)?.to_string_lossy().into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(errno_of(&e)),
    }
}

/// The `vfioN` (or, in no-IOMMU mode, `noiommu-vfioN`) entry of `<dev>/vfio-dev/`, present
/// while a VFIO driver with cdev support is bound.
pub fn vfio_cdev(dev: &Path) -> Option<String> {
    let mut names: Vec<String> = fs::read_dir(dev.join("vfio-dev"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("vfio") || n.starts_with("noiommu-vfio"))
        .collect();
    names.sort();
    names.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_floor_matches_type1() {
        assert_eq!(type1_page_floor(0x4020_1000, 4096), 0x4020_1000);
        // An IOMMU with 1K pages still reports PAGE_SIZE as its smallest.
        assert_eq!(type1_page_floor(0x4020_1400, 4096), 0x4020_1000);
    }

    #[test]
    fn alignment_fallback() {
        assert_eq!(pgsizes_from_alignment(4096, 4096), 0xffff_ffff_ffff_f000);
        // A fresh IOAS says alignment 1: still no sub-page sizes.
        assert_eq!(pgsizes_from_alignment(1, 4096), 0xffff_ffff_ffff_f000);
        assert_eq!(pgsizes_from_alignment(1 << 16, 4096), 0xffff_ffff_ffff_0000);
    }
}
