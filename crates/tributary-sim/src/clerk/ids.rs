//! Clerk-shaped identifiers and the simulator's fixed time window.
//!
//! Clerk ids are a prefix and a [KSUID](https://github.com/segmentio/ksuid): 27 base62
//! characters encoding a 4-byte timestamp (seconds since 2014-05-13T16:53:20Z) and 16 random
//! bytes, so ids sort roughly by creation time (`user_2g7np7Hrk0SN6kj5EDMLDaKNL0S`). The
//! simulator builds them the same way, with the random bytes drawn from a seeded [`Rng`].

use crate::rng::{Rng, mix64};

/// Generated `created_at` values start here: 2024-01-01T00:00:00Z, in epoch milliseconds.
pub(crate) const GENERATED_START_MS: i64 = 1_704_067_200_000;
/// Generated timestamps end here: 2026-01-01T00:00:00Z. Mutations are never timestamped
/// earlier than 1 ms after it.
pub(crate) const GENERATED_END_MS: i64 = 1_767_225_600_000;

/// The KSUID epoch (1,400,000,000 Unix seconds).
const KSUID_EPOCH_SECS: i64 = 1_400_000_000;
/// KSUID's base62 alphabet (digits, upper case, lower case).
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Length of a base62 KSUID.
pub(crate) const KSUID_LEN: usize = 27;

/// A KSUID for an object created at `ms` (epoch milliseconds), its payload drawn from `rng`.
pub(crate) fn ksuid(ms: i64, rng: &mut Rng) -> String {
    let secs = (ms.div_euclid(1000) - KSUID_EPOCH_SECS).clamp(0, i64::from(u32::MAX)) as u32;
    let mut number = [0u8; 20];
    number[..4].copy_from_slice(&secs.to_be_bytes());
    number[4..12].copy_from_slice(&rng.next_u64().to_be_bytes());
    number[12..].copy_from_slice(&rng.next_u64().to_be_bytes());
    // Repeated division of the 160-bit big-endian number by 62.
    let mut digits = Vec::with_capacity(KSUID_LEN);
    while number.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for byte in &mut number {
            let acc = rem * 256 + u32::from(*byte);
            *byte = (acc / 62) as u8;
            rem = acc % 62;
        }
        digits.push(BASE62[rem as usize]);
    }
    digits.resize(KSUID_LEN, b'0');
    digits.reverse();
    digits.into_iter().map(char::from).collect()
}

/// `{prefix}_{ksuid}`, e.g. `user_…`, `org_…`, `orgmem_…`, `idn_…`, `msg_…`.
pub(crate) fn prefixed(prefix: &str, ms: i64, rng: &mut Rng) -> String {
    format!("{prefix}_{}", ksuid(ms, rng))
}

/// A `clerk_trace_id` for error number `n`: 32 lowercase hex digits.
pub(crate) fn trace_id(n: u64) -> String {
    format!(
        "{:016x}{:016x}",
        mix64(n ^ 0x7472_6163_6531),
        mix64(n.wrapping_add(1))
    )
}

/// Floors epoch milliseconds to the start of their UTC day (Clerk's `last_active_at` has day
/// precision).
pub(crate) fn day_floor(ms: i64) -> i64 {
    ms - ms.rem_euclid(86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `s` looks like a Clerk id with this prefix.
    fn has_prefix(s: &str, prefix: &str) -> bool {
        s.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|rest| {
                rest.len() == KSUID_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric())
            })
    }

    #[test]
    fn ksuids_have_clerks_shape_and_sort_by_time() {
        let mut rng = Rng::new(1, 2, 3);
        let early = prefixed("user", GENERATED_START_MS, &mut rng);
        let late = prefixed("user", GENERATED_END_MS, &mut rng);
        assert!(has_prefix(&early, "user"), "{early}");
        assert!(has_prefix(&late, "user"), "{late}");
        assert!(early < late, "{early} {late}");
        assert!(!has_prefix(&early, "org"));
        // The largest KSUID still fits 27 characters.
        let mut max = Rng::new(0, 0, 0);
        assert_eq!(ksuid(i64::MAX / 2, &mut max).len(), KSUID_LEN);
    }

    #[test]
    fn days_floor_to_midnight_utc() {
        assert_eq!(
            day_floor(GENERATED_START_MS + 3_600_000),
            GENERATED_START_MS
        );
        assert_eq!(day_floor(GENERATED_START_MS), GENERATED_START_MS);
        assert_eq!(trace_id(1).len(), 32);
        assert_ne!(trace_id(1), trace_id(2));
    }
}
