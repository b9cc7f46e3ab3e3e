//! Fault injection: a [`Location`] wrapper that, following a seeded [`FaultPlan`], flips bits,
//! fails reads and writes, delays, truncates or hides shard files.
//!
//! Enabled by the `fault-injection` feature; tests, benches and fuzz targets use it through
//! [`crate::StoreBuilder::location_wrapper`]. Every choice comes from the plan's seed, so a failing
//! run replays exactly.

pub mod power;
pub mod properties;
#[cfg(feature = "s3")]
pub mod s3;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::format::{ObjectId, WriteStamp};
use crate::location::{Location, ShardFile, ShardWriter};

/// Whether a read fault goes away when the read is repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// The first `times` reads of each position fail; later ones succeed (a flaky cable, a bit
    /// flipped in flight).
    Transient {
        /// Failing reads per position.
        times: u32,
    },
    /// Every read fails the same way (rot on the medium).
    Persistent,
}

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Flips one bit of the bytes read (the same bit every time for a persistent fault).
    FlipBit(Persistence),
    /// Fails the read with EIO.
    ReadError(Persistence),
    /// Sleeps before every read.
    Delay(Duration),
    /// The shard file appears cut to this many bytes.
    Truncate {
        /// Apparent length.
        len: u64,
    },
    /// The shard file appears missing.
    Hide,
    /// Writes fail with "no space left on device" once this many bytes went to a shard file.
    WriteError {
        /// Bytes accepted first.
        after_bytes: u64,
    },
    /// The location reads but refuses every change (creating, removing or patching a shard
    /// file, removing a temporary file, writing the identity), like a filesystem remounted
    /// read-only.
    ReadOnly,
    /// Every fsync fails: each operation that ends in one (committing a shard file, removing
    /// one, patching one, syncing the location, writing the identity) is done, then reports a
    /// failed fsync, as a disk that lost the written pages would.
    FsyncError,
    /// Shard files are stored with one bit flipped in every buffer written after the header,
    /// and the writes report success: a disk that stores what it was not given.
    CorruptWrites,
}

/// Where a fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The location slot.
    pub slot: usize,
    /// Only shard files of this object; `None` for all.
    pub object: Option<ObjectId>,
    /// Whether header reads (offset 0) are affected too, not just chunk reads.
    pub include_headers: bool,
    /// The fault.
    pub fault: Fault,
}

impl Rule {
    /// A rule for every chunk read at `slot`.
    pub fn at(slot: usize, fault: Fault) -> Self {
        Rule {
            slot,
            object: None,
            include_headers: false,
            fault,
        }
    }

    /// Restricts the rule to one key's shard files.
    pub fn for_key(mut self, key: &str) -> Self {
        self.object = Some(ObjectId::of_key(key));
        self
    }

    fn applies(&self, slot: usize, object: ObjectId) -> bool {
        self.slot == slot && self.object.is_none_or(|o| o == object)
    }
}

/// A seeded set of fault rules shared by the wrapped locations of one store.
#[derive(Debug)]
pub struct FaultPlan {
    seed: u64,
    state: Mutex<PlanState>,
    /// Bytes read from shard files through the wrapped locations.
    bytes_read: AtomicU64,
    /// Shard removals still allowed before every further one fails (`u64::MAX`: no limit).
    removals_left: AtomicU64,
}

#[derive(Debug)]
struct PlanState {
    rules: Vec<Rule>,
    rng: ChaCha8Rng,
    /// Reads of each (rule, object, write, offset) so far, for transient faults.
    seen: HashMap<(usize, ObjectId, WriteStamp, u64), u32>,
    injected: u64,
}

impl FaultPlan {
    /// An empty plan whose random choices derive from `seed`.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(FaultPlan {
            seed,
            state: Mutex::new(PlanState {
                rules: Vec::new(),
                rng: ChaCha8Rng::seed_from_u64(seed),
                seen: HashMap::new(),
                injected: 0,
            }),
            bytes_read: AtomicU64::new(0),
            removals_left: AtomicU64::new(u64::MAX),
        })
    }

    /// After `removals` more shard removals through any wrapped location, every further removal
    /// fails, as if the process died at that point of a cleanup; `None` lifts the limit.
    pub fn stop_removals_after(&self, removals: Option<u64>) {
        self.removals_left
            .store(removals.unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    fn take_removal(&self) -> io::Result<()> {
        let allowed =
            self.removals_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                    u64::MAX => Some(u64::MAX),
                    0 => None,
                    left => Some(left - 1),
                });
        match allowed {
            Ok(_) => Ok(()),
            Err(_) => Err(io::Error::other("simulated crash: no removals after this point")),
        }
    }

    /// `result`, unless the slot's fsyncs fail: then a failed fsync (after the operation).
    fn after_fsync(&self, slot: usize, result: io::Result<()>) -> io::Result<()> {
        result?;
        let state = self.lock();
        match state
            .rules
            .iter()
            .any(|r| r.slot == slot && r.fault == Fault::FsyncError)
        {
            true => Err(crate::location::FsyncFailed::wrap(io::Error::from_raw_os_error(
                5,
            ))),
            false => Ok(()),
        }
    }

    fn read_only(&self, slot: usize) -> io::Result<()> {
        let state = self.lock();
        match state
            .rules
            .iter()
            .any(|r| r.slot == slot && r.fault == Fault::ReadOnly)
        {
            true => Err(io::Error::from_raw_os_error(30)), // EROFS
            false => Ok(()),
        }
    }

    /// The seed, to print when a test fails.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Adds a rule.
    pub fn inject(&self, rule: Rule) {
        self.lock().rules.push(rule);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.rules.clear();
        state.seen.clear();
    }

    /// How many faults have struck so far.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// Bytes read from shard files through the wrapped locations so far: what an operation
    /// cost in reads.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// A wrapper for [`crate::StoreBuilder::location_wrapper`].
    pub fn wrapper(self: &Arc<Self>) -> impl Fn(usize, Arc<dyn Location>) -> Arc<dyn Location> + Send + Sync {
        let plan = Arc::clone(self);
        move |slot, inner| {
            Arc::new(FaultyLocation {
                slot,
                inner,
                plan: Arc::clone(&plan),
            })
        }
    }

    fn lock(&self) -> MutexGuard<'_, PlanState> {
        // A test thread that panicked mid-update leaves counters that are still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rules_for(&self, slot: usize, object: ObjectId) -> Vec<(usize, Rule)> {
        let state = self.lock();
        state
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.applies(slot, object))
            .map(|(i, r)| (i, *r))
            .collect()
    }

    /// Applies the read faults of `slot` to a read of `buf.len()` bytes at `offset`.
    fn on_read(
        &self,
        slot: usize,
        object: ObjectId,
        stamp: WriteStamp,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<()> {
        for (index, rule) in self.rules_for(slot, object) {
            if offset == 0 && !rule.include_headers {
                continue;
            }
            let persistence = match rule.fault {
                Fault::Delay(d) => {
                    std::thread::sleep(d);
                    continue;
                }
                Fault::FlipBit(p) | Fault::ReadError(p) => p,
                _ => continue,
            };
            let mut state = self.lock();
            let reads = state.seen.entry((index, object, stamp, offset)).or_insert(0);
            *reads += 1;
            let strikes = match persistence {
                Persistence::Persistent => true,
                Persistence::Transient { times } => *reads <= times,
            };
            if !strikes || buf.is_empty() {
                continue;
            }
            state.injected += 1;
            match rule.fault {
                Fault::ReadError(_) => return Err(io::Error::from_raw_os_error(5)),
                _ => {
                    let bit = match persistence {
                        // The same bit on every read: derived from the position, not the stream.
                        Persistence::Persistent => {
                            let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ offset ^ stamp.write_id);
                            rng.random_range(0..buf.len() * 8)
                        }
                        Persistence::Transient { .. } => state.rng.random_range(0..buf.len() * 8),
                    };
                    buf[bit / 8] ^= 1 << (bit % 8);
                }
            }
        }
        Ok(())
    }

    fn file_fault(&self, slot: usize, object: ObjectId) -> (bool, Option<u64>, Option<u64>) {
        let mut hidden = false;
        let mut truncate = None;
        let mut write_limit = None;
        for (_, rule) in self.rules_for(slot, object) {
            match rule.fault {
                Fault::Hide => hidden = true,
                Fault::Truncate { len } => truncate = Some(len),
                Fault::WriteError { after_bytes } => write_limit = Some(after_bytes),
                _ => {}
            }
        }
        (hidden, truncate, write_limit)
    }

    fn corrupts_writes(&self, slot: usize, object: ObjectId) -> bool {
        self.rules_for(slot, object)
            .iter()
            .any(|(_, rule)| rule.fault == Fault::CorruptWrites)
    }
}

#[derive(Debug)]
struct FaultyLocation {
    slot: usize,
    inner: Arc<dyn Location>,
    plan: Arc<FaultPlan>,
}

impl FaultyLocation {
    /// A shard file opened by `open`, with the plan's faults on its reads.
    fn faulty(
        &self,
        object: ObjectId,
        stamp: WriteStamp,
        open: impl FnOnce(&dyn Location) -> io::Result<Arc<dyn ShardFile>>,
    ) -> io::Result<Arc<dyn ShardFile>> {
        let (hidden, truncate, _) = self.plan.file_fault(self.slot, object);
        if hidden {
            return Err(io::ErrorKind::NotFound.into());
        }
        let inner = open(&*self.inner)?;
        let len = truncate.map_or(inner.len(), |t| t.min(inner.len()));
        Ok(Arc::new(FaultyShardFile {
            slot: self.slot,
            object,
            stamp,
            len,
            inner,
            plan: Arc::clone(&self.plan),
        }))
    }
}

impl Location for FaultyLocation {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn read_identity(&self) -> io::Result<Vec<u8>> {
        self.inner.read_identity()
    }
    fn write_identity(&self, bytes: &[u8]) -> io::Result<()> {
        self.plan.read_only(self.slot)?;
        self.plan.after_fsync(self.slot, self.inner.write_identity(bytes))
    }
    fn read_store_copy(&self) -> io::Result<Vec<u8>> {
        self.inner.read_store_copy()
    }
    fn write_store_copy(&self, bytes: &[u8]) -> io::Result<()> {
        self.plan.read_only(self.slot)?;
        self.plan
            .after_fsync(self.slot, self.inner.write_store_copy(bytes))
    }
    fn list_buckets(&self) -> io::Result<Vec<u8>> {
        self.inner.list_buckets()
    }
    fn list_bucket(&self, bucket: u8) -> io::Result<Vec<ObjectId>> {
        self.inner.list_bucket(bucket)
    }
    fn list_shards(&self, object: ObjectId) -> io::Result<Vec<WriteStamp>> {
        if self.plan.file_fault(self.slot, object).0 {
            return Ok(Vec::new());
        }
        self.inner.list_shards(object)
    }
    fn list_pending(&self, object: ObjectId) -> io::Result<Vec<WriteStamp>> {
        if self.plan.file_fault(self.slot, object).0 {
            return Ok(Vec::new());
        }
        self.inner.list_pending(object)
    }
    fn open_shard(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<Arc<dyn ShardFile>> {
        self.faulty(object, stamp, |inner| inner.open_shard(object, stamp))
    }
    fn open_pending(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<Arc<dyn ShardFile>> {
        self.faulty(object, stamp, |inner| inner.open_pending(object, stamp))
    }
    fn create_shard(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<Box<dyn ShardWriter>> {
        self.plan.read_only(self.slot)?;
        let inner = self.inner.create_shard(object, stamp)?;
        let limit = self.plan.file_fault(self.slot, object).2;
        Ok(Box::new(FaultyWriter {
            inner,
            written: 0,
            limit,
            corrupt: self.plan.corrupts_writes(self.slot, object),
            slot: self.slot,
            plan: Arc::clone(&self.plan),
        }))
    }
    fn remove_shard(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<()> {
        self.plan.read_only(self.slot)?;
        self.plan.take_removal()?;
        self.plan
            .after_fsync(self.slot, self.inner.remove_shard(object, stamp))
    }
    fn remove_pending(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<()> {
        self.plan.read_only(self.slot)?;
        self.plan.take_removal()?;
        self.plan
            .after_fsync(self.slot, self.inner.remove_pending(object, stamp))
    }
    fn promote(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<()> {
        self.plan.read_only(self.slot)?;
        self.plan
            .after_fsync(self.slot, self.inner.promote(object, stamp))
    }
    fn shard_path(&self, object: ObjectId, stamp: WriteStamp) -> PathBuf {
        self.inner.shard_path(object, stamp)
    }
    fn patch_shard(&self, object: ObjectId, stamp: WriteStamp, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.plan.read_only(self.slot)?;
        if self.plan.file_fault(self.slot, object).2.is_some() {
            return Err(io::ErrorKind::StorageFull.into());
        }
        self.plan
            .after_fsync(self.slot, self.inner.patch_shard(object, stamp, offset, bytes))
    }
    fn list_temp(&self) -> io::Result<Vec<String>> {
        self.inner.list_temp()
    }
    fn remove_temp(&self, name: &str) -> io::Result<()> {
        self.plan.read_only(self.slot)?;
        self.inner.remove_temp(name)
    }
    fn sync(&self) -> io::Result<()> {
        self.plan.after_fsync(self.slot, self.inner.sync())
    }
    fn instance(&self) -> io::Result<u64> {
        self.inner.instance()
    }
    fn is_there(&self) -> bool {
        self.inner.is_there()
    }
    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
    fn network(&self) -> Option<crate::location::NetworkCounts> {
        self.inner.network()
    }
    fn read_lease(&self) -> io::Result<Option<(Vec<u8>, String)>> {
        self.inner.read_lease()
    }
    fn write_lease(&self, bytes: &[u8], expected: Option<&str>) -> io::Result<String> {
        self.inner.write_lease(bytes, expected)
    }
    fn remove_lease(&self) -> io::Result<()> {
        self.inner.remove_lease()
    }
    fn create_log(&self, segment: u64, len: u64) -> io::Result<()> {
        self.plan.read_only(self.slot)?;
        self.plan
            .after_fsync(self.slot, self.inner.create_log(segment, len))
    }
    fn append_log(&self, segment: u64, offset: u64, bytes: &[u8], durable: bool) -> io::Result<()> {
        self.plan.read_only(self.slot)?;
        self.plan
            .after_fsync(self.slot, self.inner.append_log(segment, offset, bytes, durable))
    }
    fn log_disk(&self) -> Option<u64> {
        self.inner.log_disk()
    }
    fn write_back_log(&self, segment: u64, offset: u64, len: u64, wait: bool) -> io::Result<()> {
        self.plan.read_only(self.slot)?;
        self.plan
            .after_fsync(self.slot, self.inner.write_back_log(segment, offset, len, wait))
    }
    fn list_logs(&self) -> io::Result<Vec<u64>> {
        self.inner.list_logs()
    }
    fn read_log(&self, segment: u64) -> io::Result<Vec<u8>> {
        self.inner.read_log(segment)
    }
    fn kept_log_record(&self, segment: u64) -> io::Result<Option<(Vec<u8>, u64)>> {
        self.inner.kept_log_record(segment)
    }
    fn kept_log_writes(&self) -> Vec<(ObjectId, WriteStamp)> {
        self.inner.kept_log_writes()
    }
    fn remove_log(&self, segment: u64) -> io::Result<()> {
        self.plan.read_only(self.slot)?;
        self.inner.remove_log(segment)
    }
}

struct FaultyShardFile {
    slot: usize,
    object: ObjectId,
    stamp: WriteStamp,
    len: u64,
    inner: Arc<dyn ShardFile>,
    plan: Arc<FaultPlan>,
}

impl ShardFile for FaultyShardFile {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset + buf.len() as u64 > self.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.inner.read_exact_at(buf, offset)?;
        self.plan
            .bytes_read
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.plan.on_read(self.slot, self.object, self.stamp, offset, buf)
    }
}

struct FaultyWriter {
    inner: Box<dyn ShardWriter>,
    written: u64,
    limit: Option<u64>,
    corrupt: bool,
    slot: usize,
    plan: Arc<FaultPlan>,
}

impl ShardWriter for FaultyWriter {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.written += buf.len() as u64;
        if self.limit.is_some_and(|l| self.written > l) {
            return Err(io::ErrorKind::StorageFull.into());
        }
        match buf.split_last() {
            Some((last, rest)) if self.corrupt => {
                let mut stored = rest.to_vec();
                stored.push(last ^ 1);
                self.inner.write_all(&stored)
            }
            _ => self.inner.write_all(buf),
        }
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn commit(self: Box<Self>) -> io::Result<()> {
        self.plan.after_fsync(self.slot, self.inner.commit())
    }
    fn stage(self: Box<Self>) -> io::Result<()> {
        self.plan.after_fsync(self.slot, self.inner.stage())
    }
    fn commit_deferred(self: Box<Self>) -> io::Result<()> {
        self.inner.commit_deferred()
    }
}
