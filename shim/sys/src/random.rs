//! Randomness from the kernel (`getrandom(2)`), for names that must not collide.

/// 64 bits from `getrandom(2)` without blocking; `None` when the pool is not ready or the
/// call fails.
pub fn random_u64() -> Option<u64> {
    let mut b = [0u8; 8];
    // SAFETY: `b` is a writable 8-byte buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    (n == 8).then(|| u64::from_ne_bytes(b))
}
