//! What the in-process benchmarks share: sizes from the environment, percentiles.

use std::time::Duration;

/// `name` from the environment as a count, else `default`.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (0..=1) of `v` (sorted in place; nearest rank).
pub fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}
