//! The threads that append the small-write log's records: one per location, kept for the
//! handle's life. A logged commit appends one disk's records itself and hands each other
//! disk's to the thread of its first location, then waits for the answers: the appends and
//! their `fdatasync`s overlap across disks without a thread spawned per location per commit
//! (that was a fifth of a grouped small put's CPU time, on a machine where eight writers keep
//! both cores busy). The threads take no lock, so a caller holding object locks may wait for
//! them (the `lock` module's rule).
//!
//! Records bound for locations on one disk ([`Location::log_disk`]) are made durable with one
//! cache flush between them ([`append_together`]): all written and their write-back started,
//! each but the last's waited for, then the last location synced. Measured on this project's
//! VM with six locations on one disk: six `fdatasync`s side by side ~470 us a group, this
//! ~330 us.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use crate::location::Location;

/// A record bound for a location.
pub(crate) struct Bound {
    pub slot: usize,
    pub location: Arc<dyn Location>,
    /// Where in the segment it goes.
    pub at: u64,
    /// Where the location's bytes not yet durable start (at most `at`): the commit records
    /// appended since its last sync. A write-back covers them too: lost to a power cut, they
    /// would leave a hole where a reader's scan of the segment stops, before this record.
    pub unsynced_from: u64,
    pub record: Vec<u8>,
}

impl Bound {
    /// Starts (`wait` false) or waits for (`wait` true) the write-back of the location's bytes
    /// not yet durable, up to the end of the record (written already).
    fn write_back(&self, segment: u64, wait: bool) -> io::Result<()> {
        let end = self.at + self.record.len() as u64;
        let from = self.unsynced_from.min(self.at);
        self.location.write_back_log(segment, from, end - from, wait)
    }
}

/// Each slot's outcome of an append.
pub(crate) type Outcomes = Vec<(usize, io::Result<()>)>;

/// Records to append durably to segment `segment`, all on one disk (or one record).
struct Append {
    segment: u64,
    records: Vec<Bound>,
    answer: Sender<(usize, io::Result<()>)>,
}

impl Append {
    fn run(self) {
        let Append {
            segment,
            records,
            answer,
        } = self;
        let slots: Vec<usize> = records.iter().map(|bound| bound.slot).collect();
        let outcomes =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| append_together(segment, records)))
                .unwrap_or_else(|_| {
                    let panicked = || Err(io::Error::other("a log append panicked"));
                    slots.into_iter().map(|slot| (slot, panicked())).collect()
                });
        for outcome in outcomes {
            // The caller waits for every answer; it is gone only if it panicked itself.
            let _ = answer.send(outcome);
        }
    }
}

/// Appends `records` (on one disk, if more than one) to `segment` and makes them durable:
/// one record with its own `fdatasync`; several all written and their write-back started, each
/// but the last's waited for, then the last's location synced, whose cache flush makes the
/// others durable too. If that sync fails, none of them counts as durable. Returns each slot's
/// outcome.
pub(crate) fn append_together(segment: u64, records: Vec<Bound>) -> Outcomes {
    if let [bound] = &records[..] {
        let durable = bound.location.append_log(segment, bound.at, &bound.record, true);
        return vec![(bound.slot, durable)];
    }
    let mut outcomes: Outcomes = records
        .iter()
        .map(|bound| {
            let written = bound
                .location
                .append_log(segment, bound.at, &bound.record, false)
                .and_then(|()| bound.write_back(segment, false));
            (bound.slot, written)
        })
        .collect();
    let Some((syncing, others)) = records.split_last() else {
        return outcomes;
    };
    for (bound, (_, outcome)) in others.iter().zip(&mut outcomes) {
        if outcome.is_ok() {
            *outcome = bound.write_back(segment, true);
        }
    }
    let Some(((_, last), others)) = outcomes.split_last_mut() else {
        return outcomes;
    };
    // Its record is written already (its write-back under way): an empty append, synced.
    if last.is_ok() {
        let end = syncing.at + syncing.record.len() as u64;
        *last = syncing.location.append_log(segment, end, &[], true);
    }
    if let Err(e) = last {
        for (_, outcome) in others.iter_mut().filter(|(_, o)| o.is_ok()) {
            *outcome = Err(io::Error::new(
                e.kind(),
                format!("the disk's cache was not flushed: {e}"),
            ));
        }
    }
    outcomes
}

/// Each location's appender thread, started at its first record; they end with the handle.
#[derive(Debug)]
pub(crate) struct LogAppenders {
    threads: Mutex<Vec<Option<Sender<Append>>>>,
}

impl LogAppenders {
    pub fn new(locations: usize) -> Self {
        LogAppenders {
            threads: Mutex::new((0..locations).map(|_| None).collect()),
        }
    }

    /// Appends each disk's records (`by_disk`) to
    /// `segment`, durably, side by side: the first disk's on the calling thread (it waits
    /// anyway: one hand-off fewer), the others on the thread of their first slot; returns
    /// every slot's outcome. Records whose thread cannot be started are appended on the
    /// calling thread too.
    pub fn append_durably(&self, segment: u64, by_disk: Vec<Vec<Bound>>) -> Outcomes {
        let (answer, answers) = mpsc::channel();
        let mut outcomes = Vec::new();
        let mut waiting = Vec::new();
        let mut appends = by_disk
            .into_iter()
            .filter(|records| !records.is_empty())
            .map(|records| Append {
                segment,
                records,
                answer: answer.clone(),
            });
        let here = appends.next();
        for append in appends {
            let slots: Vec<usize> = append.records.iter().map(|bound| bound.slot).collect();
            match self.thread(slots[0]) {
                Some(thread) => match thread.send(append) {
                    Ok(()) => waiting.extend(slots),
                    Err(mpsc::SendError(append)) => append.run(),
                },
                None => append.run(),
            }
        }
        if let Some(append) = here {
            append.run();
        }
        drop(answer);
        // Answers of appends run here came in first; a thread's answers come when its appends
        // are done (every `Append` holds a sender, so `recv` fails only once all are gone).
        while let Ok((slot, outcome)) = answers.recv() {
            waiting.retain(|&s| s != slot);
            outcomes.push((slot, outcome));
        }
        outcomes.extend(
            waiting
                .into_iter()
                .map(|slot| (slot, Err(io::Error::other("a log appender thread stopped")))),
        );
        outcomes
    }

    /// The sender to `slot`'s thread, started if it is not yet; `None` if it cannot be.
    fn thread(&self, slot: usize) -> Option<Sender<Append>> {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let entry = threads.get_mut(slot)?;
        if entry.is_none() {
            let (sender, appends) = mpsc::channel();
            std::thread::Builder::new()
                .name(format!("shardguard-log-{slot}"))
                .spawn(move || serve(appends))
                .ok()?;
            *entry = Some(sender);
        }
        entry.clone()
    }
}

/// An appender thread: appends until the handle (and with it the sender) is gone.
fn serve(appends: Receiver<Append>) {
    for append in appends {
        append.run();
    }
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use super::*;
    use crate::fault::power::{Aftermath, PowerLoss};
    use crate::location::{Durability, LocalDir};

    const SEGMENT: u64 = 7;
    const LOCATIONS: usize = 3;

    /// Three locations under `root` (one simulated disk), each with an empty segment.
    fn locations(root: &std::path::Path) -> Vec<Arc<dyn Location>> {
        (0..LOCATIONS)
            .map(|i| {
                let location = LocalDir::new(root.join(format!("loc-{i}")), Durability::Fsync);
                location.create_log(SEGMENT, 64 << 10).expect("segment");
                Arc::new(location) as Arc<dyn Location>
            })
            .collect()
    }

    /// Appends one record per location together, under a power watch that cuts before call
    /// `cut_after + 1` (or at the end); returns the outcomes and whether each location's
    /// segment holds its record after the reboot.
    fn append_and_reboot(cut_after: Option<u64>) -> (Outcomes, Vec<bool>, u64) {
        let dir = tempfile::tempdir().expect("tempdir");
        let locations = locations(dir.path());
        let record = |slot: usize| vec![b'a' + slot as u8; 5000];
        let watch = PowerLoss::watch(dir.path(), cut_after, Aftermath::Drop).expect("watch");
        let records = (0..LOCATIONS)
            .map(|slot| Bound {
                slot,
                location: Arc::clone(&locations[slot]),
                at: 100,
                unsynced_from: 100,
                record: record(slot),
            })
            .collect();
        let outcomes = append_together(SEGMENT, records);
        let calls = watch.calls();
        watch.reboot().expect("reboot");
        let kept = (0..LOCATIONS)
            .map(|slot| {
                let bytes = locations[slot].read_log(SEGMENT).expect("segment after reboot");
                bytes[100..5100] == record(slot)[..]
            })
            .collect();
        (outcomes, kept, calls)
    }

    #[test]
    fn records_on_one_disk_are_durable_through_the_last_one_s_flush_and_none_counts_without_it() {
        // Power on to the end: every record is reported durable and is.
        let (outcomes, kept, calls) = append_and_reboot(None);
        assert!(outcomes.iter().all(|(_, o)| o.is_ok()), "{outcomes:?}");
        assert_eq!(kept, vec![true; LOCATIONS]);
        // The power goes at the last call, the one sync that flushes the disk's cache: the
        // records only written back are lost with it, and none is reported durable.
        let (outcomes, kept, _) = append_and_reboot(Some(calls - 1));
        assert_eq!(outcomes.len(), LOCATIONS);
        assert!(outcomes.iter().all(|(_, o)| o.is_err()), "{outcomes:?}");
        assert_eq!(kept, vec![false; LOCATIONS]);
    }
}
