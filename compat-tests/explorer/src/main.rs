//! `explorer`: seeded random sequences of legacy VFIO calls (see ops.rs), run against whatever
//! serves `/dev/vfio/*`, recorded as a compat-tests transcript on stdout. The differential
//! runner (`vfio-shim-compat`) runs it like any client in every mode and compares each mode's
//! transcript with type1's, record by record.
//!
//! Environment: VFIO_EXPLORE_SEQS (sequences, default 1000), VFIO_EXPLORE_SEED (default 1),
//! VFIO_EXPLORE_FIRST (the first sequence's index, default 0: a long run can be split into
//! ranges that run side by side and still name every sequence by its index in the seed),
//! VFIO_EXPLORE_DEVICES (0: no device fds, for the CUSE node without the preload),
//! VFIO_EXPLORE_REGRESSIONS (a directory of `*.seq` files, one op per line, run first),
//! VFIO_TEST_EDU and VFIO_TEST_IGB (guest-setup.sh). `explorer --print N` prints sequence N of
//! the seed as text (a regression file's form) without running it.

mod kernel;
mod ops;

use std::io::{BufWriter, Write};
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use ops::{Op, Scope};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Sequence `index` of `seed`: its own ChaCha stream, so any one can be regenerated alone.
fn sequence(seed: u64, index: u64, scope: Scope) -> Vec<Op> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    ops::random_sequence(&mut rng, scope)
}

fn regressions() -> Vec<(String, Vec<Op>)> {
    let Some(dir) = std::env::var_os("VFIO_EXPLORE_REGRESSIONS") else {
        return Vec::new();
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir:?}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seq"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            let ops = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.parse().unwrap_or_else(|e| panic!("{p:?}: {e}")))
                .collect();
            (p.file_stem().unwrap().to_string_lossy().into_owned(), ops)
        })
        .collect()
}

fn main() {
    let seqs = env_u64("VFIO_EXPLORE_SEQS", 1000);
    let seed = env_u64("VFIO_EXPLORE_SEED", 1);
    let first = env_u64("VFIO_EXPLORE_FIRST", 0);
    let scope = Scope { devices: env_u64("VFIO_EXPLORE_DEVICES", 1) != 0 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, n] = args.as_slice() {
        if flag == "--print" {
            for op in sequence(seed, n.parse().expect("sequence number"), scope) {
                println!("{op}");
            }
            return;
        }
    }
    let start = Instant::now();
    let stdout = std::io::stdout();
    let mut ex = kernel::Explorer::new(BufWriter::new(stdout.lock()));
    for (name, ops) in regressions() {
        ex.run_sequence(&format!("r.{name}"), &ops);
    }
    for i in first..first + seqs {
        ex.run_sequence(&format!("s{i}"), &sequence(seed, i, scope));
    }
    let ops = ex.ops;
    let mut out = ex.into_inner();
    writeln!(out, "END status=ok").and_then(|_| out.flush()).expect("transcript write");
    let range = if first == 0 { String::new() } else { format!(" (from s{first})") };
    eprintln!(
        "explorer: seed {seed}: {seqs} sequences{range}, {ops} operations in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
