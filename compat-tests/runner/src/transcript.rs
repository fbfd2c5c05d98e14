//! Client transcripts: one record per line (compat-tests/README.md, "Transcript format").
//!
//! ```text
//! CALL <label> ret=<int|FD> errno=<0|ENAME>
//! OUT  <label> <key>=<value> ...
//! INFO <label> hex=<bytes>
//! STATE <label> <key>=<value> ...
//! DMA  <label> result=<ok|blocked|mismatch|error>
//! END  status=<ok|fail>
//! ```
//!
//! A record is keyed by (record type, label); `END` has no label (its key is `("END", "")`).
//! Lines are compared after collapsing runs of whitespace, so column alignment in a client's
//! output does not matter. Blank lines are ignored; any other line is a record of whatever its
//! first word is, so stray output on stdout shows up as a difference instead of vanishing.

use std::collections::HashMap;
use std::fmt;

/// The comparison key of a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: String,
    pub label: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.label.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{} {}", self.kind, self.label)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Key,
    /// The whole line, whitespace-normalised.
    pub line: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transcript {
    pub records: Vec<Record>,
}

impl Transcript {
    pub fn parse(text: &str) -> Transcript {
        let mut records = Vec::new();
        for raw in text.lines() {
            let words: Vec<&str> = raw.split_whitespace().collect();
            if words.is_empty() {
                continue;
            }
            let kind = words[0].to_string();
            let label = if kind == "END" { String::new() } else { words.get(1).copied().unwrap_or("").to_string() };
            records.push(Record { key: Key { kind, label }, line: words.join(" ") });
        }
        Transcript { records }
    }

    /// The client reached its end: the last record is `END status=ok`.
    pub fn end_ok(&self) -> bool {
        self.records.last().is_some_and(|r| r.line == "END status=ok")
    }

    /// Records grouped by key, keys in order of first appearance. A key normally appears once;
    /// a repeated key is compared occurrence by occurrence.
    fn grouped(&self) -> (Vec<&Key>, HashMap<&Key, Vec<&str>>) {
        let mut order = Vec::new();
        let mut map: HashMap<&Key, Vec<&str>> = HashMap::new();
        for r in &self.records {
            let e = map.entry(&r.key).or_default();
            if e.is_empty() {
                order.push(&r.key);
            }
            e.push(&r.line);
        }
        (order, map)
    }
}

/// One record that differs between the oracle (full/type1) and another mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub key: Key,
    /// The oracle's line; `None`: the record is extra in the other mode.
    pub oracle: Option<String>,
    /// The other mode's line; `None`: the record is missing there.
    pub actual: Option<String>,
}

impl Difference {
    pub fn what(&self) -> &'static str {
        match (&self.oracle, &self.actual) {
            (Some(_), Some(_)) => "differs",
            (Some(_), None) => "missing",
            (None, Some(_)) => "extra",
            (None, None) => "?",
        }
    }
}

/// Every record whose line differs, is missing, or is extra, in the oracle's order, then the
/// extras in the other transcript's order.
pub fn diff(oracle: &Transcript, actual: &Transcript) -> Vec<Difference> {
    let (o_order, o_map) = oracle.grouped();
    let (a_order, a_map) = actual.grouped();
    let mut out = Vec::new();
    for key in &o_order {
        let o = &o_map[key];
        let a = a_map.get(key).map(Vec::as_slice).unwrap_or(&[]);
        for i in 0..o.len().max(a.len()) {
            let (ol, al) = (o.get(i), a.get(i));
            if ol != al {
                out.push(Difference {
                    key: (*key).clone(),
                    oracle: ol.map(|s| s.to_string()),
                    actual: al.map(|s| s.to_string()),
                });
            }
        }
    }
    for key in &a_order {
        if o_map.contains_key(key) {
            continue;
        }
        for line in &a_map[key] {
            out.push(Difference { key: (*key).clone(), oracle: None, actual: Some(line.to_string()) });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORACLE: &str = "\
CALL open.container ret=FD errno=0
OUT  ext.type1v2 value=1
CALL map.basic ret=0 errno=0
CALL map.overlap ret=-1 errno=EEXIST
OUT  unmap.all size=1048576
DMA  dma.after_unmap result=blocked
END  status=ok
";

    #[test]
    fn parses_keys_and_normalises_whitespace() {
        let t = Transcript::parse(ORACLE);
        assert_eq!(t.records.len(), 7);
        assert_eq!(t.records[1].key, Key { kind: "OUT".into(), label: "ext.type1v2".into() });
        assert_eq!(t.records[1].line, "OUT ext.type1v2 value=1");
        assert_eq!(t.records[6].key, Key { kind: "END".into(), label: String::new() });
        assert!(t.end_ok());
    }

    #[test]
    fn end_must_be_last_and_ok() {
        assert!(!Transcript::parse("CALL a ret=0 errno=0\n").end_ok());
        assert!(!Transcript::parse("END status=fail\n").end_ok());
        assert!(!Transcript::parse("END status=ok\nCALL a ret=0 errno=0\n").end_ok());
        assert!(Transcript::parse("CALL a ret=0 errno=0\n\nEND   status=ok\n").end_ok());
        assert!(!Transcript::parse("").end_ok());
    }

    #[test]
    fn identical_and_realigned_transcripts_do_not_differ() {
        let a = Transcript::parse(ORACLE);
        let b = Transcript::parse(&ORACLE.replace("OUT  ", "OUT ").replace("  status", " status"));
        assert!(diff(&a, &b).is_empty());
    }

    #[test]
    fn reports_differing_missing_and_extra_records() {
        let o = Transcript::parse(ORACLE);
        let actual = ORACLE
            .replace("map.overlap ret=-1 errno=EEXIST", "map.overlap ret=0 errno=0")
            .replace("DMA  dma.after_unmap result=blocked\n", "")
            .replace("END", "STATE probe.1 mapped=0\nEND");
        let d = diff(&o, &Transcript::parse(&actual));
        assert_eq!(d.len(), 3, "{d:?}");
        assert_eq!(d[0].key.label, "map.overlap");
        assert_eq!(d[0].what(), "differs");
        assert_eq!(d[0].oracle.as_deref(), Some("CALL map.overlap ret=-1 errno=EEXIST"));
        assert_eq!(d[0].actual.as_deref(), Some("CALL map.overlap ret=0 errno=0"));
        assert_eq!(d[1].key.to_string(), "DMA dma.after_unmap");
        assert_eq!(d[1].what(), "missing");
        assert_eq!(d[2].key.to_string(), "STATE probe.1");
        assert_eq!(d[2].what(), "extra");
    }

    #[test]
    fn same_label_different_record_types_are_distinct_keys() {
        let o = Transcript::parse("CALL x ret=0 errno=0\nOUT x size=4096\nEND status=ok\n");
        let a = Transcript::parse("CALL x ret=0 errno=0\nOUT x size=8192\nEND status=ok\n");
        let d = diff(&o, &a);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].key.kind, "OUT");
    }

    #[test]
    fn repeated_keys_compare_by_occurrence() {
        let o = Transcript::parse("OUT loop v=1\nOUT loop v=2\nEND status=ok\n");
        let a = Transcript::parse("OUT loop v=1\nOUT loop v=3\nOUT loop v=4\nEND status=ok\n");
        let d = diff(&o, &a);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].what(), "differs");
        assert_eq!(d[1].what(), "extra");
    }

    #[test]
    fn end_status_change_is_one_difference() {
        let o = Transcript::parse("END status=ok\n");
        let a = Transcript::parse("END status=fail\n");
        let d = diff(&o, &a);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].what(), "differs");
    }
}
