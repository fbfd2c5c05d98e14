//! The status registry that `vfio-shim status` reads: each process that holds legacy
//! containers (a preload process, the CUSE daemon, a seccomp supervisor) publishes them in a small file of its own,
//! `<dir>/<pid>`, mapped shared and rewritten in place after each call that changes them, so
//! publishing costs no syscall. A sequence count (odd while a write is under way) lets a
//! reader take a consistent copy with plain reads. The file goes at exit; a reader skips the
//! files of processes that are gone. [`Publisher`] is what the preload and the daemon hold.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use nix::errno::Errno;
use vfio_shim::{ContainerId, ContainerStatus, IommuKind};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

const MAGIC: [u8; 8] = *b"VFSHSTA1";
/// The registry directory on a system: created world-writable and sticky, like /tmp, so every
/// user's programs can publish in it and remove only their own files.
pub const SYSTEM_DIR: &str = "/run/vfio-shim/status";
pub const MAX_CONTAINERS: usize = 32;
pub const MAX_GROUPS: usize = 8;
pub const MAX_DEVICES: usize = 8;
const FILE_SIZE: usize = 8192;

/// Who serves the containers of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Preload = 1,
    Daemon = 2,
    /// vfio-shim-supervisor: the containers of the programs it serves.
    Supervisor = 3,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
struct Header {
    magic: [u8; 8],
    /// Odd while the publisher writes.
    sequence: u64,
    pid: i32,
    server: u32,
    /// `/proc/<pid>/stat` start time: tells the publisher from a later process of its pid.
    start_time: u64,
    count: u32,
    _pad: u32,
}

/// One container as published.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Record {
    /// The publisher's own id for it.
    pub container: u64,
    /// The process using it: the publisher itself, or the daemon's client.
    pub holder_pid: i32,
    /// `VFIO_TYPE1_IOMMU`, `VFIO_TYPE1v2_IOMMU`, `VFIO_NOIOMMU_IOMMU`, or 0 before `SET_IOMMU`.
    pub iommu: u32,
    /// The IOAS id, 0 for none.
    pub ioas: u32,
    pub n_groups: u32,
    pub groups: [u32; MAX_GROUPS],
    pub n_devices: u32,
    pub _pad: u32,
    /// NUL-padded PCI names.
    pub devices: [[u8; 16]; MAX_DEVICES],
    pub mappings: u64,
    pub mapped_bytes: u64,
}

impl Record {
    pub fn groups(&self) -> &[u32] {
        &self.groups[..(self.n_groups as usize).min(MAX_GROUPS)]
    }

    pub fn devices(&self) -> Vec<String> {
        self.devices[..(self.n_devices as usize).min(MAX_DEVICES)]
            .iter()
            .map(|d| String::from_utf8_lossy(d.split(|b| *b == 0).next().unwrap_or_default()).into_owned())
            .collect()
    }

    /// Fills the group and device lists (beyond the maximum, the rest is not shown).
    pub fn set_lists(&mut self, groups: &[u32], devices: &[String]) {
        self.n_groups = groups.len().min(MAX_GROUPS) as u32;
        self.groups[..self.n_groups as usize].copy_from_slice(&groups[..self.n_groups as usize]);
        self.n_devices = devices.len().min(MAX_DEVICES) as u32;
        for (slot, name) in self.devices.iter_mut().zip(devices) {
            let n = name.len().min(15);
            slot[..n].copy_from_slice(&name.as_bytes()[..n]);
        }
    }
}

const RECORDS_AT: usize = std::mem::size_of::<Header>();
const _: () = assert!(RECORDS_AT + MAX_CONTAINERS * std::mem::size_of::<Record>() <= FILE_SIZE);

/// `/proc/<pid>/stat` field 22, the start time in clock ticks since boot.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// This process's published file, mapped shared.
pub struct StatusPage {
    base: NonNull<u8>,
    path: PathBuf,
    pid: i32,
}

// SAFETY: the mapping is owned by the page and only written through `&mut self`.
unsafe impl Send for StatusPage {}

impl StatusPage {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates `<dir>/<pid>` (and `dir`) for this process.
    pub fn create(dir: &Path, server: Server) -> Result<StatusPage, Errno> {
        let io = crate::errno_of;
        if !dir.is_dir() {
            fs::DirBuilder::new().recursive(true).mode(0o1777).create(dir).map_err(io)?;
            // The mode is filtered by the umask; the registry must stay open to all users.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o1777)).map_err(io)?;
        }
        let pid = crate::process::current_pid();
        let path = dir.join(pid.to_string());
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(io)?;
        file.set_len(FILE_SIZE as u64).map_err(io)?;
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        // SAFETY: a fresh shared mapping of a file we own, at an address the kernel picks; no
        // Rust object lives there, and it is only accessed through this page.
        let base = unsafe {
            mmap(
                None,
                std::num::NonZeroUsize::new(FILE_SIZE).expect("non-zero"),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                file.as_fd(),
                0,
            )
        };
        let base = match base {
            Ok(b) => b.cast::<u8>(),
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        let page = StatusPage { base, path, pid };
        let header = Header {
            magic: MAGIC,
            sequence: 0,
            pid,
            server: server as u32,
            start_time: start_time(pid).unwrap_or(0),
            count: 0,
            _pad: 0,
        };
        // SAFETY: the mapping is FILE_SIZE bytes, page-aligned, and ours alone in this process.
        unsafe { std::ptr::copy_nonoverlapping(header.as_bytes().as_ptr(), page.base.as_ptr(), RECORDS_AT) };
        Ok(page)
    }

    fn sequence(&self) -> &AtomicU64 {
        // SAFETY: the sequence field is 8-aligned (offset 8 of a page-aligned mapping) and lives
        // as long as the mapping; other processes only read it.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(8).cast::<u64>()) }
    }

    /// Writes `f`'s changes between the two steps of the sequence count.
    fn write(&mut self, f: impl FnOnce(*mut u8)) {
        let seq = self.sequence();
        seq.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        f(self.base.as_ptr());
        fence(Ordering::Release);
        seq.fetch_add(1, Ordering::Relaxed);
    }

    /// Replaces every record (beyond `MAX_CONTAINERS`, the rest is not shown).
    pub fn publish(&mut self, records: &[Record]) {
        let records = &records[..records.len().min(MAX_CONTAINERS)];
        self.write(|base| {
            // SAFETY: RECORDS_AT + MAX_CONTAINERS records fit in the mapping (checked at compile
            // time); `count` is at a 4-aligned offset of the header.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    records.as_bytes().as_ptr(),
                    base.add(RECORDS_AT),
                    records.as_bytes().len(),
                );
                let count = std::mem::offset_of!(Header, count);
                base.add(count).cast::<u32>().write(records.len() as u32);
            }
        });
    }

    /// Updates one container's counts (after a MAP or UNMAP), if it is published.
    pub fn update_counts(&mut self, container: u64, mappings: u64, mapped_bytes: u64) {
        let size = std::mem::size_of::<Record>();
        // SAFETY: `count` is within the header; records are within the mapping.
        let count =
            unsafe { self.base.as_ptr().add(std::mem::offset_of!(Header, count)).cast::<u32>().read() } as usize;
        let slot = (0..count.min(MAX_CONTAINERS)).find(|i| {
            // SAFETY: record `i` lies within the mapping; `container` is its first field, 8-aligned.
            unsafe { self.base.as_ptr().add(RECORDS_AT + i * size).cast::<u64>().read() == container }
        });
        let Some(i) = slot else { return };
        self.write(|base| {
            // SAFETY: as above; both fields are 8-aligned within record `i`.
            unsafe {
                let rec = base.add(RECORDS_AT + i * size);
                rec.add(std::mem::offset_of!(Record, mappings)).cast::<u64>().write(mappings);
                rec.add(std::mem::offset_of!(Record, mapped_bytes)).cast::<u64>().write(mapped_bytes);
            }
        });
    }

    /// A fork child's copy: unmaps it without removing the parent's file.
    pub fn forget_in_child(self) {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: our own mapping, not used after this.
        let _ = unsafe { nix::sys::mman::munmap(me.base.cast(), FILE_SIZE) };
    }
}

impl Drop for StatusPage {
    fn drop(&mut self) {
        // SAFETY: our own mapping, not used after this.
        let _ = unsafe { nix::sys::mman::munmap(self.base.cast(), FILE_SIZE) };
        if crate::process::current_pid() == self.pid {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A process's entry, made at its first container; a process that cannot make it (no writable
/// registry directory) serves as before, unlisted.
pub struct Publisher {
    server: Server,
    page: Option<StatusPage>,
    /// Creating the page failed once: not tried again in this process.
    failed: bool,
}

/// `$VFIO_SHIM_STATUS_DIR`, else the system directory when it can be used, else the user's
/// runtime directory (`vfio-shim status` looks in all three).
fn directories() -> Vec<PathBuf> {
    if let Some(d) = std::env::var_os("VFIO_SHIM_STATUS_DIR") {
        return vec![PathBuf::from(d)];
    }
    let mut dirs = vec![PathBuf::from(SYSTEM_DIR)];
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR") {
        dirs.push(PathBuf::from(run).join("vfio-shim-status"));
    }
    dirs
}

fn record(c: &ContainerStatus, holder_pid: i32) -> Record {
    let mut r = Record {
        container: c.id.0,
        holder_pid,
        iommu: match c.iommu {
            IommuKind::None => 0,
            IommuKind::Type1 => vfio_shim::abi::VFIO_TYPE1_IOMMU as u32,
            IommuKind::Type1v2 => vfio_shim::abi::VFIO_TYPE1v2_IOMMU as u32,
            IommuKind::NoIommu => vfio_shim::abi::VFIO_NOIOMMU_IOMMU as u32,
        },
        ioas: c.ioas.unwrap_or(0),
        mappings: c.mappings,
        mapped_bytes: c.mapped_bytes,
        ..Default::default()
    };
    r.set_lists(&c.groups, &c.devices);
    r
}

impl Publisher {
    pub fn new(server: Server) -> Self {
        Publisher { server, page: None, failed: false }
    }

    /// Publishes `containers` (the whole view), each used by the process `holder` names.
    pub fn publish(&mut self, containers: &[ContainerStatus], holder: impl Fn(ContainerId) -> i32) {
        if self.page.is_none() {
            if containers.is_empty() || self.failed {
                return;
            }
            let mut last = None;
            for dir in directories() {
                match StatusPage::create(&dir, self.server) {
                    Ok(p) => {
                        self.page = Some(p);
                        break;
                    }
                    Err(e) => last = Some((dir, e)),
                }
            }
            if self.page.is_none() {
                self.failed = true;
                if let Some((dir, e)) = last {
                    log::info!("status: not listed for vfio-shim status ({}: {e})", dir.display());
                }
                return;
            }
        }
        let records: Vec<Record> = containers.iter().map(|c| record(c, holder(c.id))).collect();
        if let Some(page) = &mut self.page {
            page.publish(&records);
        }
    }

    /// Publishes a container's new counts.
    pub fn counts(&mut self, id: ContainerId, counts: Option<(u64, u64)>) {
        if let (Some(page), Some((mappings, bytes))) = (&mut self.page, counts) {
            page.update_counts(id.0, mappings, bytes);
        }
    }

    /// In a fork child: the parent's page is the parent's; the child makes its own.
    pub fn forget_in_child(&mut self) {
        if let Some(p) = self.page.take() {
            p.forget_in_child();
        }
        self.failed = false;
    }

    /// At exit: the page and its file go.
    pub fn remove(&mut self) {
        self.page = None;
    }
}

/// One publisher's file, read consistently.
#[derive(Clone, Debug)]
pub struct Published {
    pub pid: i32,
    pub server: Server,
    pub records: Vec<Record>,
}

/// Every live publisher in `dirs`, by pid. Files of processes that are gone (or whose pid now
/// belongs to another process) are skipped.
pub fn read_all(dirs: &[PathBuf]) -> Vec<Published> {
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else { continue };
        for e in entries.flatten() {
            if let Some(p) = read_one(&e.path()) {
                out.push(p);
            }
        }
    }
    out.sort_by_key(|p| p.pid);
    out
}

fn read_one(path: &Path) -> Option<Published> {
    for _ in 0..100 {
        let first = fs::read(path).ok()?;
        let (header, _) = Header::read_from_prefix(&first).ok()?;
        if header.magic != MAGIC {
            return None;
        }
        if header.sequence % 2 == 1 {
            std::thread::yield_now();
            continue;
        }
        let again = fs::read(path).ok()?;
        if again != first {
            continue;
        }
        if start_time(header.pid)? != header.start_time {
            return None;
        }
        let server = match header.server {
            s if s == Server::Daemon as u32 => Server::Daemon,
            s if s == Server::Supervisor as u32 => Server::Supervisor,
            _ => Server::Preload,
        };
        let n = (header.count as usize).min(MAX_CONTAINERS);
        let size = std::mem::size_of::<Record>();
        let records = (0..n)
            .filter_map(|i| first.get(RECORDS_AT + i * size..RECORDS_AT + (i + 1) * size))
            .filter_map(|b| Record::read_from_bytes(b).ok())
            .collect();
        return Some(Published { pid: header.pid, server, records });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_read_back_as_published_and_goes_with_its_owner() {
        let dir = std::env::temp_dir().join(format!("vfio-shim-status-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut page = StatusPage::create(&dir, Server::Preload).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o7777, 0o1777, "open to every user, sticky");
        assert!(read_all(std::slice::from_ref(&dir))[0].records.is_empty());
        let mut rec = Record {
            container: 7,
            holder_pid: 42,
            iommu: 3,
            ioas: 2,
            mappings: 1,
            mapped_bytes: 4096,
            ..Default::default()
        };
        rec.set_lists(&[12, 13], &["0000:00:03.0".into(), "0000:00:04.0-but-too-long-a-name".into()]);
        page.publish(&[rec]);
        let got = read_all(std::slice::from_ref(&dir));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].pid, crate::process::current_pid());
        assert_eq!(got[0].server, Server::Preload);
        assert_eq!(got[0].records, vec![rec]);
        assert_eq!(got[0].records[0].groups(), &[12, 13]);
        assert_eq!(got[0].records[0].devices(), vec!["0000:00:03.0".to_string(), "0000:00:04.0-bu".to_string()]);
        page.update_counts(7, 3, 3 << 20);
        page.update_counts(8, 9, 9);
        let r = read_all(std::slice::from_ref(&dir))[0].records[0];
        assert_eq!((r.mappings, r.mapped_bytes), (3, 3 << 20), "container 7 updated, no container 8");
        let file = page.path().to_path_buf();
        drop(page);
        assert!(!file.exists());
        assert!(read_all(std::slice::from_ref(&dir)).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_server_reads_back_as_itself() {
        for server in [Server::Preload, Server::Daemon, Server::Supervisor] {
            let dir = std::env::temp_dir().join(format!("vfio-shim-status-kind-{}-{server:?}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            let page = StatusPage::create(&dir, server).unwrap();
            let got = read_all(std::slice::from_ref(&dir));
            assert_eq!(got.len(), 1, "{got:?}");
            assert_eq!(got[0].server, server);
            drop(page);
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_file_whose_process_is_gone_is_skipped() {
        let dir = std::env::temp_dir().join(format!("vfio-shim-status-stale-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let page = StatusPage::create(&dir, Server::Daemon).unwrap();
        let copy = dir.join("1");
        fs::copy(page.path(), &copy).unwrap();
        // Renamed to pid 1, the copy holds another process's start time: a reused pid.
        let mut bytes = fs::read(&copy).unwrap();
        bytes[16..20].copy_from_slice(&1i32.to_ne_bytes());
        fs::write(&copy, &bytes).unwrap();
        let got = read_all(std::slice::from_ref(&dir));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].server, Server::Daemon);
        drop(page);
        fs::remove_dir_all(&dir).unwrap();
    }
}
