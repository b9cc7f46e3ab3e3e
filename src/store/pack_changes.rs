//! Whether another store handle (another process, as a rule) may have changed the set of packs
//! since this handle last listed them: if not, the pack index is current without listing bucket
//! `ff` on every location, which would otherwise cost every small-object operation a directory
//! listing per location.
//!
//! `locks/packs.changes` holds a mark (the id of the handle that last changed the packs and a
//! count) at bytes 8..24; byte 0 carries a shared lock (an OFD lock, as the object locks) while
//! any handle is writing or deleting a pack, and byte 1 an exclusive one while a handle moves the
//! mark. A handle moves the mark before it writes a pack's first file. A reader that reads the
//! mark, finds no other handle's change under way, lists, and then finds the same mark and still
//! none under way knows every pack acknowledged before its next look at an unchanged mark: a
//! change that started after its first read moved the mark; one that started before ended
//! before its listing (it was not under way at the first check) or is still under way.
//!
//! A handle's own changes keep its index current (it adds what it writes), so moving the mark
//! itself does not make it list again, unless the mark had moved before (another handle's
//! change it has not listed). Nor does a listing that this handle's own changes overlapped: the
//! handle remembers the counts it moved the mark to, and a listing that began at one mark and
//! ended at another, every move between them its own, is current at the second (without this,
//! eight threads putting small objects through one handle listed every location's packs once
//! per two groups, each listing overlapping the next group's change). Two exceptions: a listing
//! that started the index afresh (a pack it knew was gone) dropped what the handle added
//! meanwhile, and one that overlapped the handle forgetting packs (a fold, a compaction) may
//! have found them before they were deleted: neither is current, and the next look lists.
//! A crash leaves the mark moved and the lock released: the next look lists. The file is
//! advisory: if it cannot be read, every look lists.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use nix::fcntl::{fcntl, FcntlArg};

use crate::error::{Error, Result};
use crate::format::ObjectId;
use crate::lock::{byte_lock_request, open_lock_file, set_byte_lock, LOCKS_DIR};

use super::packs::PackIndex;

/// The file, under the store's root.
pub(crate) const CHANGES_FILE: &str = "packs.changes";
/// Byte locked (shared) while a change is under way.
const UNDER_WAY: libc::off_t = 0;
/// Byte locked (exclusive) while the mark moves.
const MOVING: libc::off_t = 1;
/// Where the mark is.
const MARK_AT: u64 = 8;

/// Which change of the set of packs was the last: the handle that made it and a count.
pub(crate) type Mark = [u8; 16];

/// This handle's view of the changes file.
#[derive(Debug)]
pub(crate) struct PackChanges {
    path: PathBuf,
    file: OnceLock<File>,
    /// Tells this handle's marks from others'.
    handle: u64,
    /// Changes under way through this handle (the shared lock is held while there are any).
    under_way: Mutex<usize>,
    /// The counts this handle last moved the mark to, oldest first.
    own_moves: Mutex<std::collections::VecDeque<u64>>,
}

/// How many of its own moves a handle remembers: more than overlap one listing.
const OWN_MOVES: usize = 1024;

/// A change of the set of packs under way; ends when dropped.
pub(crate) struct ChangeGuard<'a>(&'a PackChanges);

impl Drop for ChangeGuard<'_> {
    fn drop(&mut self) {
        let mut under_way = self.0.under_way();
        *under_way -= 1;
        if *under_way == 0 {
            if let Some(file) = self.0.file.get() {
                // Cannot fail for a range this descriptor holds; if it did, other handles would
                // list on every look until this one is dropped: slower, never wrong.
                let _ = set_lock(file, UNDER_WAY, libc::F_UNLCK);
            }
        }
    }
}

impl PackChanges {
    pub fn new(root: &Path) -> Self {
        PackChanges {
            path: root.join(LOCKS_DIR).join(CHANGES_FILE),
            file: OnceLock::new(),
            handle: crate::ids::random_u64(),
            under_way: Mutex::new(0),
            own_moves: Mutex::new(std::collections::VecDeque::with_capacity(OWN_MOVES)),
        }
    }

    fn under_way(&self) -> MutexGuard<'_, usize> {
        self.under_way.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn file(&self) -> std::io::Result<&File> {
        if let Some(file) = self.file.get() {
            return Ok(file);
        }
        let opened = open_lock_file(&self.path)?;
        Ok(self.file.get_or_init(|| opened))
    }

    /// Starts a change of the set of packs (a pack about to be written, or deleted): moves the
    /// mark, and keeps `index` current unless another handle had moved it since `index` last
    /// listed. Must be held until the change is done.
    pub fn begin<'a>(&'a self, index: &Mutex<PackIndex>) -> Result<ChangeGuard<'a>> {
        let io = |e| Error::io(&self.path, e);
        let file = self.file().map_err(io)?;
        let mut under_way = self.under_way();
        if *under_way == 0 {
            set_lock(file, UNDER_WAY, libc::F_RDLCK).map_err(io)?;
        }
        *under_way += 1;
        let guard = ChangeGuard(self);
        // Held across the move: threads of this handle share its file's locks.
        let _moving_here = under_way;
        set_lock(file, MOVING, libc::F_WRLCK).map_err(io)?;
        // Held from before the mark moves until the index's moves with it (taken after the
        // lock above, which may wait for another process): a look at the index never finds
        // the mark moved by this handle and the index's not yet, which it would list for.
        let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
        let moved = (|| {
            let before = read_mark(file)?;
            let count = count_of(&before);
            let mut after = [0u8; 16];
            after[..8].copy_from_slice(&self.handle.to_le_bytes());
            after[8..].copy_from_slice(&count.wrapping_add(1).to_le_bytes());
            file.write_all_at(&after, MARK_AT)?;
            Ok((before, after))
        })();
        if let Ok((_, after)) = &moved {
            let mut own = self.own_moves.lock().unwrap_or_else(|e| e.into_inner());
            if own.len() == OWN_MOVES {
                own.pop_front();
            }
            own.push_back(count_of(after));
        }
        if let Ok((before, after)) = moved {
            index.seen = (index.seen == Some(before)).then_some(after);
        }
        drop(index);
        let _ = set_lock(file, MOVING, libc::F_UNLCK);
        moved.map_err(io)?;
        Ok(guard)
    }

    /// Makes `index` list at its next look: a change of this handle's may have left packs it
    /// did not add (half written, half deleted), so no listing it overlapped is current either.
    pub fn unsettle(&self, index: &Mutex<PackIndex>) {
        self.forget_own_moves();
        index.lock().unwrap_or_else(|e| e.into_inner()).seen = None;
    }

    /// Takes `packs` out of `index` (they are about to go, or went), and counts no listing
    /// that overlapped this handle's changes so far as current: one may have found them still
    /// there.
    pub fn forget_packs(&self, index: &Mutex<PackIndex>, packs: &[ObjectId]) {
        self.forget_own_moves();
        index.lock().unwrap_or_else(|e| e.into_inner()).forget(packs);
    }

    fn forget_own_moves(&self) {
        self.own_moves.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Whether every move of the mark from `from` to `to` was this handle's own.
    pub fn moved_only_here(&self, from: Mark, to: Mark) -> bool {
        if to[..8] != self.handle.to_le_bytes() {
            return false;
        }
        let (first, last) = (count_of(&from).wrapping_add(1), count_of(&to));
        let own = self.own_moves.lock().unwrap_or_else(|e| e.into_inner());
        let moves = last.wrapping_sub(first).wrapping_add(1);
        moves as usize <= own.len() && (0..moves).all(|i| own.contains(&first.wrapping_add(i)))
    }

    /// The mark, if no other handle's change is under way (else `None`: list).
    pub fn settled_mark(&self) -> Option<Mark> {
        let file = self.file().ok()?;
        let mut query = byte_lock_request(UNDER_WAY, libc::F_WRLCK);
        fcntl(file, FcntlArg::F_OFD_GETLK(&mut query)).ok()?;
        if query.l_type != libc::F_UNLCK as libc::c_short {
            return None;
        }
        read_mark(file).ok()
    }
}

/// How many moves a mark counts.
fn count_of(mark: &Mark) -> u64 {
    u64::from_le_bytes(mark[8..].try_into().unwrap_or_default())
}

/// The mark (zeros where the file is shorter: no change yet).
fn read_mark(file: &File) -> std::io::Result<Mark> {
    let mut mark = [0u8; 16];
    let mut read = 0;
    while read < mark.len() {
        match file.read_at(&mut mark[read..], MARK_AT + read as u64)? {
            0 => break,
            n => read += n,
        }
    }
    Ok(mark)
}

fn set_lock(file: &File, byte: libc::off_t, kind: libc::c_int) -> std::io::Result<()> {
    set_byte_lock(file, &byte_lock_request(byte, kind), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_that_moves_the_mark_after_another_did_does_not_count_its_index_current() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (PackChanges::new(dir.path()), PackChanges::new(dir.path()));
        let (index_a, index_b) = (Mutex::new(PackIndex::default()), Mutex::new(PackIndex::default()));
        // a has listed at the current mark; its own change keeps that current.
        index_a.lock().unwrap().seen = a.settled_mark();
        drop(a.begin(&index_a).unwrap());
        assert_eq!(index_a.lock().unwrap().seen, a.settled_mark());
        // b changes the packs: a's index is stale, and stays so through a's next change.
        drop(b.begin(&index_b).unwrap());
        assert_ne!(index_a.lock().unwrap().seen, a.settled_mark());
        drop(a.begin(&index_a).unwrap());
        assert_eq!(index_a.lock().unwrap().seen, None);
        // While b's change is under way, a sees no settled mark (it lists).
        let under_way = b.begin(&index_b).unwrap();
        assert_eq!(a.settled_mark(), None);
        drop(under_way);
        assert!(a.settled_mark().is_some());
    }

    #[test]
    fn a_listing_overlapped_only_by_its_own_handles_changes_stays_current() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (PackChanges::new(dir.path()), PackChanges::new(dir.path()));
        let (index_a, index_b) = (Mutex::new(PackIndex::default()), Mutex::new(PackIndex::default()));
        // A listing by a starts at `first`; two changes of a's move the mark meanwhile.
        let first = a.settled_mark().unwrap();
        drop(a.begin(&index_a).unwrap());
        drop(a.begin(&index_a).unwrap());
        let now = a.settled_mark().unwrap();
        assert!(a.moved_only_here(first, now));
        // A change of b's in between: a's listing may have missed b's pack.
        drop(b.begin(&index_b).unwrap());
        drop(a.begin(&index_a).unwrap());
        assert!(!a.moved_only_here(first, a.settled_mark().unwrap()));
        assert!(!b.moved_only_here(first, a.settled_mark().unwrap()));
        // A change of a's that failed part way counts as nobody's.
        let before = a.settled_mark().unwrap();
        drop(a.begin(&index_a).unwrap());
        a.unsettle(&index_a);
        assert!(!a.moved_only_here(before, a.settled_mark().unwrap()));
        assert_eq!(index_a.lock().unwrap().seen, None);
    }
}
