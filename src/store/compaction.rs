//! Compaction: packs are never changed, so overwrites and deletes of packed objects leave dead
//! bytes in them, and small packs (a few grouped puts each) cost `k + m` files for a few objects.
//! A repairing scrub rewrites such packs: the current entries of several are copied, with their
//! own write stamps and verified bytes, into new full packs; then the old packs are deleted as
//! any object is (tombstones first), so a power cut at any point leaves each entry in an old
//! pack, a new one, or both, and the newest write of every key unchanged (FORMAT.md,
//! "Compaction").
//!
//! A delete entry is dropped only when nothing older of its key is left anywhere (no other
//! entry in any pack, no shard files of its own): until then it is carried into the new pack,
//! since it outvotes them. A pack holding a key's older entry is always gone before the compaction
//! that drops its delete starts, so no order of deleting packs can bring a deleted object back.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::format::{ObjectId, PackEntry, PackTable, WriteStamp};

use super::packs::PackCommit;
use super::Store;

/// What the compaction of a repairing scrub did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CompactionSummary {
    /// Packs whose current entries were copied into new packs, and which were then deleted.
    pub packs_compacted: u64,
    /// New packs written.
    pub packs_written: u64,
    /// Bytes of overwritten or deleted objects reclaimed.
    pub dead_bytes_reclaimed: u64,
    /// Delete entries dropped (nothing older of their key was left for them to outvote).
    pub deletes_dropped: u64,
    /// Why packs that needed it were not compacted, if they were not (nothing is lost: the
    /// next repairing scrub tries again).
    pub not_done: Option<String>,
}

/// A pack is compacted when less than this share of its room holds current objects.
const FULL_ENOUGH: f64 = 0.5;

/// At most this many bytes of current objects are held in memory at once: packs are compacted
/// in groups of about this much.
const GROUP_BYTES: u64 = 64 << 20;

/// Each packed key's newest entry, and how many entries of it all the packs hold.
struct Census {
    newest: HashMap<String, (ObjectId, WriteStamp)>,
    entries: HashMap<String, usize>,
}

impl Census {
    fn is_current(&self, pack: ObjectId, entry: &PackEntry) -> bool {
        self.newest.get(&entry.key) == Some(&(pack, entry.stamp))
    }
}

impl Store {
    /// Compacts the packs that need it (see the module's doc). Runs only when every location is
    /// usable and every pack is certain: a pack in doubt may hold writes a compaction must
    /// not outvote or drop.
    pub(crate) fn compact_packs(&self) -> CompactionSummary {
        let mut summary = CompactionSummary::default();
        if !self.packs_enabled() {
            return summary;
        }
        if let Err(why) = self.try_compact(&mut summary) {
            summary.not_done = Some(why);
        }
        summary
    }

    fn try_compact(&self, summary: &mut CompactionSummary) -> Result<(), String> {
        // No pack may be deleted while a log record could bring it back: every segment left
        // is folded and deleted first, and no handle logs until the compaction is done.
        let _log = match self.file.logs_small_writes() {
            true => {
                let exclusive = self.exclusive_log().map_err(said)?.ok_or_else(|| {
                    "small objects are being written through a log (another handle's, until it \
                     closes, or a segment of this handle's being folded): compaction waits"
                        .to_owned()
                })?;
                let left = self.replay_small_logs(&exclusive, true);
                if left > 0 {
                    return Err(format!(
                        "{left} small-write log segments could not be replayed yet"
                    ));
                }
                Some(exclusive)
            }
            false => None,
        };
        let (tables, census) = {
            let index = self.pack_index().map_err(said)?;
            if !index.settled() {
                return Err("some pack's state is in doubt or lost".into());
            }
            let census = Census {
                newest: index
                    .newest
                    .iter()
                    .map(|(key, n)| (key.clone(), (n.pack, n.stamp)))
                    .collect(),
                entries: index.loaded.values().flat_map(|t| &t.entries).fold(
                    HashMap::new(),
                    |mut counts, e| {
                        *counts.entry(e.key.clone()).or_default() += 1;
                        counts
                    },
                ),
            };
            (index.loaded.clone(), census)
        };
        let g = self.file.geometry;
        let room = u64::from(g.k) * u64::from(g.chunk_size);
        let live_bytes = |pack: ObjectId, table: &PackTable| -> u64 {
            table
                .entries
                .iter()
                .filter(|e| census.is_current(pack, e))
                .map(|e| e.len)
                .sum()
        };
        let candidates: BTreeMap<ObjectId, &PackTable> = tables
            .iter()
            .filter(|(pack, table)| (live_bytes(**pack, table) as f64) < FULL_ENOUGH * room as f64)
            .map(|(pack, table)| (*pack, table))
            .collect();
        // Something to drop: an entry outvoted, or a delete that may be the last of its key (a
        // delete that must be carried would only be copied again, every scrub).
        let stale = |(pack, table): (&ObjectId, &&PackTable)| {
            table.entries.iter().any(|e| {
                !census.is_current(*pack, e) || (e.tombstone && census.entries.get(&e.key) == Some(&1))
            })
        };
        // One pack alone is rewritten only to drop something: else it would be copied as is.
        if candidates.len() < 2 && !candidates.iter().any(stale) {
            return Ok(());
        }
        if let Some(slot) = self.slots.iter().find(|s| s.usable().is_err()) {
            return Err(format!(
                "location {} is unusable, and packs are compacted only with every location usable",
                slot.dir.display()
            ));
        }
        let mut group: Vec<(ObjectId, &PackTable)> = Vec::new();
        let mut group_bytes = 0;
        for (pack, table) in candidates {
            group_bytes += live_bytes(pack, table);
            group.push((pack, table));
            if group_bytes >= GROUP_BYTES {
                self.compact_group(&group, &census, summary)?;
                (group, group_bytes) = (Vec::new(), 0);
            }
        }
        if !group.is_empty() {
            self.compact_group(&group, &census, summary)?;
        }
        Ok(())
    }

    /// Copies the current entries of `packs` into new packs, then deletes `packs`.
    fn compact_group(
        &self,
        packs: &[(ObjectId, &PackTable)],
        census: &Census,
        summary: &mut CompactionSummary,
    ) -> Result<(), String> {
        let mut kept: Vec<(PackEntry, Vec<u8>, ())> = Vec::new();
        for &(pack, table) in packs {
            let mut keep = Vec::new();
            for entry in &table.entries {
                if !census.is_current(pack, entry) {
                    summary.dead_bytes_reclaimed += entry.len;
                    continue;
                }
                if entry.tombstone
                    && census.entries.get(&entry.key) == Some(&1)
                    && self.nothing_older(&entry.key)
                {
                    summary.deletes_dropped += 1;
                    continue;
                }
                keep.push(entry);
            }
            // A pack with nothing current is not read: it may be one that could not be read
            // back (a fold's or compaction's that failed its check), and goes with the others.
            if keep.is_empty() {
                continue;
            }
            let body = self.pack_body(pack)?;
            for entry in keep {
                let bytes = verified_bytes(&body, entry, pack)?;
                kept.push((entry.clone(), bytes.to_vec(), ()));
            }
        }
        let mut old: Vec<ObjectId> = packs.iter().map(|(pack, _)| *pack).collect();
        while !kept.is_empty() {
            let (taken, laid) = self.lay_out_most(&kept);
            let laid = laid.ok_or("an entry does not fit in a pack")?;
            // A pack's id comes from its entries: a new pack holding exactly an old one's
            // entries would be that pack (and deleted with the old ones). It is kept instead.
            let id = ObjectId::of_pack(&laid.1.entries);
            match old.iter().position(|&o| o == id) {
                Some(same) => drop(old.swap_remove(same)),
                None => {
                    self.commit_verified(laid)?;
                    summary.packs_written += 1;
                }
            }
            kept.drain(..taken);
        }
        // Every current entry is now in a new pack too: the old ones outvote nothing. Reads
        // are sent to the new packs before the old ones go.
        self.pack_changes.forget_packs(&self.packs, &old);
        let _change = self.pack_changes.begin(&self.packs).map_err(said)?;
        for pack in old {
            let deleted = self
                .locks
                .lock(pack)
                .and_then(|_lock| self.delete_own(&pack.pack_key(), pack));
            if let Err(e) = deleted {
                // Half deleted, it is a doubtful pack the next look must find.
                self.pack_changes.unsettle(&self.packs);
                return Err(said(e));
            }
            summary.packs_compacted += 1;
        }
        // A listing of this handle's that overlapped the deletions may have found the old packs
        // still there: it is not current (see `pack_changes`).
        self.pack_changes.unsettle(&self.packs);
        Ok(())
    }

    /// Copies every entry of the logged pack `writes` (their bytes verified; taken from
    /// `copies`, their bodies and tables in the same order, if the handle kept them) into
    /// packs of their own files, made durable and read back; then removes any shard file of the logged writes a
    /// repair wrote beside their records, and forgets them. The caller deletes the segments
    /// after: until then each entry is in both (the same write twice, which outvotes nothing).
    /// Returns the logged packs it forgot.
    pub(crate) fn fold_logged(
        &self,
        writes: &[(ObjectId, WriteStamp)],
        copies: Option<&[(Vec<u8>, PackTable)]>,
    ) -> crate::Result<Vec<ObjectId>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let unreadable = |pack: ObjectId, why: String| crate::Error::Io {
            path: self.root.clone(),
            source: std::io::Error::other(format!("logged pack {}: {why}", pack.to_hex())),
        };
        // What the handle committed, still in memory; else each pack read back from the log.
        let read: Vec<(ObjectId, Vec<u8>, PackTable)>;
        let packs: Vec<(ObjectId, &[u8], &PackTable)> = match copies {
            Some(copies) => writes
                .iter()
                .zip(copies)
                .map(|((pack, _), (body, table))| (*pack, body.as_slice(), table))
                .collect(),
            None => {
                let index = self.pack_index()?;
                let tables: Vec<(ObjectId, PackTable)> = writes
                    .iter()
                    .map(|&(pack, _)| match index.loaded.get(&pack) {
                        Some(table) => Ok((pack, table.clone())),
                        None => Err(unreadable(pack, "its table is not readable".into())),
                    })
                    .collect::<crate::Result<_>>()?;
                drop(index);
                read = tables
                    .into_iter()
                    .map(|(pack, table)| {
                        let body = self.pack_body(pack).map_err(|why| unreadable(pack, why))?;
                        Ok((pack, body, table))
                    })
                    .collect::<crate::Result<_>>()?;
                read.iter()
                    .map(|(pack, body, table)| (*pack, body.as_slice(), table))
                    .collect()
            }
        };
        let mut kept: Vec<(PackEntry, Vec<u8>, ())> = Vec::new();
        for (pack, body, table) in packs {
            for entry in &table.entries {
                let bytes = verified_bytes(body, entry, pack).map_err(|why| unreadable(pack, why))?;
                kept.push((entry.clone(), bytes.to_vec(), ()));
            }
        }
        let mut written = Vec::new();
        while !kept.is_empty() {
            let (taken, laid) = self.lay_out_most(&kept);
            let Some(laid) = laid else {
                return Err(unreadable(writes[0].0, "an entry does not fit in a pack".into()));
            };
            // Even with the id of a logged pack: then it is that pack's next write.
            let id = self
                .commit_verified(laid)
                .map_err(|why| unreadable(writes[0].0, why))?;
            written.push(id);
            kept.drain(..taken);
        }
        for &(pack, stamp) in writes {
            for slot in &self.slots {
                let _ = slot.location.remove_shard(pack, stamp);
            }
        }
        let packs: Vec<ObjectId> = writes
            .iter()
            .map(|(pack, _)| *pack)
            .filter(|pack| !written.contains(pack))
            .collect();
        self.pack_changes.forget_packs(&self.packs, &packs);
        Ok(packs)
    }

    /// Commits a new pack of copied entries, then reads it back, every entry verifying: the
    /// copies it was made from (old packs, log records) are deleted after, and with them the
    /// other copy of every entry. Returns its id.
    fn commit_verified(&self, laid: (Vec<u8>, PackTable)) -> Result<ObjectId, String> {
        let id = ObjectId::of_pack(&laid.1.entries);
        let table = laid.1.clone();
        let new = !self
            .packs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .loaded
            .contains_key(&id);
        self.commit_pack(laid, PackCommit::Direct).map_err(said)?;
        let verified = self.pack_body(id).and_then(|body| {
            table
                .entries
                .iter()
                .try_for_each(|entry| verified_bytes(&body, entry, id).map(drop))
        });
        if let Err(why) = verified {
            // The copies it was made from stay. Left, the pack would be an undecodable
            // duplicate of them that every scrub reports lost and that holds off every later
            // compaction; so it goes (a pack of the same entries known before is left alone).
            if new {
                if let Err(e) = self.remove_unverified(id) {
                    return Err(format!("{why}; removing it failed too: {e}"));
                }
            }
            return Err(why);
        }
        Ok(id)
    }

    /// Deletes a pack this handle has just written whose read-back failed.
    fn remove_unverified(&self, pack: ObjectId) -> crate::Result<()> {
        self.pack_changes.forget_packs(&self.packs, &[pack]);
        let _change = self.pack_changes.begin(&self.packs)?;
        let deleted = self
            .locks
            .lock(pack)
            .and_then(|_lock| self.delete_own(&pack.pack_key(), pack));
        if deleted.is_err() {
            // Half deleted, it is a doubtful pack the next look must find.
            self.pack_changes.unsettle(&self.packs);
        }
        deleted
    }

    /// A pack's bytes, read whole (its data chunks verified, rebuilt from parity if need be).
    fn pack_body(&self, pack: ObjectId) -> Result<Vec<u8>, String> {
        let resolved = self.resolve(&pack.pack_key()).map_err(said)?;
        let chunks = self
            .pack_data(pack, &resolved)
            .ok_or_else(|| format!("pack {} could not be read whole", pack.to_hex()))?;
        Ok(chunks.concat())
    }

    /// Whether no location holds shard files of `key`'s own (every location listed).
    fn nothing_older(&self, key: &str) -> bool {
        self.stamps(ObjectId::of_key(key))
            .into_iter()
            .all(|stamps| stamps.is_some_and(|s| s.is_empty()))
    }
}

/// An entry's bytes in its pack's `body`, if they verify against its CRC32C.
fn verified_bytes<'b>(body: &'b [u8], entry: &PackEntry, pack: ObjectId) -> Result<&'b [u8], String> {
    usize::try_from(entry.offset)
        .ok()
        .zip(usize::try_from(entry.len).ok())
        .and_then(|(at, len)| body.get(at..at.checked_add(len)?))
        .filter(|bytes| crc32c::crc32c(bytes) == entry.crc)
        .ok_or_else(|| {
            format!(
                "the bytes of {:?} in pack {} do not verify",
                entry.key,
                pack.to_hex()
            )
        })
}

fn said(e: crate::Error) -> String {
    e.to_string()
}
