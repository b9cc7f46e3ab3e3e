//! Scrubbing one object: verify every chunk of every shard, then repair in proportion to the
//! damage: rotten chunks are rewritten in place (they were already bad, so a torn write loses
//! nothing), missing, stale, truncated or misplaced shard files are rebuilt through a temporary
//! file and a rename. Nothing is written for an object with a stripe beyond repair.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use rayon::prelude::*;

use crate::checksum::{ChunkId, ObjectChecksum};
use crate::error::{Error, Result};
use crate::format::{ObjectId, ShardHeader, WriteStamp, CHUNK_CRC_LEN};
use crate::location::ShardWriter;
use crate::placement;
use crate::store::hedge::{self, InFlight};
use crate::store::reader::{ChunkOutcome, ChunkReader};
use crate::store::rebuild::{rebuild_stripe, Rebuilt, StripeEvidence};
use crate::store::resolve::Resolved;
use crate::store::{ShardState, Store};

use super::scratch::Scratch;
use super::{Run, ScrubCounts, ScrubOptions, UnrecoverableObject};

/// What a verification pass concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verified {
    /// Every chunk verified and the whole object matched its checksum.
    Healthy,
    /// Something did not: the unlocked pass stops there, and says how far it got; the locked
    /// pass repairs and reports.
    Amiss(Progress),
}

/// How far a verification got: every stripe before `next_stripe` verified, with the object
/// checksum of their data chunks. The locked pass continues from here when nothing moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    next_stripe: u64,
    checksum: ObjectChecksum,
    /// `next_stripe` was found damaged (so it is read straight into buffers of its own).
    damaged: bool,
}

/// What the unlocked pass leaves the locked one: the writes it saw at each slot and, when it
/// stopped at a damaged stripe, its counts and progress up to there.
struct Handover {
    stamps: Vec<Vec<WriteStamp>>,
    outcome: ObjectOutcome,
    progress: Progress,
}

/// The unlocked pass's conclusion.
enum FirstLook {
    /// Healthy (or outside the prefix): this is the object's outcome.
    Done(ObjectOutcome),
    /// Something looks amiss; the locked pass may start from where this one stopped.
    Amiss(Option<Handover>),
}

/// Per-location counts for one object.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SlotCounts {
    pub damaged_chunks: u64,
    pub repaired_chunks: u64,
    pub damaged_shards: u64,
    pub rebuilt_shards: u64,
    /// Writes (patches, removals) the location refused.
    pub write_failures: u64,
    pub transient_faults_cured: u64,
}

/// What scrubbing one object found and did.
#[derive(Debug, Default)]
pub(super) struct ObjectOutcome {
    /// The object has a current version and it was verified (false for deleted objects,
    /// objects outside the prefix, and leftovers).
    pub verified: bool,
    pub counts: ScrubCounts,
    pub unrecoverable: Option<UnrecoverableObject>,
    pub slots: Vec<SlotCounts>,
    /// Some rebuilt file was committed without waiting for the disk: the scrub syncs the
    /// locations before its next checkpoint.
    pub needs_sync: bool,
}

/// How much of an object is read between two notes of its progress to the checkpoint.
const NOTE_EVERY_BYTES: u64 = 64 << 20;

impl ObjectOutcome {
    /// Verified (or passed over) with nothing to report: no damage, leftover, conflict or
    /// repair, so skipping it on a resume loses no finding.
    pub(super) fn found_nothing(&self) -> bool {
        let c = &self.counts;
        self.unrecoverable.is_none()
            && !self.needs_sync
            && c.damaged_chunks
                + c.parity_mismatches
                + c.repaired_chunks
                + c.damaged_shards
                + c.stale_shards
                + c.rebuilt_shards
                + c.unrepaired
                + c.conflicting_writes
                + c.leftover_files
                == 0
            && self.slots.iter().all(|s| s.write_failures == 0)
    }
}

/// Whether a scrub pass may write: the first pass runs as a reader beside writers and only
/// verifies; anything it finds amiss is looked at again holding the object's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// No lock held: reads in parallel on the scrub's pool, stops at the first sign of damage.
    Unlocked,
    /// The object's lock held: no rayon waits (see the `lock` module), repairs allowed.
    Locked,
}

impl Store {
    /// Scrubs one object; `temp_files` are the (slot, name) of its temporary files found when
    /// the scrub enumerated the store.
    ///
    /// Most objects are healthy, and verifying a healthy object needs no lock (readers run
    /// beside writers): that is the first pass. What looks amiss may be a put under way, so it
    /// is judged, and repaired, only in a second pass under the object's lock. Per-object locks
    /// keep objects that share a bucket from waiting on each other.
    pub(super) fn scrub_object(
        &self,
        object: ObjectId,
        temp_files: &[(usize, String)],
        options: &ScrubOptions,
        run: &Run<'_>,
    ) -> Result<ObjectOutcome> {
        let mut handover = None;
        if temp_files.is_empty() {
            match self.scrub_unlocked(object, options, run)? {
                FirstLook::Done(outcome) => return Ok(outcome),
                FirstLook::Amiss(h) => handover = h,
            }
        }
        // Writers of this object hold the same lock for a whole put, so while scrub holds it no
        // write is half done: what looks damaged is damaged, and temporary files are dead.
        let _lock = self.locks.lock(object)?;
        self.scrub_locked(object, temp_files, options, run, handover)
    }

    /// The first pass, as a reader: only verifies, and stops at the first sign of trouble.
    fn scrub_unlocked(&self, object: ObjectId, options: &ScrubOptions, run: &Run<'_>) -> Result<FirstLook> {
        let n = self.slots.len();
        let mut out = ObjectOutcome {
            slots: vec![SlotCounts::default(); n],
            ..ObjectOutcome::default()
        };
        // Unconfirmed: a look that raced a writer cannot pass the checks below (one write per
        // location, all healthy, a quorum), so it ends in the locked pass.
        let gathered = self.gather(object, false);
        let Some(key) = Store::key_of(&gathered) else {
            return Ok(FirstLook::Amiss(None));
        };
        if !options.selects(&key) {
            return Ok(FirstLook::Done(out));
        }
        // A key also written to a pack is judged under its lock (its files may be outvoted).
        if self.cached_packed_stamp(&key).is_some() {
            return Ok(FirstLook::Amiss(None));
        }
        // One write per location and nothing else: no leftovers to clean.
        let single_write = gathered
            .slots
            .iter()
            .all(|found| found.as_ref().is_ok_and(|c| c.len() == 1 && !c[0].pending));
        if gathered.raced || !single_write {
            return Ok(FirstLook::Amiss(None));
        }
        let stamps = stamps_by_slot(&gathered);
        let Ok(resolved) = self.decide(&key, gathered, false) else {
            return Ok(FirstLook::Amiss(None));
        };
        if resolved.health.iter().any(|h| h.state != ShardState::Healthy) {
            return Ok(FirstLook::Amiss(None));
        }
        out.verified = true;
        // Where an interrupted scrub got to in this same write, if it did.
        let from = match run.checkpoint.resume_point(object, resolved.header.stamp) {
            Some((next_stripe, checksum)) => Progress {
                next_stripe,
                checksum: ObjectChecksum::resume(checksum),
                damaged: false,
            },
            None => Progress::default(),
        };
        let pass = Pass::Unlocked;
        let choices = BTreeMap::new();
        match self.verify_and_repair(
            object, &key, &resolved, options, run, pass, from, &choices, &mut out,
        )? {
            Verified::Healthy => Ok(FirstLook::Done(out)),
            Verified::Amiss(progress) => Ok(FirstLook::Amiss(Some(Handover {
                stamps,
                outcome: out,
                progress,
            }))),
        }
    }

    /// The second pass, holding the object's lock: judges and repairs.
    fn scrub_locked(
        &self,
        object: ObjectId,
        temp_files: &[(usize, String)],
        options: &ScrubOptions,
        run: &Run<'_>,
        handover: Option<Handover>,
    ) -> Result<ObjectOutcome> {
        let n = self.slots.len();
        let mut out = ObjectOutcome {
            slots: vec![SlotCounts::default(); n],
            ..ObjectOutcome::default()
        };
        // A failed fsync earlier in this scrub poisoned the store: verify, write nothing more.
        let verify_only;
        let options = match options.repair && self.check_writable().is_err() {
            true => {
                verify_only = ScrubOptions {
                    repair: false,
                    ..options.clone()
                };
                &verify_only
            }
            false => options,
        };
        self.clean_temp_files(temp_files, options.repair, &mut out);
        let mut gathered = self.gather(object, false);
        if self.settle_pending(object, &gathered, options.repair, &mut out) {
            gathered = self.gather(object, false);
        }
        let stamps = stamps_by_slot(&gathered);
        let tombstones: BTreeSet<WriteStamp> = gathered
            .slots
            .iter()
            .flatten()
            .flatten()
            .filter(|c| c.header.as_ref().is_ok_and(|h| h.tombstone))
            .map(|c| c.stamp)
            .collect();
        // The same files as the unlocked pass saw (shard files are only ever replaced, never
        // rewritten, except chunks patched under this lock): what it verified still holds.
        let mut from = Progress::default();
        if let Some(h) = handover.filter(|h| h.stamps == stamps && temp_files.is_empty()) {
            out = h.outcome;
            from = h.progress;
        }
        let Some(key) = Store::key_of(&gathered) else {
            let files: usize = stamps.iter().map(Vec::len).sum();
            if files > 0 {
                out.unrecoverable = Some(UnrecoverableObject {
                    key: format!("<object {}>", object.to_hex()),
                    stripes: Vec::new(),
                    detail: format!("{files} shard files, none with a readable header"),
                });
            }
            return Ok(out);
        };
        if !options.selects(&key) {
            return Ok(out);
        }
        if let Some(packed) = self.cached_packed_stamp(&key) {
            if stamps.iter().flatten().all(|s| *s < packed) {
                // Outvoted by a newer packed write or delete (whose put could not remove them):
                // leftovers, whatever their state, never an object to repair or call lost.
                self.remove_leftovers(object, &stamps, |s| s < packed, options.repair, &mut out);
                return Ok(out);
            }
        }
        match self.decide(&key, gathered, true) {
            Ok(resolved) => {
                out.verified = true;
                let choices = BTreeMap::new();
                let pass = Pass::Locked;
                self.verify_and_repair(
                    object, &key, &resolved, options, run, pass, from, &choices, &mut out,
                )?;
                let current = resolved.header.stamp;
                // Another write with the current version number is a conflict (two writers that
                // could not see each other): both are kept for the operator, never removed.
                let conflicts = stamps
                    .iter()
                    .flatten()
                    .filter(|s| s.version == current.version && **s != current)
                    .count() as u64;
                out.counts.conflicting_writes += conflicts;
                // Not something a repair can settle: it needs an operator.
                out.counts.unrepaired += conflicts;
                if out.unrecoverable.is_none() {
                    let leftover = |s: WriteStamp| s.version != current.version;
                    // Everything left is older than the current version, which outvotes it.
                    self.remove_leftovers(object, &stamps, leftover, options.repair, &mut out);
                }
            }
            Err(Error::NotFound { .. }) => {
                self.clean_up_deleted(object, &stamps, &tombstones, options.repair, &mut out);
            }
            Err(Error::NoQuorum {
                version,
                held,
                needed,
                ..
            }) => {
                out.unrecoverable = Some(UnrecoverableObject {
                    key,
                    stripes: Vec::new(),
                    detail: format!(
                        "no version on enough locations: the newest (version {version}) has {held} verified \
                         headers < {needed} needed (an interrupted first put, or lost beyond repair)"
                    ),
                });
            }
            // Not judged until enough locations are back (a repairing scrub claims wiped ones).
            Err(Error::TooFewLocations { .. }) => out.counts.unrepaired += 1,
            Err(e) => return Err(e),
        }
        Ok(out)
    }

    /// Pending files are what a put leaves when it stops between its two commit steps (FORMAT.md,
    /// "Committing a write"); with scrub holding the object's lock, none is under way. A write
    /// with a committed file somewhere had begun its second step: its pending files are
    /// promoted (the put completes). A write with none had not: readers ignore it, and its
    /// files are removed, once every location could be listed (a committed one may be on a
    /// location that could not). Returns whether anything changed.
    fn settle_pending(
        &self,
        object: ObjectId,
        gathered: &crate::store::resolve::Gathered,
        repair: bool,
        out: &mut ObjectOutcome,
    ) -> bool {
        let candidates = || {
            gathered
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((i, s.as_ref().ok()?)))
        };
        let committed: BTreeSet<WriteStamp> = candidates()
            .flat_map(|(_, found)| found.iter().filter(|c| !c.pending).map(|c| c.stamp))
            .collect();
        let all_listed = gathered.slots.iter().all(|s| s.is_ok());
        let mut changed = false;
        for (index, found) in candidates() {
            for c in found.iter().filter(|c| c.pending) {
                out.counts.leftover_files += 1;
                let begun = committed.contains(&c.stamp);
                if !repair {
                    continue;
                }
                if !begun && !all_listed {
                    out.counts.unrepaired += 1;
                    continue;
                }
                let Some(location) = self.writable(index) else {
                    out.counts.unrepaired += 1;
                    continue;
                };
                let settled = match begun {
                    true => location.promote(object, c.stamp),
                    false => location.remove_pending(object, c.stamp),
                };
                match settled {
                    Ok(()) => {
                        out.counts.leftover_files_removed += 1;
                        changed = true;
                    }
                    Err(e) => {
                        self.note_write_error(&e);
                        out.slots[index].write_failures += 1;
                        out.counts.unrepaired += 1;
                    }
                }
            }
        }
        changed
    }

    /// Temporary files of this object that still exist now that scrub holds its lock were left
    /// by puts that died (a live put renames or removes its own before releasing the lock).
    fn clean_temp_files(&self, temp_files: &[(usize, String)], repair: bool, out: &mut ObjectOutcome) {
        for (slot, name) in temp_files {
            let Ok(location) = self.slots[*slot].usable() else {
                continue;
            };
            out.counts.leftover_files += 1;
            if repair && location.remove_temp(name).is_ok() {
                out.counts.leftover_files_removed += 1;
            }
        }
    }

    /// What is left of a deleted object: its tombstones and the older writes they outvote. The
    /// older writes go first. The tombstones, the only record that the delete happened, go
    /// last, and only once every location is usable, no removal failed, and a fresh listing of
    /// every location shows nothing but tombstones: a crash at any point, or a location that
    /// cannot be written, leaves the key deleted.
    fn clean_up_deleted(
        &self,
        object: ObjectId,
        stamps: &[Vec<WriteStamp>],
        tombstones: &BTreeSet<WriteStamp>,
        repair: bool,
        out: &mut ObjectOutcome,
    ) {
        let outvoted_gone = self.remove_leftovers(object, stamps, |s| !tombstones.contains(&s), repair, out);
        let only_tombstones_left = || {
            self.slots.iter().all(|slot| {
                let listed = slot.usable().ok().and_then(|l| l.list_shards(object).ok());
                listed.is_some_and(|l| l.iter().all(|s| tombstones.contains(s)))
            })
        };
        let remove_tombstones = repair && outvoted_gone && only_tombstones_left();
        self.remove_leftovers(
            object,
            stamps,
            |s| tombstones.contains(&s),
            remove_tombstones,
            out,
        );
    }

    /// Counts the `leftover` files and, with `remove`, removes them; returns whether every one
    /// is gone (a location that cannot be used or written keeps its files, and says so).
    fn remove_leftovers(
        &self,
        object: ObjectId,
        stamps: &[Vec<WriteStamp>],
        leftover: impl Fn(WriteStamp) -> bool,
        remove: bool,
        out: &mut ObjectOutcome,
    ) -> bool {
        let mut all_gone = true;
        for (index, (slot, stamps)) in self.slots.iter().zip(stamps).enumerate() {
            for &stamp in stamps.iter().filter(|s| leftover(**s)) {
                out.counts.leftover_files += 1;
                let removed = remove
                    && slot
                        .usable()
                        .is_ok_and(|location| match location.remove_shard(object, stamp) {
                            Ok(()) => true,
                            Err(e) => {
                                self.note_write_error(&e);
                                out.slots[index].write_failures += 1;
                                out.counts.unrepaired += 1;
                                false
                            }
                        });
                out.counts.leftover_files_removed += u64::from(removed);
                all_gone &= removed;
            }
        }
        all_gone
    }

    /// Verifies the object's chunks from `from` on and, in the locked pass, repairs them. The
    /// locked pass's findings are in `out`; only the unlocked pass's answer is used.
    ///
    /// Verify, then apply: rebuilt shard files go to temporary files and damaged chunks are
    /// only noted, until the whole object has passed its checksum; only then are the files
    /// committed and the chunks patched (each stripe read and rebuilt again the same way, and
    /// checked against what the verification computed). `choices` forces, per stripe, which
    /// survivors a rebuild uses: an earlier run's choice that the object checksum settled.
    #[allow(clippy::too_many_arguments)]
    fn verify_and_repair(
        &self,
        object: ObjectId,
        key: &str,
        resolved: &Resolved,
        options: &ScrubOptions,
        run: &Run<'_>,
        pass: Pass,
        from: Progress,
        choices: &BTreeMap<u64, Vec<usize>>,
        out: &mut ObjectOutcome,
    ) -> Result<Verified> {
        let g = self.file.geometry;
        let (k, n) = (usize::from(g.k), g.shards());
        let header = &resolved.header;
        let stamp = header.stamp;
        let slot_of = |shard: usize| placement::slot_of_shard(object, shard, n);
        let (counts_at_start, slots_at_start) = (out.counts.clone(), out.slots.clone());

        // Shard files that must be written anew, and those that cannot be.
        let mut rebuild = vec![false; n];
        // Whether a rebuilt file replaces one under the same name (which must not be lost to a
        // power loss before it is synced) or fills a gap (which may wait for the batch's sync).
        let mut replaces = vec![false; n];
        for h in &resolved.health {
            if h.state == ShardState::Healthy {
                continue;
            }
            rebuild[h.shard] = true;
            out.counts.damaged_shards += 1;
            out.slots[h.slot].damaged_shards += 1;
            out.counts.stale_shards += u64::from(matches!(h.state, ShardState::Stale { .. }));
            replaces[h.shard] = !matches!(h.state, ShardState::Missing | ShardState::Stale { .. });
        }
        let mut writers: Vec<Option<Box<dyn ShardWriter>>> = (0..n)
            .map(|shard| {
                if !rebuild[shard] {
                    return None;
                }
                let started = if options.repair {
                    self.start_rebuild(object, header, shard)
                } else {
                    None
                };
                out.counts.unrepaired += u64::from(started.is_none());
                started
            })
            .collect();

        let stripes = g.stripe_count(header.object_len);
        // Sized for this object (small objects are most objects) and reused from the last
        // object on this thread.
        let max_chunk = g.max_chunk_len(header.object_len);
        let mut buffers = Scratch::take(n, max_chunk + CHUNK_CRC_LEN as usize);
        let buffers = buffers.buffers();
        let mut recomputed = Scratch::take(if options.deep { n - k } else { 0 }, max_chunk);
        let recomputed = recomputed.buffers();
        // With nothing known to be wrong and nothing to write or recompute, a stripe's chunks
        // only need their checksums: each is read into one cache-resident buffer instead of
        // its own, which saves the memory traffic that limited the 2-thread scrub. Only a
        // stripe found damaged is then read again, into its own buffers.
        let verify_only = !options.deep && !rebuild.contains(&true);
        let mut checksum = from.checksum;
        let mut bad_stripes = Vec::new();
        // Every stripe's data CRCs from `from` on, and the stripes whose rebuild only the
        // object checksum can choose, with each choice's data CRCs.
        let mut data_crcs_all: Vec<u32> = Vec::new();
        let mut ambiguous: Vec<AmbiguousStripe> = Vec::new();
        // Chunks to patch once the object is confirmed, with their framed bytes while they fit
        // in PATCH_MEMORY (past it, the stripe is read and rebuilt again), and the survivors each
        // such stripe was rebuilt from.
        let mut patches: Vec<Patch> = Vec::new();
        let mut patch_bytes = 0;
        let mut used: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        let mut read_since_noted = 0u64;
        // From remote locations, chunks are read ahead on threads of their own: a ranged GET
        // costs a round trip whatever its size, and a stripe at a time would pay them in turn.
        let all_shards: Vec<usize> = (0..n).collect();
        let mut in_flight = self.file.remote.then(InFlight::new);
        for stripe in from.next_stripe..stripes {
            // Stopping is checked before a stripe is read: repairs are applied only after the
            // loop, so a cancelled object has written nothing.
            if options.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                return Err(Error::Cancelled);
            }
            let progress = Progress {
                next_stripe: stripe,
                checksum,
                damaged: true,
            };
            let shape = g.stripe(header.object_len, stripe);
            let len = shape.chunk_len;
            let reader = ChunkReader {
                store: self,
                object,
                resolved,
                shape,
            };
            let known_damaged = from.damaged && stripe == from.next_stripe;
            if let Some(in_flight) = in_flight.as_mut() {
                in_flight.read_ahead(&reader, &all_shards, stripes.min(stripe + hedge::window(n, len)));
            }
            let outcomes = read_stripe(
                &reader,
                buffers,
                verify_only && !known_damaged,
                pass == Pass::Unlocked,
                in_flight.as_mut(),
            );
            if pass == Pass::Unlocked && outcomes.iter().any(|o| o.data_crc.is_none()) {
                return Ok(Verified::Amiss(progress));
            }
            run.meter.read((len * n) as u64);
            let examined = self.examine_stripe(
                &reader,
                buffers,
                recomputed,
                &outcomes,
                options.deep,
                choices.get(&stripe).map(Vec::as_slice),
            );
            if pass == Pass::Unlocked && examined.present.contains(&false) {
                // A parity mismatch: this stripe is judged again under the lock.
                return Ok(Verified::Amiss(progress));
            }
            for (shard, o) in outcomes.iter().enumerate() {
                if o.data_crc.is_some() {
                    out.counts.chunks_verified += 1;
                    out.counts.bytes_verified += len as u64;
                    out.counts.transient_faults_cured += u64::from(o.attempts > 1);
                    out.slots[slot_of(shard)].transient_faults_cured += u64::from(o.attempts > 1);
                }
                // Damage in a shard file being rebuilt anyway is counted with the file.
                if !examined.present[shard] && !rebuild[shard] {
                    out.counts.damaged_chunks += 1;
                    out.slots[slot_of(shard)].damaged_chunks += 1;
                }
            }
            out.counts.parity_mismatches += examined.written_wrong as u64;
            let Some(rebuilt) = examined.rebuilt else {
                bad_stripes.push(stripe);
                // Nothing is written for an object with a stripe beyond repair.
                writers.iter_mut().for_each(|w| *w = None);
                continue;
            };
            let data_crcs: Vec<u32> = (0..k)
                .map(
                    |shard| match (examined.present[shard], outcomes[shard].data_crc) {
                        (true, Some(crc)) => crc,
                        _ => crc32c::crc32c(&buffers[shard][..len]),
                    },
                )
                .collect();
            data_crcs.iter().for_each(|&crc| checksum.push(crc));
            data_crcs_all.extend(&data_crcs);
            // Only large objects tell the checkpoint where they stand (every 64 MiB read): a
            // small one is simply read again after a kill.
            read_since_noted += (len * n) as u64;
            if pass == Pass::Unlocked && read_since_noted >= NOTE_EVERY_BYTES {
                run.checkpoint
                    .stripe_done(object, stamp, stripe + 1, checksum.value(), read_since_noted);
                read_since_noted = 0;
            }
            if let Some(rebuilt) = rebuilt {
                if !rebuilt.alternatives.is_empty() {
                    let mut options = vec![(rebuilt.used.clone(), data_crcs.clone())];
                    options.extend(rebuilt.alternatives.iter().cloned());
                    ambiguous.push((stripe, options));
                }
                used.insert(stripe, rebuilt.used);
            }
            for shard in 0..n {
                let patch = !examined.present[shard] && !rebuild[shard];
                if writers[shard].is_none() && !patch {
                    continue;
                }
                // Only chunks being written are framed anew (a verified chunk's stored CRC
                // is already right; a rebuilt one needs its own).
                let id = ChunkId {
                    object,
                    stamp,
                    shard: shard as u8,
                    stripe,
                };
                let bound = id.checksum(&buffers[shard][..len]);
                buffers[shard][len..len + 4].copy_from_slice(&bound.to_le_bytes());
                if let Some(writer) = &mut writers[shard] {
                    if writer.write_all(&buffers[shard][..len + 4]).is_err() {
                        writers[shard] = None;
                        out.counts.unrepaired += 1;
                    }
                } else if options.repair {
                    let framed = &buffers[shard][..len + 4];
                    patch_bytes += framed.len();
                    patches.push(Patch {
                        stripe,
                        shard,
                        bound,
                        framed: (patch_bytes <= PATCH_MEMORY).then(|| framed.to_vec()),
                    });
                } else {
                    out.counts.unrepaired += 1;
                }
            }
        }
        if checksum.value() != header.object_crc && pass == Pass::Unlocked {
            // Judged again from the start under the lock.
            return Ok(Verified::Amiss(Progress::default()));
        }
        if !bad_stripes.is_empty() {
            out.unrecoverable = Some(UnrecoverableObject {
                key: key.to_owned(),
                detail: format!(
                    "{} stripes have more than {} bad chunks; surviving chunks kept",
                    bad_stripes.len(),
                    n - k
                ),
                stripes: bad_stripes,
            });
            return Ok(Verified::Amiss(Progress::default()));
        }
        if checksum.value() != header.object_crc {
            // Nothing has been written. Some stripe's rebuild may have had rivals that fitted
            // the stripe as well: the one the object checksum confirms is the right one.
            writers.iter_mut().for_each(|w| *w = None);
            let settled = choices.is_empty().then(|| {
                settle_by_object_checksum(
                    from.checksum,
                    k,
                    &data_crcs_all,
                    from.next_stripe,
                    &ambiguous,
                    header.object_crc,
                )
            });
            if let Some(Some(settled)) = settled {
                out.counts = counts_at_start;
                out.slots = slots_at_start;
                let pass = Pass::Locked;
                return self
                    .verify_and_repair(object, key, resolved, options, run, pass, from, &settled, out);
            }
            out.unrecoverable = Some(UnrecoverableObject {
                key: key.to_owned(),
                stripes: ambiguous.iter().map(|(stripe, _)| *stripe).collect(),
                detail: "no rebuild of the object matches its whole-object checksum; nothing written".into(),
            });
            return Ok(Verified::Amiss(Progress::default()));
        }
        // Confirmed: apply. A pack's rebuilt parity shard files end with its table, as written:
        // a parity file's footer, or (no parity file left to copy) the table a data chunk holds.
        let footer = match crate::format::is_pack_key(key) && writers.iter().any(Option::is_some) {
            true => resolved
                .shards
                .iter()
                .flatten()
                .find_map(|file| {
                    let footer = crate::store::packs::read_footer(&**file, header)?;
                    crate::format::PackTable::decode(&footer, header.object_len).ok()?;
                    Some(footer)
                })
                .or_else(|| {
                    let table = self.pack_table(object, resolved)?;
                    Some(table.encode(header.object_len))
                }),
            false => None,
        };
        for (shard, writer) in writers.into_iter().enumerate() {
            let Some(mut writer) = writer else { continue };
            if let Some(footer) = footer.as_ref().filter(|_| shard >= k) {
                if writer.write_all(footer).is_err() {
                    out.counts.unrepaired += 1;
                    continue;
                }
            }
            let committed = if replaces[shard] {
                writer.commit()
            } else {
                out.needs_sync = true;
                writer.commit_deferred()
            };
            if let Err(e) = &committed {
                self.note_write_error(e);
            }
            if committed.is_ok() && self.verify_shard_file(object, header, shard) {
                out.counts.rebuilt_shards += 1;
                out.slots[slot_of(shard)].rebuilt_shards += 1;
            } else {
                out.counts.unrepaired += 1;
            }
        }
        let mut index = 0;
        while index < patches.len() {
            let stripe = patches[index].stripe;
            let end = index + patches[index..].iter().take_while(|p| p.stripe == stripe).count();
            let reader = ChunkReader {
                store: self,
                object,
                resolved,
                shape: g.stripe(header.object_len, stripe),
            };
            let patched = self.patch_stripe(
                &reader,
                buffers,
                recomputed,
                options.deep,
                &used,
                &patches[index..end],
            );
            for (shard, result) in patched {
                match result {
                    Ok(true) => {
                        out.counts.repaired_chunks += 1;
                        out.slots[slot_of(shard)].repaired_chunks += 1;
                    }
                    Ok(false) => out.counts.unrepaired += 1,
                    Err(e) => {
                        self.note_write_error(&e);
                        out.counts.unrepaired += 1;
                        out.slots[slot_of(shard)].write_failures += 1;
                    }
                }
            }
            index = end;
        }
        Ok(Verified::Healthy)
    }

    /// Works out one stripe from what was read: which chunks hold trusted bytes, and the
    /// rebuild of the others (in `buffers`). Deep: parity that the data does not reproduce is
    /// treated as damaged. Writes nothing and counts nothing.
    fn examine_stripe(
        &self,
        reader: &ChunkReader<'_>,
        buffers: &mut [Vec<u8>],
        recomputed: &mut [Vec<u8>],
        outcomes: &[ChunkOutcome],
        deep: bool,
        choice: Option<&[usize]>,
    ) -> ExaminedStripe {
        let (k, n) = (self.codec.data_shards(), buffers.len());
        let len = reader.shape.chunk_len;
        let mut present: Vec<bool> = outcomes.iter().map(|o| o.data_crc.is_some()).collect();
        let mut written_wrong = 0;
        if deep && present.iter().all(|&p| p) && n > k {
            for p in self.check_parity(buffers, recomputed, len) {
                present[p] = false;
                written_wrong += 1;
            }
        }
        let missing = present.iter().filter(|&&p| !p).count();
        if missing > n - k {
            return ExaminedStripe {
                present,
                written_wrong,
                rebuilt: None,
            };
        }
        if missing == 0 {
            return ExaminedStripe {
                present,
                written_wrong,
                rebuilt: Some(None),
            };
        }
        let stored: Vec<Option<u32>> = outcomes.iter().map(|o| o.stored).collect();
        let bind = |shard: usize, crc: u32| {
            ChunkId {
                object: reader.object,
                stamp: reader.resolved.header.stamp,
                shard: shard as u8,
                stripe: reader.shape.index,
            }
            .bind(crc)
        };
        let evidence = StripeEvidence {
            present: &present,
            stored: &stored,
            bind: &bind,
        };
        let mut chunks: Vec<&mut [u8]> = buffers.iter_mut().map(|b| &mut b[..len]).collect();
        match rebuild_stripe(&self.codec, &mut chunks, &evidence, choice, false, false) {
            Ok(rebuilt) => {
                // Survivors the rebuild contradicts were written wrong (valid checksums over
                // wrong bytes): their buffers now hold the right bytes, to be written back.
                for &s in &rebuilt.refuted {
                    present[s] = false;
                    written_wrong += 1;
                }
                ExaminedStripe {
                    present,
                    written_wrong,
                    rebuilt: Some(Some(rebuilt)),
                }
            }
            Err(_) => ExaminedStripe {
                present,
                written_wrong,
                rebuilt: None,
            },
        }
    }

    /// Applies the patches of one stripe of a confirmed object. Bytes kept from the
    /// verification are written as they are; otherwise the stripe is read again, rebuilt from
    /// the survivors chosen before, and each chunk written only if its checksum is the one the
    /// verification computed (anything else means the stripe moved on: left unrepaired).
    fn patch_stripe(
        &self,
        reader: &ChunkReader<'_>,
        buffers: &mut [Vec<u8>],
        recomputed: &mut [Vec<u8>],
        deep: bool,
        used: &BTreeMap<u64, Vec<usize>>,
        patches: &[Patch],
    ) -> Vec<(usize, io::Result<bool>)> {
        let len = reader.shape.chunk_len;
        let mut examined = None;
        patches
            .iter()
            .map(|patch| {
                if let Some(framed) = &patch.framed {
                    return (patch.shard, self.patch_chunk(reader, patch.shard, framed));
                }
                let examined = examined.get_or_insert_with(|| {
                    let outcomes = read_stripe(reader, buffers, false, false, None);
                    let choice = used.get(&reader.shape.index).map(Vec::as_slice);
                    self.examine_stripe(reader, buffers, recomputed, &outcomes, deep, choice)
                        .rebuilt
                        .is_some()
                });
                let id = ChunkId {
                    object: reader.object,
                    stamp: reader.resolved.header.stamp,
                    shard: patch.shard as u8,
                    stripe: patch.stripe,
                };
                if !*examined || id.checksum(&buffers[patch.shard][..len]) != patch.bound {
                    return (patch.shard, Ok(false));
                }
                buffers[patch.shard][len..len + 4].copy_from_slice(&patch.bound.to_le_bytes());
                (
                    patch.shard,
                    self.patch_chunk(reader, patch.shard, &buffers[patch.shard][..len + 4]),
                )
            })
            .collect()
    }

    /// Starts a new shard file for `shard` with its header, if its location can be written.
    fn start_rebuild(
        &self,
        object: ObjectId,
        header: &ShardHeader,
        shard: usize,
    ) -> Option<Box<dyn ShardWriter>> {
        let slot = placement::slot_of_shard(object, shard, self.slots.len());
        let location = self.writable(slot)?;
        let mut header = header.clone();
        header.shard_index = shard as u8;
        let mut writer = location.create_shard(object, header.stamp).ok()?;
        writer.write_all(&header.encode()).ok()?;
        Some(writer)
    }

    /// Deep scrub: recomputes parity from the verified data chunks; returns the parity chunks
    /// whose checksum verified but whose content differs (written wrong).
    fn check_parity(&self, buffers: &[Vec<u8>], recomputed: &mut [Vec<u8>], len: usize) -> Vec<usize> {
        let k = buffers.len() - recomputed.len();
        // The data chunks are read in place: no copy of the stripe per comparison.
        let data: Vec<&[u8]> = buffers[..k].iter().map(|b| &b[..len]).collect();
        let mut parity: Vec<&mut [u8]> = recomputed.iter_mut().map(|r| &mut r[..len]).collect();
        self.codec.encode_parity(&data, &mut parity);
        (0..recomputed.len())
            .filter(|&p| recomputed[p][..len] != buffers[k + p][..len])
            .map(|p| k + p)
            .collect()
    }

    /// Rewrites one damaged chunk (with its checksum) in place, then reads it back and verifies:
    /// Whether it verified; an error when the location refused the write.
    fn patch_chunk(&self, reader: &ChunkReader<'_>, shard: usize, framed: &[u8]) -> io::Result<bool> {
        let n = self.slots.len();
        let slot = placement::slot_of_shard(reader.object, shard, n);
        let Some(location) = self.writable(slot) else {
            return Ok(false);
        };
        let offset = reader.resolved.header_len + reader.shape.offset_in_shard;
        location.patch_shard(reader.object, reader.resolved.header.stamp, offset, framed)?;
        let mut check = vec![0u8; framed.len()];
        Ok(reader.read(shard, &mut check).data_crc.is_some() && check == framed)
    }

    /// Reads a freshly written shard file back: header and every chunk must verify.
    fn verify_shard_file(&self, object: ObjectId, header: &ShardHeader, shard: usize) -> bool {
        let g = self.file.geometry;
        let slot = placement::slot_of_shard(object, shard, self.slots.len());
        let Ok(location) = self.slots[slot].usable() else {
            return false;
        };
        let check = || -> io::Result<bool> {
            let file = location.open_shard(object, header.stamp)?;
            let mut expected = header.clone();
            expected.shard_index = shard as u8;
            let header_bytes = expected.encode();
            let mut buf = vec![0u8; header_bytes.len()];
            file.read_exact_at(&mut buf, 0)?;
            // Exactly its chunks; a pack's may end with a copy of its table.
            let footer_ok = || {
                crate::store::packs::read_footer(&*file, &expected)
                    .is_some_and(|f| crate::format::PackTable::decode(&f, header.object_len).is_ok())
            };
            let len_ok = file.len() == expected.expected_file_len()
                || (crate::format::is_pack_key(&header.key) && footer_ok());
            if buf != header_bytes || !len_ok {
                return Ok(false);
            }
            let mut chunk = Scratch::take(1, g.max_chunk_len(header.object_len) + CHUNK_CRC_LEN as usize);
            let chunk = &mut chunk.buffers()[0];
            for stripe in 0..g.stripe_count(header.object_len) {
                let shape = g.stripe(header.object_len, stripe);
                let framed = &mut chunk[..shape.chunk_len + 4];
                file.read_exact_at(framed, header_bytes.len() as u64 + shape.offset_in_shard)?;
                let (bytes, crc) = framed.split_at(shape.chunk_len);
                let id = ChunkId {
                    object,
                    stamp: header.stamp,
                    shard: shard as u8,
                    stripe,
                };
                if id.checksum(bytes).to_le_bytes() != crc {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        check().unwrap_or(false)
    }
}

/// Reads and verifies every chunk of a stripe. With `verify_only`, chunks are first only checked,
/// each through one cache-resident buffer of its thread; a stripe found damaged, or any stripe
/// without `verify_only`, is read into `buffers` (one per shard) for the bytes a rebuild needs.
/// Only `parallel` reads use rayon (never under a lock). With `in_flight` (remote locations),
/// every chunk is taken from its own thread's read, bytes included, whatever `verify_only` says.
fn read_stripe(
    reader: &ChunkReader<'_>,
    buffers: &mut [Vec<u8>],
    verify_only: bool,
    parallel: bool,
    in_flight: Option<&mut InFlight>,
) -> Vec<ChunkOutcome> {
    if let Some(in_flight) = in_flight {
        return buffers
            .iter_mut()
            .enumerate()
            .map(|(shard, buf)| match in_flight.wait_for(reader, shard) {
                Some(answer) => {
                    let len = answer.bytes.len().min(buf.len());
                    buf[..len].copy_from_slice(&answer.bytes[..len]);
                    answer.outcome
                }
                None => reader.read(shard, buf),
            })
            .collect();
    }
    let len = reader.shape.chunk_len + CHUNK_CRC_LEN as usize;
    let check = |scratch: &mut Scratch, shard: usize| reader.read(shard, &mut scratch.buffers()[0]);
    let first_pass: Option<Vec<ChunkOutcome>> = verify_only.then(|| match parallel {
        true => (0..buffers.len())
            .into_par_iter()
            .map_init(|| Scratch::take(1, len), check)
            .collect(),
        false => {
            let mut scratch = Scratch::take(1, len);
            (0..buffers.len())
                .map(|shard| check(&mut scratch, shard))
                .collect()
        }
    });
    // A parallel read is the unlocked pass, which stops at damage rather than rebuild it.
    if first_pass
        .as_ref()
        .is_some_and(|f| parallel || f.iter().all(|o| o.data_crc.is_some()))
    {
        return first_pass.unwrap_or_default();
    }
    let read = |(shard, buf): (usize, &mut Vec<u8>)| {
        let Some(first) = first_pass.as_ref().map(|f| f[shard]) else {
            return reader.read(shard, buf);
        };
        if first.data_crc.is_none() {
            // Already retransmitted as far as the policy allows: an erasure.
            return first;
        }
        // Verified once: read again for its bytes, keeping what the first read needed (a
        // transient fault it cured).
        let again = reader.read(shard, buf);
        ChunkOutcome {
            attempts: again.attempts.max(first.attempts),
            ..again
        }
    };
    match parallel {
        true => buffers.par_iter_mut().enumerate().map(read).collect(),
        false => buffers.iter_mut().enumerate().map(read).collect(),
    }
}

/// Bytes of rebuilt chunks a repair keeps for its patches; past this, a stripe is read again
/// when its patches are applied.
const PATCH_MEMORY: usize = 64 << 20;

/// A chunk to rewrite in place once the object is confirmed.
struct Patch {
    stripe: u64,
    shard: usize,
    /// The checksum the verification computed for the rebuilt chunk.
    bound: u32,
    /// The rebuilt chunk with its checksum, when kept.
    framed: Option<Vec<u8>>,
}

/// One stripe worked out by [`Store::examine_stripe`].
struct ExaminedStripe {
    /// Per shard: whether its chunk holds trusted bytes as read (`false`: rebuilt or beyond).
    present: Vec<bool>,
    /// Chunks with valid checksums over wrong bytes (deep parity mismatches, refuted survivors).
    written_wrong: usize,
    /// `None`: beyond repair. `Some(None)`: nothing to rebuild. Else how it was rebuilt.
    rebuilt: Option<Option<Rebuilt>>,
}

/// A stripe whose rebuild only the object checksum can choose: its number, and each choice (the
/// survivors used, and the data chunks' CRCs they give).
type AmbiguousStripe = (u64, Vec<(Vec<usize>, Vec<u32>)>);

/// Finds the one combination of per-stripe rebuild choices whose data CRCs give the object's
/// checksum, starting from `checksum` at stripe `first`; `None` when there is no single one.
fn settle_by_object_checksum(
    checksum: ObjectChecksum,
    k: usize,
    data_crcs: &[u32],
    first: u64,
    ambiguous: &[AmbiguousStripe],
    expected: u32,
) -> Option<BTreeMap<u64, Vec<usize>>> {
    const MAX_COMBINATIONS: usize = 4096;
    if ambiguous.is_empty() {
        return None;
    }
    let total = ambiguous
        .iter()
        .try_fold(1usize, |acc, (_, options)| acc.checked_mul(options.len()))
        .filter(|&t| t <= MAX_COMBINATIONS)?;
    let mut found = None;
    for mut combination in 0..total {
        let mut crcs = data_crcs.to_vec();
        let mut choice = BTreeMap::new();
        for (stripe, options) in ambiguous {
            let (used, option_crcs) = &options[combination % options.len()];
            combination /= options.len();
            let at = (stripe - first) as usize * k;
            crcs[at..at + k].copy_from_slice(option_crcs);
            choice.insert(*stripe, used.clone());
        }
        let mut sum = checksum;
        crcs.iter().for_each(|&crc| sum.push(crc));
        if sum.value() == expected {
            if found.is_some() {
                return None; // two answers: neither can be trusted
            }
            found = Some(choice);
        }
    }
    found
}

/// The writes each slot holds committed files of, as gathered.
fn stamps_by_slot(gathered: &crate::store::resolve::Gathered) -> Vec<Vec<WriteStamp>> {
    gathered
        .slots
        .iter()
        .map(|found| {
            found
                .as_ref()
                .map(|c| c.iter().filter(|c| !c.pending).map(|c| c.stamp).collect())
                .unwrap_or_default()
        })
        .collect()
}
