//! `shrink`: cuts an explorer sequence that diverges from type1 down to a minimal reproducer,
//! inside the full test guest, where type1 and the shim (legacy nodes hidden, as the `shim`
//! column of the full kernel runs) answer side by side.
//!
//! A sequence is a regression file's text: one op per line. A candidate keeps the divergence
//! when its first difference from type1 has the same signature as the original's (the record
//! type, the op, and both answers without the label), so the shrink cannot slide onto another
//! divergence. Removal follows ddmin's complement step: chunks of half the ops, then a quarter,
//! down to single ops, repeated until no single op can go.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::model::{Kernel, Mode};
use crate::run::{command_for, run_one};
use crate::transcript::{diff, Transcript};

/// What a divergence is, independent of where in the sequence it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub kind: String,
    pub op: String,
    pub type1: String,
    pub shim: String,
}

/// A record's line without its label (`CALL s3.7.set_iommu ret=-1 errno=EINVAL` -> `ret=-1
/// errno=EINVAL`), and the op its label names (`set_iommu`).
fn unlabelled(line: &str) -> String {
    line.split_whitespace().skip(2).collect::<Vec<_>>().join(" ")
}

fn op_of(label: &str) -> String {
    label.rsplit('.').next().unwrap_or(label).to_string()
}

/// The first difference between type1's and the shim's transcripts of one sequence.
pub fn signature(type1: &str, shim: &str) -> Option<Signature> {
    let d = diff(&Transcript::parse(type1), &Transcript::parse(shim)).into_iter().next()?;
    Some(Signature {
        op: op_of(&d.key.label),
        kind: d.key.kind,
        type1: d.oracle.as_deref().map(unlabelled).unwrap_or_else(|| "(none)".into()),
        shim: d.actual.as_deref().map(unlabelled).unwrap_or_else(|| "(none)".into()),
    })
}

/// Removes chunks of `ops` while `keeps` holds, ddmin-style; returns the ops left.
pub fn minimise(mut ops: Vec<String>, keeps: &mut dyn FnMut(&[String]) -> io::Result<bool>) -> io::Result<Vec<String>> {
    let mut chunk = (ops.len() / 2).max(1);
    loop {
        let mut removed = false;
        let mut i = 0;
        while i < ops.len() {
            let end = (i + chunk).min(ops.len());
            let candidate: Vec<String> = ops[..i].iter().chain(&ops[end..]).cloned().collect();
            if !candidate.is_empty() && keeps(&candidate)? {
                ops = candidate;
                removed = true;
            } else {
                i = end;
            }
        }
        if chunk > 1 {
            chunk = (chunk / 2).max(1);
        } else if !removed {
            return Ok(ops);
        }
    }
}

pub struct ShrinkOpts {
    pub explorer: PathBuf,
    pub preload: PathBuf,
    /// The sequence to shrink (a regression file's form).
    pub input: PathBuf,
    /// Where the reproducer goes (a regression file with its provenance in comments).
    pub output: PathBuf,
    pub work: PathBuf,
}

/// Runs `ops` as a one-sequence corpus in type1 and in the shim; returns both transcripts.
fn run_both(opts: &ShrinkOpts, ops: &[String]) -> io::Result<(String, String)> {
    let corpus = opts.work.join("candidate.corpus");
    fs::write(&corpus, format!("== x\n{}\n", ops.join("\n")))?;
    let mut out = Vec::new();
    for mode in [Mode::Type1, Mode::Shim] {
        let mut cmd: Command = command_for(Kernel::Full, mode, &opts.explorer, None);
        cmd.env("VFIO_EXPLORE_CORPUS", &corpus);
        if mode == Mode::Shim {
            cmd.env("LD_PRELOAD", &opts.preload);
        }
        let (o, e) = (opts.work.join(format!("{mode}.out")), opts.work.join(format!("{mode}.err")));
        let rc = run_one(cmd, &o, &e, Duration::from_secs(60))?;
        if rc != "0" {
            return Err(io::Error::other(format!("explorer in {mode} exited {rc}: {}", fs::read_to_string(&e)?)));
        }
        out.push(fs::read_to_string(&o)?);
    }
    Ok((out.remove(0), out.remove(0)))
}

/// Shrinks; returns (ops before, ops after, the signature kept).
pub fn shrink(opts: &ShrinkOpts) -> Result<(usize, usize, Signature), String> {
    if !Path::new("/dev/vfio/vfio").exists() {
        return Err("shrink needs the full kernel (type1 next to the shim)".into());
    }
    let text = fs::read_to_string(&opts.input).map_err(|e| format!("{}: {e}", opts.input.display()))?;
    let ops: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
    fs::create_dir_all(&opts.work).map_err(|e| format!("{}: {e}", opts.work.display()))?;
    let (t, s) = run_both(opts, &ops).map_err(|e| e.to_string())?;
    let sig = signature(&t, &s).ok_or("the sequence does not diverge from type1 on this kernel")?;
    let mut trials = 0;
    let min = minimise(ops.clone(), &mut |cand| {
        trials += 1;
        let (t, s) = run_both(opts, cand)?;
        Ok(signature(&t, &s).as_ref() == Some(&sig))
    })
    .map_err(|e| e.to_string())?;
    let name = opts.input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let body = format!(
        "# Shrunk from {name} ({} ops to {}, {trials} trials) by vfio-shim-compat shrink.\n\
         # First difference, at a {} record of {}: type1 `{}`, shim `{}`.\n{}\n",
        ops.len(),
        min.len(),
        sig.kind,
        sig.op,
        sig.type1,
        sig.shim,
        min.join("\n")
    );
    fs::write(&opts.output, body).map_err(|e| format!("{}: {e}", opts.output.display()))?;
    Ok((ops.len(), min.len(), sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_ignores_where_the_difference_is() {
        let t = "CALL s1.0.open_container ret=FD errno=0\nCALL s1.4.set_iommu ret=-1 errno=ENODEV\nEND status=ok\n";
        let s = "CALL s1.0.open_container ret=FD errno=0\nCALL s1.4.set_iommu ret=-1 errno=EINVAL\nEND status=ok\n";
        let sig = signature(t, s).unwrap();
        assert_eq!(
            sig,
            Signature {
                kind: "CALL".into(),
                op: "set_iommu".into(),
                type1: "ret=-1 errno=ENODEV".into(),
                shim: "ret=-1 errno=EINVAL".into()
            }
        );
        let moved = s.replace("s1.4", "s1.2");
        let t2 = t.replace("s1.4", "s1.2");
        assert_eq!(signature(&t2, &moved), Some(sig));
        assert_eq!(signature(t, t), None);
    }

    #[test]
    fn minimise_keeps_exactly_what_the_property_needs() {
        // The "divergence" needs ops a, c and f, in that order.
        let ops: Vec<String> = "a b c d e f g h".split(' ').map(String::from).collect();
        let mut trials = 0;
        let min = minimise(ops, &mut |c| {
            trials += 1;
            let pos = |x: &str| c.iter().position(|o| o == x);
            Ok(matches!((pos("a"), pos("c"), pos("f")), (Some(a), Some(b), Some(f)) if a < b && b < f))
        })
        .unwrap();
        assert_eq!(min, ["a", "c", "f"]);
        assert!(trials < 40, "{trials} trials");
    }
}
