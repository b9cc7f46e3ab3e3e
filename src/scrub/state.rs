//! What a scrub keeps between runs, in the store root: the checkpoint of a running scrub, when
//! each object was last scrubbed, and the last report (for `status`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::format::{bucket_from_hex, ObjectId, ScrubCheckpoint, ScrubHistory};
use crate::location::{write_atomically, Durability};
use crate::own_files;
use crate::store::Store;

use super::ScrubReport;

const CHECKPOINT_FILE: &str = "scrub.checkpoint";
/// One history file per bucket (first byte of the object id), so no scrub holds them all.
pub(crate) const HISTORY_DIR: &str = "scrub-history";
/// The last scrub's report (JSON), in the store root.
pub const LAST_REPORT_FILE: &str = "scrub.last.json";

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Bound on a bucket's history file (about 700,000 objects a bucket, 179 million in all):
/// a larger one is treated as damaged.
const MAX_HISTORY_LEN: usize = 16 << 20;
/// Bound on the last report read back for `status`.
const MAX_REPORT_LEN: usize = 16 << 20;

/// Writes a file the scrub can do without over its old content, with no rename: renaming over
/// an existing file makes ext4 (`auto_da_alloc`) start writing it out at once, and one rename
/// per history bucket cost a scrub of 64 small objects 40% of its time. A torn write fails the
/// file's CRC, and a file that fails it reads as absent, which only costs time. Never through
/// a link (see `own_files`).
fn overwrite_in_place(path: &Path, bytes: &[u8]) -> io::Result<()> {
    own_files::overwrite(path, bytes)
}

impl Store {
    /// The store's own advisory files and directories (lock files, checkpoint, last report,
    /// history) that are not what they should be (a directory, link or FIFO in place of a file;
    /// a file or link in place of a directory): with `repair` each is moved aside (renamed to
    /// `NAME.not-ours.HEX`, never deleted), so the scrub and later writers can make a real one.
    /// What was found, and whether it was moved.
    pub(super) fn check_state_files(&self, repair: bool) -> Vec<(String, bool)> {
        let locks = self.root.join(crate::lock::LOCKS_DIR);
        let history = self.history_dir();
        let mut files = vec![
            locks.join(crate::lock::LOCK_FILE),
            locks.join(crate::store::SMALL_LOG_LOCK_FILE),
            locks.join(crate::store::PACK_CHANGES_FILE),
            self.root.join(CHECKPOINT_FILE),
            self.root.join(LAST_REPORT_FILE),
        ];
        if let Ok(entries) = fs::read_dir(&history) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(bucket_from_hex)
                    .is_some()
            }));
        }
        // (path, whether it should be a directory)
        let checks = files
            .iter()
            .map(|f| (f, false))
            .chain([(&locks, true), (&history, true)]);
        let mut found = Vec::new();
        for (path, directory) in checks {
            let Ok(meta) = fs::symlink_metadata(path) else {
                continue;
            };
            if (directory && meta.is_dir()) || (!directory && meta.is_file()) {
                continue;
            }
            let moved = repair && own_files::move_aside(path).is_ok();
            let what = if directory {
                "not a directory"
            } else {
                "not a regular file"
            };
            found.push((format!("{}: {what}", path.display()), moved));
        }
        found
    }

    /// The checkpoint of an interrupted scrub, if a valid one exists (a damaged one is ignored:
    /// the scrub then starts over, which costs time, never correctness).
    pub(super) fn load_checkpoint(&self) -> Option<ScrubCheckpoint> {
        let bytes =
            own_files::read_bounded(&self.root.join(CHECKPOINT_FILE), ScrubCheckpoint::MAX_LEN).ok()?;
        ScrubCheckpoint::decode(&bytes).ok()
    }

    /// Not fsynced: the repairs it vouches for were synced first, and a checkpoint lost to a
    /// power cut only makes the next `--resume` start over.
    pub(super) fn save_checkpoint(&self, checkpoint: &ScrubCheckpoint) -> Result<()> {
        let path = self.root.join(CHECKPOINT_FILE);
        overwrite_in_place(&path, &checkpoint.encode()).map_err(|e| Error::io(path, e))
    }

    pub(super) fn remove_checkpoint(&self) {
        let _ = crate::disk::remove_file(&self.root.join(CHECKPOINT_FILE));
    }

    /// When each object of `bucket` was last scrubbed. A missing or damaged history file
    /// means "never": those objects are scrubbed first, which costs time, never correctness.
    pub(super) fn load_history(&self, bucket: u8) -> ScrubHistory {
        own_files::read_bounded(&self.history_dir().join(format!("{bucket:02x}")), MAX_HISTORY_LEN)
            .ok()
            .and_then(|b| ScrubHistory::decode(&b).ok())
            .unwrap_or_default()
    }

    /// How long the store has gone unscrubbed: of `objects`, how many no scrub has verified,
    /// and when the least recently scrubbed of the others was (seconds since the Unix epoch).
    pub(crate) fn scrub_coverage(&self, objects: &[ObjectId]) -> (u64, Option<u64>) {
        let mut by_bucket: BTreeMap<u8, Vec<ObjectId>> = BTreeMap::new();
        for object in objects {
            by_bucket.entry(object.0[0]).or_default().push(*object);
        }
        let mut never = 0;
        let mut oldest: Option<u64> = None;
        for (bucket, objects) in by_bucket {
            let history = self.load_history(bucket);
            for object in objects {
                match history.last_scrubbed(object) {
                    0 => never += 1,
                    when => oldest = Some(oldest.map_or(when, |o| o.min(when))),
                }
            }
        }
        (never, oldest)
    }

    /// The buckets that have a history file, so a walk reads only those.
    pub(super) fn history_buckets(&self) -> BTreeSet<u8> {
        let Ok(entries) = fs::read_dir(self.history_dir()) else {
            return BTreeSet::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(bucket_from_hex))
            .collect()
    }

    /// Records that `objects` (in id order) were scrubbed at `when`, one history file per
    /// bucket.
    pub(super) fn record_scrubbed(&self, objects: &[ObjectId], when: u64) -> Result<()> {
        if objects.is_empty() {
            return Ok(());
        }
        let dir = self.history_dir();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        for same_bucket in objects.chunk_by(|a, b| a.0[0] == b.0[0]) {
            let bucket = same_bucket[0].0[0];
            let mut map: BTreeMap<ObjectId, u64> = self.load_history(bucket).entries.into_iter().collect();
            map.extend(same_bucket.iter().map(|o| (*o, when)));
            self.save_history(bucket, map)?;
        }
        Ok(())
    }

    /// Drops history entries of objects that no longer exist.
    pub(super) fn forget_deleted(
        &self,
        bucket: u8,
        history: ScrubHistory,
        existing: &BTreeSet<ObjectId>,
    ) -> Result<()> {
        if history.entries.iter().all(|(o, _)| existing.contains(o)) {
            return Ok(());
        }
        let map = history
            .entries
            .into_iter()
            .filter(|(o, _)| existing.contains(o))
            .collect();
        self.save_history(bucket, map)
    }

    fn save_history(&self, bucket: u8, entries: BTreeMap<ObjectId, u64>) -> Result<()> {
        let dir = self.history_dir();
        let name = format!("{bucket:02x}");
        if entries.is_empty() {
            return match crate::disk::remove_file(&dir.join(&name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(dir.join(&name), e)),
                _ => Ok(()),
            };
        }
        let history = ScrubHistory {
            entries: entries.into_iter().collect(),
        };
        // Advisory (it only orders --percent), so neither fsynced nor renamed into place.
        let path = dir.join(&name);
        overwrite_in_place(&path, &history.encode()).map_err(|e| Error::io(path, e))
    }

    fn history_dir(&self) -> std::path::PathBuf {
        self.root.join(HISTORY_DIR)
    }

    /// Informational (for `status`), so not fsynced.
    pub(super) fn save_last_report(&self, report: &ScrubReport) -> Result<()> {
        let json = serde_json::to_vec_pretty(report)
            .map_err(|e| Error::io(LAST_REPORT_FILE, io::Error::other(e)))?;
        write_atomically(&self.root, LAST_REPORT_FILE, &json, Durability::PageCache)
            .map_err(|e| Error::io(self.root.join(LAST_REPORT_FILE), e))
    }

    /// The report of the last finished scrub, if any.
    pub fn last_scrub(&self) -> Option<ScrubReport> {
        let bytes = own_files::read_bounded(&self.root.join(LAST_REPORT_FILE), MAX_REPORT_LEN).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}
