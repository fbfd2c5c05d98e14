//! The FUSE_IOCTL_RETRY engine: from what the kernel sent in one ioctl round, decide whether the
//! ioctl can run now or which caller memory to ask for first.
//!
//! A CUSE server never sees the caller's memory: it answers FUSE_IOCTL_RETRY with ranges, the
//! kernel copies them in (and sizes its out buffer to the out ranges) and sends the ioctl
//! again (fs/fuse/ioctl.c:172-217, 348-389). The engine is stateless: which round this is
//! follows from `in_data.len()` and `out_size`, which are exactly the ranges the previous
//! round asked for.
//!
//! VFIO's ioctls are `_IO()` (no size in the command) and start with `u32 argsz`. VFIO itself
//! copies `minsz` bytes first (a fault there is EFAULT), then checks `argsz >= minsz` (EINVAL),
//! then uses what argsz allows. The engine asks for the same, in the same order:
//!
//! | round | kernel sent                  | engine answers                                        |
//! |-------|------------------------------|-------------------------------------------------------|
//! | 1     | nothing (in 0, out 0)        | retry: in `[arg, arg+min)`, out `[arg, arg+min_out)`  |
//! | 2     | the `min` bytes              | argsz < min: EINVAL; ready if `n_in == min` and `n_out == min_out`; else retry: in `[arg, arg+n_in)`, out `[arg, arg+n_out)` |
//! | 3     | n_in bytes, out room n_out   | re-read argsz from these bytes; if it still gives n_in/n_out: ready, else EINVAL |
//!
//! with `min = max(min_size, 4)`, `n_in = min(argsz, max_in, limit)`, and, for commands that
//! write back, `n_out = min(argsz, max_out, limit)` and `min_out = min(min, max_out)` (else 0).
//! MAP_DMA and UNMAP_DMA are ready after two rounds; GET_INFO, whose answer may fill argsz,
//! takes three.
//!
//! **Re-validation.** The caller's memory can change between rounds (another thread). Round 3
//! re-reads argsz from the bytes it was given and re-checks `min_size`; if argsz moved so that
//! the ranges fetched are not the ones it now implies, the ioctl fails with EINVAL instead of
//! asking again. That bounds an ioctl to three rounds (a caller rewriting argsz in a loop cannot
//! keep a worker busy), and the handler only ever sees a struct whose argsz matches the bytes
//! it holds. The kernel's own VFIO reads argsz once, so a racing caller sees a difference only
//! in this self-inflicted case; it is documented in docs/cuse.md.
//!
//! **Limits.** Never more than `limit` bytes per direction (the kernel would fail the retry
//! with ENOMEM, ioctl.c:79-85, 304-309): argsz beyond it is clamped, the handler learns the
//! real argsz from [`ArgszArg::argsz`].

use crate::device::{Ioctl, IoctlOutcome};
use nix::errno::Errno;

/// The size of the leading `argsz` field.
pub const ARGSZ_LEN: u32 = 4;

/// How one argsz-style command uses its argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgszSpec {
    /// The smallest valid argsz (the kernel's `minsz`); below it the ioctl fails EINVAL.
    /// At least 4.
    pub min_size: u32,
    /// The most bytes the handler reads. VFIO copies only `minsz` for most commands, so a caller
    /// may pass a larger argsz over memory that is not all readable; `u32::MAX` reads all of argsz.
    pub max_in: u32,
    /// Whether the command writes back into `[arg, arg + argsz)`.
    pub writes_back: bool,
    /// The most bytes it writes back at `arg` (`u32::MAX`: all of argsz).
    pub max_out: u32,
}

impl ArgszSpec {
    /// Reads `min_size` bytes, writes nothing back (VFIO_IOMMU_MAP_DMA style).
    pub const fn input(min_size: u32) -> ArgszSpec {
        ArgszSpec { min_size, max_in: min_size, writes_back: false, max_out: 0 }
    }

    /// Reads `min_size` bytes, may write back up to argsz (VFIO_IOMMU_GET_INFO style).
    pub const fn in_out(min_size: u32) -> ArgszSpec {
        ArgszSpec { min_size, max_in: min_size, writes_back: true, max_out: u32::MAX }
    }

    /// Reads up to `max_in` bytes instead (`u32::MAX`: all of argsz).
    pub const fn reading(self, max_in: u32) -> ArgszSpec {
        ArgszSpec { max_in, ..self }
    }

    /// Writes back at most `max_out` bytes at `arg` (VFIO's UNMAP_DMA writes `minsz` back).
    pub const fn writing(self, max_out: u32) -> ArgszSpec {
        ArgszSpec { max_out, ..self }
    }

    /// The out room of round 1.
    fn min_out(&self, limit: u32) -> u32 {
        if self.writes_back {
            self.min().min(self.max_out).min(limit)
        } else {
            0
        }
    }

    fn min(&self) -> u32 {
        self.min_size.max(ARGSZ_LEN)
    }

    fn want_in(&self, argsz: u32, limit: u32) -> u32 {
        argsz.min(self.max_in.max(self.min())).min(limit)
    }

    fn want_out(&self, argsz: u32, limit: u32) -> u32 {
        if self.writes_back {
            argsz.min(self.max_out).min(limit)
        } else {
            0
        }
    }
}

/// The argument of an argsz-style ioctl, ready to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgszArg<'a> {
    /// argsz as the caller's struct says, >= `min_size`; may exceed `data.len()`.
    pub argsz: u32,
    /// The first `min(argsz, max_in, limit)` bytes at `arg` (so `data[..4]` is argsz).
    pub data: &'a [u8],
    /// The most bytes a [`IoctlOutcome::Done`] may write back to `[arg, arg + out_len)`
    /// (0 for commands that write nothing).
    pub out_len: u32,
    /// Extended steps only: the bytes of the extra in-ranges, in order.
    pub extra_in: &'a [u8],
    /// Extended steps only: the total length of the extra out-ranges, which follow `out_len`
    /// in a Done's `out`.
    pub extra_out_len: u32,
}

impl ArgszArg<'_> {
    /// Reads a native-endian u32 at `off` of [`ArgszArg::data`] (None past the end).
    pub fn u32_at(&self, off: usize) -> Option<u32> {
        let b = self.data.get(off..off.checked_add(4)?)?;
        Some(u32::from_ne_bytes(b.try_into().ok()?))
    }

    /// Reads a native-endian u64 at `off` of [`ArgszArg::data`].
    pub fn u64_at(&self, off: usize) -> Option<u64> {
        let b = self.data.get(off..off.checked_add(8)?)?;
        Some(u64::from_ne_bytes(b.try_into().ok()?))
    }
}

/// What to do with one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    /// Everything is here: run the command.
    Ready(T),
    /// Answer the kernel with this (a retry, or an error).
    Reply(IoctlOutcome),
}

impl<T> Step<T> {
    fn fail(e: Errno) -> Step<T> {
        Step::Reply(IoctlOutcome::Error(e))
    }
}

/// Extra caller ranges an extended command needs besides its struct (e.g. a bitmap named by a
/// pointer inside it), computed from the struct's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    pub in_iovs: Vec<(u64, u64)>,
    pub out_iovs: Vec<(u64, u64)>,
}

impl Extra {
    fn sums(&self) -> Option<(u64, u64)> {
        let sum = |v: &[(u64, u64)]| v.iter().try_fold(0u64, |a, &(_, l)| a.checked_add(l));
        Some((sum(&self.in_iovs)?, sum(&self.out_iovs)?))
    }

    fn is_empty(&self) -> bool {
        self.in_iovs.iter().chain(&self.out_iovs).all(|&(_, l)| l == 0)
    }
}

/// Computes an extended command's extra ranges from its struct.
pub type ExtraFn<'f> = dyn Fn(&ArgszArg<'_>) -> Result<Extra, Errno> + 'f;

/// One round of an argsz-style ioctl (see the module docs). `limit` is the kernel's
/// per-direction byte limit ([`crate::session::Config::ioctl_limit`]).
pub fn argsz_step<'a>(io: &Ioctl<'a>, spec: ArgszSpec, limit: u32) -> Step<ArgszArg<'a>> {
    argsz_core(io, spec, limit, None)
}

/// Like [`argsz_step`] for commands that also need ranges named inside the struct: once the
/// struct is here, `extra` computes those ranges from it (an error fails the ioctl); they are
/// fetched in one more round, in which `extra` is computed again from the fresh struct and must
/// give the same lengths (else EINVAL). The kernel copies to and from the ranges named in the
/// previous round, so data only ever moves between ranges the caller itself named.
pub fn argsz_step_extended<'a>(io: &Ioctl<'a>, spec: ArgszSpec, limit: u32, extra: &ExtraFn<'_>) -> Step<ArgszArg<'a>> {
    argsz_core(io, spec, limit, Some(extra))
}

fn argsz_core<'a>(io: &Ioctl<'a>, spec: ArgszSpec, limit: u32, extra: Option<&ExtraFn<'_>>) -> Step<ArgszArg<'a>> {
    let in_len = io.in_data.len() as u64;
    let out_size = u64::from(io.out_size);
    let (min, min_out) = (u64::from(spec.min()), u64::from(spec.min_out(limit)));
    // Round 1: ask for the fixed part, as VFIO copies minsz before looking at argsz.
    if in_len == 0 && out_size == 0 {
        if min > u64::from(limit) {
            // limit < min_size: the command can never run through CUSE.
            return Step::fail(Errno::ENOMEM);
        }
        return retry(io, &[(io.arg, min)], &nonzero(io.arg, min_out), limit);
    }
    let Some(argsz_bytes) = io.in_data.get(..ARGSZ_LEN as usize).filter(|_| in_len >= min) else {
        // We never ask for less than `min` bytes: not a round of ours.
        return Step::fail(Errno::EIO);
    };
    let argsz = u32::from_ne_bytes([argsz_bytes[0], argsz_bytes[1], argsz_bytes[2], argsz_bytes[3]]);
    if argsz < spec.min() {
        return Step::fail(Errno::EINVAL);
    }
    let want_in = spec.want_in(argsz, limit);
    let want_out = spec.want_out(argsz, limit);
    if want_in < spec.min() {
        // limit < min_size: the command can never run through CUSE.
        return Step::fail(Errno::ENOMEM);
    }
    let (want_in, want_out) = (u64::from(want_in), u64::from(want_out));
    let is_round2 = (in_len, out_size) == (min, min_out);
    let struct_only = (in_len, out_size) == (want_in, want_out);
    let arg = |data: &'a [u8], extra_in: &'a [u8], extra_out_len: u64| ArgszArg {
        argsz,
        data,
        out_len: want_out as u32,
        extra_in,
        extra_out_len: extra_out_len as u32,
    };
    let struct_data = io.in_data.get(..want_in as usize).unwrap_or(&[]);
    let fetch_struct = || retry(io, &[(io.arg, want_in)], &nonzero(io.arg, want_out), limit);

    if is_round2 && !struct_only {
        return fetch_struct();
    }
    let Some(extra) = extra else {
        // Round 2 that already holds everything, or round 3.
        return if struct_only { Step::Ready(arg(io.in_data, &[], 0)) } else { Step::fail(Errno::EINVAL) };
    };
    // Extended: the struct is here when the round starts with exactly `want_in` bytes of it.
    if in_len < want_in || out_size < want_out {
        return if is_round2 { fetch_struct() } else { Step::fail(Errno::EINVAL) };
    }
    let base = arg(struct_data, &[], 0);
    let ex = match extra(&base) {
        Ok(ex) => ex,
        Err(e) => return Step::fail(e),
    };
    let Some((ex_in, ex_out)) = ex.sums() else { return Step::fail(Errno::ENOMEM) };
    if struct_only {
        if ex.is_empty() {
            return Step::Ready(base);
        }
        let mut ins = vec![(io.arg, want_in)];
        ins.extend(ex.in_iovs.iter().copied().filter(|&(_, l)| l != 0));
        let mut outs = nonzero(io.arg, want_out);
        outs.extend(ex.out_iovs.iter().copied().filter(|&(_, l)| l != 0));
        return retry(io, &ins, &outs, limit);
    }
    if !ex.is_empty() && in_len.checked_sub(want_in) == Some(ex_in) && out_size.checked_sub(want_out) == Some(ex_out) {
        return Step::Ready(arg(struct_data, &io.in_data[want_in as usize..], ex_out));
    }
    Step::fail(Errno::EINVAL)
}

/// One round of an ioctl whose argument is a fixed-size object at `arg` (e.g. an `int *`):
/// round 1 asks for `in_len` bytes in and `out_len` bytes out at `arg`, round 2 is ready with
/// the `in_len` bytes. Nothing to fetch (both 0): ready at once.
pub fn fixed_step<'a>(io: &Ioctl<'a>, in_len: u32, out_len: u32, limit: u32) -> Step<&'a [u8]> {
    let (want_in, want_out) = (u64::from(in_len), u64::from(out_len));
    if (io.in_data.len() as u64, u64::from(io.out_size)) == (want_in, want_out) {
        return Step::Ready(io.in_data);
    }
    if io.in_data.is_empty() && io.out_size == 0 {
        return retry(io, &nonzero(io.arg, want_in), &nonzero(io.arg, want_out), limit);
    }
    Step::fail(Errno::EIO)
}

/// One round of an ioctl whose argument is a NUL-terminated string of at most `max` bytes
/// (`strndup_user(arg, max)`, e.g. `VFIO_GROUP_GET_DEVICE_FD`). Round 1 fetches up to the end
/// of `arg`'s page, so a short string near unmapped memory works as in the kernel; if that holds
/// no NUL and is shorter than `max`, round 2 fetches `max` bytes. Ready with the bytes fetched
/// (the NUL may still be missing: the command then answers EINVAL, as strndup_user).
pub fn cstr_step<'a>(io: &Ioctl<'a>, max: u32, page: u32, limit: u32) -> Step<&'a [u8]> {
    let page = u64::from(page.max(1));
    let first = (page - io.arg % page).min(u64::from(max));
    let got = io.in_data.len() as u64;
    if io.out_size != 0 {
        return Step::fail(Errno::EIO);
    }
    if got == 0 {
        return retry(io, &nonzero(io.arg, first), &[], limit);
    }
    if got == first && first < u64::from(max) && !io.in_data.contains(&0) {
        return retry(io, &nonzero(io.arg, u64::from(max)), &[], limit);
    }
    if got == first || got == u64::from(max) {
        return Step::Ready(io.in_data);
    }
    Step::fail(Errno::EIO)
}

fn nonzero(base: u64, len: u64) -> Vec<(u64, u64)> {
    if len == 0 {
        Vec::new()
    } else {
        vec![(base, len)]
    }
}

/// A retry, checked the way the kernel will check it: each range must lie inside the caller's
/// address space as far as arithmetic goes (wrapping past 2^64, or past 2^32 for a 32-bit
/// caller, is EFAULT here; the kernel would give EIO or EFAULT) and each direction within `limit`
/// (ENOMEM, as the kernel). A range over unmapped memory is left to the kernel: its copy fails
/// with EFAULT before we are called again (ioctl.c:328-333).
fn retry<T>(io: &Ioctl<'_>, in_iovs: &[(u64, u64)], out_iovs: &[(u64, u64)], limit: u32) -> Step<T> {
    if !io.retry_allowed() {
        return Step::fail(Errno::EIO);
    }
    let top = if io.is_32bit() { u64::from(u32::MAX) + 1 } else { u64::MAX };
    for &(base, len) in in_iovs.iter().chain(out_iovs) {
        match base.checked_add(len) {
            Some(end) if end <= top => {}
            _ => return Step::fail(Errno::EFAULT),
        }
    }
    for dir in [in_iovs, out_iovs] {
        let total = dir.iter().try_fold(0u64, |a, &(_, l)| a.checked_add(l));
        if total.is_none_or(|t| t > u64::from(limit)) {
            return Step::fail(Errno::ENOMEM);
        }
    }
    if in_iovs.len() + out_iovs.len() > crate::ll::abi::FUSE_IOCTL_MAX_IOV {
        return Step::fail(Errno::ENOMEM);
    }
    Step::Reply(IoctlOutcome::Retry { in_iovs: in_iovs.to_vec(), out_iovs: out_iovs.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ll::abi::{FUSE_IOCTL_32BIT, FUSE_IOCTL_COMPAT, FUSE_IOCTL_UNRESTRICTED};

    const LIMIT: u32 = 131072;
    const ARG: u64 = 0x7f00_0000_1000;

    fn io(in_data: &[u8], out_size: u32) -> Ioctl<'_> {
        Ioctl { cmd: 0x3b70, arg: ARG, flags: FUSE_IOCTL_UNRESTRICTED, in_data, out_size }
    }

    fn retry_of(in_iovs: &[(u64, u64)], out_iovs: &[(u64, u64)]) -> IoctlOutcome {
        IoctlOutcome::Retry { in_iovs: in_iovs.to_vec(), out_iovs: out_iovs.to_vec() }
    }

    /// A struct {argsz, flags, value} of `len` bytes.
    fn st(argsz: u32, len: usize) -> Vec<u8> {
        let mut v = argsz.to_ne_bytes().to_vec();
        v.resize(len, 0xab);
        v
    }

    /// Plays the kernel: runs rounds until ready or a final answer, following the retries.
    /// (argsz, data, out_len) or the final answer.
    type Driven = Result<(u32, Vec<u8>, u32), IoctlOutcome>;

    fn drive(spec: ArgszSpec, mem: &[u8]) -> (Driven, usize) {
        let (mut in_data, mut out_size) = (Vec::new(), 0u32);
        for round in 1..=5 {
            match argsz_step(&io(&in_data, out_size), spec, LIMIT) {
                Step::Ready(a) => return (Ok((a.argsz, a.data.to_vec(), a.out_len)), round),
                Step::Reply(IoctlOutcome::Retry { in_iovs, out_iovs }) => {
                    in_data = in_iovs
                        .iter()
                        .flat_map(|&(b, l)| mem[(b - ARG) as usize..(b - ARG + l) as usize].to_vec())
                        .collect();
                    out_size = out_iovs.iter().map(|&(_, l)| l as u32).sum();
                }
                Step::Reply(other) => return (Err(other), round),
            }
        }
        panic!("more than 5 rounds");
    }

    #[test]
    fn input_command_two_rounds() {
        let mem = st(16, 16);
        let (r, rounds) = drive(ArgszSpec::input(16), &mem);
        assert_eq!(r, Ok((16, mem.clone(), 0)));
        assert_eq!(rounds, 2);
        // The rounds, one by one: minsz first, as VFIO copies it.
        assert_eq!(argsz_step(&io(&[], 0), ArgszSpec::input(16), LIMIT), Step::Reply(retry_of(&[(ARG, 16)], &[])));
        assert!(matches!(argsz_step(&io(&mem, 0), ArgszSpec::input(16), LIMIT), Step::Ready(_)));
        // Reading all of a larger argsz: one more round.
        let mem = st(32, 32);
        let (r, rounds) = drive(ArgszSpec::input(16).reading(u32::MAX), &mem);
        assert_eq!((r, rounds), (Ok((32, mem.clone(), 0)), 3));
        assert_eq!(
            argsz_step(&io(&mem[..16], 0), ArgszSpec::input(16).reading(u32::MAX), LIMIT),
            Step::Reply(retry_of(&[(ARG, 32)], &[]))
        );
    }

    #[test]
    fn in_out_command_asks_out_range() {
        let mem = st(16, 16);
        assert_eq!(
            argsz_step(&io(&[], 0), ArgszSpec::in_out(16), LIMIT),
            Step::Reply(retry_of(&[(ARG, 16)], &[(ARG, 16)]))
        );
        let (r, rounds) = drive(ArgszSpec::in_out(16), &mem);
        assert_eq!((r, rounds), (Ok((16, mem.clone(), 16)), 2));
        // A write-back cap: argsz 64 but only minsz goes back (VFIO's UNMAP_DMA).
        let mem = st(64, 64);
        let (r, rounds) = drive(ArgszSpec::in_out(16).writing(16), &mem);
        assert_eq!((r, rounds), (Ok((64, mem[..16].to_vec(), 16)), 2));
    }

    #[test]
    fn larger_argsz_reads_min_writes_argsz() {
        // argsz 64 over a 16-byte minimum: only 16 read (the rest may be unmapped), 64 writable.
        let mem = st(64, 64);
        let (r, _) = drive(ArgszSpec::in_out(16), &mem);
        assert_eq!(r, Ok((64, mem[..16].to_vec(), 64)));
        // Reading all of argsz when asked to.
        let (r, _) = drive(ArgszSpec::input(16).reading(u32::MAX), &mem);
        assert_eq!(r, Ok((64, mem.clone(), 0)));
    }

    #[test]
    fn argsz_below_minimum_is_einval() {
        for argsz in [0, 1, 3, 4, 15] {
            let mem = st(argsz, 16);
            assert_eq!(drive(ArgszSpec::input(16), &mem).0, Err(IoctlOutcome::Error(Errno::EINVAL)), "{argsz}");
        }
        // min_size below 4 still needs the argsz field itself.
        assert_eq!(drive(ArgszSpec::input(0), &st(3, 16)).0, Err(IoctlOutcome::Error(Errno::EINVAL)));
    }

    #[test]
    fn argsz_of_exactly_four() {
        // Nothing beyond argsz to fetch: ready in round 2, writing back or not.
        let mem = st(4, 4);
        assert_eq!(drive(ArgszSpec::input(4), &mem), (Ok((4, mem.clone(), 0)), 2));
        assert_eq!(drive(ArgszSpec::in_out(4), &mem), (Ok((4, mem, 4)), 2));
    }

    #[test]
    fn argsz_beyond_limit_is_clamped() {
        let spec = ArgszSpec::in_out(16).reading(u32::MAX);
        let mem = st(u32::MAX, 16);
        assert_eq!(
            argsz_step(&io(&mem, 16), spec, LIMIT),
            Step::Reply(retry_of(&[(ARG, LIMIT as u64)], &[(ARG, LIMIT as u64)]))
        );
        let big = st(u32::MAX, LIMIT as usize);
        match argsz_step(&io(&big, LIMIT), spec, LIMIT) {
            Step::Ready(a) => assert_eq!((a.argsz, a.data.len(), a.out_len), (u32::MAX, LIMIT as usize, LIMIT)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn argsz_changed_between_rounds_is_einval() {
        let spec = ArgszSpec::input(16).reading(u32::MAX);
        // Round 2 saw argsz 32 and asked for 32 bytes; by round 3 the caller wrote 48 or 16.
        for now in [48u32, 16, 24] {
            let round3 = st(now, 32);
            assert_eq!(argsz_step(&io(&round3, 0), spec, LIMIT), Step::Reply(IoctlOutcome::Error(Errno::EINVAL)));
        }
        // ... or shrank below the minimum.
        let round3 = st(8, 32);
        assert_eq!(argsz_step(&io(&round3, 0), spec, LIMIT), Step::Reply(IoctlOutcome::Error(Errno::EINVAL)));
        // Unchanged: ready.
        assert!(matches!(argsz_step(&io(&st(32, 32), 0), spec, LIMIT), Step::Ready(_)));
        // The out room must match too.
        let spec = ArgszSpec::in_out(16);
        assert_eq!(argsz_step(&io(&st(64, 16), 32), spec, LIMIT), Step::Reply(IoctlOutcome::Error(Errno::EINVAL)));
    }

    #[test]
    fn garbage_rounds_fail_cleanly() {
        let spec = ArgszSpec::in_out(16);
        assert_eq!(argsz_step(&io(&[1, 2], 0), spec, LIMIT), Step::Reply(IoctlOutcome::Error(Errno::EIO)));
        // Less than minsz, or out room without in data: never asked for, EIO.
        assert_eq!(argsz_step(&io(&st(16, 8), 0), spec, LIMIT), Step::Reply(IoctlOutcome::Error(Errno::EIO)));
        assert_eq!(argsz_step(&io(&[], 64), spec, LIMIT), Step::Reply(IoctlOutcome::Error(Errno::EIO)));
    }

    #[test]
    fn address_overflow_is_efault() {
        let mut i = io(&[], 0);
        i.arg = u64::MAX - 2;
        assert_eq!(argsz_step(&i, ArgszSpec::input(16), LIMIT), Step::Reply(IoctlOutcome::Error(Errno::EFAULT)));
        // A 32-bit caller's ranges must stay below 4 GiB.
        let mut i = io(&[], 0);
        i.flags |= FUSE_IOCTL_COMPAT | FUSE_IOCTL_32BIT;
        i.arg = 0xffff_fffe;
        assert_eq!(argsz_step(&i, ArgszSpec::input(16), LIMIT), Step::Reply(IoctlOutcome::Error(Errno::EFAULT)));
        i.arg = 0xffff_fff0;
        assert!(matches!(argsz_step(&i, ArgszSpec::input(16), LIMIT), Step::Reply(IoctlOutcome::Retry { .. })));
    }

    #[test]
    fn restricted_ioctl_cannot_retry() {
        let mut i = io(&[], 0);
        i.flags = 0;
        assert_eq!(argsz_step(&i, ArgszSpec::input(16), LIMIT), Step::Reply(IoctlOutcome::Error(Errno::EIO)));
    }

    #[test]
    fn minimum_beyond_limit_is_enomem() {
        assert_eq!(argsz_step(&io(&[], 0), ArgszSpec::input(64), 32), Step::Reply(IoctlOutcome::Error(Errno::ENOMEM)));
    }

    #[test]
    fn fixed_object() {
        let i = io(&[], 0);
        assert_eq!(fixed_step(&i, 4, 0, LIMIT), Step::Reply(retry_of(&[(ARG, 4)], &[])));
        assert_eq!(fixed_step(&i, 8, 8, LIMIT), Step::Reply(retry_of(&[(ARG, 8)], &[(ARG, 8)])));
        assert_eq!(fixed_step(&i, 0, 0, LIMIT), Step::Ready(&[][..]));
        assert_eq!(fixed_step(&io(&[1, 2, 3, 4], 0), 4, 0, LIMIT), Step::Ready(&[1, 2, 3, 4][..]));
        assert_eq!(fixed_step(&io(&[], 8), 0, 8, LIMIT), Step::Ready(&[][..]));
        assert_eq!(fixed_step(&io(&[1], 0), 4, 0, LIMIT), Step::Reply(IoctlOutcome::Error(Errno::EIO)));
        assert_eq!(fixed_step(&i, LIMIT + 1, 0, LIMIT), Step::Reply(IoctlOutcome::Error(Errno::ENOMEM)));
    }

    /// A struct {argsz, flags, ptr u64, len u64}: the extra out range is [ptr, ptr+len).
    fn bitmap_extra(a: &ArgszArg<'_>) -> Result<Extra, Errno> {
        let (ptr, len) = (a.u64_at(8).ok_or(Errno::EINVAL)?, a.u64_at(16).ok_or(Errno::EINVAL)?);
        Ok(Extra { in_iovs: vec![], out_iovs: vec![(ptr, len)] })
    }

    fn bitmap_struct(argsz: u32, ptr: u64, len: u64) -> Vec<u8> {
        let mut v = argsz.to_ne_bytes().to_vec();
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&ptr.to_ne_bytes());
        v.extend_from_slice(&len.to_ne_bytes());
        v
    }

    #[test]
    fn extended_fetches_nested_ranges() {
        let spec = ArgszSpec::input(24);
        let s = bitmap_struct(24, 0x5000, 512);
        fn step(d: &[u8], o: u32) -> Step<ArgszArg<'_>> {
            argsz_step_extended(&io(d, o), ArgszSpec::input(24), LIMIT, &bitmap_extra)
        }
        assert_eq!(step(&[], 0), Step::Reply(retry_of(&[(ARG, 24)], &[])));
        assert_eq!(step(&s, 0), Step::Reply(retry_of(&[(ARG, 24)], &[(0x5000, 512)])));
        match step(&s, 512) {
            Step::Ready(a) => assert_eq!((a.data, a.out_len, a.extra_out_len, a.extra_in), (&s[..], 0, 512, &[][..])),
            other => panic!("{other:?}"),
        }
        // The nested length changed between rounds: EINVAL.
        let s2 = bitmap_struct(24, 0x5000, 1024);
        assert_eq!(step(&s2, 512), Step::Reply(IoctlOutcome::Error(Errno::EINVAL)));
        // No nested range: ready as soon as the struct is here.
        let s0 = bitmap_struct(24, 0x5000, 0);
        assert!(matches!(step(&s0, 0), Step::Ready(ArgszArg { extra_out_len: 0, .. })));
        // The extra function's own verdict fails the ioctl.
        let bad = |_: &ArgszArg<'_>| -> Result<Extra, Errno> { Err(Errno::E2BIG) };
        assert_eq!(argsz_step_extended(&io(&s, 0), spec, LIMIT, &bad), Step::Reply(IoctlOutcome::Error(Errno::E2BIG)));
        // A nested range beyond the limit: ENOMEM, not a retry the kernel would refuse.
        let huge = bitmap_struct(24, 0x5000, LIMIT as u64 + 1);
        assert_eq!(step(&huge, 0), Step::Reply(IoctlOutcome::Error(Errno::ENOMEM)));
    }

    #[test]
    fn extended_with_in_ranges() {
        let spec = ArgszSpec::input(24);
        let ex = |a: &ArgszArg<'_>| -> Result<Extra, Errno> {
            Ok(Extra { in_iovs: vec![(a.u64_at(8).unwrap(), a.u64_at(16).unwrap())], out_iovs: vec![] })
        };
        let s = bitmap_struct(24, 0x9000, 3);
        let mut round4 = s.clone();
        round4.extend_from_slice(b"xyz");
        match argsz_step_extended(&io(&round4, 0), spec, LIMIT, &ex) {
            Step::Ready(a) => assert_eq!((a.data, a.extra_in), (&s[..], &b"xyz"[..])),
            other => panic!("{other:?}"),
        }
        round4.push(b'!');
        assert_eq!(
            argsz_step_extended(&io(&round4, 0), spec, LIMIT, &ex),
            Step::Reply(IoctlOutcome::Error(Errno::EINVAL))
        );
    }

    #[test]
    fn cstr_rounds() {
        let io = |arg: u64, data: &'static [u8]| Ioctl {
            cmd: 1,
            arg,
            flags: FUSE_IOCTL_UNRESTRICTED,
            in_data: data,
            out_size: 0,
        };
        // Near a page end: first the rest of the page.
        match cstr_step(&io(0x1ffa, b""), 4096, 4096, LIMIT) {
            Step::Reply(IoctlOutcome::Retry { in_iovs, out_iovs }) => {
                assert_eq!(in_iovs, vec![(0x1ffa, 6)]);
                assert!(out_iovs.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(cstr_step(&io(0x1ffa, b"ab\0xyz"), 4096, 4096, LIMIT), Step::Ready(&b"ab\0xyz"[..]));
        // No NUL in the first piece: the whole 4096 next.
        match cstr_step(&io(0x1ffa, b"abcdef"), 4096, 4096, LIMIT) {
            Step::Reply(IoctlOutcome::Retry { in_iovs, .. }) => assert_eq!(in_iovs, vec![(0x1ffa, 4096)]),
            other => panic!("{other:?}"),
        }
        static FULL: [u8; 4096] = [b'a'; 4096];
        assert_eq!(cstr_step(&io(0x1ffa, &FULL), 4096, 4096, LIMIT), Step::Ready(&FULL[..]));
        // Page-aligned: one round of 4096, ready even without a NUL (EINVAL is the command's).
        assert_eq!(cstr_step(&io(0x2000, &FULL), 4096, 4096, LIMIT), Step::Ready(&FULL[..]));
        // Anything else is a protocol error.
        assert_eq!(cstr_step(&io(0x2000, b"abc"), 4096, 4096, LIMIT), Step::Reply(IoctlOutcome::Error(Errno::EIO)));
    }
}
