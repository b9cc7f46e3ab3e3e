//! The files of the packs a handle read from lately, kept open: a packed get reads its entry's
//! bytes from one of them, instead of listing and opening the pack's `k + m` files on every
//! location again (most of a warm get's time). A pack's files never change once written (its
//! id comes from its entries; a repair writes the same bytes back), so a kept file gives the
//! entry's bytes or fails their CRC check, and then the get reads through freshly opened files
//! (`Store::get_range`). Kept in the pack index: dropped with it when it starts afresh (a pack
//! it knew is gone: another handle folded or compacted) and pack by pack when this handle
//! forgets one, so a deleted pack's files are not held open (their space not held) for long.

use std::collections::{HashMap, VecDeque};

use crate::format::ObjectId;

use super::resolve::Resolved;

/// How many packs' files are kept open: `k + m` descriptors each.
const KEPT: usize = 64;

/// The kept packs' files, the oldest kept dropped first.
#[derive(Default)]
pub(crate) struct OpenedPacks {
    files: HashMap<ObjectId, Resolved>,
    order: VecDeque<ObjectId>,
}

impl std::fmt::Debug for OpenedPacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedPacks")
            .field("kept", &self.files.len())
            .finish()
    }
}

impl OpenedPacks {
    /// `pack`'s kept files, if they are.
    pub fn get(&self, pack: ObjectId) -> Option<Resolved> {
        self.files.get(&pack).cloned()
    }

    /// Keeps `pack`'s `files` (the oldest kept pack's dropped if there are too many).
    pub fn keep(&mut self, pack: ObjectId, files: Resolved) {
        if self.files.insert(pack, files).is_some() {
            return;
        }
        self.order.push_back(pack);
        while self.order.len() > KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.files.remove(&oldest);
            }
        }
    }

    /// Drops `packs`' files.
    pub fn drop_packs(&mut self, packs: &[ObjectId]) {
        for pack in packs {
            if self.files.remove(pack).is_some() {
                self.order.retain(|kept| kept != pack);
            }
        }
    }
}
