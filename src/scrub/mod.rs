//! Scrub: verify every chunk of every object, repair what is damaged, rebuild lost locations,
//! clean up after crashed writes, report, and checkpoint so an interrupted scrub resumes.
//!
//! Objects are independent, so they are scrubbed in parallel (rayon, `jobs` threads). Each object
//! is scrubbed under its writer lock, so a put in progress is never mistaken for damage.

mod checkpoint;
mod meter;
mod object;
mod scratch;
mod state;

use checkpoint::{Checkpointer, InFlight, ResumeAt};
use meter::Meter;

/// What the workers of one scrub share: the meter of its reading, and where it stands.
struct Run<'a> {
    pub meter: Meter<'a>,
    pub checkpoint: Checkpointer<'a>,
}
pub(crate) use state::HISTORY_DIR;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigProblem, Error, Result};
use crate::format::{LocationIdentity, ObjectId, ScrubCheckpoint, ScrubHistory};
use crate::health::LocationState;
use crate::location::temp_file_object;
use crate::store::{check_identity, Store};

pub use state::LAST_REPORT_FILE;

impl ScrubCheckpoint {
    /// Whether this checkpoint is of a scrub with the same options as `other`.
    fn same_scrub(&self, other: &ScrubCheckpoint) -> bool {
        (self.flags, self.percent, &self.prefix) == (other.flags, other.percent, &other.prefix)
    }
}

/// What a scrub does: `ScrubOptions::default()` verifies every object with all cores and
/// repairs nothing; every setter's doc gives its default.
///
/// ```
/// let options = shardguard::ScrubOptions::default().repair(true).jobs(2);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScrubOptions {
    pub(crate) repair: bool,
    pub(crate) deep: bool,
    pub(crate) jobs: Option<usize>,
    pub(crate) max_rate: Option<u64>,
    pub(crate) prefix: Option<String>,
    pub(crate) percent: Option<u8>,
    pub(crate) resume: bool,
    pub(crate) cancel: Option<ScrubCancel>,
}

impl ScrubOptions {
    /// Repair what is damaged (rewrite chunks, rebuild shard files and lost locations, remove
    /// leftovers of crashed writes). Default false: verify and report only.
    pub fn repair(mut self, repair: bool) -> Self {
        self.repair = repair;
        self
    }

    /// Also recompute parity from the data chunks and compare, catching parity written wrong
    /// with a valid checksum. Default false.
    pub fn deep(mut self, deep: bool) -> Self {
        self.deep = deep;
        self
    }

    /// Worker threads. Default: all cores.
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = Some(jobs);
        self
    }

    /// Cap on bytes read per second. Default: none.
    pub fn max_rate(mut self, bytes_per_second: u64) -> Self {
        self.max_rate = Some(bytes_per_second);
        self
    }

    /// Only objects whose key starts with `prefix`. Default: all.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Only this percentage (1-100) of the objects, the least recently scrubbed first (like
    /// SnapRAID's plan). Default: all.
    pub fn percent(mut self, percent: u8) -> Self {
        self.percent = Some(percent);
        self
    }

    /// Continue an interrupted scrub from its checkpoint, skipping what it already verified.
    /// Default false (an old checkpoint is discarded).
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// Stops the scrub when `cancel` is cancelled (from the progress callback, another thread,
    /// a signal handler). Default: none.
    pub fn cancel(mut self, cancel: ScrubCancel) -> Self {
        self.cancel = Some(cancel);
        self
    }
}

/// Stops a running scrub: it returns [`Error::Cancelled`] before its next stripe, leaving a
/// checkpoint that a scrub with `resume` (and the same options) continues from.
///
/// ```
/// let cancel = shardguard::ScrubCancel::new();
/// let options = shardguard::ScrubOptions::default().cancel(cancel.clone());
/// // In the progress callback: `if done_enough { cancel.cancel() }`.
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
pub struct ScrubCancel(Arc<AtomicBool>);

impl ScrubCancel {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels every scrub given this token (or a clone of it).
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`ScrubCancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Two tokens are equal when they are clones of one another.
impl PartialEq for ScrubCancel {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ScrubCancel {}

impl ScrubOptions {
    /// Whether the scrub takes the object of `key`: any under no prefix, else those whose key
    /// starts with it, and every pack (packs hold objects of any prefix).
    fn selects(&self, key: &str) -> bool {
        self.prefix
            .as_ref()
            .is_none_or(|p| key.starts_with(p.as_str()) || crate::format::is_pack_key(key))
    }

    /// Whether the scrub was asked to stop.
    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(ScrubCancel::is_cancelled)
    }
}

/// Progress of a running scrub, reported after each object and, while objects are being read,
/// at least every quarter second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScrubProgress {
    /// Objects finished.
    pub objects_done: u64,
    /// Objects this scrub will look at.
    pub objects_total: u64,
    /// Bytes of shard files (data and parity chunks) read and verified so far; a damaged stripe
    /// read again under the object's lock counts twice, so this may pass `bytes_total`.
    pub bytes_done: u64,
    /// Bytes of shard files this scrub will read, as estimated before it starts (from the
    /// shard files' lengths at one location).
    pub bytes_total: u64,
}

/// One object that could not be fully recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UnrecoverableObject {
    /// The key (or `<object HEX>` when no header names it).
    pub key: String,
    /// Stripes with more than `m` bad chunks.
    pub stripes: Vec<u64>,
    /// What is wrong.
    pub detail: String,
}

/// What a scrub found at one location.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LocationSummary {
    /// Slot number.
    pub slot: usize,
    /// Directory.
    pub path: PathBuf,
    /// Healthy, rebuilt, or why it is unusable.
    pub state: LocationState,
    /// Chunks found damaged here.
    pub damaged_chunks: u64,
    /// Chunks rewritten here.
    pub repaired_chunks: u64,
    /// Shard files that were missing, stale or damaged here.
    pub damaged_shards: u64,
    /// Shard files written anew here.
    pub rebuilt_shards: u64,
    /// Writes (repairs, removals) this location refused: readable but not writable.
    #[serde(default)]
    pub write_failures: u64,
    /// Chunks read here that verified only when read again (transient faults: a flaky disk,
    /// rotten bytes in flight).
    #[serde(default)]
    pub transient_faults_cured: u64,
    /// For a remote location, the requests this scrub made of it (failed ones, and those not
    /// sent while its endpoint was down, among them), and its endpoint's state at the end.
    #[serde(default)]
    pub network: Option<crate::location::NetworkCounts>,
}

/// The counters of a scrub, for the whole store or one object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScrubCounts {
    /// Bytes of chunks read and verified.
    pub bytes_verified: u64,
    /// Chunks read and verified.
    pub chunks_verified: u64,
    /// Chunks that failed verification (after retransmission), or parity that did not match.
    pub damaged_chunks: u64,
    /// Of those, parity chunks with a valid checksum but wrong content (deep scrub).
    pub parity_mismatches: u64,
    /// Chunks that failed at first and verified on a retransmission (transient faults).
    pub transient_faults_cured: u64,
    /// Damaged chunks rewritten in place and verified.
    pub repaired_chunks: u64,
    /// Shard files missing, truncated, stale, misplaced, with a damaged header, or on an
    /// unusable location.
    pub damaged_shards: u64,
    /// Of those, shards holding an older version (lost writes).
    pub stale_shards: u64,
    /// Shard files written anew and verified.
    pub rebuilt_shards: u64,
    /// Damage found but not repaired (verify-only scrub, or a location that cannot be written).
    pub unrepaired: u64,
    /// Shard files of another write with the current version number: two writers that could
    /// not see each other (disks put back from elsewhere). Both are kept, never removed; the one
    /// with the higher write id is served.
    pub conflicting_writes: u64,
    /// Files of older writes, interrupted puts, deletes and temporary files found.
    pub leftover_files: u64,
    /// Of those, removed.
    pub leftover_files_removed: u64,
}

impl ScrubCounts {
    fn add(&mut self, o: &ScrubCounts) {
        self.bytes_verified += o.bytes_verified;
        self.chunks_verified += o.chunks_verified;
        self.damaged_chunks += o.damaged_chunks;
        self.parity_mismatches += o.parity_mismatches;
        self.transient_faults_cured += o.transient_faults_cured;
        self.repaired_chunks += o.repaired_chunks;
        self.damaged_shards += o.damaged_shards;
        self.stale_shards += o.stale_shards;
        self.rebuilt_shards += o.rebuilt_shards;
        self.unrepaired += o.unrepaired;
        self.conflicting_writes += o.conflicting_writes;
        self.leftover_files += o.leftover_files;
        self.leftover_files_removed += o.leftover_files_removed;
    }
}

/// The result of a scrub.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScrubReport {
    /// Whether repair was requested.
    pub repair: bool,
    /// Whether parity was recomputed and compared.
    pub deep: bool,
    /// Objects verified by this scrub (a resumed scrub counts those its interrupted run
    /// verified, and everything that run found); a pack counts as the objects whose current
    /// write it holds.
    pub objects: u64,
    /// Objects skipped because a resumed scrub had already verified them.
    pub skipped_by_resume: u64,
    /// What became of `--resume`.
    #[serde(default)]
    pub resume: ResumeOutcome,
    /// What was wrong with the store's own files (the store file, the copies of it every
    /// location keeps, the lock file, the scrub's state) and, with repair, was replaced.
    #[serde(default)]
    pub own_files: Vec<String>,
    /// The scrub's own advisory files (checkpoint, history) that could not be written; the
    /// scrub went on without them (a later `--resume` or `--percent` is less precise).
    #[serde(default)]
    pub advisory_errors: Vec<String>,
    /// What was verified, found and repaired.
    #[serde(flatten)]
    pub counts: ScrubCounts,
    /// Objects with stripes beyond repair.
    pub unrecoverable: Vec<UnrecoverableObject>,
    /// Wall time.
    pub duration_secs: f64,
    /// When the scrub finished (seconds since the Unix epoch).
    pub finished_unix: u64,
    /// Per location.
    pub locations: Vec<LocationSummary>,
    /// With repair, what became of the packs that needed compacting (a store with packs).
    #[serde(default)]
    pub compaction: crate::CompactionSummary,
}

/// What a scrub made of [`ScrubOptions::resume`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ResumeOutcome {
    /// Not asked to resume (any old checkpoint was discarded).
    #[default]
    NotAsked,
    /// Resumed an interrupted scrub with the same options; what it found counts here too.
    Resumed,
    /// Asked, but no usable checkpoint was there: scrubbed from the start.
    NoCheckpoint,
    /// Asked, but the checkpoint was of a scrub with other options (repair, deep, prefix or
    /// percent): scrubbed from the start.
    OptionsDiffer,
}

/// What an interrupted scrub found before its last checkpoint, kept in the checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Findings {
    objects: u64,
    counts: ScrubCounts,
    unrecoverable: Vec<UnrecoverableObject>,
    locations: Vec<LocationSummary>,
    /// Where the scrub stood since its last batch end (`checkpoint` module).
    #[serde(default)]
    in_flight: InFlight,
}

impl Findings {
    fn of(report: &ScrubReport) -> Self {
        Findings {
            objects: report.objects,
            counts: report.counts.clone(),
            unrecoverable: report.unrecoverable.clone(),
            locations: report.locations.clone(),
            in_flight: InFlight::default(),
        }
    }

    /// JSON within the checkpoint's bound: past it, the unrecoverable list is cut short (the
    /// verdict only needs it non-empty; the final scrub names them again).
    fn encode(mut self) -> Vec<u8> {
        loop {
            let json = serde_json::to_vec(&self).unwrap_or_default();
            if json.len() <= ScrubCheckpoint::MAX_FINDINGS_LEN || self.unrecoverable.len() <= 1 {
                return json;
            }
            self.unrecoverable.truncate(self.unrecoverable.len() / 2);
        }
    }

    fn add_to(self, report: &mut ScrubReport) {
        report.objects += self.objects;
        report.counts.add(&self.counts);
        report.unrecoverable.extend(self.unrecoverable);
        for (summary, found) in report.locations.iter_mut().zip(self.locations) {
            summary.damaged_chunks += found.damaged_chunks;
            summary.repaired_chunks += found.repaired_chunks;
            summary.damaged_shards += found.damaged_shards;
            summary.rebuilt_shards += found.rebuilt_shards;
            summary.write_failures += found.write_failures;
            summary.transient_faults_cured += found.transient_faults_cured;
        }
    }
}

/// The outcome of a scrub in one word (more may be added).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ScrubVerdict {
    /// Everything verified; nothing to do.
    Clean,
    /// Damage was found and all of it repaired.
    Repaired,
    /// Damage was found and all of it is repairable, but some was not repaired.
    NeedsRepair,
    /// Some data is beyond repair.
    Unrecoverable,
}

impl ScrubReport {
    /// Whether anything was found damaged (leftover files of crashed writes are housekeeping,
    /// not damage).
    pub fn damage_found(&self) -> bool {
        self.counts.damaged_chunks + self.counts.damaged_shards + self.counts.conflicting_writes > 0
            || !self.own_files.is_empty()
            || !self.unrecoverable.is_empty()
            || self.locations.iter().any(|l| l.state != LocationState::Healthy)
    }

    /// The outcome in one word.
    pub fn verdict(&self) -> ScrubVerdict {
        if !self.unrecoverable.is_empty() {
            ScrubVerdict::Unrecoverable
        } else if !self.damage_found() {
            ScrubVerdict::Clean
        } else if self.counts.unrepaired == 0 && self.repair {
            ScrubVerdict::Repaired
        } else {
            ScrubVerdict::NeedsRepair
        }
    }

    fn note_advisory(&mut self, e: Error) {
        // One line per distinct problem, however many batches meet it.
        let line = e.to_string();
        if !self.advisory_errors.contains(&line) {
            self.advisory_errors.push(line);
        }
    }

    fn add(&mut self, o: object::ObjectOutcome) {
        self.objects += u64::from(o.verified);
        self.counts.add(&o.counts);
        self.unrecoverable.extend(o.unrecoverable);
        for (summary, slot) in self.locations.iter_mut().zip(o.slots) {
            summary.damaged_chunks += slot.damaged_chunks;
            summary.repaired_chunks += slot.repaired_chunks;
            summary.damaged_shards += slot.damaged_shards;
            summary.rebuilt_shards += slot.rebuilt_shards;
            summary.write_failures += slot.write_failures;
            summary.transient_faults_cured += slot.transient_faults_cured;
        }
    }
}

/// Which objects a scrub takes, by the time each was last scrubbed.
/// Objects whose size is measured to estimate a scrub's total bytes.
const SIZE_SAMPLE: u64 = 64;

struct Selection {
    /// How many objects will be taken.
    objects: u64,
    /// Their shard bytes, estimated from a sample ([`SIZE_SAMPLE`] objects).
    bytes: u64,
    /// Objects last scrubbed before this time are taken…
    threshold: u64,
    /// …and this many of those scrubbed exactly at it, in id order.
    at_threshold: u64,
}

impl Selection {
    fn takes(&self, last_scrubbed: u64, taken_at_threshold: &mut u64) -> bool {
        if last_scrubbed < self.threshold {
            return true;
        }
        if last_scrubbed == self.threshold && *taken_at_threshold < self.at_threshold {
            *taken_at_threshold += 1;
            return true;
        }
        false
    }
}

impl Store {
    /// Scrubs the store: verifies every chunk of every object (or the chosen subset) and, with
    /// `options.repair`, repairs what it can. `progress` is called after each object and, while
    /// objects are read, at least every quarter second (from the scrub's worker threads).
    ///
    /// Safe while the store is in use by other threads and processes.
    ///
    /// # Errors
    /// [`Error::Cancelled`] when stopped by `options`' cancel token (a checkpoint is left),
    /// [`Error::Poisoned`] for a repair in a store a failed fsync poisoned,
    /// [`Error::InvalidConfig`] for a percentage outside 1-100, [`Error::Threads`], [`Error::Io`]
    /// when the store's own files cannot be written. Damage found is not an error: it is in the
    /// report.
    pub fn scrub(
        &self,
        options: &ScrubOptions,
        progress: &(dyn Fn(ScrubProgress) + Sync),
    ) -> Result<ScrubReport> {
        let started = Instant::now();
        if options.repair {
            self.check_writable()?;
        }
        if let Some(percent) = options.percent.filter(|p| *p == 0 || *p > 100) {
            return Err(Error::invalid_config(ConfigProblem::ScrubPercent(percent)));
        }
        let network_before: Vec<_> = self.slots.iter().map(|slot| slot.location.network()).collect();
        let mut report = ScrubReport {
            repair: options.repair,
            deep: options.deep,
            locations: self.check_locations(options.repair),
            ..ScrubReport::default()
        };
        let mut own_files = self.check_store_file(options.repair);
        own_files.extend(self.check_state_files(options.repair));
        for (problem, fixed) in own_files {
            report.counts.unrepaired += u64::from(!fixed);
            report.own_files.push(match fixed {
                true => format!("{problem} (replaced)"),
                false => problem,
            });
        }
        let started_unix = state::now_unix();
        let fresh = ScrubCheckpoint {
            flags: u16::from(options.repair) | u16::from(options.deep) << 1,
            percent: options.percent.unwrap_or(0),
            started_unix,
            objects_done: 0,
            done_through: ObjectId([0; 16]),
            prefix: options.prefix.clone().unwrap_or_default().into_bytes(),
            findings: Vec::new(),
        };
        // A checkpoint is resumed only by a scrub with the same options: another scrub's
        // progress says nothing about what this one would have found.
        let mut resume_at = ResumeAt::default();
        let (mut checkpoint, resume) = match options.resume {
            false => {
                self.remove_checkpoint();
                (fresh, ResumeOutcome::NotAsked)
            }
            true => match self.load_checkpoint() {
                None => (fresh, ResumeOutcome::NoCheckpoint),
                Some(found) if found.same_scrub(&fresh) => {
                    // What the interrupted run found counts in this one's verdict.
                    if let Ok(mut findings) = serde_json::from_slice::<Findings>(&found.findings) {
                        resume_at = ResumeAt::from(std::mem::take(&mut findings.in_flight));
                        findings.add_to(&mut report);
                    }
                    (found, ResumeOutcome::Resumed)
                }
                Some(_) => {
                    self.remove_checkpoint();
                    (fresh, ResumeOutcome::OptionsDiffer)
                }
            },
        };
        report.resume = resume;
        let resuming = resume == ResumeOutcome::Resumed;

        // The store is walked one bucket (first id byte) at a time, so memory follows a 256th
        // of the object count. A first pass only counts (and, for --percent, finds the age
        // threshold); the second scrubs.
        // The packs' tables, so that files outvoted by packed writes are known (see
        // `cached_packed_stamp`); an index that cannot be loaded leaves every file judged alone.
        if self.packs_enabled() {
            drop(self.pack_index());
        }
        let objects_in_packs = self.objects_per_pack();
        let temp_files = self.temp_files();
        let selection = self.select(options.percent, &temp_files)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.jobs.unwrap_or(0))
            .build()
            .map_err(|source| Error::Threads {
                jobs: options.jobs.unwrap_or(0),
                source,
            })?;
        let run = Run {
            meter: Meter::new(options.max_rate, selection.objects, selection.bytes, progress),
            checkpoint: Checkpointer::new(self, checkpoint.clone(), resume_at),
        };
        run.meter.report();
        // An object a resume skips counts as the sampled average: no I/O per skipped object.
        let skipped_bytes = selection.bytes / selection.objects.max(1);
        // Batches bound what a kill makes the resumed scrub verify again.
        let batch = (pool.current_num_threads() * 8).max(64);
        let mut taken_at_threshold = 0;
        // Verified objects whose bucket is not finished yet; a bucket's history is written once,
        // when the scrub has moved past it.
        let mut unrecorded: Vec<ObjectId> = Vec::new();
        // Objects are gathered across buckets into batches, so a bucket's few objects never
        // leave a worker idle; each finished batch is synced, checkpointed and recorded.
        let mut run_batch =
            |objects: &[ObjectId], report: &mut ScrubReport, checkpoint: &mut ScrubCheckpoint| {
                let outcomes: Vec<Result<object::ObjectOutcome>> = pool.install(|| {
                    objects
                        .par_iter()
                        .map(|&object| {
                            if options.cancelled() {
                                return Err(Error::Cancelled);
                            }
                            let temps = temp_files.get(&object).map_or(&[][..], Vec::as_slice);
                            let outcome = self.scrub_object(object, temps, options, &run)?;
                            run.checkpoint.object_done(
                                object,
                                outcome.found_nothing(),
                                outcome.counts.bytes_verified,
                            );
                            run.meter.object_done(0);
                            Ok(outcome)
                        })
                        .collect()
                });
                if options.cancelled() {
                    // What finished clean, and how far large objects got, is kept for a resume.
                    run.checkpoint.save_now();
                    return Err(Error::Cancelled);
                }
                let mut needs_sync = false;
                for (&object, outcome) in objects.iter().zip(outcomes) {
                    let outcome = outcome?;
                    needs_sync |= outcome.needs_sync;
                    let verified = outcome.verified;
                    if verified {
                        unrecorded.push(object);
                    }
                    report.add(outcome);
                    // A pack stands for the objects whose current write it holds.
                    if let Some(&held) = objects_in_packs.get(&object).filter(|_| verified) {
                        report.objects = report.objects - 1 + held;
                    }
                }
                if needs_sync {
                    // Rebuilt files committed without waiting are made durable before the
                    // checkpoint says their objects are done.
                    self.sync_locations()?;
                }
                if options.repair {
                    // A failed fsync in this batch: stop, with the store refusing writes.
                    self.check_writable()?;
                }
                checkpoint.objects_done += objects.len() as u64;
                if let Some(&last) = objects.last() {
                    checkpoint.done_through = last;
                }
                run.checkpoint
                    .batch_done(checkpoint.clone(), Findings::of(report));
                if let Some(e) = run.checkpoint.take_error() {
                    report.note_advisory(e);
                }
                let current_bucket = checkpoint.done_through.0[0];
                let finished = unrecorded.partition_point(|o| o.0[0] < current_bucket);
                if let Err(e) = self.record_scrubbed(&unrecorded[..finished], started_unix) {
                    report.note_advisory(e);
                }
                unrecorded.drain(..finished);
                Ok::<(), Error>(())
            };
        let mut pending = Vec::with_capacity(batch);
        // Only --percent needs to know when each object was last scrubbed.
        let histories = match options.percent {
            Some(_) => self.history_buckets(),
            None => BTreeSet::new(),
        };
        for bucket in self.buckets_to_walk(&temp_files) {
            let history = match histories.contains(&bucket) {
                true => self.load_history(bucket),
                false => ScrubHistory::default(),
            };
            for object in self.objects_of_bucket(bucket, &temp_files) {
                if !selection.takes(history.last_scrubbed(object), &mut taken_at_threshold) {
                    continue;
                }
                if resuming && object <= checkpoint.done_through {
                    report.skipped_by_resume += 1;
                    run.meter.object_done(skipped_bytes);
                    continue;
                }
                if resuming && run.checkpoint.resumed_done(object) {
                    // Verified clean after the interrupted run's last batch: counted here, as
                    // the batch's findings would have counted it.
                    report.skipped_by_resume += 1;
                    report.objects += 1;
                    run.meter.object_done(skipped_bytes);
                    continue;
                }
                pending.push(object);
                if pending.len() == batch {
                    run_batch(&pending, &mut report, &mut checkpoint)?;
                    pending.clear();
                }
            }
        }
        if !pending.is_empty() {
            run_batch(&pending, &mut report, &mut checkpoint)?;
        }
        if let Err(e) = self.record_scrubbed(&unrecorded, started_unix) {
            report.note_advisory(e);
        }
        self.remove_checkpoint();
        for summary in &mut report.locations {
            if summary.write_failures > 0 && summary.state == LocationState::Healthy {
                summary.state = LocationState::NotWritable {
                    refused: summary.write_failures,
                };
            }
        }
        for lost in &mut report.unrecoverable {
            self.name_packed_keys(lost);
        }
        // Only a whole scrub that left every pack verified (or rebuilt) compacts: a pack still
        // damaged, or not looked at, is not read to be copied.
        let whole = options.prefix.is_none() && options.percent.is_none();
        if options.repair && whole && report.counts.unrepaired == 0 && report.unrecoverable.is_empty() {
            report.compaction = self.compact_packs();
        }
        for (summary, (slot, before)) in report
            .locations
            .iter_mut()
            .zip(self.slots.iter().zip(&network_before))
        {
            summary.network = slot
                .location
                .network()
                .map(|after| after.since(before.unwrap_or_default()));
        }
        report.duration_secs = started.elapsed().as_secs_f64();
        report.finished_unix = state::now_unix();
        if let Err(e) = self.save_last_report(&report) {
            // The saved report lacks this line; the one returned has it.
            report.note_advisory(e);
        }
        Ok(report)
    }

    /// Re-reads every location's identity; with `repair`, claims wiped (or damaged-identity)
    /// locations again so their shards are rebuilt. Foreign disks are never touched.
    fn check_locations(&self, repair: bool) -> Vec<LocationSummary> {
        self.slots
            .iter()
            .enumerate()
            .map(|(slot, s)| {
                // The identity is read once; the slot's problem follows from what was done.
                let (state, problem) = match check_identity(&*s.location, &self.file, slot) {
                    None => (LocationState::Healthy, None),
                    // A missing directory may be an unmounted disk: never create it.
                    Some(p) if repair && p.rebuildable() && s.location.is_there() => {
                        let identity = LocationIdentity {
                            store_id: self.file.store_id,
                            slot: slot as u16,
                            location_count: self.slots.len() as u16,
                        };
                        match s.location.write_identity(&identity.encode()) {
                            Ok(()) => (LocationState::Rebuilt { was: p }, None),
                            Err(e) => {
                                self.note_write_error(&e);
                                let state = LocationState::RebuildFailed {
                                    problem: p.clone(),
                                    detail: e.to_string(),
                                };
                                (state, Some(p))
                            }
                        }
                    }
                    Some(p) => (LocationState::Unusable { problem: p.clone() }, Some(p)),
                };
                s.set_problem(problem);
                LocationSummary {
                    slot,
                    path: s.dir.clone(),
                    state,
                    ..LocationSummary::default()
                }
            })
            .collect()
    }

    fn sync_locations(&self) -> Result<()> {
        for slot in &self.slots {
            if let Ok(location) = slot.usable() {
                location.sync().map_err(|e| {
                    self.note_write_error(&e);
                    Error::io(&slot.dir, e)
                })?;
            }
        }
        Ok(())
    }

    /// The buckets with objects or temporary files, in order.
    fn buckets_to_walk(&self, temp_files: &BTreeMap<ObjectId, Vec<(usize, String)>>) -> BTreeSet<u8> {
        let mut buckets = self.occupied_buckets();
        buckets.extend(temp_files.keys().map(|o| o.0[0]));
        buckets
    }

    /// The objects of one bucket with a shard file or a temporary file at some usable location,
    /// in id order.
    fn objects_of_bucket(
        &self,
        bucket: u8,
        temp_files: &BTreeMap<ObjectId, Vec<(usize, String)>>,
    ) -> BTreeSet<ObjectId> {
        let mut objects = self.bucket_objects(bucket);
        objects.extend(temp_files.keys().filter(|o| o.0[0] == bucket));
        objects
    }

    /// Counts the objects and, for `percent`, finds which to take: every object last scrubbed
    /// before the threshold time, and the first `at_threshold` (in id order) scrubbed at it.
    /// Only a histogram of scrub times is held, never the object list.
    fn select(
        &self,
        percent: Option<u8>,
        temp_files: &BTreeMap<ObjectId, Vec<(usize, String)>>,
    ) -> Result<Selection> {
        let mut ages: BTreeMap<u64, u64> = BTreeMap::new();
        let mut total = 0u64;
        // The shard bytes of the first objects met estimate the average: object ids are hashes,
        // so the first buckets are a fair sample, and measuring every object would cost a
        // small-object scrub a tenth of its time.
        let (mut sampled, mut sampled_bytes) = (0u64, 0u64);
        let histories = self.history_buckets();
        // Buckets with a history but no objects left are walked too, so their history is pruned.
        let mut buckets = self.buckets_to_walk(temp_files);
        buckets.extend(&histories);
        for bucket in buckets {
            let history = match histories.contains(&bucket) {
                true => self.load_history(bucket),
                false => ScrubHistory::default(),
            };
            let objects = self.objects_of_bucket(bucket, temp_files);
            for &object in &objects {
                *ages.entry(history.last_scrubbed(object)).or_default() += 1;
                total += 1;
                if sampled < SIZE_SAMPLE {
                    sampled += 1;
                    sampled_bytes += self.shard_bytes(object);
                }
            }
            // Advisory: a history that cannot be pruned only keeps a few stale entries.
            let _ = self.forget_deleted(bucket, history, &objects);
        }
        let bytes_of = |objects: u64| sampled_bytes / sampled.max(1) * objects;
        let everything = Selection {
            objects: total,
            bytes: bytes_of(total),
            threshold: u64::MAX,
            at_threshold: u64::MAX,
        };
        let Some(percent) = percent else {
            return Ok(everything);
        };
        let keep = (total * u64::from(percent)).div_ceil(100);
        let mut before = 0;
        for (&age, &count) in &ages {
            if before + count >= keep {
                return Ok(Selection {
                    objects: keep,
                    bytes: bytes_of(keep),
                    threshold: age,
                    at_threshold: keep - before,
                });
            }
            before += count;
        }
        Ok(everything)
    }

    /// An estimate of the shard bytes a scrub reads for `object`: the longest of its shard files
    /// at the first location that lists any, times the number of locations (0 if none is
    /// found). One directory read and a few opens: cheap beside verifying the object.
    fn shard_bytes(&self, object: ObjectId) -> u64 {
        let n = self.slots.len() as u64;
        self.slots
            .iter()
            .filter_map(|s| s.usable().ok()?.open_shards(object).ok())
            .find(|files| !files.is_empty())
            .and_then(|files| {
                files
                    .iter()
                    .filter_map(|f| f.file.as_ref().ok().map(|f| f.len()))
                    .max()
            })
            .map_or(0, |len| len * n)
    }

    /// The temporary shard files at every usable location, by object.
    fn temp_files(&self) -> BTreeMap<ObjectId, Vec<(usize, String)>> {
        let mut by_object: BTreeMap<ObjectId, Vec<(usize, String)>> = BTreeMap::new();
        for (slot, s) in self.slots.iter().enumerate() {
            let Ok(location) = s.usable() else { continue };
            for name in location.list_temp().unwrap_or_default() {
                if let Some(object) = temp_file_object(&name) {
                    by_object.entry(object).or_default().push((slot, name));
                }
            }
        }
        by_object
    }
}
