//! Host tests of the doctor's verdicts on fabricated /sys, /dev and /proc trees. What the
//! real kernels say is checked in the VM tier (compat-tests/doctor/check.py).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use super::*;

/// A throw-away root directory.
struct Tree(PathBuf);

impl Tree {
    fn new(name: &str) -> Tree {
        let dir = std::env::temp_dir().join(format!("vfio-shim-doctor-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Tree(dir)
    }

    fn file(&self, abs: &str, text: &str) -> &Self {
        let p = self.0.join(abs.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
        self
    }

    fn dir(&self, abs: &str) -> &Self {
        fs::create_dir_all(self.0.join(abs.trim_start_matches('/'))).unwrap();
        self
    }

    fn link(&self, abs: &str, target: &str) -> &Self {
        let p = self.0.join(abs.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
        self
    }

    /// A PCI device on `driver` (None: unbound) in IOMMU group `group`, with a VFIO cdev
    /// `vfioN` when `cdev` is given.
    fn pci(&self, bdf: &str, driver: Option<&str>, group: u32, cdev: Option<u32>) -> &Self {
        let dev = format!("/sys/devices/pci0000:00/{bdf}");
        self.dir(&dev).link(&format!("/sys/bus/pci/devices/{bdf}"), &self.abs(&dev));
        if let Some(d) = driver {
            self.link(&format!("{dev}/driver"), &format!("../../../bus/pci/drivers/{d}"));
        }
        self.link(&format!("{dev}/iommu_group"), &format!("../../../kernel/iommu_groups/{group}"));
        self.link(&format!("/sys/kernel/iommu_groups/{group}/devices/{bdf}"), &self.abs(&dev));
        self.file(&format!("/sys/kernel/iommu_groups/{group}/type"), "DMA-FQ\n");
        self.file(
            &format!("/sys/kernel/iommu_groups/{group}/reserved_regions"),
            "0x00000000fee00000 0x00000000feefffff msi\n",
        );
        if let Some(n) = cdev {
            self.dir(&format!("{dev}/vfio-dev/vfio{n}")).file(&format!("/dev/vfio/devices/vfio{n}"), "");
        }
        self
    }

    fn abs(&self, abs: &str) -> String {
        self.0.join(abs.trim_start_matches('/')).to_string_lossy().into_owned()
    }

    /// The common part: iommufd, an Intel IOMMU, CUSE, vfio-pci with dma-buf export, no-IOMMU
    /// mode built and off, the caller root-less with an 8 MiB limit.
    fn host(&self, groups: bool, type1: bool) -> &Self {
        let mut chr = String::from("Character devices:\n  1 mem\n 10 misc\n");
        if groups {
            chr.push_str("240 vfio\n");
        }
        chr.push_str("241 vfio-dev\n\nBlock devices:\n  8 sd\n");
        let misc = if type1 { "196 vfio\n122 iommu\n" } else { "122 iommu\n" };
        self.file("/proc/devices", &chr).file("/proc/misc", misc).file("/dev/iommu", "").file("/dev/cuse", "");
        self.dir("/sys/class/vfio-dev").dir("/sys/class/iommu/dmar0");
        if type1 {
            self.dir("/sys/module/vfio_iommu_type1/parameters");
        }
        self.file("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode", "N\n");
        self.file(
            "/proc/kallsyms",
            "ffffffff81000000 T vfio_pci_core_ioctl\nffffffff81000100 T vfio_pci_core_feature_dma_buf\n",
        );
        self.file(
            "/proc/self/limits",
            "Limit  Soft Limit Hard Limit Units\nMax locked memory  8388608  8388608  bytes\n",
        );
        self.file("/proc/self/status", "Name:\tdoctor\nCapEff:\t0000000000000000\n")
    }

    fn report(&self, devices: &[&str], memory: Option<u64>) -> Report {
        let req = Request { devices: devices.iter().map(|s| s.to_string()).collect(), memory, preload: None };
        examine(&Host::at(&self.0), &req)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn verdict(r: &Report, id: &str) -> Verdict {
    r.checks.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no check {id} in {}", r.to_text())).verdict
}

#[test]
fn a_cdev_only_kernel_without_the_daemon_needs_the_shim_and_says_how() {
    let t = Tree::new("cdev-only");
    t.host(false, false).pci("0000:00:03.0", Some("vfio-pci"), 3, Some(0));
    let r = t.report(&[], None);
    assert_eq!(verdict(&r, "kernel.iommufd"), Verdict::Pass);
    assert_eq!(verdict(&r, "kernel.vfio-cdev"), Verdict::Pass);
    assert_eq!(verdict(&r, "kernel.vfio-groups"), Verdict::Warn);
    assert_eq!(verdict(&r, "kernel.legacy-container"), Verdict::Warn);
    assert_eq!(verdict(&r, "daemon"), Verdict::Warn);
    // Every device on vfio-pci is checked when none is named.
    assert_eq!(verdict(&r, "device.0000:00:03.0.driver"), Verdict::Pass);
    assert_eq!(verdict(&r, "device.0000:00:03.0.cdev"), Verdict::Pass);
    assert_eq!(verdict(&r, "device.0000:00:03.0.group-node"), Verdict::Pass);
    let text = r.to_text();
    assert!(text.contains("/dev/vfio/3 is viable (served by `vfio-shim run` only)"), "{text}");
    assert!(text.contains("Fix: run legacy programs with `vfio-shim run --`"), "{text}");
    // The preload was not given: with no daemon either, nothing serves the nodes.
    assert_eq!(verdict(&r, "preload"), Verdict::Fail);
    assert!(r.failed());
}

#[test]
fn a_type1_kernel_needs_no_shim() {
    let t = Tree::new("type1");
    t.host(true, true).pci("0000:00:03.0", Some("vfio-pci"), 3, Some(0));
    t.file("/dev/vfio/3", "");
    let r = t.report(&["0000:00:03.0"], None);
    for id in ["kernel.legacy-container", "kernel.vfio-groups", "daemon", "device.0000:00:03.0.group-node"] {
        assert_eq!(verdict(&r, id), Verdict::Pass, "{id}: {}", r.to_text());
    }
    assert!(r.to_text().contains("the kernel's own type1 container serves /dev/vfio/vfio"));
    assert!(r.to_text().contains("(served by the kernel)"));
    // Not found, but nothing needs it.
    assert_eq!(verdict(&r, "preload"), Verdict::Warn);
    assert!(!r.failed(), "{}", r.to_text());
}

#[test]
fn iommufds_compat_container_is_told_from_type1() {
    let t = Tree::new("compat");
    t.host(true, true);
    fs::remove_dir_all(t.0.join("sys/module/vfio_iommu_type1")).unwrap();
    let r = t.report(&[], None);
    assert_eq!(verdict(&r, "kernel.legacy-container"), Verdict::Warn);
    assert!(r.to_text().contains("iommufd's compat container"));
}

#[test]
fn a_running_daemon_serves_the_nodes() {
    let t = Tree::new("daemon");
    t.host(false, false).pci("0000:00:03.0", Some("vfio-pci"), 3, Some(0));
    t.dir("/sys/class/cuse/vfio!vfio").dir("/sys/class/cuse/vfio!3").file("/proc/412/comm", "vfio-shim-cuse\n");
    t.file("/proc/7/comm", "bash\n");
    let r = t.report(&[], None);
    assert_eq!(verdict(&r, "kernel.legacy-container"), Verdict::Pass);
    assert_eq!(verdict(&r, "kernel.vfio-groups"), Verdict::Pass);
    let text = r.to_text();
    assert!(
        text.contains("PASS  daemon: vfio-shim-cuse running (pid 412), serving /dev/vfio/3, /dev/vfio/vfio"),
        "{text}"
    );
    assert!(text.contains("/dev/vfio/3 is viable (served by vfio-shim-cuse)"), "{text}");
    // The daemon covers programs that are not wrapped: a missing preload is only a warning.
    assert_eq!(verdict(&r, "preload"), Verdict::Warn);
}

#[test]
fn a_device_on_its_kernel_driver_and_the_group_it_spoils() {
    let t = Tree::new("driver");
    t.host(false, false)
        .pci("0000:01:00.0", Some("vfio-pci"), 9, Some(1))
        .pci("0000:01:01.0", Some("virtio-pci"), 9, None)
        .pci("0000:01:02.0", None, 10, None);
    let r = t.report(&["0000:01:00.0", "0000:01:01.0", "0000:01:02.0", "0000:09:00.0"], None);
    assert_eq!(verdict(&r, "device.0000:01:01.0.driver"), Verdict::Fail);
    assert_eq!(verdict(&r, "device.0000:01:02.0.driver"), Verdict::Fail);
    assert_eq!(verdict(&r, "device.0000:01:00.0.driver"), Verdict::Pass);
    assert_eq!(verdict(&r, "device.0000:01:00.0.group-node"), Verdict::Fail);
    // No driver keeps no group for the kernel, but no VFIO driver makes no node either.
    assert_eq!(verdict(&r, "device.0000:01:02.0.group-node"), Verdict::Fail);
    assert!(r.to_text().contains("/dev/vfio/10 does not exist: no device of group 10 is on a VFIO driver"));
    assert_eq!(verdict(&r, "device.0000:09:00.0.driver"), Verdict::Fail);
    let text = r.to_text();
    assert!(
        text.contains("FAIL  device.0000:01:01.0.driver: on its kernel driver virtio-pci, not a VFIO driver. Fix: bind it to vfio-pci: `driverctl set-override 0000:01:01.0 vfio-pci`."),
        "{text}"
    );
    assert!(text.contains("/dev/vfio/9 is not viable: 0000:01:01.0 (virtio-pci) keeps group 9"), "{text}");
    assert!(text.contains("IOMMU group 9, with 0000:01:01.0 (virtio-pci)"), "{text}");
    assert!(text.contains("no PCI device 0000:09:00.0"));
    assert!(text.contains("IOVA holes in the devices' groups: 0xfee00000-0xfeefffff msi"), "{text}");
}

#[test]
fn memlock_is_checked_against_the_memory_to_map() {
    let t = Tree::new("memlock");
    t.host(false, false);
    let r = t.report(&[], Some(4 << 30));
    assert_eq!(verdict(&r, "caller.memlock"), Verdict::Fail);
    assert!(r.to_text().contains("RLIMIT_MEMLOCK 8 MiB, CAP_IPC_LOCK not held: less than the 4 GiB to map"));
    assert_eq!(verdict(&t.report(&[], Some(8 << 20)), "caller.memlock"), Verdict::Pass);
    t.file("/proc/self/status", "CapEff:\t0000000000004000\n");
    assert_eq!(verdict(&t.report(&[], Some(4 << 30)), "caller.memlock"), Verdict::Pass, "CAP_IPC_LOCK");
}

#[test]
fn no_iommu_fails_unless_noiommu_mode_is_on() {
    let t = Tree::new("noiommu");
    t.host(false, false);
    fs::remove_dir_all(t.0.join("sys/class/iommu/dmar0")).unwrap();
    assert_eq!(verdict(&t.report(&[], None), "iommu.hardware"), Verdict::Fail);
    t.file("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode", "Y\n");
    let r = t.report(&[], None);
    assert_eq!(verdict(&r, "iommu.hardware"), Verdict::Warn);
    assert_eq!(verdict(&r, "kernel.noiommu"), Verdict::Warn);
}

#[test]
fn p2p_export_is_read_from_the_kernels_symbols() {
    let t = Tree::new("p2p");
    t.host(false, false);
    assert_eq!(verdict(&t.report(&[], None), "kernel.p2p-dma-buf"), Verdict::Pass);
    t.file("/proc/kallsyms", "ffffffff81000000 T vfio_pci_core_ioctl\n");
    let r = t.report(&[], None);
    assert_eq!(verdict(&r, "kernel.p2p-dma-buf"), Verdict::Warn);
    assert!(r.to_text().contains("CONFIG_VFIO_PCI_DMABUF"));
}

#[test]
fn the_preload_is_tried_with_the_real_loader() {
    let t = Tree::new("preload");
    t.host(false, false).file("/not-a-library.so", "text");
    let req = |lib: PathBuf| Request { devices: vec![], memory: None, preload: Some(lib) };
    let r = examine(&Host::at(&t.0), &req(t.0.join("not-a-library.so")));
    assert_eq!(verdict(&r, "preload"), Verdict::Fail, "{}", r.to_text());
    assert!(r.to_text().contains("cannot be preloaded"), "{}", r.to_text());
    let libm = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("libm");
    let r = examine(&Host::at(&t.0), &req(libm));
    assert_eq!(verdict(&r, "preload"), Verdict::Pass, "{}", r.to_text());
}

#[test]
fn the_json_report_holds_every_check() {
    let t = Tree::new("json");
    t.host(false, false).pci("0000:00:03.0", Some("vfio-pci"), 3, Some(0));
    let r = t.report(&[], None);
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), r.checks.len());
    assert_eq!(v["fail"].as_u64().unwrap() as usize, r.checks.iter().filter(|c| c.verdict == Verdict::Fail).count());
    let legacy = checks.iter().find(|c| c["id"] == "kernel.legacy-container").unwrap();
    assert_eq!(legacy["verdict"], "WARN");
    assert!(legacy["fix"].as_str().unwrap().contains("vfio-shim run"));
    let iommufd = checks.iter().find(|c| c["id"] == "kernel.iommufd").unwrap();
    assert!(iommufd.get("fix").is_none(), "PASS carries no fix");
}

#[test]
fn sizes_parse_in_binary_units() {
    assert_eq!(parse_size("4G"), Ok(4 << 30));
    assert_eq!(parse_size("512m"), Ok(512 << 20));
    assert_eq!(parse_size("65536"), Ok(65536));
    assert!(parse_size("4X").is_err());
    assert!(parse_size("G").is_err());
    assert!(parse_size("99999999999T").is_err());
}
