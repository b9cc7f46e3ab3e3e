//! Finding an object's current version: read every location's shard headers, then agree by
//! quorum.
//!
//! Rule (newest write first): a tombstone means the object is deleted; a data write held by at
//! least `k` locations with a verified header is the current version; a data write held by fewer
//! is an unfinished or failed put and is passed over. Stale shards (older writes) are outvoted.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{ObjectId, ShardHeader, WriteStamp, MAX_KEY_LEN, SHARD_HEADER_FIXED_LEN};
use crate::location::ShardFile;
use crate::placement;

use super::{ShardHealth, ShardState, Store};

/// What one location holds of one write of an object.
pub(crate) struct Candidate {
    pub stamp: WriteStamp,
    pub file: Arc<dyn ShardFile>,
    /// The decoded header, or why it could not be used.
    pub header: std::result::Result<ShardHeader, String>,
}

/// Everything the locations hold of an object.
pub(crate) struct Gathered {
    pub object: ObjectId,
    /// Per slot: the writes found there, or why the slot could not be read.
    pub slots: Vec<std::result::Result<Vec<Candidate>, String>>,
    /// A shard file was listed but gone when opened: a concurrent put or delete moved on.
    pub raced: bool,
}

/// The agreed current version of an object, with a handle per shard that holds it.
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
    /// Reads every location's shard headers of `object`. Never fails: an unreadable location or
    /// file is recorded, not raised.
    pub(crate) fn gather(&self, object: ObjectId) -> Gathered {
        let mut raced = false;
        let slots = self
            .slots
            .iter()
            .map(|slot| {
                let location = slot.usable()?;
                let stamps = location.list_shards(object).map_err(|e| e.to_string())?;
                let mut found = Vec::with_capacity(stamps.len());
                for stamp in stamps {
                    let file = match location.open_shard(object, stamp) {
                        Ok(f) => f,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            raced = true;
                            continue;
                        }
                        Err(e) => {
                            // Unreadable: treated like a damaged header (an erasure).
                            found.push(Candidate {
                                stamp,
                                file: Arc::new(Unreadable),
                                header: Err(e.to_string()),
                            });
                            continue;
                        }
                    };
                    let header = self.read_header(&*file, stamp);
                    found.push(Candidate { stamp, file, header });
                }
                Ok(found)
            })
            .collect();
        Gathered { object, slots, raced }
    }

    fn read_header(
        &self,
        file: &dyn ShardFile,
        stamp: WriteStamp,
    ) -> std::result::Result<ShardHeader, String> {
        let len = (file.len() as usize).min(MAX_HEADER_LEN);
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, 0).map_err(|e| e.to_string())?;
        let (header, _) = ShardHeader::decode_prefix(&buf).map_err(|e| e.to_string())?;
        if header.store_id != self.file.store_id {
            return Err("belongs to another store".into());
        }
        if header.stamp != stamp {
            return Err("header names another write than its file name".into());
        }
        if header.geometry != self.file.geometry {
            return Err("header's k, m or chunk size differ from the store's".into());
        }
        Ok(header)
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

    /// Applies the quorum rule to what [`Store::gather`] found.
    pub(crate) fn decide(&self, key: &str, gathered: Gathered) -> Result<Resolved> {
        let n = self.slots.len();
        let k = usize::from(self.file.geometry.k);
        let object = gathered.object;
        // Per write: how many slots hold a verified header of it, in their proper place.
        let mut votes: BTreeMap<WriteStamp, (usize, Option<ShardHeader>)> = BTreeMap::new();
        for (slot, found) in gathered.slots.iter().enumerate() {
            let Ok(found) = found else { continue };
            let expected_shard = placement::shard_of_slot(object, slot, n);
            for c in found {
                let entry = votes.entry(c.stamp).or_insert((0, None));
                if let Ok(h) = &c.header {
                    if h.key == key && usize::from(h.shard_index) == expected_shard {
                        entry.0 += 1;
                        entry.1.get_or_insert_with(|| h.clone());
                    }
                }
            }
        }
        let mut newest_partial = None;
        let mut current = None;
        for (stamp, (held, header)) in votes.iter().rev() {
            let Some(header) = header else { continue };
            if header.tombstone {
                break;
            }
            if *held >= k {
                current = Some((*stamp, header.clone()));
                break;
            }
            newest_partial.get_or_insert((stamp.version, *held));
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
                Err(reason) => ShardState::Unavailable { reason },
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
                                Err(reason) => ShardState::HeaderDamaged {
                                    reason: reason.clone(),
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

    /// Gathers and decides, retrying when a concurrent writer moved files between the listing and
    /// the opening (the write finished; looking again sees its result).
    pub(crate) fn resolve(&self, key: &str) -> Result<Resolved> {
        let object = ObjectId::of_key(key);
        let mut tries = 0;
        loop {
            tries += 1;
            let gathered = self.gather(object);
            let raced = gathered.raced;
            match self.decide(key, gathered) {
                Err(Error::NoQuorum { .. } | Error::NotFound { .. }) if raced && tries < 5 => continue,
                other => return other,
            }
        }
    }
}

/// Stands in for a shard file that could not be opened: every read fails.
struct Unreadable;

impl ShardFile for Unreadable {
    fn len(&self) -> u64 {
        0
    }
    fn read_exact_at(&self, _buf: &mut [u8], _offset: u64) -> io::Result<()> {
        Err(io::Error::other("shard file could not be opened"))
    }
}
