//! Where a running scrub stands, saved so that a killed one resumes with little repeated.
//!
//! At each batch's end the checkpoint says every object up to `done_through` (in id order) is
//! done, with what was found. Between batch ends, at most every [`SAVE_EVERY`] or
//! [`SAVE_BYTES`] of reading (whichever comes first), it also lists the objects finished clean
//! since, and for each object being read without its lock, the stripe reached and the object
//! checksum so far (noted every 64 MiB of an object). A resumed scrub skips the former and
//! starts the latter at that stripe (if the object's write is still the same one). So a kill
//! repeats at most that much reading, plus 64 MiB per worker thread. Objects with findings are not listed: their findings only enter the
//! checkpoint at the batch's end, so they are scrubbed again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Findings;
use crate::error::Error;
use crate::format::{ObjectId, ScrubCheckpoint, WriteStamp};
use crate::store::Store;

/// Longest time between two saves while objects are being read.
const SAVE_EVERY: Duration = Duration::from_secs(10);
/// Most shard bytes read between two saves.
const SAVE_BYTES: u64 = 1 << 30;

/// What happened since the last batch end, kept in the checkpoint's findings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct InFlight {
    /// Objects finished with nothing found (hex ids).
    done: Vec<String>,
    /// Objects part read.
    partial: Vec<Partial>,
}

/// How far the reading of one object got.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Partial {
    object: String,
    version: u64,
    write_id: u64,
    next_stripe: u64,
    checksum: u32,
}

/// Where a resumed scrub may start.
#[derive(Debug, Default)]
pub(super) struct ResumeAt {
    done: BTreeSet<ObjectId>,
    partial: BTreeMap<ObjectId, Partial>,
}

impl ResumeAt {
    pub(super) fn from(in_flight: InFlight) -> Self {
        ResumeAt {
            done: in_flight
                .done
                .iter()
                .filter_map(|h| ObjectId::from_hex(h))
                .collect(),
            partial: in_flight
                .partial
                .into_iter()
                .filter_map(|p| Some((ObjectId::from_hex(&p.object)?, p)))
                .collect(),
        }
    }

    /// Whether `object` was finished clean after the last batch end.
    pub(super) fn done(&self, object: ObjectId) -> bool {
        self.done.contains(&object)
    }
}

pub(super) struct Checkpointer<'a> {
    store: &'a Store,
    resume: ResumeAt,
    state: Mutex<State>,
}

struct State {
    base: ScrubCheckpoint,
    findings: Findings,
    done: BTreeSet<ObjectId>,
    /// Per object being read: its write, the next stripe, the object checksum so far.
    partial: BTreeMap<ObjectId, (WriteStamp, u64, u32)>,
    last_save: Instant,
    bytes_since_save: u64,
    /// The first save that failed since the main thread last looked.
    error: Option<Error>,
}

impl<'a> Checkpointer<'a> {
    pub(super) fn new(store: &'a Store, base: ScrubCheckpoint, resume: ResumeAt) -> Self {
        Checkpointer {
            store,
            resume,
            state: Mutex::new(State {
                base,
                findings: Findings::default(),
                done: BTreeSet::new(),
                partial: BTreeMap::new(),
                last_save: Instant::now(),
                bytes_since_save: 0,
                error: None,
            }),
        }
    }

    /// Whether the interrupted scrub this one resumes finished `object` clean after its last
    /// batch end.
    pub(super) fn resumed_done(&self, object: ObjectId) -> bool {
        self.resume.done(object)
    }

    /// Where reading `object`'s write `stamp` may start: the next stripe and the object
    /// checksum so far, if an interrupted scrub got that far into the same write.
    pub(super) fn resume_point(&self, object: ObjectId, stamp: WriteStamp) -> Option<(u64, u32)> {
        let p = self.resume.partial.get(&object)?;
        (p.version == stamp.version && p.write_id == stamp.write_id).then_some((p.next_stripe, p.checksum))
    }

    /// A stripe of `object` was verified without the lock; `bytes` were read for it.
    pub(super) fn stripe_done(
        &self,
        object: ObjectId,
        stamp: WriteStamp,
        next_stripe: u64,
        checksum: u32,
        bytes: u64,
    ) {
        let mut state = self.lock();
        state.partial.insert(object, (stamp, next_stripe, checksum));
        state.bytes_since_save += bytes;
        self.save_if_due(&mut state);
    }

    /// `object` is finished, `bytes` read for it since its last note; `clean` if nothing was
    /// found in it.
    pub(super) fn object_done(&self, object: ObjectId, clean: bool, bytes: u64) {
        let mut state = self.lock();
        state.partial.remove(&object);
        state.bytes_since_save += bytes;
        if clean {
            state.done.insert(object);
        }
        self.save_if_due(&mut state);
    }

    /// A batch ended: `base` and `findings` now cover it. Saves at once.
    pub(super) fn batch_done(&self, base: ScrubCheckpoint, findings: Findings) {
        let mut state = self.lock();
        state.base = base;
        state.findings = findings;
        state.done.clear();
        state.partial.clear();
        self.save(&mut state);
    }

    /// Saves where the scrub stands now (it is stopping).
    pub(super) fn save_now(&self) {
        let mut state = self.lock();
        self.save(&mut state);
    }

    /// The first save that failed since the last call (saves are advisory: the scrub goes on).
    pub(super) fn take_error(&self) -> Option<Error> {
        self.lock().error.take()
    }

    fn save_if_due(&self, state: &mut State) {
        if state.last_save.elapsed() >= SAVE_EVERY || state.bytes_since_save >= SAVE_BYTES {
            self.save(state);
        }
    }

    fn save(&self, state: &mut State) {
        let mut findings = state.findings.clone();
        findings.in_flight = InFlight {
            done: state.done.iter().map(|o| o.to_hex()).collect(),
            partial: state
                .partial
                .iter()
                .map(|(object, &(stamp, next_stripe, checksum))| Partial {
                    object: object.to_hex(),
                    version: stamp.version,
                    write_id: stamp.write_id,
                    next_stripe,
                    checksum,
                })
                .collect(),
        };
        let mut checkpoint = state.base.clone();
        checkpoint.findings = findings.encode();
        if let Err(e) = self.store.save_checkpoint(&checkpoint) {
            state.error.get_or_insert(e);
        }
        state.last_save = Instant::now();
        state.bytes_since_save = 0;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked mid-update (a progress callback) leaves a usable state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
