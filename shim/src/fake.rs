//! An in-memory backend modelling iommufd's IOAS rules, for fast host tests and benchmarks.
//!
//! It reproduces what the translator depends on (IO = iommufd/ioas.c,
//! IOPT = iommufd/io_pagetable.c): an IOAS allows every IOVA until a device is attached, then
//! only the domain aperture minus reserved regions; maps need the IOVA alignment, must not
//! touch reserved IOVA (`EINVAL`) nor an existing area (`EEXIST`); unmaps must not split an
//! area (`ENOENT`) and unmapping nothing is `ENOENT` (but 0 for the unmap-all form). Any call can be made to fail once with
//! a chosen errno, and every call is counted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use nix::errno::Errno;

use crate::backend::*;
use crate::hot_reset::vfio_pci_dependent_device;

/// The operations of [`Backend`], for failure injection and call counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    IommufdOpen,
    IoasAlloc,
    IoasDestroy,
    IoasGeometry,
    IoasMap,
    IoasUnmap,
    IoasPgsizes,
    IoasCoherency,
    GroupDevices,
    GroupClaim,
    DeviceOpen,
    DeviceBind,
    DeviceAttach,
    DeviceDetach,
    DeviceReopen,
    DeviceHeldElsewhere,
    KvmFileOpen,
    KvmDeviceFile,
    DeviceHotReset,
}

/// A PCI function's address: segment, bus, devfn.
pub type PciAddress = (u16, u8, u8);

/// Whether the kernel could pin `(vaddr, length, writable)` of the caller's memory.
pub type PinModel = fn(u64, u64, bool) -> Result<(), Errno>;

/// The emulated platform: what an attached domain looks like.
#[derive(Clone, Debug)]
pub struct Platform {
    /// The domain aperture, inclusive.
    pub aperture: IovaRange,
    /// Reserved regions every attached device brings (the x86 MSI window by default).
    pub reserved: Vec<IovaRange>,
    pub pgsizes: u64,
    pub coherent: bool,
    /// How the kernel's pin of the caller's memory at IOMMU_IOAS_MAP fares (`vaddr`, `length`,
    /// writable): the pin runs once a domain is attached, after every IOVA check, and its
    /// error (`EFAULT`) is the map's. `None`: every pin succeeds.
    pub pin: Option<PinModel>,
}

impl Platform {
    /// What the test VM's type1 container shows (QEMU intel-iommu with aw-bits=48, as vm.sh
    /// boots it; recorded in compat-tests/explorer/golden): a 48-bit aperture less the x86
    /// MSI window, 4K/2M/1G pages, and no snoop control, so CHECK_EXTENSION(VFIO_DMA_CC_IOMMU)
    /// is 0. Every pin succeeds until `pin` is set.
    pub fn test_vm() -> Self {
        Self { aperture: IovaRange { start: 0, last: (1 << 48) - 1 }, coherent: false, ..Self::default() }
    }
}

impl Default for Platform {
    /// VT-d hardware with a 39-bit aperture and snoop control (cache-coherent DMA), which the
    /// test VM cannot show: host tests of the paths that depend on them use it.
    fn default() -> Self {
        Self {
            aperture: IovaRange { start: 0, last: (1 << 39) - 1 },
            reserved: vec![IovaRange { start: 0xfee0_0000, last: 0xfeef_ffff }],
            pgsizes: 0x4020_1000,
            coherent: true,
            pin: None,
        }
    }
}

#[derive(Debug, Default)]
struct Ioas {
    /// iova -> length of each mapped area.
    areas: BTreeMap<u64, u64>,
    attached: usize,
}

#[derive(Debug, Default)]
struct Ctx {
    ioas: HashMap<u32, Ioas>,
    next_obj: u32,
}

#[derive(Debug)]
struct Device {
    name: String,
    bound: Option<IommufdId>,
    attached: Option<IoasId>,
    /// Times the device went through close_device/open_device (`device_reopen`).
    reopens: u64,
    /// A region of the device is mmapped (`set_device_mapped`).
    mapped: bool,
    /// Another process holds the device's file (`set_device_held_elsewhere`).
    held_elsewhere: bool,
    /// Its cdev is a no-IOMMU one (`noiommu-vfioN`), which opens only with CAP_SYS_RAWIO.
    noiommu: bool,
    /// Closed at a last close whose reopen was refused; bound again by the next reopen.
    released: bool,
}

#[derive(Debug, Default)]
pub struct FakeBackend {
    pub platform: Platform,
    groups: BTreeMap<u32, Vec<GroupDevice>>,
    ctxs: HashMap<u64, Ctx>,
    devices: HashMap<u64, Device>,
    next_handle: u64,
    failures: HashMap<Op, Vec<(usize, Errno)>>,
    calls: HashMap<Op, usize>,
    /// Groups claimed by this opener, and by others (`claim_elsewhere`).
    claims: BTreeMap<u32, bool>,
    /// No-IOMMU groups (`with_noiommu_group`) and their claims, kept apart as the kernel
    /// names them apart (`/dev/vfio/noiommu-<N>`).
    noiommu_groups: BTreeMap<u32, Vec<GroupDevice>>,
    noiommu_claims: BTreeMap<u32, bool>,
    /// `vfio.enable_unsafe_noiommu_mode` (`set_noiommu_mode`).
    noiommu_mode: bool,
    /// The caller lacks CAP_SYS_RAWIO (`set_rawio`).
    no_rawio: bool,
    /// No-IOMMU devices handed out, by name (`noiommu_opens`).
    noiommu_opens: Vec<String>,
    /// KVM VFIO device fd -> the files added to it (KVM file handle -> device name).
    kvm_files: HashMap<i32, BTreeMap<u64, String>>,
    /// KVM files open (`kvm_file_open`): handle -> device name.
    kvm_opened: HashMap<u64, String>,
    /// Hot reset topology: a device name -> the PCI addresses (segment, bus, devfn) a reset of
    /// it touches; absent: neither a slot nor a bus reset is possible (ENODEV).
    reset_scopes: HashMap<String, Vec<PciAddress>>,
    /// PCI address -> IOMMU group.
    pci_groups: HashMap<PciAddress, u32>,
    /// Hot resets issued, by device name.
    hot_resets: Vec<String>,
    /// Another process's memory lent for the maps of one call (`lend_caller_memory`).
    caller_memory: Option<CallerMemory>,
    /// Detaches DMA calls when set (`detach_dma_through`).
    detach_hook: Option<DetachHook>,
}

/// Whether the kernel could pin `(vaddr, length, writable)` of a CUSE caller's memory, which
/// the daemon resolves before the map's IOVA checks (the kernel backend's `MemoryOwner`).
pub struct CallerMemory(pub Box<dyn Fn(u64, u64, bool) -> Result<(), Errno> + Send>);

impl std::fmt::Debug for CallerMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallerMemory")
    }
}

/// What a detached call runs in place of the kernel's: tests block in it to hold a container's
/// call in flight.
#[derive(Clone)]
pub struct DetachHook(pub Arc<dyn Fn(DmaOp) + Send + Sync>);

impl std::fmt::Debug for DetachHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DetachHook")
    }
}

/// A detached call of the fake: the hook runs without the backend; the IOAS bookkeeping (and
/// so the call's errno) comes in `complete_dma`.
pub struct FakeDetached {
    hook: DetachHook,
    op: DmaOp,
}

impl DetachedDma for FakeDetached {
    fn run(&self) -> Result<u64, Errno> {
        (self.hook.0)(self.op);
        Ok(0)
    }
}

impl FakeBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds IOMMU group `number` with VFIO-bound PCI devices named `devices`.
    pub fn with_group(mut self, number: u32, devices: &[&str]) -> Self {
        let list = devices
            .iter()
            .enumerate()
            .map(|(n, name)| GroupDevice {
                name: name.to_string(),
                driver: Some("vfio-pci".into()),
                cdev: Some(format!("/dev/vfio/devices/vfio{}", number * 16 + n as u32)),
                sriov: false,
            })
            .collect();
        self.groups.insert(number, list);
        self
    }

    /// Adds no-IOMMU group `number` (`/dev/vfio/noiommu-<number>`) with one VFIO-bound device,
    /// and turns the unsafe no-IOMMU mode on, as a kernel that has such groups.
    pub fn with_noiommu_group(mut self, number: u32, device: &str) -> Self {
        let d = GroupDevice {
            name: device.to_string(),
            driver: Some("vfio-pci".into()),
            cdev: Some(format!("/dev/vfio/devices/noiommu-vfio{number}")),
            sriov: false,
        };
        self.noiommu_groups.insert(number, vec![d]);
        self.noiommu_mode = true;
        self
    }

    /// `vfio.enable_unsafe_noiommu_mode` as the kernel would read it now.
    pub fn set_noiommu_mode(&mut self, on: bool) {
        self.noiommu_mode = on;
    }

    /// Whether the caller has CAP_SYS_RAWIO in its effective set (it has by default).
    pub fn set_rawio(&mut self, has: bool) {
        self.no_rawio = !has;
    }

    /// The no-IOMMU devices handed out so far, by name: each one warned about.
    pub fn noiommu_opens(&self) -> &[String] {
        &self.noiommu_opens
    }

    /// Whether this opener holds a claim on no-IOMMU group `number`.
    pub fn noiommu_claimed(&self, number: u32) -> bool {
        self.noiommu_claims.get(&number) == Some(&true)
    }

    /// Adds a group with arbitrary device descriptions (kernel drivers, no cdev, ...).
    pub fn with_group_devices(mut self, number: u32, devices: Vec<GroupDevice>) -> Self {
        self.set_group_devices(number, devices);
        self
    }

    /// Replaces group `number`'s devices, as sysfs shows them after a driver bind or unbind.
    pub fn set_group_devices(&mut self, number: u32, devices: Vec<GroupDevice>) {
        self.groups.insert(number, devices);
    }

    /// Makes the `nth` (0-based, counted from now) call of `op` fail with `errno`.
    pub fn fail_at(&mut self, op: Op, nth: usize, errno: Errno) {
        let base = self.calls.get(&op).copied().unwrap_or(0);
        self.failures.entry(op).or_default().push((base + nth, errno));
    }

    /// Another process holds group `number` open (`true`), or no longer (`false`).
    pub fn claim_elsewhere(&mut self, number: u32, held: bool) {
        if held {
            self.claims.insert(number, false);
        } else if self.claims.get(&number) == Some(&false) {
            self.claims.remove(&number);
        }
    }

    /// Whether this opener holds a claim on group `number`.
    pub fn claimed(&self, number: u32) -> bool {
        self.claims.get(&number) == Some(&true)
    }

    /// How many times `op` was called.
    pub fn calls(&self, op: Op) -> usize {
        self.calls.get(&op).copied().unwrap_or(0)
    }

    /// Areas mapped in an IOAS, as (iova, length).
    pub fn areas(&self, ctx: IommufdId, ioas: IoasId) -> Vec<(u64, u64)> {
        self.ctxs[&ctx.0].ioas[&ioas.0].areas.iter().map(|(a, l)| (*a, *l)).collect()
    }

    /// How many times the named device was closed and opened again by `device_reopen`.
    /// A bus reset of device `name` resets the devices at `scope` (segment, bus, devfn, with
    /// each one's IOMMU group).
    pub fn set_reset_scope(&mut self, name: &str, scope: &[(PciAddress, Option<u32>)]) {
        self.reset_scopes.insert(name.to_string(), scope.iter().map(|(a, _)| *a).collect());
        for (addr, group) in scope {
            match group {
                Some(g) => self.pci_groups.insert(*addr, *g),
                None => self.pci_groups.remove(addr),
            };
        }
    }

    /// The hot resets issued so far, by device name.
    pub fn hot_resets(&self) -> &[String] {
        &self.hot_resets
    }

    /// The device files KVM's VFIO device `kvm_device` holds, by device name.
    pub fn kvm_files(&self, kvm_device: i32) -> Vec<String> {
        self.kvm_files.get(&kvm_device).map(|s| s.values().cloned().collect()).unwrap_or_default()
    }

    /// The KVM files open (`kvm_file_open`, not yet closed).
    pub fn kvm_files_open(&self) -> usize {
        self.kvm_opened.len()
    }

    pub fn device_reopens(&self, name: &str) -> u64 {
        self.devices.values().filter(|d| d.name == name).map(|d| d.reopens).sum()
    }

    /// Models an mmap (true) or munmap (false) of a region of the named device.
    pub fn set_device_mapped(&mut self, name: &str, mapped: bool) {
        self.devices.values_mut().filter(|d| d.name == name).for_each(|d| d.mapped = mapped);
    }

    /// Models another process holding (true) or dropping (false) the named device's file.
    pub fn set_device_held_elsewhere(&mut self, name: &str, held: bool) {
        self.devices.values_mut().filter(|d| d.name == name).for_each(|d| d.held_elsewhere = held);
    }

    /// Live iommufd contexts and device handles (leak checks).
    pub fn live_objects(&self) -> (usize, usize) {
        (self.ctxs.len(), self.devices.len())
    }

    /// Whether a device is bound, and to which IOAS it is attached.
    pub fn device_state(&self, name: &str) -> Option<(bool, Option<IoasId>)> {
        self.devices.values().find(|d| d.name == name).map(|d| (d.bound.is_some(), d.attached))
    }

    /// Maps pin the memory `memory` describes instead of this process's (a CUSE daemon serving
    /// a caller), until set back to `None`.
    pub fn lend_caller_memory(&mut self, memory: Option<CallerMemory>) {
        self.caller_memory = memory;
    }

    /// From now on, DMA calls detach (the glue runs them without the core's lock), running
    /// `hook` in place of the kernel call; `None`: they never detach (the default).
    pub fn detach_dma_through(&mut self, hook: Option<DetachHook>) {
        self.detach_hook = hook;
    }

    fn enter(&mut self, op: Op) -> Result<(), Errno> {
        let n = self.calls.entry(op).or_default();
        let this = *n;
        *n += 1;
        if let Some(list) = self.failures.get_mut(&op) {
            if let Some(pos) = list.iter().position(|(at, _)| *at == this) {
                return Err(list.remove(pos).1);
            }
        }
        Ok(())
    }

    fn ioas(&mut self, ctx: IommufdId, ioas: IoasId) -> Result<&mut Ioas, Errno> {
        self.ctxs.get_mut(&ctx.0).and_then(|c| c.ioas.get_mut(&ioas.0)).ok_or(Errno::ENOENT)
    }

    fn allowed(&self, ioas: &Ioas) -> Vec<IovaRange> {
        allowed_ranges(&self.platform, ioas.attached)
    }
}

/// What IOMMU_IOAS_IOVA_RANGES reports: everything before any attach, then the aperture
/// minus every reserved region.
fn allowed_ranges(platform: &Platform, attached: usize) -> Vec<IovaRange> {
    {
        if attached == 0 {
            return vec![IovaRange { start: 0, last: u64::MAX }];
        }
        let mut ranges = vec![platform.aperture];
        for r in &platform.reserved {
            ranges = ranges
                .into_iter()
                .flat_map(|a| {
                    let mut out = Vec::new();
                    if r.last < a.start || r.start > a.last {
                        out.push(a);
                    } else {
                        if r.start > a.start {
                            out.push(IovaRange { start: a.start, last: r.start - 1 });
                        }
                        if r.last < a.last {
                            out.push(IovaRange { start: r.last + 1, last: a.last });
                        }
                    }
                    out
                })
                .collect();
        }
        ranges
    }
}

/// A claim on `group` by this opener (`true`); `EBUSY` while anyone holds one.
fn claim(claims: &mut BTreeMap<u32, bool>, group: u32) -> Result<(), Errno> {
    if claims.contains_key(&group) {
        return Err(Errno::EBUSY);
    }
    claims.insert(group, true);
    Ok(())
}

/// Drops this opener's claim on `group` (another's stays).
fn release(claims: &mut BTreeMap<u32, bool>, group: u32) {
    if claims.get(&group) == Some(&true) {
        claims.remove(&group);
    }
}

impl Backend for FakeBackend {
    fn iommufd_open(&mut self) -> Result<IommufdId, Errno> {
        self.enter(Op::IommufdOpen)?;
        self.next_handle += 1;
        self.ctxs.insert(self.next_handle, Ctx { next_obj: 1, ..Default::default() });
        Ok(IommufdId(self.next_handle))
    }

    fn iommufd_close(&mut self, ctx: IommufdId) {
        assert!(!self.devices.values().any(|d| d.bound == Some(ctx)), "iommufd closed with devices still bound");
        self.ctxs.remove(&ctx.0);
    }

    fn ioas_alloc(&mut self, ctx: IommufdId) -> Result<IoasId, Errno> {
        self.enter(Op::IoasAlloc)?;
        let c = self.ctxs.get_mut(&ctx.0).ok_or(Errno::EBADF)?;
        let id = c.next_obj;
        c.next_obj += 1;
        c.ioas.insert(id, Ioas::default());
        Ok(IoasId(id))
    }

    fn ioas_destroy(&mut self, ctx: IommufdId, ioas: IoasId) -> Result<(), Errno> {
        self.enter(Op::IoasDestroy)?;
        if self.ioas(ctx, ioas)?.attached > 0 {
            return Err(Errno::EBUSY);
        }
        self.ctxs.get_mut(&ctx.0).expect("checked").ioas.remove(&ioas.0);
        Ok(())
    }

    fn ioas_geometry(&mut self, ctx: IommufdId, ioas: IoasId) -> Result<IoasGeometry, Errno> {
        self.enter(Op::IoasGeometry)?;
        let state = self.ctxs.get(&ctx.0).and_then(|c| c.ioas.get(&ioas.0)).ok_or(Errno::ENOENT)?;
        let align = if state.attached > 0 { 1 << self.platform.pgsizes.trailing_zeros() } else { 1 };
        Ok(IoasGeometry { ranges: self.allowed(state), iova_alignment: align })
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
        self.enter(Op::IoasMap)?;
        if let Some(memory) = &self.caller_memory {
            (memory.0)(vaddr, length, prot.write)?;
        }
        let align = 1u64 << self.platform.pgsizes.trailing_zeros();
        let platform = self.platform.clone();
        let state = self.ioas(ctx, ioas)?;
        let platform_allowed = allowed_ranges(&platform, state.attached);
        if length == 0 {
            return Err(Errno::EINVAL);
        }
        if state.attached > 0 && (iova | length) & (align - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        let last = iova.checked_add(length - 1).ok_or(Errno::EOVERFLOW)?;
        if !platform_allowed.iter().any(|r| iova >= r.start && last <= r.last) {
            return Err(Errno::EINVAL);
        }
        let overlaps = state.areas.range(..=last).next_back().is_some_and(|(a, l)| a + (l - 1) >= iova);
        if overlaps {
            return Err(Errno::EEXIST);
        }
        if let (Some(pin), true) = (platform.pin, state.attached > 0) {
            pin(vaddr, length, prot.write)?;
        }
        state.areas.insert(iova, length);
        Ok(())
    }

    fn ioas_unmap(&mut self, ctx: IommufdId, ioas: IoasId, iova: u64, length: u64) -> Result<u64, Errno> {
        self.enter(Op::IoasUnmap)?;
        let state = self.ioas(ctx, ioas)?;
        let last = if iova == 0 && length == u64::MAX {
            u64::MAX
        } else {
            if length == 0 {
                return Err(Errno::EINVAL);
            }
            iova.checked_add(length - 1).ok_or(Errno::EOVERFLOW)?
        };
        let all = iova == 0 && length == u64::MAX;
        // The area containing `iova` (if it starts below) plus every area starting inside.
        let below = state.areas.range(..iova).next_back().filter(|(a, l)| *a + (*l - 1) >= iova);
        let hit: Vec<(u64, u64)> =
            below.into_iter().chain(state.areas.range(iova..=last)).map(|(a, l)| (*a, *l)).collect();
        if hit.iter().any(|(a, l)| *a < iova || a + (l - 1) > last) {
            return Err(Errno::ENOENT);
        }
        // Unmapping nothing: ENOENT, except for the unmap-all form (IO:351-367).
        if hit.is_empty() {
            return if all { Ok(0) } else { Err(Errno::ENOENT) };
        }
        let mut total = 0;
        for (a, l) in hit {
            state.areas.remove(&a);
            total += l;
        }
        Ok(total)
    }

    fn ioas_pgsizes(&mut self, ctx: IommufdId, ioas: IoasId) -> Result<u64, Errno> {
        self.enter(Op::IoasPgsizes)?;
        self.ioas(ctx, ioas)?;
        Ok(self.platform.pgsizes)
    }

    fn ioas_enforces_coherency(&mut self, ctx: IommufdId, ioas: IoasId) -> Result<bool, Errno> {
        self.enter(Op::IoasCoherency)?;
        let attached = self.ioas(ctx, ioas)?.attached;
        Ok(attached > 0 && self.platform.coherent)
    }

    fn group_devices(&mut self, group: u32) -> Result<Vec<GroupDevice>, Errno> {
        self.enter(Op::GroupDevices)?;
        self.groups.get(&group).cloned().ok_or(Errno::ENOENT)
    }

    fn noiommu_mode(&mut self) -> bool {
        self.noiommu_mode
    }

    fn noiommu_group_devices(&mut self, group: u32) -> Result<Vec<GroupDevice>, Errno> {
        self.enter(Op::GroupDevices)?;
        self.noiommu_groups.get(&group).cloned().ok_or(Errno::ENOENT)
    }

    fn noiommu_group_claim(&mut self, group: u32) -> Result<(), Errno> {
        self.enter(Op::GroupClaim)?;
        claim(&mut self.noiommu_claims, group)
    }

    fn noiommu_group_release(&mut self, group: u32) {
        release(&mut self.noiommu_claims, group);
    }

    fn caller_has_rawio(&mut self) -> bool {
        !self.no_rawio
    }

    fn noiommu_device_opened(&mut self, name: &str) {
        self.noiommu_opens.push(name.to_string());
    }

    fn group_claim(&mut self, group: u32) -> Result<(), Errno> {
        self.enter(Op::GroupClaim)?;
        claim(&mut self.claims, group)
    }

    fn group_release(&mut self, group: u32) {
        release(&mut self.claims, group);
    }

    fn device_open(&mut self, device: &GroupDevice) -> Result<DeviceHandle, Errno> {
        self.enter(Op::DeviceOpen)?;
        if device.cdev.is_none() {
            return Err(Errno::ENODEV);
        }
        // device_cdev.c: a no-IOMMU cdev opens only with CAP_SYS_RAWIO.
        if self.no_rawio && device.cdev.as_deref().is_some_and(|c| c.contains("/noiommu-")) {
            return Err(Errno::EPERM);
        }
        if self.devices.values().any(|d| d.name == device.name) {
            // A cdev can be bound once; a second open would fail at bind. Model it here.
            return Err(Errno::EBUSY);
        }
        self.next_handle += 1;
        self.devices.insert(
            self.next_handle,
            Device {
                name: device.name.clone(),
                bound: None,
                attached: None,
                reopens: 0,
                mapped: false,
                held_elsewhere: false,
                noiommu: device.cdev.as_deref().is_some_and(|c| c.contains("/noiommu-")),
                released: false,
            },
        );
        Ok(DeviceHandle(self.next_handle))
    }

    fn device_bind(&mut self, dev: DeviceHandle, ctx: IommufdId) -> Result<(), Errno> {
        self.enter(Op::DeviceBind)?;
        if !self.ctxs.contains_key(&ctx.0) {
            return Err(Errno::EBADF);
        }
        let d = self.devices.get_mut(&dev.0).ok_or(Errno::EBADF)?;
        if d.bound.is_some() {
            return Err(Errno::EINVAL);
        }
        d.bound = Some(ctx);
        Ok(())
    }

    fn device_attach(&mut self, dev: DeviceHandle, ioas: IoasId) -> Result<(), Errno> {
        self.enter(Op::DeviceAttach)?;
        let d = self.devices.get(&dev.0).ok_or(Errno::EBADF)?;
        let ctx = d.bound.ok_or(Errno::EINVAL)?;
        if d.attached.is_some() {
            return Err(Errno::EBUSY);
        }
        // Existing areas must fit the domain (DV: -EADDRINUSE / -EINVAL on conflict).
        let platform = self.platform.clone();
        let state = self.ioas(ctx, ioas)?;
        let allowed_after = allowed_ranges(&platform, state.attached + 1);
        let fits =
            state.areas.iter().all(|(a, l)| allowed_after.iter().any(|r| *a >= r.start && a + (l - 1) <= r.last));
        if !fits {
            return Err(Errno::EADDRINUSE);
        }
        state.attached += 1;
        self.devices.get_mut(&dev.0).expect("checked").attached = Some(ioas);
        Ok(())
    }

    fn device_detach(&mut self, dev: DeviceHandle) -> Result<(), Errno> {
        self.enter(Op::DeviceDetach)?;
        let d = self.devices.get_mut(&dev.0).ok_or(Errno::EBADF)?;
        let ctx = d.bound.ok_or(Errno::EINVAL)?;
        let ioas = d.attached.take().ok_or(Errno::EINVAL)?;
        self.ioas(ctx, ioas)?.attached -= 1;
        Ok(())
    }

    fn device_mapped(&mut self, dev: DeviceHandle) -> Result<bool, Errno> {
        Ok(self.devices.get(&dev.0).ok_or(Errno::EBADF)?.mapped)
    }

    type Detached = FakeDetached;

    /// Only with a hook; a caller's map whose memory cannot be pinned stays with `ioas_map`,
    /// which answers the errno, as the kernel backend does.
    fn detach_dma(&mut self, _ctx: IommufdId, _ioas: IoasId, op: DmaOp) -> Option<FakeDetached> {
        let hook = self.detach_hook.clone()?;
        if let (DmaOp::Map { vaddr, length, prot, .. }, Some(memory)) = (op, &self.caller_memory) {
            (memory.0)(vaddr, length, prot.write).ok()?;
        }
        Some(FakeDetached { hook, op })
    }

    fn complete_dma(&mut self, ctx: IommufdId, ioas: IoasId, op: DmaOp, ran: Result<u64, Errno>) -> Result<u64, Errno> {
        ran?;
        let lent = self.caller_memory.take(); // checked at detach time
        let done = match op {
            DmaOp::Map { iova, vaddr, length, prot } => self.ioas_map(ctx, ioas, iova, vaddr, length, prot).map(|()| 0),
            DmaOp::Unmap { iova, length } => self.ioas_unmap(ctx, ioas, iova, length),
        };
        self.caller_memory = lent;
        done
    }

    fn device_held_elsewhere(&mut self, dev: DeviceHandle) -> Result<bool, Errno> {
        self.enter(Op::DeviceHeldElsewhere)?;
        Ok(self.devices.get(&dev.0).ok_or(Errno::EBADF)?.held_elsewhere)
    }

    fn device_reopen(&mut self, dev: DeviceHandle) -> Result<(), Errno> {
        self.enter(Op::DeviceReopen)?;
        let d = self.devices.get_mut(&dev.0).ok_or(Errno::EBADF)?;
        d.bound.ok_or(Errno::EINVAL)?;
        if d.held_elsewhere {
            // Our file goes, theirs stays bound: the fresh open cannot bind (vfio_df_open).
            d.bound = None;
            return Err(Errno::EINVAL);
        }
        if d.mapped && !d.released {
            // A cdev binds once: the old file lives on in the mapping.
            return Err(Errno::EBUSY);
        }
        if d.noiommu && self.no_rawio {
            // The old file is closed all the same (the kernel backend's inert file); the new one
            // is refused (device_cdev.c).
            d.released = true;
            return Err(Errno::EPERM);
        }
        if !d.released {
            d.reopens += 1;
        }
        d.released = false;
        Ok(())
    }

    fn device_hot_reset_info(&mut self, dev: DeviceHandle) -> Result<(u32, Vec<vfio_pci_dependent_device>), Errno> {
        use crate::hot_reset::{VFIO_PCI_HOT_RESET_FLAG_DEV_ID, VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED};
        let name = &self.devices.get(&dev.0).ok_or(Errno::EBADF)?.name;
        let scope = self.reset_scopes.get(name).ok_or(Errno::ENODEV)?;
        // The cdev form: dev ids (this model numbers them from 1 in scope order).
        let devices = scope
            .iter()
            .enumerate()
            .map(|(n, &(segment, bus, devfn))| vfio_pci_dependent_device { id: n as u32 + 1, segment, bus, devfn })
            .collect();
        Ok((VFIO_PCI_HOT_RESET_FLAG_DEV_ID | VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED, devices))
    }

    fn device_hot_reset(&mut self, dev: DeviceHandle) -> Result<(), Errno> {
        self.enter(Op::DeviceHotReset)?;
        let name = self.devices.get(&dev.0).ok_or(Errno::EBADF)?.name.clone();
        self.reset_scopes.get(&name).ok_or(Errno::ENODEV)?;
        self.hot_resets.push(name);
        Ok(())
    }

    fn pci_iommu_group(&self, segment: u16, bus: u8, devfn: u8) -> Option<u32> {
        self.pci_groups.get(&(segment, bus, devfn)).copied()
    }

    fn kvm_file_open(&mut self, device: &GroupDevice) -> Result<KvmFile, Errno> {
        self.enter(Op::KvmFileOpen)?;
        if device.cdev.is_none() {
            return Err(Errno::ENODEV);
        }
        self.next_handle += 1;
        self.kvm_opened.insert(self.next_handle, device.name.clone());
        Ok(KvmFile(self.next_handle))
    }

    fn kvm_file_close(&mut self, file: KvmFile) {
        self.kvm_opened.remove(&file.0);
    }

    fn kvm_device_file(&mut self, kvm_device: i32, file: KvmFile, add: bool) -> Result<(), Errno> {
        self.enter(Op::KvmDeviceFile)?;
        let name = self.kvm_opened.get(&file.0).ok_or(Errno::EBADF)?.clone();
        let files = self.kvm_files.entry(kvm_device).or_default();
        // kvm_vfio_file_add / kvm_vfio_file_del (virt/kvm/vfio.c): by file, not by device.
        let changed = if add { files.insert(file.0, name).is_none() } else { files.remove(&file.0).is_some() };
        match (changed, add) {
            (true, _) => Ok(()),
            (false, true) => Err(Errno::EEXIST),
            (false, false) => Err(Errno::ENOENT),
        }
    }

    fn device_close(&mut self, dev: DeviceHandle) {
        if let Some(d) = self.devices.remove(&dev.0) {
            if let (Some(ctx), Some(ioas)) = (d.bound, d.attached) {
                if let Ok(state) = self.ioas(ctx, ioas) {
                    state.attached -= 1;
                }
            }
        }
    }
}
