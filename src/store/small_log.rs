//! The small-write log: how a pack of grouped small writes is made durable with one
//! `fdatasync` per location, and no new file or directory at all.
//!
//! A handle that commits a group logs it: each location gets its shard file of the pack as a
//! *record* appended to the handle's *segment* there (a file written full of zeros when it was
//! created, so an append changes no metadata and its `fdatasync` waits for no journal commit).
//! Once a write quorum of records is durable the put is acknowledged, and a *commit record*
//! is appended beside each (not synced: it only makes the pack visible). Every handle reads
//! committed records as shard files (`log_view`), so a logged pack is read, scrubbed and
//! repaired as any pack. A full segment is *kept*: each location's index of its records is
//! written at its end, and its packs stay in it (readers take them from the index) instead of
//! being written a second time. A *fold* copies the entries of a segment's packs into full
//! packs of their own files (fsynced), then deletes the segment: the last segment when the
//! handle closes, a full one that could not be kept, the segments a crash left, in a *replay*
//! when the store opens, and the kept ones in a compaction's (FORMAT.md, "The small-write
//! log").
//!
//! A record must never bring back a pack's entries after a compaction dropped what they need
//! (a delete entry is dropped once nothing older of its key is left). So `locks/small-log`
//! carries an OFD lock on byte 0: shared while a handle's segment exists, exclusive for a
//! replay or a compaction. A compaction thus folds every segment left before it deletes a
//! pack, and no handle logs while it runs (they commit the usual way). A handle opening a store
//! replays what is left when it can take the lock exclusively: always after a power loss,
//! which leaves no handle alive.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::{is_pack_key, log_record, ObjectId, PackTable, ShardHeader, WriteStamp};
use crate::location::Durability;
use crate::lock::{byte_lock_request, open_lock_file, set_byte_lock, LOCKS_DIR};
use crate::placement;

use super::log_appenders::{append_together, Bound, Outcomes};
use super::Store;

/// A handle's log is checkpointed once nothing was logged for this long (`start_idle_folder`),
/// unless `StoreBuilder::log_idle` says otherwise.
pub(super) const DEFAULT_LOG_IDLE: Duration = Duration::from_secs(10);

/// Length of a segment on each location (a power-loss sweep asks for shorter ones).
fn segment_len() -> u64 {
    crate::disk::log_segment_len(4 << 20)
}

/// Records longer than this commit the usual way (they are packs of a few large objects).
fn max_record_len() -> usize {
    (segment_len() / 4) as usize
}

/// A full segment is kept only if its records take at most this many times the bytes of the
/// objects they hold, about 1.5 for dense packs of 4 + 2; one writer's one-object packs take
/// six times and more (a 4 KiB object fills one of 4 data chunks, the others hold the table):
/// such a segment is folded into dense packs instead.
fn max_kept_overhead() -> u64 {
    crate::disk::kept_log_overhead(2)
}

/// At most this many bytes of pack bodies are kept in memory per segment for its fold (a full
/// segment holds about `k` times its length in bodies: 16 MiB for 4 + 2).
const MAX_COPIES: usize = 32 << 20;

/// A commit record's length.
const COMMIT_LEN: usize = log_record::HEADER_LEN + 32;

/// The lock file, under the store's root.
pub(crate) const LOCK_FILE: &str = "small-log";
/// Byte locked shared while a segment exists, exclusive for a replay or compaction.
const LOG_BYTE: libc::off_t = 0;

/// This handle's log.
#[derive(Debug)]
pub(crate) struct SmallLog {
    lock_path: PathBuf,
    state: Mutex<LogState>,
    /// A segment waits in `full` for a fold (read without the state's lock after each group).
    fold_waiting: AtomicBool,
    /// How long the log is kept after the last logged put (`start_idle_folder`).
    idle: Duration,
}

#[derive(Debug, Default)]
struct LogState {
    /// The lock file (this handle's open file description holds its locks).
    file: Option<File>,
    /// The segment being appended to (the shared lock is held while there is one, or one of
    /// `full`, or a fold).
    segment: Option<Segment>,
    /// Segments that take no more records, waiting to be kept (or folded).
    full: Vec<Segment>,
    /// A thread is folding a segment without this state's lock.
    folding: bool,
    /// This handle holds the exclusive lock: it logs nothing until it lets it go.
    exclusive: bool,
    /// Small writes this handle committed, logged or not: its first commits the usual way.
    commits: u64,
    /// When the last record was logged.
    last_logged: Option<Instant>,
    /// The idle folder's thread runs (`start_idle_folder`).
    idle_folder: bool,
}

/// A segment's file on every location.
#[derive(Debug)]
struct SegmentFile {
    id: u64,
    /// Its length (that of a segment when it was made).
    len: u64,
}

#[derive(Debug)]
struct Segment {
    /// Its files: no record goes past their length.
    file: SegmentFile,
    /// Where the next record goes, per slot.
    ends: Vec<u64>,
    /// Up to where each slot's bytes are durable (the commit records after are not synced).
    synced: Vec<u64>,
    /// Each slot's disk, as far as one cache flush covers the records of all its locations
    /// (`Location::log_disk`, asked when the segment was made).
    disks: Vec<Option<u64>>,
    /// The pack writes committed through it, to fold.
    writes: Vec<(ObjectId, WriteStamp)>,
    /// Each slot's index of its shard records (`log_record::kept_entry`s), written at its
    /// end if it is kept.
    index: Vec<Vec<u8>>,
    /// The bytes of the objects its packs hold (deletes: none).
    object_bytes: u64,
    /// Each of `writes`' body and table, while they take at most [`MAX_COPIES`] bytes: the
    /// fold copies the entries from these instead of reading every pack back from the log
    /// through every location (that read was half of a fold's time).
    copies: Option<Vec<(Vec<u8>, PackTable)>>,
    /// The bytes of the bodies in `copies`.
    copied: usize,
    /// An append failed part way on some location: its end there is uncertain, so the
    /// segment takes no more records (readers would miss one written over a torn one).
    torn: bool,
}

impl Segment {
    fn new(file: SegmentFile, disks: Vec<Option<u64>>) -> Self {
        let n = disks.len();
        Segment {
            file,
            ends: vec![0; n],
            synced: vec![0; n],
            disks,
            writes: Vec::new(),
            index: vec![Vec::new(); n],
            object_bytes: 0,
            copies: Some(Vec::new()),
            copied: 0,
            torn: false,
        }
    }

    /// Keeps a copy of a pack just committed into it, or none at all once they take too much.
    fn keep_copy(&mut self, body: &[u8], table: &PackTable) {
        self.copied += body.len();
        match self.copied <= MAX_COPIES {
            true => {
                if let Some(copies) = &mut self.copies {
                    copies.push((body.to_vec(), table.clone()));
                }
            }
            false => self.copies = None,
        }
    }
}

/// The exclusive lock, held by a replay or a compaction; released when dropped.
pub(crate) struct Exclusive<'a>(&'a SmallLog);

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.exclusive = false;
        state.unlock();
    }
}

impl SmallLog {
    pub fn new(root: &Path, idle: Duration) -> Self {
        SmallLog {
            idle,
            lock_path: root.join(LOCKS_DIR).join(LOCK_FILE),
            state: Mutex::new(LogState::default()),
            fold_waiting: AtomicBool::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LogState {
    /// Takes the log lock of `kind` without waiting; `false` if another handle holds it.
    fn try_lock(&mut self, path: &Path, kind: libc::c_int) -> io::Result<bool> {
        if self.file.is_none() {
            self.file = Some(open_lock_file(path)?);
        }
        let Some(file) = &self.file else {
            return Ok(false);
        };
        match set_byte_lock(file, &byte_lock_request(LOG_BYTE, kind), false) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Lets this handle's lock go if it has no segment left (open, full, being folded).
    fn unlock_if_done(&self) {
        if self.segment.is_none() && self.full.is_empty() && !self.folding {
            self.unlock();
        }
    }

    /// Lets this handle's lock go. Cannot fail for a lock its description holds; if it did,
    /// the lock would go with the handle.
    fn unlock(&self) {
        if let Some(file) = &self.file {
            let _ = set_byte_lock(file, &byte_lock_request(LOG_BYTE, libc::F_UNLCK), false);
        }
    }
}

impl Store {
    /// Commits the shard files of one write of a pack through the log: `shards` are (slot,
    /// the shard file's bytes); the pack's `body` and `table` are kept for the fold. `None`
    /// when the log cannot take it (not fsync durability, a location not usable, a replay or
    /// compaction under way, records too long, the handle's first small write): the caller
    /// commits the usual way. Else how many locations hold the write, or the write quorum
    /// error (its records stay uncommitted: nobody reads them, a replay drops them).
    pub(crate) fn log_shards(
        &self,
        key: &str,
        (object, stamp): (ObjectId, WriteStamp),
        shards: Vec<(usize, Vec<u8>)>,
        (body, table): (&[u8], &PackTable),
    ) -> Result<Option<usize>> {
        if self.durability != Durability::Fsync
            || !self.file.logs_small_writes()
            || shards.iter().any(|(_, bytes)| bytes.len() > max_record_len())
            || self.slots.iter().any(|slot| slot.usable().is_err())
        {
            return Ok(None);
        }
        // Held throughout: one logged commit at a time per handle (group commit has one anyway).
        let mut state = self.small_log.state();
        state.commits += 1;
        // A handle's first small write commits the usual way: a command that puts or deletes
        // one object (`shardguard put`) would otherwise create a segment, write 4 MiB of zeros
        // per location and fold it at once, for one record.
        if state.exclusive || state.commits == 1 {
            return Ok(None);
        }
        let lens: Vec<(usize, usize)> = shards
            .iter()
            .map(|(slot, bytes)| (*slot, log_record::HEADER_LEN + bytes.len()))
            .collect();
        let Some(segment) = self.segment_for(&mut state, &lens)? else {
            return Ok(None);
        };
        let id = segment.file.id;
        let tag = self.log_tag(id);
        let records: Vec<(usize, Vec<u8>)> = shards
            .iter()
            .map(|(slot, bytes)| (*slot, log_record::frame(log_record::SHARD, bytes, tag)))
            .collect();
        let appended: Vec<(usize, u64)> = records
            .iter()
            .map(|(slot, record)| (*slot, record.len() as u64))
            .collect();
        let records = records
            .into_iter()
            .map(|(slot, record)| (slot, segment.ends[slot], record))
            .collect();
        let outcomes = self.append_durably(segment, records);
        let mut last_error = None;
        let logged = self.succeeded(outcomes, &mut last_error);
        segment.torn |= logged.len() < appended.len();
        for &(slot, len) in &appended {
            segment.ends[slot] += len;
        }
        for &slot in &logged {
            segment.synced[slot] = segment.ends[slot];
        }
        if logged.len() < self.write_quorum() {
            // Never committed: no reader sees its records, a replay counts too few of them.
            return Err(Error::WriteQuorum {
                key: key.to_owned(),
                written: logged.len(),
                needed: self.write_quorum(),
                source: last_error.unwrap_or_else(|| io::Error::other("too few usable locations")),
            });
        }
        // Acknowledged: the commit records make it visible (a replay finds it committed by
        // its quorum of records if a power cut takes them).
        let commit = log_record::commit(object, stamp, tag);
        for &(slot, len) in &appended {
            let body = segment.ends[slot] - len + log_record::HEADER_LEN as u64;
            let entry = log_record::kept_entry((object, stamp), body, len - log_record::HEADER_LEN as u64);
            segment.index[slot].extend_from_slice(&entry);
        }
        for &slot in &logged {
            let at = segment.ends[slot];
            match self.slots[slot].location.append_log(id, at, &commit, false) {
                Ok(()) => segment.ends[slot] += commit.len() as u64,
                Err(_) => segment.torn = true,
            }
        }
        segment.writes.push((object, stamp));
        segment.object_bytes += table.entries.iter().map(|e| e.len).sum::<u64>();
        segment.keep_copy(body, table);
        state.last_logged = Some(Instant::now());
        Ok(Some(logged.len()))
    }

    /// Appends each of `records` (slot, offset, bytes) to `segment` and makes it durable, with
    /// one cache flush for the records on one disk; returns each slot's outcome.
    fn append_durably(&self, segment: &Segment, records: Vec<(usize, u64, Vec<u8>)>) -> Outcomes {
        let mut by_disk: Vec<Vec<Bound>> = Vec::new();
        for (slot, at, record) in records {
            let bound = Bound {
                slot,
                location: self.slots[slot].location.clone(),
                at,
                unsynced_from: segment.synced[slot],
                record,
            };
            let disk = segment.disks[slot];
            match by_disk
                .iter_mut()
                .find(|job| disk.is_some() && segment.disks[job[0].slot] == disk)
            {
                Some(job) => job.push(bound),
                None => by_disk.push(vec![bound]),
            }
        }
        let id = segment.file.id;
        match crate::disk::commits_in_parallel() {
            true => self.log_appenders.append_durably(id, by_disk),
            false => by_disk
                .into_iter()
                .flat_map(|records| append_together(id, records))
                .collect(),
        }
    }

    /// The segment `records` go into: this handle's, if they fit, else a new one (the old
    /// one checkpointed). `None` if another handle holds the log exclusively.
    fn segment_for<'a>(
        &self,
        state: &'a mut LogState,
        records: &[(usize, usize)],
    ) -> Result<Option<&'a mut Segment>> {
        // Room is left at the end for the index that keeps the segment, this write's entry
        // included.
        let fits = |segment: &Segment| {
            let tail = log_record::kept_tail_len(segment.writes.len() + 1);
            records
                .iter()
                .all(|&(slot, len)| segment.ends[slot] + (len + COMMIT_LEN + tail) as u64 <= segment.file.len)
        };
        if state.segment.as_ref().is_some_and(|s| s.torn || !fits(s)) {
            // Folded by the thread that committed into it, once it is no longer the group's
            // writer (`fold_full_segments`): the next groups go on meanwhile.
            if let Some(full) = state.segment.take() {
                state.full.push(full);
                self.small_log.fold_waiting.store(true, Ordering::Release);
            }
        }
        if state.segment.is_none() {
            // Taken by another handle, or the lock file is not one (a FIFO, a link: a repairing
            // scrub moves it aside): the put commits the usual way, which needs no log lock.
            if !state
                .try_lock(&self.small_log.lock_path, libc::F_RDLCK)
                .unwrap_or(false)
            {
                return Ok(None);
            }
            // Each location's identity is checked here, not at every append: an append only
            // writes into the segment's file (never creates one, never past its end), so on a
            // location swapped or unmounted since, it fails instead of writing through.
            let Some(file) = self.create_segment() else {
                state.unlock_if_done();
                return Ok(None);
            };
            let disks = self.slots.iter().map(|slot| slot.location.log_disk()).collect();
            state.segment = Some(Segment::new(file, disks));
            if !state.idle_folder {
                state.idle_folder = self.start_idle_folder();
            }
        }
        Ok(state.segment.as_mut())
    }

    /// The tag of segment `id`'s records: 0 (untagged) in a store of version 3 or 4, whose
    /// older builds read only those, and whose segments are never reused.
    fn log_tag(&self, id: u64) -> u32 {
        match self.file.tagged_log {
            true => log_record::tag(id),
            false => 0,
        }
    }

    /// Makes a segment on every location: its id, or `None` (and nothing left) if one could
    /// not be made. Side by side (but under a power watch, whose calls must come in one
    /// order): each location's 4 MiB of zeros and their fsyncs keep the disk busy together;
    /// one after another, a new segment held every put up twice as long (~56 ms on this
    /// project's VM).
    fn create_segment(&self) -> Option<SegmentFile> {
        let (id, len) = (crate::ids::random_u64(), segment_len());
        let create = |slot: usize| {
            self.writable(slot)
                .is_some_and(|location| location.create_log(id, len).is_ok())
        };
        let created: Vec<usize> = match crate::disk::commits_in_parallel() {
            true => std::thread::scope(|s| {
                let creating: Vec<_> = (0..self.slots.len())
                    .map(|slot| s.spawn(move || create(slot)))
                    .collect();
                let joined = creating.into_iter().map(|c| c.join().unwrap_or(false));
                joined
                    .enumerate()
                    .filter_map(|(slot, ok)| ok.then_some(slot))
                    .collect()
            }),
            false => (0..self.slots.len()).take_while(|&slot| create(slot)).collect(),
        };
        if created.len() < self.slots.len() {
            for &slot in &created {
                let _ = self.slots[slot].location.remove_log(id);
            }
            return None;
        }
        Some(SegmentFile { id, len })
    }

    /// Removes a segment from every location; one left behind is folded or removed by the
    /// next replay.
    fn remove_segment(&self, id: u64) {
        for slot in &self.slots {
            let _ = slot.location.remove_log(id);
        }
    }

    /// Folds the packs this handle logged into packs of their own files, then deletes its
    /// segment and lets the lock go. A segment that cannot be folded or deleted is left for a
    /// replay (its packs stay readable meanwhile).
    fn checkpoint(&self, state: &mut LogState) -> Result<()> {
        // The full ones are kept; the last, partly empty, is folded (kept, its room would be
        // lost).
        let mut segments: Vec<Segment> = std::mem::take(&mut state.full)
            .into_iter()
            .filter(|segment| !self.keep_segment(segment))
            .collect();
        segments.extend(state.segment.take());
        let mut outcome = Ok(());
        for segment in segments {
            let folded = self.fold_segment(segment);
            outcome = outcome.and(folded);
        }
        state.unlock_if_done();
        outcome
    }

    /// Keeps a full segment as it is, its packs read from it from now on, instead of copying
    /// them into packs of their own files (FORMAT.md, "Kept segments"): each location's index
    /// of its records is written at the segment's end and made durable, with the commit
    /// records before it. Only a segment with every record and commit record on every
    /// location, dense enough ([`max_kept_overhead`]), in a store that tags its records, and
    /// only once every index reads back right; `false` if it is not kept (the caller folds it:
    /// its fold mark makes any index written void).
    fn keep_segment(&self, segment: &Segment) -> bool {
        let written: u64 = segment.ends.iter().sum();
        let dense = segment.object_bytes.saturating_mul(max_kept_overhead()) >= written;
        if segment.torn || !self.file.tagged_log || segment.writes.is_empty() || !dense {
            return false;
        }
        let (id, len) = (segment.file.id, segment.file.len);
        let tag = self.log_tag(id);
        let tails: Vec<(usize, u64, Vec<u8>)> = segment
            .index
            .iter()
            .enumerate()
            .map(|(slot, index)| {
                let tail = log_record::kept_tail(id, tag, index);
                (slot, len - tail.len() as u64, tail)
            })
            .collect();
        if tails.iter().any(|&(slot, at, _)| at < segment.ends[slot]) {
            return false;
        }
        let outcomes = self.append_durably(segment, tails);
        let written =
            outcomes.len() == self.slots.len() && outcomes.iter().all(|(_, outcome)| outcome.is_ok());
        written && self.index_reads_back(segment)
    }

    /// Whether every location's copy of `segment` now ends with an index that verifies, as a
    /// reader finds it, and whose entries are its writes in order, each at a shard record of
    /// that write: readers take a kept segment's records from its index alone, so it is read
    /// back before the segment counts as kept (as a fold reads its new packs back).
    fn index_reads_back(&self, segment: &Segment) -> bool {
        let id = segment.file.id;
        let tag = self.log_tag(id);
        self.slots.iter().enumerate().all(|(slot, s)| {
            let index = match s.location.kept_log_record(id) {
                Ok(Some((record, len))) => log_record::kept_index(&record, id, tag, len),
                _ => None,
            };
            let (Some(index), Ok(bytes)) = (index, s.location.read_log(id)) else {
                return false;
            };
            index.len() == segment.writes.len()
                && index
                    .iter()
                    .zip(&segment.writes)
                    .all(|(&(write, offset, len), expected)| {
                        let body = bytes.get(offset as usize..(offset + len) as usize);
                        write == *expected
                            && body.and_then(|body| self.record_shard(slot, body)) == Some(write)
                    })
        })
    }

    /// Folds a segment that takes no more records, then deletes it. One that cannot be folded
    /// is left for a replay (its packs stay readable meanwhile).
    fn fold_segment(&self, segment: Segment) -> Result<()> {
        let forgotten = self.fold_logged(&segment.writes, segment.copies.as_deref())?;
        self.retire_folded(segment.file.id);
        // A listing of this handle's since the fold forgot its logged packs may have found
        // them in the segment, still there: forgotten again, and no listing that overlapped
        // the deletion counts as current (cheaper than listing again after every fold).
        self.pack_changes.forget_packs(&self.packs, &forgotten);
        Ok(())
    }

    /// Keeps or folds the segments that filled up, if no other thread is doing so: called by
    /// a thread that committed a group, after it let the writer's role go, so that the work
    /// holds up its own put only. The state's lock is not held meanwhile: the next groups are
    /// logged in the next segment.
    pub(crate) fn fold_full_segments(&self) {
        if !self.small_log.fold_waiting.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.small_log.state();
        if state.folding {
            return;
        }
        while let Some(segment) = state.full.pop() {
            state.folding = true;
            drop(state);
            // Not folded now, it is left for a replay: the same as a fold at close failing.
            if !self.keep_segment(&segment) {
                let _ = self.fold_segment(segment);
            }
            state = self.small_log.state();
            state.folding = false;
        }
        self.small_log.fold_waiting.store(false, Ordering::Release);
        state.unlock_if_done();
    }

    /// Retires a folded segment: first marked folded on every location (so a copy left by a
    /// crash part way is known for one), then removed.
    fn retire_folded(&self, id: u64) {
        // Its packs leave the set: other handles list again.
        let _change = self.pack_changes.begin(&self.packs);
        let folded = log_record::frame(log_record::FOLDED, &[], self.log_tag(id));
        // Every location marked (no stopping at the first that fails).
        for slot in &self.slots {
            let _ = slot.location.append_log(id, 0, &folded, true);
        }
        self.remove_segment(id);
    }

    /// Starts the thread that checkpoints this handle's log once nothing was logged for
    /// the log's `idle` time: a long-lived handle that puts now and then would otherwise keep its
    /// segment (4 MiB per location) and its shared lock, and so hold off every compaction,
    /// until it closes. The thread holds the store only while it looks (a weak reference
    /// otherwise), and ends with the segment or the handle. `false` if no thread could be had
    /// (the log is then checkpointed when full or at close, as before).
    fn start_idle_folder(&self) -> bool {
        let store = Arc::downgrade(&self.0);
        let idle = self.small_log.idle;
        let look = move || loop {
            std::thread::sleep(idle / 4);
            let Some(store) = store.upgrade().map(Store) else {
                return;
            };
            let mut state = store.small_log.state();
            let quiet = state.last_logged.is_none_or(|at| at.elapsed() >= idle);
            if quiet && !state.folding && !state.exclusive {
                // Left for a replay if it fails, as a checkpoint at close would be.
                let _ = store.checkpoint(&mut state);
            }
            if state.segment.is_none() && state.full.is_empty() && !state.folding {
                // A segment made from now on starts a new thread.
                state.idle_folder = false;
                return;
            }
        };
        std::thread::Builder::new()
            .name("shardguard-idle-fold".into())
            .spawn(look)
            .is_ok()
    }

    /// Checkpoints this handle's log, if it has one (the last handle of a store closing).
    pub(crate) fn checkpoint_small_log(&self) -> Result<()> {
        let mut state = self.small_log.state();
        self.checkpoint(&mut state)
    }

    /// Takes the log exclusively (after checkpointing this handle's own segment): `None` while
    /// another handle logs or replays.
    pub(crate) fn exclusive_log(&self) -> Result<Option<Exclusive<'_>>> {
        let mut state = self.small_log.state();
        if state.folding {
            return Ok(None);
        }
        self.checkpoint(&mut state)?;
        if state.exclusive {
            return Ok(None);
        }
        let io = |e| Error::io(&self.small_log.lock_path, e);
        if !state
            .try_lock(&self.small_log.lock_path, libc::F_WRLCK)
            .map_err(io)?
        {
            return Ok(None);
        }
        state.exclusive = true;
        Ok(Some(Exclusive(&self.small_log)))
    }

    /// Folds what the segments left on the locations hold, then deletes them (the caller
    /// holds the log exclusively); kept segments too if `fold_kept` (a compaction's), else
    /// they stay. Only with every location usable and every segment read: how many records a
    /// write has on all of them decides whether it may have been acknowledged. Returns how
    /// many segments are left to replay (kept ones not counted unless `fold_kept`).
    pub(crate) fn replay_small_logs(&self, _exclusive: &Exclusive<'_>, fold_kept: bool) -> usize {
        let mut listed: Vec<(usize, u64)> = Vec::new();
        let mut unlisted = 0;
        for slot in 0..self.slots.len() {
            match self.writable(slot).map(|location| location.list_logs()) {
                Some(Ok(ids)) => listed.extend(ids.into_iter().map(|id| (slot, id))),
                _ => unlisted += 1,
            }
        }
        let mut ids: Vec<u64> = listed.iter().map(|&(_, id)| id).collect();
        ids.sort_unstable();
        ids.dedup();
        let (kept, live): (Vec<u64>, Vec<u64>) = ids.into_iter().partition(|&id| self.is_kept(&listed, id));
        if unlisted > 0 {
            return unlisted + live.len() + if fold_kept { kept.len() } else { 0 };
        }
        // Live segments together (a crash may leave several handles' writes), then each kept
        // one alone: a fold holds its segments' bytes in memory.
        let mut batches = vec![live];
        if fold_kept {
            batches.extend(kept.into_iter().map(|id| vec![id]));
        }
        batches
            .into_iter()
            .filter(|batch| !batch.is_empty())
            .map(|batch| {
                let segments: Vec<(usize, u64)> = listed
                    .iter()
                    .filter(|(_, id)| batch.contains(id))
                    .copied()
                    .collect();
                self.replay_segments(&segments)
            })
            .sum()
    }

    /// Whether segment `id` is kept: every location in `listed` that has it holds its index,
    /// and none marks it folded (a fold cut short: it is retired).
    fn is_kept(&self, listed: &[(usize, u64)], id: u64) -> bool {
        let tag = self.log_tag(id);
        listed
            .iter()
            .filter(|&&(_, listed)| listed == id)
            .all(|&(slot, _)| match self.slots[slot].location.kept_log_record(id) {
                Ok(Some((record, len))) => log_record::kept_index(&record, id, tag, len).is_some(),
                _ => false,
            })
    }

    /// Folds and deletes `segments` (slot, id): see [`Store::replay_small_logs`]. Returns how
    /// many are left.
    fn replay_segments(&self, listed: &[(usize, u64)]) -> usize {
        let mut segments: Vec<(usize, u64, Vec<u8>)> = Vec::new();
        for &(slot, id) in listed {
            match self.slots[slot].location.read_log(id) {
                Ok(bytes) => segments.push((slot, id, bytes)),
                Err(_) => return listed.len(),
            }
        }
        // Each pack write's records, by slot, and the slots where a commit record names it.
        let mut writes: BTreeMap<(ObjectId, WriteStamp), (Vec<usize>, Vec<usize>)> = BTreeMap::new();
        let mut ends = Vec::new();
        let folded: Vec<u64> = segments
            .iter()
            .filter(|(_, id, bytes)| log_record::is_folded(bytes, self.log_tag(*id)))
            .map(|(_, id, _)| *id)
            .collect();
        for (slot, id, bytes) in &segments {
            if folded.contains(id) {
                continue;
            }
            let (records, end) = log_record::parse(bytes, self.log_tag(*id));
            ends.push((*slot, *id, end as u64));
            for (kind, body) in records {
                if kind == log_record::COMMIT {
                    if let Some(write) = log_record::committed(body) {
                        writes.entry(write).or_default().1.push(*slot);
                    }
                } else if let Some(write) = self.record_shard(*slot, body) {
                    let held = &mut writes.entry(write).or_default().0;
                    if !held.contains(slot) {
                        held.push(*slot);
                    }
                }
            }
        }
        // A write with a commit record, or a quorum of records, may have been acknowledged:
        // each of its records is made visible (committed) where it lacks a commit record, and
        // it is folded. One with fewer was not, and goes with the segments.
        let acknowledged: Vec<(ObjectId, WriteStamp)> = writes
            .iter()
            .filter(|(_, (held, committed))| !committed.is_empty() || held.len() >= self.write_quorum())
            .map(|(write, _)| *write)
            .collect();
        let mut left = 0;
        for &(slot, id, end) in &ends {
            let mut at = end;
            // (A kept segment has a commit record for each of its writes: nothing is appended
            // into the room its index takes.)
            let lacking = acknowledged.iter().filter(|write| {
                !writes
                    .get(write)
                    .is_some_and(|(_, committed)| committed.contains(&slot))
            });
            for &(object, stamp) in lacking {
                let commit = log_record::commit(object, stamp, self.log_tag(id));
                let location = &self.slots[slot].location;
                if location.append_log(id, at, &commit, false).is_err() {
                    left += 1;
                }
                at += commit.len() as u64;
            }
        }
        // The index lists again: the packs just made visible are new to it.
        self.pack_changes.unsettle(&self.packs);
        if self.fold_logged(&acknowledged, None).is_err() {
            return listed.len();
        }
        let mut ids: Vec<u64> = listed.iter().map(|&(_, id)| id).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            self.retire_folded(id);
        }
        self.pack_changes.unsettle(&self.packs);
        for slot in 0..self.slots.len() {
            let remaining = self.slots[slot].location.list_logs();
            left += listed
                .iter()
                .filter(|(s, id)| *s == slot && remaining.as_ref().map_or(true, |r| r.contains(id)))
                .count();
        }
        left
    }

    /// The pack write a record at `slot` is a shard file of, if it is one of this store's
    /// packs' shard files that belongs there.
    fn record_shard(&self, slot: usize, body: &[u8]) -> Option<(ObjectId, WriteStamp)> {
        let (header, _) = ShardHeader::decode_prefix(body).ok()?;
        let object = header.object_id();
        let belongs = header.store_id == self.file.store_id
            && is_pack_key(&header.key)
            && header.geometry == self.file.geometry
            && placement::slot_of_shard(object, usize::from(header.shard_index), self.slots.len()) == slot;
        belongs.then_some((object, header.stamp))
    }

    /// Replays what is left of crashed handles' logs, if no other handle logs: when a store
    /// opens. What cannot be replayed now is left for the next open or compaction.
    pub(crate) fn replay_small_logs_if_free(&self) {
        if !self.file.logs_small_writes() {
            return;
        }
        // Nothing left to replay (the rule when the last handle closed cleanly): no lock taken,
        // no lock file created, which a cold cache would make every command pay for.
        let nothing_left = self.slots.iter().all(|slot| {
            slot.usable()
                .is_ok_and(|location| location.list_logs().is_ok_and(|l| l.is_empty()))
        });
        if nothing_left {
            return;
        }
        if let Ok(Some(exclusive)) = self.exclusive_log() {
            self.replay_small_logs(&exclusive, false);
        }
    }
}
