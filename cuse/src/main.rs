//! `vfio-shim-cuse`: serves a character device through /dev/cuse.
//!
//! By default the legacy VFIO container (`vfio/vfio`, see the crate's `container` module);
//! `--test-device` serves the test device instead.
//! SIGTERM/SIGINT/SIGHUP stop it cleanly: requests in hand are answered, then /dev/cuse is
//! closed, which removes the node.

#![deny(unsafe_op_in_unsafe_fn)]

use clap::Parser;
use log::{error, info, warn};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::ForkResult;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use vfio_shim_cuse::container::ContainerDevice;
use vfio_shim_cuse::group_node::GroupDevice;
use vfio_shim_cuse::registry::Registry;
use vfio_shim_cuse::session::{Config, Session, Stopper};
#[cfg(feature = "test-device")]
use vfio_shim_cuse::test_device::TestDevice;

#[derive(Parser, Debug)]
#[command(
    name = "vfio-shim-cuse",
    version,
    about = "Serve the legacy VFIO container /dev/vfio/vfio (and group nodes) over iommufd through CUSE",
    long_about = "Serves /dev/vfio/vfio, and /dev/vfio/<N> on kernels without VFIO groups, as real \
                  character devices through CUSE, with type1's semantics over iommufd. Programs \
                  that cannot be started with `vfio-shim run` (services, static binaries) find the \
                  nodes there; memory they map must be shared (shmem, memfd, hugetlbfs) unless the \
                  preload is loaded too. Detaches once the nodes exist; SIGTERM stops it. Run by \
                  the vfio-shim-cuse.service unit."
)]
struct Args {
    /// Device name under /dev (slashes make directories: vfio/vfio is /dev/vfio/vfio).
    #[arg(long, default_value = "vfio/vfio")]
    name: String,
    /// Worker threads.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Stay in the foreground (default: detach once the node exists).
    #[arg(long)]
    foreground: bool,
    /// Serve the test device (VFIO-style test ioctls, see the crate's test_device module).
    #[cfg(feature = "test-device")]
    #[arg(long)]
    test_device: bool,
    /// Group nodes to serve beside the container, named `<dir of --name>/<N>`: `auto` (every
    /// IOMMU group with a VFIO device and no group node of the kernel's, and in vfio's no-IOMMU
    /// mode every no-IOMMU cdev `noiommu-vfio<N>` as `<dir>/noiommu-<N>`), `none`, or a
    /// comma-separated list of group numbers and `noiommu-<N>` names.
    #[arg(long, default_value = "auto")]
    groups: String,
    /// Keep every capability (default: once the nodes exist, keep only what serving clients
    /// needs: CAP_SYS_PTRACE, CAP_CHECKPOINT_RESTORE, CAP_DAC_READ_SEARCH, CAP_IPC_LOCK).
    #[arg(long)]
    keep_privileges: bool,
    /// Print the man page (roff) and exit: how the package makes vfio-shim-cuse(8).
    #[arg(long, hide = true)]
    print_man: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_man {
        use clap::CommandFactory;
        let man = clap_mangen::Man::new(Args::command()).section("8");
        return match man.render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vfio-shim-cuse: {e}");
                ExitCode::FAILURE
            }
        };
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let ready = if args.foreground {
        None
    } else {
        match daemonize() {
            Ok(Some(w)) => Some(w),
            Ok(None) => return ExitCode::SUCCESS, // the parent, after the child reported ready
            Err(code) => return code,
        }
    };
    match serve(&args, ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &Args, ready: Option<std::fs::File>) -> Result<(), String> {
    // Block the stop signals before any thread exists, so every thread inherits the mask and
    // only the waiter below receives them.
    let mut stop_signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        stop_signals.add(s);
    }
    stop_signals.thread_block().map_err(|e| format!("block signals: {}", e.desc()))?;

    let mut config = Config::new(&args.name);
    config.threads = usize::from(args.threads);
    #[cfg(feature = "test-device")]
    if args.test_device {
        let session = Session::new(TestDevice::new(config.ioctl_limit), config).map_err(|e| e.to_string())?;
        session.init().map_err(|e| e.to_string())?;
        return run_sessions(&[&session], ready, stop_signals);
    }

    let groups = groups_to_serve(&args.groups, &args.name)?;
    let reg = Registry::new(config.ioctl_limit);
    let container = Session::new(ContainerDevice::new(reg.clone()), config.clone()).map_err(|e| e.to_string())?;
    container.init().map_err(|e| e.to_string())?;
    reg.set_container_rdev(node_rdev(&args.name)?);
    let mut group_sessions = Vec::new();
    let serves_noiommu = groups.iter().any(|g| g.noiommu);
    for g in groups {
        let mut gc = config.clone();
        gc.devname = group_node_name(&args.name, &g.node());
        gc.threads = config.threads.min(2);
        let device = if g.noiommu {
            GroupDevice::noiommu(reg.clone(), g.number)
        } else {
            GroupDevice::new(reg.clone(), g.number)
        };
        let s = Session::new(device, gc).map_err(|e| e.to_string())?;
        s.init().map_err(|e| e.to_string())?;
        group_sessions.push(s);
    }
    if serves_noiommu {
        warn!("serving no-IOMMU group nodes: their devices DMA to any physical address (docs/noiommu.md)");
    }
    if !args.keep_privileges {
        drop_privileges(serves_noiommu)?;
    }
    let mut all: Vec<&dyn Served> = vec![&container];
    all.extend(group_sessions.iter().map(|s| s as &dyn Served));
    run_sessions(&all, ready, stop_signals)
}

/// A running session of any device type.
trait Served: Sync {
    fn run(&self) -> Result<(), String>;
    fn stopper(&self) -> Stopper;
}

impl<D: vfio_shim_cuse::CuseDevice + 'static> Served for Session<D> {
    fn run(&self) -> Result<(), String> {
        Session::run(self).map_err(|e| e.to_string())
    }
    fn stopper(&self) -> Stopper {
        Session::stopper(self)
    }
}

/// Serves every (initialised) session until a stop signal, or until one of them ends (its
/// connection aborted): the nodes live and die together. `sessions[0]` (the container) stops
/// last: a group worker resolving a `SET_CONTAINER` waits on the container's workers (the
/// identify ioctl, or the release of its duplicate of the caller's fd), so the groups are
/// stopped and joined first.
fn run_sessions(sessions: &[&dyn Served], ready: Option<std::fs::File>, stop_signals: SigSet) -> Result<(), String> {
    if let Some(mut w) = ready {
        // The parent exits 0 on this byte; a child that dies before it makes the parent fail.
        let _ = w.write_all(b"1");
    }
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let on_signal = stop_tx.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || match stop_signals.wait() {
            Ok(sig) => {
                info!("{sig}: stopping");
                let _ = on_signal.send(());
            }
            Err(e) => error!("sigwait: {}", e.desc()),
        })
        .map_err(|e| format!("spawn signal thread: {e}"))?;

    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .iter()
            .map(|s| {
                let done = stop_tx.clone();
                scope.spawn(move || {
                    let r = s.run();
                    let _ = done.send(());
                    r
                })
            })
            .collect();
        let _ = stop_rx.recv();
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<(), String>>| {
            h.join().unwrap_or_else(|_| Err("session panicked".into()))
        };
        let mut handles = handles.into_iter();
        let container = handles.next();
        sessions[1..].iter().for_each(|s| s.stopper().stop());
        let mut results: Vec<Result<(), String>> = handles.map(join).collect();
        sessions[0].stopper().stop();
        results.extend(container.map(join));
        results
    });
    info!("stopped");
    results.into_iter().collect()
}

/// What serving clients needs once the nodes exist (/dev/cuse is open; devices and iommufds
/// are opened as their owner, root): the caller's fds and memory map (pidfd_getfd and
/// /proc/<pid>/maps of another user: CAP_SYS_PTRACE), /proc/<pid>/map_files
/// (CAP_CHECKPOINT_RESTORE), reopening a caller's shared memory file whatever its mode
/// (CAP_DAC_READ_SEARCH), and pinning it without being charged (CAP_IPC_LOCK). Everything else,
/// CAP_SYS_ADMIN included, goes (from the bounding set too when we hold CAP_SETPCAP), with
/// no-new-privs. Runs before any worker thread exists. Serving no-IOMMU nodes keeps
/// CAP_SYS_RAWIO too: their cdevs open only with it (each caller's own is checked as well).
fn drop_privileges(noiommu: bool) -> Result<(), String> {
    use vfio_shim_sys::privileges::*;
    let keep = [CAP_SYS_PTRACE, CAP_CHECKPOINT_RESTORE, CAP_DAC_READ_SEARCH, CAP_IPC_LOCK]
        .iter()
        .fold(0u64, |m, c| m | (1 << c));
    let keep = if noiommu { keep | (1 << CAP_SYS_RAWIO) } else { keep };
    let kept = keep_only(keep).map_err(|e| format!("dropping capabilities: {}", e.desc()))?;
    if kept != keep {
        warn!("capabilities: started without some of {keep:#x}; kept {kept:#x}: some clients may be refused");
    } else {
        info!(
            "capabilities: kept {kept:#x} (ptrace, checkpoint_restore, dac_read_search, ipc_lock{}), no-new-privs",
            if noiommu { ", sys_rawio" } else { "" }
        );
    }
    Ok(())
}

/// A group node to serve: IOMMU group `number`, or no-IOMMU group `number`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ServedGroup {
    noiommu: bool,
    number: u32,
}

impl ServedGroup {
    /// The node's last path component: `<N>` or `noiommu-<N>`.
    fn node(&self) -> String {
        if self.noiommu {
            format!("noiommu-{}", self.number)
        } else {
            self.number.to_string()
        }
    }
}

/// `vfio/vfio` -> `vfio/<node>`; a name without a directory -> `<node>`.
fn group_node_name(container_name: &str, node: &str) -> String {
    match container_name.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{node}"),
        None => node.to_string(),
    }
}

/// The device number the kernel gave a CUSE node, from `/sys/class/cuse/<name>/dev`
/// (`major:minor`; a `/` in the name is `!` there).
fn node_rdev(name: &str) -> Result<u64, String> {
    let path = format!("/sys/class/cuse/{}/dev", name.replace('/', "!"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let (major, minor) = text.trim().split_once(':').ok_or_else(|| format!("{path}: {text:?}"))?;
    let (major, minor) = (major.parse::<u32>(), minor.parse::<u32>());
    match (major, minor) {
        (Ok(ma), Ok(mi)) => Ok(libc::makedev(ma, mi)),
        _ => Err(format!("{path}: {text:?}")),
    }
}

/// The groups `--groups` names. `auto`: every IOMMU group with a device bound to a VFIO driver
/// (it has a `vfio-dev/vfioN` cdev) whose node path is free (a kernel with VFIO groups has its
/// own `/dev/vfio/<N>`, which wins).
fn groups_to_serve(spec: &str, container_name: &str) -> Result<Vec<ServedGroup>, String> {
    use vfio_shim::Backend;
    match spec {
        "none" => Ok(Vec::new()),
        "auto" => {
            let mut backend = vfio_shim_sys::KernelBackend::new();
            let mut found = Vec::new();
            let numbers = |dir: &str, prefix: &str| -> Vec<u32> {
                std::fs::read_dir(dir)
                    .map(|d| {
                        d.flatten()
                            .filter_map(|e| e.file_name().to_str()?.strip_prefix(prefix)?.parse::<u32>().ok())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let iommu = numbers("/sys/kernel/iommu_groups", "")
                .into_iter()
                .map(|number| ServedGroup { noiommu: false, number });
            // No-IOMMU cdevs exist only in vfio's no-IOMMU mode.
            let noiommu = numbers("/sys/class/vfio-dev", "noiommu-vfio")
                .into_iter()
                .map(|number| ServedGroup { noiommu: true, number });
            for g in iommu.chain(noiommu) {
                let devices =
                    if g.noiommu { backend.noiommu_group_devices(g.number) } else { backend.group_devices(g.number) };
                let has_vfio = devices.is_ok_and(|d| d.iter().any(|d| d.cdev.is_some()));
                let node = format!("/dev/{}", group_node_name(container_name, &g.node()));
                if has_vfio && std::path::Path::new(&node).exists() {
                    info!("group {}: {node} exists (the kernel's own group node), not served", g.node());
                } else if has_vfio {
                    found.push(g);
                }
            }
            found.sort_unstable();
            Ok(found)
        }
        list => list
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let s = s.trim();
                let (noiommu, n) = match s.strip_prefix("noiommu-") {
                    Some(n) => (true, n),
                    None => (false, s),
                };
                n.parse::<u32>()
                    .map(|number| ServedGroup { noiommu, number })
                    .map_err(|_| format!("--groups: {s:?} is not a group number or noiommu-<N>"))
            })
            .collect(),
    }
}

/// Detaches: the parent waits until the child reports the node exists (exit 0) or dies (exit 1).
/// Returns the child's end of the report pipe, `None` in the parent.
fn daemonize() -> Result<Option<std::fs::File>, ExitCode> {
    let fail = |what: &str, e: nix::errno::Errno| {
        eprintln!("vfio-shim-cuse: {what}: {}", e.desc());
        ExitCode::FAILURE
    };
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().map_err(|e| fail("pipe", e))?;
    // SAFETY: no other thread exists yet (nothing above spawns one), so the child may run any
    // code, not only async-signal-safe functions.
    match unsafe { nix::unistd::fork() }.map_err(|e| fail("fork", e))? {
        ForkResult::Parent { .. } => {
            drop(w);
            let mut byte = [0u8; 1];
            let mut r = std::fs::File::from(r);
            match r.read(&mut byte) {
                Ok(1) if byte[0] == b'1' => Ok(None),
                _ => Err(ExitCode::FAILURE),
            }
        }
        ForkResult::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            let _ = std::env::set_current_dir("/");
            if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
                let _ = nix::unistd::dup2_stdin(&null);
                let _ = nix::unistd::dup2_stdout(&null);
            }
            Ok(Some(std::fs::File::from(w)))
        }
    }
}
