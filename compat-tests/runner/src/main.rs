//! vfio-shim-compat: the VM proof tier's runner and comparator (compat-tests/README.md).
//!
//! `run` executes inside the test guest; `compare` anywhere (normally on the host).

mod compare;
mod differences;
mod model;
mod run;
mod shrink;
mod transcript;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use model::{Kernel, Mode};

#[derive(Parser)]
#[command(
    name = "vfio-shim-compat",
    version,
    about = "Runs legacy VFIO clients per mode and compares their transcripts"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Inside the guest: run every client in every mode of this kernel, recording
    /// <out>/<kernel>/<mode>/<client>.{out,err,rc}.
    Run {
        /// Which test kernel this guest runs (checked against /dev/vfio/vfio).
        #[arg(long, value_enum)]
        kernel: Kernel,
        /// Directory with the client executables.
        #[arg(long)]
        clients: PathBuf,
        /// Results directory.
        #[arg(long)]
        out: PathBuf,
        /// Only this mode (repeatable); default: every mode of the kernel.
        #[arg(long, value_enum)]
        mode: Vec<Mode>,
        /// Only this client (repeatable); default: every client found.
        #[arg(long)]
        client: Vec<String>,
        /// Per-run timeout in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// The preload library shim mode runs the clients under (libvfio_shim_preload.so).
        #[arg(long)]
        preload: Option<PathBuf>,
        /// The `vfio-shim` command supervisor mode runs the clients under (`run --supervise`;
        /// the static builds in <clients>/static/ where they exist).
        #[arg(long)]
        vfio_shim: Option<PathBuf>,
    },
    /// Compare every mode's transcripts with full/type1 and print the client x mode table.
    /// Exits 1 if any cell fails (see docs/testing.md for the policy), 2 on usage errors.
    Compare {
        /// Results directory written by `run`.
        results: PathBuf,
        /// The documented differences (markdown table client | label | mode | reason).
        #[arg(long, default_value = "docs/differences.md")]
        differences: PathBuf,
        /// Judge only this column against type1 (repeatable: `full/shim`, `cdev-only/shim`,
        /// `full/kernel-compat`); the others show "not judged". Default: every column.
        #[arg(long)]
        column: Vec<model::Column>,
    },
    /// Inside the full guest: cut an explorer sequence that diverges from type1 (in the shim,
    /// legacy nodes hidden) down to a minimal reproducer, written as a regression file.
    Shrink {
        /// The explorer binary.
        #[arg(long)]
        explorer: PathBuf,
        /// The preload library the shim side runs under.
        #[arg(long)]
        preload: PathBuf,
        /// Work directory (candidate corpus and transcripts).
        #[arg(long)]
        work: PathBuf,
        /// The diverging sequence, one op per line (`explorer --print N`).
        input: PathBuf,
        /// The reproducer to write.
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Run { kernel, clients, out, mode, client, timeout, preload, vfio_shim } => {
            let opts = run::RunOpts {
                kernel,
                clients_dir: clients,
                out,
                modes: mode,
                clients: client,
                timeout: Duration::from_secs(timeout),
                preload,
                vfio_shim,
            };
            match run::run(&opts) {
                Ok(bad) => {
                    eprintln!("vfio-shim-compat: {kernel} done; {bad} run(s) exited non-zero (compare judges)");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vfio-shim-compat run: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Shrink { explorer, preload, work, input, output } => {
            let opts = shrink::ShrinkOpts { explorer, preload, input, output, work };
            match shrink::shrink(&opts) {
                Ok((before, after, sig)) => {
                    println!(
                        "shrink: {}: {before} ops -> {after}; {} {}: type1 `{}`, shim `{}`",
                        opts.output.display(),
                        sig.kind,
                        sig.op,
                        sig.type1,
                        sig.shim
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vfio-shim-compat shrink: {}: {e}", opts.input.display());
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Compare { results, differences, column } => {
            let text = match std::fs::read_to_string(&differences) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("vfio-shim-compat compare: reading {}: {e}", differences.display());
                    return ExitCode::from(2);
                }
            };
            let entries = match differences::parse(&text) {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("vfio-shim-compat compare: {}: {e}", differences.display());
                    return ExitCode::from(2);
                }
            };
            let report = match compare::Report::build(&results, &entries, &column) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("vfio-shim-compat compare: reading {}: {e}", results.display());
                    return ExitCode::from(2);
                }
            };
            print!("{}", report.render(&entries));
            let (passed, failed) = report.counts();
            println!("compat: {passed} passed, {failed} failed");
            if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
