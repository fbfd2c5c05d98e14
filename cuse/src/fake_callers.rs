//! Callers in memory, over the core's fake backend: the daemon's registry and node handlers
//! run on the host with them. Each caller thread has its own memory (regions, shared or
//! private, which a map through the daemon can or cannot pin) and its own fds; an exec gives
//! it a new address space, as the kernel's would.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use vfio_shim::fake::{CallerMemory, FakeBackend};
use vfio_shim_sys::caller::PRIVATE_MEMORY_ERRNO;

use crate::callers::{CallerFd, Callers, MapRequest};

#[derive(Debug, Clone)]
struct Region {
    start: u64,
    bytes: Vec<u8>,
    /// A shared file mapping, which the daemon can pin by file; private memory it cannot.
    shared: bool,
}

impl Region {
    fn covers(&self, addr: u64, len: u64) -> bool {
        addr >= self.start && addr.checked_add(len).is_some_and(|end| end <= self.start + self.bytes.len() as u64)
    }
}

#[derive(Debug, Default)]
struct Thread {
    /// Bumped by each exec.
    generation: u64,
    regions: Vec<Region>,
    fds: HashMap<i32, CallerFd>,
    /// The daemon may not read this caller's memory directly (Yama ptrace scope, another
    /// user namespace): only the retry rounds reach it.
    unreadable: bool,
}

#[derive(Debug, Default)]
struct World {
    threads: HashMap<u32, Thread>,
    own: HashSet<u32>,
}

/// The fake world of callers; clones share it.
#[derive(Debug, Default, Clone)]
pub struct FakeCallers {
    world: Arc<Mutex<World>>,
}

/// A fake caller held: the thread and the address space it had.
#[derive(Debug)]
pub struct FakeProcess {
    tid: u32,
    generation: u64,
}

/// A fake caller's memory for one call: the regions it had, and whether they were gone.
#[derive(Debug)]
pub struct FakeMemory {
    regions: Vec<(u64, u64, bool)>,
    gone: bool,
}

impl FakeCallers {
    pub fn new() -> Self {
        Self::default()
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds caller thread `tid` with no memory and no fds.
    pub fn add_thread(&self, tid: u32) {
        self.world().threads.entry(tid).or_default();
    }

    /// Makes `tid` one of the daemon's own threads.
    pub fn add_own_thread(&self, tid: u32) {
        self.world().own.insert(tid);
    }

    /// Maps `len` zeroed bytes at `addr` in `tid`'s memory, shared or private.
    pub fn map(&self, tid: u32, addr: u64, len: usize, shared: bool) {
        let mut w = self.world();
        let t = w.threads.entry(tid).or_default();
        t.regions.push(Region { start: addr, bytes: vec![0; len], shared });
    }

    /// Writes `bytes` at `addr` of `tid`'s memory (which must be mapped).
    pub fn poke(&self, tid: u32, addr: u64, bytes: &[u8]) {
        let mut w = self.world();
        let t = w.threads.get_mut(&tid).expect("a thread of the test");
        let r = region_mut(t, addr, bytes.len() as u64).expect("mapped memory");
        let at = (addr - r.start) as usize;
        r.bytes[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// Reads `len` bytes at `addr` of `tid`'s memory (which must be mapped).
    pub fn peek(&self, tid: u32, addr: u64, len: usize) -> Vec<u8> {
        let mut w = self.world();
        let t = w.threads.get_mut(&tid).expect("a thread of the test");
        let r = region_mut(t, addr, len as u64).expect("mapped memory");
        let at = (addr - r.start) as usize;
        r.bytes[at..at + len].to_vec()
    }

    /// Gives `tid` the fd `fd`, which is `what`.
    pub fn give_fd(&self, tid: u32, fd: i32, what: CallerFd) {
        self.world().threads.entry(tid).or_default().fds.insert(fd, what);
    }

    /// Forbids the daemon direct reads and writes of `tid`'s memory.
    pub fn deny_direct_access(&self, tid: u32) {
        self.world().threads.entry(tid).or_default().unreadable = true;
    }

    /// `tid` execs: a new address space with nothing mapped, the fds kept.
    pub fn exec(&self, tid: u32) {
        let mut w = self.world();
        let t = w.threads.entry(tid).or_default();
        t.generation += 1;
        t.regions.clear();
    }
}

impl FakeCallers {
    /// The daemon's direct access to `len` bytes at `addr` of `tid`: EPERM when denied,
    /// EFAULT for memory the caller does not have.
    fn direct(&self, tid: u32, addr: u64, len: usize, f: impl FnOnce(&mut [u8])) -> Result<(), Errno> {
        let mut w = self.world();
        let t = w.threads.get_mut(&tid).ok_or(Errno::ESRCH)?;
        if t.unreadable {
            return Err(Errno::EPERM);
        }
        let r = region_mut(t, addr, len as u64).ok_or(Errno::EFAULT)?;
        let at = (addr - r.start) as usize;
        f(&mut r.bytes[at..at + len]);
        Ok(())
    }
}

fn region_mut(t: &mut Thread, addr: u64, len: u64) -> Option<&mut Region> {
    t.regions.iter_mut().find(|r| r.covers(addr, len))
}

impl Callers for FakeCallers {
    type Backend = FakeBackend;
    type Process = FakeProcess;
    type Memory = FakeMemory;

    fn hold(&self, tid: u32) -> Result<FakeProcess, Errno> {
        let w = self.world();
        let t = w.threads.get(&tid).ok_or(Errno::ESRCH)?;
        Ok(FakeProcess { tid, generation: t.generation })
    }

    fn is_current(&self, process: &FakeProcess) -> bool {
        self.world().threads.get(&process.tid).is_some_and(|t| t.generation == process.generation)
    }

    fn memory(&self, process: Arc<FakeProcess>, _map: Option<MapRequest>) -> FakeMemory {
        let w = self.world();
        match w.threads.get(&process.tid).filter(|t| t.generation == process.generation) {
            Some(t) => FakeMemory {
                regions: t.regions.iter().map(|r| (r.start, r.bytes.len() as u64, r.shared)).collect(),
                gone: false,
            },
            None => FakeMemory { regions: Vec::new(), gone: true },
        }
    }

    fn memory_gone(&self, memory: &FakeMemory) -> bool {
        memory.gone
    }

    fn read(&self, tid: u32, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.direct(tid, addr, buf.len(), |mem| buf.copy_from_slice(mem))
    }

    fn write(&self, tid: u32, addr: u64, bytes: &[u8]) -> Result<(), Errno> {
        self.direct(tid, addr, bytes.len(), |mem| mem.copy_from_slice(bytes))
    }

    fn fd(&self, process: &FakeProcess, fd: i32, container_rdev: Option<u64>) -> Result<CallerFd, Errno> {
        let w = self.world();
        let t = w.threads.get(&process.tid).ok_or(Errno::ESRCH)?;
        Ok(match t.fds.get(&fd) {
            None => CallerFd::Closed,
            // Before the container node's INIT the daemon cannot tell its own files.
            Some(CallerFd::ContainerNode(_)) if container_rdev.is_none() => CallerFd::Other,
            Some(&what) => what,
        })
    }

    fn is_own_thread(&self, tid: u32) -> bool {
        self.world().own.contains(&tid)
    }

    fn rawio_of(_backend: &mut FakeBackend, _tid: u32) {
        // The fake world's callers all hold CAP_SYS_RAWIO (FakeBackend's default); the no-IOMMU
        // checks themselves are the core's host tests (shim/tests/noiommu.rs).
    }

    fn lend(backend: &mut FakeBackend, memory: Option<FakeMemory>) {
        backend.lend_caller_memory(memory.map(|m| {
            CallerMemory(Box::new(move |vaddr, length, _write| {
                let end = vaddr.checked_add(length).ok_or(Errno::EFAULT)?;
                match m.regions.iter().find(|&&(start, len, _)| vaddr >= start && end <= start + len) {
                    Some(&(_, _, true)) => Ok(()),
                    Some(_) => Err(PRIVATE_MEMORY_ERRNO),
                    None => Err(Errno::EFAULT),
                }
            }))
        }));
    }
}
