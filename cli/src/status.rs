//! `vfio-shim status`: the live legacy containers on this host, from the status registry that
//! every preload process and the CUSE daemon publish in (`vfio_shim_sys::status_registry`):
//! which process uses each, its IOMMU and IOAS, groups and devices, mappings and mapped bytes,
//! with the process's pinned memory as the kernel counts it (VmPin).

use std::path::PathBuf;

use serde::Serialize;
use vfio_shim_sys::status_registry::{self, Server, SYSTEM_DIR};

#[derive(Serialize)]
pub struct Row {
    pub pid: i32,
    pub program: String,
    /// `preload`, or `daemon` (with the daemon's pid).
    pub served_by: String,
    pub container: u64,
    pub iommu: &'static str,
    pub ioas: Option<u32>,
    pub groups: Vec<u32>,
    pub devices: Vec<String>,
    pub mappings: u64,
    pub mapped_bytes: u64,
    /// The holder's VmPin in bytes (kernel's count), when readable.
    pub pinned_bytes: Option<u64>,
}

/// Where publishers write: `$VFIO_SHIM_STATUS_DIR`, the system directory, each user's runtime
/// directory.
fn directories() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("VFIO_SHIM_STATUS_DIR") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(PathBuf::from(SYSTEM_DIR));
    if let Ok(users) = std::fs::read_dir("/run/user") {
        dirs.extend(users.flatten().map(|u| u.path().join("vfio-shim-status")));
    }
    dirs
}

fn vm_pin(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmPin:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

pub fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for p in status_registry::read_all(&directories()) {
        for r in &p.records {
            let program = std::fs::read_to_string(format!("/proc/{}/comm", r.holder_pid))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into());
            rows.push(Row {
                pid: r.holder_pid,
                program,
                served_by: match p.server {
                    Server::Preload => "preload".into(),
                    Server::Daemon => format!("daemon {}", p.pid),
                    Server::Supervisor => format!("supervisor {}", p.pid),
                },
                container: r.container,
                iommu: match u64::from(r.iommu) {
                    0 => "none",
                    vfio_shim::abi::VFIO_TYPE1_IOMMU => "TYPE1",
                    vfio_shim::abi::VFIO_TYPE1v2_IOMMU => "TYPE1v2",
                    vfio_shim::abi::VFIO_NOIOMMU_IOMMU => "NOIOMMU",
                    _ => "?",
                },
                ioas: (r.ioas != 0).then_some(r.ioas),
                groups: r.groups().to_vec(),
                devices: r.devices(),
                mappings: r.mappings,
                mapped_bytes: r.mapped_bytes,
                pinned_bytes: vm_pin(r.holder_pid),
            });
        }
    }
    rows
}

fn list<T: ToString>(v: &[T]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
    }
}

fn size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1}G", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1}M", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1}K", n as f64 / 1024.0),
        n => n.to_string(),
    }
}

pub fn text(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<8} {:<16} {:<13} {:>4} {:<8} {:>4} {:<8} {:<28} {:>8} {:>8} {:>8}\n",
        "PID", "PROGRAM", "SERVED-BY", "CTR", "IOMMU", "IOAS", "GROUPS", "DEVICES", "MAPPINGS", "MAPPED", "VMPIN"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<8} {:<16} {:<13} {:>4} {:<8} {:>4} {:<8} {:<28} {:>8} {:>8} {:>8}\n",
            r.pid,
            r.program,
            r.served_by,
            r.container,
            r.iommu,
            r.ioas.map_or("-".into(), |i| i.to_string()),
            list(&r.groups),
            list(&r.devices),
            r.mappings,
            size(r.mapped_bytes),
            r.pinned_bytes.map_or("?".into(), size),
        ));
    }
    if rows.is_empty() {
        out.push_str("(no legacy VFIO container is open through vfio-shim)\n");
    }
    out
}
