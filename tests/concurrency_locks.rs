//! Writers and scrubs of many objects that share one bucket, from thread pools of their own or
//! of the caller, never deadlock: no lock is held across a work-stealing wait.

mod common;

use std::sync::Arc;
use std::time::Duration;

use rayon::prelude::*;
use shardguard::{ScrubOptions, ScrubVerdict, Store};

fn same_bucket_store(count: usize) -> (tempfile::TempDir, Arc<Store>, Vec<String>) {
    let (dir, store) = common::store(4, 2, 4096);
    let keys = common::keys_in_bucket(0, count);
    for (i, key) in keys.iter().enumerate() {
        store.put(key, &common::data(i as u64, 64 << 10)[..]).unwrap();
    }
    (dir, Arc::new(store), keys)
}

#[test]
fn scrub_with_many_jobs_over_one_bucket_never_deadlocks() {
    let (_dir, store, _keys) = same_bucket_store(300);
    for jobs in [8, 16] {
        for round in 0..50 {
            let store = Arc::clone(&store);
            let report = common::within(
                Duration::from_secs(60),
                &format!("scrub, {jobs} jobs, round {round}"),
                move || {
                    let options = ScrubOptions::default().jobs(jobs);
                    store.scrub(&options, &|_| {}).unwrap()
                },
            );
            assert_eq!(
                report.verdict(),
                ScrubVerdict::Clean,
                "{jobs} jobs, round {round}"
            );
            assert_eq!(report.objects, 300);
        }
    }
}

#[test]
fn puts_over_one_bucket_from_a_callers_rayon_pool_never_deadlock() {
    // fsynced puts: the longer a put holds its lock, the likelier a stolen job needs it.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::builder()
            .data_shards(4)
            .parity_shards(2)
            .chunk_size(4096)
            .create(dir.path())
            .unwrap(),
    );
    let keys = common::keys_in_bucket(0, 400);
    for round in 0..3u64 {
        let pool_store = Arc::clone(&store);
        put_every_key_twice_from_a_pool(&format!("pool puts, round {round}"), &keys, move |i, key| {
            let bytes = common::data(round * 10_000 + i as u64 % 400, 64 << 10);
            pool_store.put(key, &bytes[..]).unwrap();
        });
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                store.get_bytes(key).unwrap(),
                common::data(round * 10_000 + i as u64, 64 << 10),
                "round {round}, {key}"
            );
        }
    }
}

/// Small puts into a packing store from a caller's rayon pool, through two handles: each put
/// holds its key's lock while the handle loads the tables of packs the other handle wrote.
/// Loading a table must not wait on rayon there (a stolen put of the same key would wait on
/// that lock for ever).
#[test]
fn packed_puts_from_a_callers_rayon_pool_reading_each_others_packs_never_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder()
        .data_shards(4)
        .parity_shards(2)
        .chunk_size(16 << 10)
        .pack_threshold(8 << 10)
        .durability(shardguard::Durability::PageCache)
        .create(dir.path())
        .unwrap();
    let other = Store::builder()
        .durability(shardguard::Durability::PageCache)
        .open(dir.path())
        .unwrap();
    let handles = [store, other];
    let keys = common::keys_in_bucket(0, 100);
    for round in 0..3u64 {
        let pool_handles = handles.clone();
        let what = format!("packed pool puts, round {round}");
        put_every_key_twice_from_a_pool(&what, &keys, move |i, key| {
            let bytes = common::data(round * 10_000 + i as u64 % 100, 3000);
            pool_handles[i % 2].put(key, &bytes[..]).unwrap();
        });
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                handles[1].get_bytes(key).unwrap(),
                common::data(round * 10_000 + i as u64, 3000),
                "round {round}, {key}"
            );
        }
    }
}

/// Runs `put(i, key)` for every key twice (so the pool also runs two puts of one key at once)
/// on a rayon pool of eight threads, failing if it takes over two minutes (a deadlock).
fn put_every_key_twice_from_a_pool(
    what: &str,
    keys: &[String],
    put: impl Fn(usize, &str) + Send + Sync + 'static,
) {
    let keys = keys.to_vec();
    common::within(Duration::from_secs(120), what, move || {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(8).build().unwrap();
        pool.install(|| {
            keys.par_iter()
                .chain(keys.par_iter())
                .enumerate()
                .for_each(|(i, key)| put(i, key))
        });
    });
}
