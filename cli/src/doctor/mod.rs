//! `vfio-shim doctor`: the report (one verdict per check, each with its fix) and how it is
//! printed, as lines or as JSON. The checks themselves are in `checks.rs`.

mod checks;
mod host;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde::Serialize;

pub use checks::examine;
pub use host::Host;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Nothing to do.
    Pass,
    /// Works, with a caveat the operator should know or an action some setups need.
    Warn,
    /// A legacy VFIO program will fail until this is fixed.
    Fail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name, e.g. `kernel.iommufd` or `device.0000:00:03.0.driver`.
    pub id: String,
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// The fix in one sentence; empty for PASS.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

/// What the operator asked to check.
pub struct Request {
    /// PCI devices (BDF); empty: every device bound to a VFIO driver.
    pub devices: Vec<String>,
    /// Bytes the program will map, checked against RLIMIT_MEMLOCK.
    pub memory: Option<u64>,
    /// The preload library found for `vfio-shim run`, if any.
    pub preload: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub(crate) fn pass(&mut self, id: impl Into<String>, detail: impl Into<String>) {
        self.push(id, Verdict::Pass, detail, "");
    }

    pub(crate) fn push(
        &mut self,
        id: impl Into<String>,
        verdict: Verdict,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.checks.push(Check { id: id.into(), verdict, detail: detail.into(), fix: fix.into() });
    }

    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.verdict == Verdict::Fail)
    }

    fn count(&self, v: Verdict) -> usize {
        self.checks.iter().filter(|c| c.verdict == v).count()
    }

    /// `PASS  id: detail` per check (`Fix: ...` appended to WARN and FAIL), then a count.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let verdict = match c.verdict {
                Verdict::Pass => "PASS",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
            };
            out.push_str(&format!("{verdict}  {}: {}", c.id, c.detail));
            if !c.fix.is_empty() {
                out.push_str(&format!(". Fix: {}", c.fix));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "doctor: {} pass, {} warn, {} fail\n",
            self.count(Verdict::Pass),
            self.count(Verdict::Warn),
            self.count(Verdict::Fail)
        ));
        out
    }

    /// `{"checks": [...], "pass": N, "warn": N, "fail": N}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "checks": self.checks,
            "pass": self.count(Verdict::Pass),
            "warn": self.count(Verdict::Warn),
            "fail": self.count(Verdict::Fail),
        })
        .to_string()
    }
}

/// `4G`, `512M`, `64k`, or bytes (binary units, as `ulimit -l` and QEMU's `-m` mean them).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{s}: unknown unit (K, M, G or T)")),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{s}: not a size (e.g. 4G)"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s}: too large"))
}
