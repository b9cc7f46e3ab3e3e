//! The library's handles as a Rust user expects them: a `Store` is a cheap `Clone` shared
//! between threads, and `get` hands out an owned reader that outlives the handle it came from
//! and moves into another thread.

mod common;

use std::io::Read;
use std::path::Path;

use shardguard::ObjectReader;

/// The store opened through a fault plan with no faults: it counts the bytes read.
fn counting_reads(dir: &Path) -> (std::sync::Arc<shardguard::fault::FaultPlan>, shardguard::Store) {
    let plan = shardguard::fault::FaultPlan::new(1);
    let store = shardguard::Store::builder()
        .durability(shardguard::Durability::PageCache)
        .location_wrapper(plan.wrapper())
        .open(dir)
        .unwrap();
    (plan, store)
}

/// Opens the store, reads from it, and returns the reader: the handle is dropped here.
fn reader_of(dir: &Path, key: &str) -> ObjectReader {
    let store = common::reopen(dir);
    store.get(key).unwrap()
}

#[test]
fn a_reader_outlives_its_store_handle_and_moves_into_a_thread() {
    let (dir, store) = common::store(4, 2, 4096);
    let bytes = common::data(1, 100_000);
    store.put("k", &bytes[..]).unwrap();
    drop(store);
    let mut reader = reader_of(dir.path(), "k");
    let read = std::thread::spawn(move || {
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        out
    })
    .join()
    .unwrap();
    assert!(read == bytes);
}

#[test]
fn clones_of_a_store_share_it_across_threads() {
    let (_dir, store) = common::store(4, 2, 4096);
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    store
                        .put(&format!("t{t}/{i}"), &common::data(t * 100 + i, 5000)[..])
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(store.list().unwrap().len(), 40);
    fn is_send_static<T: Send + 'static>(_: &T) {}
    let reader = store.get("t0/0").unwrap();
    is_send_static(&reader);
    is_send_static(&store);
}

#[test]
fn a_producer_puts_through_an_object_writer_and_a_dropped_writer_changes_nothing() {
    use std::io::Write;
    let (_dir, store) = common::store(4, 2, 4096);
    let old = common::data(2, 10_000);
    store.put("k", &old[..]).unwrap();
    // A producer on another thread, writing in uneven pieces (more than one internal buffer).
    let new = common::data(3, 3 << 20);
    let mut writer = store.writer("k").unwrap();
    let produced = new.clone();
    let outcome = std::thread::spawn(move || {
        for piece in produced.chunks(77_777) {
            writer.write_all(piece).unwrap();
        }
        writer.finish()
    })
    .join()
    .unwrap()
    .unwrap();
    assert_eq!(outcome.len, new.len() as u64);
    assert!(store.get_bytes("k").unwrap() == new);
    // Dropped without finish: the previous version stays current.
    let mut writer = store.writer("k").unwrap();
    writer.write_all(&common::data(4, 2 << 20)).unwrap();
    drop(writer);
    assert!(store.get_bytes("k").unwrap() == new);
    // Likewise for a key that did not exist: it still does not.
    let mut writer = store.writer("fresh").unwrap();
    writer.write_all(b"partial").unwrap();
    drop(writer);
    assert!(matches!(
        store.get_bytes("fresh"),
        Err(shardguard::Error::NotFound { .. })
    ));
}

#[test]
fn of_racing_create_puts_exactly_one_wins_and_updates_need_the_current_version() {
    use shardguard::{Error, PutMode};
    let (_dir, store) = common::store(4, 2, 4096);
    let winners: Vec<bool> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                match store.put_with("k", &common::data(t, 5000)[..], PutMode::Create) {
                    Ok(_) => true,
                    Err(Error::PreconditionFailed { current: Some(_), .. }) => false,
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{winners:?}");
    let version = store.stat("k").unwrap().version;
    // An update from a stale version is refused and changes nothing.
    let before = store.get_bytes("k").unwrap();
    let stale = store.put_with("k", &b"stale"[..], PutMode::Update { version: version + 7 });
    assert!(
        matches!(stale, Err(Error::PreconditionFailed { .. })),
        "{stale:?}"
    );
    assert!(store.get_bytes("k").unwrap() == before);
    // From the current one it goes through.
    let done = store
        .put_with("k", &b"fresh"[..], PutMode::Update { version })
        .unwrap();
    assert!(done.version > version);
    assert_eq!(store.get_bytes("k").unwrap(), b"fresh");
    // Create after a delete: absent again, so allowed.
    store.delete("k").unwrap();
    store.put_with("k", &b"again"[..], PutMode::Create).unwrap();
}

#[test]
fn range_reads_are_exact_at_stripe_and_chunk_boundaries_and_past_the_end() {
    use std::io::Read;
    let (dir, store) = common::store(4, 2, 4096); // stripes of 16 KiB of data
    let bytes = common::data(5, 100_000);
    store.put("k", &bytes[..]).unwrap();
    // A rotten chunk inside some of the ranges: rebuilt from parity, never served.
    common::rot(
        &store.shard_path("k", 1).unwrap(),
        common::chunk_offset("k", 4096, 1),
        50,
    );
    let read = |range: std::ops::Range<u64>| {
        let mut out = Vec::new();
        store
            .get_range("k", range)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    let len = bytes.len() as u64;
    for range in [
        0..100,
        16_384..16_394,   // a stripe's first bytes
        4_091..4_101,     // across a chunk boundary
        16_380..32_800,   // across two stripe boundaries, through the rotten chunk
        20_000..20_480,   // inside the rotten chunk
        0..len,           // the whole object
        99_990..200_000,  // past the end: cut at the end
        50..50,           // empty
        200_000..300_000, // starting past the end: empty
    ] {
        let expected = &bytes[(range.start.min(len) as usize)..(range.end.min(len) as usize)];
        assert!(read(range.clone()) == expected, "{range:?}");
    }
    // Only the stripes a range needs are read: against the whole object, read the same way.
    let (plan, counted) = counting_reads(dir.path());
    let bytes_read_by = |range: std::ops::Range<u64>| {
        let before = plan.bytes_read();
        let mut out = Vec::new();
        counted
            .get_range("k", range.clone())
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert!(out == bytes[range.start as usize..range.end as usize]);
        plan.bytes_read() - before
    };
    let whole = bytes_read_by(0..len);
    let ten = bytes_read_by(50_000..50_010);
    // One stripe of seven (and the six headers every read takes).
    assert!(
        ten * 4 < whole,
        "{ten} bytes read for 10, {whole} for the whole object"
    );
}

#[test]
fn listing_by_prefix_streams_only_the_matching_keys() {
    let (dir, store) = common::store(2, 1, 1024);
    for i in 0..40 {
        let key = if i % 4 == 0 {
            format!("photos/{i}")
        } else {
            format!("docs/{i}")
        };
        store.put(&key, &common::data(i, 100 + i as usize)[..]).unwrap();
    }
    let mut photos: Vec<String> = store.list_prefix("photos/").unwrap().map(|e| e.key).collect();
    photos.sort();
    let mut expected: Vec<String> = (0..40).step_by(4).map(|i| format!("photos/{i}")).collect();
    expected.sort();
    assert_eq!(photos, expected);
    assert_eq!(store.list().unwrap().len(), 40);
    // Lazily: the first entry costs the headers of its bucket's objects, not of all 40.
    let (plan, counted) = counting_reads(dir.path());
    let all = counted.list_prefix("").unwrap().count();
    let for_all = plan.bytes_read();
    assert_eq!(all, 40);
    counted.list_prefix("").unwrap().next().unwrap();
    let for_first = plan.bytes_read() - for_all;
    assert!(
        for_first * 4 < for_all,
        "{for_first} bytes read for one entry, {for_all} for all"
    );
}

#[test]
fn errors_say_whether_retrying_can_help() {
    let (dir, store) = common::store(4, 2, 1024);
    let missing = store.get_bytes("absent").unwrap_err();
    assert!(!missing.is_retryable(), "{missing}");
    let bad_key = store.put("", &b"x"[..]).unwrap_err();
    assert!(!bad_key.is_retryable(), "{bad_key}");
    // Three of six locations gone: puts cannot reach their quorum until they are back.
    for slot in 0..3 {
        std::fs::rename(&store.locations()[slot], dir.path().join(format!("away-{slot}"))).unwrap();
    }
    let store = common::reopen(dir.path());
    let no_quorum = store.put("k", &b"x"[..]).unwrap_err();
    assert!(no_quorum.is_retryable(), "{no_quorum}");
}

#[test]
fn one_builder_creates_with_a_geometry_and_opens_with_the_stores_own() {
    use shardguard::{ConfigProblem, Error, Store};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Store::builder()
        .data_shards(3)
        .parity_shards(3)
        .chunk_size(8192)
        .durability(shardguard::Durability::PageCache)
        .retry_policy(shardguard::RetryPolicy::no_retry())
        .create(&root)
        .unwrap();
    store.put("k", &b"bytes"[..]).unwrap();
    drop(store);
    // Geometry setters are for `create`: `open` takes the store's own, whatever they say.
    let store = Store::builder().data_shards(9).open(&root).unwrap();
    let geometry = store.geometry();
    assert_eq!((geometry.k, geometry.m, geometry.chunk_size), (3, 3, 8192));
    assert_eq!(store.get_bytes("k").unwrap(), b"bytes");

    // A geometry that cannot work is a typed refusal, and nothing is written.
    let refused = dir.path().join("refused");
    match Store::builder().data_shards(0).create(&refused) {
        Err(Error::InvalidConfig {
            problem: ConfigProblem::Geometry { k: 0, m: 2, .. },
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(!refused.join(shardguard::STORE_FILE).exists());
    match Store::builder().locations(["a", "b"]).create(&refused) {
        Err(Error::InvalidConfig {
            problem: ConfigProblem::LocationCount { given: 2, needed: 6 },
        }) => {}
        other => panic!("{other:?}"),
    }
    match Store::builder()
        .locations(["a", "b", "c", "d", "e", "a"])
        .create(&refused)
    {
        Err(Error::InvalidConfig {
            problem: ConfigProblem::LocationsSame(..),
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(!refused.join(shardguard::STORE_FILE).exists());
}

#[test]
fn location_and_shard_states_are_enums_a_caller_can_match() {
    use shardguard::{HeaderProblem, LocationProblem, ShardState};
    let (dir, store) = common::store(4, 2, 4096);
    store.put("k", &common::data(2, 20_000)[..]).unwrap();
    // One shard's header made invalid, one location's identity removed.
    let damaged = store.shard_path("k", 0).unwrap();
    common::rot(&damaged, 0, 4);
    let locations = store.locations();
    let wiped_slot = (0..locations.len())
        .find(|&s| !damaged.starts_with(&locations[s]))
        .unwrap();
    std::fs::remove_file(locations[wiped_slot].join(shardguard::location::IDENTITY_FILE)).unwrap();
    let store = common::reopen(dir.path());
    assert_eq!(
        store.location_problems()[wiped_slot],
        Some(LocationProblem::IdentityMissing)
    );
    let stat = store.stat("k").unwrap();
    let states: Vec<&ShardState> = stat.shards.iter().map(|h| &h.state).collect();
    assert!(
        states.iter().any(|s| matches!(
            s,
            ShardState::HeaderDamaged {
                problem: HeaderProblem::Invalid(_)
            }
        )),
        "{states:?}"
    );
    assert!(
        states.iter().any(|s| matches!(
            s,
            ShardState::Unavailable {
                problem: LocationProblem::IdentityMissing
            }
        )),
        "{states:?}"
    );
    // The states serialize for `scrub --json` with a machine-readable kind.
    let report = store
        .scrub(&shardguard::ScrubOptions::default(), &|_| {})
        .unwrap();
    let json = serde_json::to_value(&report.locations[wiped_slot].state).unwrap();
    assert_eq!(json["kind"], "unusable");
    assert_eq!(json["problem"]["kind"], "identity_missing");
}
