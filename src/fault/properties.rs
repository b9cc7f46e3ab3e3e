//! The recovery claims as checkable properties, shared by the cargo-fuzz targets (`fuzz/`) and
//! the proptest suite (`tests/properties.rs`), so stable CI checks on every commit what the
//! fuzzers explore for hours.
//!
//! Each check takes a structured input (built with `arbitrary` from fuzzer bytes) and returns
//! `Err` with a description when the property fails.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use super::{Fault, FaultPlan, Persistence, Rule};
use crate::arq::{self, ChunkFault, Clock, RetryPolicy};
use crate::checksum::ChunkId;
use crate::codec::Codec;
use crate::error::Error;
use crate::format::{
    bucket_from_hex, log_record, LocationIdentity, ObjectId, PackTable, ScrubCheckpoint, ScrubHistory,
    ShardHeader, StoreFile, WriteStamp,
};
use crate::location::Durability;
use crate::placement;
use crate::scrub::ScrubOptions;
use crate::store::Store;

/// Every parser of the on-disk format either rejects `bytes` or accepts exactly what its encoder
/// produces (and never panics or allocates beyond the input).
///
/// # Errors
/// The broken property, in words (the fuzz target panics with it).
pub fn check_format_decode(bytes: &[u8]) -> Result<(), String> {
    if let Ok((header, len)) = ShardHeader::decode_prefix(bytes) {
        same("shard header", &header.encode(), &bytes[..len])?;
        check_chunk_framing(&header, &bytes[len..])?;
    }
    if let Ok(identity) = LocationIdentity::decode(bytes) {
        same("location identity", &identity.encode(), bytes)?;
    }
    if let Ok(store) = StoreFile::decode(bytes) {
        same("store file", &store.encode(), bytes)?;
    }
    if let Ok(checkpoint) = ScrubCheckpoint::decode(bytes) {
        same("scrub checkpoint", &checkpoint.encode(), bytes)?;
    }
    if let Ok(history) = ScrubHistory::decode(bytes) {
        same("scrub history", &history.encode(), bytes)?;
    }
    // The bytes as a data chunk of a pack, which ends with a copy of the pack's table (the
    // pack's length is the trailer's own word, the last before its CRC).
    if let Some(len) = bytes.len().checked_sub(12).map(|at| &bytes[at..at + 8]) {
        let pack_len = u64::from_le_bytes(len.try_into().unwrap_or_default());
        if let Ok(table) = PackTable::decode_at_end(bytes, pack_len) {
            let encoded = table.encode(pack_len);
            same("pack table", &encoded, &bytes[bytes.len() - encoded.len()..])?;
        }
    }
    check_log_decode(bytes)?;
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Some(stamp) = WriteStamp::from_file_name(text) {
            same("shard file name", stamp.file_name().as_bytes(), bytes)?;
        }
        if let Some(id) = ObjectId::from_hex(text) {
            same("object id", id.to_hex().as_bytes(), bytes)?;
        }
        if let Some(bucket) = bucket_from_hex(text) {
            same("bucket name", format!("{bucket:02x}").as_bytes(), bytes)?;
        }
    }
    Ok(())
}

/// The bytes as a small-write log segment (no panic, no overflow), and as a kept segment's
/// index record (its segment named by its last 8 bytes, as a valid one's are): an index that
/// verifies re-encodes to the same bytes.
fn check_log_decode(bytes: &[u8]) -> Result<(), String> {
    let segment = bytes
        .last_chunk::<8>()
        .map_or(0, |last| u64::from_le_bytes(*last));
    let tag = log_record::tag(segment);
    // Parsed for panics and overflows only: its records are slices of the bytes.
    let _ = log_record::parse(bytes, tag);
    // As in a segment as long as can be: entries past its end (or overflowing) are refused.
    if let Some(index) = log_record::kept_index(bytes, segment, tag, u64::MAX) {
        let entries: Vec<u8> = index
            .iter()
            .flat_map(|&(write, offset, len)| log_record::kept_entry(write, offset, len))
            .collect();
        let tail = log_record::kept_tail(segment, tag, &entries);
        same(
            "kept index",
            &tail[..tail.len() - log_record::KEPT_LEN_FIELD],
            bytes,
        )?;
    }
    Ok(())
}

/// The chunk framing a decoded header implies: stripes tile the object exactly, chunk offsets
/// are regular and inside the file length, and the rest of the input, read as chunk frames, is
/// verified (and almost surely rejected) without a panic or an overflow.
fn check_chunk_framing(header: &ShardHeader, body: &[u8]) -> Result<(), String> {
    let g = header.geometry;
    let len = header.object_len;
    let stripes = g.stripe_count(len);
    let body_len = g.shard_body_len(len);
    let mut covered = 0u64;
    // The first and last few stripes: enough to cover every shape, bounded for huge objects.
    for stripe in (0..stripes.min(4)).chain(stripes.saturating_sub(4).max(4)..stripes) {
        let shape = g.stripe(len, stripe);
        if shape.offset_in_shard + shape.chunk_len as u64 + 4 > body_len || shape.chunk_len == 0 {
            return Err(format!(
                "stripe {stripe} of {stripes} ({shape:?}) overruns the body ({body_len})"
            ));
        }
        covered += shape.data_len as u64;
        let start = shape.offset_in_shard as usize;
        if let Some(frame) = body.get(start..start + shape.chunk_len + 4) {
            let (chunk, crc) = frame.split_at(shape.chunk_len);
            let id = ChunkId {
                object: header.object_id(),
                stamp: header.stamp,
                shard: header.shard_index,
                stripe,
            };
            let _verified = id.checksum(chunk).to_le_bytes() == crc;
        }
    }
    if stripes <= 8 && covered != len {
        return Err(format!("{stripes} stripes cover {covered} of {len} bytes"));
    }
    Ok(())
}

fn same(what: &str, encoded: &[u8], input: &[u8]) -> Result<(), String> {
    if encoded == input {
        Ok(())
    } else {
        Err(format!(
            "{what} decoded from {input:02x?} re-encodes to {encoded:02x?}"
        ))
    }
}

/// One chunk's fate in [`CodecCase`].
#[derive(Debug, Clone, Arbitrary)]
pub enum ChunkDamage {
    /// The chunk is gone.
    Erase {
        /// Which chunk (modulo `k + m`).
        shard: u8,
    },
    /// One byte of the chunk is changed (its checksum then fails).
    Corrupt {
        /// Which chunk (modulo `k + m`).
        shard: u8,
        /// Which byte (modulo the chunk length).
        at: u16,
        /// XOR mask (made non-zero).
        mask: u8,
    },
}

/// Data, a geometry and damage for [`check_codec_recover`].
#[derive(Debug, Clone)]
pub struct CodecCase {
    /// Data shards, 1 + k % 16.
    pub k: u8,
    /// Parity shards, m % 9.
    pub m: u8,
    /// Chunk length, 1 + len % 2048.
    pub chunk_len: u16,
    /// The stripe's data (repeated or cut to fill it).
    pub data: Vec<u8>,
    /// What happens to the chunks.
    pub damage: Vec<ChunkDamage>,
}

/// Checksums find every corrupted chunk; with at most `m` bad chunks the exact stripe comes
/// back, with more an error: never wrong bytes.
///
/// # Errors
/// The broken property, in words (the fuzz target panics with it).
pub fn check_codec_recover(case: &CodecCase) -> Result<(), String> {
    let k = 1 + usize::from(case.k) % 16;
    let m = usize::from(case.m) % 9;
    let n = k + m;
    let len = 1 + usize::from(case.chunk_len) % 2048;
    let codec = Codec::new(k, m);
    let mut chunks: Vec<Vec<u8>> = (0..n)
        .map(|s| {
            (0..len)
                .map(|i| match case.data.len() {
                    0 => 0,
                    d => case.data[(s * len + i) % d],
                })
                .collect()
        })
        .collect();
    let mut slices: Vec<&mut [u8]> = chunks.iter_mut().map(|c| &mut c[..]).collect();
    codec.encode(&mut slices);
    let id = |shard: usize| ChunkId {
        object: ObjectId([7; 16]),
        stamp: WriteStamp {
            version: 1,
            write_id: 2,
        },
        shard: shard as u8,
        stripe: 0,
    };
    let checksums: Vec<u32> = chunks
        .iter()
        .enumerate()
        .map(|(s, c)| id(s).checksum(c))
        .collect();
    let original = chunks.clone();
    let mut erased = vec![false; n];
    for damage in &case.damage {
        match *damage {
            ChunkDamage::Erase { shard } => erased[usize::from(shard) % n] = true,
            ChunkDamage::Corrupt { shard, at, mask } => {
                chunks[usize::from(shard) % n][usize::from(at) % len] ^= mask | 1;
            }
        }
    }
    // Verification turns corruption into erasure, as the store does.
    let present: Vec<bool> = (0..n)
        .map(|s| !erased[s] && id(s).checksum(&chunks[s]) == checksums[s])
        .collect();
    let bad = present.iter().filter(|p| !**p).count();
    let mut pairs: Vec<(&mut [u8], bool)> = chunks
        .iter_mut()
        .zip(&present)
        .map(|(c, &p)| (&mut c[..], p))
        .collect();
    match codec.reconstruct(&mut pairs, false) {
        Ok(()) if bad <= m => {
            if chunks == original {
                Ok(())
            } else {
                Err(format!("k={k} m={m}: {bad} bad chunks rebuilt to wrong bytes"))
            }
        }
        Ok(()) => Err(format!(
            "k={k} m={m}: {bad} bad chunks > m, yet reconstruct claimed success"
        )),
        Err(e) if bad > m => e
            .available
            .eq(&(n - bad))
            .then_some(())
            .ok_or(format!("wrong count {e:?}")),
        Err(e) => Err(format!("k={k} m={m}: {bad} bad chunks <= m, yet {e}")),
    }
}

/// One try of a read in [`ArqCase`].
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum ReadStep {
    /// The read succeeds after this many milliseconds.
    Ok(u8),
    /// The bytes arrive corrupt (transient).
    Corrupt(u8),
    /// EIO (transient).
    Eio(u8),
    /// The file is gone (persistent).
    Missing(u8),
}

/// A retry policy and what each successive read does, for [`check_arq_retransmit`].
#[derive(Debug, Clone)]
pub struct ArqCase {
    /// Attempts, attempts % 10 (0 still makes one try).
    pub attempts: u8,
    /// First backoff, in milliseconds.
    pub initial_backoff_ms: u8,
    /// Backoff cap, in milliseconds.
    pub max_backoff_ms: u8,
    /// Deadline, in milliseconds.
    pub deadline_ms: u16,
    /// Successive reads; past the end, reads succeed at once.
    pub schedule: Vec<ReadStep>,
}

// The cases decode their lists element by element until the input runs out (arbitrary's own
// `Vec` decoding turns random input into lists of zero or one element), so every input byte
// drives the test.

/// Decodes elements until the input is exhausted.
fn all_of<'a, T: Arbitrary<'a>>(u: &mut Unstructured<'a>) -> arbitrary::Result<Vec<T>> {
    let mut out = Vec::new();
    while !u.is_empty() {
        out.push(T::arbitrary(u)?);
    }
    Ok(out)
}

impl<'a> Arbitrary<'a> for CodecCase {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let (k, m, chunk_len) = (u.arbitrary()?, u.arbitrary()?, u.arbitrary()?);
        let damage_count = u.int_in_range(0..=12)?;
        let damage = (0..damage_count)
            .map(|_| u.arbitrary())
            .collect::<arbitrary::Result<_>>()?;
        let data = u.bytes(u.len())?.to_vec();
        Ok(CodecCase {
            k,
            m,
            chunk_len,
            data,
            damage,
        })
    }
}

impl<'a> Arbitrary<'a> for ArqCase {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(ArqCase {
            attempts: u.arbitrary()?,
            initial_backoff_ms: u.arbitrary()?,
            max_backoff_ms: u.arbitrary()?,
            deadline_ms: u.arbitrary()?,
            schedule: all_of(u)?,
        })
    }
}

impl<'a> Arbitrary<'a> for StoreCase {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(StoreCase {
            k: u.arbitrary()?,
            m: u.arbitrary()?,
            chunk: u.arbitrary()?,
            ops: all_of(u)?,
        })
    }
}

struct SimulatedClock(std::cell::Cell<Duration>);

impl Clock for SimulatedClock {
    fn elapsed(&self) -> Duration {
        self.0.get()
    }
    fn sleep(&self, d: Duration) {
        self.0.set(self.0.get() + d)
    }
}

/// Transient faults within the attempt budget and the deadline are always cured; no retry starts
/// after the deadline; a persistent fault ends the retries at once, as an erasure.
///
/// # Errors
/// The broken property, in words (the fuzz target panics with it).
pub fn check_arq_retransmit(case: &ArqCase) -> Result<(), String> {
    let policy = RetryPolicy {
        attempts: u32::from(case.attempts % 10),
        initial_backoff: Duration::from_millis(case.initial_backoff_ms.into()),
        max_backoff: Duration::from_millis(case.max_backoff_ms.into()),
        deadline: Duration::from_millis(case.deadline_ms.into()),
    };
    let clock = SimulatedClock(std::cell::Cell::new(Duration::ZERO));
    let mut starts = Vec::new();
    let mut index = 0;
    let retried = arq::retry(&policy, &clock, || {
        starts.push(clock.elapsed());
        let step = case.schedule.get(index).copied().unwrap_or(ReadStep::Ok(0));
        index += 1;
        let (ms, result) = match step {
            ReadStep::Ok(ms) => (ms, Ok(())),
            ReadStep::Corrupt(ms) => (ms, Err(ChunkFault::Corrupt)),
            ReadStep::Eio(ms) => (ms, Err(ChunkFault::Io(std::io::Error::from_raw_os_error(5)))),
            ReadStep::Missing(ms) => (ms, Err(ChunkFault::Io(std::io::ErrorKind::NotFound.into()))),
        };
        clock.sleep(Duration::from_millis(ms.into()));
        result
    });
    let max_attempts = policy.attempts.max(1);
    if retried.attempts as usize != starts.len() || retried.attempts > max_attempts {
        return Err(format!(
            "{} attempts reported, {} made, {max_attempts} allowed",
            retried.attempts,
            starts.len()
        ));
    }
    if let Some(late) = starts.iter().skip(1).find(|s| **s >= policy.deadline) {
        return Err(format!(
            "a retry started at {late:?}, past the deadline {:?}",
            policy.deadline
        ));
    }
    let step = |i: usize| case.schedule.get(i).copied().unwrap_or(ReadStep::Ok(0));
    let made = starts.len();
    if let Some(i) = (0..made - 1).find(|&i| matches!(step(i), ReadStep::Ok(_) | ReadStep::Missing(_))) {
        return Err(format!("retried after read {i} ended it ({:?})", step(i)));
    }
    match (&retried.result, step(made - 1)) {
        (Ok(()), ReadStep::Ok(_))
        | (Err(_), ReadStep::Corrupt(_) | ReadStep::Eio(_) | ReadStep::Missing(_)) => {}
        (result, last) => return Err(format!("last read {last:?} but the result is {result:?}")),
    }
    // Cured whenever the first success comes within the attempts, and replaying the schedule's
    // durations and backoffs shows every retry starting before the deadline.
    if let Some(first_ok) = (0..)
        .take_while(|&i| i < max_attempts as usize)
        .find(|&i| !matches!(step(i), ReadStep::Corrupt(_) | ReadStep::Eio(_)))
    {
        if matches!(step(first_ok), ReadStep::Ok(_)) {
            let mut t = Duration::ZERO;
            let mut backoff = policy.initial_backoff;
            let mut in_time = true;
            for i in 0..first_ok {
                let ms = match step(i) {
                    ReadStep::Corrupt(ms) | ReadStep::Eio(ms) => ms,
                    _ => 0,
                };
                t += Duration::from_millis(ms.into()) + backoff.min(policy.max_backoff);
                in_time &= t < policy.deadline;
                backoff = backoff.saturating_mul(2);
            }
            if in_time && retried.result.is_err() {
                return Err(format!(
                    "a transient fault within budget was not cured: {retried:?}"
                ));
            }
        }
    }
    Ok(())
}

/// One step of [`StoreCase`]: an operation or a fault.
#[derive(Debug, Clone, Arbitrary)]
pub enum StoreOp {
    /// Put (or overwrite) a key with `len % 3000` seeded bytes.
    Put {
        /// Which key.
        key: u8,
        /// Length.
        len: u16,
        /// Content seed.
        seed: u8,
    },
    /// Get a key and compare with the model.
    Get {
        /// Which key.
        key: u8,
    },
    /// Delete a key.
    Delete {
        /// Which key.
        key: u8,
    },
    /// List and compare with the model.
    List,
    /// Scrub, verify only or with repair.
    Scrub {
        /// Repair.
        repair: bool,
        /// Deep.
        deep: bool,
    },
    /// Flip a byte of a shard file of the key's current version.
    FlipByte {
        /// Which key.
        key: u8,
        /// Which shard.
        shard: u8,
        /// Where (modulo the file length).
        at: u16,
    },
    /// Truncate a shard file.
    Truncate {
        /// Which key.
        key: u8,
        /// Which shard.
        shard: u8,
        /// New length (modulo the file length).
        len: u16,
    },
    /// Delete a shard file.
    DeleteShard {
        /// Which key.
        key: u8,
        /// Which shard.
        shard: u8,
    },
    /// Empty a whole location (a replaced disk) and reopen the store.
    WipeLocation {
        /// Which slot.
        slot: u8,
    },
    /// Replace a shard of the current version by the same shard of the previous one.
    PutBackStale {
        /// Which key.
        key: u8,
        /// Which shard.
        shard: u8,
    },
    /// From now on, every chunk read at this slot is corrupted once (cured by retransmission).
    TransientFaults {
        /// Which slot.
        slot: u8,
    },
    /// Reopen the store.
    Reopen,
}

/// A geometry and a sequence of operations and faults, for [`check_store_ops`].
#[derive(Debug, Clone)]
pub struct StoreCase {
    /// Data shards, 1 + k % 4.
    pub k: u8,
    /// Parity shards, m % 3.
    pub m: u8,
    /// Chunk size, 16 + chunk % 64 without packs; the top two bits choose the pack threshold
    /// (none, 64 bytes or 4 KiB; packing stores get larger chunks).
    pub chunk: u8,
    /// What happens.
    pub ops: Vec<StoreOp>,
}

const KEYS: [&str; 4] = ["a", "../../etc/passwd", "dir/sub/obj", "ключ"];

/// A shard file's path and bytes, kept to put back later as a stale shard.
type SavedShard = (PathBuf, Vec<u8>);

/// The reference model: what each key should read as, and how much damage it carries.
struct Model {
    objects: BTreeMap<String, Vec<u8>>,
    /// Shards of each key's current version hit by a fault (a conservative count).
    damaged: BTreeMap<ObjectId, BTreeSet<usize>>,
    /// Locations emptied and not yet rebuilt by a scrub.
    wiped: BTreeSet<usize>,
    /// The previous version's shard files of each key: (path, bytes) per shard.
    previous: BTreeMap<String, Vec<Option<SavedShard>>>,
    /// Keys whose damage once exceeded `m`: only a new put makes them whole again.
    lost: BTreeSet<String>,
    /// Every version written of each key since it was last deleted. A lost key may read as any
    /// of them: when stale shards of an older version are back on `k` locations and the newer
    /// one is beyond repair, nothing on disk says the older one was superseded.
    written: BTreeMap<String, Vec<Vec<u8>>>,
    /// Deleted keys whose tombstones could not reach every location (some were wiped), by the
    /// slots holding them. Any surviving tombstone outvotes what a wiped slot may bring back.
    tombstones: BTreeMap<String, BTreeSet<usize>>,
    /// The pack holding each packed key's current write (its shards are the pack's: placed by
    /// the pack's id, not the key's).
    holders: BTreeMap<String, ObjectId>,
    /// Deleted keys whose every tombstone was since wiped: older shards left on locations that
    /// were unusable during the delete may surface, so the key may read as any version ever
    /// written, or as an error. (Beyond tolerance: the delete's record is lost.)
    unsure: BTreeMap<String, Vec<Vec<u8>>>,
}

impl Model {
    /// Whether the store must still read `key` exactly.
    fn within(&self, key: &str, n: usize, m: u8) -> bool {
        !self.lost.contains(key) && self.bad(key, n) <= usize::from(m)
    }

    /// Marks every key beyond tolerance as lost.
    fn note_losses(&mut self, n: usize, m: u8) {
        let lost: Vec<String> = self
            .objects
            .keys()
            .filter(|k| self.bad(k, n) > usize::from(m))
            .cloned()
            .collect();
        self.lost.extend(lost);
    }

    fn forget(&mut self, key: &str) {
        self.objects.remove(key);
        // A new write of the key has fresh files of its own; a pack it was in keeps its damage.
        self.damaged.remove(&ObjectId::of_key(key));
        self.previous.remove(key);
        self.lost.remove(key);
        self.written.remove(key);
        self.tombstones.remove(key);
        self.unsure.remove(key);
        self.holders.remove(key);
    }

    /// The object whose shard files hold `key`'s current write: its pack's, or its own.
    fn holder(&self, key: &str) -> ObjectId {
        self.holders
            .get(key)
            .copied()
            .unwrap_or_else(|| ObjectId::of_key(key))
    }

    /// A lost key the store can no longer see at all: shards on locations that come back may
    /// bring an old version back.
    fn vanished(&mut self, key: &str) {
        let written = self.written.get(key).cloned().unwrap_or_default();
        self.forget(key);
        self.tombstones.insert(key.to_owned(), BTreeSet::new());
        self.unsure.insert(key.to_owned(), written);
    }

    /// A delete succeeded while `self.wiped` locations were unusable.
    fn deleted(&mut self, key: &str, n: usize) {
        let written = self.written.get(key).cloned().unwrap_or_default();
        self.forget(key);
        if !self.wiped.is_empty() {
            let live = (0..n).filter(|s| !self.wiped.contains(s)).collect();
            self.tombstones.insert(key.to_owned(), live);
            self.unsure.insert(key.to_owned(), written);
        }
    }

    /// Bad shards of `key`: those hit, plus those on wiped locations.
    fn bad(&self, key: &str, n: usize) -> usize {
        let object = self.holder(key);
        let mut bad = self.damaged.get(&object).cloned().unwrap_or_default();
        bad.extend(
            self.wiped
                .iter()
                .map(|&slot| placement::shard_of_slot(object, slot, n)),
        );
        bad.len()
    }
}

/// Runs `case` on a real store in a temporary directory and checks every step against the
/// model: a get returns the model's bytes, or an error only when the key's damage exceeds `m`;
/// a scrub reports as unrecoverable only keys beyond `m`, and with repair heals the rest.
///
/// # Errors
/// The broken property, in words (the fuzz target panics with it).
pub fn check_store_ops(case: &StoreCase) -> Result<(), String> {
    let k = 1 + case.k % 4;
    let m = case.m % 3;
    let n = usize::from(k + m);
    // Half the cases pack small objects: below 64 bytes, or (most objects here) below 4 KiB;
    // a packed object lies in one chunk beside the pack's table, so those chunks are larger.
    let (pack_threshold, chunk_size) = match case.chunk >> 6 {
        0 | 1 => (0, 16 + u32::from(case.chunk % 64)),
        2 => (64, 1200 + u32::from(case.chunk % 64)),
        _ => (4096, 5200 + 16 * u32::from(case.chunk % 64)),
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let plan = FaultPlan::new(u64::from(case.k) << 16 | u64::from(case.m) << 8 | u64::from(case.chunk));
    let open = |plan: &Arc<FaultPlan>| {
        Store::builder()
            .durability(Durability::PageCache)
            // Retransmission without pauses keeps the fuzzer fast; the policy is the same.
            .retry_policy(RetryPolicy::default().initial_backoff(Duration::ZERO))
            .location_wrapper(plan.wrapper())
    };
    let mut store = open(&plan)
        .data_shards(k)
        .parity_shards(m)
        .chunk_size(chunk_size)
        .pack_threshold(pack_threshold)
        .create(dir.path())
        .map_err(|e| e.to_string())?;
    let quorum = store.write_quorum();
    // Fewer usable locations than this, and no read can be sure of the newest version.
    let read_quorum = store.read_quorum();
    let mut model = Model {
        objects: BTreeMap::new(),
        damaged: BTreeMap::new(),
        wiped: BTreeSet::new(),
        previous: BTreeMap::new(),
        lost: BTreeSet::new(),
        written: BTreeMap::new(),
        tombstones: BTreeMap::new(),
        holders: BTreeMap::new(),
        unsure: BTreeMap::new(),
    };
    for (step, op) in case.ops.iter().enumerate() {
        let fail = |what: String| Err(format!("step {step} ({op:?}), k={k} m={m}: {what}"));
        let key_of = |i: u8| KEYS[usize::from(i) % KEYS.len()];
        model.note_losses(n, m);
        let usable = n - model.wiped.len();
        match *op {
            StoreOp::Put { key, len, seed } => {
                let key = key_of(key);
                let bytes: Vec<u8> = (0..usize::from(len) % 3000)
                    .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                    .collect();
                let previous: Vec<_> = (0..n)
                    .map(|s| {
                        let path = store.shard_path(key, s).ok()?;
                        fs::read(&path).ok().map(|b| (path, b))
                    })
                    .collect();
                match store.put(key, &bytes[..]) {
                    Ok(_) if usable >= quorum => {
                        let mut written = model.written.remove(key).unwrap_or_default();
                        model.forget(key);
                        written.push(bytes.clone());
                        model.written.insert(key.to_owned(), written);
                        model.objects.insert(key.to_owned(), bytes);
                        model.previous.insert(key.to_owned(), previous);
                        let pack = store.stat(key).ok().and_then(|s| s.pack);
                        if let Some(pack) = pack.as_deref().and_then(ObjectId::from_hex) {
                            model.holders.insert(key.to_owned(), pack);
                        }
                    }
                    Err(Error::WriteQuorum { .. }) if usable < quorum => {}
                    other => return fail(format!("put with {usable} usable locations: {other:?}")),
                }
            }
            StoreOp::Get { key } => {
                let key = key_of(key);
                let got = store.get_bytes(key);
                match (model.objects.get(key), got) {
                    (_, Err(Error::TooFewLocations { .. })) if usable < read_quorum => {}
                    (Some(want), Ok(got)) if *want == got => {}
                    (Some(_), Ok(got)) if !model.within(key, n, m) && model.written[key].contains(&got) => {}
                    (Some(_), Ok(_)) => return fail("WRONG BYTES".into()),
                    (Some(_), Err(e)) if model.within(key, n, m) => {
                        return fail(format!("{} bad shards <= m, yet {e}", model.bad(key, n)))
                    }
                    (Some(_), Err(_)) => {}
                    (None, Err(Error::NotFound { .. })) => {}
                    // Every tombstone of this delete is gone: what was never outvoted may return.
                    (None, Err(Error::NoQuorum { .. } | Error::Unrecoverable { .. }))
                        if model.tombstones.get(key).is_some_and(BTreeSet::is_empty) => {}
                    (None, Ok(got))
                        if model.tombstones.get(key).is_some_and(BTreeSet::is_empty)
                            && model.unsure[key].contains(&got) => {}
                    (None, other) => return fail(format!("absent key read as {other:?}")),
                }
            }
            StoreOp::Delete { key } => {
                let key = key_of(key);
                match (store.delete(key), model.objects.contains_key(key)) {
                    (Ok(()), true) if usable >= quorum => model.deleted(key, n),
                    (Err(Error::WriteQuorum { .. }), _) if usable < quorum => {}
                    (Err(Error::NotFound { .. }), false) => {}
                    (Err(Error::TooFewLocations { .. }), _) if usable < read_quorum => {}
                    // Remnants of a delete whose tombstones were all wiped: deleting them again.
                    (Ok(()), false) if model.tombstones.get(key).is_some_and(BTreeSet::is_empty) => {
                        model.deleted(key, n)
                    }
                    // Damage beyond m can leave no readable header: the store cannot know the key.
                    (Err(Error::NotFound { .. }), true) if !model.within(key, n, m) => model.vanished(key),
                    (result, present) => {
                        return fail(format!(
                            "delete (present: {present}, bad {}, damaged {:?}, wiped {:?}): {result:?}",
                            model.bad(key, n),
                            model.damaged.get(&model.holder(key)),
                            model.wiped
                        ))
                    }
                }
            }
            StoreOp::List => {
                let listed = match store.list() {
                    Ok(l) => l,
                    Err(Error::TooFewLocations { .. }) if usable < read_quorum => continue,
                    Err(e) => return fail(format!("list: {e}")),
                };
                for entry in &listed {
                    let unsure = model.tombstones.get(&entry.key).is_some_and(BTreeSet::is_empty)
                        && model.unsure[&entry.key]
                            .iter()
                            .any(|v| v.len() as u64 == entry.len);
                    if unsure {
                        continue;
                    }
                    match model.objects.get(&entry.key) {
                        Some(bytes) if bytes.len() as u64 == entry.len => {}
                        Some(_)
                            if !model.within(&entry.key, n, m)
                                && model.written[&entry.key]
                                    .iter()
                                    .any(|w| w.len() as u64 == entry.len) => {}
                        other => {
                            return fail(format!("listed {entry:?}, model has {:?}", other.map(Vec::len)))
                        }
                    }
                }
                for key in model.objects.keys() {
                    if model.within(key, n, m) && !listed.iter().any(|e| e.key == *key) {
                        return fail(format!("{key:?} missing from the listing"));
                    }
                }
            }
            StoreOp::Scrub { repair, deep } => {
                let options = ScrubOptions::default().repair(repair).deep(deep).jobs(1);
                let report = match store.scrub(&options, &|_| {}) {
                    Ok(r) => r,
                    Err(e) => return fail(format!("scrub: {e}")),
                };
                // A key is named, or (when no header names it) its object id.
                let reported = |key: &str| {
                    let holder = model.holder(key).to_hex();
                    let anonymous = [format!("<object {holder}>"), format!("<pack {holder}>")];
                    report
                        .unrecoverable
                        .iter()
                        .any(|u| u.key == key || anonymous.contains(&u.key))
                };
                for key in model.objects.keys() {
                    if reported(key) && model.within(key, n, m) {
                        return fail(format!(
                            "scrub calls {key:?} unrecoverable within tolerance: {report:?}"
                        ));
                    }
                }
                if repair {
                    // Everything within tolerance is healed and wiped locations are rebuilt;
                    // lost objects stay lost.
                    let healed: Vec<String> = model
                        .objects
                        .keys()
                        .filter(|k| model.within(k, n, m))
                        .cloned()
                        .collect();
                    for key in healed {
                        model.damaged.remove(&model.holder(&key));
                    }
                    // Compaction moves packed keys into new packs.
                    let packed: Vec<String> = model.holders.keys().cloned().collect();
                    for key in packed {
                        let pack = store.stat(&key).ok().and_then(|s| s.pack);
                        if let Some(pack) = pack.as_deref().and_then(ObjectId::from_hex) {
                            model.holders.insert(key, pack);
                        }
                    }
                    model.wiped.clear();
                    // With every location back, a deleted key's remnants are outvoted by its
                    // surviving tombstones and removed.
                    model.tombstones.retain(|_, slots| slots.is_empty());
                    let tombstones = &model.tombstones;
                    model.unsure.retain(|key, _| tombstones.contains_key(key));
                }
            }
            StoreOp::FlipByte { key, shard, at } => {
                damage(
                    &store,
                    &mut model,
                    key_of(key),
                    usize::from(shard) % n,
                    |path, len| {
                        let mut bytes = fs::read(path)?;
                        if len > 0 {
                            bytes[usize::from(at) % len as usize] ^= 0x5a;
                        }
                        fs::write(path, bytes)
                    },
                );
            }
            StoreOp::Truncate { key, shard, len } => {
                damage(
                    &store,
                    &mut model,
                    key_of(key),
                    usize::from(shard) % n,
                    |path, file_len| {
                        let f = fs::OpenOptions::new().write(true).open(path)?;
                        f.set_len(u64::from(len) % file_len.max(1))
                    },
                );
            }
            StoreOp::DeleteShard { key, shard } => {
                damage(
                    &store,
                    &mut model,
                    key_of(key),
                    usize::from(shard) % n,
                    |path, _| fs::remove_file(path),
                );
            }
            StoreOp::WipeLocation { slot } => {
                let slot = usize::from(slot) % n;
                let location = store.locations()[slot].clone();
                for entry in fs::read_dir(&location).map_err(|e| e.to_string())?.flatten() {
                    let path = entry.path();
                    let _ = if path.is_dir() {
                        fs::remove_dir_all(&path)
                    } else {
                        fs::remove_file(&path)
                    };
                }
                model.wiped.insert(slot);
                for slots in model.tombstones.values_mut() {
                    slots.remove(&slot);
                }
                store = open(&plan).open(dir.path()).map_err(|e| e.to_string())?;
            }
            StoreOp::PutBackStale { key, shard } => {
                let key = key_of(key);
                let shard = usize::from(shard) % n;
                let Some(Some((old_path, old_bytes))) =
                    model.previous.get(key).and_then(|p| p.get(shard)).cloned()
                else {
                    continue;
                };
                let Ok(current) = store.shard_path(key, shard) else {
                    continue;
                };
                if current == old_path {
                    continue;
                }
                let _ = fs::remove_file(&current);
                if let Some(parent) = old_path.parent() {
                    let _ = fs::create_dir_all(parent);
                }
                let _ = fs::write(&old_path, old_bytes);
                model.damaged.entry(model.holder(key)).or_default().insert(shard);
            }
            StoreOp::TransientFaults { slot } => {
                plan.inject(Rule::at(
                    usize::from(slot) % n,
                    Fault::FlipBit(Persistence::Transient { times: 1 }),
                ));
            }
            StoreOp::Reopen => {
                store = open(&plan).open(dir.path()).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// Applies `hurt` to the current shard file of `key` (if the key resolves) and records it.
fn damage(
    store: &Store,
    model: &mut Model,
    key: &str,
    shard: usize,
    hurt: impl FnOnce(&std::path::Path, u64) -> std::io::Result<()>,
) {
    let Ok(path) = store.shard_path(key, shard) else {
        return;
    };
    let Ok(meta) = fs::metadata(&path) else { return };
    if hurt(&path, meta.len()).is_ok() {
        model.damaged.entry(model.holder(key)).or_default().insert(shard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_index_round_trips_and_every_byte_flipped_in_it_is_rejected_or_round_trips() {
        let segment = 0x0123_4567_89ab_cdef;
        let write = (
            ObjectId([5; 16]),
            WriteStamp {
                version: 4,
                write_id: 6,
            },
        );
        let entries = [
            log_record::kept_entry(write, 24, 300),
            log_record::kept_entry(write, 400, 100),
        ]
        .concat();
        let tail = log_record::kept_tail(segment, log_record::tag(segment), &entries);
        let record = &tail[..tail.len() - log_record::KEPT_LEN_FIELD];
        assert!(log_record::kept_index(record, segment, log_record::tag(segment), 1000).is_some());
        assert_eq!(check_format_decode(record), Ok(()));
        for at in 0..record.len() {
            let mut flipped = record.to_vec();
            flipped[at] ^= 0x40;
            assert_eq!(check_format_decode(&flipped), Ok(()), "byte {at}");
        }
    }
}
