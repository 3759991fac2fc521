//! Stable hashing shared by config fingerprints and sticky buckets.
//!
//! Both are persisted or visible to users (a fingerprint in the state file, a bucket that
//! decides which pool a user sees), so the hash must not change between builds or runs:
//! std's `DefaultHasher` makes no such promise.

/// FNV-1a, 64 bits.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
