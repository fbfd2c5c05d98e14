//! KernelBackend against a real kernel: needs `/dev/iommu` and QEMU's edu device
//! (1234:11e8) bound to vfio-pci, its PCI address in `VFIO_TEST_EDU`. Every test is
//! `#[ignore]`d so a host `cargo test` lists them as not run; the VM tier runs them with
//! `--ignored` inside the guest, where a missing device fails them loudly.

use std::ffi::c_void;
use std::fs;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use vfio_shim::backend::{Backend, DeviceHandle, IoasId, IommufdId, Prot};
use vfio_shim_sys::KernelBackend;
use vfio_shim_sys::{iommufd, vfio_device};

const SZ_2M: u64 = 2 << 20;
const MAP_IOVA: u64 = 0x10_0000;
/// The x86 interrupt window every x86 IOMMU reserves (IOMMU_RESV_MSI).
const MSI_START: u64 = 0xfee0_0000;
const MSI_LAST: u64 = 0xfeef_ffff;
const RW: Prot = Prot { read: true, write: true };

/// A cdev opens once at a time: tests that use the device take turns.
static DEVICE: Mutex<()> = Mutex::new(());

/// The edu device's PCI address and IOMMU group.
fn edu() -> (String, u32) {
    let bdf = std::env::var("VFIO_TEST_EDU").ok();
    let missing = if !Path::new("/dev/iommu").exists() {
        Some("/dev/iommu does not exist")
    } else if bdf.is_none() {
        Some("VFIO_TEST_EDU (PCI address of QEMU's edu device bound to vfio-pci) is unset")
    } else {
        None
    };
    if let Some(why) = missing {
        panic!("kernel_backend needs a real kernel with iommufd: {why}. Run it in the VM tier.");
    }
    let bdf = bdf.unwrap();
    let sys = Path::new("/sys/bus/pci/devices").join(&bdf);
    let id = |f: &str| fs::read_to_string(sys.join(f)).map(|s| s.trim().to_owned());
    assert_eq!(
        (id("vendor").ok().as_deref(), id("device").ok().as_deref()),
        (Some("0x1234"), Some("0x11e8")),
        "VFIO_TEST_EDU={bdf} is not QEMU's edu device"
    );
    let link = fs::read_link(sys.join("iommu_group")).unwrap_or_else(|e| panic!("{bdf} has no iommu_group: {e}"));
    let group = link.file_name().unwrap().to_str().unwrap().parse().unwrap();
    (bdf, group)
}

/// An IOAS with the edu device bound and attached; torn down on drop.
struct Fixture {
    be: KernelBackend,
    ctx: IommufdId,
    ioas: IoasId,
    dev: DeviceHandle,
    attached: bool,
    open: bool,
    ioas_alive: bool,
    _turn: MutexGuard<'static, ()>,
}

impl Fixture {
    fn new() -> Self {
        let turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
        let (bdf, group) = edu();
        let mut be = KernelBackend::new();
        let ctx = be.iommufd_open().expect("open /dev/iommu");
        let ioas = be.ioas_alloc(ctx).expect("IOMMU_IOAS_ALLOC");
        let devices = be.group_devices(group).expect("group_devices");
        let edu = devices.iter().find(|d| d.name == bdf).expect("edu in its own group");
        let dev = be.device_open(edu).expect("open the edu cdev");
        be.device_bind(dev, ctx).expect("VFIO_DEVICE_BIND_IOMMUFD");
        be.device_attach(dev, ioas).expect("VFIO_DEVICE_ATTACH_IOMMUFD_PT");
        Fixture { be, ctx, ioas, dev, attached: true, open: true, ioas_alive: true, _turn: turn }
    }

    fn iommufd(&self) -> BorrowedFd<'_> {
        let fd = self.be.iommufd_raw_fd(self.ctx).unwrap();
        // SAFETY: the backend owns this fd until `iommufd_close`, which only Drop calls,
        // and the borrow cannot outlive `self`.
        unsafe { BorrowedFd::borrow_raw(fd) }
    }

    fn dev_id(&self) -> u32 {
        self.be.device_dev_id(self.dev).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if self.attached {
            let _ = self.be.device_detach(self.dev);
        }
        if self.open {
            self.be.device_close(self.dev);
        }
        if self.ioas_alive {
            let _ = self.be.ioas_destroy(self.ctx, self.ioas);
        }
        self.be.iommufd_close(self.ctx);
    }
}

/// Anonymous private memory, unmapped on drop.
struct Buffer(NonNull<c_void>, usize);

impl Buffer {
    fn new(len: u64) -> Self {
        let len = len as usize;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing
        // aliases nothing.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                NonZeroUsize::new(len).unwrap(),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .expect("mmap");
        Buffer(ptr, len)
    }

    fn vaddr(&self) -> u64 {
        self.0.as_ptr() as u64
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: `self.0` is the start of a `self.1`-byte mapping made in `new` that
        // nothing else references.
        let _ = unsafe { munmap(self.0, self.1) };
    }
}

#[test]
#[ignore = "needs a real kernel: the VM tier runs it (compat-tests/scripts/vm-tier.sh)"]
fn group_lists_edu_on_vfio_pci_with_cdev() {
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let (bdf, group) = edu();
    let devices = KernelBackend::new().group_devices(group).unwrap();
    let edu = devices.iter().find(|d| d.name == bdf).expect("edu listed in its group");
    assert_eq!(edu.driver.as_deref(), Some("vfio-pci"));
    let cdev = edu.cdev.as_deref().expect("edu has a VFIO cdev");
    assert!(cdev.starts_with("/dev/vfio/devices/vfio"), "{cdev}");
    assert!(Path::new(cdev).exists(), "{cdev}");
}

#[test]
#[ignore = "needs a real kernel: the VM tier runs it (compat-tests/scripts/vm-tier.sh)"]
fn geometry_excludes_msi_window() {
    let mut f = Fixture::new();
    let g = f.be.ioas_geometry(f.ctx, f.ioas).unwrap();
    assert!(!g.ranges.is_empty());
    for w in g.ranges.windows(2) {
        assert!(w[0].last < w[1].start, "{g:?}");
    }
    for r in &g.ranges {
        assert!(r.start <= r.last, "{g:?}");
        assert!(r.last < MSI_START || r.start > MSI_LAST, "MSI window usable: {g:?}");
    }
    assert!(g.ranges.iter().any(|r| r.start <= MAP_IOVA && MAP_IOVA + SZ_2M - 1 <= r.last));
    assert_eq!(g.iova_alignment, 4096, "{g:?}");
}

#[test]
#[ignore = "needs a real kernel: the VM tier runs it (compat-tests/scripts/vm-tier.sh)"]
fn iova_ranges_retries_on_emsgsize() {
    let f = Fixture::new();
    let direct = iommufd::ioas_iova_ranges(f.iommufd(), f.ioas.0).unwrap();
    let retried = iommufd::ioas_iova_ranges_with_capacity(f.iommufd(), f.ioas.0, 0).unwrap();
    assert_eq!(direct, retried);
    assert!(direct.ranges.len() >= 2, "attached x86 IOAS has a hole: {direct:?}");
}

#[test]
#[ignore = "needs a real kernel: the VM tier runs it (compat-tests/scripts/vm-tier.sh)"]
fn pgsizes_match_type1() {
    let mut f = Fixture::new();
    let pgsizes = f.be.ioas_pgsizes(f.ctx, f.ioas).unwrap();
    let hw = iommufd::get_hw_info(f.iommufd(), f.dev_id()).unwrap();
    if hw.vtd().is_some() {
        // type1 in the TCG guest with `-device intel-iommu` (semantics.md).
        assert_eq!(pgsizes, 0x4020_1000, "{hw:?}");
    } else {
        assert_eq!(pgsizes & 0xfff, 0);
        assert_ne!(pgsizes & 0x1000, 0);
    }
}

#[test]
#[ignore = "needs a real kernel: the VM tier runs it (compat-tests/scripts/vm-tier.sh)"]
fn coherency_follows_snoop_control_on_vtd() {
    let mut f = Fixture::new();
    let coherent = f.be.ioas_enforces_coherency(f.ctx, f.ioas).unwrap();
    let hw = iommufd::get_hw_info(f.iommufd(), f.dev_id()).unwrap();
    if let Some(vtd) = hw.vtd() {
        assert_eq!(coherent, (vtd.ecap_reg >> 7) & 1 == 1, "{vtd:?}");
    }
}

#[test]
#[ignore = "needs a real kernel: the VM tier runs it (compat-tests/scripts/vm-tier.sh)"]
fn map_then_unmap_2m() {
    let mut f = Fixture::new();
    let buf = Buffer::new(SZ_2M);
    f.be.ioas_map(f.ctx, f.ioas, MAP_IOVA, buf.vaddr(), SZ_2M, RW).unwrap();
    assert_eq!(f.be.ioas_map(f.ctx, f.ioas, MAP_IOVA, buf.vaddr(), SZ_2M, RW), Err(Errno::EEXIST));
    assert_eq!(f.be.ioas_unmap(f.ctx, f.ioas, MAP_IOVA, SZ_2M), Ok(SZ_2M));
    assert_eq!(f.be.ioas_unmap(f.ctx, f.ioas, MAP_IOVA, SZ_2M), Err(Errno::ENOENT));
    // Unmap-all on an empty IOAS succeeds with 0 (ioas.c:351-354): no ENOENT there.
    assert_eq!(f.be.ioas_unmap(f.ctx, f.ioas, 0, u64::MAX), Ok(0));
}

#[test]
#[ignore = "needs a real kernel: the VM tier runs it (compat-tests/scripts/vm-tier.sh)"]
fn map_over_reserved_region_fails() {
    let mut f = Fixture::new();
    let buf = Buffer::new(SZ_2M);
    // io_pagetable.c:196-197: a reserved IOVA in the range is EINVAL.
    assert_eq!(f.be.ioas_map(f.ctx, f.ioas, MSI_START, buf.vaddr(), SZ_2M, RW), Err(Errno::EINVAL));
    assert_eq!(f.be.ioas_map(f.ctx, f.ioas, MSI_START - SZ_2M / 2, buf.vaddr(), SZ_2M, RW), Err(Errno::EINVAL));
}

#[test]
#[ignore = "needs a real kernel: the VM tier runs it (compat-tests/scripts/vm-tier.sh)"]
fn teardown_detach_close_destroy() {
    let mut f = Fixture::new();
    // The attached device's HWPT holds the IOAS.
    assert_eq!(f.be.ioas_destroy(f.ctx, f.ioas), Err(Errno::EBUSY));
    f.be.device_detach(f.dev).unwrap();
    f.attached = false;
    f.be.device_close(f.dev);
    f.open = false;
    assert_eq!(f.be.device_raw_fd(f.dev), None);
    f.be.ioas_destroy(f.ctx, f.ioas).unwrap();
    f.ioas_alive = false;
    assert_eq!(f.be.ioas_destroy(f.ctx, f.ioas), Err(Errno::ENOENT));
}

#[test]
#[ignore = "needs a real kernel: the VM tier runs it (compat-tests/scripts/vm-tier.sh)"]
fn rlimit_mode_is_per_process_when_privileged() {
    let f = Fixture::new();
    let mode =
        iommufd::option(f.iommufd(), iommufd::IOMMU_OPTION_RLIMIT_MODE, iommufd::IOMMU_OPTION_OP_GET, 0, 0).unwrap();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(mode, 1, "root should have CAP_SYS_RESOURCE");
    }
}

#[test]
#[ignore = "needs a real kernel: the VM tier runs it (compat-tests/scripts/vm-tier.sh)"]
fn hwpt_alloc_attach_destroy() {
    let f = Fixture::new();
    let hwpt = iommufd::hwpt_alloc(f.iommufd(), 0, f.dev_id(), f.ioas.0).unwrap();
    let dev_fd = f.be.device_raw_fd(f.dev).unwrap();
    // SAFETY: the backend owns the cdev fd while the fixture lives.
    let dev_fd = unsafe { BorrowedFd::borrow_raw(dev_fd) };
    assert_eq!(vfio_device::device_attach_iommufd_pt(dev_fd, hwpt), Ok(hwpt));
    assert_eq!(iommufd::destroy(f.iommufd(), hwpt), Err(Errno::EBUSY));
    // Back on the IOAS (a replace), then the manual HWPT can go.
    vfio_device::device_attach_iommufd_pt(dev_fd, f.ioas.0).unwrap();
    iommufd::destroy(f.iommufd(), hwpt).unwrap();
}

#[test]
#[ignore = "needs a real kernel: the VM tier runs it (compat-tests/scripts/vm-tier.sh)"]
fn dirty_tracking_follows_capability() {
    let f = Fixture::new();
    let hw = iommufd::get_hw_info(f.iommufd(), f.dev_id()).unwrap();
    let flags = iommufd::IOMMU_HWPT_ALLOC_DIRTY_TRACKING;
    let r = iommufd::hwpt_alloc(f.iommufd(), flags, f.dev_id(), f.ioas.0);
    if hw.out_capabilities & iommufd::IOMMU_HW_CAP_DIRTY_TRACKING == 0 {
        // hw_pagetable.c:139-141.
        assert_eq!(r, Err(Errno::EOPNOTSUPP));
        return;
    }
    let hwpt = r.unwrap();
    iommufd::hwpt_set_dirty_tracking(f.iommufd(), hwpt, true).unwrap();
    let mut bitmap = vec![0u64; iommufd::dirty_bitmap_words(SZ_2M, 4096).unwrap()];
    iommufd::hwpt_get_dirty_bitmap(f.iommufd(), hwpt, 0, MAP_IOVA, SZ_2M, 4096, &mut bitmap).unwrap();
    iommufd::hwpt_set_dirty_tracking(f.iommufd(), hwpt, false).unwrap();
    iommufd::destroy(f.iommufd(), hwpt).unwrap();
}

#[test]
#[ignore = "needs a real kernel: the VM tier runs it (compat-tests/scripts/vm-tier.sh)"]
fn map_file_of_memfd() {
    let mut f = Fixture::new();
    let memfd = nix::sys::memfd::memfd_create(c"vfio-shim-test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
    nix::unistd::ftruncate(&memfd, SZ_2M as i64).unwrap();
    let flags =
        iommufd::IOMMU_IOAS_MAP_FIXED_IOVA | iommufd::IOMMU_IOAS_MAP_READABLE | iommufd::IOMMU_IOAS_MAP_WRITEABLE;
    // SAFETY: the test's own memfd, made for this mapping and never mapped here.
    let iova =
        unsafe { iommufd::ioas_map_file(f.iommufd(), f.ioas.0, flags, memfd.as_fd(), 0, SZ_2M, MAP_IOVA) }.unwrap();
    assert_eq!(iova, MAP_IOVA);
    assert_eq!(f.be.ioas_unmap(f.ctx, f.ioas, MAP_IOVA, SZ_2M), Ok(SZ_2M));
}

#[test]
#[ignore = "needs a real kernel: the VM tier runs it (compat-tests/scripts/vm-tier.sh)"]
fn ioas_copy_and_allow_iovas() {
    let mut f = Fixture::new();
    let buf = Buffer::new(SZ_2M);
    f.be.ioas_map(f.ctx, f.ioas, MAP_IOVA, buf.vaddr(), SZ_2M, RW).unwrap();
    let other = f.be.ioas_alloc(f.ctx).unwrap();
    let allowed = [iommufd::iommu_iova_range { start: 0, last: 0xffff_ffff }];
    iommufd::ioas_allow_iovas(f.iommufd(), other.0, &allowed).unwrap();
    let flags =
        iommufd::IOMMU_IOAS_MAP_FIXED_IOVA | iommufd::IOMMU_IOAS_MAP_READABLE | iommufd::IOMMU_IOAS_MAP_WRITEABLE;
    let dst = iommufd::ioas_copy(f.iommufd(), other.0, f.ioas.0, flags, SZ_2M, MAP_IOVA, MAP_IOVA).unwrap();
    assert_eq!(dst, MAP_IOVA);
    assert_eq!(f.be.ioas_unmap(f.ctx, other, MAP_IOVA, SZ_2M), Ok(SZ_2M));
    assert_eq!(f.be.ioas_unmap(f.ctx, f.ioas, MAP_IOVA, SZ_2M), Ok(SZ_2M));
    f.be.ioas_destroy(f.ctx, other).unwrap();
}

#[test]
#[ignore = "needs a real kernel: the VM tier runs it (compat-tests/scripts/vm-tier.sh)"]
fn vfio_ioas_wrapper_selects_compat_ioas() {
    // Only the wrapper is exercised; KernelBackend never calls IOMMU_VFIO_IOAS.
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    edu();
    let mut be = KernelBackend::new();
    let ctx = be.iommufd_open().unwrap();
    let ioas = be.ioas_alloc(ctx).unwrap();
    let fd = be.iommufd_raw_fd(ctx).unwrap();
    // SAFETY: `be` owns the fd until `iommufd_close` below.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    // vfio_compat.c:15-26: no compat IOAS yet.
    assert_eq!(iommufd::vfio_ioas(fd, iommufd::IOMMU_VFIO_IOAS_GET, 0), Err(Errno::ENODEV));
    iommufd::vfio_ioas(fd, iommufd::IOMMU_VFIO_IOAS_SET, ioas.0).unwrap();
    assert_eq!(iommufd::vfio_ioas(fd, iommufd::IOMMU_VFIO_IOAS_GET, 0), Ok(ioas.0));
    iommufd::vfio_ioas(fd, iommufd::IOMMU_VFIO_IOAS_CLEAR, 0).unwrap();
    assert_eq!(iommufd::vfio_ioas(fd, iommufd::IOMMU_VFIO_IOAS_GET, 0), Err(Errno::ENODEV));
    be.ioas_destroy(ctx, ioas).unwrap();
    be.iommufd_close(ctx);
}
