//! The process's emulated VFIO objects: the shim core over the kernel backend, and which fd
//! numbers stand for which object (dup'ed fds share one object, as kernel files do).

use std::collections::HashMap;
use std::ffi::c_int;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use vfio_shim::handoff::Origin;
use vfio_shim::{ContainerId, DeviceGrant, Errno, FdTarget, GroupId, GroupReply, Shim};
use vfio_shim_sys::own_memory::OwnMemory;
use vfio_shim_sys::status_registry::{Publisher, Server};
use vfio_shim_sys::KernelBackend;

use crate::real::real;
use crate::table::{self, Kind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Object {
    Container(ContainerId),
    Group(GroupId),
    Device(DeviceGrant),
}

impl Object {
    fn kind(self) -> Kind {
        match self {
            Object::Container(_) => Kind::Container,
            Object::Group(_) => Kind::Group,
            Object::Device(_) => Kind::Device,
        }
    }
}

/// fd -> object, indexed by the fd number (fds are small and dense): no hashing on the
/// ioctl path.
#[derive(Default)]
struct FdMap(Vec<Option<Object>>);

impl FdMap {
    fn get(&self, fd: c_int) -> Option<Object> {
        usize::try_from(fd).ok().and_then(|i| self.0.get(i).copied().flatten())
    }

    fn insert(&mut self, fd: c_int, obj: Object) {
        let i = usize::try_from(fd).expect("fds we track are >= 0");
        if self.0.len() <= i {
            self.0.resize(i + 1, None);
        }
        self.0[i] = Some(obj);
    }

    fn remove(&mut self, fd: c_int) -> Option<Object> {
        usize::try_from(fd).ok().and_then(|i| self.0.get_mut(i)).and_then(Option::take)
    }

    fn fds(&self) -> impl Iterator<Item = c_int> + '_ {
        self.0.iter().enumerate().filter(|(_, o)| o.is_some()).map(|(i, _)| i as c_int)
    }
}

pub struct State {
    pub shim: Shim<KernelBackend>,
    /// fd -> object; several fds may name one object.
    fds: FdMap,
    /// How many fds name each object.
    refs: HashMap<Object, usize>,
    /// The backend's own fds, marked [`Kind::Internal`] in the table.
    internal: Vec<c_int>,
    /// Names our containers and groups get in handoffs to other processes (with their id).
    pub(crate) nonce: u64,
    /// Objects named otherwise: received from another process, or inherited over fork.
    pub(crate) origins: HashMap<Object, Origin>,
    /// This process's entry for `vfio-shim status`.
    pub(crate) status: Publisher,
}

/// A duplicate of a descriptor we hold.
pub(crate) fn dup_owned(fd: c_int, cloexec: bool) -> Result<OwnedFd, Errno> {
    let cmd = if cloexec { libc::F_DUPFD_CLOEXEC } else { libc::F_DUPFD };
    // SAFETY: duplicating a descriptor we hold; no memory is involved.
    let new = unsafe { (real().fcntl)(fd, cmd, 0) };
    if new < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `new` was just created and is owned here alone.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Sets or clears `FD_CLOEXEC` on a descriptor we hold.
pub(crate) fn set_cloexec(fd: c_int, on: bool) {
    // SAFETY: F_SETFD on a descriptor we hold; no memory is involved.
    unsafe { (real().fcntl)(fd, libc::F_SETFD, if on { libc::FD_CLOEXEC as _ } else { 0 }) };
}

fn dup_fd(fd: c_int, cloexec: bool) -> Result<c_int, Errno> {
    in_table(dup_owned(fd, cloexec)?.into_raw_fd())
}

/// `fd`, just made by us, if the fd table can hold it; else it is closed again (EMFILE).
fn in_table(fd: c_int) -> Result<c_int, Errno> {
    if fd as usize >= table::MAX_FDS {
        // SAFETY: closing the descriptor just created.
        unsafe { (real().close)(fd) };
        return Err(Errno::EMFILE);
    }
    Ok(fd)
}

/// The program reports "cannot open /dev/vfio/vfio" with our errno, while what it lacks is
/// /dev/iommu (typically a libvirt domain's or a container's private /dev): say so once, on
/// stderr, with the next step.
fn say_iommu_unreachable(e: Errno) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if matches!(e, Errno::ENOENT | Errno::EACCES | Errno::EPERM)
        && !SAID.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "vfio-shim: /dev/vfio/vfio is served over /dev/iommu, which this process cannot open ({}): \
             make /dev/iommu and the devices' /dev/vfio/devices/vfio* visible and open to it \
             (libvirt: cgroup_device_acl in qemu.conf; see vfio-shim doctor and docs/operators.md)",
            e.desc()
        );
    }
}

/// If `path` (`/dev/vfio/vfio` or `/dev/vfio/<N>`) is vfio-shim's CUSE node, its adopted open
/// (see `vfio_shim_sys::cuse_node::open_adopted`), when the fd table can hold it.
fn cuse_node_with(path: &std::ffi::CStr, flags: c_int) -> Result<Option<c_int>, Errno> {
    match vfio_shim_sys::cuse_node::open_adopted(path, flags)? {
        Some(fd) if (fd.as_raw_fd() as usize) < table::MAX_FDS => Ok(Some(fd.into_raw_fd())),
        // Beyond the table: serve without the node (the fd closes here).
        _ => Ok(None),
    }
}

impl State {
    pub fn new() -> Self {
        Self {
            shim: Shim::with_config(KernelBackend::new(), vfio_shim_sys::type1_params::config_or_default()),
            fds: FdMap::default(),
            refs: HashMap::new(),
            internal: Vec::new(),
            nonce: fresh_nonce(),
            origins: HashMap::new(),
            status: Publisher::new(Server::Preload),
        }
    }

    /// Republishes every container for `vfio-shim status`.
    pub fn publish_status(&mut self) {
        let containers = self.shim.containers_status();
        let pid = vfio_shim_sys::process::current_pid();
        self.status.publish(&containers, |_| pid);
    }

    /// In a fork child: everything open now is the parent's as well. Its names stay (a
    /// handoff from parent and child must meet in one object); new objects get a new nonce.
    pub fn mark_inherited(&mut self) {
        let objects: Vec<Object> = self.refs.keys().copied().collect();
        for obj in objects {
            let origin = self.origin_of(obj);
            self.origins.insert(obj, origin);
        }
        self.nonce = fresh_nonce();
        self.shim.mark_all_shared();
    }

    /// The name of a container or group across processes.
    pub fn origin_of(&self, obj: Object) -> Origin {
        let id = match obj {
            Object::Container(c) => c.0,
            Object::Group(g) => g.0,
            Object::Device(d) => d.serial,
        };
        self.origins.get(&obj).copied().unwrap_or(Origin { nonce: self.nonce, id })
    }

    /// The live object an origin names here: one of ours (a handoff that came back) or one
    /// received before, with or without an fd now (a container can live on through a group).
    pub fn held(&self, origin: Origin) -> Option<Object> {
        let id = origin.id;
        let mine =
            (origin.nonce == self.nonce).then_some([Object::Container(ContainerId(id)), Object::Group(GroupId(id))]);
        self.origins.keys().copied().chain(mine.into_iter().flatten()).find(|o| {
            self.origin_of(*o) == origin
                && match o {
                    Object::Container(c) => self.shim.container_iommufd(*c).is_some(),
                    Object::Group(g) => self.shim.group_number(*g).is_some(),
                    Object::Device(_) => false,
                }
        })
    }

    /// Re-marks the backend's fds after an operation that may open or close some.
    pub fn sync_internal(&mut self) {
        let now: Vec<c_int> = self.shim.backend().raw_fds().collect();
        for fd in &self.internal {
            if !now.contains(fd) && table::kind(*fd) == Kind::Internal {
                table::set(*fd, Kind::None);
            }
        }
        for fd in &now {
            table::set(*fd, Kind::Internal);
        }
        self.internal = now;
    }

    /// Runs `f`, which may make the backend close some of its fds: they are unmarked first, so
    /// a number the kernel hands to another thread meanwhile is never mistaken for ours.
    pub fn closing<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        for fd in &self.internal {
            if table::kind(*fd) == Kind::Internal {
                table::set(*fd, Kind::None);
            }
        }
        let r = f(self);
        self.sync_internal();
        r
    }

    /// Our fds (emulated and internal) in `[first, last]`, ascending.
    pub fn fds_in(&self, first: c_int, last: c_int) -> (Vec<c_int>, Vec<c_int>) {
        let mut ours: Vec<c_int> = self.fds.fds().filter(|f| (first..=last).contains(f)).collect();
        let mut internal: Vec<c_int> = self.internal.iter().copied().filter(|f| (first..=last).contains(f)).collect();
        ours.sort_unstable();
        internal.sort_unstable();
        (ours, internal)
    }

    pub fn object(&self, fd: c_int) -> Option<Object> {
        self.fds.get(fd)
    }

    pub(crate) fn adopt(&mut self, fd: c_int, obj: Object) {
        self.fds.insert(fd, obj);
        let refs = self.refs.entry(obj).or_default();
        *refs += 1;
        if *refs == 1 {
            match obj {
                Object::Container(c) => self.shim.reopen_container(c),
                Object::Group(g) => self.shim.reopen_group(g),
                Object::Device(_) => {}
            }
        }
        table::set(fd, obj.kind());
    }

    /// The objects behind `fds` are now held by another process too.
    pub fn mark_sent(&mut self, fds: &[c_int]) {
        for fd in fds {
            match self.object(*fd) {
                Some(Object::Container(c)) => self.shim.mark_container_shared(c),
                Some(Object::Group(g)) => self.shim.mark_group_shared(g),
                _ => {}
            }
        }
    }

    /// Forgets `fd` and returns the object it was the last fd of, which the caller releases
    /// once the fd is really closed: a device's last close reopens its cdev, which binds only
    /// when no file of the old open is left.
    #[must_use]
    pub fn forget(&mut self, fd: c_int) -> Option<Object> {
        let obj = self.fds.remove(fd)?;
        table::set(fd, Kind::None);
        let n = self.refs.get_mut(&obj).expect("counted");
        *n -= 1;
        if *n > 0 {
            return None;
        }
        self.refs.remove(&obj);
        Some(obj)
    }

    /// Drops the core's object (its last fd is gone, or none could be made for it).
    pub fn release(&mut self, obj: Object) {
        match obj {
            Object::Container(id) => self.shim.close_container(id),
            Object::Group(id) => self.shim.close_group(id),
            Object::Device(grant) => self.shim.close_device(grant),
        }
    }

    /// The fd made for a fresh object: adopted on success; on failure the object goes again.
    fn adopt_new(&mut self, fd: Result<c_int, Errno>, obj: Object) -> Result<c_int, Errno> {
        match fd {
            Ok(fd) => {
                self.adopt(fd, obj);
                Ok(fd)
            }
            Err(e) => {
                self.release(obj);
                Err(e)
            }
        }
    }

    /// `new` is a fresh duplicate of our `old`.
    pub fn alias(&mut self, old: c_int, new: c_int) {
        if let Some(obj) = self.object(old) {
            self.adopt(new, obj);
        }
    }

    /// `open("/dev/vfio/vfio")`: the daemon's node when it serves one, then a fresh iommufd.
    pub fn open_container(&mut self, flags: c_int) -> Result<c_int, Errno> {
        let cloexec = flags & libc::O_CLOEXEC != 0;
        let node = cuse_node_with(c"/dev/vfio/vfio", flags)?;
        let id = match self.shim.open_container() {
            Ok(id) => id,
            Err(e) => {
                if let Some(fd) = node {
                    // SAFETY: closing the node opened just above.
                    unsafe { (real().close)(fd) };
                }
                say_iommu_unreachable(e);
                return Err(e);
            }
        };
        if let Some(fd) = node {
            return self.adopt_new(Ok(fd), Object::Container(id));
        }
        let ctx = self.shim.container_iommufd(id).expect("just opened");
        let raw = self.shim.backend().iommufd_raw_fd(ctx).expect("live context");
        self.adopt_new(dup_fd(raw, cloexec), Object::Container(id))
    }

    /// `open("/dev/vfio/<number>")`, or of `/dev/vfio/noiommu-<number>` with `noiommu`.
    pub fn open_group(&mut self, number: u32, noiommu: bool, flags: c_int) -> Result<c_int, Errno> {
        let prefix = if noiommu { "noiommu-" } else { "" };
        let node = std::ffi::CString::new(format!("/dev/vfio/{prefix}{number}")).expect("no NUL");
        // A daemon's node first: the daemon holds the group's system-wide claim for the opener.
        if let Some(fd) = cuse_node_with(&node, flags)? {
            let served =
                if noiommu { self.shim.open_noiommu_group_served(number) } else { self.shim.open_group_served(number) };
            return match served {
                Ok(id) => self.adopt_new(Ok(fd), Object::Group(id)),
                Err(e) => {
                    // SAFETY: closing the node opened just above.
                    unsafe { (real().close)(fd) };
                    Err(e)
                }
            };
        }
        let id = if noiommu { self.shim.open_noiommu_group(number)? } else { self.shim.open_group(number)? };
        // The group's file: /dev/null, opened with the caller's access mode and file flags. Like
        // type1's group file it is a character device on devtmpfs, so what the VFS answers
        // before any driver sees a request (FIONBIO, FIOCLEX, FIOASYNC, F_GETFL, F_SETFL, ...)
        // the kernel answers on it exactly as on /dev/vfio/<N>.
        let keep = libc::O_ACCMODE | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_APPEND | libc::O_NOATIME;
        // SAFETY: a valid C string; plain open of /dev/null.
        let fd = unsafe { (real().open)(c"/dev/null".as_ptr(), (flags & keep) | libc::O_NOCTTY, 0) };
        let fd = if fd < 0 { Err(Errno::last()) } else { in_table(fd) };
        self.adopt_new(fd, Object::Group(id))
    }

    pub fn group_ioctl(&mut self, id: GroupId, req: u32, arg: u64) -> Result<c_int, Errno> {
        // SAFETY: `arg` is the program's own argument for the request it made.
        let mut mem = unsafe { OwnMemory::new(arg) };
        let fds = &self.fds;
        let resolve = |other: i32| match fds.get(other) {
            Some(Object::Container(c)) => FdTarget::Container(c),
            Some(_) => FdTarget::Other,
            None if fd_is_open(other) => FdTarget::Other,
            None => FdTarget::Closed,
        };
        match self.shim.group_ioctl(id, req, &mut mem, &resolve)? {
            GroupReply::Done => Ok(0),
            GroupReply::Device(grant) => {
                let raw = self.shim.backend().device_raw_fd(grant.handle).expect("bound device");
                // type1 installs device fds O_CLOEXEC (GR: FD_ADD(O_CLOEXEC, ...)).
                self.adopt_new(dup_fd(raw, true), Object::Device(grant))
            }
        }
    }

    /// The bound device behind one of our device fds.
    fn device_of(&self, fd: c_int) -> Result<vfio_shim::backend::DeviceHandle, Errno> {
        match self.object(fd) {
            Some(Object::Device(grant)) => Ok(grant.handle),
            _ => Err(Errno::EBADF),
        }
    }

    /// `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO` on a device fd (`Shim::device_hot_reset_info`).
    pub fn hot_reset_info(&mut self, fd: c_int, arg: u64) -> Result<c_int, Errno> {
        let dev = self.device_of(fd)?;
        // SAFETY: `arg` is the program's own argument for the request it made.
        let mut mem = unsafe { OwnMemory::new(arg) };
        self.shim.device_hot_reset_info(dev, &mut mem).map(|v| v as c_int)
    }

    /// `VFIO_DEVICE_PCI_HOT_RESET` with legacy group fds (`Shim::device_hot_reset`).
    pub fn hot_reset(&mut self, fd: c_int, arg: u64) -> Result<c_int, Errno> {
        let dev = self.device_of(fd)?;
        // SAFETY: `arg` is the program's own argument for the request it made.
        let mut mem = unsafe { OwnMemory::new(arg) };
        let fds = &self.fds;
        // The kernel's fget (EBADF) and vfio_file_is_group (EINVAL).
        let resolve = |other: i32| match fds.get(other) {
            Some(Object::Group(g)) => Ok(g),
            Some(_) => Err(Errno::EINVAL),
            None if fd_is_open(other) => Err(Errno::EINVAL),
            None => Err(Errno::EBADF),
        };
        self.shim.device_hot_reset(dev, &mut mem, &resolve).map(|v| v as c_int)
    }
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

/// 64 random bits (the time and pid when getrandom fails: a name need not be secret).
fn fresh_nonce() -> u64 {
    if let Some(n) = vfio_shim_sys::random::random_u64() {
        return n;
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
}

pub fn fd_is_open(fd: c_int) -> bool {
    // SAFETY: F_GETFD only reads descriptor flags.
    unsafe { (real().fcntl)(fd, libc::F_GETFD, 0) != -1 }
}
