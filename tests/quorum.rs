//! Writes made during disjoint outages of locations: the newest acknowledged write always wins.
//! Reads never return an older version (they return the newest or a clear error), and a
//! repairing scrub never deletes an acknowledged write, for replication and for wide codes.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shardguard::{Error, ScrubOptions, ScrubVerdict, Store};

/// Takes the given locations away (renamed aside, as an unmounted disk), runs `f` on the store
/// opened without them, and puts them back.
fn during_outage<T>(root: &Path, locations: &[PathBuf], down: &[usize], f: impl FnOnce(&Store) -> T) -> T {
    let aside = |p: &PathBuf| p.with_extension("away");
    for &slot in down {
        fs::rename(&locations[slot], aside(&locations[slot])).unwrap();
    }
    let out = f(&common::reopen(root));
    for &slot in down {
        fs::rename(aside(&locations[slot]), &locations[slot]).unwrap();
    }
    out
}

fn disjoint_outages_keep_the_newest_acknowledged_write(k: u8, m: u8, seed: u64) {
    let (dir, store) = common::store(k, m, 1024);
    let locations = store.locations();
    let n = locations.len();
    drop(store);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut slots: Vec<usize> = (0..n).collect();
    // The newest acknowledged value, if any.
    let mut newest: Option<Vec<u8>> = None;
    for step in 0..40u64 {
        let ctx = format!("k = {k}, m = {m}, seed {seed}, step {step}");
        slots.shuffle(&mut rng);
        let down: Vec<usize> = slots[..rng.random_range(0..=usize::from(m))].to_vec();
        let value = common::data(seed * 1000 + step, rng.random_range(0..5000));
        let action = rng.random_range(0..10);
        during_outage(dir.path(), &locations, &down, |store| {
            // A read during the outage: the newest acknowledged value, or a clear error.
            match (store.get_bytes("key"), &newest) {
                (Ok(got), Some(want)) => {
                    assert!(got == *want, "{ctx}: outage {down:?}: an older version was read")
                }
                (Ok(_), None) => panic!("{ctx}: read a value never acknowledged"),
                (Err(Error::NotFound { .. }), None) => {}
                (Err(e), _) => assert!(
                    !matches!(e, Error::NotFound { .. }),
                    "{ctx}: outage {down:?}: an acknowledged write reads as not found"
                ),
            }
            if action < 8 {
                match store.put("key", &value[..]) {
                    Ok(_) => newest = Some(value.clone()),
                    Err(Error::WriteQuorum { .. }) => {}
                    Err(e) => panic!("{ctx}: put: {e}"),
                }
            } else {
                let options = ScrubOptions::default().repair(true);
                store.scrub(&options, &|_| {}).unwrap();
            }
        });
        // Every location back: exactly the newest acknowledged value.
        let store = common::reopen(dir.path());
        match &newest {
            Some(want) => assert!(
                store.get_bytes("key").unwrap() == *want,
                "{ctx}: outage {down:?}: stale read"
            ),
            None => assert!(
                matches!(store.get_bytes("key"), Err(Error::NotFound { .. })),
                "{ctx}"
            ),
        }
    }
    let store = common::reopen(dir.path());
    let repair = ScrubOptions::default().repair(true);
    store.scrub(&repair, &|_| {}).unwrap();
    if let Some(want) = &newest {
        assert!(
            store.get_bytes("key").unwrap() == *want,
            "seed {seed}: the repair lost the newest write"
        );
    }
    let report = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert_eq!(report.verdict(), ScrubVerdict::Clean, "seed {seed}: {report:?}");
}

#[test]
fn replication_one_plus_three_keeps_the_newest_acknowledged_write() {
    for seed in 0..20 {
        disjoint_outages_keep_the_newest_acknowledged_write(1, 3, seed);
    }
}

#[test]
fn two_plus_four_keeps_the_newest_acknowledged_write() {
    for seed in 0..20 {
        disjoint_outages_keep_the_newest_acknowledged_write(2, 4, seed);
    }
}

#[test]
fn four_plus_two_keeps_the_newest_acknowledged_write() {
    for seed in 0..20 {
        disjoint_outages_keep_the_newest_acknowledged_write(4, 2, seed);
    }
}

#[test]
fn three_way_replication_keeps_the_newest_acknowledged_write() {
    for seed in 0..20 {
        disjoint_outages_keep_the_newest_acknowledged_write(1, 2, seed);
    }
}

/// A write with the current version number but another write id (a disk put back from a time
/// the key was deleted and written anew) is a conflict: scrub reports it, removes neither, and
/// reads keep the write that has a quorum.
#[test]
fn a_conflicting_write_with_the_same_version_is_reported_and_kept() {
    let (dir, store) = common::store(4, 2, 1024);
    let old = common::data(1, 3000);
    store.put("key", &old[..]).unwrap();
    let old_shard = store.shard_path("key", 0).unwrap();
    let saved = fs::read(&old_shard).unwrap();
    // A complete delete removes its tombstones, so the next put starts at version 1 again.
    store.delete("key").unwrap();
    let new = common::data(2, 4000);
    assert_eq!(store.put("key", &new[..]).unwrap().version, 1);
    let current_shard = store.shard_path("key", 0).unwrap();
    assert_ne!(
        current_shard, old_shard,
        "two writes of version 1, different write ids"
    );
    fs::create_dir_all(old_shard.parent().unwrap()).unwrap();
    fs::write(&old_shard, saved).unwrap();
    drop(store);

    let store = common::reopen(dir.path());
    let repair = ScrubOptions::default().repair(true);
    let report = store.scrub(&repair, &|_| {}).unwrap();
    assert_eq!(report.counts.conflicting_writes, 1, "{report:#?}");
    assert_eq!(
        report.verdict(),
        ScrubVerdict::NeedsRepair,
        "a conflict is not repaired away"
    );
    assert!(old_shard.exists(), "the conflicting write was removed");
    assert!(current_shard.exists());
    assert!(store.get_bytes("key").unwrap() == new);
    let again = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert_eq!(again.counts.conflicting_writes, 1, "still reported: {again:#?}");
}
