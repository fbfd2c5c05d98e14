//! `compare`: every (kernel, mode, client) transcript against `full/type1/<client>.out`.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::Path;

use crate::differences::Entry;
use crate::model::Column;
use crate::transcript::{diff, Difference, Transcript};

/// What one client's run in one column came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// Same as type1, up to `listed` differences that docs/differences.md lists.
    Pass { listed: usize },
    /// Differences docs/differences.md does not list (and `listed` ones it does).
    Unlisted { unlisted: usize, listed: usize },
    /// The client exited non-zero (a timeout, a missing build, a crash, ...).
    Rc(String),
    /// Exited 0 without `END status=ok` as its last record.
    NoEnd,
    /// Ran fine, but there is no passing type1 transcript to compare with.
    NoOracle,
    /// No result at all (the mode or the whole kernel did not run).
    Missing,
    /// Left out of this comparison on request (`compare --column`): neither passed nor failed.
    NotJudged,
}

impl Cell {
    pub fn passed(&self) -> bool {
        matches!(self, Cell::Pass { .. })
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Pass { listed: 0 } => write!(f, "pass"),
            Cell::Pass { listed } => write!(f, "pass ({listed} listed)"),
            Cell::Unlisted { unlisted, .. } => write!(f, "FAIL ({unlisted} unlisted)"),
            Cell::Rc(rc) => write!(f, "FAIL rc={rc}"),
            Cell::NoEnd => write!(f, "FAIL (no END status=ok)"),
            Cell::NoOracle => write!(f, "FAIL (no type1 to compare)"),
            Cell::Missing => write!(f, "missing"),
            Cell::NotJudged => write!(f, "not judged"),
        }
    }
}

/// One client's raw results in one column.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// `.rc`, trimmed; `None` if the file does not exist.
    pub rc: Option<String>,
    pub out: Transcript,
}

impl RunResult {
    pub fn load(results: &Path, col: Column, client: &str) -> io::Result<RunResult> {
        let dir = results.join(col.kernel.name()).join(col.mode.name());
        let rc = match fs::read_to_string(dir.join(format!("{client}.rc"))) {
            Ok(s) => Some(s.trim().to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let out = match fs::read(dir.join(format!("{client}.out"))) {
            Ok(b) => Transcript::parse(&String::from_utf8_lossy(&b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Transcript::default(),
            Err(e) => return Err(e),
        };
        Ok(RunResult { rc, out })
    }

    /// The cell ignoring any comparison: missing, bad rc, no END, or `None` if it ran fine.
    fn own_failure(&self) -> Option<Cell> {
        match self.rc.as_deref() {
            None => Some(Cell::Missing),
            Some("0") => (!self.out.end_ok()).then_some(Cell::NoEnd),
            Some(rc) => Some(Cell::Rc(rc.to_string())),
        }
    }
}

/// A difference with the verdict of docs/differences.md on it.
#[derive(Debug, Clone)]
pub struct Judged {
    pub diff: Difference,
    /// Index into the entries of the first row that lists it.
    pub listed_by: Option<usize>,
}

/// Evaluates one client in one column against the oracle's result.
pub fn evaluate(
    client: &str,
    col: Column,
    oracle: &RunResult,
    this: &RunResult,
    entries: &[Entry],
) -> (Cell, Vec<Judged>) {
    if let Some(c) = this.own_failure() {
        return (c, Vec::new());
    }
    if col == Column::ORACLE {
        return (Cell::Pass { listed: 0 }, Vec::new());
    }
    if oracle.own_failure().is_some() {
        return (Cell::NoOracle, Vec::new());
    }
    let judged: Vec<Judged> = diff(&oracle.out, &this.out)
        .into_iter()
        .map(|d| {
            let listed_by = entries.iter().position(|e| e.matches(client, &d.key.label, col));
            Judged { diff: d, listed_by }
        })
        .collect();
    let listed = judged.iter().filter(|j| j.listed_by.is_some()).count();
    let unlisted = judged.len() - listed;
    let cell = if unlisted == 0 { Cell::Pass { listed } } else { Cell::Unlisted { unlisted, listed } };
    (cell, judged)
}

/// Every client with any result file in any column.
pub fn clients(results: &Path) -> io::Result<BTreeSet<String>> {
    let mut set = BTreeSet::new();
    for col in Column::ALL {
        let dir = results.join(col.kernel.name()).join(col.mode.name());
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for ent in rd {
            let name = ent?.file_name().to_string_lossy().into_owned();
            for ext in [".rc", ".out", ".err"] {
                if let Some(base) = name.strip_suffix(ext) {
                    set.insert(base.to_string());
                }
            }
        }
    }
    Ok(set)
}

pub struct Report {
    pub rows: Vec<(String, Vec<Cell>)>,
    /// (client, column, judged difference) for every unlisted difference.
    pub unlisted: Vec<(String, Column, Difference)>,
    /// Rows of docs/differences.md that listed something in this run.
    pub used_entries: BTreeSet<usize>,
}

impl Report {
    /// Judges `columns` (the oracle always runs; every column if empty).
    pub fn build(results: &Path, entries: &[Entry], columns: &[Column]) -> io::Result<Report> {
        let mut rows = Vec::new();
        let mut unlisted = Vec::new();
        let mut used_entries = BTreeSet::new();
        for client in clients(results)? {
            let oracle = RunResult::load(results, Column::ORACLE, &client)?;
            let mut cells = Vec::new();
            for col in Column::ALL {
                if !columns.is_empty() && col != Column::ORACLE && !columns.contains(&col) {
                    cells.push(Cell::NotJudged);
                    continue;
                }
                let this = RunResult::load(results, col, &client)?;
                let (cell, judged) = evaluate(&client, col, &oracle, &this, entries);
                for j in judged {
                    match j.listed_by {
                        Some(i) => {
                            used_entries.insert(i);
                        }
                        None => unlisted.push((client.clone(), col, j.diff)),
                    }
                }
                cells.push(cell);
            }
            rows.push((client, cells));
        }
        Ok(Report { rows, unlisted, used_entries })
    }

    pub fn counts(&self) -> (usize, usize) {
        let cells = self.rows.iter().flat_map(|(_, c)| c.iter()).filter(|c| **c != Cell::NotJudged);
        let passed = cells.clone().filter(|c| c.passed()).count();
        (passed, cells.count() - passed)
    }

    /// Whether any cell in a gating column failed (see `Column::gates`), or there is nothing.
    pub fn failed(&self) -> bool {
        self.rows.is_empty()
            || self.rows.iter().any(|(_, cells)| {
                cells.iter().zip(Column::ALL).any(|(c, col)| col.gates() && !c.passed() && *c != Cell::NotJudged)
            })
    }

    pub fn render(&self, entries: &[Entry]) -> String {
        let mut s = String::new();
        let header: Vec<String> =
            std::iter::once("client".to_string()).chain(Column::ALL.iter().map(|c| c.to_string())).collect();
        let table: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|(client, cells)| std::iter::once(client.clone()).chain(cells.iter().map(|c| c.to_string())).collect())
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|i| table.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            format!("| {} |\n", padded.join(" | "))
        };
        s += &line(&header);
        s += &format!("|{}|\n", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
        for r in &table {
            s += &line(r);
        }
        if self.rows.is_empty() {
            s += "(no results found)\n";
        }
        if !self.unlisted.is_empty() {
            s += &format!("\nunlisted differences ({}):\n", self.unlisted.len());
            for (client, col, d) in &self.unlisted {
                s += &format!("{client} {col} {} ({}):\n", d.key, d.what());
                s += &format!("    full/type1: {}\n", d.oracle.as_deref().unwrap_or("(no such record)"));
                s += &format!("    {:<10}: {}\n", col.to_string(), d.actual.as_deref().unwrap_or("(no such record)"));
            }
        }
        let unused: Vec<&Entry> =
            entries.iter().enumerate().filter(|(i, _)| !self.used_entries.contains(i)).map(|(_, e)| e).collect();
        if !unused.is_empty() {
            s += &format!("\nnote: {} row(s) of the differences file matched nothing in this run:\n", unused.len());
            for e in unused {
                s += &format!("    line {}: {} | {} | {:?}\n", e.line, e.client, e.label, e.mode);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::differences;
    use crate::model::{Kernel, Mode};
    use std::path::PathBuf;

    const KC: Column = Column { kernel: Kernel::Full, mode: Mode::KernelCompat };
    const SHIM_FULL: Column = Column { kernel: Kernel::Full, mode: Mode::Shim };
    const SHIM_CDEV: Column = Column { kernel: Kernel::CdevOnly, mode: Mode::Shim };

    const T1: &str =
        "CALL open ret=FD errno=0\nCALL map.overlap ret=-1 errno=EEXIST\nOUT unmap.all size=8192\nEND status=ok\n";

    fn rr(rc: Option<&str>, out: &str) -> RunResult {
        RunResult { rc: rc.map(str::to_string), out: Transcript::parse(out) }
    }

    fn doc(rows: &str) -> Vec<Entry> {
        differences::parse(&format!("| client | label | mode | reason |\n|---|---|---|---|\n{rows}")).unwrap()
    }

    #[test]
    fn identical_passes() {
        let o = rr(Some("0"), T1);
        assert_eq!(evaluate("c", KC, &o, &rr(Some("0"), T1), &[]).0, Cell::Pass { listed: 0 });
        assert_eq!(evaluate("c", Column::ORACLE, &o, &o, &[]).0, Cell::Pass { listed: 0 });
    }

    #[test]
    fn listed_and_unlisted_differences() {
        let o = rr(Some("0"), T1);
        let other = rr(Some("0"), &T1.replace("ret=-1 errno=EEXIST", "ret=0 errno=0").replace("8192", "4096"));
        let e = doc("| c | map.* | kernel-compat | iommufd allows it |\n");
        let (cell, judged) = evaluate("c", KC, &o, &other, &e);
        assert_eq!(cell, Cell::Unlisted { unlisted: 1, listed: 1 });
        assert_eq!(cell.to_string(), "FAIL (1 unlisted)");
        assert_eq!(judged[0].listed_by, Some(0));
        assert_eq!(judged[1].listed_by, None);
        // The same row does not cover the shim columns.
        assert_eq!(evaluate("c", SHIM_FULL, &o, &other, &e).0, Cell::Unlisted { unlisted: 2, listed: 0 });
        let e2 = doc("| c | map.* | kernel-compat | r |\n| * | unmap.all | kernel-compat | r2 |\n");
        let cell = evaluate("c", KC, &o, &other, &e2).0;
        assert_eq!(cell, Cell::Pass { listed: 2 });
        assert_eq!(cell.to_string(), "pass (2 listed)");
    }

    #[test]
    fn failures_before_comparison() {
        let o = rr(Some("0"), T1);
        assert_eq!(evaluate("c", SHIM_CDEV, &o, &rr(None, ""), &[]).0, Cell::Missing);
        let c = evaluate("c", SHIM_CDEV, &o, &rr(Some("127"), ""), &[]).0;
        assert_eq!(c.to_string(), "FAIL rc=127");
        let no_end = rr(Some("0"), "CALL open ret=FD errno=0\n");
        assert_eq!(evaluate("c", SHIM_CDEV, &o, &no_end, &[]).0, Cell::NoEnd);
        assert_eq!(evaluate("c", Column::ORACLE, &no_end, &no_end, &[]).0, Cell::NoEnd);
        // A broken oracle makes every other column uncomparable, not a pass.
        let bad = rr(Some("1"), T1);
        assert_eq!(evaluate("c", KC, &bad, &o, &[]).0, Cell::NoOracle);
        assert_eq!(evaluate("c", KC, &rr(None, ""), &o, &[]).0, Cell::NoOracle);
        // A listed difference cannot excuse a non-zero rc.
        let e = doc("| * | * | shim | anything |\n");
        assert_eq!(evaluate("c", SHIM_FULL, &o, &rr(Some("1"), T1), &e).0, Cell::Rc("1".into()));
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vfio-shim-compat-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn put(root: &Path, col: &str, client: &str, rc: &str, out: &str) {
        let dir = root.join(col);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("{client}.rc")), format!("{rc}\n")).unwrap();
        fs::write(dir.join(format!("{client}.out")), out).unwrap();
        fs::write(dir.join(format!("{client}.err")), "").unwrap();
    }

    #[test]
    fn report_over_a_results_tree() {
        let root = tmpdir("report");
        put(&root, "full/type1", "alpha", "0", T1);
        put(&root, "full/kernel-compat", "alpha", "0", &T1.replace("8192", "4096"));
        put(&root, "full/shim", "alpha", "0", T1);
        // cdev-only/shim alpha missing entirely
        put(&root, "full/type1", "beta", "0", T1);
        put(&root, "full/kernel-compat", "beta", "0", T1);
        put(&root, "full/shim", "beta", "127", "");
        put(&root, "cdev-only/shim", "beta", "0", T1);
        put(&root, "cdev-only/supervisor", "beta", "0", T1);
        let entries =
            doc("| alpha | unmap.* | kernel-compat | compat reports the range asked |\n| zeta | x | shim | stale |\n");
        let r = Report::build(&root, &entries, &[]).unwrap();
        assert_eq!(r.rows.len(), 2);
        let cells = |i: usize| r.rows[i].1.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(cells(0), ["pass", "pass (1 listed)", "pass", "missing", "missing"]);
        assert_eq!(cells(1), ["pass", "pass", "FAIL rc=127", "pass", "pass"]);
        assert_eq!(r.counts(), (7, 3));
        assert!(r.failed());
        let text = r.render(&entries);
        assert!(text.contains("| alpha "), "{text}");
        assert!(text.contains("matched nothing"), "{text}");
        assert!(text.contains("zeta"), "{text}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn unlisted_differences_are_rendered_with_both_lines() {
        let root = tmpdir("unlisted");
        put(&root, "full/type1", "alpha", "0", T1);
        put(&root, "full/kernel-compat", "alpha", "0", T1);
        put(&root, "full/shim", "alpha", "0", &T1.replace("errno=EEXIST", "errno=EINVAL"));
        put(&root, "cdev-only/shim", "alpha", "0", T1);
        put(&root, "cdev-only/supervisor", "alpha", "0", T1);
        let r = Report::build(&root, &[], &[]).unwrap();
        assert_eq!(r.unlisted.len(), 1);
        let text = r.render(&[]);
        assert!(text.contains("alpha full/shim CALL map.overlap (differs)"), "{text}");
        assert!(text.contains("full/type1: CALL map.overlap ret=-1 errno=EEXIST"), "{text}");
        assert!(text.contains("full/shim : CALL map.overlap ret=-1 errno=EINVAL"), "{text}");
        assert!(r.failed());
        assert_eq!(r.counts(), (4, 1));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn all_green_does_not_fail_and_empty_results_do() {
        let root = tmpdir("green");
        for col in ["full/type1", "full/kernel-compat", "full/shim", "cdev-only/shim", "cdev-only/supervisor"] {
            put(&root, col, "alpha", "0", T1);
        }
        let r = Report::build(&root, &[], &[]).unwrap();
        assert!(!r.failed());
        assert_eq!(r.counts(), (5, 0));
        let empty = tmpdir("empty");
        assert!(Report::build(&empty, &[], &[]).unwrap().failed());
        fs::remove_dir_all(&root).unwrap();
        fs::remove_dir_all(&empty).unwrap();
    }

    #[test]
    fn unjudged_columns_neither_pass_nor_fail_but_judged_ones_still_do() {
        let root = tmpdir("columns");
        put(&root, "full/type1", "alpha", "0", T1);
        put(&root, "cdev-only/shim", "alpha", "0", T1);
        let r = Report::build(&root, &[], &[SHIM_CDEV]).unwrap();
        assert!(!r.failed());
        assert_eq!(r.counts(), (2, 0));
        assert!(r.render(&[]).contains("not judged"));
        put(&root, "cdev-only/shim", "alpha", "0", &T1.replace("errno=EEXIST", "errno=EINVAL"));
        let r = Report::build(&root, &[], &[SHIM_CDEV]).unwrap();
        assert!(r.failed());
        assert_eq!(r.counts(), (1, 1));
        // Every column judged: the missing ones fail.
        assert!(Report::build(&root, &[], &[]).unwrap().failed());
        assert_eq!("cdev-only/shim".parse::<Column>(), Ok(SHIM_CDEV));
        assert!("cdev-only/type1".parse::<Column>().is_err());
        fs::remove_dir_all(&root).unwrap();
    }
}
