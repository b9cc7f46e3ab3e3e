//! Packs: objects shorter than the store's pack threshold are not given `k + m` shard files of
//! their own but written, several at a time, into a pack: an object of the store like any other
//! (striped, coded, checksummed, quorum-committed, scrubbed and repaired as one), whose bytes
//! are the small objects' bytes followed by a table of entries (key, write, offset, length,
//! CRC32C) and a trailer (FORMAT.md, "Packs").
//!
//! A pack is written once and never changed. An overwrite or delete of a packed key is a newer
//! entry (a delete's has no bytes) in a newer pack; a key's newest write, packed or not, is the
//! current one. Every pack's id starts with the same bytes, so the packs are the objects of one
//! bucket whose key is a pack's: listing that bucket on a read quorum of locations finds every
//! acknowledged pack (write quorums intersect read quorums, as for any object). The tables of the
//! packs found are the index, kept in memory and brought up to date before each use.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::sync::MutexGuard;

use crate::checksum::ChunkId;
use crate::error::{Error, Result};
use crate::format::{is_pack_key, ObjectId, PackEntry, PackTable, ShardHeader, WriteStamp, CHUNK_CRC_LEN};
use crate::location::ShardFile;

use super::resolve::Resolved;
use super::writer::NextStamp;
use super::{PutOutcome, Store};

/// How much room a put's read of its object starts with (`read_small`).
const READ_SMALL_AT_ONCE: u64 = 16 << 10;

/// The bucket every pack lives in (its id's first byte).
const PACK_BUCKET: u8 = 0xff;

/// The packs whose tables are loaded, each packed key's newest entry in them, and the packs
/// whose state could not be settled at the last look.
#[derive(Debug, Default)]
pub(crate) struct PackIndex {
    /// The loaded packs, each with its table (compaction needs every entry, not only the newest).
    pub(super) loaded: BTreeMap<ObjectId, PackTable>,
    /// Each packed key's newest certain write, as a place in `loaded`.
    pub(super) newest: HashMap<String, NewestAt>,
    /// Packs that may or may not have been acknowledged (too few of their files to tell), with
    /// the entries their tables name: a key they name may have a newer write in them.
    doubtful: Vec<(ObjectId, Doubt, PackTable)>,
    /// Packs whose every readable file has a damaged table (so more of their files are bad
    /// than parity covers): lost beyond repair, which objects they held unknown. They are
    /// passed over, so those objects read as an older write, as an object of its own beyond
    /// repair may when older shards of it are about (FORMAT.md, "Packs").
    lost: BTreeSet<ObjectId>,
    /// The mark of the changes file when the packs were last listed, if nothing was under way
    /// then and every pack found was settled: while it stands, the index is current.
    pub(super) seen: Option<super::pack_changes::Mark>,
    /// The files of packs read from lately, kept open for the next get.
    opened: super::opened_packs::OpenedPacks,
}

/// Why a pack's state is in doubt, to answer for a key it may hold.
#[derive(Debug, Clone, Copy)]
enum Doubt {
    TooFewLocations { usable: usize, total: usize },
    NoQuorum { held: usize, needed: usize },
}

impl Doubt {
    fn of(e: &Error) -> Option<Doubt> {
        match *e {
            Error::TooFewLocations { usable, total, .. } => Some(Doubt::TooFewLocations { usable, total }),
            Error::NoQuorum { held, needed, .. } => Some(Doubt::NoQuorum { held, needed }),
            _ => None,
        }
    }

    fn error(self, key: &str, version: u64) -> Error {
        match self {
            Doubt::TooFewLocations { usable, total } => Error::TooFewLocations {
                key: Some(key.to_owned()),
                usable,
                total,
            },
            Doubt::NoQuorum { held, needed } => Error::NoQuorum {
                key: key.to_owned(),
                version,
                held,
                needed,
            },
        }
    }
}

/// Where a key's newest certain packed write is: its pack and the entry's place in that pack's
/// loaded table, with what most lookups ask of it. A copy of the entry beside the table cost a
/// first load of 100,000 keys a second allocation each, a third of its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NewestAt {
    pub pack: ObjectId,
    pub stamp: WriteStamp,
    pub tombstone: bool,
    /// The entry's place in the pack's table.
    at: usize,
}

/// A packed write of a key: its entry and the pack holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packed {
    pub pack: ObjectId,
    pub entry: PackEntry,
}

impl NewestAt {
    fn of(pack: ObjectId, entry: &PackEntry, at: usize) -> NewestAt {
        NewestAt {
            pack,
            stamp: entry.stamp,
            tombstone: entry.tombstone,
            at,
        }
    }
}

impl PackIndex {
    /// Whether every pack found was read and is certain: none in doubt, none lost.
    pub(super) fn settled(&self) -> bool {
        self.doubtful.is_empty() && self.lost.is_empty()
    }

    /// Drops `packs` (compacted or folded away, their current entries already added in newer
    /// packs) and finds the newest entry again of each key whose newest was in one of them.
    ///
    /// Only those keys are looked for among the tables left, and only if there are any: a fold
    /// or compaction adds the packs that now hold its entries first, and [`PackIndex::add`]
    /// points equal writes at the pack added last, so usually there are none. (Rebuilding every
    /// key's newest here made each fold cost the whole index: 19% of the CPU of 100,000 puts.)
    pub(super) fn forget(&mut self, packs: &[ObjectId]) {
        self.opened.drop_packs(packs);
        let mut orphaned = HashSet::new();
        for pack in packs {
            let Some(table) = self.loaded.remove(pack) else {
                continue;
            };
            for entry in table.entries {
                if self.newest.get(&entry.key).is_some_and(|n| n.pack == *pack) {
                    self.newest.remove(&entry.key);
                    orphaned.insert(entry.key);
                }
            }
        }
        if orphaned.is_empty() {
            return;
        }
        for (&pack, table) in &self.loaded {
            for (at, entry) in table.entries.iter().enumerate() {
                if !orphaned.contains(&entry.key) {
                    continue;
                }
                let newer = self
                    .newest
                    .get(&entry.key)
                    .is_none_or(|known| entry.stamp > known.stamp);
                if newer {
                    self.newest
                        .insert(entry.key.clone(), NewestAt::of(pack, entry, at));
                }
            }
        }
    }

    /// Whether the index holds any write of `pack`, certain, doubtful or lost.
    fn knows(&self, pack: ObjectId) -> bool {
        self.loaded.contains_key(&pack)
            || self.lost.contains(&pack)
            || self.doubtful.iter().any(|(p, _, _)| *p == pack)
    }

    /// Drops `pack`'s kept files (rotten since they were opened, or replaced).
    pub(super) fn forget_opened(&mut self, pack: ObjectId) {
        self.opened.drop_packs(&[pack]);
    }

    /// Loads `pack`'s table: each entry becomes its key's newest if no newer write is known.
    /// The same write in two packs (a fold's or compaction's copy beside the original) points
    /// at the pack added last, the copy, which outlives the original.
    fn add(&mut self, pack: ObjectId, table: PackTable) {
        // One lookup an entry: a first load adds every packed key.
        for (at, entry) in table.entries.iter().enumerate() {
            match self.newest.get_mut(&entry.key) {
                Some(known) if entry.stamp >= known.stamp => *known = NewestAt::of(pack, entry, at),
                Some(_) => {}
                None => {
                    self.newest
                        .insert(entry.key.clone(), NewestAt::of(pack, entry, at));
                }
            }
        }
        self.loaded.insert(pack, table);
    }

    /// The newest packed write of `key` that is certain, or the error saying a newer one may
    /// exist in a pack whose state is in doubt (newer than `own`, the key's write in shard
    /// files of its own, if any).
    ///
    /// A delete in a doubtful pack counts, as a tombstone file does for an object of its own
    /// (FORMAT.md, "Versions and quorum"): a delete that may have happened wins.
    fn newest(&self, key: &str, own: Option<WriteStamp>) -> Result<Option<Packed>> {
        let certain = self.newest.get(key);
        let floor = certain.map(|n| n.stamp).max(own);
        let newer_doubtful = self.doubtful.iter().filter_map(|(pack, doubt, table)| {
            let newest = table
                .entries
                .iter()
                .filter(|e| e.key == key && floor.is_none_or(|f| e.stamp > f))
                .max_by_key(|e| e.stamp)?;
            Some((pack, doubt, newest))
        });
        match newer_doubtful.max_by_key(|(_, _, e)| e.stamp) {
            Some((pack, _, e)) if e.tombstone => Ok(Some(Packed {
                pack: *pack,
                entry: e.clone(),
            })),
            Some((_, doubt, e)) => Err(doubt.error(key, e.stamp.version)),
            None => Ok(certain.map(|n| self.packed(n))),
        }
    }

    /// The packed write `newest` points at.
    fn packed(&self, newest: &NewestAt) -> Packed {
        // Every pack `newest` points into is loaded: `forget` drops both together.
        Packed {
            pack: newest.pack,
            entry: self.loaded[&newest.pack].entries[newest.at].clone(),
        }
    }

    /// `key`'s current write, given its write in shard files of its own (or why none could be
    /// read): the newer of that and its newest packed write; absent if that is a delete or
    /// there is neither.
    fn current(&self, key: &str, own: Result<Resolved>) -> Result<Current> {
        let own = match own {
            Ok(resolved) => Some(resolved),
            Err(Error::NotFound { .. }) => None,
            // Shard files of a write too few to read are no matter once a packed write of the
            // key is newer than it.
            Err(Error::NoQuorum { version, .. })
                if self.newest_stamp(key).is_some_and(|p| p.version > version) =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        let own_stamp = own.as_ref().map(|o| o.header.stamp);
        let packed = self.newest(key, own_stamp)?;
        Ok(
            match packed.filter(|p| own_stamp.is_none_or(|o| p.entry.stamp > o)) {
                Some(p) if p.entry.tombstone => Current::Absent,
                Some(p) => Current::Packed(p),
                None => own.map_or(Current::Absent, Current::Own),
            },
        )
    }

    /// The newest packed write of `key`, certain or doubtful (it may have been acknowledged):
    /// a new write must be above it.
    fn newest_stamp(&self, key: &str) -> Option<WriteStamp> {
        let certain = self.newest.get(key).map(|n| n.stamp);
        let doubtful = self
            .doubtful
            .iter()
            .flat_map(|(_, _, t)| &t.entries)
            .filter(|e| e.key == key)
            .map(|e| e.stamp)
            .max();
        certain.max(doubtful)
    }

    /// The packed keys starting with `prefix`, with their newest entries (deletes included);
    /// a key a doubtful pack may hold a newer write of is left out (as an unreadable object is
    /// from a listing), or listed as deleted if that write is a delete.
    pub fn with_prefix(&self, prefix: &str) -> Vec<Packed> {
        self.newest
            .keys()
            .filter(|key| key.starts_with(prefix))
            .filter_map(|key| match self.newest(key, None) {
                Ok(Some(newest)) => Some(newest),
                _ => None,
            })
            .collect()
    }
}

/// How a pack's shard files are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PackCommit {
    /// Each fsynced, in the two steps of any write: for packs of many objects (a batch, a
    /// compaction), whose fsyncs are shared by all of them anyway.
    Direct,
    /// Through the small-write log when it can take them: for groups of single puts, where
    /// the fsyncs of `k + m` new files would cost more than the objects' bytes.
    Logged,
}

/// Where a located pack's files come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PackFiles {
    /// Listed and opened now (what `stat` and writers need: the files as they are).
    Fresh,
    /// Kept open since an earlier get if they are, else opened now and kept (a get's: its
    /// entry's bytes are checked against their CRC, and read again freshly if they fail).
    Kept,
}

/// Where a key's current write is.
pub(crate) enum Located {
    /// In shard files of its own.
    Own(Resolved),
    /// In a pack (resolved), as `entry`.
    Packed { pack: Resolved, entry: PackEntry },
}

/// A key's current write, as the index decides it.
enum Current {
    Own(Resolved),
    Packed(Packed),
    /// Deleted, or never written.
    Absent,
}

/// What a look at one pack found.
enum PackLook {
    /// No pack of this id is a current write (absent, deleted, still being written, or a
    /// user's object whose id looks like a pack's).
    Absent,
    /// An acknowledged pack and its table.
    Certain(PackTable),
    /// A pack that may or may not have been acknowledged, and its table.
    Doubtful(Doubt, PackTable),
    /// A pack whose table could not be read from any file.
    Unknown,
}

/// Where an entry of a batch comes from: its index in the batch, its key's object, and
/// whether that has shard files of its own to remove once the entry is in ([`NextStamp`]).
struct Batched {
    index: usize,
    object: ObjectId,
    older_files: bool,
}

impl Store {
    /// Whether this store packs small objects.
    pub(crate) fn packs_enabled(&self) -> bool {
        self.file.pack_threshold > 0
    }

    /// The pack index, brought up to date with the packs a read quorum of locations holds.
    ///
    /// The index's lock is not held while the tables are read: reads wait on rayon's workers,
    /// which may themselves be waiting for the index (see the `lock` module for the same rule).
    pub(crate) fn pack_index(&self) -> Result<MutexGuard<'_, PackIndex>> {
        let index = || self.packs.lock().unwrap_or_else(|e| e.into_inner());
        if !self.packs_enabled() {
            return Ok(index());
        }
        // Read before listing: a change that starts after this moves the mark. Read again if
        // it differs from the index's: a change of this handle's own may have moved both
        // since (`PackChanges::begin` moves them together), and listing every location's packs
        // for it would be for nothing (at a fold, it read hundreds of logged packs' tables
        // about to be forgotten: a third of eight writers' CPU outside their groups). Other
        // threads run first (measured: 3 of 3 runs faster with the yield than without).
        let mut mark = self.pack_changes.settled_mark();
        for look in 0..3 {
            if look > 0 {
                std::thread::yield_now();
                mark = self.pack_changes.settled_mark();
            }
            let index = index();
            if mark.is_some() && index.seen == mark {
                return Ok(index);
            }
        }
        let listed = self.list_packs()?;
        // A pack gone from the listings may have held some key's newest entry: start afresh.
        let (reset, new) = {
            let index = index();
            let reset = index.loaded.keys().any(|p| !listed.contains(p));
            let new: Vec<ObjectId> = match reset {
                true => listed.iter().copied().collect(),
                false => listed
                    .iter()
                    .filter(|p| !index.loaded.contains_key(p))
                    .copied()
                    .collect(),
            };
            (reset, new)
        };
        let mut certain = Vec::with_capacity(new.len());
        let mut doubtful = Vec::new();
        let mut lost = BTreeSet::new();
        let mut unsettled = false;
        let mut kept = self.kept_pack_tables(&new);
        let mut looked = Vec::with_capacity(new.len());
        for pack in new {
            match kept.remove(&pack) {
                Some(table) => certain.push((pack, table)),
                None => looked.push(pack),
            }
        }
        // On threads of their own (never rayon's: the caller may hold object locks). A first
        // look is a listing and a header read per pack on every location, which a cold cache
        // served one at a time: 200 packs took a cold `rm` of 1,000 keys 0.32 s, now 0.21 s.
        let looks = map_on_threads(&looked, |&pack| self.look_at_pack(pack));
        for (pack, look) in looked.into_iter().zip(looks) {
            // Absent packs (being written, or deleted) are looked for again next time.
            match look {
                PackLook::Absent => unsettled = true,
                PackLook::Certain(table) => certain.push((pack, table)),
                PackLook::Doubtful(doubt, table) => doubtful.push((pack, doubt, table)),
                // Every file of an acknowledged pack has a copy of its table: none readable means
                // more bad files than parity covers.
                PackLook::Unknown => {
                    lost.insert(pack);
                }
            }
        }
        let mut index = index();
        if reset {
            *index = PackIndex::default();
        }
        // Grown once, not doubled (and every key hashed again) a dozen times on a first load.
        index
            .newest
            .reserve(certain.iter().map(|(_, t)| t.entries.len()).sum());
        for (pack, table) in certain {
            if !index.loaded.contains_key(&pack) {
                index.add(pack, table);
            }
        }
        unsettled |= !doubtful.is_empty() || !lost.is_empty();
        index.doubtful = doubtful;
        index.lost = lost;
        // Current at the mark read now if only this handle's changes moved it since the first
        // read (they keep the index current themselves), unless this listing started the
        // index afresh: that dropped what those changes added meanwhile.
        let still = self.pack_changes.settled_mark();
        let current = match (mark, still) {
            (Some(m), Some(s)) => m == s || (!reset && self.pack_changes.moved_only_here(m, s)),
            _ => false,
        };
        index.seen = still.filter(|_| current && !unsettled);
        Ok(index)
    }

    /// The tables of those of `packs` held by a kept log segment on every location (FORMAT.md,
    /// "Kept segments"), each read from one copy: such a pack is committed on every location,
    /// so certain, without the look at each location `look_at_pack` takes (single puts leave a
    /// pack per group, thousands a segment: that look was ~80 us a pack). A pack with more than
    /// one write kept, or not kept on some location, is left to that look.
    fn kept_pack_tables(&self, packs: &[ObjectId]) -> HashMap<ObjectId, PackTable> {
        let mut tables = HashMap::new();
        if packs.is_empty() || !self.file.logs_small_writes() {
            return tables;
        }
        let mut everywhere: Option<HashSet<(ObjectId, WriteStamp)>> = None;
        for slot in &self.slots {
            let Ok(location) = slot.usable() else {
                return tables;
            };
            let here: HashSet<(ObjectId, WriteStamp)> = location.kept_log_writes().into_iter().collect();
            everywhere = Some(match everywhere {
                None => here,
                Some(all) => all.intersection(&here).copied().collect(),
            });
        }
        let wanted: HashSet<&ObjectId> = packs.iter().collect();
        let mut writes: HashMap<ObjectId, Vec<WriteStamp>> = HashMap::new();
        for (pack, stamp) in everywhere.unwrap_or_default() {
            if wanted.contains(&pack) {
                writes.entry(pack).or_default().push(stamp);
            }
        }
        let (store_id, geometry) = (self.file.store_id, self.file.geometry);
        for (pack, stamps) in writes {
            let [stamp] = stamps[..] else { continue };
            let table = self.slots.iter().find_map(|slot| {
                let file = slot.usable().ok()?.open_shard(pack, stamp).ok()?;
                let header = super::resolve::read_header(&*file, stamp, store_id, geometry).ok()?;
                self.table_in_files(pack, std::iter::once((&*file, header)))
            });
            if let Some(table) = table {
                tables.insert(pack, table);
            }
        }
        tables
    }

    /// The ids of the packs on the locations. Needs a read quorum of locations listed, so that
    /// every acknowledged pack is among them.
    fn list_packs(&self) -> Result<BTreeSet<ObjectId>> {
        let mut packs = BTreeSet::new();
        let mut listed = 0;
        for slot in &self.slots {
            let Ok(location) = slot.usable() else { continue };
            if let Ok(objects) = location.list_bucket(PACK_BUCKET) {
                listed += 1;
                packs.extend(objects.into_iter().filter(ObjectId::is_pack));
            }
        }
        if listed < self.read_quorum() {
            return Err(Error::TooFewLocations {
                key: None,
                usable: listed,
                total: self.slots.len(),
            });
        }
        Ok(packs)
    }

    /// Reads a pack's table from one copy: the end of a data chunk or a parity file's footer,
    /// each verified by its own CRC and read again on a mismatch (ARQ). An acknowledged pack
    /// none of whose copies verifies has its first data chunk rebuilt from parity. Only what is
    /// needed is read (one chunk, as a rule), all on this thread: callers may hold object locks,
    /// which must never wait on rayon (see the `lock` module).
    fn look_at_pack(&self, pack: ObjectId) -> PackLook {
        let key = pack.pack_key();
        match self.resolve(&key) {
            Ok(resolved) => match self.pack_table(pack, &resolved) {
                Some(table) => PackLook::Certain(table),
                None => PackLook::Unknown,
            },
            Err(Error::NotFound { .. }) => PackLook::Absent,
            Err(e) => {
                let gathered = self.gather(pack, false);
                let files = gathered.slots.iter().flatten().flatten().filter_map(|c| {
                    Some((&*c.file, c.header.as_ref().ok().filter(|h| h.key == key)?.clone()))
                });
                let doubt = Doubt::of(&e).unwrap_or(Doubt::TooFewLocations {
                    usable: 0,
                    total: self.slots.len(),
                });
                match self.table_in_files(pack, files) {
                    Some(table) => PackLook::Doubtful(doubt, table),
                    None => PackLook::Unknown,
                }
            }
        }
    }

    /// The table of a resolved pack: from one copy that verifies, or rebuilt from parity.
    pub(crate) fn pack_table(&self, pack: ObjectId, resolved: &Resolved) -> Option<PackTable> {
        let mut header = resolved.header.clone();
        // Parity files first: their footer is the table alone, where a data chunk's copy is
        // verified with the whole chunk (up to the chunk size: a cold `ls` of 200 packs read
        // 200 MiB for their tables).
        let k = usize::from(self.file.geometry.k);
        let n = resolved.shards.len();
        let files = (k..n).chain(0..k.min(n)).filter_map(|shard| {
            header.shard_index = shard as u8;
            Some((resolved.shards[shard].as_deref()?, header.clone()))
        });
        self.table_in_files(pack, files)
            .or_else(|| self.table_rebuilt(pack, resolved))
    }

    /// The table from the first of `files` (each with its own header) holding a copy that
    /// verifies: a data chunk's end, or a parity file's footer.
    fn table_in_files<'f>(
        &self,
        pack: ObjectId,
        files: impl Iterator<Item = (&'f dyn ShardFile, ShardHeader)>,
    ) -> Option<PackTable> {
        let k = self.file.geometry.k;
        let attempts = self.retry.attempts.max(1);
        files.into_iter().find_map(|(file, header)| {
            let len = header.object_len;
            (0..attempts).find_map(|_| match header.shard_index < k {
                true => {
                    let chunk = read_chunk(file, &header, pack)?;
                    PackTable::decode_at_end(&chunk, len).ok()
                }
                false => PackTable::decode(&read_footer(file, &header)?, len).ok(),
            })
        })
    }

    /// The table from the first data chunk rebuilt from the chunks that verify (parity
    /// included), on this thread; the table's own CRC confirms the rebuild.
    fn table_rebuilt(&self, pack: ObjectId, resolved: &Resolved) -> Option<PackTable> {
        let chunks = self.pack_data(pack, resolved)?;
        PackTable::decode_at_end(chunks.first()?, resolved.header.object_len).ok()
    }

    /// A pack's data chunks (its bytes, in `k` pieces), each verified by its CRC, rebuilt from
    /// parity on this thread if some do not verify; `None` if too few do.
    pub(super) fn pack_data(&self, pack: ObjectId, resolved: &Resolved) -> Option<Vec<Vec<u8>>> {
        let k = usize::from(self.file.geometry.k);
        let len = resolved.header.object_len;
        let chunk_len = self.file.geometry.stripe(len, 0).chunk_len;
        let mut chunks = vec![Vec::new(); resolved.shards.len()];
        let mut header = resolved.header.clone();
        let mut read = |shard: usize, chunks: &mut Vec<Vec<u8>>| {
            header.shard_index = shard as u8;
            let file = resolved.shards[shard].as_deref()?;
            chunks[shard] = read_chunk(file, &header, pack)?;
            Some(())
        };
        // Every data chunk is read (no stopping at the first bad one): the rebuild needs them.
        let bad = (0..k).filter(|&shard| read(shard, &mut chunks).is_none()).count();
        if bad > 0 {
            for shard in k..chunks.len() {
                read(shard, &mut chunks);
            }
            let present: Vec<bool> = chunks.iter().map(|c| !c.is_empty()).collect();
            for chunk in chunks.iter_mut().filter(|c| c.is_empty()) {
                chunk.resize(chunk_len, 0);
            }
            let mut slices: Vec<(&mut [u8], bool)> =
                chunks.iter_mut().map(Vec::as_mut_slice).zip(present).collect();
            self.codec.reconstruct_on_this_thread(&mut slices, true).ok()?;
        }
        chunks.truncate(k);
        Some(chunks)
    }

    /// Where `key`'s current write is: in its own shard files or in a pack, whichever is newer.
    /// `locked`: the caller holds the key's lock.
    pub(crate) fn locate(&self, key: &str, locked: bool) -> Result<Located> {
        self.locate_with(key, locked, PackFiles::Fresh)
            .map(|(located, _)| located)
    }

    /// As [`Store::locate`], a pack's files as `files` says; returns whether they were kept ones.
    pub(crate) fn locate_with(&self, key: &str, locked: bool, files: PackFiles) -> Result<(Located, bool)> {
        let own = match locked {
            true => self.resolve_locked(key),
            false => self.resolve(key),
        };
        if !self.packs_enabled() {
            return own.map(|own| (Located::Own(own), false));
        }
        let (Packed { pack: id, entry }, kept) = {
            let index = self.pack_index()?;
            let packed = match index.current(key, own)? {
                Current::Own(resolved) => return Ok((Located::Own(resolved), false)),
                Current::Absent => return Err(not_found(key)),
                Current::Packed(packed) => packed,
            };
            let kept = match files {
                PackFiles::Kept => index.opened.get(packed.pack),
                PackFiles::Fresh => None,
            };
            (packed, kept)
        };
        if let Some(pack) = kept {
            return Ok((Located::Packed { pack, entry }, true));
        }
        match self.resolve(&id.pack_key()) {
            Ok(pack) => {
                if files == PackFiles::Kept {
                    let mut index = self.packs.lock().unwrap_or_else(|e| e.into_inner());
                    // Not if the index forgot the pack meanwhile.
                    if index.loaded.contains_key(&id) {
                        index.opened.keep(id, pack.clone());
                    }
                }
                Ok((Located::Packed { pack, entry }, false))
            }
            // Its pack's files are gone since its table was read: the write is held nowhere.
            Err(Error::NotFound { .. }) => Err(Error::NoQuorum {
                key: key.to_owned(),
                version: entry.stamp.version,
                held: 0,
                needed: usize::from(self.file.geometry.k),
            }),
            Err(e) => Err(e),
        }
    }

    /// The newest write of `key` in a pack (a delete's included), for choosing a new version.
    pub(crate) fn newest_packed_stamp(&self, key: &str) -> Result<Option<WriteStamp>> {
        if !self.packs_enabled() {
            return Ok(None);
        }
        Ok(self.pack_index()?.newest_stamp(key))
    }

    /// Names an unrecoverable pack for an operator: `<pack ID>`, with the keys whose current
    /// write it holds (as far as its table was read before).
    pub(crate) fn name_packed_keys(&self, lost: &mut crate::scrub::UnrecoverableObject) {
        if !is_pack_key(&lost.key) {
            return;
        }
        let pack = ObjectId::of_key(&lost.key);
        let index = self.packs.lock().unwrap_or_else(|e| e.into_inner());
        // Its table as last read: loaded (keys whose current write it holds) or doubtful (every
        // key it names: too few of its files to tell which writes were acknowledged).
        let doubtful = index.doubtful.iter().find(|(p, _, _)| *p == pack);
        let mut keys: Vec<&str> = match doubtful {
            Some((_, _, table)) => table
                .entries
                .iter()
                .filter(|e| !e.tombstone)
                .map(|e| e.key.as_str())
                .collect(),
            None => index
                .newest
                .iter()
                .filter(|(_, n)| n.pack == pack && !n.tombstone)
                .map(|(key, _)| key.as_str())
                .collect(),
        };
        keys.sort_unstable();
        lost.key = format!("<pack {}>", pack.to_hex());
        lost.detail = if index.lost.contains(&pack) {
            format!(
                "{}; every copy of its table is lost too, so which objects it held is unknown",
                lost.detail
            )
        } else if doubtful.is_some() || index.loaded.contains_key(&pack) {
            format!(
                "{}; it holds the writes of {} objects: {keys:?}",
                lost.detail,
                keys.len()
            )
        } else {
            format!(
                "{}; its table was never read, so which objects it holds is unknown",
                lost.detail
            )
        };
    }

    /// The object whose shard files hold each listed write, as the index last saw it: its
    /// pack's, or the key's own (what a scrub's history records).
    pub(crate) fn holders(&self, listing: &[super::ListEntry]) -> Vec<ObjectId> {
        let index = self.packs.lock().unwrap_or_else(|e| e.into_inner());
        listing
            .iter()
            .map(|e| match index.newest.get(&e.key) {
                Some(n) if n.stamp.version == e.version && !n.tombstone => n.pack,
                _ => ObjectId::of_key(&e.key),
            })
            .collect()
    }

    /// How many objects' current writes each loaded pack holds (deletes not counted), as the
    /// index last saw it: what a scrub of the pack verifies.
    pub(crate) fn objects_per_pack(&self) -> HashMap<ObjectId, u64> {
        let index = self.packs.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts: HashMap<ObjectId, u64> = index.loaded.keys().map(|p| (*p, 0)).collect();
        for newest in index.newest.values().filter(|n| !n.tombstone) {
            *counts.entry(newest.pack).or_default() += 1;
        }
        counts
    }

    /// The newest packed write of `key` as the index last saw it (no look at the locations):
    /// for a scrub, which loads the index once at its start. A write it lists is certain; one
    /// it misses (written since, by another process) leaves the key's files judged as if
    /// unpacked, which keeps them.
    pub(crate) fn cached_packed_stamp(&self, key: &str) -> Option<WriteStamp> {
        if !self.packs_enabled() {
            return None;
        }
        let index = self.packs.lock().unwrap_or_else(|e| e.into_inner());
        index.newest.get(key).map(|n| n.stamp)
    }

    /// Stores a small object (`bytes`, shorter than the pack threshold) in a pack of its own;
    /// the caller holds the key's lock.
    pub(crate) fn put_packed(&self, key: &str, object: ObjectId, bytes: Vec<u8>) -> Result<PutOutcome> {
        self.write_entry(key, object, bytes, false)
    }

    /// Deletes a key of a packing store: a delete entry in a pack of its own outvotes every
    /// older write, packed or not. The caller holds the key's lock and found the key.
    pub(crate) fn delete_packed(&self, key: &str, object: ObjectId) -> Result<()> {
        self.write_entry(key, object, Vec::new(), true).map(drop)
    }

    /// Writes one entry in a pack of its own as the key's next version, then removes the key's
    /// older shard files of its own (a larger object's), which it outvotes.
    fn write_entry(
        &self,
        key: &str,
        object: ObjectId,
        bytes: Vec<u8>,
        tombstone: bool,
    ) -> Result<PutOutcome> {
        self.check_usable_quorum(key)?;
        let NextStamp { stamp, older_files } = self.next_stamp_listed(key, object)?;
        let entry = PackEntry::new(key, stamp, &bytes, tombstone);
        let len = entry.len;
        let shards_written = self.commit_grouped(entry, bytes)?;
        if older_files {
            self.retire_older(object, stamp);
        }
        Ok(PutOutcome {
            version: stamp.version,
            len,
            shards_written,
        })
    }

    /// Stores several objects as one batch: those below the pack threshold are written
    /// together into as few packs as they fit in, so they share the writes and fsyncs of a few
    /// shard files; the others as by [`Store::put`], one after another. Returns each object's
    /// outcome, in the order given. Without packs (a store created without a pack threshold)
    /// it is a loop of puts.
    ///
    /// Each object is durable and current once this returns `Ok`. On an error the objects
    /// before the failing one are written (as by puts in that order), the rest are not.
    ///
    /// # Errors
    /// As [`Store::put`]; [`Error::InvalidKey`] also when a key appears twice in the batch.
    pub fn put_many<'k, R: Read>(
        &self,
        objects: impl IntoIterator<Item = (&'k str, R)>,
    ) -> Result<Vec<PutOutcome>> {
        self.check_writable()?;
        let mut outcomes: Vec<Option<PutOutcome>> = Vec::new();
        let mut small: Vec<(usize, &'k str, Vec<u8>)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, (key, mut data)) in objects.into_iter().enumerate() {
            crate::key::validate(key)?;
            if !seen.insert(key) {
                return Err(Error::InvalidKey {
                    reason: "a key appears twice in the batch",
                });
            }
            outcomes.push(None);
            if !self.packs_enabled() {
                outcomes[i] = Some(self.put(key, data)?);
                continue;
            }
            let (head, is_small) = self.read_small(&mut data)?;
            match is_small {
                true => small.push((i, key, head)),
                false => outcomes[i] = Some(self.put(key, head.as_slice().chain(data))?),
            }
        }
        for (i, outcome) in self.put_packed_batch(small)? {
            outcomes[i] = Some(outcome);
        }
        Ok(outcomes.into_iter().flatten().collect())
    }

    /// Writes small objects `(index, key, bytes)` into packs, holding every key's lock (taken
    /// in id order, so batches never wait on each other in a circle).
    fn put_packed_batch(&self, mut small: Vec<(usize, &str, Vec<u8>)>) -> Result<Vec<(usize, PutOutcome)>> {
        if small.is_empty() {
            return Ok(Vec::new());
        }
        let first = small[0].1.to_owned();
        self.check_usable_quorum(&first)?;
        small.sort_by_key(|(_, key, _)| ObjectId::of_key(key));
        let _locks = small
            .iter()
            .map(|(_, key, _)| self.locks.lock(ObjectId::of_key(key)))
            .collect::<Result<Vec<_>>>()?;
        // With every key locked, one look at the packs sees every write of them.
        let packed: Vec<Option<WriteStamp>> = {
            let index = self.pack_index()?;
            small.iter().map(|(_, key, _)| index.newest_stamp(key)).collect()
        };
        let mut entries = Vec::with_capacity(small.len());
        for ((index, key, bytes), packed) in small.into_iter().zip(packed) {
            let object = ObjectId::of_key(key);
            let next = self.next_stamp_above(key, object, packed)?;
            let entry = PackEntry::new(key, next.stamp, &bytes, false);
            entries.push((
                entry,
                bytes,
                Batched {
                    index,
                    object,
                    older_files: next.older_files,
                },
            ));
        }
        let committed = self.commit_batch(entries)?;
        Ok(committed
            .into_iter()
            .map(|(index, entry, shards_written)| {
                let outcome = PutOutcome {
                    version: entry.stamp.version,
                    len: entry.len,
                    shards_written,
                };
                (index, outcome)
            })
            .collect())
    }

    /// Writes a batch's entries (each with its bytes and where it comes from) into as few
    /// packs as they fit in, one pack after another, and removes the older shard files each
    /// outvotes. Returns each entry's index, entry and shard files written. The caller holds
    /// every entry's key lock.
    fn commit_batch(
        &self,
        mut rest: Vec<(PackEntry, Vec<u8>, Batched)>,
    ) -> Result<Vec<(usize, PackEntry, usize)>> {
        let mut committed = Vec::with_capacity(rest.len());
        while !rest.is_empty() {
            let (taken, laid) = self.lay_out_most(&rest);
            let laid = laid.ok_or_else(|| Error::Input {
                source: std::io::Error::other("an object does not fit in a pack"),
            })?;
            let shards_written = self.commit_pack(laid, PackCommit::Direct)?;
            for (
                entry,
                _,
                Batched {
                    index,
                    object,
                    older_files,
                },
            ) in rest.drain(..taken)
            {
                if older_files {
                    self.retire_older(object, entry.stamp);
                }
                committed.push((index, entry, shards_written));
            }
        }
        Ok(committed)
    }

    /// Deletes several keys as one batch: in a packing store, their delete entries are written
    /// together into as few packs as they fit in (a few shard files' writes and fsyncs for the
    /// whole batch); without packs, one [`Store::delete`] after another. Returns, for each key
    /// in the order given, whether it was there (an absent key is no error in a batch).
    ///
    /// Each delete is durable once this returns `Ok`. On an error none of the batch's deletes
    /// may have happened, or (without packs, or past the first pack) those before the failing
    /// one have.
    ///
    /// # Errors
    /// As [`Store::delete`] (but for [`Error::NotFound`]); [`Error::InvalidKey`] also when a
    /// key appears twice in the batch.
    pub fn delete_many<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Result<Vec<bool>> {
        self.check_writable()?;
        let keys: Vec<&str> = keys.into_iter().collect();
        let mut seen = std::collections::HashSet::new();
        for key in &keys {
            crate::key::validate(key)?;
            if !seen.insert(*key) {
                return Err(Error::InvalidKey {
                    reason: "a key appears twice in the batch",
                });
            }
        }
        if !self.packs_enabled() {
            return keys
                .iter()
                .map(|key| match self.delete(key) {
                    Ok(()) => Ok(true),
                    Err(Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(e),
                })
                .collect();
        }
        let Some(first) = keys.first() else {
            return Ok(Vec::new());
        };
        self.check_usable_quorum(first)?;
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by_key(|&i| ObjectId::of_key(keys[i]));
        let _locks = order
            .iter()
            .map(|&i| self.locks.lock(ObjectId::of_key(keys[i])))
            .collect::<Result<Vec<_>>>()?;
        // Each key's write in shard files of its own, then (one look at the packs, with every
        // key locked) whether its newest write is a delete or nothing: those are not there.
        let own: Vec<Result<Resolved>> = map_on_threads(&order, |&i| self.resolve_locked(keys[i]));
        let present: Vec<(bool, Option<WriteStamp>)> = {
            let index = self.pack_index()?;
            order
                .iter()
                .zip(own)
                .map(|(&i, own)| {
                    // An unreadable write is there: it may still be deleted (as by `delete`).
                    let absent = matches!(index.current(keys[i], own), Ok(Current::Absent));
                    (!absent, index.newest_stamp(keys[i]))
                })
                .collect()
        };
        let mut there = vec![false; keys.len()];
        let mut entries = Vec::new();
        for (&i, (present, packed)) in order.iter().zip(present) {
            if !present {
                continue;
            }
            there[i] = true;
            let object = ObjectId::of_key(keys[i]);
            let next = self.next_stamp_above(keys[i], object, packed)?;
            let tombstone = PackEntry::new(keys[i], next.stamp, &[], true);
            let batched = Batched {
                index: i,
                object,
                older_files: next.older_files,
            };
            entries.push((tombstone, Vec::new(), batched));
        }
        self.commit_batch(entries)?;
        Ok(there)
    }

    /// Fails as a put to shard files of its own would, before anything else is asked, when too
    /// few locations are usable to write a quorum.
    fn check_usable_quorum(&self, key: &str) -> Result<()> {
        let usable = self.slots.iter().filter(|s| s.usable().is_ok()).count();
        match usable < self.write_quorum() {
            true => Err(Error::WriteQuorum {
                key: key.to_owned(),
                written: 0,
                needed: self.write_quorum(),
                source: std::io::Error::other("too few usable locations"),
            }),
            false => Ok(()),
        }
    }

    /// The most of the first of `queued` that fit in one pack (halving until they do), laid
    /// out; `None` if even the first alone does not fit.
    pub(crate) fn lay_out_most<T>(
        &self,
        queued: &[(PackEntry, Vec<u8>, T)],
    ) -> (usize, Option<(Vec<u8>, PackTable)>) {
        let g = self.file.geometry;
        let mut take = queued.len();
        loop {
            let batch: Vec<(&PackEntry, &[u8])> =
                queued[..take].iter().map(|(e, b, _)| (e, &b[..])).collect();
            match lay_out(usize::from(g.k), g.chunk_size as usize, &batch) {
                Some(laid) => return (take, Some(laid)),
                None if take > 1 => take = take.div_ceil(2),
                // The threshold's bound at `create` makes one object always fit.
                None => return (1, None),
            }
        }
    }

    /// Writes a laid-out pack as an object of the store (each shard file ending with the
    /// table) and adds it to the index; returns the shard files written.
    pub(crate) fn commit_pack(
        &self,
        (body, table): (Vec<u8>, PackTable),
        commit: PackCommit,
    ) -> Result<usize> {
        let pack = ObjectId::of_pack(&table.entries);
        let key = pack.pack_key();
        let _change = self.pack_changes.begin(&self.packs)?;
        let written = (|| -> Result<usize> {
            // A new id (no other write has these entries): nobody else waits for this lock.
            let _lock = self.locks.lock(pack)?;
            let footer = table.encode(body.len() as u64);
            let stamp = self.pack_stamp(&key, pack)?;
            if commit == PackCommit::Logged {
                let logged = self.write_pack_logged(&key, (pack, stamp), (&body, &table), &footer)?;
                if let Some(written) = logged {
                    return Ok(written);
                }
            }
            let written = self.write_object_with_footer(&key, (pack, stamp), body.as_slice(), &footer)?;
            Ok(written.shards_written)
        })();
        let written = written.inspect_err(|_| {
            // Some of its files may be in place: a doubtful pack the next look must find.
            self.pack_changes.unsettle(&self.packs);
        })?;
        self.packs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(pack, table);
        Ok(written)
    }

    /// The stamp of a new write of pack `pack` (key `key`). A pack's id comes from its entries,
    /// new writes: no other write has it (one that failed before a quorum was never
    /// acknowledged), so it is version 1 and needs no listing, unless the index knows a write
    /// of it (a fold's pack with exactly a logged pack's entries is that pack's next write):
    /// then above every write listed. The listing of a new fold pack read the handle's whole
    /// segment back through its log view on every location, a quarter of a fold's CPU.
    fn pack_stamp(&self, key: &str, pack: ObjectId) -> Result<WriteStamp> {
        let known = self.packs.lock().unwrap_or_else(|e| e.into_inner()).knows(pack);
        match known {
            true => self.next_stamp(key, pack),
            false => Ok(WriteStamp {
                version: 1,
                write_id: crate::ids::random_u64(),
            }),
        }
    }

    /// Whether the bytes of `data` make a small object: reads up to the pack threshold. Returns
    /// the bytes read and whether the input ended before the threshold.
    pub(crate) fn read_small(&self, data: &mut impl Read) -> Result<(Vec<u8>, bool)> {
        let threshold = u64::from(self.file.pack_threshold);
        // Room for a small object's bytes at once: grown from empty, a 4 KiB object's read
        // reallocated and copied its bytes several times (a sixth of a put's CPU before it
        // queued for its group).
        let mut head = Vec::with_capacity(threshold.min(READ_SMALL_AT_ONCE) as usize);
        data.take(threshold)
            .read_to_end(&mut head)
            .map_err(|source| Error::Input { source })?;
        let small = (head.len() as u64) < threshold;
        Ok((head, small))
    }
}

/// `f` of each item, in order, on a few threads of this call's own: the per-key lookups of a
/// batch are independent, and a cold cache serves several at once much faster than one after
/// another. Not rayon's pool: the caller holds object locks (see the `lock` module).
fn map_on_threads<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const THREADS: usize = 8;
    if items.len() < 2 * THREADS {
        return items.iter().map(f).collect();
    }
    let share = items.len().div_ceil(THREADS);
    std::thread::scope(|scope| {
        let f = &f;
        let running: Vec<_> = items
            .chunks(share)
            .map(|chunk| scope.spawn(move || chunk.iter().map(f).collect::<Vec<R>>()))
            .collect();
        running
            .into_iter()
            .flat_map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// A packed key's listing entry; `None` for a delete.
pub(crate) fn list_entry(packed: Packed) -> Option<super::ListEntry> {
    let entry = packed.entry;
    (!entry.tombstone).then_some(super::ListEntry {
        key: entry.key,
        len: entry.len,
        version: entry.stamp.version,
    })
}

/// The one chunk of a pack's shard file, if its CRC verifies.
fn read_chunk(file: &dyn ShardFile, header: &ShardHeader, pack: ObjectId) -> Option<Vec<u8>> {
    let chunk_len = header.geometry.stripe(header.object_len, 0).chunk_len;
    let mut frame = vec![0u8; chunk_len + CHUNK_CRC_LEN as usize];
    file.read_exact_at(&mut frame, header.encoded_len() as u64).ok()?;
    let id = ChunkId {
        object: pack,
        stamp: header.stamp,
        shard: header.shard_index,
        stripe: 0,
    };
    let crc = frame.split_off(chunk_len);
    (id.checksum(&frame).to_le_bytes()[..] == crc[..]).then_some(frame)
}

/// The footer of a pack's parity shard file: the bytes after its last chunk (a copy of the
/// pack's table), if there are any and not absurdly many.
pub(crate) fn read_footer(file: &dyn ShardFile, header: &ShardHeader) -> Option<Vec<u8>> {
    let body_end = header.expected_file_len();
    let footer_len = file
        .len()
        .checked_sub(body_end)
        .filter(|&l| l > 0 && l <= MAX_FOOTER_LEN)?;
    let mut footer = vec![0u8; footer_len as usize];
    file.read_exact_at(&mut footer, body_end).ok()?;
    Some(footer)
}

/// No pack table is longer: its objects and their keys fit in one chunk (at most 64 MiB).
const MAX_FOOTER_LEN: u64 = crate::format::MAX_CHUNK_SIZE as u64;

/// Lays `entries` out as the bytes of a pack of one stripe, for `k` data chunks of at most
/// `chunk_size` bytes (FORMAT.md, "Packs"): data chunk `i` holds some objects' bytes, zeros, and
/// a copy of the table at its end, so that any one data chunk names every object of the pack.
/// Each object lies whole in one chunk. Returns the bytes and the table (offsets set, in
/// offset order); `None` when the objects do not fit.
pub(crate) fn lay_out(
    k: usize,
    chunk_size: usize,
    entries: &[(&PackEntry, &[u8])],
) -> Option<(Vec<u8>, PackTable)> {
    let table_len = PackTable::encoded_len_of(entries.iter().map(|(e, _)| *e));
    let lens: Vec<usize> = entries.iter().map(|(_, b)| b.len()).collect();
    let mut largest_first: Vec<usize> = (0..lens.len()).collect();
    largest_first.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    // First fit, largest first, into k bins of `room` bytes: the bin of each object.
    let bins_of = |room: usize| -> Option<Vec<usize>> {
        let mut free = vec![room; k];
        let mut bin = vec![0; lens.len()];
        for &i in &largest_first {
            let b = free.iter().position(|&f| f >= lens[i])?;
            free[b] -= lens[i];
            bin[i] = b;
        }
        Some(bin)
    };
    // The least room that works (first fit is not monotone in the room, but near enough: the
    // search only ever costs a little slack).
    let most = chunk_size.checked_sub(table_len)?;
    let least = lens
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(lens.iter().sum::<usize>().div_ceil(k));
    let mut bins = bins_of(most)?;
    let (mut lo, mut hi) = (least.min(most), most);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match bins_of(mid) {
            Some(found) => {
                hi = mid;
                bins = found;
            }
            None => lo = mid + 1,
        }
    }
    let chunk_len = hi + table_len;
    let mut body = vec![0u8; k * chunk_len];
    let mut fill = vec![0usize; k];
    let mut placed: Vec<PackEntry> = Vec::with_capacity(entries.len());
    for (&(entry, bytes), bin) in entries.iter().zip(bins) {
        let offset = bin * chunk_len + fill[bin];
        body[offset..offset + bytes.len()].copy_from_slice(bytes);
        fill[bin] += bytes.len();
        placed.push(PackEntry {
            offset: offset as u64,
            ..entry.clone()
        });
    }
    placed.sort_by_key(|e| e.offset);
    let table = PackTable { entries: placed };
    let encoded = table.encode(body.len() as u64);
    for chunk in body.chunks_exact_mut(chunk_len) {
        chunk[chunk_len - table_len..].copy_from_slice(&encoded);
    }
    Some((body, table))
}

fn not_found(key: &str) -> Error {
    Error::NotFound { key: key.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, u64, u64)]) -> PackTable {
        PackTable {
            entries: entries
                .iter()
                .map(|&(key, version, write_id)| {
                    PackEntry::new(key, WriteStamp { version, write_id }, b"x", false)
                })
                .collect(),
        }
    }

    fn newest(index: &PackIndex, key: &str) -> Option<(ObjectId, u64)> {
        index.newest.get(key).map(|n| (n.pack, n.stamp.version))
    }

    #[test]
    fn forgetting_packs_finds_each_key_s_newest_again_among_the_packs_left() {
        let [old, logged, folded, other] = [1u8, 2, 3, 4].map(|b| ObjectId([b; 16]));
        let mut index = PackIndex::default();
        index.add(old, table(&[("a", 1, 10), ("b", 1, 11)]));
        index.add(logged, table(&[("a", 2, 20), ("c", 1, 12)]));
        index.add(other, table(&[("d", 1, 13)]));
        // A fold's copy of the logged pack's writes: equal writes point at the copy.
        index.add(folded, table(&[("a", 2, 20), ("c", 1, 12)]));
        assert_eq!(newest(&index, "a"), Some((folded, 2)));
        index.forget(&[logged]);
        assert_eq!(newest(&index, "a"), Some((folded, 2)));
        assert_eq!(newest(&index, "c"), Some((folded, 1)));
        // A key whose newest goes with its pack falls back to its older write; one with no
        // other write is gone; the others stay.
        index.forget(&[folded]);
        assert_eq!(newest(&index, "a"), Some((old, 1)));
        assert_eq!(newest(&index, "c"), None);
        assert_eq!(newest(&index, "b"), Some((old, 1)));
        assert_eq!(newest(&index, "d"), Some((other, 1)));
        assert_eq!(index.loaded.keys().copied().collect::<Vec<_>>(), vec![old, other]);
    }
}
