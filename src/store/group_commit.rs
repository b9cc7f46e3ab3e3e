//! Group commit: small objects put at the same moment by several threads share one pack, and so
//! the writes and fsyncs of its `k + m` shard files (LevelDB's write group, the same idea). The
//! first thread to arrive while no pack is being written writes one for everything queued by
//! then; the others wait for it, and the next to wake after it writes the next group. Each thread
//! keeps its own key's lock throughout, so the pack holds only writes already ordered by their
//! locks.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

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
}

#[derive(Default)]
struct Group {
    queue: Vec<(PackEntry, Vec<u8>, Arc<Ticket>)>,
    writing: bool,
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
        state.queue.push((entry, bytes, ticket.clone()));
        while state.writing {
            state = group.turn.wait(state).unwrap_or_else(|e| e.into_inner());
            if let Some(outcome) = ticket.take() {
                return self.own_outcome(&key, outcome);
            }
        }
        // The writer's turn: this write and every one queued by now.
        state.writing = true;
        let queued = std::mem::take(&mut state.queue);
        drop(state);
        self.commit_queued(queued);
        let mut state = group.lock();
        state.writing = false;
        group.turn.notify_all();
        drop(state);
        let outcome = ticket.take().unwrap_or_else(|| {
            Err(Arc::new(Error::Io {
                path: self.root.clone(),
                source: std::io::Error::other("a grouped write was not served"),
            }))
        });
        self.own_outcome(&key, outcome)
    }

    /// Writes the queued entries in as few packs as they fit in, and tells each its outcome.
    fn commit_queued(&self, queued: Vec<(PackEntry, Vec<u8>, Arc<Ticket>)>) {
        let mut rest = queued;
        while !rest.is_empty() {
            let (taken, laid) = self.lay_out_most(&rest);
            let outcome = match laid {
                Some(laid) => self.commit_pack(laid, PackCommit::Logged).map_err(Arc::new),
                None => Err(Arc::new(Error::Input {
                    source: std::io::Error::other("an object does not fit in a pack"),
                })),
            };
            for (_, _, ticket) in rest.drain(..taken) {
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
