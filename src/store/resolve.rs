//! Finding an object's current version: read every location's shard headers, then agree by
//! quorum.
//!
//! Rule (newest write first): a tombstone means the object is deleted; a data write held by at
//! least `k` locations (files of that write whose header verifies, or is damaged, with at least
//! one verified header) is the current version. A write held by fewer is an unfinished put: one
//! still under way (its writer holds the object's lock) or one that failed or was killed, and it
//! is passed over, unless it may have been acknowledged (its files, plus the locations that
//! could not be listed, reach the write quorum): then the answer is an error, never an older
//! version. A reader that cannot list at least [`Store::read_quorum`] locations refuses to
//! decide at all, since the newest acknowledged write may be on the others.
//!
//! Readers take no lock, so a gather confirms itself: every location is listed and its files
//! opened, then listed again; if nothing changed, there was a moment when the locations held
//! exactly what was opened, and an open file stays readable after a writer retires it. A
//! gather that raced a writer is repeated before an error is believed.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::{ObjectId, ShardHeader, WriteStamp, MAX_KEY_LEN, SHARD_HEADER_FIXED_LEN};
use crate::health::{HeaderProblem, LocationProblem};
use crate::location::{OpenedShard, ShardFile};
use crate::placement;

use super::{ShardHealth, ShardState, Store};

/// The least a hedged open waits for its last locations once enough have answered.
const MIN_OPEN_PATIENCE: Duration = Duration::from_millis(10);

/// What one location holds of one write of an object.
pub(crate) struct Candidate {
    pub stamp: WriteStamp,
    /// A pending file: its put had not finished committing (FORMAT.md).
    pub pending: bool,
    pub file: Arc<dyn ShardFile>,
    /// The decoded header, or why it could not be used.
    pub header: std::result::Result<ShardHeader, HeaderProblem>,
}

/// Everything the locations hold of an object.
pub(crate) struct Gathered {
    pub object: ObjectId,
    /// Per slot: the writes found there, or why the slot could not be read.
    pub slots: Vec<std::result::Result<Vec<Candidate>, LocationProblem>>,
    /// A listing changed while the files were opened (a concurrent put, delete or repair moved
    /// on), so the gather is not a snapshot of one moment.
    pub raced: bool,
}

/// The agreed current version of an object, with a handle per shard that holds it.
#[derive(Clone)]
pub(crate) struct Resolved {
    /// The header of the current write (shard index of whichever shard supplied it).
    pub header: ShardHeader,
    /// Per shard index: the file holding it, if any.
    pub shards: Vec<Option<Arc<dyn ShardFile>>>,
    /// Length of each shard's header; chunks start here.
    pub header_len: u64,
    /// Per slot health, for `stat`.
    pub health: Vec<ShardHealth>,
}

const MAX_HEADER_LEN: usize = SHARD_HEADER_FIXED_LEN + MAX_KEY_LEN + 4;

impl Store {
    /// Reads every location's shard headers of `object`. With `confirm`, each location is
    /// listed again after its files were opened, to confirm nothing moved meanwhile
    /// ([`Gathered::raced`] says whether something did); callers holding the object's lock, or
    /// who check what they see in other ways, need not. Never fails: an unreadable location or
    /// file is recorded, not raised.
    pub(crate) fn gather(&self, object: ObjectId, confirm: bool) -> Gathered {
        let mut raced = false;
        // Listed and opened first, with no reads in between, so the window a writer can slip
        // into is short whatever the headers cost to read.
        let mut opened = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let listed = slot
                .usable()
                .and_then(|location| open_listed(&**location, object));
            opened.push(listed.map(|(files, gone)| {
                raced |= gone;
                files
            }));
        }
        for (slot, found) in self.slots.iter().zip(&opened).filter(|_| confirm) {
            let Ok(found) = found else { continue };
            let Ok(location) = slot.usable() else { continue };
            raced |= listing_moved(&**location, object, found);
        }
        let (store_id, geometry) = (self.file.store_id, self.file.geometry);
        let slots = opened
            .into_iter()
            .map(|found| Ok(candidates(found?, store_id, geometry)))
            .collect();
        Gathered { object, slots, raced }
    }

    /// [`Store::gather`] for a reader of a store with remote locations: each location listed
    /// and its headers read on a thread of its own, side by side, and once all but `m - 1`
    /// were listed, the rest waited for half the time those took (at least
    /// [`MIN_OPEN_PATIENCE`], at most `patience`): the others' answers are the best measure of
    /// how long this open should take, fresher than any latency history. A location that has not answered by
    /// then is read around as if it could not be listed (as one that is down: the quorum rules
    /// hold either way), so one slow endpoint does not hold up every open. For reads only: a
    /// scrub must not take a slow location for a damaged one.
    pub(crate) fn gather_hedged(&self, object: ObjectId, patience: Duration) -> Gathered {
        let n = self.slots.len();
        let (store_id, geometry) = (self.file.store_id, self.file.geometry);
        let (answer, answers) = std::sync::mpsc::channel();
        let mut answered: Vec<Option<(SlotLook, bool)>> = (0..n).map(|_| None).collect();
        for (i, slot) in self.slots.iter().enumerate() {
            let location = slot.usable().cloned();
            let answer = answer.clone();
            let look = move || {
                // The reader may have gone on without this location: nobody listens then.
                let _ = answer.send((i, look_at_slot(location, object, store_id, geometry)));
            };
            let spawned = std::thread::Builder::new()
                .name("shardguard-open".into())
                .spawn(look.clone());
            if spawned.is_err() {
                look();
            }
        }
        drop(answer);
        // Only locations that were listed count: one that failed at once (down) leaves no
        // slack to give up on a slow one.
        let enough = n - usize::from(geometry.m.saturating_sub(1)).min(n);
        let started = Instant::now();
        let mut deadline: Option<Instant> = None;
        let (mut count, mut listed) = (0, 0);
        while count < n {
            let next = match deadline {
                Some(deadline) => answers.recv_timeout(deadline.saturating_duration_since(Instant::now())),
                None => answers
                    .recv()
                    .map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
            };
            let Ok((i, look)) = next else { break };
            listed += usize::from(look.0.is_ok());
            answered[i] = Some(look);
            count += 1;
            if listed >= enough && deadline.is_none() {
                let wait = (started.elapsed() / 2).clamp(MIN_OPEN_PATIENCE, patience.max(MIN_OPEN_PATIENCE));
                deadline = Some(Instant::now() + wait);
            }
        }
        let raced = answered.iter().flatten().any(|(_, raced)| *raced);
        let slots = answered
            .into_iter()
            .map(|look| match look {
                Some((found, _)) => found,
                None => Err(LocationProblem::ListingFailed {
                    detail: "no answer soon after the others: read around".into(),
                }),
            })
            .collect();
        Gathered { object, slots, raced }
    }

    /// The key of a gathered object: from its newest verified header (keys are not in paths).
    pub(crate) fn key_of(gathered: &Gathered) -> Option<String> {
        gathered
            .slots
            .iter()
            .flatten()
            .flatten()
            .filter_map(|c| c.header.as_ref().ok())
            .filter(|h| h.object_id() == gathered.object)
            .max_by_key(|h| h.stamp)
            .map(|h| h.key.clone())
    }

    /// Applies the quorum rule to what [`Store::gather`] found. `writers_excluded`: the caller
    /// holds the object's lock, so no write of it is under way.
    pub(crate) fn decide(&self, key: &str, gathered: Gathered, writers_excluded: bool) -> Result<Resolved> {
        let n = self.slots.len();
        let k = usize::from(self.file.geometry.k);
        let object = gathered.object;
        // A write with only pending files had not begun its second commit step, so it was never
        // acknowledged: it does not exist for readers. Once one of its files is committed, every
        // pending one is as good (FORMAT.md, "Committing a write").
        // (Nearly every object has no pending file: nothing to sort out then.)
        let mut gathered = gathered;
        let candidates = || gathered.slots.iter().flatten().flatten();
        if candidates().any(|c| c.pending) {
            let committed: BTreeSet<WriteStamp> =
                candidates().filter(|c| !c.pending).map(|c| c.stamp).collect();
            for found in gathered.slots.iter_mut().flatten() {
                found.retain(|c| committed.contains(&c.stamp));
            }
        }
        let listed = gathered.slots.iter().filter(|s| s.is_ok()).count();
        if listed < self.read_quorum() {
            return Err(Error::TooFewLocations {
                key: Some(key.to_owned()),
                usable: listed,
                total: n,
            });
        }
        let unlisted = n - listed;
        // Per write: files of it in their proper place (a verified header of this key and
        // shard, or a damaged one whose chunks may still verify), files of it anywhere, and
        // one verified header.
        #[derive(Default)]
        struct Votes {
            held: usize,
            present: usize,
            header: Option<ShardHeader>,
        }
        let mut votes: BTreeMap<WriteStamp, Votes> = BTreeMap::new();
        for (slot, found) in gathered.slots.iter().enumerate() {
            let Ok(found) = found else { continue };
            let expected_shard = placement::shard_of_slot(object, slot, n);
            for c in found {
                let entry = votes.entry(c.stamp).or_default();
                entry.present += 1;
                match &c.header {
                    Ok(h) if h.key == key && usize::from(h.shard_index) == expected_shard => {
                        entry.held += 1;
                        entry.header.get_or_insert_with(|| h.clone());
                    }
                    Ok(_) => {}
                    Err(_) => entry.held += 1,
                }
            }
        }
        let mut newest_partial = None;
        let mut current = None;
        for (stamp, v) in votes.iter().rev() {
            let Some(header) = &v.header else { continue };
            if header.tombstone {
                break;
            }
            if v.held >= k {
                current = Some((*stamp, header.clone()));
                break;
            }
            // Fewer than k: a put still under way is not acknowledged yet, so it is passed over
            // (its readers see the previous version, or none).
            if !writers_excluded && self.locks.is_locked(object) {
                continue;
            }
            if v.present + unlisted >= self.write_quorum() {
                // It may have been acknowledged: an older version would be a stale read.
                return Err(match unlisted {
                    0 => Error::NoQuorum {
                        key: key.to_owned(),
                        version: stamp.version,
                        held: v.held,
                        needed: k,
                    },
                    _ => Error::TooFewLocations {
                        key: Some(key.to_owned()),
                        usable: listed,
                        total: n,
                    },
                });
            }
            newest_partial.get_or_insert((stamp.version, v.held));
        }
        let Some((stamp, header)) = current else {
            return Err(match newest_partial {
                Some((version, held)) => Error::NoQuorum {
                    key: key.to_owned(),
                    version,
                    held,
                    needed: k,
                },
                None => Error::NotFound { key: key.to_owned() },
            });
        };

        let header_len = header.encoded_len() as u64;
        let expected_len = header.expected_file_len();
        let mut shards: Vec<Option<Arc<dyn ShardFile>>> = vec![None; n];
        let mut health = Vec::with_capacity(n);
        for (slot, found) in gathered.slots.into_iter().enumerate() {
            let shard = placement::shard_of_slot(object, slot, n);
            let location = self.slots[slot].dir.clone();
            let state = match found {
                Err(problem) => ShardState::Unavailable { problem },
                Ok(found) => {
                    let stale = found
                        .iter()
                        .filter(|c| c.stamp < stamp)
                        .map(|c| c.stamp.version)
                        .max();
                    match found.into_iter().find(|c| c.stamp == stamp) {
                        None => match stale {
                            Some(version) => ShardState::Stale { version },
                            None => ShardState::Missing,
                        },
                        Some(c) => {
                            let state = match &c.header {
                                Err(problem) => ShardState::HeaderDamaged {
                                    problem: problem.clone(),
                                },
                                Ok(h) if usize::from(h.shard_index) != shard || h.key != key => {
                                    ShardState::Misplaced
                                }
                                Ok(_) if c.file.len() < expected_len => ShardState::Truncated {
                                    len: c.file.len(),
                                    expected: expected_len,
                                },
                                Ok(_) => ShardState::Healthy,
                            };
                            // A damaged header does not spoil the chunks: their checksums are
                            // bound to this write, so they still verify or become erasures.
                            if state != ShardState::Misplaced {
                                shards[shard] = Some(c.file);
                            }
                            state
                        }
                    }
                }
            };
            health.push(ShardHealth {
                shard,
                slot,
                location,
                state,
            });
        }
        Ok(Resolved {
            header,
            shards,
            header_len,
            health,
        })
    }

    /// Gathers and decides as a reader (no lock). An error is believed only from a gather
    /// that raced no writer, and a "no quorum" only after a few looks: a put that was finishing
    /// during the first look is complete at the next.
    pub(crate) fn resolve(&self, key: &str) -> Result<Resolved> {
        let object = ObjectId::of_key(key);
        let mut backoff = Duration::from_micros(100);
        let mut attempt = 0;
        // A store with remote locations does not wait for a straggler (`gather_hedged`).
        let patience = self
            .file
            .remote
            .then(|| self.hedge_threshold(object, &(0..self.slots.len()).collect::<Vec<_>>()));
        loop {
            let gathered = match patience {
                Some(patience) => self.gather_hedged(object, patience),
                None => self.gather(object, true),
            };
            let raced = gathered.raced;
            let decided = self.decide(key, gathered, false);
            let doubtful = match &decided {
                Ok(_) => false,
                Err(Error::NotFound { .. }) => raced,
                Err(Error::NoQuorum { .. } | Error::TooFewLocations { .. }) => raced || attempt < 3,
                Err(_) => false,
            };
            // A writer that keeps the listings moving for this long is not a race any more.
            if !doubtful || attempt >= MAX_RESOLVE_ATTEMPTS {
                return decided;
            }
            attempt += 1;
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(10));
        }
    }

    /// Gathers and decides holding the object's lock: nothing moves, one look suffices.
    pub(crate) fn resolve_locked(&self, key: &str) -> Result<Resolved> {
        self.decide(key, self.gather(ObjectId::of_key(key), false), true)
    }
}

/// What one slot holds of an object, or why it could not be read.
type SlotLook = std::result::Result<Vec<Candidate>, LocationProblem>;

/// One location's look at `object`: listed and opened, listed again to confirm nothing moved
/// (the `bool`: something did), then each file's header read.
fn look_at_slot(
    location: std::result::Result<Arc<dyn crate::location::Location>, LocationProblem>,
    object: ObjectId,
    store_id: [u8; 16],
    geometry: crate::format::Geometry,
) -> (SlotLook, bool) {
    let location = match location {
        Ok(location) => location,
        Err(problem) => return (Err(problem), false),
    };
    let (opened, gone) = match open_listed(&*location, object) {
        Ok(opened) => opened,
        Err(problem) => return (Err(problem), false),
    };
    let raced = gone | listing_moved(&*location, object, &opened);
    (Ok(candidates(opened, store_id, geometry)), raced)
}

/// `location`'s files of `object`, listed and opened, less those gone between the two (the
/// `bool`: some were, a write moved on meanwhile).
fn open_listed(
    location: &dyn crate::location::Location,
    object: ObjectId,
) -> std::result::Result<(Vec<OpenedShard>, bool), LocationProblem> {
    let mut files = location
        .open_shards(object)
        .map_err(|e| LocationProblem::ListingFailed {
            detail: e.to_string(),
        })?;
    let listed = files.len();
    files.retain(|opened| !matches!(&opened.file, Err(e) if e.kind() == io::ErrorKind::NotFound));
    let gone = files.len() < listed;
    Ok((files, gone))
}

/// Whether `location`'s committed files of `object` are no longer those it `opened` (a write
/// moved on meanwhile), or it can no longer be listed.
fn listing_moved(location: &dyn crate::location::Location, object: ObjectId, opened: &[OpenedShard]) -> bool {
    let mut before: Vec<WriteStamp> = opened.iter().filter(|o| !o.pending).map(|o| o.stamp).collect();
    match location.list_shards(object) {
        Ok(mut now) => {
            before.sort();
            now.sort();
            before != now
        }
        Err(_) => true,
    }
}

/// The files a location opened, each with its header read (an unreadable file is treated like
/// a damaged header: an erasure).
fn candidates(
    opened: Vec<OpenedShard>,
    store_id: [u8; 16],
    geometry: crate::format::Geometry,
) -> Vec<Candidate> {
    opened
        .into_iter()
        .map(|OpenedShard { stamp, pending, file }| match file {
            Ok(file) => Candidate {
                header: read_header(&*file, stamp, store_id, geometry),
                stamp,
                pending,
                file,
            },
            Err(e) => Candidate {
                stamp,
                pending,
                file: Arc::new(Unreadable),
                header: Err(HeaderProblem::Unreadable {
                    detail: e.to_string(),
                }),
            },
        })
        .collect()
}

/// Reads and checks the header of `file`, which should be write `stamp` of this store.
pub(super) fn read_header(
    file: &dyn ShardFile,
    stamp: WriteStamp,
    store_id: [u8; 16],
    geometry: crate::format::Geometry,
) -> std::result::Result<ShardHeader, HeaderProblem> {
    let len = (file.len() as usize).min(MAX_HEADER_LEN);
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0)
        .map_err(|e| HeaderProblem::Unreadable {
            detail: e.to_string(),
        })?;
    let (header, _) = ShardHeader::decode_prefix(&buf)?;
    if header.store_id != store_id {
        return Err(HeaderProblem::ForeignStore);
    }
    if header.stamp != stamp {
        return Err(HeaderProblem::WrongWrite);
    }
    if header.geometry != geometry {
        return Err(HeaderProblem::WrongGeometry);
    }
    Ok(header)
}

/// Looks a reader takes before it believes an error that may come from racing writers (about
/// two seconds of backoff in all).
const MAX_RESOLVE_ATTEMPTS: u32 = 200;

/// Stands in for a shard file that could not be opened: every read fails.
struct Unreadable;

impl ShardFile for Unreadable {
    fn len(&self) -> u64 {
        0
    }
    fn read_exact_at(&self, _buf: &mut [u8], _offset: u64) -> io::Result<()> {
        // "Not found" as far as reads go: asking again cannot help (not a regular file, no
        // permission, an open that failed), so it is an erasure at once, not retransmitted.
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the shard file could not be opened as a regular file",
        ))
    }
}
