//! The sequence explorer: seeded random sequences of legacy VFIO calls (ops.rs), run through
//! libc against whatever serves `/dev/vfio/*` (the `explorer` binary, in the VM) or through
//! the shim's core over its fake backend (replay.rs, the host tier's golden replay), and
//! recorded as compat-tests transcripts (executor.rs).

pub mod calls;
pub mod corpus;
pub mod executor;
pub mod ops;
#[cfg(feature = "replay")]
pub mod replay;
