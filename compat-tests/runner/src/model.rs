//! Kernels, modes and the result columns (compat-tests/README.md, "Modes").

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Kernel {
    /// Legacy groups + type1 container next to iommufd (the oracle's kernel).
    Full,
    /// No VFIO groups, no legacy container: what the shim's users have.
    CdevOnly,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Full => "full",
            Kernel::CdevOnly => "cdev-only",
        }
    }

    /// The modes that make sense on this kernel, in run order.
    pub fn modes(self) -> &'static [Mode] {
        match self {
            Kernel::Full => &[Mode::Type1, Mode::KernelCompat, Mode::Shim],
            Kernel::CdevOnly => &[Mode::Shim, Mode::Supervisor],
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Mode {
    /// The real /dev/vfio/vfio; plain build. The oracle.
    Type1,
    /// /dev/iommu bind-mounted over /dev/vfio/vfio; plain build. The competitor.
    KernelCompat,
    /// Legacy nodes hidden; the plain build under `LD_PRELOAD`. The product.
    Shim,
    /// The static build (the dynamic one where there is none) under the seccomp supervisor
    /// (`vfio-shim run --supervise`): the product for programs the preload cannot reach.
    Supervisor,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Type1 => "type1",
            Mode::KernelCompat => "kernel-compat",
            Mode::Shim => "shim",
            Mode::Supervisor => "supervisor",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One (kernel, mode) pair: a column of the comparison table and a directory of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Column {
    pub kernel: Kernel,
    pub mode: Mode,
}

impl Column {
    pub const ORACLE: Column = Column { kernel: Kernel::Full, mode: Mode::Type1 };

    /// Every column, in table order.
    pub const ALL: [Column; 5] = [
        Column::ORACLE,
        Column { kernel: Kernel::Full, mode: Mode::KernelCompat },
        Column { kernel: Kernel::Full, mode: Mode::Shim },
        Column { kernel: Kernel::CdevOnly, mode: Mode::Shim },
        Column { kernel: Kernel::CdevOnly, mode: Mode::Supervisor },
    ];

    /// Whether a failing cell in this column makes `compare` exit non-zero.
    ///
    /// Policy (also in docs/testing.md):
    /// - `full/type1` gates: it is the oracle; if a client cannot run to its end on real type1,
    ///   nothing else in its row means anything.
    /// - both `shim` columns and `supervisor` gate: they are the product.
    /// - `full/kernel-compat` gates too. The kernel's own compat layer is the competitor, and
    ///   docs/differences.md is where we describe how it departs from type1. An unlisted
    ///   difference there is a documentation bug (the docs would misdescribe the competitor),
    ///   and a client that does not reach its end there is a client bug (a client must run to
    ///   the end whatever the kernel answers). Either must be fixed, not ignored.
    pub fn gates(self) -> bool {
        match (self.kernel, self.mode) {
            (Kernel::Full, Mode::Type1) => true,
            (_, Mode::Shim) | (_, Mode::Supervisor) => true,
            (Kernel::Full, Mode::KernelCompat) => true,
            // Not produced by `run`; listed for completeness.
            (Kernel::CdevOnly, _) => true,
        }
    }
}

impl std::str::FromStr for Column {
    type Err = String;

    /// `kernel/mode`, as the table's header writes it (`cdev-only/shim`).
    fn from_str(s: &str) -> Result<Column, String> {
        Column::ALL.into_iter().find(|c| c.to_string() == s).ok_or_else(|| {
            format!(
                "no column {s:?} (one of: full/type1, full/kernel-compat, full/shim, cdev-only/shim, \
                 cdev-only/supervisor)"
            )
        })
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kernel, self.mode)
    }
}
