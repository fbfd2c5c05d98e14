//! `vfio-shim-cuse`: serves a character device through /dev/cuse.
//!
//! By default the legacy VFIO container (`vfio/vfio`, see the crate's `container` module);
//! `--test-device` serves the test device instead.
//! SIGTERM/SIGINT/SIGHUP stop it cleanly: requests in hand are answered, then /dev/cuse is
//! closed, which removes the node.

#![deny(unsafe_op_in_unsafe_fn)]

use clap::Parser;
use log::{error, info};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::ForkResult;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use vfio_shim_cuse::session::{Config, Session};
use vfio_shim_cuse::container::ContainerDevice;
use vfio_shim_cuse::test_device::TestDevice;

#[derive(Parser, Debug)]
#[command(name = "vfio-shim-cuse", version, about = "Serve a character device from userspace through CUSE")]
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
    #[arg(long)]
    test_device: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
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
    if args.test_device {
        let device = TestDevice::new(config.ioctl_limit);
        run_session(Session::new(device, config).map_err(|e| e.to_string())?, ready, stop_signals)
    } else {
        let device = ContainerDevice::new(config.ioctl_limit);
        run_session(Session::new(device, config).map_err(|e| e.to_string())?, ready, stop_signals)
    }
}

fn run_session<D: vfio_shim_cuse::CuseDevice + 'static>(
    session: Session<D>,
    ready: Option<std::fs::File>,
    stop_signals: SigSet,
) -> Result<(), String> {
    session.init().map_err(|e| e.to_string())?;
    if let Some(mut w) = ready {
        // The parent exits 0 on this byte; a child that dies before it makes the parent fail.
        let _ = w.write_all(b"1");
    }

    let stopper = session.stopper();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || match stop_signals.wait() {
            Ok(sig) => {
                info!("{sig}: stopping");
                stopper.stop();
            }
            Err(e) => error!("sigwait: {}", e.desc()),
        })
        .map_err(|e| format!("spawn signal thread: {e}"))?;

    let result = session.run().map_err(|e| e.to_string());
    drop(session); // closes /dev/cuse: the kernel removes the node
    info!("stopped");
    result
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
