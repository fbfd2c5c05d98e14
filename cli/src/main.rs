//! The `vfio-shim` command: the operator's front end. `run` starts a program through the
//! preload library; `trace` does the same and logs each legacy call; `status` lists the live containers;
//! `doctor` checks whether a host can run legacy VFIO programs and says what
//! to fix.

mod doctor;
mod run;
mod status;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vfio-shim",
    version,
    about = "Legacy VFIO (type1 container and groups) over iommufd",
    long_about = "Keeps programs that speak VFIO's legacy container API (/dev/vfio/vfio, \
                  /dev/vfio/<N>, VFIO_SET_IOMMU type1) working on kernels that offer only iommufd, \
                  with type1's behaviour. Start with `vfio-shim doctor`.",
    after_long_help = "Environment:\n  \
        VFIO_SHIM_PRELOAD       the preload library to use (default: next to vfio-shim, or \
                                lib/<multiarch>/ beside its bin/)\n  \
        VFIO_SHIM_LOG           the shim's log level in the program (error, warn, info, debug)\n  \
        VFIO_SHIM_TRACE         a file, or `stderr`: one line per legacy call (what `trace` sets)\n  \
        VFIO_SHIM_TRACE_FORMAT  `json` for JSON lines\n  \
        VFIO_SHIM_STATUS_DIR    where programs publish their containers for `status` (default \
                                /run/vfio-shim/status)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run COMMAND with the preload library, so its legacy VFIO calls are served over iommufd
    /// (VFIO_SHIM_LOG=debug logs what the shim does).
    Run {
        /// Serve it with the seccomp supervisor, not the preload library (the default for a
        /// statically linked program, which the preload cannot reach).
        #[arg(long)]
        supervise: bool,
        /// The program and its arguments (put `--` before them when they start with `-`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// Run COMMAND as `run` does, writing one line per legacy VFIO call it makes: time, pid,
    /// the call with its arguments, its result, the native calls it became and its duration.
    Trace {
        /// Append the lines to FILE instead of stderr.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
        /// The program and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// List the legacy containers open through vfio-shim on this host: the process using
    /// each, its IOMMU and IOAS, groups, devices, mappings and mapped bytes, and the process's
    /// pinned memory (VmPin).
    Status {
        /// The list as one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Write vfio-shim(1) and a page per subcommand into DIR (`man DIR`), or print a shell's
    /// completions (`bash`, `zsh`, `fish`): for packaging.
    #[command(hide = true)]
    Generate { what: String, dir: Option<PathBuf> },
    /// Check this host for legacy VFIO programs: kernel, IOMMU, devices, the caller's limits,
    /// the daemon and the preload library. One line per check with the fix; exit status 1 when
    /// a check fails.
    Doctor {
        /// PCI devices to check (e.g. 0000:00:03.0); default: every device on a VFIO driver.
        #[arg(value_name = "BDF")]
        devices: Vec<String>,
        /// The guest memory the program will map (e.g. 4G), checked against RLIMIT_MEMLOCK.
        #[arg(long, value_name = "SIZE", value_parser = doctor::parse_size)]
        memory: Option<u64>,
        /// The report as one JSON object instead of lines.
        #[arg(long)]
        json: bool,
        /// The filesystem root whose /sys, /dev and /proc are read (for checking another tree).
        #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
        root: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { supervise, command } => {
            let glue = if supervise { run::Glue::Supervisor } else { run::Glue::Chosen };
            ExitCode::from(run::run(&command, &[], glue) as u8)
        }
        Command::Trace { output, json, command } => {
            // Absolute: the program may change its directory before its first call.
            let dest = match output.map(std::path::absolute) {
                None => OsString::from("stderr"),
                Some(Ok(p)) => p.into_os_string(),
                Some(Err(e)) => {
                    eprintln!("vfio-shim trace: {e}");
                    return ExitCode::from(2);
                }
            };
            let format = OsString::from(if json { "json" } else { "text" });
            ExitCode::from(run::run(
                &command,
                &[("VFIO_SHIM_TRACE", dest), ("VFIO_SHIM_TRACE_FORMAT", format)],
                run::Glue::Preload,
            ) as u8)
        }
        Command::Generate { what, dir } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            let shell = match (what.as_str(), dir) {
                ("man", Some(dir)) => {
                    return match clap_mangen::generate_to(cmd, &dir) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => {
                            eprintln!("vfio-shim generate man: {}: {e}", dir.display());
                            ExitCode::FAILURE
                        }
                    };
                }
                ("bash", None) => clap_complete::Shell::Bash,
                ("zsh", None) => clap_complete::Shell::Zsh,
                ("fish", None) => clap_complete::Shell::Fish,
                _ => {
                    eprintln!("vfio-shim generate: man DIR, bash, zsh or fish");
                    return ExitCode::from(2);
                }
            };
            clap_complete::generate(shell, &mut cmd, "vfio-shim", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Status { json } => {
            let rows = status::rows();
            if json {
                println!("{}", serde_json::to_string(&rows).expect("plain data"));
            } else {
                print!("{}", status::text(&rows));
            }
            ExitCode::SUCCESS
        }
        Command::Doctor { devices, memory, json, root } => {
            let host = doctor::Host::at(root);
            let report = doctor::examine(&host, &doctor::Request { devices, memory, preload: run::preload_library() });
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            if report.failed() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
