//! Waiting for eventually-consistent conditions (gossip convergence, reconciliation).
//! Timeouts here are generous upper bounds, never performance thresholds.

use std::time::{Duration, Instant};

/// Default bound for "the cluster converges": far above what a healthy netd needs.
pub const CONVERGE: Duration = Duration::from_secs(30);

const POLL: Duration = Duration::from_millis(100);

/// `$NETD_TESTS_TIME_SCALE` (default 1): every bound here and in the harness is multiplied by
/// it. The kernel-VM tier sets it, because software emulation runs each `ip`/`nft` command
/// ~100 times slower than the host; bounds stay bounds, never performance thresholds.
pub fn scaled(d: Duration) -> Duration {
    let k: u32 = std::env::var("NETD_TESTS_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|k| *k >= 1)
        .unwrap_or(1);
    d * k
}

/// Polls `f` until it returns true or `timeout` passes. Returns whether it became true.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + scaled(timeout);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `f` until it returns `Ok`; panics after `timeout` with `what` and the last
/// `Err` (a description of the state observed), so a failure says what was seen.
#[track_caller]
pub fn eventually<T>(timeout: Duration, what: &str, f: impl FnMut() -> Result<T, String>) -> T {
    eventually_every(timeout, POLL, what, f).0
}

/// Like [`eventually`] with an explicit poll interval; also returns how long it took.
#[track_caller]
pub fn eventually_every<T>(
    timeout: Duration,
    interval: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let start = Instant::now();
    let timeout = scaled(timeout);
    let deadline = start + timeout;
    loop {
        match f() {
            Ok(v) => return (v, start.elapsed()),
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for: {what}\nlast observed: {last}")
            }
            Err(_) => std::thread::sleep(interval),
        }
    }
}
