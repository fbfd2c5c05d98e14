//! Host tests of the daemon's container and group nodes over the fake backend and fake
//! callers: the direct path, the retry rounds, adoption, SET_CONTAINER by the caller's fd,
//! what needs the preload, and the per-container lock. Each ioctl goes through the rounds
//! as fs/fuse/ioctl.c runs them (`Kernel::ioctl`). type1 values are those of the VM runs
//! (the cuse-node test's type1 column, `container_errors`; the explorer's golden).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use vfio_shim::abi::*;
use vfio_shim::backend::DmaOp;
use vfio_shim::fake::{DetachHook, FakeBackend, Op, Platform};
use vfio_shim::Shim;
use zerocopy::{FromBytes, IntoBytes};

use crate::callers::CallerFd;
use crate::container::{ContainerDevice, NOT_WITHOUT_PRELOAD};
use crate::device::{Caller, CuseDevice, Ioctl, IoctlOutcome};
use crate::fake_callers::FakeCallers;
use crate::group_node::GroupDevice;
use crate::registry::{Registry, VFIO_SHIM_CUSE_ADOPT};

const EDU: &str = "0000:00:03.0";
const IVSHMEM: &str = "0000:00:05.0";
const TID: u32 = 500;
const OTHER_TID: u32 = 600;
const DAEMON_TID: u32 = 1;
/// The callers' private memory (structs) and shared memory (DMA buffers).
const STRUCTS: u64 = 0x1000_0000;
const SHARED: u64 = 0x2000_0000;
const PRIVATE: u64 = 0x3000_0000;
const MB: u64 = 1 << 20;
/// CUSE's ioctls are unrestricted (the kernel sets the flag in every round).
const UNRESTRICTED: u32 = crate::ll::abi::FUSE_IOCTL_UNRESTRICTED;
const RW: u32 = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
/// The container node's device number.
const RDEV: u64 = 0x0a_00fe;

struct Daemon {
    callers: FakeCallers,
    reg: Arc<Registry<FakeCallers>>,
    container: ContainerDevice<FakeCallers>,
    group7: GroupDevice<FakeCallers>,
    group9: GroupDevice<FakeCallers>,
}

impl Daemon {
    fn new() -> Daemon {
        let mut backend = FakeBackend::new().with_group(7, &[EDU]).with_group(9, &[IVSHMEM]);
        backend.platform = Platform::test_vm();
        let callers = FakeCallers::new();
        for tid in [TID, OTHER_TID] {
            callers.add_thread(tid);
            callers.map(tid, STRUCTS, 0x10000, false);
            callers.map(tid, SHARED, 16 << 20, true);
            callers.map(tid, PRIVATE, 16 << 20, false);
        }
        callers.add_own_thread(DAEMON_TID);
        let reg = Registry::with_core(4096, callers.clone(), Shim::new(backend));
        reg.set_container_rdev(RDEV);
        Daemon {
            container: ContainerDevice::new(Arc::clone(&reg)),
            group7: GroupDevice::new(Arc::clone(&reg), 7),
            group9: GroupDevice::new(Arc::clone(&reg), 9),
            callers,
            reg,
        }
    }

    fn caller(tid: u32) -> Caller {
        Caller::new(tid, 1000, 1000, 2)
    }

    /// A container of `tid` with `group` set on it and type1v2 set: (container fh, group fh).
    fn ready_container(&self, tid: u32, group: &GroupDevice<FakeCallers>, fd: i32) -> (u64, u64) {
        let c = self.container.open(&Self::caller(tid), 0).unwrap();
        let g = group.open(&Self::caller(tid), 0).unwrap();
        self.callers.give_fd(tid, fd, CallerFd::ContainerNode(c));
        assert_eq!(self.set_container(group, g, tid, fd), Ok(0));
        let k = Kernel { callers: &self.callers, tid };
        assert_eq!(k.ioctl(&self.container, c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU).0, Ok(0));
        (c, g)
    }

    fn set_container(&self, group: &GroupDevice<FakeCallers>, g: u64, tid: u32, fd: i32) -> Result<i32, Errno> {
        let at = STRUCTS + 0x800;
        self.callers.poke(tid, at, &fd.to_ne_bytes());
        Kernel { callers: &self.callers, tid }.ioctl(group, g, VFIO_GROUP_SET_CONTAINER, at).0
    }

    /// The native maps the backend made.
    fn native_maps(&self) -> usize {
        self.reg.with_shim(|shim| shim.backend().calls(Op::IoasMap))
    }
}

/// fs/fuse/ioctl.c for one caller thread: each round's retry ranges copied in from the
/// caller's memory, the out ranges written back after the last round.
struct Kernel<'a> {
    callers: &'a FakeCallers,
    tid: u32,
}

impl Kernel<'_> {
    /// The ioctl's result, and how many rounds it took.
    fn ioctl(&self, dev: &impl CuseDevice, fh: u64, cmd: u32, arg: u64) -> (Result<i32, Errno>, usize) {
        let caller = Daemon::caller(self.tid);
        let (mut in_data, mut out_iovs) = (Vec::new(), Vec::new());
        for round in 1..=3 {
            let out_size = out_iovs.iter().map(|&(_, l)| l as u32).sum();
            let io = Ioctl { cmd, arg, flags: UNRESTRICTED, in_data: &in_data, out_size };
            match dev.ioctl(fh, &caller, &io) {
                IoctlOutcome::Retry { in_iovs, out_iovs: outs } => {
                    in_data = in_iovs.iter().flat_map(|&(a, l)| self.callers.peek(self.tid, a, l as usize)).collect();
                    out_iovs = outs;
                }
                IoctlOutcome::Done { result, out } => {
                    let mut rest = &out[..];
                    for &(a, l) in &out_iovs {
                        let n = rest.len().min(l as usize);
                        self.callers.poke(self.tid, a, &rest[..n]);
                        rest = &rest[n..];
                    }
                    assert!(rest.is_empty(), "more out data than the out ranges");
                    return (if result < 0 { Err(Errno::from_raw(-result)) } else { Ok(result) }, round);
                }
                IoctlOutcome::Error(e) => return (Err(e), round),
            }
        }
        panic!("an ioctl took more than three rounds");
    }

    fn map(&self, dev: &impl CuseDevice, fh: u64, vaddr: u64, iova: u64, size: u64) -> (Result<i32, Errno>, usize) {
        let map = vfio_iommu_type1_dma_map { argsz: minsz::DMA_MAP as u32, flags: RW, vaddr, iova, size };
        self.callers.poke(self.tid, STRUCTS, map.as_bytes());
        self.ioctl(dev, fh, VFIO_IOMMU_MAP_DMA, STRUCTS)
    }

    /// The unmap's result, rounds, and the `size` written back.
    fn unmap(&self, dev: &impl CuseDevice, fh: u64, iova: u64, size: u64) -> (Result<i32, Errno>, usize, u64) {
        let at = STRUCTS + 0x100;
        let unmap = vfio_iommu_type1_dma_unmap { argsz: minsz::DMA_UNMAP as u32, flags: 0, iova, size };
        self.callers.poke(self.tid, at, unmap.as_bytes());
        let (r, rounds) = self.ioctl(dev, fh, VFIO_IOMMU_UNMAP_DMA, at);
        let back =
            vfio_iommu_type1_dma_unmap::read_from_bytes(&self.callers.peek(self.tid, at, minsz::DMA_UNMAP)).unwrap();
        (r, rounds, back.size)
    }
}

fn ioctl_round1(cmd: u32, arg: u64) -> Ioctl<'static> {
    Ioctl { cmd, arg, flags: UNRESTRICTED, in_data: &[], out_size: 0 }
}

#[test]
fn the_direct_path_maps_and_unmaps_in_one_round() {
    let d = Daemon::new();
    let (c, _g) = d.ready_container(TID, &d.group7, 5);
    let k = Kernel { callers: &d.callers, tid: TID };
    assert_eq!(k.map(&d.container, c, SHARED, 0x10_0000, MB), (Ok(0), 1));
    assert_eq!(d.native_maps(), 1);
    // type1 writes the unmapped size back (the VM's unmap_semantics).
    assert_eq!(k.unmap(&d.container, c, 0x10_0000, 2 * MB), (Ok(0), 1, MB));
}

#[test]
fn without_direct_access_the_retry_rounds_serve_the_same() {
    let d = Daemon::new();
    d.callers.deny_direct_access(TID);
    let (c, _g) = d.ready_container(TID, &d.group7, 5);
    let k = Kernel { callers: &d.callers, tid: TID };
    assert_eq!(k.map(&d.container, c, SHARED, 0x10_0000, MB), (Ok(0), 2));
    assert_eq!(k.unmap(&d.container, c, 0x10_0000, 2 * MB), (Ok(0), 2, MB));
    // Unmapping nothing: 0, and size 0 written back.
    assert_eq!(k.unmap(&d.container, c, 0x10_0000, MB), (Ok(0), 2, 0));
}

#[test]
fn an_unreadable_argument_is_efault_at_once() {
    let d = Daemon::new();
    let (c, _g) = d.ready_container(TID, &d.group7, 5);
    let io = ioctl_round1(VFIO_IOMMU_MAP_DMA, 0x7777_0000);
    assert_eq!(d.container.ioctl(c, &Daemon::caller(TID), &io), IoctlOutcome::Error(Errno::EFAULT));
}

#[test]
fn get_info_takes_three_rounds_and_fills_argsz() {
    let d = Daemon::new();
    let (c, _g) = d.ready_container(TID, &d.group7, 5);
    let k = Kernel { callers: &d.callers, tid: TID };
    let at = STRUCTS + 0x200;
    d.callers.poke(TID, at, &[0; 120]);
    d.callers.poke(TID, at, &120u32.to_ne_bytes());
    assert_eq!(k.ioctl(&d.container, c, VFIO_IOMMU_GET_INFO, at), (Ok(0), 3));
    let info = vfio_iommu_type1_info::read_from_prefix(&d.callers.peek(TID, at, 120)).unwrap().0;
    // type1 in the VM (container_errors, iommu_info.v1.full): argsz=120 flags=0x3
    // pgsizes=0x40201000 cap_offset=24.
    assert_eq!((info.argsz, info.flags, info.iova_pgsizes, info.cap_offset), (120, 3, 0x4020_1000, 24));
}

#[test]
fn without_an_iommu_a_map_is_einval_before_its_argument_is_read() {
    let d = Daemon::new();
    let c = d.container.open(&Daemon::caller(TID), 0).unwrap();
    // type1 in the VM: nogroup.map.v1 EINVAL; the argument pointer is never followed.
    let io = ioctl_round1(VFIO_IOMMU_MAP_DMA, 0x7777_0000);
    assert_eq!(d.container.ioctl(c, &Daemon::caller(TID), &io), IoctlOutcome::Error(Errno::EINVAL));
}

#[test]
fn private_and_unmapped_memory_fail_and_map_nothing() {
    let d = Daemon::new();
    let (c, _g) = d.ready_container(TID, &d.group7, 5);
    let k = Kernel { callers: &d.callers, tid: TID };
    assert_eq!(k.map(&d.container, c, PRIVATE, 0x10_0000, MB).0, Err(NOT_WITHOUT_PRELOAD));
    assert_eq!(k.map(&d.container, c, 0x6000_0000, 0x10_0000, MB).0, Err(Errno::EFAULT));
    assert_eq!(k.unmap(&d.container, c, 0x10_0000, MB), (Ok(0), 1, 0), "nothing was mapped");
}

#[test]
fn a_caller_that_execd_is_held_again() {
    let d = Daemon::new();
    let (c, _g) = d.ready_container(TID, &d.group7, 5);
    let k = Kernel { callers: &d.callers, tid: TID };
    assert_eq!(k.map(&d.container, c, SHARED, 0x10_0000, MB).0, Ok(0));
    d.callers.exec(TID);
    d.callers.map(TID, STRUCTS, 0x10000, false);
    d.callers.map(TID, SHARED + 64 * MB, 4 << 20, true);
    assert_eq!(k.map(&d.container, c, SHARED + 64 * MB, 0x40_0000, MB).0, Ok(0));
}

#[test]
fn adoption_hands_a_fresh_node_to_the_preload() {
    let d = Daemon::new();
    let caller = Daemon::caller(TID);
    let adopt = ioctl_round1(VFIO_SHIM_CUSE_ADOPT, 0);
    let c = d.container.open(&caller, 0).unwrap();
    assert_eq!(d.container.ioctl(c, &caller, &adopt), IoctlOutcome::ok(VFIO_SHIM_CUSE_ADOPT_PROTOCOL));
    assert_eq!(d.reg.counts(), (1, 1));
    // Its ioctls are the preload's: one reaching the daemon is from a process without it.
    let version = ioctl_round1(VFIO_GET_API_VERSION, 0);
    assert_eq!(d.container.ioctl(c, &caller, &version), IoctlOutcome::Error(Errno::EBADFD));

    // A container the daemon already serves stays with it.
    let served = d.container.open(&caller, 0).unwrap();
    assert_eq!(d.container.ioctl(served, &caller, &version), IoctlOutcome::ok(VFIO_API_VERSION));
    assert_eq!(d.container.ioctl(served, &caller, &adopt), IoctlOutcome::Error(Errno::EBUSY));

    // An adopted group keeps type1's one-opener slot until its release.
    let g = d.group7.open(&caller, 0).unwrap();
    assert_eq!(d.group7.ioctl(g, &caller, &adopt), IoctlOutcome::ok(VFIO_SHIM_CUSE_ADOPT_PROTOCOL));
    assert_eq!(d.group7.open(&Daemon::caller(OTHER_TID), 0), Err(Errno::EBUSY));
    d.group7.release(g, &caller);
    let again = d.group7.open(&Daemon::caller(OTHER_TID), 0).unwrap();
    d.container.release(c, &caller);
    d.container.release(served, &caller);
    assert_eq!(d.reg.counts(), (1, 0));

    // A group set on a container is served: too late to adopt.
    let theirs = d.container.open(&Daemon::caller(OTHER_TID), 0).unwrap();
    d.callers.give_fd(OTHER_TID, 8, CallerFd::ContainerNode(theirs));
    assert_eq!(d.set_container(&d.group7, again, OTHER_TID, 8), Ok(0));
    assert_eq!(d.group7.ioctl(again, &Daemon::caller(OTHER_TID), &adopt), IoctlOutcome::Error(Errno::EBUSY));
}

#[test]
fn set_container_resolves_the_callers_own_fd() {
    let d = Daemon::new();
    let g = d.group7.open(&Daemon::caller(TID), 0).unwrap();
    // type1 in the VM (the explorer runs): a closed fd is EBADF, a file that is no
    // container EBADFD.
    assert_eq!(d.set_container(&d.group7, g, TID, 5), Err(Errno::EBADF));
    d.callers.give_fd(TID, 6, CallerFd::Other);
    assert_eq!(d.set_container(&d.group7, g, TID, 6), Err(Errno::EBADFD));
    // Another process's container, named by a number that is an fd only in that process.
    let theirs = d.container.open(&Daemon::caller(OTHER_TID), 0).unwrap();
    d.callers.give_fd(OTHER_TID, 7, CallerFd::ContainerNode(theirs));
    assert_eq!(d.set_container(&d.group7, g, TID, 7), Err(Errno::EBADF));
    // An adopted container is the preload's, invisible to the daemon: no container.
    let adopted = d.container.open(&Daemon::caller(TID), 0).unwrap();
    let adopt = ioctl_round1(VFIO_SHIM_CUSE_ADOPT, 0);
    d.container.ioctl(adopted, &Daemon::caller(TID), &adopt);
    d.callers.give_fd(TID, 8, CallerFd::ContainerNode(adopted));
    assert_eq!(d.set_container(&d.group7, g, TID, 8), Err(Errno::EBADFD));
    let ours = d.container.open(&Daemon::caller(TID), 0).unwrap();
    d.callers.give_fd(TID, 9, CallerFd::ContainerNode(ours));
    assert_eq!(d.set_container(&d.group7, g, TID, 9), Ok(0));
}

#[test]
fn get_device_fd_needs_the_preload() {
    let d = Daemon::new();
    let (_c, g) = d.ready_container(TID, &d.group7, 5);
    let k = Kernel { callers: &d.callers, tid: TID };
    let name = STRUCTS + 0x400;
    d.callers.poke(TID, name, b"0000:00:03.0\0");
    assert_eq!(k.ioctl(&d.group7, g, VFIO_GROUP_GET_DEVICE_FD, name).0, Err(NOT_WITHOUT_PRELOAD));
    // No device is left open: the group leaves its container (type1: EBUSY while a device
    // of it is open).
    assert_eq!(k.ioctl(&d.group7, g, VFIO_GROUP_UNSET_CONTAINER, 0).0, Ok(0));
}

#[test]
fn file_handles_are_told_only_to_the_daemons_threads() {
    let d = Daemon::new();
    let c = d.container.open(&Daemon::caller(TID), 0).unwrap();
    let identify = ioctl_round1(VFIO_SHIM_CUSE_IDENTIFY, 0);
    assert_eq!(d.container.ioctl(c, &Daemon::caller(TID), &identify), IoctlOutcome::Error(Errno::ENOTTY));
    assert_eq!(d.container.ioctl(c, &Daemon::caller(DAEMON_TID), &identify), IoctlOutcome::ok(c as i32));
}

/// Holds the first detached DMA call at `held_iova` until released.
struct Gate {
    held_iova: u64,
    entered: Mutex<Option<mpsc::Sender<()>>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl Gate {
    fn install(d: &Daemon, held_iova: u64) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let gate = Arc::new(Gate { held_iova, entered: Mutex::new(Some(entered_tx)), release: Mutex::new(release_rx) });
        let hook = move |op| {
            let iova = match op {
                DmaOp::Map { iova, .. } | DmaOp::Unmap { iova, .. } => iova,
            };
            let first = (iova == gate.held_iova).then(|| gate.entered.lock().unwrap().take()).flatten();
            if let Some(entered) = first {
                entered.send(()).unwrap();
                let _ = gate.release.lock().unwrap().recv();
            }
        };
        d.reg.with_shim(|s| s.backend_mut().detach_dma_through(Some(DetachHook(Arc::new(hook)))));
        (entered_rx, release_tx)
    }
}

#[test]
fn a_map_in_flight_holds_its_container_only() {
    let d = Arc::new(Daemon::new());
    let (c1, _) = d.ready_container(TID, &d.group7, 5);
    let (c2, _) = d.ready_container(OTHER_TID, &d.group9, 5);
    let (entered, release) = Gate::install(&d, 0x4000_0000);

    let long = {
        let d = Arc::clone(&d);
        thread::spawn(move || Kernel { callers: &d.callers, tid: TID }.map(&d.container, c1, SHARED, 0x4000_0000, MB).0)
    };
    entered.recv_timeout(Duration::from_secs(10)).expect("the long map is in flight");

    // Another container's calls go on while it is in flight.
    let other = Kernel { callers: &d.callers, tid: OTHER_TID };
    assert_eq!(other.map(&d.container, c2, SHARED, 0x10_0000, MB).0, Ok(0));
    assert_eq!(other.unmap(&d.container, c2, 0x10_0000, MB), (Ok(0), 1, MB));

    // Its own container's next call waits for it, and so does a release (which may touch
    // any object); a container's open does not.
    let (done_tx, done_rx) = mpsc::channel();
    let same = {
        let (d, done_tx) = (Arc::clone(&d), done_tx.clone());
        thread::spawn(move || {
            let r = Kernel { callers: &d.callers, tid: TID }.unmap(&d.container, c1, 0x4000_0000, MB);
            done_tx.send("unmap").unwrap();
            r
        })
    };
    let open = {
        let d = Arc::clone(&d);
        thread::spawn(move || {
            let fh = d.container.open(&Daemon::caller(OTHER_TID), 0).unwrap();
            d.container.release(fh, &Daemon::caller(OTHER_TID));
            done_tx.send("release").unwrap();
        })
    };
    // A wrong lock shows here as an early finish; a right one can never finish early.
    assert_eq!(done_rx.recv_timeout(Duration::from_millis(300)), Err(mpsc::RecvTimeoutError::Timeout));
    release.send(()).unwrap();
    assert_eq!(long.join().unwrap(), Ok(0));
    assert_eq!(same.join().unwrap(), (Ok(0), 1, MB), "the unmap ran after the map");
    open.join().unwrap();
    assert_eq!(done_rx.iter().take(2).count(), 2);
}

#[test]
fn a_failed_call_in_flight_releases_its_container() {
    let d = Daemon::new();
    let (c, _) = d.ready_container(TID, &d.group7, 5);
    let (entered, release) = Gate::install(&d, 0x10_0000);
    drop(release);
    d.reg.with_shim(|s| s.backend_mut().fail_at(Op::IoasMap, 0, Errno::ENOMEM));
    let k = Kernel { callers: &d.callers, tid: TID };
    // The native call fails after the detached run (in the fake's bookkeeping).
    assert_eq!(k.map(&d.container, c, SHARED, 0x10_0000, MB).0, Err(Errno::ENOMEM));
    entered.try_recv().expect("the map was detached");
    assert!(!d.reg.with_shim(|s| s.any_in_flight()));
    assert_eq!(k.map(&d.container, c, SHARED, 0x10_0000, MB).0, Ok(0));
}
