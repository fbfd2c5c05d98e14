//! The host as `doctor` reads it: files under /sys, /dev and /proc of one root, so the checks
//! run unchanged on a fabricated tree in the host tests. Reads only; never opens a device.

use std::fs;
use std::path::{Path, PathBuf};

use vfio_shim_sys::KernelBackend;

pub struct Host {
    root: PathBuf,
}

impl Host {
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Host { root: root.into() }
    }

    /// `abs` (an absolute path on a live system) under this root.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    pub fn exists(&self, abs: &str) -> bool {
        self.path(abs).exists()
    }

    /// A sysfs or procfs attribute, trimmed.
    pub fn read(&self, abs: &str) -> Option<String> {
        fs::read_to_string(self.path(abs)).ok().map(|s| s.trim().to_string())
    }

    /// The entries of a directory, sorted; empty when it does not exist.
    pub fn list(&self, abs: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path(abs))
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The last component of a symlink's target (`driver` -> `vfio-pci`).
    pub fn link_name(&self, abs: &str) -> Option<String> {
        let target = fs::read_link(self.path(abs)).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// The bound driver of PCI device `bdf`, as the shim reads it (`None`: none, or unreadable).
    pub fn pci_driver(&self, bdf: &str) -> Option<String> {
        vfio_shim_sys::kernel::driver_name(&self.path(&format!("/sys/bus/pci/devices/{bdf}"))).ok().flatten()
    }

    /// The VFIO cdev name (`vfioN`) of PCI device `bdf`, as the shim finds it.
    pub fn pci_cdev(&self, bdf: &str) -> Option<String> {
        vfio_shim_sys::kernel::vfio_cdev(&self.path(&format!("/sys/bus/pci/devices/{bdf}")))
    }

    /// The shim's own view of IOMMU groups and devices: the backend the preload and the daemon
    /// use, on this root, so `doctor` judges a group as they will.
    pub fn backend(&self) -> KernelBackend {
        KernelBackend::with_roots(self.path("/sys"), self.path("/dev"))
    }

    /// Whether the calling process may open `abs` read-write (`access(2)`, real uid).
    pub fn accessible(&self, abs: &str) -> bool {
        use nix::unistd::{access, AccessFlags};
        access(Path::new(&self.path(abs)), AccessFlags::R_OK | AccessFlags::W_OK).is_ok()
    }
}
