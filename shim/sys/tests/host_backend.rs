//! KernelBackend on a host without an IOMMU: sysfs parsing over a fake tree, and errno
//! pass-through on fds that are not what they should be.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use vfio_shim::backend::{Backend, GroupDevice};
use vfio_shim_sys::KernelBackend;

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vfio-shim-sys-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Adds `/sys/devices/pci0000:00/<bdf>` to group `group` the way sysfs lays it out.
fn add_device(sys: &Path, group: u32, bdf: &str, driver: Option<&str>, cdev: Option<&str>) {
    let dev = sys.join("devices/pci0000:00").join(bdf);
    fs::create_dir_all(&dev).unwrap();
    if let Some(driver) = driver {
        let drv = sys.join("bus/pci/drivers").join(driver);
        fs::create_dir_all(&drv).unwrap();
        symlink(format!("../../../bus/pci/drivers/{driver}"), dev.join("driver")).unwrap();
    }
    if let Some(cdev) = cdev {
        fs::create_dir_all(dev.join("vfio-dev").join(cdev)).unwrap();
    }
    let devices = sys.join("kernel/iommu_groups").join(group.to_string()).join("devices");
    fs::create_dir_all(&devices).unwrap();
    symlink(format!("../../../../devices/pci0000:00/{bdf}"), devices.join(bdf)).unwrap();
}

#[test]
fn group_devices_reads_sysfs() {
    let tmp = TempDir::new("group-devices");
    let sys = tmp.0.join("sys");
    add_device(&sys, 7, "0000:00:04.0", None, None);
    add_device(&sys, 7, "0000:00:03.0", Some("vfio-pci"), Some("vfio0"));
    add_device(&sys, 7, "0000:00:02.0", Some("e1000e"), None);
    add_device(&sys, 8, "0000:00:05.0", Some("vfio-pci"), Some("vfio1"));

    let mut be = KernelBackend::with_roots(&sys, tmp.0.join("dev"));
    let cdev0 = tmp.0.join("dev/vfio/devices/vfio0").to_string_lossy().into_owned();
    assert_eq!(
        be.group_devices(7).unwrap(),
        vec![
            GroupDevice { name: "0000:00:02.0".into(), driver: Some("e1000e".into()), cdev: None, sriov: false },
            GroupDevice {
                name: "0000:00:03.0".into(),
                driver: Some("vfio-pci".into()),
                cdev: Some(cdev0),
                sriov: false,
            },
            GroupDevice { name: "0000:00:04.0".into(), driver: None, cdev: None, sriov: false },
        ]
    );
    assert_eq!(be.group_devices(8).unwrap().len(), 1);
    assert_eq!(be.group_devices(9), Err(Errno::ENOENT));
}

#[test]
fn an_unreadable_driver_link_is_an_error_not_no_driver() {
    let tmp = TempDir::new("driver-unreadable");
    let sys = tmp.0.join("sys");
    add_device(&sys, 7, "0000:00:03.0", Some("vfio-pci"), Some("vfio0"));
    add_device(&sys, 7, "0000:00:02.0", None, None);
    // readlink(2) of something that is not a link: EINVAL. Read as "no driver", the group
    // would look viable although the device's driver is unknown.
    fs::write(sys.join("devices/pci0000:00/0000:00:02.0/driver"), "").unwrap();
    let mut be = KernelBackend::with_roots(&sys, tmp.0.join("dev"));
    assert_eq!(be.group_devices(7), Err(Errno::EINVAL));
}

#[test]
fn device_open_needs_a_cdev() {
    let tmp = TempDir::new("device-open");
    let mut be = KernelBackend::with_roots(tmp.0.join("sys"), tmp.0.join("dev"));
    let unbound = GroupDevice { name: "0000:00:02.0".into(), driver: None, cdev: None, sriov: false };
    assert_eq!(be.device_open(&unbound), Err(Errno::ENODEV));
    let gone = GroupDevice {
        name: "0000:00:03.0".into(),
        driver: Some("vfio-pci".into()),
        cdev: Some(tmp.0.join("dev/vfio/devices/vfio0").to_string_lossy().into_owned()),
        sriov: false,
    };
    assert_eq!(be.device_open(&gone), Err(Errno::ENOENT));
}

#[test]
fn iommufd_open_without_dev_iommu_is_enoent() {
    let tmp = TempDir::new("no-iommu");
    let mut be = KernelBackend::with_roots(tmp.0.join("sys"), tmp.0.join("dev"));
    assert_eq!(be.iommufd_open(), Err(Errno::ENOENT));
}

#[test]
fn ioctl_errno_reaches_the_caller() {
    // A regular file in place of /dev/iommu: open succeeds, every ioctl says ENOTTY.
    let tmp = TempDir::new("fake-iommu");
    fs::create_dir_all(tmp.0.join("dev")).unwrap();
    fs::write(tmp.0.join("dev/iommu"), b"").unwrap();
    let mut be = KernelBackend::with_roots(tmp.0.join("sys"), tmp.0.join("dev"));
    let ctx = be.iommufd_open().unwrap();
    assert!(be.iommufd_raw_fd(ctx).is_some());
    assert_eq!(be.ioas_alloc(ctx), Err(Errno::ENOTTY));
    assert_eq!(be.ioas_geometry(ctx, vfio_shim::backend::IoasId(1)), Err(Errno::ENOTTY));
    be.iommufd_close(ctx);
    assert_eq!(be.iommufd_raw_fd(ctx), None);
    assert_eq!(be.ioas_alloc(ctx), Err(Errno::EBADF));
}
