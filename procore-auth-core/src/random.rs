//! Randomness for `state` parameters and back-off jitter.

use std::collections::hash_map::RandomState;
use std::fmt::Write;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// A uniformly distributed `u64`, good enough for jitter (not for secrets).
pub(crate) fn jitter_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// 128 bits from the operating system's CSPRNG, hex-encoded: an unguessable `state`.
pub(crate) fn unguessable_string() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS refused randomness. SipHash under std's randomly seeded keys is still
        // unpredictable to an outside observer, which is what a CSRF state needs.
        bytes[..8].copy_from_slice(&jitter_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&jitter_u64().to_le_bytes());
    }
    bytes
        .iter()
        .fold(String::with_capacity(32), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}"); // writing to a String cannot fail
            hex
        })
}
