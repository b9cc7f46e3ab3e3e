//! A put or delete killed with SIGKILL at any moment leaves the key reading as exactly the old or
//! the new bytes (or absent, for a delete), and the store opens cleanly.

mod common;

use std::thread::sleep;
use std::time::{Duration, Instant};

use common::data;
use common::spawn;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shardguard::{Error, Store};

const SEED: u64 = 0xc0ffee;

/// Runs the command to completion once, to learn how long it takes here.
fn duration_of(args: &[&str]) -> Duration {
    let started = Instant::now();
    assert!(spawn(args).wait().unwrap().success());
    started.elapsed()
}

#[test]
fn a_put_killed_at_any_point_leaves_old_or_new() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let root_s = root.to_str().unwrap();
    Store::builder()
        .data_shards(4)
        .parity_shards(2)
        .chunk_size(256 << 10)
        .create(&root)
        .unwrap();
    let versions: Vec<Vec<u8>> = (0..2).map(|i| data(i, 6 << 20)).collect();
    let files: Vec<String> = (0..2)
        .map(|i| {
            let f = dir.path().join(format!("v{i}"));
            std::fs::write(&f, &versions[i]).unwrap();
            f.to_str().unwrap().to_owned()
        })
        .collect();
    let full = duration_of(&["put", root_s, "key", &files[0]]);
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    for round in 0..24 {
        let old = round % 2;
        let new = 1 - old;
        // Kill points spread over the whole put, from before it opened the store to after.
        let delay = full.mul_f64(rng.random_range(0.0..1.3));
        let mut child = spawn(&["put", root_s, "key", &files[new]]);
        sleep(delay);
        let _ = child.kill();
        let finished = child.wait().unwrap().success();
        let store = Store::open(&root).expect("store opens after a crash");
        let got = store
            .get_bytes("key")
            .unwrap_or_else(|e| panic!("seed {SEED} round {round}: {e}"));
        assert!(
            got == versions[old] || got == versions[new],
            "seed {SEED} round {round} (delay {delay:?}): neither old nor new"
        );
        if finished {
            assert!(got == versions[new], "a completed put must be visible");
        }
        eprintln!(
            "round {round}: delay {delay:?} finished {finished} new {}",
            got == versions[new]
        );
        // Leave the key at `new` so the next round's old is well defined.
        store.put("key", &versions[new][..]).unwrap();
    }
}

#[test]
fn a_delete_killed_at_any_point_leaves_old_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let root_s = root.to_str().unwrap();
    let store = Store::builder()
        .data_shards(4)
        .parity_shards(2)
        .chunk_size(64 << 10)
        .create(&root)
        .unwrap();
    let bytes = data(3, 1 << 20);
    store.put("key", &bytes[..]).unwrap();
    let full = duration_of(&["rm", root_s, "key"]);
    let mut rng = ChaCha8Rng::seed_from_u64(SEED + 1);
    for round in 0..24 {
        store.put("key", &bytes[..]).unwrap();
        let delay = full.mul_f64(rng.random_range(0.0..1.3));
        let mut child = spawn(&["rm", root_s, "key"]);
        sleep(delay);
        let _ = child.kill();
        let finished = child.wait().unwrap().success();
        let store = Store::open(&root).expect("store opens after a crash");
        match store.get_bytes("key") {
            Ok(got) => {
                assert!(got == bytes, "seed {SEED} round {round}: wrong bytes");
                assert!(!finished, "a completed delete must be visible");
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => panic!("seed {SEED} round {round} (delay {delay:?}): {e}"),
        }
    }
}
