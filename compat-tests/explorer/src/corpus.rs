//! Sequences as text: regression files (`regressions/*.seq`, one op per line, `#` comments)
//! and corpus files (many named sequences, each introduced by `== <name>`), and the seeded
//! generation of sequence `i` of a seed.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::ops::{self, Op, Scope};

/// Sequence `index` of `seed`: its own ChaCha stream, so any one can be regenerated alone.
pub fn sequence(seed: u64, index: u64, scope: Scope) -> Vec<Op> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    ops::random_sequence(&mut rng, scope)
}

fn op_lines<'a>(lines: impl Iterator<Item = &'a str>) -> impl Iterator<Item = &'a str> {
    lines.map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// One regression file's ops.
pub fn parse_ops(text: &str) -> Result<Vec<Op>, String> {
    op_lines(text.lines()).map(str::parse).collect()
}

/// The `*.seq` files of `dir` in name order, each named `r.<file stem>`.
pub fn regressions(dir: &std::path::Path) -> Vec<(String, Vec<Op>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir:?}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seq"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            let ops = parse_ops(&text).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            (format!("r.{}", p.file_stem().unwrap().to_string_lossy()), ops)
        })
        .collect()
}

/// A corpus file's sequences, in order.
pub fn parse(text: &str) -> Result<Vec<(String, Vec<Op>)>, String> {
    let mut out: Vec<(String, Vec<Op>)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("== ") {
            out.push((name.trim().to_string(), Vec::new()));
        } else if !line.is_empty() && !line.starts_with('#') {
            let op = line.parse().map_err(|e| format!("line {}: {e}", n + 1))?;
            out.last_mut().ok_or(format!("line {}: an op before the first `== name`", n + 1))?.1.push(op);
        }
    }
    Ok(out)
}

/// The corpus form of `seqs`.
pub fn format(seqs: &[(String, Vec<Op>)]) -> String {
    let mut s = String::new();
    for (name, ops) in seqs {
        s += &format!("== {name}\n");
        for op in ops {
            s += &format!("{op}\n");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_form_round_trips() {
        let seqs: Vec<_> =
            (0..50).map(|i| (format!("s{i}"), sequence(9, i, Scope { devices: true, noiommu: false }))).collect();
        assert_eq!(parse(&format(&seqs)), Ok(seqs));
        assert!(parse("open_container\n").is_err());
        assert!(parse("== a\nno_such_op\n").is_err());
    }
}
