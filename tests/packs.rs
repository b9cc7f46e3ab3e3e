//! Small objects stored in packs (a store created with a pack threshold): every promise of the
//! store holds for them as for objects with shard files of their own — exact bytes or an error,
//! the newest write wins whatever form each write took, deletes stay deleted, listings and stat
//! see them, damage is read around and repaired, and another handle on the store sees them.

mod common;

use std::io::Read;

use common::data;
use shardguard::{Durability, Error, PutMode, ScrubOptions, ScrubVerdict, Store};

const THRESHOLD: u32 = 8192;

fn packing_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder()
        .data_shards(4)
        .parity_shards(2)
        .chunk_size(16384)
        .pack_threshold(THRESHOLD)
        .durability(Durability::PageCache)
        .create(dir.path())
        .unwrap();
    (dir, store)
}

/// Puts objects `o0` … of `len` bytes each in one `put_many` batch; returns them.
fn put_batch(store: &Store, count: u64, len: usize) -> Vec<(String, Vec<u8>)> {
    let objects: Vec<(String, Vec<u8>)> = (0..count).map(|i| (format!("o{i}"), data(i, len))).collect();
    store
        .put_many(objects.iter().map(|(k, b)| (k.as_str(), &b[..])))
        .unwrap();
    objects
}

/// Shard files of every kind under the store's locations.
fn shard_files(store: &Store) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| match e.file_type().is_ok_and(|t| t.is_dir()) {
                    true => count(&e.path()),
                    false => usize::from(e.file_name().to_string_lossy().ends_with(".shard")),
                })
                .sum()
        })
    }
    store.locations().iter().map(|l| count(&l.join("objects"))).sum()
}

#[test]
fn objects_below_the_threshold_are_packed_and_read_back_exactly() {
    let (_dir, store) = packing_store();
    let t = THRESHOLD as usize;
    for (i, len) in [0, 1, 100, 4095, 4096, 4097, t - 1, t, t + 1, 3 * t]
        .into_iter()
        .enumerate()
    {
        let key = format!("obj/{len}");
        let bytes = data(i as u64, len);
        store.put(&key, &bytes[..]).unwrap();
        assert_eq!(store.get_bytes(&key).unwrap(), bytes, "{key}");
        let stat = store.stat(&key).unwrap();
        assert_eq!((stat.len, stat.pack.is_some()), (len as u64, len < t), "{key}");
        // Range reads of a packed object are cut at its own end, not the pack's.
        let mut reader = store.get_range(&key, 1..len as u64 + 50).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, bytes[len.min(1)..], "{key}");
        assert_eq!(reader.len(), len as u64);
    }
    let listed: Vec<(String, u64)> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|e| (e.key, e.len))
        .collect();
    assert_eq!(listed.len(), 10, "{listed:?}");
    assert!(
        listed.iter().all(|(k, len)| k == &format!("obj/{len}")),
        "{listed:?}"
    );
    assert_eq!(store.list_prefix("obj/4").unwrap().count(), 3);
}

#[test]
fn the_newest_write_wins_whether_packed_or_not_and_deletes_stay_deleted() {
    let (dir, store) = packing_store();
    let small = |seed| data(seed, 300);
    let large = |seed| data(seed, 3 * THRESHOLD as usize);
    let mut versions = Vec::new();
    for (step, bytes) in [small(1), large(2), small(3), small(4), large(5), small(6)]
        .into_iter()
        .enumerate()
    {
        versions.push(store.put("k", &bytes[..]).unwrap().version);
        assert_eq!(store.get_bytes("k").unwrap(), bytes, "step {step}");
        // Another handle, with an index of its own, sees the same.
        assert_eq!(
            common::reopen(dir.path()).get_bytes("k").unwrap(),
            bytes,
            "step {step}"
        );
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].len, listed[0].version),
            (bytes.len() as u64, *versions.last().unwrap())
        );
    }
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    // The larger writes' shard files were retired by the packed writes after them.
    store.delete("k").unwrap();
    for s in [&store, &common::reopen(dir.path())] {
        assert!(matches!(s.get_bytes("k"), Err(Error::NotFound { .. })));
        assert!(matches!(s.stat("k"), Err(Error::NotFound { .. })));
        assert_eq!(s.list().unwrap(), vec![]);
    }
    assert!(matches!(store.delete("k"), Err(Error::NotFound { .. })));
    // A put after the delete is above it.
    let again = store.put("k", &small(7)[..]).unwrap();
    assert!(again.version > *versions.last().unwrap());
    assert_eq!(store.get_bytes("k").unwrap(), small(7));
}

#[test]
fn conditional_puts_see_packed_versions_and_exactly_one_racing_create_wins() {
    let (_dir, store) = packing_store();
    let winners: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let store = store.clone();
                s.spawn(move || store.put_with("once", &data(i, 50)[..], PutMode::Create).is_ok())
            })
            .collect();
        handles.into_iter().map(|h| usize::from(h.join().unwrap())).sum()
    });
    assert_eq!(winners, 1);
    let version = store.stat("once").unwrap().version;
    assert!(matches!(
        store.put_with("once", &b"x"[..], PutMode::Update { version: version + 1 }),
        Err(Error::PreconditionFailed { .. })
    ));
    store
        .put_with("once", &b"y"[..], PutMode::Update { version })
        .unwrap();
    assert_eq!(store.get_bytes("once").unwrap(), b"y");
}

#[test]
fn a_lost_location_and_rotten_pack_chunks_cost_nothing_and_scrub_repairs_them() {
    let (dir, store) = packing_store();
    let keys: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| (format!("small/{i}"), data(i, 700 * i as usize)))
        .collect();
    for (key, bytes) in &keys {
        store.put(key, &bytes[..]).unwrap();
    }
    let files_before = shard_files(&store);
    // Rot the first data chunk of the pack holding small/5, and lose a whole location.
    let path = store.shard_path("small/5", 0).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    common::rot(&path, len / 2, 8);
    let wiped = store
        .locations()
        .into_iter()
        .find(|l| !path.starts_with(l))
        .unwrap();
    std::fs::remove_dir_all(wiped.join("objects")).unwrap();
    let store = common::reopen(dir.path());
    for (key, bytes) in &keys {
        assert_eq!(&store.get_bytes(key).unwrap(), bytes, "{key}");
    }
    let repair = store
        .scrub(&ScrubOptions::default().repair(true), &|_| {})
        .unwrap();
    assert_eq!(repair.verdict(), ScrubVerdict::Repaired, "{repair:#?}");
    let clean = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert_eq!(clean.verdict(), ScrubVerdict::Clean, "{clean:#?}");
    // Once repaired, the same scrub compacted the twelve one-object packs into one.
    assert_eq!(repair.compaction.packs_compacted, 12, "{:?}", repair.compaction);
    assert_eq!((files_before, shard_files(&store)), (72, 6));
    for (key, bytes) in &keys {
        assert_eq!(&store.get_bytes(key).unwrap(), bytes, "{key}");
    }
}

#[test]
fn a_store_without_packs_stays_in_the_first_format_version() {
    let version_and_threshold = |builder: shardguard::StoreBuilder| {
        let dir = tempfile::tempdir().unwrap();
        builder.create(dir.path()).unwrap();
        let bytes = std::fs::read(dir.path().join(shardguard::STORE_FILE)).unwrap();
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        let threshold = match version {
            1 => 0,
            _ => u32::from_le_bytes(bytes[36..40].try_into().unwrap()),
        };
        (version, threshold)
    };
    assert_eq!(version_and_threshold(Store::builder().pack_threshold(0)), (1, 0));
    assert_eq!(
        version_and_threshold(Store::builder().pack_threshold(4096)),
        (5, 4096)
    );
    // By default a store packs objects under 64 KiB, when its chunks have room for them.
    assert_eq!(version_and_threshold(Store::builder()), (5, 64 << 10));
    assert_eq!(
        version_and_threshold(Store::builder().chunk_size(65536 + 1095)),
        (5, 64 << 10)
    );
    assert_eq!(
        version_and_threshold(Store::builder().chunk_size(65536 + 1094)),
        (1, 0)
    );
    // Too large a threshold is refused before anything is written.
    let refused = tempfile::tempdir().unwrap();
    assert!(matches!(
        Store::builder().pack_threshold(64 << 20).create(refused.path()),
        Err(Error::InvalidConfig {
            problem: shardguard::ConfigProblem::PackThreshold { .. }
        })
    ));
    // An object and the pack's table must fit in one chunk.
    assert!(matches!(
        Store::builder()
            .chunk_size(4096)
            .pack_threshold(4000)
            .create(refused.path()),
        Err(Error::InvalidConfig {
            problem: shardguard::ConfigProblem::PackThreshold { .. }
        })
    ));
}

#[test]
fn shard_files_outvoted_by_a_packed_write_are_leftovers_to_scrub_never_lost_objects() {
    let (dir, store) = packing_store();
    let large = data(1, 3 * THRESHOLD as usize);
    store.put("k", &large[..]).unwrap();
    // Keep the larger write's files: as if removing them had failed after the packed put.
    let kept: Vec<(std::path::PathBuf, Vec<u8>)> = common::shard_paths(&store, "k")
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    store.put("k", &b"small now"[..]).unwrap();
    for (path, bytes) in &kept {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    // Damage them beyond repair: still no lost object, since they are outvoted.
    for (path, _) in kept.iter().take(3) {
        std::fs::remove_file(path).unwrap();
    }
    let store = common::reopen(dir.path());
    assert_eq!(store.get_bytes("k").unwrap(), b"small now");
    let found = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert!(found.unrecoverable.is_empty(), "{found:#?}");
    assert_eq!(found.counts.leftover_files, 3, "{found:#?}");
    let repaired = store
        .scrub(&ScrubOptions::default().repair(true), &|_| {})
        .unwrap();
    assert_eq!(repaired.counts.leftover_files_removed, 3, "{repaired:#?}");
    assert_eq!(store.get_bytes("k").unwrap(), b"small now");
    let clean = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert_eq!(clean.verdict(), ScrubVerdict::Clean, "{clean:#?}");
}

#[test]
fn a_pack_lost_beyond_repair_is_named_with_the_objects_it_held() {
    let (dir, store) = packing_store();
    store.put("a", &data(1, 5000)[..]).unwrap();
    store.put("b", &data(2, 6000)[..]).unwrap();
    // Three of the six shard files of a's pack gone: more than m = 2.
    for shard in 0..3 {
        std::fs::remove_file(store.shard_path("a", shard).unwrap()).unwrap();
    }
    let store = common::reopen(dir.path());
    assert!(store.get_bytes("a").is_err());
    let report = store
        .scrub(&ScrubOptions::default().repair(true), &|_| {})
        .unwrap();
    assert_eq!(report.verdict(), ScrubVerdict::Unrecoverable, "{report:#?}");
    let lost: Vec<&str> = report.unrecoverable.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(lost.len(), 1, "{report:#?}");
    assert!(lost[0].starts_with("<pack "), "{lost:?}");
    // Its table survives in the parity files: the report names what it held, and only that.
    let detail = &report.unrecoverable[0].detail;
    assert!(detail.contains("[\"a\"]"), "{detail}");
}

#[test]
fn a_batch_shares_packs_and_every_object_of_it_reads_back() {
    let (dir, store) = packing_store();
    let objects: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| {
            (
                format!("batch/{i}"),
                data(i, (i as usize * 37) % (THRESHOLD as usize)),
            )
        })
        .chain([("batch/large".to_owned(), data(999, 5 * THRESHOLD as usize))])
        .collect();
    let outcomes = store
        .put_many(objects.iter().map(|(k, b)| (k.as_str(), &b[..])))
        .unwrap();
    assert_eq!(outcomes.len(), objects.len());
    assert!(outcomes
        .iter()
        .zip(&objects)
        .all(|(o, (_, b))| o.len == b.len() as u64));
    let reopened = common::reopen(dir.path());
    for (key, bytes) in &objects {
        assert_eq!(&reopened.get_bytes(key).unwrap(), bytes, "{key}");
    }
    // 300 objects of up to 8 KiB in packs of 4 chunks of 16 KiB: a few dozen packs, each
    // k + m shard files, against 6 files per object without packs.
    let files = shard_files(&store);
    assert!(files <= 6 * 60, "{files} shard files for 301 objects");
    assert_eq!(store.list().unwrap().len(), objects.len());
    // A key twice in one batch is refused before anything is written.
    let twice = store.put_many([("dup", &b"1"[..]), ("dup", &b"2"[..])]);
    assert!(matches!(twice, Err(Error::InvalidKey { .. })));
    assert!(matches!(store.get_bytes("dup"), Err(Error::NotFound { .. })));
    // Overwritten in a second batch: the newer write wins.
    store.put_many([("batch/7", &b"seven"[..])]).unwrap();
    assert_eq!(reopened.get_bytes("batch/7").unwrap(), b"seven");
}

/// A new handle's first look at the packs reads many of them at once (on threads): each table
/// must stay with its own pack. Forty packs of two objects each, one of them down to three of
/// its six files (more lost than parity covers): every other object reads back exactly and is
/// listed, the damaged pack's objects fail with an error, never another pack's bytes.
#[test]
fn a_first_look_at_many_packs_keeps_each_table_with_its_own_pack() {
    let (dir, store) = packing_store();
    let batches: Vec<Vec<(String, Vec<u8>)>> = (0..40u64)
        .map(|b| {
            let objects: Vec<(String, Vec<u8>)> = (0..2u64)
                .map(|i| (format!("b{b}/o{i}"), data(2 * b + i, 3000 + 100 * i as usize)))
                .collect();
            store
                .put_many(objects.iter().map(|(k, v)| (k.as_str(), &v[..])))
                .unwrap();
            objects
        })
        .collect();
    let damaged = 17;
    for shard in 0..3 {
        std::fs::remove_file(store.shard_path(&batches[damaged][0].0, shard).unwrap()).unwrap();
    }
    let store = common::reopen(dir.path());
    for (b, objects) in batches.iter().enumerate() {
        for (key, bytes) in objects {
            match store.get_bytes(key) {
                Ok(read) => {
                    assert_ne!(b, damaged, "{key} read from a pack down to three files");
                    assert_eq!(&read, bytes, "{key}");
                }
                Err(e) => assert_eq!(b, damaged, "{key}: {e}"),
            }
        }
    }
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 2 * 39, "{listed:?}");
    assert!(listed.iter().all(|e| !e.key.starts_with(&format!("b{damaged}/"))));
}

/// Threads putting small objects at once share packs (group commit); whatever the grouping,
/// every put reads back exactly, from this handle and another.
#[test]
fn concurrent_small_puts_share_packs_and_every_one_reads_back() {
    let (dir, store) = packing_store();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let store = store.clone();
            s.spawn(move || {
                for i in 0..40u64 {
                    let key = format!("t{t}/{i}");
                    let outcome = store
                        .put(&key, &data(t * 1000 + i, 100 + i as usize * 50)[..])
                        .unwrap();
                    assert_eq!(outcome.len, 100 + i * 50);
                    // A put returns only once its pack is committed: readable at once.
                    assert_eq!(store.get_bytes(&key).unwrap().len() as u64, outcome.len);
                }
            });
        }
    });
    let other = common::reopen(dir.path());
    for t in 0..8u64 {
        for i in 0..40u64 {
            let key = format!("t{t}/{i}");
            assert_eq!(
                other.get_bytes(&key).unwrap(),
                data(t * 1000 + i, 100 + i as usize * 50),
                "{key}"
            );
        }
    }
    assert_eq!(other.list().unwrap().len(), 320);
    let clean = other.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert_eq!(clean.verdict(), ScrubVerdict::Clean, "{clean:#?}");
    eprintln!("320 puts from 8 threads: {} shard files", shard_files(&store));
}

#[test]
fn delete_many_deletes_packed_and_large_keys_in_one_batch_and_says_which_were_there() {
    let (dir, store) = packing_store();
    let large = data(7, 3 * THRESHOLD as usize);
    store.put("big", &large[..]).unwrap();
    for i in 0..20 {
        store.put(&format!("small/{i}"), &data(i, 100)[..]).unwrap();
    }
    store.delete("small/3").unwrap();
    let files_before = shard_files(&store);
    let keys = ["small/0", "big", "small/3", "absent", "small/19"];
    let there = store.delete_many(keys).unwrap();
    assert_eq!(there, [true, true, false, false, true]);
    // One pack for the whole batch: k + m files added, the large object's removed.
    assert_eq!(shard_files(&store), files_before + 6 - 6);
    for key in keys {
        assert!(
            matches!(store.get_bytes(key), Err(Error::NotFound { .. })),
            "{key}"
        );
    }
    for i in (1..19).filter(|i| *i != 3) {
        assert_eq!(store.get_bytes(&format!("small/{i}")).unwrap(), data(i, 100));
    }
    // Another handle sees the deletes; a key twice in a batch is refused before anything.
    let other = Store::open(dir.path()).unwrap();
    assert!(matches!(other.get_bytes("small/0"), Err(Error::NotFound { .. })));
    assert!(matches!(
        store.delete_many(["small/1", "small/1"]),
        Err(Error::InvalidKey { .. })
    ));
    assert_eq!(store.get_bytes("small/1").unwrap(), data(1, 100));
    assert_eq!(store.list().unwrap().len(), 17);
}

/// Compaction (by a repairing scrub): small packs and packs of overwritten or deleted objects
/// are rewritten into few full packs; every key reads as before, deletes stay deleted (their
/// entries dropped only once nothing older is left), and a handle opened before sees the same.
#[test]
fn a_repairing_scrub_compacts_packs_and_every_key_reads_as_before() {
    let (dir, store) = packing_store();
    let other = Store::open(dir.path()).unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for round in 0..4u64 {
        for i in 0..12u64 {
            let key = format!("k{i}");
            let bytes = data(round * 100 + i, 50 + (i as usize * 37) % 900);
            store.put(&key, &bytes[..]).unwrap();
            expected.insert(key, Some(bytes));
        }
    }
    // A key once large (shard files of its own), then small: its delete must outvote both.
    store
        .put("was-large", &data(9, 3 * THRESHOLD as usize)[..])
        .unwrap();
    store.put("was-large", &data(10, 10)[..]).unwrap();
    for key in ["k3", "k7", "was-large"] {
        store.delete(key).unwrap();
        expected.insert(key.to_owned(), None);
    }
    let check = |store: &Store, when: &str| {
        for (key, bytes) in &expected {
            match (store.get_bytes(key), bytes) {
                (Ok(got), Some(bytes)) => assert!(got == *bytes, "{when}: {key}"),
                (Err(Error::NotFound { .. }), None) => {}
                (got, _) => panic!("{when}: {key} reads as {got:?}"),
            }
        }
    };
    check(&other, "before");
    let files_before = shard_files(&store);
    let repair = ScrubOptions::default().repair(true);
    let report = store.scrub(&repair, &|_| {}).unwrap();
    let c = &report.compaction;
    assert_eq!(report.verdict(), ScrubVerdict::Clean, "{report:?}");
    assert!(
        c.packs_compacted > 40 && c.packs_written == 1 && c.not_done.is_none(),
        "{c:?}"
    );
    assert!(c.dead_bytes_reclaimed > 0, "{c:?}");
    // Deletes are carried, not dropped, while the older entries they outvote are still about.
    assert_eq!(c.deletes_dropped, 0, "{c:?}");
    assert_eq!(shard_files(&store), 6, "from {files_before}");
    check(&store, "after");
    check(&other, "after, another handle");
    // The next compaction finds nothing older of the deleted keys: their entries go.
    let report = store.scrub(&repair, &|_| {}).unwrap();
    assert_eq!(report.compaction.deletes_dropped, 3, "{:?}", report.compaction);
    check(&store, "after the second");
    check(&Store::open(dir.path()).unwrap(), "after the second, reopened");
    assert_eq!(store.list().unwrap().len(), 10);
    // Nothing left to gain: a third leaves the packs alone.
    let report = store.scrub(&repair, &|_| {}).unwrap();
    assert_eq!(report.compaction.packs_compacted, 0, "{:?}", report.compaction);
    assert_eq!(
        store.scrub(&ScrubOptions::default(), &|_| {}).unwrap().verdict(),
        ScrubVerdict::Clean
    );
}

/// With a location unusable (here another store's disk in its place), compaction waits:
/// nothing copied, nothing deleted, and every key reads as written; once the location is back,
/// it compacts.
#[test]
fn compaction_waits_for_every_location_to_be_usable() {
    let (dir, store) = packing_store();
    let identity = store.locations()[4].join(shardguard::location::IDENTITY_FILE);
    let own_identity = std::fs::read(&identity).unwrap();
    let (_other_dir, other) = packing_store();
    std::fs::copy(
        other.locations()[4].join(shardguard::location::IDENTITY_FILE),
        &identity,
    )
    .unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..5 {
        store.put("k", &data(i, 100)[..]).unwrap();
        store.put(&format!("other/{i}"), &data(10 + i, 100)[..]).unwrap();
    }
    let files = shard_files(&store);
    let report = store
        .scrub(&ScrubOptions::default().repair(true), &|_| {})
        .unwrap();
    assert_eq!(report.compaction.packs_compacted, 0, "{:?}", report.compaction);
    // Stopped by the scrub (a location it could not repair) or by compaction's own check.
    let said_why = report
        .compaction
        .not_done
        .as_deref()
        .is_some_and(|why| why.contains("unusable"));
    assert!(report.counts.unrepaired > 0 || said_why, "{report:?}");
    assert_eq!(shard_files(&store), files);
    assert_eq!(store.get_bytes("k").unwrap(), data(4, 100));
    std::fs::write(&identity, own_identity).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let report = store
        .scrub(&ScrubOptions::default().repair(true), &|_| {})
        .unwrap();
    let c = &report.compaction;
    assert!(
        c.packs_compacted == 10 && c.packs_written == 1 && c.not_done.is_none(),
        "{c:?}"
    );
    assert_eq!(store.get_bytes("k").unwrap(), data(4, 100));
    for i in 0..5 {
        assert_eq!(store.get_bytes(&format!("other/{i}")).unwrap(), data(10 + i, 100));
    }
}

/// A compaction whose one new pack would hold exactly an old pack's entries keeps that pack
/// (the id comes from the entries: writing it anew and deleting the old ones would delete it).
#[test]
fn compacting_down_to_one_existing_pack_keeps_it() {
    let (_dir, store) = packing_store();
    for i in 0..6 {
        store.put("k", &data(i, 100)[..]).unwrap();
    }
    let report = store
        .scrub(&ScrubOptions::default().repair(true), &|_| {})
        .unwrap();
    let c = &report.compaction;
    assert!(c.packs_compacted == 5 && c.packs_written == 0, "{c:?}");
    assert_eq!(store.get_bytes("k").unwrap(), data(5, 100));
    assert_eq!(shard_files(&store), 6);
}

/// A pack's parity files rebuilt by a scrub end with the pack's table, as written, even when
/// no parity file was left to copy it from (here 1 + 1: the rebuild's only source is the data
/// file). Without it, a pack later down to that one file in doubt could not name its objects,
/// and a key in it read as absent (found by the model test).
#[test]
fn rebuilt_parity_files_of_a_pack_carry_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder()
        .data_shards(1)
        .parity_shards(1)
        .chunk_size(6000)
        .pack_threshold(4096)
        .durability(Durability::PageCache)
        .create(dir.path())
        .unwrap();
    store.put("x", &data(1, 2700)[..]).unwrap();
    let parity = store.shard_path("x", 1).unwrap();
    let written = std::fs::read(&parity).unwrap();
    std::fs::remove_file(&parity).unwrap();
    let report = store
        .scrub(&ScrubOptions::default().repair(true), &|_| {})
        .unwrap();
    assert_eq!(report.verdict(), ScrubVerdict::Repaired, "{report:?}");
    assert!(
        std::fs::read(&parity).unwrap() == written,
        "the rebuilt parity file differs"
    );
}

/// A handle skips listing the packs while no other handle changed them (the changes file), yet
/// always sees what another handle (another process, as a rule) wrote, overwrote, deleted or
/// compacted, and its own writes never hide another's.
#[test]
fn a_handle_sees_every_pack_another_handle_writes_deletes_or_compacts() {
    let (dir, a) = packing_store();
    // Without fsyncs, as `a`: a handle with fsync durability would hold a small-write log
    // open, and compaction waits for it (tests/small_log.rs).
    let b = Store::builder()
        .durability(Durability::PageCache)
        .open(dir.path())
        .unwrap();
    for round in 0..3u64 {
        a.put("k", &data(round, 100)[..]).unwrap();
        assert_eq!(b.get_bytes("k").unwrap(), data(round, 100), "round {round}");
        // b writes too: its own change must not make it miss a's next one.
        b.put(&format!("b{round}"), &data(50 + round, 10)[..]).unwrap();
        assert_eq!(a.get_bytes(&format!("b{round}")).unwrap(), data(50 + round, 10));
    }
    a.delete("k").unwrap();
    assert!(matches!(b.get_bytes("k"), Err(Error::NotFound { .. })));
    a.put("k", &data(9, 100)[..]).unwrap();
    let report = a.scrub(&ScrubOptions::default().repair(true), &|_| {}).unwrap();
    assert!(report.compaction.packs_compacted > 0, "{:?}", report.compaction);
    // b's index named packs that are gone now: it must read from the compacted one.
    assert_eq!(b.get_bytes("k").unwrap(), data(9, 100));
    let next = b.put("k", &data(10, 100)[..]).unwrap();
    assert!(
        next.version > 2,
        "a version above every write of the key: {next:?}"
    );
    assert_eq!(a.get_bytes("k").unwrap(), data(10, 100));
    assert_eq!(b.list().unwrap().len(), 4);
}

/// A scrub counts the objects a pack holds, not the pack, and status knows they were scrubbed
/// (with their pack): what an operator reads matches what they stored.
#[test]
fn scrub_and_status_count_packed_objects_as_objects() {
    let (_dir, store) = packing_store();
    put_batch(&store, 30, 200);
    store.put("large", &data(99, 3 * THRESHOLD as usize)[..]).unwrap();
    let before = store.status().unwrap().scrub_coverage.unwrap();
    assert_eq!(before.never_scrubbed, 31);
    let report = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert_eq!(report.objects, 31, "{report:?}");
    let after = store.status().unwrap().scrub_coverage.unwrap();
    assert_eq!(after.never_scrubbed, 0);
}

/// A packed object is read straight from the bytes its entry names (verified by the entry's
/// CRC32C), not by reading and verifying its pack's chunks: rot elsewhere in the chunk costs it
/// nothing; rot in its own bytes sends the read through the chunks, rebuilt from parity, exact.
#[test]
fn a_packed_object_is_read_from_its_own_bytes_and_rot_in_them_is_rebuilt() {
    let (_dir, store) = packing_store();
    let objects = put_batch(&store, 8, 3000);
    // Eight objects of 3,000 bytes in four data chunks: two share each chunk.
    let path = store.shard_path("o0", 0).unwrap();
    let file = std::fs::read(&path).unwrap();
    let find = |bytes: &[u8]| file.windows(64).position(|w| w == &bytes[..64]);
    let sharing: Vec<usize> = (0..8).filter(|&i| find(&objects[i].1).is_some()).collect();
    assert_eq!(sharing.len(), 2, "the first data file holds two objects");
    let (rotten, other) = (&objects[sharing[0]], &objects[sharing[1]]);
    let read = |key: &str| {
        let mut reader = store.get(key).unwrap();
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).unwrap();
        (bytes, reader.stats())
    };
    // Rot one object's bytes: the other in the same chunk is still read straight, with no
    // chunk read (a chunk read would find the chunk's CRC broken and rebuild the stripe).
    common::rot(&path, find(&rotten.1).unwrap() as u64 + 100, 8);
    let (bytes, stats) = read(&other.0);
    assert!(bytes == other.1);
    assert_eq!(
        (stats.chunks_verified, stats.stripes_reconstructed),
        (0, 0),
        "{stats:?}"
    );
    // The rotten one is read through the chunks and rebuilt from parity, exact.
    let (bytes, stats) = read(&rotten.0);
    assert!(bytes == rotten.1);
    assert_eq!(stats.stripes_reconstructed, 1, "{stats:?}");
    // Ranges too.
    let mut part = Vec::new();
    store
        .get_range(&other.0, 10..20)
        .unwrap()
        .read_to_end(&mut part)
        .unwrap();
    assert_eq!(part, other.1[10..20]);
}

#[test]
fn a_get_reads_through_fresh_files_when_the_pack_files_it_kept_open_were_replaced() {
    // A get keeps a pack's files open for the next one; a repair replaces a file by a new one
    // (a rename). Here every file of the pack rots in place, beyond what parity covers, and is
    // then replaced by a good copy: the files kept open see only rot, files opened now are good.
    let (_dir, store) = packing_store();
    let objects = put_batch(&store, 8, 3000);
    assert!(store.get_bytes("o0").unwrap() == objects[0].1);
    for path in &common::shard_paths(&store, "o0") {
        let good = path.with_extension("good");
        std::fs::copy(path, &good).unwrap();
        let len = std::fs::metadata(path).unwrap().len();
        // Past the header (about 100 bytes), up to the table at the end of a parity file.
        common::rot(path, 200, (len / 2) as usize);
        std::fs::rename(&good, path).unwrap();
    }
    for (key, bytes) in &objects {
        assert!(&store.get_bytes(key).unwrap() == bytes, "{key} read back exact");
    }
}

/// Files under `dir` this process holds open although they were deleted.
fn deleted_files_held_open(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with(&dir) && target.ends_with(" (deleted)"))
        .collect()
}

#[test]
fn pack_files_kept_open_by_gets_are_let_go_once_a_compaction_deletes_their_packs() {
    let (dir, store) = packing_store();
    let other = Store::open(dir.path()).unwrap();
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        store.put(key, &data(i as u64, 100)[..]).unwrap();
    }
    // Both handles read every key: each keeps the packs' files open for its next gets.
    for key in &keys {
        store.get_bytes(key).unwrap();
        other.get_bytes(key).unwrap();
    }
    assert!(deleted_files_held_open(dir.path()).is_empty());
    let report = store
        .scrub(&ScrubOptions::default().repair(true), &|_| {})
        .unwrap();
    assert!(report.compaction.packs_compacted >= 20, "{:?}", report.compaction);
    // The compacting handle forgot the packs it deleted; the other lets them go at its next
    // look at the packs, which finds them gone. Neither holds a deleted file's space.
    for (i, key) in keys.iter().enumerate() {
        assert!(other.get_bytes(key).unwrap() == data(i as u64, 100), "{key}");
    }
    let held = deleted_files_held_open(dir.path());
    assert!(
        held.is_empty(),
        "{} deleted files still open, as {:?}",
        held.len(),
        held.first()
    );
}
