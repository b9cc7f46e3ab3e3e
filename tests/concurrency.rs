//! Several processes putting and reading one key at once: every read returns one complete
//! version (never a mix), and afterwards the key holds exactly one of the written versions.

mod common;

use std::process::Child;

use common::data;
use common::spawn;
use shardguard::{ShardState, Store};

#[test]
fn concurrent_writers_and_readers_of_one_key_see_whole_versions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let root_s = root.to_str().unwrap();
    let store = Store::builder()
        .data_shards(3)
        .parity_shards(2)
        .chunk_size(64 << 10)
        .create(&root)
        .unwrap();
    let versions: Vec<Vec<u8>> = (0..4)
        .map(|i| data(100 + i, (1 << 20) + i as usize * 1000))
        .collect();
    let files: Vec<String> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let f = dir.path().join(format!("v{i}"));
            std::fs::write(&f, v).unwrap();
            f.to_str().unwrap().to_owned()
        })
        .collect();
    store.put("key", &versions[0][..]).unwrap();
    for round in 0..5 {
        let writers: Vec<Child> = files.iter().map(|f| spawn(&["put", root_s, "key", f])).collect();
        let readers: Vec<Child> = (0..4).map(|_| spawn(&["get", root_s, "key"])).collect();
        for w in writers {
            let out = w.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for r in readers {
            let out = r.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                versions.contains(&out.stdout),
                "round {round}: a read returned a mix"
            );
        }
        let got = store.get_bytes("key").unwrap();
        assert!(versions.contains(&got), "round {round}");
        // Exactly one version survives, complete on every location.
        let stat = store.stat("key").unwrap();
        assert!(
            stat.shards.iter().all(|s| s.state == ShardState::Healthy),
            "{stat:?}"
        );
        assert_eq!(
            stat.version,
            2 + 4 * (round + 1) - 1,
            "every put got its own version"
        );
    }
}

#[test]
fn threads_sharing_one_store_serialize_writes() {
    let (_dir, store) = common::store(2, 1, 4096);
    let versions: Vec<Vec<u8>> = (0..4).map(|i| data(i, 50_000)).collect();
    std::thread::scope(|s| {
        for v in &versions {
            let (store, versions) = (&store, &versions);
            s.spawn(move || {
                for _ in 0..10 {
                    store.put("key", &v[..]).unwrap();
                    let got = store.get_bytes("key").unwrap();
                    assert!(versions.contains(&got));
                }
            });
        }
    });
    assert_eq!(store.stat("key").unwrap().version, 40);
}

/// Readers never fail because of a writer: with one location's reads delayed 20 ms (so a read
/// of the headers spans a put's commit and its retiring of the old version), every get, stat
/// and list beside a stream of puts to the same key sees the old or the new version.
#[test]
fn readers_beside_a_writer_with_a_slow_location_never_fail() {
    use shardguard::fault::{Fault, FaultPlan, Rule};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    let (dir, store) = common::store(4, 2, 4096);
    let versions: Vec<Vec<u8>> = (0..8).map(|i| data(500 + i, 9_000 + i as usize)).collect();
    store.put("key", &versions[0][..]).unwrap();
    let plan = FaultPlan::new(20);
    // The slow location holds a parity shard of the key: a healthy get reads no chunk there, so
    // the delay falls on the header reads, where the race with the writer is.
    let object = shardguard::location::ObjectId::of_key("key");
    let slow_slot = shardguard::placement::slot_of_shard(object, 4, 6);
    let mut slow = Rule::at(slow_slot, Fault::Delay(Duration::from_millis(20)));
    slow.include_headers = true;
    plan.inject(slow);
    let readers_store = Store::builder()
        .durability(shardguard::Durability::PageCache)
        .location_wrapper(plan.wrapper())
        .open(dir.path())
        .unwrap();
    let stop = AtomicBool::new(false);
    let gets = AtomicU64::new(0);
    const GETS: u64 = 10_000;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                store.put("key", &versions[i % versions.len()][..]).unwrap();
            }
        });
        let readers: Vec<_> = (0..32)
            .map(|t| {
                let (readers_store, versions, gets) = (&readers_store, &versions, &gets);
                s.spawn(move || {
                    let mut errors = Vec::new();
                    while gets.fetch_add(1, Ordering::Relaxed) < GETS {
                        match readers_store.get_bytes("key") {
                            Ok(bytes) if versions.contains(&bytes) => {}
                            Ok(_) => errors.push("a get returned bytes no put wrote".to_owned()),
                            Err(e) => errors.push(format!("get: {e}")),
                        }
                        if t == 0 {
                            match readers_store.list() {
                                Ok(list) if list.len() == 1 => {}
                                other => errors.push(format!("list: {other:?}")),
                            }
                            if let Err(e) = readers_store.stat("key") {
                                errors.push(format!("stat: {e}"));
                            }
                        }
                    }
                    errors
                })
            })
            .collect();
        let errors: Vec<String> = readers.into_iter().flat_map(|r| r.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        assert!(
            errors.is_empty(),
            "{} of {GETS} reads failed beside a writer, first: {}",
            errors.len(),
            errors[0]
        );
    });
}

/// A key read while its first put is under way is "not found" or the whole object: never an
/// "unrecoverable" error on an undamaged store.
#[test]
fn readers_of_a_key_during_its_first_put_see_not_found_or_the_whole_object() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let dir = tempfile::tempdir().unwrap();
    // fsynced puts, so each commit spans a while; the readers open the store on their own.
    let writer = Store::builder()
        .data_shards(4)
        .parity_shards(2)
        .chunk_size(4096)
        .create(dir.path())
        .unwrap();
    let reader = common::reopen(dir.path());
    let value = |i: usize| data(7_000 + i as u64, 20_000);
    let next = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..150 {
                next.store(i, Ordering::Relaxed);
                writer.put(&format!("new/{i}"), &value(i)[..]).unwrap();
            }
            done.store(true, Ordering::Relaxed);
        });
        let readers: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    let (mut reads, mut errors) = (0u64, Vec::new());
                    while !done.load(Ordering::Relaxed) {
                        let i = next.load(Ordering::Relaxed);
                        reads += 1;
                        match reader.get_bytes(&format!("new/{i}")) {
                            Ok(bytes) if bytes == value(i) => {}
                            Ok(_) => errors.push(format!("new/{i}: wrong bytes")),
                            Err(shardguard::Error::NotFound { .. }) => {}
                            Err(e) => errors.push(format!("new/{i}: {e}")),
                        }
                    }
                    (reads, errors)
                })
            })
            .collect();
        let (mut reads, mut errors) = (0, Vec::new());
        for r in readers {
            let (n, e) = r.join().unwrap();
            reads += n;
            errors.extend(e);
        }
        assert!(
            errors.is_empty(),
            "{} of {reads} reads of new keys failed, first: {}",
            errors.len(),
            errors[0]
        );
    });
}
