//! The small-write log (FORMAT.md, "The small-write log"): grouped small puts are durable by
//! their log records and read from them, a full segment is kept as it is (read from its index)
//! until a compaction folds it, the last segment is folded into packs of their own files once
//! the store closes (or, left by a crash, when it next opens), and compaction never runs while
//! another handle logs. Power cuts inside it: `tests/power_loss.rs`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{copy_tree, data, within};
use shardguard::{Durability, ScrubOptions, ScrubVerdict, Store};

fn fsync_packing_store(dir: &Path) -> Store {
    Store::builder()
        .data_shards(4)
        .parity_shards(2)
        .chunk_size(16384)
        .pack_threshold(8192)
        .durability(Durability::Fsync)
        .create(dir)
        .unwrap()
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(files_ending(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    found
}

/// A closed store's log is folded: no segment left on any of `locations`.
fn assert_no_segment(locations: &[PathBuf]) {
    for location in locations {
        assert!(
            files_ending(&location.join("log"), ".log").is_empty(),
            "{location:?}"
        );
    }
}

/// Opens the store at `root` (a replay, if a crash left its log), finds no segment left,
/// checks every object with `read_all`, and a scrub comes back clean.
fn reopens_folded_and_clean(root: &Path, read_all: impl Fn(&Store)) {
    let store = Store::open(root).unwrap();
    assert_no_segment(&store.locations());
    read_all(&store);
    let verify = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert_eq!(verify.verdict(), ScrubVerdict::Clean, "{verify:?}");
}

fn repair() -> ScrubOptions {
    ScrubOptions::default().repair(true)
}

#[test]
fn a_grouped_put_is_logged_on_every_location_and_the_log_is_gone_once_the_store_closes() {
    let dir = tempfile::tempdir().unwrap();
    let store = fsync_packing_store(dir.path());
    // A handle's first small write commits the usual way (one command, one object), the
    // next ones through the log.
    store.put("first", &data(0, 100)[..]).unwrap();
    assert!(files_ending(&store.locations()[0].join("log"), ".log").is_empty());
    store.put("small", &data(1, 3000)[..]).unwrap();
    let locations = store.locations();
    for location in &locations {
        assert_eq!(
            files_ending(&location.join("log"), ".log").len(),
            1,
            "{location:?}"
        );
    }
    drop(store);
    assert_no_segment(&locations);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.get_bytes("small").unwrap(), data(1, 3000));
}

#[test]
fn logged_packs_are_read_from_the_log_and_a_crashed_handle_s_log_is_folded_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let store = fsync_packing_store(dir.path());
    store.put("first", &data(9, 100)[..]).unwrap();
    let first = files_ending(dir.path(), ".shard").len();
    assert_eq!(first, 6, "the handle's first small write: a pack of files");
    for i in 0..3 {
        store
            .put(&format!("k{i}"), &data(i, 1000 + 700 * i as usize)[..])
            .unwrap();
    }
    // Logged puts create no file: another handle reads them from the log.
    assert_eq!(files_ending(dir.path(), ".shard").len(), first);
    let reader = Store::open(dir.path()).unwrap();
    for i in 0..3 {
        let expected = data(i, 1000 + 700 * i as usize);
        assert_eq!(reader.get_bytes(&format!("k{i}")).unwrap(), expected);
    }
    let verify = reader.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert_eq!(verify.verdict(), ScrubVerdict::Clean, "{verify:?}");
    drop(reader);
    // The store as a crash of the writing process would leave it: the log, never folded.
    let crashed = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), crashed.path());
    drop(store);
    let store = Store::open(crashed.path()).unwrap();
    for location in store.locations() {
        let left = files_ending(&location.join("log"), ".log");
        assert!(left.is_empty(), "folded, then deleted: {left:?}");
    }
    assert_eq!(
        files_ending(crashed.path(), ".shard").len(),
        first + 6,
        "the first pack, and the folded one of 4 + 2 files"
    );
    for i in 0..3 {
        let expected = data(i, 1000 + 700 * i as usize);
        assert_eq!(store.get_bytes(&format!("k{i}")).unwrap(), expected);
    }
    let verify = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert_eq!(verify.verdict(), ScrubVerdict::Clean, "{verify:?}");
}

#[test]
fn compaction_waits_while_another_handle_logs_and_runs_once_it_closed() {
    let dir = tempfile::tempdir().unwrap();
    let writer = fsync_packing_store(dir.path());
    for i in 0..4 {
        writer.put(&format!("k{i}"), &data(i, 500)[..]).unwrap();
    }
    let scrubber = Store::open(dir.path()).unwrap();
    let report = scrubber.scrub(&repair(), &|_| {}).unwrap();
    let why = report.compaction.not_done.clone().unwrap_or_default();
    assert!(
        why.contains("log"),
        "compaction went ahead beside a live log: {report:?}"
    );
    assert_eq!(report.compaction.packs_compacted, 0);
    // Closing, the writer folds its three logged packs (the first was not logged) into one.
    drop(writer);
    assert_eq!(files_ending(dir.path(), ".shard").len(), 2 * 6);
    let report = scrubber.scrub(&repair(), &|_| {}).unwrap();
    assert_eq!(report.compaction.not_done, None, "{report:?}");
    for i in 0..4 {
        assert_eq!(scrubber.get_bytes(&format!("k{i}")).unwrap(), data(i, 500));
    }
}

#[test]
fn a_long_lived_handle_folds_its_log_once_idle_so_a_compaction_elsewhere_goes_ahead() {
    within(Duration::from_secs(120), "idle fold", || {
        let dir = tempfile::tempdir().unwrap();
        drop(fsync_packing_store(dir.path()));
        let writer = Store::builder()
            .durability(Durability::Fsync)
            .log_idle(Duration::from_millis(200))
            .open(dir.path())
            .unwrap();
        for i in 0..4 {
            writer.put(&format!("k{i}"), &data(i, 500)[..]).unwrap();
        }
        let locations = writer.locations();
        assert!(
            !files_ending(&locations[0].join("log"), ".log").is_empty(),
            "logged"
        );
        // Idle, the handle folds its log and lets its lock go, while it lives on.
        let mut waited = 0;
        while locations
            .iter()
            .any(|l| !files_ending(&l.join("log"), ".log").is_empty())
        {
            assert!(waited < 200, "the idle log was not folded within 20 s");
            std::thread::sleep(Duration::from_millis(100));
            waited += 1;
        }
        let scrubber = Store::open(dir.path()).unwrap();
        let report = scrubber.scrub(&repair(), &|_| {}).unwrap();
        assert_eq!(report.compaction.not_done, None, "{report:?}");
        // The handle logs again (a new segment) and every object reads back.
        writer.put("later", &data(7, 700)[..]).unwrap();
        assert!(!files_ending(&locations[0].join("log"), ".log").is_empty());
        for i in 0..4 {
            assert_eq!(scrubber.get_bytes(&format!("k{i}")).unwrap(), data(i, 500));
        }
        assert_eq!(scrubber.get_bytes("later").unwrap(), data(7, 700));
        drop(writer);
        assert_no_segment(&locations);
    });
}

/// The shard files of packs on `location` (packs live in bucket `ff`): those of packs written
/// to files of their own, not logged.
fn pack_files(location: &Path) -> usize {
    files_ending(&location.join("objects").join("ff"), ".shard").len()
}

/// The log segments on `location` that are kept (their index written at their end), and how
/// many segments there are in all.
fn kept_segments(location: &Path) -> (Vec<PathBuf>, usize) {
    let segments = files_ending(&location.join("log"), ".log");
    let all = segments.len();
    let kept = segments
        .into_iter()
        .filter(|s| common::kept_segment(&fs::read(s).unwrap()))
        .collect();
    (kept, all)
}

#[test]
fn eight_writers_fill_segments_that_are_kept_as_they_are_and_read_until_a_compaction_folds_them() {
    let dir = tempfile::tempdir().unwrap();
    let (writers, each, len) = (8, 700, 4000);
    let root = dir.path().to_path_buf();
    let store = within(Duration::from_secs(300), "eight writers", move || {
        let store = fsync_packing_store(&root);
        std::thread::scope(|s| {
            for w in 0..writers {
                let store = &store;
                s.spawn(move || {
                    for i in 0..each {
                        let n = w * each + i;
                        store.put(&format!("w{w}/{i}"), &data(n as u64, len)[..]).unwrap();
                    }
                });
            }
        });
        store
    });
    // A segment holds about 4,000 such objects: at least one filled up and was kept, not
    // copied into packs of their own files (only the handle's first small write has one).
    let locations = store.locations();
    assert!(
        pack_files(&locations[0]) <= 1,
        "a segment was folded: {} pack files",
        pack_files(&locations[0])
    );
    for location in &locations {
        let (kept, all) = kept_segments(location);
        assert!(!kept.is_empty(), "{location:?}: no segment kept");
        assert_eq!(
            all,
            kept.len() + 1,
            "{location:?}: the kept ones and the one written to"
        );
    }
    let read_all = |store: &Store| {
        for w in 0..writers {
            for i in 0..each {
                let n = w * each + i;
                assert_eq!(
                    store.get_bytes(&format!("w{w}/{i}")).unwrap(),
                    data(n as u64, len),
                    "w{w}/{i}"
                );
            }
        }
    };
    read_all(&store);
    let kept_before = kept_segments(&locations[0]).0;
    drop(store);
    // Closed: the last segment, not full, folded; the kept ones stay, and the next handle
    // reads them (from their index) without folding them when it opens.
    let store = Store::open(dir.path()).unwrap();
    for location in &locations {
        let (kept, all) = kept_segments(location);
        assert_eq!(all, kept.len(), "{location:?}: a segment left that is not kept");
    }
    assert_eq!(kept_segments(&locations[0]).0, kept_before);
    read_all(&store);
    let verify = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert_eq!(verify.verdict(), ScrubVerdict::Clean, "{verify:?}");
    // A repairing scrub's compaction folds them into packs of their own files.
    let report = store.scrub(&repair(), &|_| {}).unwrap();
    assert_eq!(report.verdict(), ScrubVerdict::Clean, "{report:?}");
    assert_no_segment(&locations);
    assert!(pack_files(&locations[0]) > 1);
    drop(store);
    reopens_folded_and_clean(dir.path(), read_all);
}

#[test]
fn one_writer_s_full_segment_of_one_object_packs_is_folded_into_dense_packs_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    within(Duration::from_secs(300), "one writer", move || {
        let store = fsync_packing_store(&root);
        let locations = store.locations();
        // Each put a pack of its own: an 8,000-byte object fills one of four 8 KiB data chunks,
        // its records take about six times its bytes. Until the first segment is full and
        // folded (pack files besides the first put's).
        let mut n = 0u64;
        while pack_files(&locations[0]) <= 1 {
            store.put(&format!("k{n}"), &data(n, 8000)[..]).unwrap();
            n += 1;
            assert!(
                n < 20_000,
                "no segment folded: {:?}",
                kept_segments(&locations[0])
            );
        }
        let (kept, all) = kept_segments(&locations[0]);
        assert!(kept.is_empty(), "a sparse segment was kept: {kept:?}");
        assert_eq!(all, 1, "only the segment written to");
        for i in 0..n {
            assert_eq!(store.get_bytes(&format!("k{i}")).unwrap(), data(i, 8000), "k{i}");
        }
    });
}

#[test]
fn a_kept_segment_whose_index_does_not_verify_somewhere_is_read_record_by_record_and_folded() {
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    within(Duration::from_secs(300), "a segment kept", move || {
        let store = fsync_packing_store(&root);
        let locations = store.locations();
        // Eight writers (one writer's one-object packs are too sparse to keep), each with 60
        // keys written over and over: the kept segment holds older writes of keys that later
        // ones overwrite. Rounds of 200 puts a writer until a segment is kept, then one more.
        let mut written = BTreeMap::new();
        let mut round = |store: &Store, r: u64| {
            std::thread::scope(|s| {
                let writers: Vec<_> = (0..8u64)
                    .map(|w| {
                        s.spawn(move || {
                            let mut last = BTreeMap::new();
                            for i in 0..200u64 {
                                let (key, seed) = (format!("w{w}/k{}", i % 60), (r * 8 + w) * 1000 + i);
                                store.put(&key, &data(seed, 4000)[..]).unwrap();
                                last.insert(key, seed);
                            }
                            last
                        })
                    })
                    .collect();
                for writer in writers {
                    written.extend(writer.join().unwrap());
                }
            });
        };
        let mut r = 0;
        while kept_segments(&locations[0]).0.is_empty() {
            round(&store, r);
            r += 1;
            assert!(r < 40, "no segment kept");
        }
        round(&store, r);
        let read_all = |store: &Store| {
            for (key, &seed) in &written {
                assert_eq!(store.get_bytes(key).unwrap(), data(seed, 4000), "{key}");
            }
        };
        // Another handle reads the kept segment from its index, the live one record by record.
        let reader = Store::open(&root).unwrap();
        read_all(&reader);
        drop(reader);
        // The store as a crash of the writing process would leave it: the live segment is
        // replayed (folded) when it next opens, the kept one stays.
        let crashed = tempfile::tempdir().unwrap();
        copy_tree(&root, crashed.path());
        drop(store);
        let reopened = Store::open(crashed.path()).unwrap();
        let moved = |at: &Path| locations[0].strip_prefix(&root).map(|l| at.join(l)).unwrap();
        let (kept, all) = kept_segments(&moved(crashed.path()));
        assert!(
            !kept.is_empty() && all == kept.len(),
            "only the kept segments are left"
        );
        read_all(&reopened);
        drop(reopened);
        // An index rots on one location: read there record by record, and no longer kept on
        // every location, that segment is folded when the store next opens.
        let index_end = fs::metadata(&kept[0]).unwrap().len() - 8;
        common::rot(&kept[0], index_end - 20, 4);
        let store = Store::open(crashed.path()).unwrap();
        assert!(!kept[0].exists(), "folded and removed");
        assert_eq!(kept_segments(&moved(crashed.path())).1, kept.len() - 1);
        read_all(&store);
        let verify = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
        assert_eq!(verify.verdict(), ScrubVerdict::Clean, "{verify:?}");
    });
}

#[test]
fn a_store_of_version_3_keeps_untagged_log_records_its_older_builds_read_and_replays_them() {
    let dir = tempfile::tempdir().unwrap();
    drop(fsync_packing_store(dir.path()));
    // The store as a build before the tags made it: version 3 (the same layout as 5), here
    // and in every location (FORMAT.md, "Store file").
    let path = dir.path().join(shardguard::STORE_FILE);
    let mut bytes = fs::read(&path).unwrap();
    assert_eq!(bytes[8..10], 5u16.to_le_bytes());
    bytes[8..10].copy_from_slice(&3u16.to_le_bytes());
    let end = bytes.len() - 4;
    let crc = crc32c::crc32c(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let store = Store::open(dir.path()).unwrap();
    for location in store.locations() {
        fs::write(location.join("SHARDGUARD-STORE"), &bytes).unwrap();
    }
    store.put("first", &data(0, 100)[..]).unwrap();
    for i in 1..20 {
        store.put(&format!("k{i}"), &data(i, 3000)[..]).unwrap();
    }
    // Logged, every record untagged: the tag word of each header is 0.
    let segment = &files_ending(&store.locations()[0].join("log"), ".log")[0];
    let log = fs::read(segment).unwrap();
    assert_eq!(&log[..8], b"SGLOGREC");
    assert_eq!(log[20..24], [0; 4], "untagged");
    // A crash leaves the log; the next open replays it.
    let crashed = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), crashed.path());
    drop(store);
    let store = Store::open(crashed.path()).unwrap();
    assert_no_segment(&store.locations());
    for i in 1..20 {
        assert_eq!(store.get_bytes(&format!("k{i}")).unwrap(), data(i, 3000), "k{i}");
    }
    assert_eq!(
        fs::read(crashed.path().join(shardguard::STORE_FILE)).unwrap(),
        bytes
    );
}
