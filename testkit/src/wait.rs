//! Bounded polling: ask again until an answer is good or time runs out.
//!
//! ```
//! use std::time::Duration;
//! use testkit::wait::eventually;
//!
//! let mut tries = 0;
//! let n = eventually("the third try", Duration::from_secs(5), Duration::from_millis(1), || {
//!     tries += 1;
//!     if tries == 3 { Ok(tries) } else { Err(format!("try {tries}")) }
//! });
//! assert_eq!(n, 3);
//! ```

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// Calls `probe` until it returns `Ok`, sleeping `interval` between calls, for at most `timeout`.
///
/// `probe` runs at least once, and once more after the deadline has passed only if the deadline
/// passed during a sleep, so a slow probe is not cut short.
///
/// # Errors
///
/// The last `Err` of `probe` when `timeout` has passed without an `Ok`: the caller words its own
/// panic (with a log or a listing).
pub fn poll<T, E>(
    timeout: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => std::thread::sleep(interval),
        }
    }
}

/// Like [`poll`], but panics when time runs out.
///
/// # Panics
///
/// When `timeout` passes without an `Ok`, with `what`, the timeout and the last `Err`.
pub fn eventually<T, E: Debug>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    probe: impl FnMut() -> Result<T, E>,
) -> T {
    poll(timeout, interval, probe)
        .unwrap_or_else(|last| panic!("{what}: not within {timeout:?}; last: {last:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_returns_the_first_ok() {
        let mut calls = 0;
        let got = poll(Duration::from_secs(5), Duration::ZERO, || {
            calls += 1;
            if calls < 4 {
                Err(calls)
            } else {
                Ok("done")
            }
        });
        assert_eq!(got, Ok("done"));
        assert_eq!(calls, 4);
    }

    #[test]
    fn poll_gives_up_with_the_last_error() {
        let start = Instant::now();
        let mut calls = 0;
        let got: Result<(), u32> =
            poll(Duration::from_millis(50), Duration::from_millis(5), || {
                calls += 1;
                Err(calls)
            });
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(start.elapsed() < Duration::from_secs(5), "bounded");
        assert_eq!(got, Err(calls), "the last error, not the first");
        assert!(calls > 1, "asked more than once: {calls}");
    }

    #[test]
    fn poll_asks_once_even_with_no_time() {
        let mut calls = 0;
        let got: Result<(), ()> = poll(Duration::ZERO, Duration::ZERO, || {
            calls += 1;
            Err(())
        });
        assert_eq!((got, calls), (Err(()), 1));
    }

    #[test]
    #[should_panic(expected = "the answer: not within 10ms; last: \"still 41\"")]
    fn eventually_names_what_and_the_last_observation() {
        eventually(
            "the answer",
            Duration::from_millis(10),
            Duration::from_millis(1),
            || Err::<(), _>("still 41"),
        );
    }
}
