//! What a scrub keeps between runs, in the store root: the checkpoint of a running scrub, when
//! each object was last scrubbed, and the last report (for `status`).

use std::fs;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::format::{ObjectId, ScrubCheckpoint, ScrubHistory};
use crate::location::write_atomically;
use crate::store::Store;

use super::ScrubReport;

const CHECKPOINT_FILE: &str = "scrub.checkpoint";
const HISTORY_FILE: &str = "scrub.history";
/// The last scrub's report (JSON), in the store root.
pub const LAST_REPORT_FILE: &str = "scrub.last.json";

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    /// The checkpoint of an interrupted scrub, if a valid one exists (a damaged one is ignored:
    /// the scrub then starts over, which costs time, never correctness).
    pub(super) fn load_checkpoint(&self) -> Option<ScrubCheckpoint> {
        let bytes = fs::read(self.root.join(CHECKPOINT_FILE)).ok()?;
        ScrubCheckpoint::decode(&bytes).ok()
    }

    pub(super) fn save_checkpoint(&self, checkpoint: &ScrubCheckpoint) -> Result<()> {
        write_atomically(&self.root, CHECKPOINT_FILE, &checkpoint.encode(), self.durability)
            .map_err(|e| Error::io(self.root.join(CHECKPOINT_FILE), e))
    }

    pub(super) fn remove_checkpoint(&self) {
        let _ = fs::remove_file(self.root.join(CHECKPOINT_FILE));
    }

    /// The objects ordered least recently scrubbed first (never-scrubbed first of all), cut to
    /// `percent` of them (at least one), returned in id order.
    pub(super) fn least_recently_scrubbed(&self, objects: Vec<ObjectId>, percent: u8) -> Vec<ObjectId> {
        let history = self.load_history();
        let last = |o: &ObjectId| {
            history
                .entries
                .binary_search_by_key(o, |(id, _)| *id)
                .map_or(0, |i| history.entries[i].1)
        };
        let mut by_age: Vec<(u64, ObjectId)> = objects.iter().map(|o| (last(o), *o)).collect();
        by_age.sort();
        let keep = (objects.len() * usize::from(percent)).div_ceil(100);
        let mut chosen: Vec<ObjectId> = by_age.into_iter().take(keep).map(|(_, o)| o).collect();
        chosen.sort();
        chosen
    }

    fn load_history(&self) -> ScrubHistory {
        fs::read(self.root.join(HISTORY_FILE))
            .ok()
            .and_then(|b| ScrubHistory::decode(&b).ok())
            .unwrap_or_default()
    }

    /// Records that `objects` were scrubbed at `when`.
    pub(super) fn record_scrubbed(&self, objects: &[ObjectId], when: u64) -> Result<()> {
        if objects.is_empty() {
            return Ok(());
        }
        let mut map: std::collections::BTreeMap<ObjectId, u64> =
            self.load_history().entries.into_iter().collect();
        map.extend(objects.iter().map(|o| (*o, when)));
        let history = ScrubHistory {
            entries: map.into_iter().collect(),
        };
        write_atomically(&self.root, HISTORY_FILE, &history.encode(), self.durability)
            .map_err(|e| Error::io(self.root.join(HISTORY_FILE), e))
    }

    pub(super) fn save_last_report(&self, report: &ScrubReport) -> Result<()> {
        let json = serde_json::to_vec_pretty(report)
            .map_err(|e| Error::io(LAST_REPORT_FILE, io::Error::other(e)))?;
        write_atomically(&self.root, LAST_REPORT_FILE, &json, self.durability)
            .map_err(|e| Error::io(self.root.join(LAST_REPORT_FILE), e))
    }

    /// The report of the last finished scrub, if any.
    pub fn last_scrub(&self) -> Option<ScrubReport> {
        let bytes = fs::read(self.root.join(LAST_REPORT_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}
