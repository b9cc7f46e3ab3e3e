//! Group commit: small objects put at the same moment by several threads share one pack, and so
//! the writes and fsyncs of its `k + m` shard files (LevelDB's write group, the same idea). The
//! first thread to arrive while no pack is being written writes one for everything queued by
//! then; the others wait for it, and the next to wake after it writes the next group. Each thread
//! keeps its own key's lock throughout, so the pack holds only writes already ordered by their
//! locks.
//!
//! A writer's next put can only join the group after the one that wrote its last: with eight
//! threads, half of them came back while a group was written and half were in it, so groups
//! alternated between the two halves and were half as large as the threads (measured: 3.9
//! objects a group with eight writers). So the writer of a group first gathers: it waits, for
//! at most [`GATHER_FOR`], until every thread of the last group that is not queued yet has come
//! back (PostgreSQL's `commit_delay` and MySQL's `binlog_group_commit_sync_delay`, counted in
//! threads instead of a fixed delay). A thread putting alone waits for nobody.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::PackEntry;

use super::packs::PackCommit;
use super::Store;

/// The writes waiting for a pack, and whether one is being written.
#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<Group>,
    /// Signalled when a group's outcome is in and the writer role is free.
    turn: Condvar,
    /// Signalled when a write joins the queue (for a writer gathering its group).
    arrived: Condvar,
}

/// How long a group's writer waits at most for the threads of the last group to come back:
/// about what they take to return and start their next put on a busy machine, a fraction of
/// the `fdatasync`s the group then shares.
const GATHER_FOR: Duration = Duration::from_micros(300);

/// A write waiting for a pack: its entry, its bytes, where it learns the outcome, and the
/// thread that put it.
type Queued = (PackEntry, Vec<u8>, (Arc<Ticket>, ThreadId));

#[derive(Default)]
struct Group {
    queue: Vec<Queued>,
    writing: bool,
    /// The threads whose writes the last group held.
    last_group: Vec<ThreadId>,
}

/// Where a waiting write learns how its pack went: the shard files written, or the error.
#[derive(Default)]
struct Ticket(Mutex<Option<std::result::Result<usize, Arc<Error>>>>);

impl Ticket {
    fn take(&self) -> Option<std::result::Result<usize, Arc<Error>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn set(&self, outcome: std::result::Result<usize, Arc<Error>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    }
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("GroupCommit")
            .field("queued", &state.queue.len())
            .field("writing", &state.writing)
            .finish()
    }
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, Group> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits (at most [`GATHER_FOR`]) until every thread of the last group has queued a
    /// write again, or one of them turned out to be gone; returns with the queue to write.
    fn gather<'a>(&self, mut state: MutexGuard<'a, Group>) -> MutexGuard<'a, Group> {
        let missing = |group: &Group| {
            group
                .last_group
                .iter()
                .any(|thread| !group.queue.iter().any(|(_, _, (_, t))| t == thread))
        };
        let deadline = Instant::now() + GATHER_FOR;
        while missing(&state) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .arrived
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state
    }
}

impl Store {
    /// Writes `entry` (with its `bytes`) in a pack, shared with the entries other threads are
    /// writing at the same moment; returns the shard files written once the pack is committed.
    /// The caller holds the entry's key lock.
    pub(crate) fn commit_grouped(&self, entry: PackEntry, bytes: Vec<u8>) -> Result<usize> {
        let key = entry.key.clone();
        let ticket = Arc::new(Ticket::default());
        let group = &self.group_commit;
        let mut state = group.lock();
        state
            .queue
            .push((entry, bytes, (ticket.clone(), std::thread::current().id())));
        group.arrived.notify_one();
        while state.writing {
            state = group.turn.wait(state).unwrap_or_else(|e| e.into_inner());
            if let Some(outcome) = ticket.take() {
                return self.own_outcome(&key, outcome);
            }
        }
        // The writer's turn: this write, every one queued by now, and those of the last
        // group's threads that come back soon.
        state.writing = true;
        let mut state = group.gather(state);
        let queued = std::mem::take(&mut state.queue);
        state.last_group = queued.iter().map(|(_, _, (_, thread))| *thread).collect();
        drop(state);
        self.commit_queued(queued);
        let mut state = group.lock();
        state.writing = false;
        group.turn.notify_all();
        drop(state);
        self.fold_full_segments();
        let outcome = ticket.take().unwrap_or_else(|| {
            Err(Arc::new(Error::Io {
                path: self.root.clone(),
                source: std::io::Error::other("a grouped write was not served"),
            }))
        });
        self.own_outcome(&key, outcome)
    }

    /// Writes the queued entries in as few packs as they fit in, and tells each its outcome.
    fn commit_queued(&self, queued: Vec<Queued>) {
        let mut rest = queued;
        while !rest.is_empty() {
            let (taken, laid) = self.lay_out_most(&rest);
            let outcome = match laid {
                Some(laid) => self.commit_pack(laid, PackCommit::Logged).map_err(Arc::new),
                None => Err(Arc::new(Error::Input {
                    source: std::io::Error::other("an object does not fit in a pack"),
                })),
            };
            for (_, _, (ticket, _)) in rest.drain(..taken) {
                ticket.set(outcome.clone());
            }
        }
    }

    /// A shared pack's outcome as one write's: its own error if it is the only one holding it,
    /// else the same failure told for this key.
    fn own_outcome(&self, key: &str, outcome: std::result::Result<usize, Arc<Error>>) -> Result<usize> {
        outcome.map_err(|shared| match Arc::try_unwrap(shared) {
            Ok(error) => error,
            Err(shared) => match &*shared {
                Error::Poisoned => Error::Poisoned,
                Error::WriteQuorum {
                    written,
                    needed,
                    source,
                    ..
                } => Error::WriteQuorum {
                    key: key.to_owned(),
                    written: *written,
                    needed: *needed,
                    source: std::io::Error::new(source.kind(), source.to_string()),
                },
                other => Error::WriteQuorum {
                    key: key.to_owned(),
                    written: 0,
                    needed: self.write_quorum(),
                    source: std::io::Error::other(format!(
                        "the pack shared with other writes failed: {other}"
                    )),
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(thread: ThreadId) -> Queued {
        let entry = PackEntry::new(
            "k",
            crate::format::WriteStamp {
                version: 1,
                write_id: 1,
            },
            b"",
            false,
        );
        (entry, Vec::new(), (Arc::new(Ticket::default()), thread))
    }

    #[test]
    fn a_writer_gathers_the_threads_of_the_last_group_and_waits_for_no_one_else() {
        // On a thread of its own: a `gather` that never returned fails the test, not hangs it.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            gathers();
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(60))
            .expect("gather returned (or the test panicked: see above)");
    }

    fn gathers() {
        let group = GroupCommit::default();
        let me = std::thread::current().id();
        // Alone: the last group was this thread's own, and it is queued.
        let mut state = group.lock();
        state.last_group = vec![me];
        state.queue.push(queued(me));
        let mut state = group.gather(state);
        assert_eq!(state.queue.len(), 1);
        // A thread of the last group comes back while the writer gathers: it joins the group
        // (it can queue only while `gather` waits: the writer holds the lock otherwise).
        let group = &group;
        std::thread::scope(move |s| {
            let worker = s.spawn(move || {
                let mut state = group.lock();
                state.queue.push(queued(std::thread::current().id()));
                group.arrived.notify_one();
            });
            let other = worker.thread().id();
            state.last_group = vec![me, other];
            while state.queue.len() < 2 {
                state = group.gather(state);
            }
            assert_eq!(state.queue[1].2 .1, other);
            // A thread of the last group that does not come back holds the writer up no
            // longer than GATHER_FOR: `gather` returns without it.
            state.queue.truncate(1);
            let state = group.gather(state);
            assert_eq!(state.queue.len(), 1);
        });
    }
}
