//! The store: create/open, put/get/delete/list/stat over `k + m` locations.

mod builder;
mod compaction;
mod group_commit;
pub(crate) mod hedge;
mod log_appenders;
mod object_writer;
mod opened_packs;
mod pack_changes;
pub(crate) mod packs;
pub(crate) mod reader;
pub(crate) mod rebuild;
pub(crate) mod resolve;
mod small_log;
mod writer;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

pub(crate) use pack_changes::CHANGES_FILE as PACK_CHANGES_FILE;
pub(crate) use small_log::LOCK_FILE as SMALL_LOG_LOCK_FILE;

use crate::arq::RetryPolicy;
use crate::codec::Codec;
use crate::error::{ConfigProblem, Error, Result};
use crate::format::{Geometry, LocationIdentity, ObjectId, StoreFile, WriteStamp};
use crate::health::{HeaderProblem, LocationProblem, StoreFileProblem};
use crate::key;
use crate::location::{write_atomically, Durability, LocalDir, Location, MAX_STORE_FILE_LEN};
use crate::location_spec::LocationSpec;
use crate::lock::ObjectLocks;

pub use builder::{LocationWrapper, StoreBuilder};
pub use compaction::CompactionSummary;
pub use object_writer::ObjectWriter;
pub use reader::{ObjectReader, ReadStats};
pub use writer::{PutMode, PutOutcome};

/// The largest pack threshold: a packed object is held in memory while it is written.
const MAX_PACK_THRESHOLD: u32 = 16 << 20;
/// Room a chunk keeps beside a packed object for a pack's table of one entry (the longest key).
const PACK_TABLE_ROOM: usize = crate::format::PackTable::ENTRY_FIXED_LEN
    + crate::format::MAX_KEY_LEN
    + crate::format::PackTable::TRAILER_LEN;

/// Name of the store file at the store's root.
pub const STORE_FILE: &str = "shardguard.store";

/// The state of one location, as found when the store was opened (or a scrub rebuilt it).
#[derive(Debug)]
pub(crate) struct Slot {
    pub dir: PathBuf,
    pub location: Arc<dyn Location>,
    /// `None` when usable, else why not.
    pub unusable: RwLock<Option<LocationProblem>>,
    /// What the location lived on when it was found usable ([`Location::instance`]).
    pub instance: RwLock<Option<u64>>,
}

impl Slot {
    pub fn usable(&self) -> std::result::Result<&Arc<dyn Location>, LocationProblem> {
        match &*self.unusable.read().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(&self.location),
            Some(reason) => Err(reason.clone()),
        }
    }

    pub fn problem(&self) -> Option<LocationProblem> {
        self.unusable.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_problem(&self, problem: Option<LocationProblem>) {
        if problem.is_none() {
            *self.instance.write().unwrap_or_else(|e| e.into_inner()) = self.location.instance().ok();
        }
        *self.unusable.write().unwrap_or_else(|e| e.into_inner()) = problem;
    }
}

/// A block store: objects cut into Reed-Solomon-coded, CRC32C-checked shards over locations.
///
/// A `Store` is a cheap handle (an `Arc` inside): clone it to share it between threads or keep
/// it in readers it hands out ([`Store::get`]'s reader owns a clone). Several processes may open
/// one store: writers of one key are serialized by a lock file, readers take no lock.
#[derive(Debug, Clone)]
pub struct Store(Arc<StoreState>);

impl Drop for Store {
    fn drop(&mut self) {
        // The last handle closing: what it logged is made durable in place and its segment
        // deleted (if this fails, or two clones drop at once, the next open replays it).
        if Arc::strong_count(&self.0) == 1 {
            let _ = self.checkpoint_small_log();
        }
    }
}

impl std::ops::Deref for Store {
    type Target = StoreState;

    fn deref(&self) -> &StoreState {
        &self.0
    }
}

/// What a [`Store`] handle shares: the opened store.
#[derive(Debug)]
#[doc(hidden)]
pub struct StoreState {
    pub(crate) root: PathBuf,
    pub(crate) file: StoreFile,
    pub(crate) slots: Vec<Slot>,
    pub(crate) codec: Codec,
    retry: RetryPolicy,
    durability: Durability,
    /// What was wrong with the store file when the store opened from its copies.
    store_file_problem: RwLock<Option<StoreFileProblem>>,
    pub(crate) locks: ObjectLocks,
    poisoned: AtomicBool,
    /// The packs' tables, as far as they are loaded (see the `packs` module).
    packs: std::sync::Mutex<packs::PackIndex>,
    /// Small objects being put by several threads at once, sharing packs.
    group_commit: group_commit::GroupCommit,
    /// Whether other handles changed the set of packs since the index was listed.
    pack_changes: pack_changes::PackChanges,
    /// The log grouped small writes are made durable by.
    small_log: small_log::SmallLog,
    /// The threads that append its records, one per location.
    log_appenders: log_appenders::LogAppenders,
    /// The writer's lease on the remote locations (none without remote locations).
    lease: crate::lease::Lease,
}

/// The objects of a store, streamed by [`Store::list_prefix`].
pub struct ListIter {
    store: Store,
    prefix: String,
    /// Buckets still to list, in order.
    buckets: std::collections::VecDeque<u8>,
    /// The current bucket's objects still to look at.
    objects: std::collections::VecDeque<ObjectId>,
    /// Packed keys (newest entries, deletes included) by bucket, as the index was when the
    /// listing began; the current bucket's are taken out as its objects are listed.
    packed: std::collections::BTreeMap<u8, Vec<packs::Packed>>,
    bucket_packed: std::collections::HashMap<String, packs::Packed>,
}

impl Iterator for ListIter {
    type Item = ListEntry;

    fn next(&mut self) -> Option<ListEntry> {
        loop {
            while let Some(object) = self.objects.pop_front() {
                let Some(entry) = self.store.list_entry(object, &self.prefix) else {
                    continue;
                };
                if entry.key.starts_with(crate::format::PACK_KEY_PREFIX) {
                    continue;
                }
                // A newer packed write (or delete) of the key outvotes its shard files.
                match self.bucket_packed.remove(&entry.key) {
                    Some(p) if p.entry.stamp.version > entry.version => {
                        if let Some(entry) = packs::list_entry(p) {
                            return Some(entry);
                        }
                    }
                    _ => return Some(entry),
                }
            }
            // The bucket's packed keys without shard files of their own.
            if let Some(key) = self.bucket_packed.keys().next().cloned() {
                if let Some(entry) = self.bucket_packed.remove(&key).and_then(packs::list_entry) {
                    return Some(entry);
                }
                continue;
            }
            let bucket = self.buckets.pop_front()?;
            self.objects = self.store.bucket_objects(bucket).into_iter().collect();
            self.bucket_packed = self
                .packed
                .remove(&bucket)
                .unwrap_or_default()
                .into_iter()
                .map(|p| (p.entry.key.clone(), p))
                .collect();
        }
    }
}

/// The health of one shard of an object, as its header says (`stat` reads no chunks).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardHealth {
    /// Shard index (`0..k` data, `k..k+m` parity).
    pub shard: usize,
    /// The location slot holding it.
    pub slot: usize,
    /// The location's directory.
    pub location: PathBuf,
    /// What was found.
    pub state: ShardState,
}

/// What a location holds of an object's current version.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardState {
    /// The current version, with a verified header and full length.
    Healthy,
    /// No shard file of the object.
    Missing,
    /// Only an older version (a lost or interrupted write).
    Stale {
        /// The newest version this location holds.
        version: u64,
    },
    /// The current version's file, but its header fails verification (chunks still used).
    HeaderDamaged {
        /// Why the header was rejected.
        problem: HeaderProblem,
    },
    /// The current version's file, shorter than its header says.
    Truncated {
        /// Actual length.
        len: u64,
        /// Length the header implies.
        expected: u64,
    },
    /// A file of the current version that belongs to another shard or key.
    Misplaced,
    /// The location itself is unusable (missing, foreign, unreadable).
    Unavailable {
        /// Why.
        problem: LocationProblem,
    },
}

/// What `stat` reports of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectStat {
    /// The object's key.
    pub key: String,
    /// Length in bytes.
    pub len: u64,
    /// The current version.
    pub version: u64,
    /// Number of stripes.
    pub stripes: u64,
    /// Per shard health.
    pub shards: Vec<ShardHealth>,
    /// For a small object stored in a pack, the pack's id (32 hex digits): `stripes` and
    /// `shards` are the pack's.
    pub pack: Option<String>,
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListEntry {
    /// The object's key.
    pub key: String,
    /// Length in bytes of the current version.
    pub len: u64,
    /// The current version.
    pub version: u64,
}

impl Store {
    /// Creates a store at `root` with the default geometry (4 + 2, 1 MiB chunks, locations
    /// `loc-00` … under the root) and opens it; [`Store::builder`] sets the rest.
    ///
    /// # Errors
    /// As [`StoreBuilder::create`].
    pub fn create(root: impl AsRef<Path>) -> Result<Store> {
        StoreBuilder::default().create(root)
    }

    /// Opens the store at `root` with default options.
    ///
    /// # Errors
    /// As [`StoreBuilder::open`].
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        StoreBuilder::default().open(root)
    }

    /// A builder for creating or opening a store with other settings.
    pub fn builder() -> StoreBuilder {
        StoreBuilder::default()
    }

    /// The store's erasure-coding parameters.
    pub fn geometry(&self) -> Geometry {
        self.file.geometry
    }

    /// The location directories, by slot.
    pub fn locations(&self) -> Vec<PathBuf> {
        self.slots.iter().map(|s| s.dir.clone()).collect()
    }

    /// What was wrong with the store file, if the store opened from the copies every
    /// location keeps (`scrub --repair` rewrites it); `None` when it was fine.
    pub fn store_file_problem(&self) -> Option<StoreFileProblem> {
        self.store_file_problem
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes the store file and every usable location's copy match the store's own record
    /// (with `repair`; else only looks): what was wrong, and whether it was fixed.
    pub(crate) fn check_store_file(&self, repair: bool) -> Vec<(String, bool)> {
        let bytes = self.file.encode();
        let mut found = Vec::new();
        if let Some(problem) = self.store_file_problem() {
            let path = self.root.join(STORE_FILE);
            // A directory in its place would refuse the rename: moved aside, not deleted.
            if repair && fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                let _ = crate::own_files::move_aside(&path);
            }
            let fixed = repair
                && write_atomically(&self.root, STORE_FILE, &bytes, self.durability)
                    .inspect_err(|e| self.note_write_error(e))
                    .is_ok();
            if fixed {
                *self.store_file_problem.write().unwrap_or_else(|e| e.into_inner()) = None;
            }
            found.push((format!("store file: {problem}"), fixed));
        }
        for (slot, s) in self.slots.iter().enumerate() {
            let Ok(location) = s.usable() else { continue };
            if location.read_store_copy().is_ok_and(|copy| copy == bytes) {
                continue;
            }
            let fixed = repair
                && self.writable(slot).is_some_and(|l| {
                    l.write_store_copy(&bytes)
                        .inspect_err(|e| self.note_write_error(e))
                        .is_ok()
                });
            found.push((
                format!("location {slot}: its copy of the store file is missing or stale"),
                fixed,
            ));
        }
        found
    }

    /// Why each unusable location cannot be used, by slot (`None` for usable ones).
    pub fn location_problems(&self) -> Vec<Option<LocationProblem>> {
        self.slots.iter().map(Slot::problem).collect()
    }

    /// Shard files a put or delete must make durable before it succeeds: the larger of
    /// `k + 1` (one failure more can be survived right away; `k` when `m = 0`) and a majority of
    /// the `k + m` locations.
    ///
    /// A majority makes any two write quorums intersect, so a writer always sees some shard of
    /// every acknowledged write when it picks the next version number, and a reader that can
    /// list more than `k + m - write_quorum` locations always sees the newest acknowledged
    /// write (FORMAT.md, "Versions and quorums").
    pub fn write_quorum(&self) -> usize {
        let g = self.file.geometry;
        let n = g.shards();
        (usize::from(g.k) + usize::from(g.m.min(1))).max(n / 2 + 1)
    }

    /// Locations a reader (or a writer choosing a version) must be able to list to be sure it
    /// sees the newest acknowledged write: `k + m - write_quorum + 1`.
    pub fn read_quorum(&self) -> usize {
        self.slots.len() - self.write_quorum() + 1
    }

    /// The path of the shard file holding `shard` of `key`'s current version, for tools and tests
    /// that need to point at one file.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such object, [`Error::Unrecoverable`],
    /// [`Error::NoQuorum`] or [`Error::ObjectChecksum`] when its bytes cannot be given back exactly
    /// (never wrong bytes), [`Error::TooFewLocations`] when too few locations can be listed to be
    /// sure of the newest version, [`Error::InvalidKey`].
    pub fn shard_path(&self, key: &str, shard: usize) -> Result<PathBuf> {
        key::validate(key)?;
        // A packed object's bytes are in its pack's shard files.
        let resolved = match self.locate(key, false)? {
            packs::Located::Own(resolved) | packs::Located::Packed { pack: resolved, .. } => resolved,
        };
        let object = resolved.header.object_id();
        let slot = crate::placement::slot_of_shard(object, shard, self.slots.len());
        Ok(self.slots[slot]
            .location
            .shard_path(object, resolved.header.stamp))
    }

    /// Size, version and per-shard health of `key`, from the shard headers (no chunks are read).
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such object, [`Error::Unrecoverable`],
    /// [`Error::NoQuorum`] or [`Error::ObjectChecksum`] when its bytes cannot be given back exactly
    /// (never wrong bytes), [`Error::TooFewLocations`] when too few locations can be listed to be
    /// sure of the newest version, [`Error::InvalidKey`].
    pub fn stat(&self, key: &str) -> Result<ObjectStat> {
        key::validate(key)?;
        Ok(match self.locate(key, false)? {
            packs::Located::Own(resolved) => {
                let h = &resolved.header;
                ObjectStat {
                    key: key.to_owned(),
                    len: h.object_len,
                    version: h.stamp.version,
                    stripes: h.geometry.stripe_count(h.object_len),
                    shards: resolved.health,
                    pack: None,
                }
            }
            // The shards are the pack's, which holds the object's bytes.
            packs::Located::Packed { pack, entry } => ObjectStat {
                key: key.to_owned(),
                len: entry.len,
                version: entry.stamp.version,
                stripes: pack.header.geometry.stripe_count(pack.header.object_len),
                pack: Some(pack.header.object_id().to_hex()),
                shards: pack.health,
            },
        })
    }

    /// Every readable object, sorted by key. Objects without a readable version are left out
    /// (`stat` or a scrub names them). Fails with [`Error::TooFewLocations`] when too few
    /// locations can be listed to know every object's newest version.
    ///
    /// Cost: the headers of every object on every location are read, and the whole listing
    /// is held (to sort it); [`Store::list_prefix`] streams instead.
    ///
    /// # Errors
    /// [`Error::TooFewLocations`] as said.
    pub fn list(&self) -> Result<Vec<ListEntry>> {
        let mut out: Vec<ListEntry> = self.list_prefix("")?.collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The readable objects whose key starts with `prefix`, streamed in object-id order (keys
    /// are hashed into ids, so not in key order), one bucket (a 256th of the objects) in
    /// memory at a time. Fails at once with [`Error::TooFewLocations`] when too few locations
    /// can be listed to know every object's newest version.
    ///
    /// Cost: the shard headers of each object at every location are read, whatever the prefix
    /// (a key is known only from its headers): about `k + m` small reads per object.
    ///
    /// # Errors
    /// [`Error::TooFewLocations`] as said; the iterator itself does not fail (an object unreadable
    /// meanwhile is left out).
    pub fn list_prefix(&self, prefix: &str) -> Result<ListIter> {
        let usable = self.slots.iter().filter(|s| s.usable().is_ok()).count();
        if usable < self.read_quorum() {
            return Err(Error::TooFewLocations {
                key: None,
                usable,
                total: self.slots.len(),
            });
        }
        let mut packed: std::collections::BTreeMap<u8, Vec<packs::Packed>> = Default::default();
        for p in self.pack_index()?.with_prefix(prefix) {
            packed
                .entry(ObjectId::of_key(&p.entry.key).0[0])
                .or_default()
                .push(p);
        }
        let mut buckets = self.occupied_buckets();
        buckets.extend(packed.keys());
        Ok(ListIter {
            store: self.clone(),
            prefix: prefix.to_owned(),
            buckets: buckets.into_iter().collect(),
            objects: std::collections::VecDeque::new(),
            packed,
            bucket_packed: Default::default(),
        })
    }

    /// The current version of `object`, if readable, as a listing entry.
    fn list_entry(&self, object: ObjectId, prefix: &str) -> Option<ListEntry> {
        let gathered = self.gather(object, true);
        let key = Store::key_of(&gathered).filter(|k| k.starts_with(prefix))?;
        // A look that raced a writer is taken again (with the reader's retries) before an
        // object is left out.
        let resolved = match self.decide(&key, gathered, false) {
            Err(_) => self.resolve(&key),
            decided => decided,
        }
        .ok()?;
        Some(ListEntry {
            key,
            len: resolved.header.object_len,
            version: resolved.header.stamp.version,
        })
    }

    /// The buckets with a directory at some usable location, in order. A location that cannot
    /// be listed makes every bucket count, so nothing is passed over.
    pub(crate) fn occupied_buckets(&self) -> std::collections::BTreeSet<u8> {
        let mut buckets = std::collections::BTreeSet::new();
        for slot in &self.slots {
            if let Ok(location) = slot.usable() {
                match location.list_buckets() {
                    Ok(found) => buckets.extend(found),
                    Err(_) => return (0..=u8::MAX).collect(),
                }
            }
        }
        buckets
    }

    /// The objects of one bucket (ids starting with the byte `bucket`) with a directory at some
    /// usable location, in id order. A location that cannot be listed is passed over: every
    /// object has a shard on every location, so the others name it too.
    pub(crate) fn bucket_objects(&self, bucket: u8) -> std::collections::BTreeSet<ObjectId> {
        let mut objects = std::collections::BTreeSet::new();
        for slot in &self.slots {
            if let Ok(location) = slot.usable() {
                objects.extend(location.list_bucket(bucket).unwrap_or_default());
            }
        }
        objects
    }

    /// Every write of `object` at each usable slot.
    fn stamps(&self, object: ObjectId) -> Vec<Option<Vec<WriteStamp>>> {
        self.slots
            .iter()
            .map(|slot| slot.usable().ok()?.list_shards(object).ok())
            .collect()
    }

    /// The slot's location, if it may be written: still usable, still on what it lived on when
    /// found usable, and still holding this store's identity for this slot. A location that
    /// changed (a disk unmounted, leaving the empty mount point; a disk swapped) is marked
    /// unusable, so nothing is written through to the parent filesystem.
    pub(crate) fn writable(&self, slot: usize) -> Option<&Arc<dyn Location>> {
        let s = &self.slots[slot];
        let location = s.usable().ok()?;
        let recorded = *s.instance.read().unwrap_or_else(|e| e.into_inner());
        let problem = match (recorded, location.instance()) {
            (_, Err(e)) => Some(LocationProblem::Vanished {
                detail: e.to_string(),
            }),
            (Some(then), Ok(now)) if then != now => Some(LocationProblem::Remounted),
            _ => check_identity(&**location, &self.file, slot)
                .map(|now| LocationProblem::ChangedInUse { now: Box::new(now) }),
        };
        match problem {
            None => Some(location),
            Some(problem) => {
                s.set_problem(Some(problem));
                None
            }
        }
    }

    /// Sees a location's write error: a failed fsync (of a file, a directory, a patch or the
    /// whole filesystem) poisons the store, since the kernel may have dropped the dirty pages
    /// and a retry could report success for data that is gone.
    pub(crate) fn note_write_error(&self, e: &io::Error) {
        if crate::location::FsyncFailed::is(e) {
            self.poisoned.store(true, Ordering::Release);
        }
    }

    /// How long a round reading `shards` of `object` waits before it reads spares too.
    pub(crate) fn hedge_threshold(&self, object: ObjectId, shards: &[usize]) -> std::time::Duration {
        let n = self.slots.len();
        hedge::threshold(shards.iter().map(|&s| {
            let location = &self.slots[crate::placement::slot_of_shard(object, s, n)].location;
            location.network().and_then(|c| c.median_read_latency)
        }))
    }

    /// Ok if this handle may write: not poisoned by a failed fsync, and holding the writer's
    /// lease if the store has remote locations (taken now if need be).
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        self.lease.check()
    }

    fn create_files(root: &Path, config: &StoreBuilder) -> Result<()> {
        let durability = config.durability;
        let geometry = Geometry {
            k: config.data_shards,
            m: config.parity_shards,
            chunk_size: config.chunk_size,
        };
        geometry.validate().map_err(|reason| {
            Error::invalid_config(ConfigProblem::Geometry {
                k: config.data_shards,
                m: config.parity_shards,
                chunk_size: config.chunk_size,
                reason,
            })
        })?;
        let pack_threshold = config.chosen_pack_threshold();
        let fits = (pack_threshold as usize + PACK_TABLE_ROOM) <= config.chunk_size as usize;
        if pack_threshold > 0 && (pack_threshold > MAX_PACK_THRESHOLD || !fits) {
            return Err(Error::invalid_config(ConfigProblem::PackThreshold {
                threshold: pack_threshold,
                chunk_size: config.chunk_size,
            }));
        }
        // A location string that is not one is named before anything is created, and before any
        // count of them.
        for dir in config.locations.iter().flatten() {
            LocationSpec::parse(dir).map_err(|e| Error::invalid_config(e.into()))?;
        }
        if root.exists() && !root.is_dir() {
            return Err(Error::invalid_config(ConfigProblem::RootNotADirectory(
                root.to_path_buf(),
            )));
        }
        fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let store_path = root.join(STORE_FILE);
        if store_path.exists() {
            return Err(Error::AlreadyExists { path: store_path });
        }
        let n = geometry.shards();
        let dirs: Vec<PathBuf> = match &config.locations {
            None => (0..n).map(|i| PathBuf::from(format!("loc-{i:02}"))).collect(),
            Some(dirs) if dirs.len() == n => dirs.clone(),
            Some(dirs) => {
                return Err(Error::invalid_config(ConfigProblem::LocationCount {
                    given: dirs.len(),
                    needed: n,
                }))
            }
        };
        let specs = dirs
            .iter()
            .map(|dir| LocationSpec::parse(dir).map_err(|e| Error::invalid_config(e.into())))
            .collect::<Result<Vec<_>>>()?;
        let remote = specs.iter().any(LocationSpec::is_remote);
        // The builder's credentials join the file's (one write), which the locations sign with.
        let given = &config.location_credentials;
        let credentials = match (given.is_empty(), remote) {
            (false, _) => {
                let given = given.iter().map(|(l, c)| (l.as_str(), Some(c.clone())));
                crate::credentials::update(root, given)?.1
            }
            (true, true) => crate::credentials::load(root)?,
            (true, false) => Default::default(),
        };
        // Check every location before writing any identity, so a refused create claims nothing.
        let mut planned: Vec<(PathBuf, Arc<dyn Location>, PathBuf)> = Vec::with_capacity(n);
        for (dir, spec) in dirs.iter().zip(&specs) {
            let LocationSpec::S3(s3) = spec else {
                let full = root.join(dir);
                fs::create_dir_all(&full).map_err(|e| Error::io(&full, e))?;
                let location = LocalDir::new(&full, durability);
                if location.read_identity().is_ok() {
                    return Err(Error::invalid_config(ConfigProblem::LocationTaken(full)));
                }
                // Absolute paths for locations outside the root, so the store opens from
                // anywhere; relative ones for the default layout, so the whole store can be
                // moved.
                let stored = if dir.is_absolute() {
                    fs::canonicalize(&full).map_err(|e| Error::io(&full, e))?
                } else {
                    dir.clone()
                };
                planned.push((full, Arc::new(location), stored));
                continue;
            };
            let name = PathBuf::from(s3.to_string());
            let refused = |detail: String| {
                Error::invalid_config(ConfigProblem::RemoteLocation {
                    location: s3.to_string(),
                    detail,
                })
            };
            let own = credentials.get(&s3.to_string());
            let location = crate::location_spec::remote_location(s3, own).map_err(refused)?;
            // A missing bucket (or an endpoint that does not answer) is refused here, not
            // found at the first put.
            location
                .list_buckets()
                .map_err(|e| refused(format!("cannot be listed: {e}")))?;
            if location.read_identity().is_ok() {
                return Err(Error::invalid_config(ConfigProblem::LocationTaken(name)));
            }
            if let Some((other, _, _)) = planned.iter().find(|(other, _, _)| *other == name) {
                return Err(Error::invalid_config(ConfigProblem::LocationsSame(
                    name.clone(),
                    other.clone(),
                )));
            }
            // One prefix inside another of the same bucket: a listing of the outer one would
            // wander into the inner one's objects.
            if let Some(other) = specs.iter().find_map(|other| match other {
                LocationSpec::S3(other) if other != s3 && s3.is_nested_with(other) => Some(other),
                _ => None,
            }) {
                return Err(Error::invalid_config(ConfigProblem::LocationsNested(
                    name.clone(),
                    PathBuf::from(other.to_string()),
                )));
            }
            planned.push((name.clone(), location, name));
        }
        let local = planned.iter().zip(&specs).filter(|(_, spec)| !spec.is_remote());
        check_locations_apart(root, local.map(|((full, _, _), _)| full.as_path()))?;
        let store_id: [u8; 16] = crate::ids::random_bytes();
        let mut recorded = Vec::with_capacity(n);
        let mut written = Vec::with_capacity(n);
        for (slot, (full, location, stored)) in planned.into_iter().enumerate() {
            let identity = LocationIdentity {
                store_id,
                slot: slot as u16,
                location_count: n as u16,
            };
            location
                .write_identity(&identity.encode())
                .map_err(|e| Error::io(&full, e))?;
            use std::os::unix::ffi::OsStrExt;
            recorded.push(stored.as_os_str().as_bytes().to_vec());
            written.push((full, location));
        }
        if let Some(long) = recorded.iter().find(|p| p.len() > crate::format::MAX_PATH_LEN) {
            use std::os::unix::ffi::OsStrExt;
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(long));
            return Err(Error::invalid_config(ConfigProblem::LocationPathTooLong(path)));
        }
        let bytes = StoreFile {
            store_id,
            geometry,
            pack_threshold,
            locations: recorded,
            remote,
            tagged_log: true,
        }
        .encode();
        // Every location keeps a copy: the store file is no single point of failure.
        for (dir, location) in &written {
            location.write_store_copy(&bytes).map_err(|e| Error::io(dir, e))?;
        }
        write_atomically(root, STORE_FILE, &bytes, durability).map_err(|e| Error::io(&store_path, e))
    }

    fn open_with(root: &Path, options: StoreBuilder) -> Result<Store> {
        crate::codec::check_cpu()?;
        let store_path = root.join(STORE_FILE);
        let read = crate::own_files::read_bounded(&store_path, MAX_STORE_FILE_LEN)
            .map_err(|e| Error::io(&store_path, e))
            .and_then(|bytes| {
                StoreFile::decode(&bytes).map_err(|source| Error::Format {
                    path: store_path.clone(),
                    source,
                })
            });
        let (file, store_file_problem) = match read {
            Ok(file) => (file, None),
            // Lost or damaged: the copies in the locations say the same.
            Err(e) => match store_file_from_copies(root, &options.location_hints) {
                Some(file) => {
                    let path = store_path.clone();
                    let problem = match e {
                        Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                            StoreFileProblem::Missing { path }
                        }
                        Error::Format { source, .. } => StoreFileProblem::Damaged { path, reason: source },
                        other => StoreFileProblem::Unreadable {
                            path,
                            detail: match other {
                                Error::Io { source, .. } => source.to_string(),
                                other => other.to_string(),
                            },
                        },
                    };
                    (file, Some(problem))
                }
                None if matches!(&e, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound) => {
                    return Err(Error::NotAStore {
                        path: root.to_path_buf(),
                    })
                }
                None => return Err(e),
            },
        };
        // Only a store with remote locations has credentials to read.
        let credentials = match file.remote {
            true => crate::credentials::load(root)?,
            false => Default::default(),
        };
        let slots: Vec<Slot> = file
            .locations
            .iter()
            .enumerate()
            .map(|(slot, raw)| {
                let (dir, bare) = open_location(root, &file, raw, options.durability, &credentials)?;
                let location = match &options.wrapper {
                    Some(wrap) => wrap(slot, bare),
                    None => bare,
                };
                let unusable = check_identity(&*location, &file, slot);
                let instance = location.instance().ok().filter(|_| unusable.is_none());
                Ok(Slot {
                    dir,
                    location,
                    unusable: RwLock::new(unusable),
                    instance: RwLock::new(instance),
                })
            })
            .collect::<Result<_>>()?;
        let log_appenders = log_appenders::LogAppenders::new(slots.len());
        let remote = slots
            .iter()
            .map(|s| s.location.is_remote().then(|| Arc::clone(&s.location)))
            .collect();
        let lease = crate::lease::Lease::new(root, remote, options.lease_duration);
        let store = Store(Arc::new(StoreState {
            root: root.to_path_buf(),
            codec: Codec::new(usize::from(file.geometry.k), usize::from(file.geometry.m)),
            file,
            slots,
            retry: options.retry,
            durability: options.durability,
            store_file_problem: RwLock::new(store_file_problem),
            locks: ObjectLocks::new(root),
            poisoned: AtomicBool::new(false),
            packs: Default::default(),
            group_commit: Default::default(),
            pack_changes: pack_changes::PackChanges::new(root),
            small_log: small_log::SmallLog::new(root, options.log_idle),
            log_appenders,
            lease,
        }));
        store.replay_small_logs_if_free();
        Ok(store)
    }
}

/// The location the store file's entry `raw` names, and its path for messages: a local
/// directory (relative to `root` unless absolute), or, in a store file that may name them, a
/// remote location.
fn open_location(
    root: &Path,
    file: &StoreFile,
    raw: &[u8],
    durability: Durability,
    credentials: &std::collections::BTreeMap<String, crate::credentials::Credentials>,
) -> Result<(PathBuf, Arc<dyn Location>)> {
    use std::os::unix::ffi::OsStrExt;
    let given = Path::new(std::ffi::OsStr::from_bytes(raw));
    if file.remote {
        if let LocationSpec::S3(spec) =
            LocationSpec::parse(given).map_err(|e| Error::invalid_config(e.into()))?
        {
            let own = credentials.get(&spec.to_string());
            let location = crate::location_spec::remote_location(&spec, own).map_err(|detail| {
                Error::invalid_config(ConfigProblem::RemoteLocation {
                    location: spec.to_string(),
                    detail,
                })
            })?;
            return Ok((PathBuf::from(spec.to_string()), location));
        }
    }
    let dir = root.join(given);
    let location = Arc::new(LocalDir::new(&dir, durability));
    Ok((dir, location))
}

/// Refuses locations that are one directory twice (after resolving links), one inside another,
/// the store's root itself, or inside the store's own files: each would hold several shards of
/// every object, or be written through by another part of the store.
fn check_locations_apart<'a>(root: &Path, locations: impl Iterator<Item = &'a Path>) -> Result<()> {
    let canonical = |p: &Path| fs::canonicalize(p).map_err(|e| Error::io(p, e));
    let root = canonical(root)?;
    let own = [crate::lock::LOCKS_DIR, crate::scrub::HISTORY_DIR].map(|d| root.join(d));
    let mut seen: Vec<(PathBuf, &Path)> = Vec::new();
    for given in locations {
        let path = canonical(given)?;
        let refuse = |problem| Err(Error::invalid_config(problem));
        let given_path = given.to_path_buf();
        if path == root {
            return refuse(ConfigProblem::LocationIsRoot(given_path));
        }
        if own.iter().any(|d| path.starts_with(d)) {
            return refuse(ConfigProblem::LocationInOwnFiles(given_path));
        }
        for (other, other_given) in &seen {
            if *other == path {
                return refuse(ConfigProblem::LocationsSame(
                    given_path,
                    other_given.to_path_buf(),
                ));
            }
            if path.starts_with(other) || other.starts_with(&path) {
                return refuse(ConfigProblem::LocationsNested(
                    given_path,
                    other_given.to_path_buf(),
                ));
            }
        }
        seen.push((path, given));
    }
    Ok(())
}

/// The store file as the copies in the locations hold it: the version most of them agree on;
/// `None` when no copy is found. Looked for in the directories under `root` (the default
/// layout) and in `hints` (local directories or remote locations, the latter signed with the
/// store's credentials file if it can be read), then in every location a copy found lists, so
/// one hinted location leads to all of them.
fn store_file_from_copies(root: &Path, hints: &[PathBuf]) -> Option<StoreFile> {
    use std::os::unix::ffi::OsStrExt;
    let credentials = crate::credentials::load(root).unwrap_or_default();
    let mut to_visit: Vec<PathBuf> = hints.to_vec();
    if let Ok(entries) = fs::read_dir(root) {
        to_visit.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    // Compared as the filesystem (or the location string) names them, so no copy votes twice.
    let mut visited = std::collections::BTreeSet::new();
    let mut votes: Vec<(StoreFile, usize)> = Vec::new();
    while let Some(dir) = to_visit.pop() {
        let copy = match LocationSpec::parse(&dir) {
            Ok(LocationSpec::S3(spec)) => {
                if !visited.insert(PathBuf::from(spec.to_string())) {
                    continue;
                }
                crate::location_spec::remote_location(&spec, credentials.get(&spec.to_string()))
                    .ok()
                    .and_then(|location| location.read_store_copy().ok())
            }
            Ok(LocationSpec::Local(_)) => {
                let Ok(canonical) = fs::canonicalize(&dir) else {
                    continue;
                };
                if !visited.insert(canonical) {
                    continue;
                }
                LocalDir::new(&dir, Durability::PageCache).read_store_copy().ok()
            }
            Err(_) => continue,
        };
        let Some(file) = copy.and_then(|b| StoreFile::decode(&b).ok()) else {
            continue;
        };
        to_visit.extend(file.locations.iter().map(|raw| {
            let given = Path::new(std::ffi::OsStr::from_bytes(raw));
            match file.remote && LocationSpec::parse(given).is_ok_and(|s| s.is_remote()) {
                true => given.to_path_buf(),
                false => root.join(given),
            }
        }));
        match votes.iter_mut().find(|(f, _)| *f == file) {
            Some((_, n)) => *n += 1,
            None => votes.push((file, 1)),
        }
    }
    votes.into_iter().max_by_key(|(_, n)| *n).map(|(file, _)| file)
}

/// Checks that a location's identity file names this store and slot. A missing identity means a
/// wiped or replaced disk; a foreign one, a swapped disk.
pub(crate) fn check_identity(
    location: &dyn Location,
    file: &StoreFile,
    slot: usize,
) -> Option<LocationProblem> {
    let bytes = match location.read_identity() {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Some(match location.is_there() {
                true => LocationProblem::IdentityMissing,
                false => LocationProblem::DirectoryMissing,
            })
        }
        // A link, directory or FIFO in its place: damaged, so claimable like a missing one.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Some(LocationProblem::IdentityDamaged {
                detail: e.to_string(),
            })
        }
        Err(e) => {
            return Some(LocationProblem::IdentityUnreadable {
                detail: e.to_string(),
            })
        }
    };
    match LocationIdentity::decode(&bytes) {
        Err(e) => Some(LocationProblem::IdentityDamaged {
            detail: e.to_string(),
        }),
        Ok(id) if id.store_id != file.store_id => Some(LocationProblem::ForeignStore),
        Ok(id) if usize::from(id.slot) != slot => Some(LocationProblem::WrongSlot { holds: id.slot }),
        Ok(_) => None,
    }
}
