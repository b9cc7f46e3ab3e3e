//! The threads that append the small-write log's records: one per location, kept for the
//! handle's life. A logged commit appends one location's record itself and hands each other's
//! to its thread, then waits for the answers: the appends and their `fdatasync`s overlap across
//! locations without a thread spawned per location per commit (that was a fifth of a grouped
//! small put's CPU time, on a machine where eight writers keep both cores busy). The threads
//! take no lock, so a caller holding object locks may wait for them (the `lock` module's rule).

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use crate::location::Location;

/// A record bound for a location: its slot, its location, its offset in the segment, and
/// its bytes.
pub(crate) type Bound = (usize, Arc<dyn Location>, u64, Vec<u8>);

/// One record to append at `offset` of segment `segment`, made durable before the answer.
struct Append {
    slot: usize,
    location: Arc<dyn Location>,
    segment: u64,
    offset: u64,
    record: Vec<u8>,
    answer: Sender<(usize, io::Result<()>)>,
}

impl Append {
    fn run(self) {
        let Append {
            slot,
            location,
            segment,
            offset,
            record,
            answer,
        } = self;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            location.append_log(segment, offset, &record, true)
        }))
        .unwrap_or_else(|_| Err(io::Error::other("a log append panicked")));
        // The caller waits for every answer; it is gone only if it panicked itself.
        let _ = answer.send((slot, outcome));
    }
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

    /// Appends each `(slot, location, offset, record)` to `segment`, durably, side by side:
    /// the first on the calling thread (it waits anyway: one hand-off fewer), the others on
    /// their slots' threads; returns every slot's outcome. An append whose thread cannot be
    /// started runs on the calling thread too.
    pub fn append_durably(&self, segment: u64, records: Vec<Bound>) -> Vec<(usize, io::Result<()>)> {
        let (answer, answers) = mpsc::channel();
        let mut outcomes = Vec::with_capacity(records.len());
        let mut waiting = Vec::with_capacity(records.len());
        let mut appends = records
            .into_iter()
            .map(|(slot, location, offset, record)| Append {
                slot,
                location,
                segment,
                offset,
                record,
                answer: answer.clone(),
            });
        let here = appends.next();
        for append in appends {
            let slot = append.slot;
            match self.thread(slot) {
                Some(thread) => match thread.send(append) {
                    Ok(()) => waiting.push(slot),
                    Err(mpsc::SendError(append)) => append.run(),
                },
                None => append.run(),
            }
        }
        if let Some(append) = here {
            append.run();
        }
        drop(answer);
        // Answers of appends run here came in first; a thread's answer comes when its append
        // is done (every `Append` holds a sender, so `recv` fails only once all are gone).
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
