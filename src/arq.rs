//! Retransmission (ARQ): ask again before giving a chunk up as an erasure.
//!
//! A transient fault (a flaky read, a bit flipped in flight, a timeout) is cured by reading again;
//! only a fault that persists through the [`RetryPolicy`] costs a Reed-Solomon reconstruction.
//! Faults that cannot be transient (the file is missing, or too short for the chunk) are not
//! retried: the answer would not change, and retrying would only delay the rebuild.

use std::io;
use std::time::{Duration, Instant};

/// How hard to retry a chunk read that failed verification or returned an error; every
/// setter's doc gives its default.
///
/// ```
/// use std::time::Duration;
/// let patient = shardguard::RetryPolicy::default()
///     .attempts(5)
///     .deadline(Duration::from_secs(10));
/// # let _ = patient;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    pub(crate) attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(50),
            deadline: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// One try, no retransmission: every fault is an erasure at once.
    pub fn no_retry() -> Self {
        Self::default().attempts(1)
    }

    /// Total tries per chunk, the first included. Default 3; at least 1 is always made.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Pause before the first retry; doubles for each further one. Default 1 ms.
    pub fn initial_backoff(mut self, pause: Duration) -> Self {
        self.initial_backoff = pause;
        self
    }

    /// Cap on a single pause. Default 50 ms.
    pub fn max_backoff(mut self, pause: Duration) -> Self {
        self.max_backoff = pause;
        self
    }

    /// No retry starts, and no pause extends, past this time since the first try. Default 2 s.
    /// A single blocked read is not interrupted (local reads cannot be cancelled).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }
}

/// Why one try of a chunk read failed.
#[derive(Debug)]
pub enum ChunkFault {
    /// The bytes arrived but their CRC32C did not match: corrupt on disk or in flight.
    Corrupt,
    /// The read returned an error.
    Io(io::Error),
}

impl ChunkFault {
    /// Faults that reading again cannot cure.
    pub fn is_persistent(&self) -> bool {
        match self {
            ChunkFault::Corrupt => false,
            ChunkFault::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::PermissionDenied
                    // A remote location known to be down right now (`remote::client`).
                    | io::ErrorKind::NotConnected
            ),
        }
    }
}

/// Time as the retry loop sees it; tests and fuzz targets substitute a simulated clock.
pub trait Clock {
    /// Time since an arbitrary fixed start.
    fn elapsed(&self) -> Duration;
    /// Waits for `d`.
    fn sleep(&self, d: Duration);
}

/// The real clock.
#[derive(Debug)]
pub struct SystemClock(Instant);

impl SystemClock {
    /// A clock starting now.
    pub fn start() -> Self {
        SystemClock(Instant::now())
    }
}

impl Clock for SystemClock {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// What retrying one chunk read came to.
#[derive(Debug)]
pub struct Retried<T> {
    /// The verified value, or the last fault once the policy gave up.
    pub result: Result<T, ChunkFault>,
    /// Tries made (1 means no retransmission).
    pub attempts: u32,
}

/// Runs `read` until it succeeds, a persistent fault occurs, the attempts are used up, or the
/// next try would start after the deadline.
pub fn retry<T>(
    policy: &RetryPolicy,
    clock: &dyn Clock,
    mut read: impl FnMut() -> Result<T, ChunkFault>,
) -> Retried<T> {
    let mut backoff = policy.initial_backoff;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let fault = match read() {
            Ok(value) => {
                return Retried {
                    result: Ok(value),
                    attempts,
                }
            }
            Err(fault) => fault,
        };
        let elapsed = clock.elapsed();
        let pause = backoff.min(policy.max_backoff);
        if fault.is_persistent()
            || attempts >= policy.attempts.max(1)
            || elapsed.saturating_add(pause) >= policy.deadline
        {
            return Retried {
                result: Err(fault),
                attempts,
            };
        }
        clock.sleep(pause);
        backoff = backoff.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct FakeClock(Cell<Duration>);
    impl Clock for FakeClock {
        fn elapsed(&self) -> Duration {
            self.0.get()
        }
        fn sleep(&self, d: Duration) {
            self.0.set(self.0.get() + d)
        }
    }

    #[test]
    fn a_transient_fault_within_the_budget_is_cured() {
        let clock = FakeClock(Cell::new(Duration::ZERO));
        let mut fails = 2;
        let r = retry(&RetryPolicy::default(), &clock, || {
            if fails > 0 {
                fails -= 1;
                Err(ChunkFault::Corrupt)
            } else {
                Ok(7)
            }
        });
        assert_eq!((r.result.ok(), r.attempts), (Some(7), 3));
        assert_eq!(clock.0.get(), Duration::from_millis(3));
    }

    #[test]
    fn a_missing_file_is_not_retried() {
        let clock = FakeClock(Cell::new(Duration::ZERO));
        let r: Retried<()> = retry(&RetryPolicy::default(), &clock, || {
            Err(ChunkFault::Io(io::ErrorKind::NotFound.into()))
        });
        assert_eq!(r.attempts, 1);
    }

    #[test]
    fn no_retry_starts_past_the_deadline() {
        let clock = FakeClock(Cell::new(Duration::ZERO));
        let policy = RetryPolicy {
            attempts: 1000,
            deadline: Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        let r: Retried<()> = retry(&policy, &clock, || Err(ChunkFault::Corrupt));
        assert!(r.result.is_err());
        assert!(clock.0.get() < policy.deadline);
    }
}
