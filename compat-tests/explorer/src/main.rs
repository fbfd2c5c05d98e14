//! `explorer`: seeded random sequences of legacy VFIO calls (see ops.rs), run against whatever
//! serves `/dev/vfio/*` in this process, recorded as a compat-tests transcript on stdout. The
//! differential runner (`vfio-shim-compat`) runs it like any client in every mode and compares
//! each mode's transcript with type1's, record by record.
//!
//! Environment: VFIO_EXPLORE_SEQS (sequences, default 1000), VFIO_EXPLORE_SEED (default 1),
//! VFIO_EXPLORE_FIRST (the first sequence's index, default 0: a long run can be split into
//! ranges that run side by side and still name every sequence by its index in the seed),
//! VFIO_EXPLORE_DEVICES (0: no device fds, for the CUSE node without the preload and the
//! golden corpus), VFIO_EXPLORE_REGRESSIONS (a directory of `*.seq` files, run first),
//! VFIO_EXPLORE_CORPUS (a corpus file: run exactly its sequences, nothing generated),
//! VFIO_EXPLORE_MEMORY (`shared`: the pool MAP_DMA points into is a memfd's, for the CUSE node),
//! VFIO_TEST_EDU and VFIO_TEST_IGB (guest-setup.sh).
//!
//! `explorer --print N` prints sequence N of the seed as text (a regression file's form);
//! `explorer --dump N` prints the regressions and N sequences from FIRST as a corpus file
//! (without the sequences that need a device when VFIO_EXPLORE_DEVICES=0). Neither runs.

use std::io::{BufWriter, Write};
use std::time::Instant;

use vfio_shim_explorer::calls::Libc;
use vfio_shim_explorer::corpus;
use vfio_shim_explorer::executor::{Explorer, Platform};
use vfio_shim_explorer::ops::{Op, Scope};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn regressions() -> Vec<(String, Vec<Op>)> {
    std::env::var_os("VFIO_EXPLORE_REGRESSIONS").map(|d| corpus::regressions(d.as_ref())).unwrap_or_default()
}

fn main() {
    let seqs = env_u64("VFIO_EXPLORE_SEQS", 1000);
    let seed = env_u64("VFIO_EXPLORE_SEED", 1);
    let first = env_u64("VFIO_EXPLORE_FIRST", 0);
    let scope = Scope {
        devices: env_u64("VFIO_EXPLORE_DEVICES", 1) != 0,
        noiommu: vfio_shim_explorer::executor::noiommu_from_env(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, n] = args.as_slice() {
        let n: u64 = n.parse().expect("a number");
        match flag.as_str() {
            "--print" => {
                for op in corpus::sequence(seed, n, scope) {
                    println!("{op}");
                }
            }
            "--dump" => {
                let mut all: Vec<_> = regressions()
                    .into_iter()
                    .filter(|(_, ops)| scope.devices || !ops.iter().any(Op::in_device_scope_only))
                    .collect();
                all.extend((first..first + n).map(|i| (format!("s{i}"), corpus::sequence(seed, i, scope))));
                print!("{}", corpus::format(&all));
            }
            _ => panic!("usage: explorer [--print N | --dump N]"),
        }
        return;
    }
    let start = Instant::now();
    let stdout = std::io::stdout();
    let mut ex = Explorer::new(
        BufWriter::new(stdout.lock()),
        Libc,
        Platform::from_env(),
        std::env::var("VFIO_EXPLORE_MEMORY").is_ok_and(|m| m == "shared"),
    );
    let what = if let Some(path) = std::env::var_os("VFIO_EXPLORE_CORPUS") {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let seqs = corpus::parse(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        for (name, ops) in &seqs {
            ex.run_sequence(name, ops);
        }
        format!("corpus {}: {} sequences", path.to_string_lossy(), seqs.len())
    } else {
        for (name, ops) in regressions() {
            if scope.devices || !ops.iter().any(Op::in_device_scope_only) {
                ex.run_sequence(&name, &ops);
            }
        }
        for i in first..first + seqs {
            ex.run_sequence(&format!("s{i}"), &corpus::sequence(seed, i, scope));
        }
        let range = if first == 0 { String::new() } else { format!(" (from s{first})") };
        format!("seed {seed}: {seqs} sequences{range}")
    };
    let (ops, deaths) = (ex.ops, ex.deaths);
    let mut out = ex.into_inner();
    writeln!(out, "END status=ok").and_then(|_| out.flush()).expect("transcript write");
    eprintln!(
        "explorer: {what}, {ops} operations in {:.1} s; {} deaths, {} inside a call",
        start.elapsed().as_secs_f64(),
        deaths.0,
        deaths.1
    );
}
