//! docs/differences.md: the documented departures from type1, as a markdown table
//!
//! ```text
//! | client | label | mode | reason |
//! |---|---|---|---|
//! | map_edges | map.overlap | kernel-compat | iommufd answers ... |
//! ```
//!
//! `client`: a client name or `*`. `label`: a record label, or a prefix ending in `*` (`map.*`),
//! or `*` alone. `mode`: `kernel-compat`, `shim` (both shim columns), `shim@full`,
//! `shim@cdev-only`. `reason`: required, never empty. Cells may be wrapped in backticks; a
//! literal `|` inside a cell is written `\|`. Any other table in the file is ignored; a row that
//! does not parse is an error (a typo must not silently un-list or over-list a difference).

use crate::model::{Column, Kernel, Mode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeSel {
    KernelCompat,
    Shim,
    ShimFull,
    ShimCdevOnly,
    Supervisor,
}

impl ModeSel {
    fn parse(s: &str) -> Option<ModeSel> {
        Some(match s {
            "kernel-compat" => ModeSel::KernelCompat,
            "shim" => ModeSel::Shim,
            "shim@full" => ModeSel::ShimFull,
            "shim@cdev-only" => ModeSel::ShimCdevOnly,
            "supervisor" => ModeSel::Supervisor,
            _ => return None,
        })
    }

    pub fn matches(self, col: Column) -> bool {
        match self {
            ModeSel::KernelCompat => col.kernel == Kernel::Full && col.mode == Mode::KernelCompat,
            ModeSel::Shim => col.mode == Mode::Shim,
            ModeSel::ShimFull => col.kernel == Kernel::Full && col.mode == Mode::Shim,
            ModeSel::ShimCdevOnly => col.kernel == Kernel::CdevOnly && col.mode == Mode::Shim,
            ModeSel::Supervisor => col.mode == Mode::Supervisor,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub client: String,
    pub label: String,
    pub mode: ModeSel,
    pub reason: String,
    /// 1-based line in the file, for messages.
    pub line: usize,
}

fn pattern_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

impl Entry {
    pub fn matches(&self, client: &str, label: &str, col: Column) -> bool {
        self.mode.matches(col) && pattern_matches(&self.client, client) && pattern_matches(&self.label, label)
    }
}

/// Splits a markdown table row into trimmed cells, honouring `\|`.
fn cells(line: &str) -> Vec<String> {
    let t = line.trim();
    let t = t.strip_prefix('|').unwrap_or(t);
    let t = t.strip_suffix('|').filter(|s| !s.ends_with('\\')).unwrap_or(t);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cur.push('|');
                chars.next();
            }
            '|' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|c| {
            let c = c.trim();
            let c = c.strip_prefix('`').and_then(|s| s.strip_suffix('`')).unwrap_or(c);
            c.trim().to_string()
        })
        .collect()
}

fn is_separator(cells: &[String]) -> bool {
    !cells.is_empty() && cells.iter().all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':' | ' ')))
}

const HEADER: [&str; 4] = ["client", "label", "mode", "reason"];

/// Parses every `client | label | mode | reason` table in the file. It is an error if there is
/// none (the file is not what we think it is) or if any row in one is malformed.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut entries = Vec::new();
    let mut tables = 0;
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        let is_header = l.starts_with('|')
            && cells(l).iter().map(|c| c.to_ascii_lowercase()).eq(HEADER.iter().map(|h| h.to_string()));
        if !is_header {
            i += 1;
            continue;
        }
        tables += 1;
        let sep = lines.get(i + 1).map(|s| cells(s)).unwrap_or_default();
        if !is_separator(&sep) {
            return Err(format!("line {}: table header not followed by a |---| separator row", i + 2));
        }
        i += 2;
        while i < lines.len() && lines[i].trim().starts_with('|') {
            let lineno = i + 1;
            let c = cells(lines[i]);
            if c.len() != 4 {
                return Err(format!(
                    "line {lineno}: expected 4 cells (client | label | mode | reason), found {}",
                    c.len()
                ));
            }
            let mode = ModeSel::parse(&c[2]).ok_or_else(|| {
                format!("line {lineno}: mode `{}` is not one of kernel-compat, shim, shim@full, shim@cdev-only", c[2])
            })?;
            for (name, v) in [("client", &c[0]), ("label", &c[1]), ("reason", &c[3])] {
                if v.is_empty() {
                    return Err(format!("line {lineno}: empty {name}"));
                }
            }
            for (name, v) in [("client", &c[0]), ("label", &c[1])] {
                if v[..v.len() - 1].contains('*') {
                    return Err(format!("line {lineno}: {name} `{v}`: `*` is only allowed at the end"));
                }
            }
            entries.push(Entry { client: c[0].clone(), label: c[1].clone(), mode, reason: c[3].clone(), line: lineno });
            i += 1;
        }
    }
    if tables == 0 {
        return Err("no `| client | label | mode | reason |` table found".into());
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: Column = Column { kernel: Kernel::Full, mode: Mode::Shim };
    const CDEV: Column = Column { kernel: Kernel::CdevOnly, mode: Mode::Shim };
    const KC: Column = Column { kernel: Kernel::Full, mode: Mode::KernelCompat };

    const DOC: &str = r#"# Differences

Some prose. | not a table header

| other | table |
|---|---|
| x | y |

| client | label | mode | reason |
|--------|:------|------|--------|
| `map_edges` | `map.*` | kernel-compat | iommufd splits \| merges differently |
| * | unmap.v1.inside | shim | type1 v1 semantics |
| group_flags | OUT | shim@cdev-only | no group node |
| info_caps | info.iommu | shim@full | cap chain order |

Trailing prose.
"#;

    #[test]
    fn parses_rows_and_strips_backticks() {
        let e = parse(DOC).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].client, "map_edges");
        assert_eq!(e[0].label, "map.*");
        assert_eq!(e[0].mode, ModeSel::KernelCompat);
        assert_eq!(e[0].reason, "iommufd splits | merges differently");
        assert_eq!(e[0].line, 11);
        assert_eq!(e[1].client, "*");
        assert_eq!(e[3].mode, ModeSel::ShimFull);
    }

    #[test]
    fn empty_table_body_is_fine() {
        let e = parse("| client | label | mode | reason |\n|---|---|---|---|\n").unwrap();
        assert!(e.is_empty());
    }

    #[test]
    fn header_is_case_insensitive() {
        assert!(parse("| Client | Label | Mode | Reason |\n|-|-|-|-|\n").unwrap().is_empty());
    }

    #[test]
    fn missing_table_is_an_error() {
        assert!(parse("# Differences\n\nnothing here\n").is_err());
    }

    #[test]
    fn malformed_rows_are_errors() {
        let h = "| client | label | mode | reason |\n|---|---|---|---|\n";
        assert!(parse(&format!("{h}| a | b | type1 | r |\n")).unwrap_err().contains("mode `type1`"));
        assert!(parse(&format!("{h}| a | b | shim |\n")).unwrap_err().contains("4 cells"));
        assert!(parse(&format!("{h}| a | b | shim |  |\n")).unwrap_err().contains("empty reason"));
        assert!(parse(&format!("{h}| a | m*p | shim | r |\n")).unwrap_err().contains("only allowed at the end"));
        assert!(parse("| client | label | mode | reason |\n| a | b | shim | r |\n").is_err());
    }

    #[test]
    fn matching_by_client_label_and_mode() {
        let e = parse(DOC).unwrap();
        // map_edges map.* kernel-compat
        assert!(e[0].matches("map_edges", "map.overlap", KC));
        assert!(e[0].matches("map_edges", "map.", KC));
        assert!(!e[0].matches("map_edges", "unmap.x", KC));
        assert!(!e[0].matches("map_edges", "map.overlap", FULL));
        assert!(!e[0].matches("map_edges2", "map.overlap", KC));
        // * unmap.v1.inside shim: both shim columns, any client, exact label
        assert!(e[1].matches("anything", "unmap.v1.inside", FULL));
        assert!(e[1].matches("anything", "unmap.v1.inside", CDEV));
        assert!(!e[1].matches("anything", "unmap.v1.inside.more", CDEV));
        assert!(!e[1].matches("anything", "unmap.v1.inside", KC));
        // shim@cdev-only / shim@full
        assert!(e[2].matches("group_flags", "OUT", CDEV));
        assert!(!e[2].matches("group_flags", "OUT", FULL));
        assert!(e[3].matches("info_caps", "info.iommu", FULL));
        assert!(!e[3].matches("info_caps", "info.iommu", CDEV));
        // type1 is never matched
        assert!(!e[1].matches("x", "unmap.v1.inside", Column::ORACLE));
        // the supervisor column only by its own rows: a shim row says nothing about it
        const SUP: Column = Column { kernel: Kernel::CdevOnly, mode: Mode::Supervisor };
        assert!(!e[1].matches("anything", "unmap.v1.inside", SUP));
        let h = "| client | label | mode | reason |\n|---|---|---|---|\n";
        let sup = parse(&format!("{h}| a | b.* | supervisor | r |\n")).unwrap();
        assert!(sup[0].matches("a", "b.c", SUP));
        assert!(!sup[0].matches("a", "b.c", CDEV));
    }
}
