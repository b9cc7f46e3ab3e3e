//! Each read/write row of the design's fault table: the fault is detected and ends in correct
//! bytes (or, for writes, a clean failure that leaves the previous version current).

mod common;

use std::fs;
use std::sync::Arc;

use common::{chunk_offset, data, reopen, rot, shard_paths, store};
use shardguard::fault::{Fault, FaultPlan, Persistence, Rule};
use shardguard::location::IDENTITY_FILE;
use shardguard::{Durability, Error, LocationProblem, ScrubOptions, ShardState, Store};

const CHUNK: u32 = 4096;

fn put_sample(store: &Store, key: &str, seed: u64) -> Vec<u8> {
    let bytes = data(seed, 5 * 4 * CHUNK as usize + 123);
    store.put(key, &bytes[..]).unwrap();
    bytes
}

fn state_of(store: &Store, key: &str, shard: usize) -> ShardState {
    let stat = store.stat(key).unwrap();
    stat.shards.into_iter().find(|s| s.shard == shard).unwrap().state
}

/// A store whose locations are wrapped by a seeded fault plan.
fn faulty_store(seed: u64) -> (tempfile::TempDir, Store, Arc<FaultPlan>) {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new(seed);
    let store = Store::builder()
        .durability(Durability::PageCache)
        .location_wrapper(plan.wrapper())
        .data_shards(4)
        .parity_shards(2)
        .chunk_size(CHUNK)
        .create(dir.path())
        .unwrap();
    (dir, store, plan)
}

#[test]
fn bit_rot_is_detected_retried_then_rebuilt_from_parity() {
    let (_dir, store) = store(4, 2, CHUNK);
    let bytes = put_sample(&store, "k", 1);
    let paths = shard_paths(&store, "k");
    rot(&paths[1], chunk_offset("k", CHUNK, 2) + 100, 1);
    let mut reader = store.get("k").unwrap();
    let mut out = Vec::new();
    reader.copy_to(&mut out).unwrap();
    assert_eq!(out, bytes);
    let stats = reader.stats();
    assert_eq!((stats.erasures, stats.stripes_reconstructed), (1, 1));
    // Persistent rot: the retries were spent and did not cure it.
    assert_eq!((stats.retransmissions, stats.cured_by_retransmission), (2, 0));
}

#[test]
fn a_chunk_from_another_object_or_stripe_fails_its_bound_checksum() {
    let (_dir, store) = store(4, 2, CHUNK);
    let bytes = put_sample(&store, "k", 2);
    put_sample(&store, "other", 3);
    let here = shard_paths(&store, "k");
    let there = shard_paths(&store, "other");
    let chunk_with_crc = CHUNK as usize + 4;
    let read = |path: &std::path::Path, offset: u64| {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; chunk_with_crc];
        fs::File::open(path)
            .unwrap()
            .read_exact_at(&mut buf, offset)
            .unwrap();
        buf
    };
    let write = |path: &std::path::Path, offset: u64, buf: &[u8]| {
        use std::os::unix::fs::FileExt;
        fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .write_all_at(buf, offset)
            .unwrap();
    };
    // Same shard and stripe of another object (a valid chunk with a valid CRC, wrong place).
    let foreign = read(&there[0], chunk_offset("other", CHUNK, 0));
    write(&here[0], chunk_offset("k", CHUNK, 0), &foreign);
    // Another stripe of the same shard file.
    let other_stripe = read(&here[2], chunk_offset("k", CHUNK, 3));
    write(&here[2], chunk_offset("k", CHUNK, 1), &other_stripe);
    let mut reader = store.get("k").unwrap();
    let mut out = Vec::new();
    reader.copy_to(&mut out).unwrap();
    assert_eq!(out, bytes);
    assert_eq!(reader.stats().erasures, 2);
}

#[test]
fn a_damaged_header_is_reported_and_its_chunks_still_serve() {
    let (_dir, store) = store(4, 2, CHUNK);
    let bytes = put_sample(&store, "k", 4);
    let paths = shard_paths(&store, "k");
    rot(&paths[0], 50, 1);
    assert!(matches!(
        state_of(&store, "k", 0),
        ShardState::HeaderDamaged { .. }
    ));
    let mut reader = store.get("k").unwrap();
    let mut out = Vec::new();
    reader.copy_to(&mut out).unwrap();
    assert_eq!(out, bytes);
    // The metadata came from the other shards; the damaged file's chunks verified.
    assert_eq!(reader.stats().erasures, 0);
}

#[test]
fn truncated_and_missing_shard_files_are_erasures() {
    let (_dir, store) = store(4, 2, CHUNK);
    let bytes = put_sample(&store, "k", 5);
    let paths = shard_paths(&store, "k");
    let len = fs::metadata(&paths[1]).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&paths[1])
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    fs::remove_file(&paths[3]).unwrap();
    assert!(matches!(state_of(&store, "k", 1), ShardState::Truncated { .. }));
    assert_eq!(state_of(&store, "k", 3), ShardState::Missing);
    assert_eq!(store.get_bytes("k").unwrap(), bytes);
}

#[test]
fn a_stale_shard_is_outvoted_by_the_quorum_version() {
    let (_dir, store) = store(4, 2, CHUNK);
    put_sample(&store, "k", 6);
    let old = shard_paths(&store, "k");
    let saved = fs::read(&old[2]).unwrap();
    let new = put_sample(&store, "k", 7);
    let current = shard_paths(&store, "k");
    // The lost write: location 2 still holds version 1 instead of version 2.
    fs::remove_file(&current[2]).unwrap();
    fs::write(&old[2], saved).unwrap();
    assert_eq!(state_of(&store, "k", 2), ShardState::Stale { version: 1 });
    assert_eq!(store.stat("k").unwrap().version, 2);
    assert_eq!(store.get_bytes("k").unwrap(), new);
}

#[test]
fn a_wiped_or_foreign_location_is_recognised_and_read_around() {
    let (dir, store) = store(4, 2, CHUNK);
    let a = put_sample(&store, "a", 8);
    let b = put_sample(&store, "b", 9);
    let locations = store.locations();
    // Slot 1: wiped and replaced by an empty disk.
    fs::remove_dir_all(&locations[1]).unwrap();
    fs::create_dir(&locations[1]).unwrap();
    // Slot 4: another store's disk mounted in its place.
    let (_other_dir, other) = common::store(4, 2, CHUNK);
    fs::copy(
        other.locations()[4].join(IDENTITY_FILE),
        locations[4].join(IDENTITY_FILE),
    )
    .unwrap();
    let store = reopen(dir.path());
    let problems = store.location_problems();
    assert_eq!(problems[1], Some(LocationProblem::IdentityMissing));
    assert_eq!(problems[4], Some(LocationProblem::ForeignStore));
    assert_eq!(store.get_bytes("a").unwrap(), a);
    assert_eq!(store.get_bytes("b").unwrap(), b);
}

#[test]
fn transient_faults_are_cured_by_retransmission_and_counted() {
    let (_dir, store, plan) = faulty_store(0x5eed);
    let bytes = put_sample(&store, "k", 10);
    plan.inject(Rule::at(0, Fault::FlipBit(Persistence::Transient { times: 1 })));
    plan.inject(Rule::at(1, Fault::ReadError(Persistence::Transient { times: 2 })));
    plan.inject(Rule::at(2, Fault::FlipBit(Persistence::Transient { times: 1 })));
    let mut reader = store.get("k").unwrap();
    let mut out = Vec::new();
    reader.copy_to(&mut out).unwrap();
    assert_eq!(out, bytes, "seed {}", plan.seed());
    let stats = reader.stats();
    assert!(plan.injected() > 0);
    // Each of the 6 stripes hit the data shards held by slots 0, 1, 2 (whichever shards those
    // are, at most 3 of the 4 data chunks); none needed parity.
    assert_eq!(stats.erasures, 0, "{stats:?}");
    assert_eq!(stats.stripes_reconstructed, 0);
    assert!(stats.cured_by_retransmission > 0, "{stats:?}");
    assert_eq!(stats.retransmissions, plan.injected(), "{stats:?}");
}

#[test]
fn persistent_faults_outlast_the_retries_and_become_erasures() {
    let (_dir, store, plan) = faulty_store(0xbad);
    let bytes = put_sample(&store, "k", 11);
    plan.inject(Rule::at(0, Fault::FlipBit(Persistence::Persistent)));
    plan.inject(Rule::at(5, Fault::ReadError(Persistence::Persistent)));
    let mut reader = store.get("k").unwrap();
    let mut out = Vec::new();
    reader.copy_to(&mut out).unwrap();
    assert_eq!(out, bytes, "seed {}", plan.seed());
    assert!(reader.stats().erasures > 0);
    assert_eq!(reader.stats().cured_by_retransmission, 0);
}

#[test]
fn hidden_and_truncated_files_from_the_fault_layer_are_erasures() {
    let (_dir, store, plan) = faulty_store(3);
    let bytes = put_sample(&store, "k", 12);
    plan.inject(Rule::at(2, Fault::Hide).for_key("k"));
    plan.inject(Rule::at(3, Fault::Truncate { len: 5000 }).for_key("k"));
    assert_eq!(store.get_bytes("k").unwrap(), bytes);
}

#[test]
fn a_full_disk_fails_the_put_cleanly_and_keeps_the_old_version() {
    let (dir, store, plan) = faulty_store(4);
    let old = put_sample(&store, "k", 13);
    // One full disk: 5 of 6 shards are still a write quorum (k + 1).
    plan.inject(Rule::at(0, Fault::WriteError { after_bytes: 10_000 }));
    let newer = put_sample(&store, "k", 14);
    assert_eq!(store.get_bytes("k").unwrap(), newer);
    // Two full disks: below the quorum, the put fails and the previous version stays.
    plan.inject(Rule::at(3, Fault::WriteError { after_bytes: 20_000 }));
    let err = store.put("k", &data(15, 100_000)[..]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::WriteQuorum {
                written: 4,
                needed: 5,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.get_bytes("k").unwrap(), newer);
    assert_ne!(newer, old);
    // Nothing half-written is left in any location's temporary area.
    for loc in store.locations() {
        let leftovers: Vec<_> = fs::read_dir(loc.join("tmp")).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    // And the store is still usable once space is back.
    plan.clear();
    let last = put_sample(&store, "k", 16);
    assert_eq!(reopen(dir.path()).get_bytes("k").unwrap(), last);
}

#[test]
fn keys_are_names_that_never_escape_the_store() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("store");
    let store = Store::builder()
        .durability(Durability::PageCache)
        .data_shards(2)
        .parity_shards(1)
        .chunk_size(CHUNK)
        .create(&root)
        .unwrap();
    let keys = [
        "../../x",
        "/etc/passwd",
        "..",
        ".",
        "a/../../../b",
        "~",
        "\\..\\x",
        "naïve ключ 🗝",
        " ",
    ];
    for (i, key) in keys.iter().enumerate() {
        let bytes = data(i as u64, 100 + i);
        store.put(key, &bytes[..]).unwrap();
        assert_eq!(store.get_bytes(key).unwrap(), bytes, "{key:?}");
    }
    let listed: Vec<String> = store.list().unwrap().into_iter().map(|e| e.key).collect();
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    // Nothing was created next to the store.
    let beside: Vec<_> = fs::read_dir(outer.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("store")]);
    for key in ["", "a\0b", &"x".repeat(1025)] {
        assert!(
            matches!(store.put(key, &b""[..]), Err(Error::InvalidKey { .. })),
            "{key:?}"
        );
        assert!(
            matches!(store.get_bytes(key), Err(Error::InvalidKey { .. })),
            "{key:?}"
        );
    }
}

#[test]
fn scrub_cures_transient_faults_by_retransmission_and_does_not_call_them_damage() {
    let (_dir, store, plan) = faulty_store(0x7a11);
    let bytes = put_sample(&store, "k", 20);
    plan.inject(Rule::at(1, Fault::FlipBit(Persistence::Transient { times: 1 })));
    plan.inject(Rule::at(4, Fault::ReadError(Persistence::Transient { times: 2 })));
    let report = store
        .scrub(&shardguard::ScrubOptions::default(), &|_| {})
        .unwrap();
    assert_eq!(
        report.verdict(),
        shardguard::ScrubVerdict::Clean,
        "seed {}: {report:#?}",
        plan.seed()
    );
    assert_eq!(
        report.counts.transient_faults_cured, 12,
        "6 stripes × 2 faulty slots"
    );
    assert_eq!(store.get_bytes("k").unwrap(), bytes);
}

#[test]
fn scrub_repairs_persistent_read_faults_and_names_what_it_cannot_fix() {
    let (_dir, store, plan) = faulty_store(0x7a12);
    let bytes = put_sample(&store, "k", 21);
    // A slot whose reads always flip a bit: every chunk there is damaged, and rewriting it does
    // not help (the fault is in the read path), so repair reports it unrepaired.
    plan.inject(Rule::at(2, Fault::FlipBit(Persistence::Persistent)));
    let options = ScrubOptions::default().repair(true);
    let report = store.scrub(&options, &|_| {}).unwrap();
    assert_eq!(report.counts.damaged_chunks, 6, "{report:#?}");
    assert_eq!(report.counts.unrepaired, 6);
    assert_eq!(report.verdict(), shardguard::ScrubVerdict::NeedsRepair);
    plan.clear();
    assert_eq!(
        store.scrub(&options, &|_| {}).unwrap().verdict(),
        shardguard::ScrubVerdict::Clean
    );
    assert_eq!(store.get_bytes("k").unwrap(), bytes);
}

/// Repair costs reads in proportion to the damage: fixing two rotten chunks reads the store once
/// (the verification pass) plus the two damaged stripes again, never the store a second time.
#[test]
fn repairing_a_few_rotten_chunks_reads_only_their_stripes_again() {
    let (_dir, store, plan) = faulty_store(11);
    for i in 0..20 {
        put_sample(&store, &format!("k{i}"), 100 + i);
    }
    let verify = |repair| {
        let before = plan.bytes_read();
        let options = ScrubOptions::default().repair(repair);
        let report = store.scrub(&options, &|_| {}).unwrap();
        (plan.bytes_read() - before, report)
    };
    let (clean_pass, _) = verify(false);
    rot(&shard_paths(&store, "k3")[1], chunk_offset("k3", CHUNK, 2) + 7, 1);
    rot(&shard_paths(&store, "k9")[4], chunk_offset("k9", CHUNK, 5) + 7, 1);
    let (repair_pass, report) = verify(true);
    assert_eq!(report.counts.repaired_chunks, 2, "{report:#?}");
    // Per damaged stripe: its other chunks read again for their bytes, the rotten chunk's
    // retransmissions, and the patched chunk read back; bounded here by two reads of the stripe.
    let stripe_bytes = 6 * u64::from(CHUNK + 4);
    let extra = repair_pass - clean_pass;
    assert!(
        extra <= 2 * 2 * stripe_bytes,
        "repair read {extra} bytes beyond the {clean_pass}-byte verification pass"
    );
    let (after, report) = verify(false);
    assert_eq!(report.verdict(), shardguard::ScrubVerdict::Clean);
    assert_eq!(after, clean_pass);
}

/// A disk that stores what it was not given, while a fold copies the small-write log into new
/// packs: the fold reads every new pack back before it deletes the log, finds too many of its
/// shard files bad (three of six, parity two), removes that pack and keeps the log; the next
/// open folds it again. Not one object is lost (deleting the log after an unverified fold would
/// lose every one), and no undecodable pack is left behind.
#[test]
fn a_fold_whose_new_packs_do_not_read_back_keeps_the_log_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new(13);
    let store = Store::builder()
        .durability(Durability::Fsync)
        .location_wrapper(plan.wrapper())
        .data_shards(4)
        .parity_shards(2)
        .chunk_size(16384)
        .pack_threshold(8192)
        .create(dir.path())
        .unwrap();
    let objects: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| (format!("k{i}"), data(i, 2000 + 100 * i as usize)))
        .collect();
    for (key, bytes) in &objects {
        store.put(key, &bytes[..]).unwrap();
    }
    let logs = |root: &std::path::Path| -> usize {
        (0..6)
            .map(|slot| {
                fs::read_dir(root.join(format!("loc-{slot:02}")).join("log")).map_or(0, |d| d.count())
            })
            .sum()
    };
    assert_eq!(logs(dir.path()), 6, "the puts after the first are in the log");
    for slot in 0..3 {
        plan.inject(Rule::at(slot, Fault::CorruptWrites));
    }
    drop(store);
    assert_eq!(
        logs(dir.path()),
        6,
        "the fold's packs did not read back: the log is kept"
    );
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(logs(dir.path()), 0, "folded when the store opened");
    for (key, bytes) in &objects {
        assert_eq!(&store.get_bytes(key).unwrap(), bytes, "{key}");
    }
    // The failed fold removed its own pack (it would be an undecodable duplicate, reported
    // lost by every scrub and holding off compaction): the store scrubs clean.
    let report = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert_eq!(report.verdict(), shardguard::ScrubVerdict::Clean, "{report:#?}");
}

#[test]
fn a_data_shard_avoided_after_an_io_error_is_read_again_when_a_stripe_has_no_parity_to_spare() {
    use std::io::Read;
    let (_dir, store, plan) = faulty_store(0xa701d);
    let bytes = put_sample(&store, "k", 12);
    let object = shardguard::location::ObjectId::of_key("k");
    let slot = |shard| shardguard::placement::slot_of_shard(object, shard, 6);
    // The first stripe: data shard 0's disk fails every read, so the reader avoids it for the
    // next stripes (reads parity in its place).
    plan.inject(Rule::at(slot(0), Fault::ReadError(Persistence::Persistent)));
    let mut reader = store.get("k").unwrap();
    let mut first = vec![0u8; 4 * CHUNK as usize];
    reader.read_exact(&mut first).unwrap();
    assert_eq!(first, bytes[..first.len()]);
    // Then that disk recovers and both parity disks fail: the rest has no parity to spare, so
    // the avoided data shard must be read again.
    plan.clear();
    plan.inject(Rule::at(slot(4), Fault::ReadError(Persistence::Persistent)));
    plan.inject(Rule::at(slot(5), Fault::ReadError(Persistence::Persistent)));
    let mut rest = Vec::new();
    reader
        .read_to_end(&mut rest)
        .expect("a recoverable stripe is recovered, not reported unrecoverable");
    assert_eq!(rest, bytes[first.len()..], "seed {}", plan.seed());
}
