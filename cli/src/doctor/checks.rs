//! The checks of `vfio-shim doctor`, each a verdict from what the kernel exposes in sysfs and
//! procfs: the kernel's VFIO and iommufd interfaces, the IOMMU, each device, the caller's
//! limits and rights, the daemon and the preload library.

use std::path::Path;
use std::process::{Command, Stdio};

use vfio_shim::backend::GroupDevice;
use vfio_shim::Backend;

use super::{Host, Report, Request, Verdict};

/// What the kernel offers for legacy programs, from /proc/devices, /proc/misc and sysfs.
struct Kernel {
    iommufd: bool,
    /// `vfio-dev` chrdev region: CONFIG_VFIO_DEVICE_CDEV.
    cdevs: bool,
    /// `vfio` chrdev region: CONFIG_VFIO_GROUP.
    groups: bool,
    /// VFIO is loaded at all (its `vfio-dev` class exists).
    vfio: bool,
    container: Container,
    noiommu: Option<bool>,
}

#[derive(PartialEq)]
enum Container {
    /// The misc device `vfio` with vfio_iommu_type1: the real legacy container.
    Type1,
    /// The misc device `vfio` without type1: iommufd's compat (CONFIG_IOMMUFD_VFIO_CONTAINER).
    IommufdCompat,
    /// The CUSE daemon's node `vfio!vfio`.
    Daemon,
    None,
}

/// The names of a /proc/devices section or /proc/misc: the second column.
fn proc_names(text: &str, section: Option<&str>) -> Vec<String> {
    let mut in_section = section.is_none();
    let mut names = Vec::new();
    for line in text.lines() {
        if let Some(s) = section {
            if line.ends_with(':') {
                in_section = line.trim_end_matches(':') == s;
                continue;
            }
        }
        if in_section {
            if let Some(name) = line.split_whitespace().nth(1) {
                names.push(name.to_string());
            }
        }
    }
    names
}

impl Kernel {
    fn read(host: &Host) -> Kernel {
        let chrdevs = proc_names(&host.read("/proc/devices").unwrap_or_default(), Some("Character devices"));
        let misc = proc_names(&host.read("/proc/misc").unwrap_or_default(), None);
        let has = |v: &[String], n: &str| v.iter().any(|x| x == n);
        let container = if has(&misc, "vfio") {
            if host.exists("/sys/module/vfio_iommu_type1") {
                Container::Type1
            } else {
                Container::IommufdCompat
            }
        } else if host.exists("/sys/class/cuse/vfio!vfio") {
            Container::Daemon
        } else {
            Container::None
        };
        Kernel {
            iommufd: host.exists("/dev/iommu") || has(&misc, "iommu"),
            cdevs: has(&chrdevs, "vfio-dev"),
            groups: has(&chrdevs, "vfio"),
            vfio: host.exists("/sys/class/vfio-dev"),
            container,
            noiommu: host.read("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode").map(|v| v == "Y"),
        }
    }

    /// Whether legacy programs need the shim at all.
    fn shim_needed(&self) -> bool {
        !(self.container == Container::Type1 && self.groups)
    }
}

/// The CUSE daemon: its processes and the nodes it serves.
struct Daemon {
    pids: Vec<String>,
    nodes: Vec<String>,
}

impl Daemon {
    fn read(host: &Host) -> Daemon {
        let pids = host
            .list("/proc")
            .into_iter()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            .filter(|p| host.read(&format!("/proc/{p}/comm")).as_deref() == Some("vfio-shim-cuse"))
            .collect();
        // The kernel names a CUSE class device after DEVNAME with "/" as "!" (lib/kobject.c).
        let nodes = host
            .list("/sys/class/cuse")
            .into_iter()
            .filter(|n| n.starts_with("vfio!"))
            .map(|n| format!("/dev/{}", n.replace('!', "/")))
            .collect();
        Daemon { pids, nodes }
    }

    fn serves(&self, node: &str) -> bool {
        self.nodes.iter().any(|n| n == node)
    }
}

pub fn examine(host: &Host, req: &Request) -> Report {
    let mut r = Report::default();
    let k = Kernel::read(host);
    let daemon = Daemon::read(host);
    kernel_checks(host, &k, &daemon, &mut r);
    let devices = if req.devices.is_empty() { vfio_bound_devices(host) } else { req.devices.clone() };
    iommu_checks(host, &k, &devices, &mut r);
    for bdf in &devices {
        device_checks(host, &k, &daemon, bdf, &mut r);
    }
    caller_checks(host, &k, req.memory, &mut r);
    daemon_check(&k, &daemon, &mut r);
    preload_check(&k, &daemon, req.preload.as_deref(), &mut r);
    r
}

const RUN: &str = "run legacy programs with `vfio-shim run --`";
const START_DAEMON: &str = "start vfio-shim-cuse (systemctl start vfio-shim-cuse)";

fn kernel_checks(host: &Host, k: &Kernel, daemon: &Daemon, r: &mut Report) {
    use Verdict::*;
    let needed = k.shim_needed();
    if !k.iommufd {
        r.push(
            "kernel.iommufd",
            if needed { Fail } else { Warn },
            "no /dev/iommu: this kernel has no iommufd, which the shim serves legacy programs over",
            "load it (modprobe iommufd) or boot a kernel built with CONFIG_IOMMUFD=y.",
        );
    } else if !host.exists("/dev/iommu") {
        r.push(
            "kernel.iommufd",
            Fail,
            "iommufd is registered (/proc/misc) but /dev/iommu is missing",
            "mount devtmpfs on /dev or let udev create the node.",
        );
    } else {
        r.pass("kernel.iommufd", "/dev/iommu is present");
    }

    if k.cdevs {
        r.pass("kernel.vfio-cdev", "VFIO device cdevs (/dev/vfio/devices/vfioN) are built in");
    } else if k.vfio {
        r.push(
            "kernel.vfio-cdev",
            if needed { Fail } else { Warn },
            "VFIO has no device cdevs here (CONFIG_VFIO_DEVICE_CDEV=n); the shim opens devices only through them",
            "boot a kernel built with CONFIG_VFIO_DEVICE_CDEV=y.",
        );
    } else {
        r.push(
            "kernel.vfio-cdev",
            Fail,
            "VFIO is not loaded (no vfio-dev class)",
            "load vfio-pci (modprobe vfio-pci).",
        );
    }

    if k.groups {
        r.pass("kernel.vfio-groups", "the kernel has VFIO groups (/dev/vfio/<N>)");
    } else if daemon.nodes.iter().any(|n| n != "/dev/vfio/vfio") {
        r.pass("kernel.vfio-groups", "no VFIO groups in the kernel; vfio-shim-cuse serves the group nodes");
    } else {
        r.push(
            "kernel.vfio-groups",
            Warn,
            "no VFIO groups in this kernel (CONFIG_VFIO_GROUP=n): /dev/vfio/<N> exist only through the shim",
            format!("{RUN}, or {START_DAEMON} to serve the group nodes."),
        );
    }

    match k.container {
        Container::Type1 => r.pass(
            "kernel.legacy-container",
            "the kernel's own type1 container serves /dev/vfio/vfio: legacy programs need no shim here",
        ),
        Container::IommufdCompat => r.push(
            "kernel.legacy-container",
            Warn,
            "/dev/vfio/vfio is iommufd's compat container (CONFIG_IOMMUFD_VFIO_CONTAINER), not type1: \
             no VFIO_UPDATE_VADDR (QEMU's CPR) and other differences from type1 (docs/differences.md)",
            format!("{RUN} to get type1's behaviour."),
        ),
        Container::Daemon => {
            r.pass("kernel.legacy-container", "no legacy container in the kernel; vfio-shim-cuse serves /dev/vfio/vfio")
        }
        Container::None => r.push(
            "kernel.legacy-container",
            Warn,
            "no /dev/vfio/vfio in this kernel (CONFIG_VFIO_CONTAINER=n): legacy programs fail to open it",
            format!("{RUN}, or {START_DAEMON} for programs you cannot wrap."),
        ),
    }

    if host.exists("/dev/cuse") {
        r.pass("kernel.cuse", "/dev/cuse is present: vfio-shim-cuse can serve device nodes");
    } else if !needed {
        r.pass("kernel.cuse", "no /dev/cuse; not needed here (the kernel has its own container and groups)");
    } else {
        r.push(
            "kernel.cuse",
            Warn,
            "no /dev/cuse: vfio-shim-cuse cannot serve /dev/vfio/vfio (`vfio-shim run` works without it)",
            "load it (modprobe cuse) or boot a kernel built with CONFIG_CUSE.",
        );
    }

    // vfio-pci's dma-buf export (VFIO_DEVICE_FEATURE_DMA_BUF, vfio_pci_dmabuf.c): how iommufd
    // maps another device's BAR, the P2P mappings QEMU makes of every assigned device.
    let kallsyms = host.read("/proc/kallsyms").unwrap_or_default();
    let symbol = |name: &str| kallsyms.lines().any(|l| l.split_whitespace().nth(2) == Some(name));
    if symbol("vfio_pci_core_feature_dma_buf") {
        r.pass(
            "kernel.p2p-dma-buf",
            "vfio-pci exports BARs as dma-bufs: DMA maps of a device's BAR (P2P) work over iommufd",
        );
    } else if !needed {
        r.pass("kernel.p2p-dma-buf", "no vfio-pci dma-buf export; not needed here (type1 maps BARs itself)");
    } else if !symbol("vfio_pci_core_ioctl") {
        r.push(
            "kernel.p2p-dma-buf",
            Warn,
            "vfio-pci is not loaded, so whether it exports BARs as dma-bufs (P2P DMA) is unknown",
            "load vfio-pci (modprobe vfio-pci) and run doctor again.",
        );
    } else {
        r.push(
            "kernel.p2p-dma-buf",
            Warn,
            "vfio-pci cannot export BARs as dma-bufs: a legacy DMA map of a device's BAR (P2P) fails over iommufd",
            "boot a kernel with CONFIG_VFIO_PCI_DMABUF (6.19 or later, with PCI_P2PDMA), or turn P2P off in the VMM.",
        );
    }

    match k.noiommu {
        None => r.pass("kernel.noiommu", "no-IOMMU mode is not built (CONFIG_VFIO_NOIOMMU=n)"),
        Some(false) => r.pass("kernel.noiommu", "no-IOMMU mode is available and off"),
        Some(true) => r.push(
            "kernel.noiommu",
            Warn,
            "vfio's unsafe no-IOMMU mode is on: a device without an IOMMU given to a program can DMA to any memory",
            "unless a device here needs it, turn it off (echo N > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode).",
        ),
    }
}

/// Every PCI device bound to a VFIO driver.
fn vfio_bound_devices(host: &Host) -> Vec<String> {
    host.list("/sys/bus/pci/devices")
        .into_iter()
        .filter(|b| host.pci_driver(b).is_some_and(|d| d.contains("vfio")))
        .collect()
}

fn group_of(host: &Host, bdf: &str) -> Option<u32> {
    host.link_name(&format!("/sys/bus/pci/devices/{bdf}/iommu_group"))?.parse().ok()
}

fn iommu_checks(host: &Host, k: &Kernel, devices: &[String], r: &mut Report) {
    let units: Vec<String> =
        host.list("/sys/class/iommu").into_iter().filter(|n| !n.starts_with("iommufd_selftest")).collect();
    if units.is_empty() {
        if k.noiommu == Some(true) {
            r.push(
                "iommu.hardware",
                Verdict::Warn,
                "no IOMMU: only vfio's unsafe no-IOMMU mode can give devices to programs",
                "enable the IOMMU in the firmware and on the kernel command line (intel_iommu=on or amd_iommu=on).",
            );
        } else {
            r.push(
                "iommu.hardware",
                Verdict::Fail,
                "no IOMMU is enabled (/sys/class/iommu is empty): VFIO cannot give a device to a program",
                "enable VT-d or AMD-Vi in the firmware and boot with intel_iommu=on (Intel) or amd_iommu=on (AMD).",
            );
        }
    } else {
        let named: Vec<String> = units
            .iter()
            .map(|u| {
                let kind = if u.starts_with("dmar") {
                    "Intel VT-d"
                } else if u.starts_with("ivhd") {
                    "AMD-Vi"
                } else if u.starts_with("smmu3") {
                    "Arm SMMUv3"
                } else if u.starts_with("smmu") {
                    "Arm SMMU"
                } else {
                    "IOMMU"
                };
                format!("{u} ({kind})")
            })
            .collect();
        r.pass("iommu.hardware", named.join(", "));
    }

    let groups = host.list("/sys/kernel/iommu_groups");
    if !units.is_empty() {
        let mut types: Vec<(String, usize)> = Vec::new();
        for g in &groups {
            let t = host.read(&format!("/sys/kernel/iommu_groups/{g}/type")).unwrap_or_else(|| "unknown".into());
            match types.iter_mut().find(|(n, _)| *n == t) {
                Some((_, c)) => *c += 1,
                None => types.push((t, 1)),
            }
        }
        let types: Vec<String> = types.iter().map(|(t, c)| format!("{t} x{c}")).collect();
        r.pass("iommu.groups", format!("{} IOMMU groups; default domains: {}", groups.len(), types.join(", ")));
    }

    // The reserved ranges of the groups checked: the holes type1 reports in its IOVA ranges
    // and the shim takes from IOMMU_IOAS_IOVA_RANGES.
    let mut regions: Vec<String> = Vec::new();
    for g in devices.iter().filter_map(|d| group_of(host, d)) {
        for line in host.read(&format!("/sys/kernel/iommu_groups/{g}/reserved_regions")).unwrap_or_default().lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [start, end, kind] = f[..] {
                let parse = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
                if let (Some(s), Some(e)) = (parse(start), parse(end)) {
                    let region = format!("{s:#x}-{e:#x} {kind}");
                    if !regions.contains(&region) {
                        regions.push(region);
                    }
                }
            }
        }
    }
    if !devices.is_empty() && !units.is_empty() {
        let detail = if regions.is_empty() {
            "none in the devices' groups".to_string()
        } else {
            format!("IOVA holes in the devices' groups: {}", regions.join(", "))
        };
        r.pass("iommu.reserved", detail);
    }
}

fn describe(d: &GroupDevice) -> String {
    format!("{} ({})", d.name, d.driver.as_deref().unwrap_or("no driver"))
}

fn device_checks(host: &Host, k: &Kernel, daemon: &Daemon, bdf: &str, r: &mut Report) {
    let id = |what: &str| format!("device.{bdf}.{what}");
    let sys = format!("/sys/bus/pci/devices/{bdf}");
    if !host.exists(&sys) {
        r.push(id("driver"), Verdict::Fail, format!("no PCI device {bdf}"), "check the address with `lspci -D`.");
        return;
    }
    let bind = format!("bind it to vfio-pci: `driverctl set-override {bdf} vfio-pci`.");
    let driver = host.pci_driver(bdf);
    let on_vfio = driver.as_deref().is_some_and(|d| d.contains("vfio"));
    match &driver {
        Some(d) if on_vfio => r.pass(id("driver"), format!("bound to {d}")),
        Some(d) => r.push(id("driver"), Verdict::Fail, format!("on its kernel driver {d}, not a VFIO driver"), bind),
        None => r.push(id("driver"), Verdict::Fail, "no driver bound", bind),
    }

    if on_vfio {
        let cdev = host.pci_cdev(bdf).filter(|n| n.starts_with("vfio"));
        match cdev {
            None if k.cdevs => r.push(
                id("cdev"),
                Verdict::Fail,
                "no VFIO cdev for this device",
                "rebind it to vfio-pci (its driver did not register a cdev).",
            ),
            None => r.push(
                id("cdev"),
                if k.shim_needed() { Verdict::Fail } else { Verdict::Warn },
                "no VFIO cdev (the kernel has none)",
                "boot a kernel built with CONFIG_VFIO_DEVICE_CDEV=y.",
            ),
            Some(n) => {
                let node = format!("/dev/vfio/devices/{n}");
                if !host.exists(&node) {
                    r.push(id("cdev"), Verdict::Fail, format!("{node} is missing"), "let udev or devtmpfs create it.");
                } else if !host.accessible(&node) {
                    r.push(
                        id("cdev"),
                        // With the kernel's own container, programs open the group node instead.
                        if k.shim_needed() { Verdict::Fail } else { Verdict::Warn },
                        format!("{node}: this user (uid {}) cannot open it read-write", nix::unistd::getuid()),
                        "give the VMM's user access (a udev rule or chown, as libvirt does) or run it as root.",
                    );
                } else {
                    r.pass(id("cdev"), format!("{node}, read-write for this user"));
                }
            }
        }
    }

    let Some(group) = group_of(host, bdf) else {
        r.push(
            id("group"),
            if k.noiommu == Some(true) { Verdict::Warn } else { Verdict::Fail },
            "in no IOMMU group: no IOMMU translates its DMA",
            "enable the IOMMU (intel_iommu=on or amd_iommu=on); without one only vfio's unsafe no-IOMMU mode can use it.",
        );
        return;
    };
    let members = host.backend().group_devices(group).unwrap_or_default();
    let others: Vec<String> = members.iter().filter(|d| d.name != bdf).map(describe).collect();
    r.pass(
        id("group"),
        if others.is_empty() {
            format!("IOMMU group {group}, no other device")
        } else {
            format!("IOMMU group {group}, with {}", others.join(", "))
        },
    );

    let node = format!("/dev/vfio/{group}");
    let server = if k.groups {
        "the kernel"
    } else if daemon.serves(&node) {
        "vfio-shim-cuse"
    } else {
        "`vfio-shim run` only"
    };
    let blocking: Vec<String> = members.iter().filter(|d| !d.allows_user_dma()).map(describe).collect();
    if !members.iter().any(|d| d.driver.as_deref().is_some_and(|x| x.contains("vfio"))) {
        r.push(
            id("group-node"),
            Verdict::Fail,
            format!("{node} does not exist: no device of group {group} is on a VFIO driver"),
            format!("bind the device to vfio-pci (`driverctl set-override {bdf} vfio-pci`)."),
        );
    } else if blocking.is_empty() {
        r.pass(id("group-node"), format!("{node} is viable (served by {server})"));
    } else {
        r.push(
            id("group-node"),
            Verdict::Fail,
            format!(
                "{node} is not viable: {} keeps group {group} for kernel DMA (type1 reports it not viable, iommufd refuses the bind with EBUSY)",
                blocking.join(", ")
            ),
            format!("bind every device of group {group} to vfio-pci (`driverctl set-override BDF vfio-pci`), or unbind it."),
        );
    }
}

/// `Max locked memory` of /proc/self/limits: the soft limit, `None` for unlimited.
fn memlock(host: &Host) -> Option<Option<u64>> {
    let limits = host.read("/proc/self/limits")?;
    let line = limits.lines().find(|l| l.starts_with("Max locked memory"))?;
    let soft = line["Max locked memory".len()..].split_whitespace().next()?;
    Some(if soft == "unlimited" { None } else { Some(soft.parse().ok()?) })
}

/// Whether the effective set of /proc/self/status holds `cap`.
fn has_capability(host: &Host, cap: u32) -> bool {
    let status = host.read("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|set| set & (1 << cap) != 0)
}

fn bytes(n: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in UNITS {
        if n >= 1 << shift && n % (1 << shift) == 0 {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

fn caller_checks(host: &Host, k: &Kernel, memory: Option<u64>, r: &mut Report) {
    const CAP_IPC_LOCK: u32 = 14;
    let ipc_lock = has_capability(host, CAP_IPC_LOCK);
    let limit = memlock(host);
    let shown = match limit {
        Some(Some(n)) => bytes(n),
        Some(None) => "unlimited".to_string(),
        None => "unknown".to_string(),
    };
    let detail = format!("RLIMIT_MEMLOCK {shown}, CAP_IPC_LOCK {}", if ipc_lock { "held" } else { "not held" });
    match (memory, limit) {
        _ if ipc_lock => r.pass("caller.memlock", format!("{detail}: pinned memory is not limited")),
        (Some(want), Some(Some(n))) if want > n => r.push(
            "caller.memlock",
            Verdict::Fail,
            format!("{detail}: less than the {} to map, so MAP_DMA fails with ENOMEM", bytes(want)),
            "raise the VMM's limit to its guest RAM plus DMA buffers (LimitMEMLOCK= in its unit, ulimit -l, or limits.conf).",
        ),
        (Some(want), _) => r.pass("caller.memlock", format!("{detail}: enough for {}", bytes(want))),
        (None, _) => r.pass("caller.memlock", format!("{detail} (give --memory SIZE to check a guest's RAM against it)")),
    }

    if host.exists("/dev/iommu") {
        if host.accessible("/dev/iommu") {
            r.pass("caller.iommufd-access", "/dev/iommu is read-write for this user");
        } else {
            r.push(
                "caller.iommufd-access",
                if k.shim_needed() { Verdict::Fail } else { Verdict::Warn },
                format!("this user (uid {}) cannot open /dev/iommu read-write", nix::unistd::getuid()),
                "give the VMM's user access to /dev/iommu (a udev rule, as for /dev/vfio/vfio) or run it as root.",
            );
        }
    }
}

fn daemon_check(k: &Kernel, daemon: &Daemon, r: &mut Report) {
    if !daemon.pids.is_empty() {
        let nodes = if daemon.nodes.is_empty() { "no node yet".to_string() } else { daemon.nodes.join(", ") };
        r.pass("daemon", format!("vfio-shim-cuse running (pid {}), serving {nodes}", daemon.pids.join(", ")));
    } else if !k.shim_needed() {
        r.pass("daemon", "vfio-shim-cuse not running; not needed here (the kernel has its own container and groups)");
    } else {
        r.push(
            "daemon",
            Verdict::Warn,
            "vfio-shim-cuse is not running: programs started without `vfio-shim run` (services, static binaries) find no /dev/vfio/vfio",
            format!("{START_DAEMON}."),
        );
    }
}

/// Runs `true` with the library preloaded: ld.so says "cannot be preloaded" when it cannot.
fn preload_loads(lib: &Path) -> Result<(), String> {
    let out = Command::new("true")
        .env("LD_PRELOAD", lib)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `true` to try it: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    match stderr.lines().find(|l| l.contains("cannot be preloaded")) {
        Some(line) => Err(line.trim().to_string()),
        None if out.status.success() => Ok(()),
        None => Err(format!("`true` under it exited with {}", out.status)),
    }
}

fn preload_check(k: &Kernel, daemon: &Daemon, lib: Option<&Path>, r: &mut Report) {
    match lib {
        None => r.push(
            "preload",
            if k.shim_needed() && daemon.pids.is_empty() { Verdict::Fail } else { Verdict::Warn },
            "libvfio_shim_preload.so not found (next to vfio-shim, in the multiarch library directory, or $VFIO_SHIM_PRELOAD)",
            "install the vfio-shim package, or set VFIO_SHIM_PRELOAD to the library's path.",
        ),
        Some(lib) => match preload_loads(lib) {
            Ok(()) => r.pass("preload", format!("{} loads (ld.so preloads it)", lib.display())),
            Err(e) => r.push(
                "preload",
                Verdict::Fail,
                format!("{} cannot be preloaded: {e}", lib.display()),
                "reinstall vfio-shim built for this system (its architecture and glibc).",
            ),
        },
    }
}
