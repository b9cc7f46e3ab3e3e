//! The scrub as operators run it: the `shardguard scrub` binary's exit codes and JSON report, a
//! repair killed at any moment (nothing recoverable is lost, and a new scrub finishes the job),
//! a scrub running beside writers (no false damage, nothing lost), and `--resume` after a kill.

mod common;

use std::fs;
use std::process::Output;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{chunk_offset, data, rot, sg, shard_paths, spawn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shardguard::{ScrubReport, Store};

const SEED: u64 = 0x5c2b;

fn json_report(out: &Output) -> ScrubReport {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// A store with several objects, then bit rot in one and a wiped location.
fn damaged_store(root: &std::path::Path, objects: usize, len: usize) -> Vec<Vec<u8>> {
    let store = Store::builder()
        .data_shards(4)
        .parity_shards(2)
        .chunk_size(64 << 10)
        .create(root)
        .unwrap();
    let contents: Vec<Vec<u8>> = (0..objects).map(|i| data(i as u64, len + i)).collect();
    for (i, bytes) in contents.iter().enumerate() {
        store.put(&format!("o{i}"), &bytes[..]).unwrap();
    }
    rot(
        &shard_paths(&store, "o0")[0],
        chunk_offset("o0", 64 << 10, 0) + 5,
        3,
    );
    let wiped = store.locations()[5].clone();
    fs::remove_dir_all(&wiped).unwrap();
    fs::create_dir(&wiped).unwrap();
    contents
}

#[test]
fn scrub_exit_codes_and_json_report() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let r = root.to_str().unwrap();
    let contents = damaged_store(&root, 3, 300_000);
    let found = sg(&["scrub", r, "--json"]);
    assert_eq!(found.status.code(), Some(3), "damage found, not repaired");
    let report = json_report(&found);
    assert!(
        report.counts.damaged_chunks >= 1 && report.counts.damaged_shards == 3,
        "{report:#?}"
    );
    let repaired = sg(&["scrub", r, "--repair", "--json", "--jobs", "2"]);
    assert_eq!(repaired.status.code(), Some(1), "damage found and repaired");
    assert_eq!(json_report(&repaired).counts.rebuilt_shards, 3);
    let clean = sg(&["scrub", r, "--deep"]);
    assert_eq!(clean.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&clean.stdout).contains("result: clean"));
    let status = String::from_utf8(sg(&["status", r]).stdout).unwrap();
    assert!(status.contains("objects: 3"), "{status}");
    assert!(status.contains("last scrub: finished"), "{status}");
    assert!(status.contains("result: clean"), "{status}");
    for (i, bytes) in contents.iter().enumerate() {
        assert!(sg(&["get", r, &format!("o{i}")]).stdout == *bytes);
    }
    // Beyond tolerance: 4.
    let store = Store::open(&root).unwrap();
    for p in &shard_paths(&store, "o1")[..3] {
        rot(p, chunk_offset("o1", 64 << 10, 0), 1);
    }
    let lost = sg(&["scrub", r, "--repair"]);
    assert_eq!(lost.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&lost.stdout).contains("UNRECOVERABLE \"o1\""));
    // Usage errors: 2.
    assert_eq!(sg(&["scrub", r, "--percent", "0"]).status.code(), Some(2));
    assert_eq!(sg(&["scrub", r, "--jobs", "0"]).status.code(), Some(2));
    assert_eq!(sg(&["scrub", r, "--max-rate", "fast"]).status.code(), Some(2));
}

#[test]
fn a_repair_killed_at_any_point_loses_nothing_and_a_new_scrub_finishes() {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    for round in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        let r = root.to_str().unwrap();
        let contents = damaged_store(&root, 6, 2 << 20);
        let started = Instant::now();
        let mut child = spawn(&["scrub", r, "--repair"]);
        // Repairs here take tens of milliseconds; spread the kills over them.
        sleep(Duration::from_micros(rng.random_range(0..30_000)));
        let _ = child.kill();
        let _ = child.wait();
        let killed_after = started.elapsed();
        let store = Store::open(&root).expect("opens after a killed repair");
        for (i, bytes) in contents.iter().enumerate() {
            let got = store.get_bytes(&format!("o{i}"));
            assert!(
                got.as_ref().ok() == Some(bytes),
                "seed {SEED} round {round} (killed after {killed_after:?}): o{i}: {:?}",
                got.err()
            );
        }
        let finish = sg(&["scrub", r, "--repair"]);
        assert!(
            matches!(finish.status.code(), Some(0 | 1)),
            "round {round}: {finish:?}"
        );
        let clean = sg(&["scrub", r]);
        assert_eq!(
            clean.status.code(),
            Some(0),
            "round {round}: {}",
            String::from_utf8_lossy(&clean.stdout)
        );
    }
}

#[test]
fn scrub_beside_writers_reports_no_false_damage_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let r = root.to_str().unwrap().to_owned();
    let store = Store::builder()
        .data_shards(3)
        .parity_shards(2)
        .chunk_size(16 << 10)
        .create(&root)
        .unwrap();
    let stable: Vec<Vec<u8>> = (0..5).map(|i| data(100 + i, 200_000)).collect();
    for (i, bytes) in stable.iter().enumerate() {
        store.put(&format!("stable/{i}"), &bytes[..]).unwrap();
    }
    let input = dir.path().join("input");
    fs::write(&input, data(7, 300_000)).unwrap();
    let input = input.to_str().unwrap().to_owned();
    // Another process puts and deletes its own keys all the while.
    let writer = std::thread::spawn(move || {
        for i in 0..40 {
            let key = format!("churn/{}", i % 4);
            assert!(sg(&["put", &r, &key, &input]).status.success());
            if i % 3 == 0 {
                assert!(sg(&["rm", &r, &key]).status.success());
            }
        }
    });
    let mut scrubs = 0;
    while !writer.is_finished() || scrubs < 3 {
        for repair in [false, true] {
            let options = shardguard::ScrubOptions::default().repair(repair);
            let report = store.scrub(&options, &|_| {}).unwrap();
            assert!(!report.damage_found(), "false damage: {report:#?}");
            scrubs += 1;
        }
    }
    writer.join().unwrap();
    for (i, bytes) in stable.iter().enumerate() {
        assert!(store.get_bytes(&format!("stable/{i}")).unwrap() == *bytes);
    }
    let keys: Vec<String> = store.list().unwrap().into_iter().map(|e| e.key).collect();
    // churn/0: puts at i = 0, 4, 8, … deleted when i % 3 == 0; the last put (i = 36) was deleted.
    // churn/1: last put i = 37 (not deleted); churn/2: i = 38; churn/3: i = 39 deleted.
    for key in ["churn/1", "churn/2", "stable/0"] {
        assert!(keys.contains(&key.to_owned()), "{key} lost: {keys:?}");
    }
    for key in ["churn/0", "churn/3"] {
        assert!(
            !keys.contains(&key.to_owned()),
            "{key} should be deleted: {keys:?}"
        );
    }
}

#[test]
fn resume_after_a_kill_does_not_verify_again_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let r = root.to_str().unwrap();
    let store = Store::builder()
        .data_shards(2)
        .parity_shards(1)
        .chunk_size(4096)
        .create(&root)
        .unwrap();
    for i in 0..200 {
        store.put(&format!("k{i:03}"), &data(i, 20_000)[..]).unwrap();
    }
    // About 6 MiB to read at 2 MiB/s: the kill lands in the middle.
    let mut child = spawn(&["scrub", r, "--jobs", "1", "--max-rate", "2MiB"]);
    sleep(Duration::from_millis(1800));
    let _ = child.kill();
    let _ = child.wait();
    let resumed = sg(&["scrub", r, "--jobs", "1", "--resume", "--json"]);
    assert_eq!(resumed.status.code(), Some(0));
    let report = json_report(&resumed);
    assert!(report.skipped_by_resume >= 64, "{report:#?}");
    assert_eq!(
        report.objects, 200,
        "the killed run's objects count too: {report:#?}"
    );
}
