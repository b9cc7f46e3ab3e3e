//! What a scrub's reading is metered by: the cap on its read rate, and the progress it reports
//! (bytes as they are read, not only objects as they finish, so a store of a few large objects
//! shows movement too).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::ScrubProgress;

/// How often, at most, progress is reported while bytes are being read.
const REPORT_EVERY: Duration = Duration::from_millis(250);

pub(crate) struct Meter<'a> {
    /// Bytes per second, if capped.
    cap: Option<u64>,
    started: Instant,
    bytes_read: AtomicU64,
    objects_done: AtomicU64,
    objects_total: u64,
    bytes_total: u64,
    /// Milliseconds since `started` of the last report.
    last_report_ms: AtomicU64,
    progress: &'a (dyn Fn(ScrubProgress) + Sync),
}

impl<'a> Meter<'a> {
    pub(crate) fn new(
        cap: Option<u64>,
        objects_total: u64,
        bytes_total: u64,
        progress: &'a (dyn Fn(ScrubProgress) + Sync),
    ) -> Self {
        Meter {
            cap: cap.map(|c| c.max(1)),
            started: Instant::now(),
            bytes_read: AtomicU64::new(0),
            objects_done: AtomicU64::new(0),
            objects_total,
            bytes_total,
            last_report_ms: AtomicU64::new(0),
            progress,
        }
    }

    /// Accounts for `n` bytes of shard files read: reports progress if the last report is old
    /// enough, and sleeps until the average rate is back under the cap.
    pub(crate) fn read(&self, n: u64) {
        let total = self.bytes_read.fetch_add(n, Ordering::Relaxed) + n;
        let now = self.started.elapsed();
        let now_ms = now.as_millis() as u64;
        let last = self.last_report_ms.load(Ordering::Relaxed);
        // One thread wins the right to report; the others go on reading.
        if now_ms.saturating_sub(last) >= REPORT_EVERY.as_millis() as u64
            && self
                .last_report_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.report();
        }
        if let Some(cap) = self.cap {
            let due = Duration::from_secs_f64(total as f64 / cap as f64);
            if let Some(wait) = due.checked_sub(now) {
                std::thread::sleep(wait);
            }
        }
    }

    /// An object finished (verified, or skipped by a resumed scrub with its `skipped_bytes`).
    pub(crate) fn object_done(&self, skipped_bytes: u64) {
        self.objects_done.fetch_add(1, Ordering::Relaxed);
        self.bytes_read.fetch_add(skipped_bytes, Ordering::Relaxed);
        self.report();
    }

    /// Reports where the scrub stands (also called once at the start, with nothing done, so a
    /// display can start its clock there).
    pub(crate) fn report(&self) {
        (self.progress)(ScrubProgress {
            objects_done: self.objects_done.load(Ordering::Relaxed),
            objects_total: self.objects_total,
            bytes_done: self.bytes_read.load(Ordering::Relaxed),
            bytes_total: self.bytes_total,
        });
    }
}
