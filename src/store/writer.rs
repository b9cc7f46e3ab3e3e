//! put and delete: write every shard to a temporary file, fsync, rename; succeed once the write
//! quorum is durable, then retire the older writes.

use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::checksum::{ChunkId, ObjectChecksum};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::format::{Geometry, ObjectId, PackTable, ShardHeader, WriteStamp};
use crate::key;
use crate::location::{Durability, Location, ShardWriter};
use crate::placement;

use super::packs::Located;
use super::Store;

/// What a successful put wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutOutcome {
    /// The new version.
    pub version: u64,
    /// Bytes of object data stored.
    pub len: u64,
    /// Shard files made durable (`k + m` unless some locations failed).
    pub shards_written: usize,
}

/// When a put may happen, in the spirit of `object_store`'s `PutMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PutMode {
    /// Always (the default): replaces whatever version is current.
    #[default]
    Overwrite,
    /// Only if the key is absent (never written, or deleted).
    Create,
    /// Only if the key's current version is `version` (from [`PutOutcome::version`] or
    /// [`Store::stat`]): an update that loses no concurrent write.
    Update {
        /// The version the caller last saw.
        version: u64,
    },
}

/// The shard files of one write, by shard index; `None` where a location is unusable or failed.
type Writers = Vec<Option<Box<dyn ShardWriter>>>;

impl Store {
    /// Stores the bytes read from `data` under `key`, replacing any previous version.
    ///
    /// Streams: memory stays at two stripes (`2 (k + m) chunk_size`: one is read and encoded while
    /// the other is written) whatever the object's size.
    /// Returns once at least [`Store::write_quorum`] shards are durable; on failure the previous
    /// version remains the current one.
    ///
    /// Runs on the calling thread (and, for the final fsyncs, threads of its own), never on
    /// rayon's pool: it may be called from any thread pool without risk of deadlock.
    ///
    /// # Errors
    /// [`Error::WriteQuorum`] when fewer than [`Store::write_quorum`] shards could be made durable,
    /// [`Error::Input`] when `data` fails, [`Error::Poisoned`] after a failed fsync,
    /// [`Error::TooFewLocations`], [`Error::InvalidKey`]. On every error the previous version stays
    /// current.
    pub fn put(&self, key: &str, data: impl Read) -> Result<PutOutcome> {
        self.put_with(key, data, PutMode::Overwrite)
    }

    /// Stores `data` as `key` if `mode`'s condition holds when the put takes the object's lock
    /// (so of several racing `PutMode::Create` puts of one key, exactly one succeeds).
    ///
    /// # Errors
    /// [`Error::PreconditionFailed`] when the condition does not hold (nothing is written);
    /// otherwise as [`Store::put`].
    pub fn put_with(&self, key: &str, mut data: impl Read, mode: PutMode) -> Result<PutOutcome> {
        key::validate(key)?;
        self.check_writable()?;
        let object = ObjectId::of_key(key);
        // Held for the whole put: no rayon waits below (see the `lock` module).
        let _lock = self.locks.lock(object)?;
        if mode != PutMode::Overwrite {
            let current = match self.locate(key, true) {
                Ok(Located::Own(resolved)) => Some(resolved.header.stamp.version),
                Ok(Located::Packed { entry, .. }) => Some(entry.stamp.version),
                Err(Error::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            let expected = match mode {
                PutMode::Update { version } => Some(version),
                _ => None,
            };
            if current != expected {
                return Err(Error::PreconditionFailed {
                    key: key.to_owned(),
                    expected,
                    current,
                });
            }
        }
        if self.packs_enabled() {
            let (head, small) = self.read_small(&mut data)?;
            return match small {
                true => self.put_packed(key, object, head),
                false => self.write_object(key, object, head.as_slice().chain(data)),
            };
        }
        self.write_object(key, object, data)
    }

    /// Writes `data` as the next version of `object` in shard files of its own; the caller
    /// holds the object's lock.
    pub(crate) fn write_object(&self, key: &str, object: ObjectId, data: impl Read) -> Result<PutOutcome> {
        let stamp = self.next_stamp(key, object)?;
        self.write_object_with_footer(key, (object, stamp), data, &[])
    }

    /// [`Store::write_object`] as write `stamp`, each parity shard file ending with `footer`
    /// after its chunks (a pack's table, which ends each data chunk already: FORMAT.md,
    /// "Packs").
    pub(crate) fn write_object_with_footer(
        &self,
        key: &str,
        (object, stamp): (ObjectId, WriteStamp),
        mut data: impl Read,
        footer: &[u8],
    ) -> Result<PutOutcome> {
        let g = self.file.geometry;
        let mut header = self.data_header(key, stamp);
        let writers = self.start_writes(object, stamp, &header)?;
        let quorum = self.write_quorum();
        let mut object_len = 0u64;
        let mut object_crc = ObjectChecksum::default();
        let live = AtomicUsize::new(writers.iter().flatten().count());
        // Two stripes in turn: while the shard files take one, the next is read and encoded. The
        // files are written on a thread of this put's own (the caller holds the lock).
        let (mut writers, mut last_error) = std::thread::scope(|scope| -> Result<_> {
            let (to_files, stripes_in) = mpsc::sync_channel::<Stripe>(1);
            let (to_reuse, reusable) = mpsc::channel::<Stripe>();
            let live = &live;
            let files = scope.spawn(move || {
                let mut writers = writers;
                let mut last_error = None;
                for stripe in stripes_in {
                    stripe.append_to(&mut writers, &mut last_error);
                    live.store(writers.iter().flatten().count(), Ordering::Release);
                    // The put may have stopped early: nobody takes the buffer back.
                    let _ = to_reuse.send(stripe);
                }
                (writers, last_error)
            });
            // The second buffer only once a first stripe is in flight: one-stripe objects
            // (most objects) never allocate it.
            let mut allocated = 0;
            let mut read_error = None;
            for index in 0u64.. {
                let next = match allocated < 2 {
                    true => reusable.try_recv().ok(),
                    false => reusable.recv().ok(),
                };
                let Some(mut stripe) = next.or_else(|| {
                    allocated += 1;
                    (allocated <= 2).then(|| Stripe::new(g))
                }) else {
                    break; // the file thread is gone: its result says why
                };
                let filled = match stripe.fill(&mut data, index) {
                    Ok(filled) => filled,
                    Err(source) => {
                        read_error = Some(Error::Input { source });
                        break;
                    }
                };
                if filled == 0 {
                    break;
                }
                object_len += filled as u64;
                stripe.encode(&self.codec, object, stamp, &mut object_crc);
                let last = filled < stripe.capacity();
                if to_files.send(stripe).is_err() || live.load(Ordering::Acquire) < quorum || last {
                    break;
                }
            }
            drop(to_files);
            let (writers, last_error) = files
                .join()
                .map_err(|_| self.quorum_error(key, 0, Some(io::Error::other("a write thread panicked"))))?;
            match read_error {
                Some(e) => Err(e),
                None => Ok((writers, last_error)),
            }
        })?;
        if !footer.is_empty() {
            // Parity shards only: a data shard's chunk ends with the same bytes already.
            for writer in writers.iter_mut().skip(usize::from(g.k)) {
                if let Some(Err(e)) = writer.as_mut().map(|w| w.write_all(footer)) {
                    last_error = Some(e);
                    *writer = None;
                }
            }
        }
        self.check_quorum(key, &writers, &mut last_error)?;

        header.object_len = object_len;
        header.object_crc = object_crc.value();
        let committed = self.commit_writes(&mut writers, &header, &mut last_error);
        if committed.promoted.len() < quorum {
            self.roll_back(object, stamp, &committed.staged);
            return Err(self.quorum_error(key, committed.promoted.len(), last_error));
        }
        self.retire_older(object, stamp);
        Ok(PutOutcome {
            version: stamp.version,
            len: object_len,
            shards_written: committed.promoted.len(),
        })
    }

    /// The header of shard 0 of a write of `key`'s bytes (not a tombstone), before its length
    /// and checksum are known.
    fn data_header(&self, key: &str, stamp: WriteStamp) -> ShardHeader {
        ShardHeader {
            store_id: self.file.store_id,
            key: key.to_owned(),
            stamp,
            tombstone: false,
            geometry: self.file.geometry,
            shard_index: 0,
            object_len: 0,
            object_crc: 0,
        }
    }

    /// Writes a pack (`body`, one stripe; `footer` after each parity chunk) through the
    /// small-write log (the `small_log` module): its shard files' bytes as records of the
    /// handle's segment, no file of their own (the segment keeps `table` and `body` in memory
    /// for its fold). `None` when the log cannot take it: the caller
    /// writes it with [`Store::write_object_with_footer`]. The caller holds the pack's lock.
    pub(crate) fn write_pack_logged(
        &self,
        key: &str,
        (pack, stamp): (ObjectId, WriteStamp),
        (body, table): (&[u8], &PackTable),
        footer: &[u8],
    ) -> Result<Option<usize>> {
        let g = self.file.geometry;
        let k = usize::from(g.k);
        // A pack is one stripe of `k` equal chunks (FORMAT.md, "Packs").
        if body.is_empty() || body.len() % k != 0 || body.len() > k * g.chunk_size as usize {
            return Ok(None);
        }
        let len = body.len() / k;
        let mut chunks: Vec<Vec<u8>> = body.chunks(len).map(<[u8]>::to_vec).collect();
        chunks.resize(g.shards(), vec![0u8; len]);
        let mut refs: Vec<&mut [u8]> = chunks.iter_mut().map(Vec::as_mut_slice).collect();
        let mut object_crc = ObjectChecksum::default();
        let bound = encode_stripe(&self.codec, &mut refs, k, (pack, stamp, 0), &mut object_crc);
        let header = ShardHeader {
            object_len: body.len() as u64,
            object_crc: object_crc.value(),
            ..self.data_header(key, stamp)
        };
        let n = self.slots.len();
        let shards = chunks
            .iter()
            .zip(&bound)
            .enumerate()
            .map(|(shard, (chunk, crc))| {
                let mut header = header.clone();
                header.shard_index = shard as u8;
                let mut bytes = header.encode();
                bytes.extend_from_slice(chunk);
                bytes.extend_from_slice(&crc.to_le_bytes());
                if shard >= k {
                    bytes.extend_from_slice(footer);
                }
                (placement::slot_of_shard(pack, shard, n), bytes)
            })
            .collect();
        self.log_shards(key, (pack, stamp), shards, (body, table))
    }

    /// Deletes `key`: writes a tombstone version to every location, removes the older writes,
    /// then the tombstones once every location has dropped the object.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such object, [`Error::WriteQuorum`] when the tombstones
    /// could not be made durable on a write quorum (the object stays), [`Error::Poisoned`],
    /// [`Error::TooFewLocations`], [`Error::InvalidKey`].
    pub fn delete(&self, key: &str) -> Result<()> {
        key::validate(key)?;
        self.check_writable()?;
        let object = ObjectId::of_key(key);
        let _lock = self.locks.lock(object)?;
        // An unreadable object may still be deleted; only an absent one is "not found".
        if let Err(e @ Error::NotFound { .. }) = self.locate(key, true) {
            return Err(e);
        }
        if self.packs_enabled() {
            return self.delete_packed(key, object);
        }
        self.delete_own(key, object)
    }

    /// Deletes the shard files of `key` (whose id is `object`): a tombstone version on every
    /// location, then the older writes removed, then the tombstones once no location holds
    /// anything older. The caller holds the object's lock.
    pub(crate) fn delete_own(&self, key: &str, object: ObjectId) -> Result<()> {
        let stamp = self.next_stamp(key, object)?;
        let header = ShardHeader {
            store_id: self.file.store_id,
            key: key.to_owned(),
            stamp,
            tombstone: true,
            geometry: self.file.geometry,
            shard_index: 0,
            object_len: 0,
            object_crc: 0,
        };
        let mut writers = self.start_writes(object, stamp, &header)?;
        let mut last_error = None;
        let committed = self.commit_writes(&mut writers, &header, &mut last_error);
        if committed.promoted.len() < self.write_quorum() {
            self.roll_back(object, stamp, &committed.staged);
            return Err(self.quorum_error(key, committed.promoted.len(), last_error));
        }
        let all_clean = self.retire_older(object, stamp) && committed.promoted.len() == self.slots.len();
        if all_clean {
            // No location holds anything older, so the tombstones have nothing left to outvote.
            for slot in committed.promoted {
                if let Err(e) = self.slots[slot].location.remove_shard(object, stamp) {
                    self.note_write_error(&e);
                }
            }
        }
        Ok(())
    }

    /// A version above every write any usable location holds (finished or not). Needs at least
    /// [`Store::read_quorum`] locations listed: write quorums intersect, so those include a shard
    /// of every acknowledged write, and the new version is above all of them.
    /// In a packing store, above every packed write of the key too.
    pub(crate) fn next_stamp(&self, key: &str, object: ObjectId) -> Result<WriteStamp> {
        Ok(self.next_stamp_listed(key, object)?.stamp)
    }

    /// [`Store::next_stamp`], with what the listing found.
    pub(crate) fn next_stamp_listed(&self, key: &str, object: ObjectId) -> Result<NextStamp> {
        // Too few locations to list is a put's quorum error, whichever listing finds it first.
        let packed = match self.newest_packed_stamp(key) {
            Err(Error::TooFewLocations { usable, .. }) => {
                return Err(self.quorum_error(
                    key,
                    0,
                    Some(io::Error::other(format!(
                        "only {usable} locations could be listed, {} needed to know the newest version",
                        self.read_quorum()
                    ))),
                ))
            }
            packed => packed?,
        };
        self.next_stamp_above(key, object, packed)
    }

    /// [`Store::next_stamp`] given the key's newest packed write.
    pub(crate) fn next_stamp_above(
        &self,
        key: &str,
        object: ObjectId,
        packed: Option<WriteStamp>,
    ) -> Result<NextStamp> {
        let listed = self.stamps(object);
        let known = listed.iter().flatten().count();
        if known < self.read_quorum() {
            return Err(self.quorum_error(
                key,
                0,
                Some(io::Error::other(format!(
                    "only {known} locations could be listed, {} needed to know the newest version",
                    self.read_quorum()
                ))),
            ));
        }
        let older_files = known < self.slots.len() || listed.iter().flatten().any(|s| !s.is_empty());
        let newest = listed
            .into_iter()
            .flatten()
            .flatten()
            .chain(packed)
            .map(|s| s.version)
            .max();
        let stamp = WriteStamp {
            version: newest.unwrap_or(0) + 1,
            write_id: crate::ids::random_u64(),
        };
        Ok(NextStamp { stamp, older_files })
    }

    /// Opens a temporary shard file on every usable location and writes a placeholder header
    /// (rewritten with the object's length and checksum at commit).
    fn start_writes(&self, object: ObjectId, stamp: WriteStamp, header: &ShardHeader) -> Result<Writers> {
        let n = self.slots.len();
        let mut last_error = None;
        let mut header = header.clone();
        let writers: Writers = (0..n)
            .map(|shard| {
                let slot = placement::slot_of_shard(object, shard, n);
                let location = self.writable(slot)?;
                header.shard_index = shard as u8;
                let started = location
                    .create_shard(object, stamp)
                    .and_then(|mut w| w.write_all(&header.encode()).map(|()| w));
                started.map_err(|e| last_error = Some(e)).ok()
            })
            .collect();
        self.check_quorum(&header.key, &writers, &mut last_error)?;
        Ok(writers)
    }

    fn check_quorum(&self, key: &str, writers: &Writers, last_error: &mut Option<io::Error>) -> Result<()> {
        let live = writers.iter().flatten().count();
        if live < self.write_quorum() {
            return Err(self.quorum_error(key, live, last_error.take()));
        }
        Ok(())
    }

    fn quorum_error(&self, key: &str, written: usize, last_error: Option<io::Error>) -> Error {
        Error::WriteQuorum {
            key: key.to_owned(),
            written,
            needed: self.write_quorum(),
            source: last_error.unwrap_or_else(|| io::Error::other("too few usable locations")),
        }
    }

    /// Rewrites each header with its final fields and commits the shards in two steps
    /// (FORMAT.md, "Committing a write"): each is made durable and put in place as pending;
    /// once a write quorum is, each is promoted to committed. A crash before any promotion leaves
    /// only pending files, which readers ignore (the put never happened); after one, the write
    /// has a quorum of durable files, pending or committed, which readers accept. With fsync
    /// durability the locations work on threads of their own, so the fsyncs of different disks
    /// overlap (plain threads: the caller holds the object's lock).
    fn commit_writes(
        &self,
        writers: &mut Writers,
        header: &ShardHeader,
        last_error: &mut Option<io::Error>,
    ) -> Committed {
        let n = self.slots.len();
        let object = header.object_id();
        let stamp = header.stamp;
        // (slot, (shard, its writer))
        type Job = (usize, (usize, Box<dyn ShardWriter>));
        let pending: Vec<Job> = writers
            .iter_mut()
            .enumerate()
            .filter_map(|(shard, w)| Some((placement::slot_of_shard(object, shard, n), (shard, w.take()?))))
            .collect();
        let stage = |(shard, mut writer): (usize, Box<dyn ShardWriter>)| {
            let mut header = header.clone();
            header.shard_index = shard as u8;
            writer.write_all_at(&header.encode(), 0)?;
            writer.stage()
        };
        let staged = self.succeeded(self.on_each_location(pending, stage), last_error);
        if staged.len() < self.write_quorum() {
            return Committed {
                staged,
                promoted: Vec::new(),
            };
        }
        let promote = |slot: usize| self.slots[slot].location.promote(object, stamp);
        let jobs = staged.iter().map(|&slot| (slot, slot)).collect();
        let promoted = self.succeeded(self.on_each_location(jobs, promote), last_error);
        Committed { staged, promoted }
    }

    /// Runs `job` for each (slot, input): on a thread per location when fsyncs are made (they
    /// overlap), one after another otherwise.
    pub(crate) fn on_each_location<T: Send>(
        &self,
        jobs: Vec<(usize, T)>,
        job: impl Fn(T) -> io::Result<()> + Sync,
    ) -> Vec<(usize, io::Result<()>)> {
        let parallel = self.durability == Durability::Fsync && crate::disk::commits_in_parallel();
        if !parallel {
            return jobs.into_iter().map(|(slot, input)| (slot, job(input))).collect();
        }
        std::thread::scope(|scope| {
            let job = &job;
            let running: Vec<_> = jobs
                .into_iter()
                .map(|(slot, input)| (slot, scope.spawn(move || job(input))))
                .collect();
            running
                .into_iter()
                .map(|(slot, handle)| {
                    let result = handle
                        .join()
                        .unwrap_or_else(|_| Err(io::Error::other("a commit thread panicked")));
                    (slot, result)
                })
                .collect()
        })
    }

    /// The slots whose job succeeded; the errors are noted (a failed fsync poisons the store).
    pub(crate) fn succeeded(
        &self,
        results: Vec<(usize, io::Result<()>)>,
        last_error: &mut Option<io::Error>,
    ) -> Vec<usize> {
        let mut done = Vec::new();
        for (slot, result) in results {
            match result {
                Ok(()) => done.push(slot),
                Err(e) => {
                    self.note_write_error(&e);
                    *last_error = Some(e);
                }
            }
        }
        done
    }

    /// Removes a failed write's files so the previous version stays current: the committed
    /// ones first, so a crash part way leaves at worst pending files, which nothing reads.
    fn roll_back(&self, object: ObjectId, stamp: WriteStamp, staged: &[usize]) {
        for remove in [Location::remove_shard, Location::remove_pending] {
            for &slot in staged {
                // Best effort: a leftover is a minority version, outvoted and later cleaned by
                // scrub.
                if let Err(e) = remove(&*self.slots[slot].location, object, stamp) {
                    self.note_write_error(&e);
                }
            }
        }
    }

    /// Removes every older write of the object now that `stamp` is durable on a quorum.
    /// Returns whether every usable location was cleaned.
    pub(crate) fn retire_older(&self, object: ObjectId, stamp: WriteStamp) -> bool {
        let mut clean = true;
        for (slot, stamps) in self.slots.iter().zip(self.stamps(object)) {
            let Some(stamps) = stamps else {
                clean = false;
                continue;
            };
            for old in stamps.into_iter().filter(|s| *s < stamp) {
                let removed = slot.location.remove_shard(object, old);
                if let Err(e) = &removed {
                    self.note_write_error(e);
                }
                clean &= removed.is_ok();
            }
        }
        clean
    }
}

/// A write's stamp, and whether the key has shard files of its own that the write outvotes
/// (or may have: a location could not be listed). The caller holds the key's lock, so none
/// appear before the write commits.
pub(crate) struct NextStamp {
    pub stamp: WriteStamp,
    pub older_files: bool,
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(data: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match data.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// One stripe of a put: its data as read (one buffer, cut into `k` chunks), its parity chunks,
/// and every chunk's checksum bound to its identity.
struct Stripe {
    index: u64,
    k: usize,
    chunk_len: usize,
    data: Vec<u8>,
    parity: Vec<Vec<u8>>,
    bound_crcs: Vec<u32>,
}

impl Stripe {
    fn new(g: Geometry) -> Self {
        let chunk_size = g.chunk_size as usize;
        Stripe {
            index: 0,
            k: usize::from(g.k),
            chunk_len: chunk_size,
            data: vec![0u8; usize::from(g.k) * chunk_size],
            parity: vec![vec![0u8; chunk_size]; usize::from(g.m)],
            bound_crcs: Vec::new(),
        }
    }

    /// Object bytes a stripe holds.
    fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Reads the next stripe (`index`) of the object; returns the bytes read (0 at the end). A
    /// short last stripe is cut into `k` equal chunks, zero-padded.
    fn fill(&mut self, input: &mut impl Read, index: u64) -> io::Result<usize> {
        let filled = read_full(input, &mut self.data)?;
        let chunk_size = self.capacity() / self.k;
        self.index = index;
        self.chunk_len = match filled == self.capacity() {
            true => chunk_size,
            false => filled.div_ceil(self.k),
        };
        self.data[filled..self.k * self.chunk_len].fill(0);
        Ok(filled)
    }

    /// Computes the parity and every chunk's bound checksum, and feeds the data chunks' CRCs to
    /// the object checksum.
    fn encode(
        &mut self,
        codec: &Codec,
        object: ObjectId,
        stamp: WriteStamp,
        object_crc: &mut ObjectChecksum,
    ) {
        let len = self.chunk_len;
        let mut chunks: Vec<&mut [u8]> = self.data[..self.k * len].chunks_mut(len).collect();
        chunks.extend(self.parity.iter_mut().map(|p| &mut p[..len]));
        self.bound_crcs = encode_stripe(
            codec,
            &mut chunks,
            self.k,
            (object, stamp, self.index),
            object_crc,
        );
    }

    /// Shard `shard`'s chunk of this stripe.
    fn chunk(&self, shard: usize) -> &[u8] {
        let len = self.chunk_len;
        match shard < self.k {
            true => &self.data[shard * len..(shard + 1) * len],
            false => &self.parity[shard - self.k][..len],
        }
    }

    /// Appends each chunk, framed with its checksum, to its shard file; a file that fails is
    /// dropped (and its error kept).
    fn append_to(&self, writers: &mut Writers, last_error: &mut Option<io::Error>) {
        for (shard, writer) in writers.iter_mut().enumerate() {
            let Some(w) = writer else { continue };
            let written = w
                .write_all(self.chunk(shard))
                .and_then(|()| w.write_all(&self.bound_crcs[shard].to_le_bytes()));
            if let Err(e) = written {
                *writer = None;
                *last_error = Some(e);
            }
        }
    }
}

/// Encodes one stripe's parity in place (`chunks`: its `k` data chunks, then its parity
/// chunks) and returns each chunk's checksum bound to its identity (`write`: the object, the
/// write's stamp, the stripe's index); the data chunks' CRCs feed `object_crc`.
fn encode_stripe(
    codec: &Codec,
    chunks: &mut [&mut [u8]],
    k: usize,
    (object, stamp, stripe): (ObjectId, WriteStamp, u64),
    object_crc: &mut ObjectChecksum,
) -> Vec<u32> {
    codec.encode_on_this_thread(chunks);
    chunks
        .iter()
        .enumerate()
        .map(|(shard, chunk)| {
            let data_crc = crc32c::crc32c(chunk);
            if shard < k {
                object_crc.push(data_crc);
            }
            let id = ChunkId {
                object,
                stamp,
                shard: shard as u8,
                stripe,
            };
            id.bind(data_crc)
        })
        .collect()
}

/// The slots where a write's shard files were staged (durable as pending), and those where they
/// were then promoted (committed).
struct Committed {
    staged: Vec<usize>,
    promoted: Vec<usize>,
}
