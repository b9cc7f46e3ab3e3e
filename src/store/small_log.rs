//! The small-write log: how a pack of grouped small writes is made durable with one
//! `fdatasync` per location instead of `k + m` new files and directories fsynced twice.
//!
//! A handle that commits a group logs it: each location gets its shard file of the pack in
//! place without waiting for the disk, then the same bytes appended, as a record, to the
//! handle's *segment* there (a file written full of zeros when it was created, so an append
//! changes no metadata and its `fdatasync` waits for no journal commit). The put is
//! acknowledged once a write quorum of records is durable. A *checkpoint* (segment full, handle
//! closed) syncs the locations and deletes the segment. After a power loss, a *replay* puts
//! back every shard file a surviving record holds that the disk lost or tore (FORMAT.md, "The
//! small-write log").
//!
//! A replayed record must never bring back a pack that has since been deleted (compaction
//! deletes packs, and may later drop a delete entry that only such a pack's entries needed).
//! So `locks/small-log` carries an OFD lock on byte 0: shared while a handle's segment exists,
//! exclusive for a replay or a compaction. A compaction thus replays every segment left and
//! deletes it before it deletes a pack, and no handle logs while it runs (they commit the
//! usual way). A handle opening a store replays what is left when it can take the lock
//! exclusively: always after a power loss, which leaves no handle alive.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::format::{is_pack_key, ObjectId, ShardHeader, WriteStamp};
use crate::location::Durability;
use crate::lock::{byte_lock_request, open_lock_file, set_byte_lock, LOCKS_DIR};
use crate::placement;

use super::Store;

/// Length of a segment on each location (a power-loss sweep asks for shorter ones).
fn segment_len() -> u64 {
    crate::disk::log_segment_len(4 << 20)
}

/// Records longer than this commit the usual way (they are packs of a few large objects).
fn max_record_len() -> usize {
    (segment_len() / 4) as usize
}
const RECORD_MAGIC: &[u8; 8] = b"SGLOGREC";
/// Magic, body length u32, body CRC32C u32, CRC32C of the 16 bytes before u32, zero u32.
const RECORD_HEADER_LEN: usize = 24;

/// The lock file, under the store's root.
const LOCK_FILE: &str = "small-log";
/// Byte locked shared while a segment exists, exclusive for a replay or compaction.
const LOG_BYTE: libc::off_t = 0;

/// This handle's log.
#[derive(Debug)]
pub(crate) struct SmallLog {
    lock_path: PathBuf,
    state: Mutex<LogState>,
}

#[derive(Debug, Default)]
struct LogState {
    /// The lock file (this handle's open file description holds its locks).
    file: Option<File>,
    /// The segment being appended to (the shared lock is held while there is one).
    segment: Option<Segment>,
    /// This handle holds the exclusive lock: it logs nothing until it lets it go.
    exclusive: bool,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    /// Where the next record goes, per slot.
    ends: Vec<u64>,
}

/// The exclusive lock, held by a replay or a compaction; released when dropped.
pub(crate) struct Exclusive<'a>(&'a SmallLog);

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.exclusive = false;
        if let Some(file) = &state.file {
            // Cannot fail for a lock this description holds; if it did, the lock goes with the
            // handle.
            let _ = set_byte_lock(file, &byte_lock_request(LOG_BYTE, libc::F_UNLCK), false);
        }
    }
}

impl SmallLog {
    pub fn new(root: &Path) -> Self {
        SmallLog {
            lock_path: root.join(LOCKS_DIR).join(LOCK_FILE),
            state: Mutex::new(LogState::default()),
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

    fn unlock(&self) {
        if let Some(file) = &self.file {
            let _ = set_byte_lock(file, &byte_lock_request(LOG_BYTE, libc::F_UNLCK), false);
        }
    }
}

/// `body` framed as a record.
pub(crate) fn record(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + body.len());
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    let header_crc = crc32c::crc32c(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The bodies of a segment's records, in order: a record whose body fails its CRC is skipped,
/// the first header that fails its own (zeros: the end; a torn append) ends the segment.
pub(crate) fn records(segment: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(header) = segment.get(at..at + RECORD_HEADER_LEN) {
        let word = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        if &header[..8] != RECORD_MAGIC || crc32c::crc32c(&header[..16]) != word(16) || word(20) != 0 {
            break;
        }
        let start = at + RECORD_HEADER_LEN;
        let Some(body) = segment.get(start..start + word(8) as usize) else {
            break;
        };
        if crc32c::crc32c(body) == word(12) {
            out.push(body);
        }
        at = start + body.len();
    }
    out
}

/// One write's records: (slot, the shard file's bytes).
type Records<'a> = Vec<(usize, &'a [u8])>;

/// What a replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// Segments read and deleted.
    pub segments: usize,
    /// Shard files put back from records (missing, or not what the record holds).
    pub restored: usize,
    /// Segments kept for the next replay: some location could not be read, or a segment not
    /// deleted.
    pub left: usize,
}

impl Store {
    /// Commits the shard files of one write of a pack through the log: `shards` are (slot,
    /// the shard file's bytes). `None` when the log cannot take it (not fsync durability, a
    /// location not writable, a replay or compaction under way, records too long): the caller
    /// commits the usual way. Else how many locations hold the write, or the write quorum
    /// error (the files and records written are taken back).
    pub(crate) fn log_shards(
        &self,
        key: &str,
        object: ObjectId,
        stamp: WriteStamp,
        shards: Vec<(usize, Vec<u8>)>,
    ) -> Result<Option<usize>> {
        let n = self.slots.len();
        if self.durability != Durability::Fsync
            || !self.file.logs_small_writes()
            || shards.iter().any(|(_, bytes)| bytes.len() > max_record_len())
            || (0..n).any(|slot| self.writable(slot).is_none())
        {
            return Ok(None);
        }
        // Held throughout: one logged commit at a time per handle (group commit has one anyway).
        let mut state = self.small_log.state();
        if state.exclusive {
            return Ok(None);
        }
        let records: Vec<(usize, Vec<u8>)> = shards
            .iter()
            .map(|(slot, bytes)| (*slot, record(bytes)))
            .collect();
        let Some(segment) = self.segment_for(&mut state, &records)? else {
            return Ok(None);
        };
        let id = segment.id;
        let jobs = shards
            .into_iter()
            .zip(&records)
            .map(|((slot, bytes), (_, record))| (slot, (slot, bytes, segment.ends[slot], record.as_slice())))
            .collect();
        // The shard file first, pending, then its record; once a write quorum of records is
        // durable the files are promoted. A power cut before leaves pending files (never read)
        // and too few records to replay; after, records a replay puts the files back from.
        let mut last_error = None;
        let stage = |(slot, bytes, offset, record): (usize, Vec<u8>, u64, &[u8])| {
            let location = &self.slots[slot].location;
            let mut writer = location.create_shard(object, stamp)?;
            writer.write_all(&bytes)?;
            writer.stage_deferred()?;
            location.append_log(id, offset, record)
        };
        let logged = self.succeeded(self.on_each_location(jobs, stage), &mut last_error);
        let promoted = match logged.len() >= self.write_quorum() {
            true => {
                let promote = |&slot: &usize| self.slots[slot].location.promote_deferred(object, stamp);
                let results = logged.iter().map(|&slot| (slot, promote(&slot))).collect();
                self.succeeded(results, &mut last_error)
            }
            false => Vec::new(),
        };
        if promoted.len() < self.write_quorum() {
            // Taken back: the records first (a replay must not count them), then the files.
            for &slot in &logged {
                let location = &self.slots[slot].location;
                let _ = location.append_log(id, segment.ends[slot], &[0u8; RECORD_HEADER_LEN]);
                let _ = location.remove_shard(object, stamp);
                let _ = location.remove_pending(object, stamp);
            }
            return Err(Error::WriteQuorum {
                key: key.to_owned(),
                written: promoted.len(),
                needed: self.write_quorum(),
                source: last_error.unwrap_or_else(|| io::Error::other("too few usable locations")),
            });
        }
        for (slot, record) in &records {
            if logged.contains(slot) {
                segment.ends[*slot] += record.len() as u64;
            }
        }
        Ok(Some(promoted.len()))
    }

    /// The segment `records` go into: this handle's, if they fit, else a new one (the old
    /// one checkpointed). `None` if another handle holds the log exclusively.
    fn segment_for<'a>(
        &self,
        state: &'a mut LogState,
        records: &[(usize, Vec<u8>)],
    ) -> Result<Option<&'a mut Segment>> {
        let fits = |segment: &Segment| {
            records
                .iter()
                .all(|(slot, record)| segment.ends[*slot] + record.len() as u64 <= segment_len())
        };
        if state.segment.as_ref().is_some_and(|s| !fits(s)) {
            self.checkpoint(state)?;
        }
        if state.segment.is_none() {
            let io = |e| Error::io(&self.small_log.lock_path, e);
            if !state
                .try_lock(&self.small_log.lock_path, libc::F_RDLCK)
                .map_err(io)?
            {
                return Ok(None);
            }
            let id = crate::ids::random_u64();
            let created: Vec<usize> = (0..self.slots.len())
                .take_while(|&slot| self.slots[slot].location.create_log(id, segment_len()).is_ok())
                .collect();
            if created.len() < self.slots.len() {
                for &slot in &created {
                    let _ = self.slots[slot].location.remove_log(id);
                }
                state.unlock();
                return Ok(None);
            }
            state.segment = Some(Segment {
                id,
                ends: vec![0; self.slots.len()],
            });
        }
        Ok(state.segment.as_mut())
    }

    /// Makes everything this handle logged durable in place (a sync of every location), then
    /// deletes its segment and lets the lock go. A segment that cannot be deleted is left for
    /// a replay.
    fn checkpoint(&self, state: &mut LogState) -> Result<()> {
        let Some(segment) = state.segment.take() else {
            return Ok(());
        };
        let mut synced = Ok(());
        for slot in &self.slots {
            if let Err(e) = slot.location.sync() {
                self.note_write_error(&e);
                synced = Err(Error::io(slot.location.path(), e));
            }
        }
        if synced.is_ok() {
            for slot in &self.slots {
                let _ = slot.location.remove_log(segment.id);
            }
        }
        state.unlock();
        synced
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

    /// Puts back what the segments left on the locations hold, then deletes them (the caller
    /// holds the log exclusively). Only with every location usable and every segment read: how
    /// many records a write has on all of them decides what its records may bring back.
    pub(crate) fn replay_small_logs(&self, _exclusive: &Exclusive<'_>) -> Replayed {
        let n = self.slots.len();
        let mut segments: Vec<(usize, u64)> = Vec::new();
        let mut contents: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut unread = 0;
        for slot in 0..n {
            let listed = match self.writable(slot) {
                Some(location) => location.list_logs(),
                None => Err(io::Error::other("location not writable")),
            };
            let Ok(listed) = listed else {
                unread += 1;
                continue;
            };
            for id in listed {
                match self.slots[slot].location.read_log(id) {
                    Ok(bytes) => {
                        segments.push((slot, id));
                        contents.push((slot, bytes));
                    }
                    Err(_) => unread += 1,
                }
            }
        }
        if unread > 0 {
            return Replayed {
                left: unread + segments.len(),
                ..Replayed::default()
            };
        }
        // Each pack write's records: (slot, shard file bytes).
        let mut writes: BTreeMap<(ObjectId, WriteStamp), Records<'_>> = BTreeMap::new();
        for (slot, bytes) in &contents {
            for body in records(bytes) {
                if let Some(write) = self.record_shard(*slot, body) {
                    let held = writes.entry(write).or_default();
                    if !held.iter().any(|(s, _)| s == slot) {
                        held.push((*slot, body));
                    }
                }
            }
        }
        let mut replayed = Replayed::default();
        let mut change = None;
        let mut failed = vec![false; n];
        for ((object, stamp), held) in &writes {
            // A write with a quorum of records may have been acknowledged: each of its files is
            // put back. One with fewer was not (its files were only promoted after a quorum),
            // unless a location's records were lost since: then only its files that exist are
            // mended, and none is made committed that never was.
            let acknowledged = held.len() >= self.write_quorum();
            for &(slot, body) in held {
                let location = &self.slots[slot].location;
                let exists = location.open_shard(*object, *stamp).is_ok();
                if !acknowledged && !exists {
                    continue;
                }
                // Its pending file, if a power cut kept one, is a copy that may be torn.
                let _ = location.remove_pending(*object, *stamp);
                if shard_holds(&**location, *object, *stamp, body) {
                    continue;
                }
                if change.is_none() {
                    change = self.pack_changes.begin(&self.packs).ok();
                }
                let restored = location.create_shard(*object, *stamp).and_then(|mut writer| {
                    writer.write_all(body)?;
                    writer.commit_deferred()
                });
                match restored {
                    Ok(()) => replayed.restored += 1,
                    Err(e) => {
                        self.note_write_error(&e);
                        failed[slot] = true;
                    }
                }
            }
        }
        for (slot, failed) in self.slots.iter().zip(&mut failed) {
            if !*failed {
                if let Err(e) = slot.location.sync() {
                    self.note_write_error(&e);
                    *failed = true;
                }
            }
        }
        for &(slot, id) in &segments {
            match !failed[slot] && self.slots[slot].location.remove_log(id).is_ok() {
                true => replayed.segments += 1,
                false => replayed.left += 1,
            }
        }
        replayed
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
        if let Ok(Some(exclusive)) = self.exclusive_log() {
            self.replay_small_logs(&exclusive);
        }
    }
}

/// Whether the committed shard file of (`object`, `stamp`) holds exactly `body`.
fn shard_holds(
    location: &dyn crate::location::Location,
    object: ObjectId,
    stamp: WriteStamp,
    body: &[u8],
) -> bool {
    let Ok(file) = location.open_shard(object, stamp) else {
        return false;
    };
    if file.len() != body.len() as u64 {
        return false;
    }
    let mut bytes = vec![0u8; body.len()];
    file.read_exact_at(&mut bytes, 0).is_ok() && bytes == body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_back_in_order_and_a_torn_or_rotten_one_is_not() {
        let mut segment = vec![0u8; 4096];
        let (a, b, c) = (record(b"first"), record(b"second body"), record(b"third"));
        let mut at = 0;
        for r in [&a, &b, &c] {
            segment[at..at + r.len()].copy_from_slice(r);
            at += r.len();
        }
        assert_eq!(records(&segment), vec![&b"first"[..], b"second body", b"third"]);
        // Rot in a body: that record is skipped, the ones after it still read.
        let mut rotten = segment.clone();
        rotten[a.len() + RECORD_HEADER_LEN + 2] ^= 1;
        assert_eq!(records(&rotten), vec![&b"first"[..], b"third"]);
        // A torn header ends the segment.
        let mut torn = segment.clone();
        torn[a.len() + 9] ^= 1;
        assert_eq!(records(&torn), vec![&b"first"[..]]);
        assert!(records(&[0u8; 100]).is_empty());
    }
}
