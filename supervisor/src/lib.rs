//! vfio-shim-supervisor: the third glue beside the preload and the CUSE daemon
//! (docs/supervisor.md). It starts a program under a seccomp filter that sends its VFIO opens
//! and ioctls here, answers them from the same core (`Shim<KernelBackend>`), installs real
//! kernel fds in the program, and pins the program's memory in the program's own thread. It
//! connects the kernel's notifications to the core; every syscall is `vfio_shim_sys`'s.

mod calls;
mod kvm;
mod map;
mod objects;
mod target;

use std::collections::HashMap;
use std::ffi::CString;
use std::path::Path;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use vfio_shim::{ContainerId, Shim};
use vfio_shim_sys::private_nodes::PrivateNodes;
use vfio_shim_sys::ptrace::{next_event, ChildEvents, TraceEvent};
use vfio_shim_sys::seccomp::{FilterProgram, Listener};
use vfio_shim_sys::status_registry::{Publisher, Server};
use vfio_shim_sys::KernelBackend;

use objects::Objects;

/// Where the private nodes are mounted, in the supervisor's own mount namespace only.
const NODE_DIR: &str = "/run/vfio-shim/supervisor";

/// The supervisor's state: the core, the objects it gave the program, and the kernel's ends.
pub(crate) struct Supervisor {
    shim: Shim<KernelBackend>,
    nodes: Arc<Mutex<PrivateNodes>>,
    objects: Objects,
    listener: Listener,
    /// What `vfio-shim status` lists: each container under the process that opened it.
    status: Publisher,
    holders: HashMap<ContainerId, i32>,
}

/// Runs `path` with `argv` and `envp` under the supervisor until every task of it is gone;
/// returns the exit status of the program's first process (128 + signal when killed), as a
/// shell reports it.
pub fn run(path: &Path, argv: &[CString], envp: &[CString]) -> Result<i32, Errno> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let filter = FilterProgram::supervisor(&[vfio_shim::abi::VFIO_IOMMU_MAP_DMA, vfio_shim::abi::KVM_SET_DEVICE_ATTR]);
    let started = vfio_shim_sys::supervised_start::start(&path, argv, envp, &filter)?;
    // After the start: the program runs with its caller's signal mask, not ours.
    let events = ChildEvents::new()?;
    // After the fork: the program keeps the system's mount namespace.
    std::fs::create_dir_all(NODE_DIR).map_err(vfio_shim_sys::errno_of)?;
    let nodes = Arc::new(Mutex::new(PrivateNodes::create(Path::new(NODE_DIR))?));
    let mut backend = KernelBackend::new();
    let opener_nodes = Arc::clone(&nodes);
    backend.supervise(Box::new(move |device: &Path| {
        let mut nodes = opener_nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.open(device, OFlag::O_RDWR).map(|(file, _)| file)
    }));
    let shim = Shim::with_config(backend, vfio_shim_sys::type1_params::config_or_default());
    let mut sup = Supervisor {
        shim,
        nodes,
        objects: Objects::default(),
        listener: started.listener,
        status: Publisher::new(Server::Supervisor),
        holders: HashMap::new(),
    };
    sup.serve(started.pid, events)
}

impl Supervisor {
    fn serve(&mut self, first: nix::unistd::Pid, mut events: ChildEvents) -> Result<i32, Errno> {
        let mut status = None;
        loop {
            // Tasks first: a traced MAP waits in a stop, and exits end the loop.
            loop {
                match next_event(false) {
                    Ok(Some(TraceEvent::Seccomp(stop))) => {
                        // A file the caller closed before this call is released first, as
                        // the kernel released it (close runs the release before returning).
                        self.releases();
                        self.traced_call(stop)
                    }
                    Ok(Some(TraceEvent::Exited(pid, code))) if pid == first => status = Some(code),
                    Ok(Some(TraceEvent::Killed(pid, sig))) if pid == first => status = Some(128 + sig),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(Errno::ECHILD) => {
                        self.releases();
                        return Ok(status.unwrap_or(0));
                    }
                    Err(e) => return Err(e),
                }
            }
            self.park_idle_contexts();
            self.publish_status();
            let (notified, released, tasks) = {
                let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
                let mut fds = [
                    PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                    PollFd::new(nodes.as_fd(), PollFlags::POLLIN),
                    PollFd::new(events.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(e),
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| r.intersects(PollFlags::POLLIN));
                (ready(&fds[0]), ready(&fds[1]), ready(&fds[2]))
            };
            if tasks {
                for sig in events.forwarded() {
                    events.forward(first, sig);
                }
            }
            if released {
                self.releases();
            }
            if notified {
                match self.listener.receive() {
                    Ok(call) => {
                        self.releases();
                        self.notified_call(call)
                    }
                    // The caller went away (killed, or a signal restarted its call).
                    Err(Errno::ENOENT) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// The objects whose last file went: the core closes them as type1 closes its files.
    fn releases(&mut self) {
        let gone = {
            let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            match nodes.released() {
                Ok(gone) => gone,
                Err(e) => {
                    log::error!("supervisor: reading releases: {e}");
                    return;
                }
            }
        };
        for node in gone {
            if let Some(object) = self.objects.remove(node) {
                object.release(&mut self.shim);
            }
        }
    }

    /// Republishes the containers for `vfio-shim status` before each wait, so the list is
    /// current whenever the program is not in a call of ours.
    fn publish_status(&mut self) {
        let containers = self.shim.containers_status();
        self.holders.retain(|id, _| containers.iter().any(|c| c.id == *id));
        let holders = &self.holders;
        self.status.publish(&containers, |id| holders.get(&id).copied().unwrap_or(0));
    }

    /// Contexts without groups are not held: the program's last close of its container fd
    /// must be the file's release (docs/supervisor.md, "Who holds what").
    fn park_idle_contexts(&mut self) {
        for container in self.objects.containers() {
            if self.shim.container_has_groups(container) {
                continue;
            }
            if let Some(ctx) = self.shim.container_iommufd(container) {
                self.shim.backend_mut().park_iommufd(ctx);
            }
        }
    }
}
