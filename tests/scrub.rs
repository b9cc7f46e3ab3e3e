//! Scrub finds every kind of damage in the fault model, repair fixes it, a second scrub comes
//! back clean, and every object reads back byte-exact; beyond tolerance it names the object and
//! writes nothing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{chunk_offset, data, reopen, rot, shard_paths, store};
use shardguard::checksum::ChunkId;
use shardguard::location::{ObjectId, WriteStamp};
use shardguard::{
    LocationProblem, LocationState, ScrubOptions, ScrubReport, ScrubVerdict, ShardState, Store,
};

const CHUNK: u32 = 4096;

fn scrub(store: &Store, repair: bool) -> ScrubReport {
    let options = ScrubOptions::default().repair(repair);
    store.scrub(&options, &|_| {}).expect("scrub runs")
}

/// Resumes an interrupted scrub with `options`.
fn resume(store: &Store, options: &ScrubOptions) -> ScrubReport {
    let options = options.clone().resume(true);
    store.scrub(&options, &|_| {}).unwrap()
}

fn deep(store: &Store, repair: bool) -> ScrubReport {
    let options = ScrubOptions::default().repair(repair).deep(true);
    store.scrub(&options, &|_| {}).expect("scrub runs")
}

/// Puts a few objects of several stripes; returns (key, bytes).
fn fill(store: &Store, count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let key = format!("obj/{i}");
            let bytes = data(i as u64, 3 * 4 * CHUNK as usize + 100 * i);
            store.put(&key, &bytes[..]).unwrap();
            (key, bytes)
        })
        .collect()
}

fn assert_all_read_back(store: &Store, objects: &[(String, Vec<u8>)]) {
    for (key, bytes) in objects {
        assert!(store.get_bytes(key).unwrap() == *bytes, "{key} differs");
    }
}

fn assert_all_healthy(store: &Store, objects: &[(String, Vec<u8>)]) {
    for (key, _) in objects {
        let stat = store.stat(key).unwrap();
        assert!(
            stat.shards.iter().all(|s| s.state == ShardState::Healthy),
            "{stat:?}"
        );
    }
}

/// Verify finds it (damage, repairable), repair fixes it, the next scrub is clean, data intact.
fn find_repair_clean(dir: &Path, objects: &[(String, Vec<u8>)]) -> (ScrubReport, ScrubReport) {
    let store = reopen(dir);
    let found = scrub(&store, false);
    assert_eq!(found.verdict(), ScrubVerdict::NeedsRepair, "{found:#?}");
    let repaired = scrub(&store, true);
    assert_eq!(repaired.verdict(), ScrubVerdict::Repaired, "{repaired:#?}");
    assert_eq!(repaired.counts.unrepaired, 0, "{repaired:#?}");
    let store = reopen(dir);
    let clean = scrub(&store, false);
    assert_eq!(clean.verdict(), ScrubVerdict::Clean, "{clean:#?}");
    assert_eq!(clean.counts.leftover_files, 0, "{clean:#?}");
    assert_all_read_back(&store, objects);
    assert_all_healthy(&store, objects);
    (found, repaired)
}

#[test]
fn a_clean_store_scrubs_clean_and_counts_everything() {
    let (dir, store) = store(4, 2, CHUNK);
    let objects = fill(&store, 3);
    let report = scrub(&store, false);
    assert_eq!(report.verdict(), ScrubVerdict::Clean);
    assert_eq!(report.objects, 3);
    let stripes: u64 = objects
        .iter()
        .map(|(_, b)| (b.len() as u64).div_ceil(4 * u64::from(CHUNK)))
        .sum();
    assert_eq!(report.counts.chunks_verified, stripes * 6);
    assert_eq!(report.locations.len(), 6);
    assert_eq!(reopen(dir.path()).last_scrub().unwrap().objects, 3);
}

#[test]
fn rotten_chunks_are_rewritten_in_place() {
    let (dir, store) = store(4, 2, CHUNK);
    let objects = fill(&store, 3);
    let paths = shard_paths(&store, "obj/1");
    rot(&paths[0], chunk_offset("obj/1", CHUNK, 1) + 10, 4);
    rot(&paths[5], chunk_offset("obj/1", CHUNK, 2) + 10, 1);
    let (found, repaired) = find_repair_clean(dir.path(), &objects);
    assert_eq!((found.counts.damaged_chunks, found.counts.unrepaired), (2, 2));
    assert_eq!(
        (repaired.counts.repaired_chunks, repaired.counts.rebuilt_shards),
        (2, 0)
    );
    // Repair cost follows the damage: one verification pass reads every chunk once (the two
    // rotten ones fail it), and nothing else was rewritten.
    let total_chunks: u64 = objects
        .iter()
        .map(|(_, b)| 6 * (b.len() as u64).div_ceil(4 * u64::from(CHUNK)))
        .sum();
    assert_eq!(repaired.counts.chunks_verified, total_chunks - 2);
}

#[test]
fn a_misplaced_chunk_is_found_and_replaced() {
    let (dir, store) = store(4, 2, CHUNK);
    let objects = fill(&store, 2);
    let here = shard_paths(&store, "obj/0");
    let there = shard_paths(&store, "obj/1");
    let chunk = {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; CHUNK as usize + 4];
        fs::File::open(&there[3])
            .unwrap()
            .read_exact_at(&mut buf, chunk_offset("obj/1", CHUNK, 0))
            .unwrap();
        buf
    };
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&here[3]).unwrap();
        f.write_all_at(&chunk, chunk_offset("obj/0", CHUNK, 0)).unwrap();
    }
    let (found, _) = find_repair_clean(dir.path(), &objects);
    assert_eq!(found.counts.damaged_chunks, 1);
}

#[test]
fn missing_truncated_and_header_damaged_shards_are_rebuilt() {
    let (dir, store) = store(4, 2, CHUNK);
    let objects = fill(&store, 3);
    fs::remove_file(&shard_paths(&store, "obj/0")[2]).unwrap();
    let truncated = &shard_paths(&store, "obj/1")[4];
    let len = fs::metadata(truncated).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(truncated)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    rot(&shard_paths(&store, "obj/2")[1], 20, 1);
    let (found, repaired) = find_repair_clean(dir.path(), &objects);
    assert_eq!(found.counts.damaged_shards, 3, "{found:#?}");
    assert_eq!(repaired.counts.rebuilt_shards, 3);
}

#[test]
fn a_stale_shard_is_rewritten_to_the_quorum_version() {
    let (dir, store) = store(4, 2, CHUNK);
    store.put("obj/0", &data(99, 5000)[..]).unwrap();
    let old = shard_paths(&store, "obj/0")[3].clone();
    let saved = fs::read(&old).unwrap();
    let objects = fill(&store, 1);
    fs::remove_file(&shard_paths(&store, "obj/0")[3]).unwrap();
    fs::write(&old, saved).unwrap();
    let (found, repaired) = find_repair_clean(dir.path(), &objects);
    assert_eq!((found.counts.stale_shards, found.counts.leftover_files), (1, 1));
    assert_eq!(
        (
            repaired.counts.rebuilt_shards,
            repaired.counts.leftover_files_removed
        ),
        (1, 1)
    );
    assert!(!old.exists(), "the stale file is removed");
}

#[test]
fn a_wiped_location_is_rebuilt_in_full() {
    let (dir, store) = store(4, 2, CHUNK);
    let objects = fill(&store, 4);
    let wiped = store.locations()[2].clone();
    fs::remove_dir_all(&wiped).unwrap();
    fs::create_dir(&wiped).unwrap();
    let (found, repaired) = find_repair_clean(dir.path(), &objects);
    assert_eq!(
        found.locations[2].state,
        LocationState::Unusable {
            problem: LocationProblem::IdentityMissing
        },
    );
    assert_eq!(repaired.locations[2].rebuilt_shards, 4);
    assert_eq!(
        repaired.locations[2].state,
        LocationState::Rebuilt {
            was: LocationProblem::IdentityMissing
        }
    );
}

#[test]
fn leftovers_of_crashed_writes_are_removed_and_are_not_damage() {
    let (dir, store) = store(4, 2, CHUNK);
    let objects = fill(&store, 2);
    let object = ObjectId::of_key("obj/0");
    // A temporary file of a put that died, and a newer write that reached only one location.
    let tmp = store.locations()[0]
        .join("tmp")
        .join(format!("{}-1234.tmp", object.to_hex()));
    fs::write(&tmp, b"half a shard").unwrap();
    let current = shard_paths(&store, "obj/0")[0].clone();
    let newer = WriteStamp {
        version: 99,
        write_id: 7,
    };
    let partial = current.with_file_name(newer.file_name());
    fs::copy(&current, &partial).unwrap();
    let store = reopen(dir.path());
    let found = scrub(&store, false);
    assert_eq!(found.verdict(), ScrubVerdict::Clean, "{found:#?}");
    assert_eq!(found.counts.leftover_files, 2);
    let cleaned = scrub(&store, true);
    assert_eq!(cleaned.counts.leftover_files_removed, 2);
    assert!(!tmp.exists() && !partial.exists());
    assert_all_read_back(&store, &objects);
}

#[test]
fn damage_mixed_across_objects_is_all_repaired() {
    let (dir, store) = store(3, 2, CHUNK);
    let objects = fill(&store, 6);
    rot(
        &shard_paths(&store, "obj/0")[0],
        chunk_offset("obj/0", CHUNK, 0),
        8,
    );
    fs::remove_file(&shard_paths(&store, "obj/1")[4]).unwrap();
    rot(&shard_paths(&store, "obj/2")[2], 3, 2);
    let t = &shard_paths(&store, "obj/3")[1];
    fs::OpenOptions::new()
        .write(true)
        .open(t)
        .unwrap()
        .set_len(200)
        .unwrap();
    let wiped = store.locations()[4].clone();
    fs::remove_dir_all(&wiped).unwrap();
    fs::create_dir(&wiped).unwrap();
    find_repair_clean(dir.path(), &objects);
}

#[test]
fn beyond_tolerance_names_the_key_and_writes_nothing() {
    let (dir, store) = store(4, 2, CHUNK);
    let objects = fill(&store, 3);
    let lost = shard_paths(&store, "obj/1");
    for p in &lost[..3] {
        rot(p, chunk_offset("obj/1", CHUNK, 1), 1);
    }
    // Repairable damage elsewhere is still repaired.
    fs::remove_file(&shard_paths(&store, "obj/2")[0]).unwrap();
    let before: Vec<Vec<u8>> = lost.iter().map(|p| fs::read(p).unwrap()).collect();
    let store = reopen(dir.path());
    let report = scrub(&store, true);
    assert_eq!(report.verdict(), ScrubVerdict::Unrecoverable);
    assert_eq!(report.unrecoverable.len(), 1, "{report:#?}");
    assert_eq!(report.unrecoverable[0].key, "obj/1");
    assert_eq!(report.unrecoverable[0].stripes, vec![1]);
    let after: Vec<Vec<u8>> = lost.iter().map(|p| fs::read(p).unwrap()).collect();
    assert!(before == after, "surviving chunks untouched");
    assert_eq!(store.get_bytes("obj/2").unwrap(), objects[2].1);
    assert!(store
        .stat("obj/2")
        .unwrap()
        .shards
        .iter()
        .all(|s| s.state == ShardState::Healthy));
}

#[test]
fn deep_scrub_catches_parity_written_wrong_with_a_valid_checksum() {
    let (dir, store) = store(4, 2, CHUNK);
    let objects = fill(&store, 1);
    let key = "obj/0";
    let path = &shard_paths(&store, key)[5];
    let stamp = WriteStamp::from_file_name(path.file_name().unwrap().to_str().unwrap()).unwrap();
    let garbage = data(1234, CHUNK as usize);
    let id = ChunkId {
        object: ObjectId::of_key(key),
        stamp,
        shard: 5,
        stripe: 0,
    };
    let mut framed = garbage.clone();
    framed.extend_from_slice(&id.checksum(&garbage).to_le_bytes());
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(&framed, chunk_offset(key, CHUNK, 0)).unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(
        scrub(&store, false).verdict(),
        ScrubVerdict::Clean,
        "checksums alone cannot see it"
    );
    let found = deep(&store, false);
    assert_eq!(
        (found.counts.parity_mismatches, found.verdict()),
        (1, ScrubVerdict::NeedsRepair)
    );
    assert_eq!(deep(&store, true).counts.repaired_chunks, 1);
    assert_eq!(deep(&store, false).verdict(), ScrubVerdict::Clean);
    assert_all_read_back(&store, &objects);
}

#[test]
fn a_foreign_location_is_reported_and_never_written() {
    let (dir, store) = store(4, 2, CHUNK);
    let objects = fill(&store, 2);
    let (_other_dir, other) = common::store(4, 2, CHUNK);
    let id_file = store.locations()[1].join(shardguard::location::IDENTITY_FILE);
    fs::copy(
        other.locations()[1].join(shardguard::location::IDENTITY_FILE),
        &id_file,
    )
    .unwrap();
    let foreign_identity = fs::read(&id_file).unwrap();
    let store = reopen(dir.path());
    let report = scrub(&store, true);
    assert_eq!(report.verdict(), ScrubVerdict::NeedsRepair, "{report:#?}");
    assert_eq!(
        report.locations[1].state,
        LocationState::Unusable {
            problem: LocationProblem::ForeignStore
        }
    );
    assert_eq!(fs::read(&id_file).unwrap(), foreign_identity);
    assert_all_read_back(&store, &objects);
}

#[test]
fn percent_picks_the_least_recently_scrubbed() {
    let (_dir, store) = store(2, 1, CHUNK);
    fill(&store, 4);
    let half = ScrubOptions::default().percent(50);
    let first = store.scrub(&half, &|_| {}).unwrap();
    assert_eq!(first.objects, 2);
    // The other half has never been scrubbed, so it comes next. (Both runs may share a second,
    // so "least recently" is decided by the never-scrubbed ones first.)
    let second = store.scrub(&half, &|_| {}).unwrap();
    assert_eq!(second.objects, 2);
    let everything = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert_eq!(everything.objects, 4);
}

/// Which half a `--percent 50` scrub takes is decided by the history, not by id order: whichever
/// pair was scrubbed first (by prefix), the damage in the other pair is what the half finds.
#[test]
fn percent_takes_the_objects_the_history_says_were_not_scrubbed() {
    for (scrubbed, rotten) in [([0, 1], [2, 3]), ([2, 3], [0, 1])] {
        let (_dir, store) = store(2, 1, CHUNK);
        fill(&store, 4);
        for i in scrubbed {
            let only = ScrubOptions::default().prefix(format!("obj/{i}"));
            assert_eq!(store.scrub(&only, &|_| {}).unwrap().objects, 1);
        }
        for i in rotten {
            let key = format!("obj/{i}");
            rot(&shard_paths(&store, &key)[0], chunk_offset(&key, CHUNK, 0) + 3, 1);
        }
        let half = ScrubOptions::default().percent(50);
        let report = store.scrub(&half, &|_| {}).unwrap();
        assert_eq!(report.objects, 2);
        assert_eq!(
            report.counts.damaged_chunks, 2,
            "scrubbed first {scrubbed:?}: {report:#?}"
        );
    }
}

#[test]
fn a_resumed_scrub_skips_what_was_verified_before_the_interruption() {
    let (_dir, store) = common::store(2, 1, 1024);
    for i in 0..300 {
        store.put(&format!("k{i}"), &data(i, 1500)[..]).unwrap();
    }
    let one_job = ScrubOptions::default().jobs(1);
    // Interrupt at the 150th object: what finished before it was checkpointed, in batches.
    let interrupted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.scrub(&one_job, &|p| assert!(p.objects_done < 150, "interrupted"))
    }));
    assert!(interrupted.is_err());
    let resumed = resume(&store, &one_job);
    let skipped = resumed.skipped_by_resume;
    assert!((64..150).contains(&skipped), "{resumed:#?}");
    // The interrupted run's findings count: every object verified once, in one run or the other.
    assert_eq!(resumed.objects, 300, "{resumed:#?}");
    // Finished, so the next resume starts over.
    let again = resume(&store, &one_job);
    assert_eq!((again.skipped_by_resume, again.objects), (0, 300));
}

#[test]
fn deleted_objects_leave_nothing_for_scrub() {
    let (dir, store) = store(2, 1, CHUNK);
    fill(&store, 2);
    store.delete("obj/0").unwrap();
    let report = scrub(&store, true);
    assert_eq!((report.objects, report.verdict()), (1, ScrubVerdict::Clean));
    let left: Vec<PathBuf> = store
        .locations()
        .iter()
        .flat_map(|l| walk(&l.join("objects")))
        .collect();
    assert_eq!(left.len(), 3, "only obj/1's shards remain: {left:?}");
    drop(dir);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The key scrubbed first (scrubs walk objects in id order).
fn first_in_id_order(keys: &[String]) -> String {
    keys.iter()
        .min_by_key(|k| shardguard::location::ObjectId::of_key(k))
        .unwrap()
        .clone()
}

/// Starts a 1-job scrub with `options` and interrupts it at the 150th of 300 objects.
fn interrupted_scrub(store: &Store, options: &ScrubOptions) {
    let one_job = options.clone().jobs(1);
    let interrupted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.scrub(&one_job, &|p| assert!(p.objects_done < 150, "interrupted"))
    }));
    assert!(interrupted.is_err());
}

#[test]
fn resuming_with_other_options_starts_afresh_and_says_so() {
    let (_dir, store) = common::store(2, 1, 1024);
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        store.put(key, &data(i as u64, 1500)[..]).unwrap();
    }
    let damaged = first_in_id_order(&keys);
    rot(
        &common::shard_paths(&store, &damaged)[0],
        chunk_offset(&damaged, 1024, 0) + 3,
        2,
    );
    // A verify-only scrub saw the damage, then was interrupted.
    interrupted_scrub(&store, &ScrubOptions::default());
    let repair = ScrubOptions::default().repair(true).resume(true).jobs(1);
    let report = store.scrub(&repair, &|_| {}).unwrap();
    assert_eq!(
        report.resume,
        shardguard::ResumeOutcome::OptionsDiffer,
        "{report:#?}"
    );
    assert_eq!((report.skipped_by_resume, report.objects), (0, 300));
    assert_eq!(
        report.verdict(),
        ScrubVerdict::Repaired,
        "the damage was skipped: {report:#?}"
    );
    assert_eq!(
        store.scrub(&ScrubOptions::default(), &|_| {}).unwrap().verdict(),
        ScrubVerdict::Clean
    );
}

#[test]
fn what_an_interrupted_scrub_found_counts_in_the_resumed_verdict() {
    let (_dir, store) = common::store(2, 1, 1024);
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        store.put(key, &data(i as u64, 1500)[..]).unwrap();
    }
    let lost = first_in_id_order(&keys);
    let paths = common::shard_paths(&store, &lost);
    rot(&paths[0], chunk_offset(&lost, 1024, 0) + 3, 2);
    rot(&paths[1], chunk_offset(&lost, 1024, 0) + 3, 2);
    interrupted_scrub(&store, &ScrubOptions::default());
    let resume = ScrubOptions::default().resume(true).jobs(1);
    let report = store.scrub(&resume, &|_| {}).unwrap();
    assert_eq!(report.resume, shardguard::ResumeOutcome::Resumed);
    assert!(report.skipped_by_resume >= 64, "{report:#?}");
    assert_eq!(report.verdict(), ScrubVerdict::Unrecoverable, "{report:#?}");
    assert_eq!(report.unrecoverable[0].key, lost);
}

/// A reader of `len` seeded bytes, generated as read (no copy of a large object in memory).
struct Generated {
    left: u64,
    block: Vec<u8>,
    pos: usize,
}

impl std::io::Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize).min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos = (self.pos + n) % self.block.len();
        self.left -= n as u64;
        Ok(n)
    }
}

#[test]
fn a_killed_scrub_of_one_large_object_resumes_inside_it() {
    const GIB: u64 = 1 << 30;
    let (_dir, store) = common::store(4, 2, 1 << 20);
    // 2.5 GiB of data: 3.75 GiB of shard files.
    let len = 5 * GIB / 2;
    let block = data(7, (1 << 20) + 7); // not a divisor of the chunk size: stripes differ
    store
        .put(
            "backup.tar",
            Generated {
                left: len,
                block,
                pos: 0,
            },
        )
        .unwrap();
    let total = len / 4 * 6;
    let one_job = ScrubOptions::default().jobs(1);
    // Killed once 3 GiB of shard files were read (the checkpoint saves every 1 GiB of reading).
    let killed_at = 3 * GIB;
    let interrupted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.scrub(&one_job, &|p| assert!(p.bytes_done < killed_at, "interrupted"))
    }));
    assert!(interrupted.is_err());
    let resumed = resume(&store, &one_job);
    // The object's checksum, carried across the kill, still verifies it whole.
    assert_eq!(resumed.verdict(), ScrubVerdict::Clean, "{resumed:#?}");
    // At most the bound (1 GiB of reading) is read again.
    let reread = resumed.counts.bytes_verified;
    assert!(
        reread <= total - killed_at + GIB,
        "{reread} bytes read on resume, of {total}"
    );
}

#[test]
fn a_scrub_cancelled_from_its_callback_stops_and_resumes_where_it_stopped() {
    let (_dir, store) = common::store(2, 1, 1024);
    for i in 0..300 {
        store.put(&format!("k{i}"), &data(i, 1500)[..]).unwrap();
    }
    let cancel = shardguard::ScrubCancel::new();
    let options = ScrubOptions::default().jobs(1).cancel(cancel.clone());
    let stopped = store.scrub(&options, &|p| {
        if p.objects_done >= 150 {
            cancel.cancel();
        }
    });
    assert!(
        matches!(stopped, Err(shardguard::Error::Cancelled)),
        "{stopped:?}"
    );
    // The resumed scrub repeats nothing: the objects finished before the cancel, whole batches
    // or not, are in the checkpoint.
    let resumed = resume(&store, &ScrubOptions::default().jobs(1));
    assert_eq!(resumed.skipped_by_resume, 150, "{resumed:#?}");
    assert_eq!(resumed.objects, 300);
    assert_eq!(resumed.verdict(), ScrubVerdict::Clean);
}
