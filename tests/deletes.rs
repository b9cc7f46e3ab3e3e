//! An acknowledged delete stays deleted: a repairing scrub removes a delete's tombstones only
//! after every older write they outvote is gone from every location, never while a location
//! refuses writes, and a scrub killed at any point of that cleanup leaves the key deleted.

mod common;

use std::path::Path;
use std::sync::Arc;

use shardguard::fault::{Fault, FaultPlan, Rule};
use shardguard::{Durability, Error, ScrubOptions, ScrubVerdict, Store};

fn open_with(dir: &Path, plan: &Arc<FaultPlan>) -> Store {
    Store::builder()
        .durability(Durability::PageCache)
        .location_wrapper(plan.wrapper())
        .open(dir)
        .unwrap()
}

fn repair() -> ScrubOptions {
    ScrubOptions::default().repair(true)
}

fn assert_deleted(store: &Store, key: &str, ctx: &str) {
    match store.get_bytes(key) {
        Err(Error::NotFound { .. }) => {}
        Ok(_) => panic!("{ctx}: the deleted {key:?} reads again"),
        Err(e) => panic!("{ctx}: the deleted {key:?} reads as {e}"),
    }
}

/// No shard file of any write is left at any location.
fn assert_no_shards(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            assert!(
                path.extension().is_none_or(|e| e != "shard"),
                "left behind: {}",
                path.display()
            );
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
}

#[test]
fn a_repair_while_a_location_is_read_only_keeps_the_key_deleted() {
    for (k, m) in [(1, 5), (4, 2)] {
        let ctx = format!("{k} + {m}");
        let (dir, store) = common::store(k, m, 1024);
        store.put("key", &common::data(1, 5000)[..]).unwrap();
        drop(store);
        let plan = FaultPlan::new(9);
        plan.inject(Rule::at(3, Fault::ReadOnly));
        let store = open_with(dir.path(), &plan);
        store.delete("key").unwrap();
        assert_deleted(&store, "key", &ctx);
        let report = store.scrub(&repair(), &|_| {}).unwrap();
        assert_deleted(&store, "key", &ctx);
        assert!(
            matches!(
                report.locations[3].state,
                shardguard::LocationState::NotWritable { .. }
            ),
            "{ctx}: the read-only location is named: {report:#?}"
        );
        assert_eq!(report.verdict(), ScrubVerdict::NeedsRepair, "{ctx}");
        // Writable again: the old data goes, then the tombstones.
        plan.clear();
        let store = open_with(dir.path(), &plan);
        store.scrub(&repair(), &|_| {}).unwrap();
        assert_deleted(&store, "key", &ctx);
        assert_no_shards(dir.path());
        let report = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
        assert_eq!(report.verdict(), ScrubVerdict::Clean, "{ctx}: {report:#?}");
    }
}

#[test]
fn a_repair_killed_while_cleaning_up_a_delete_leaves_the_key_deleted() {
    let mut cases = 0;
    for (k, m) in [(1, 2), (4, 2)] {
        let n = usize::from(k + m);
        // An rm killed after `removed` of its old shards were gone, then a repairing scrub
        // killed after `cut` removals: every cut point of the cleanup.
        for removed in [0, 1, n as u64 - 1] {
            for cut in 0..=(2 * n as u64) {
                let ctx = format!("{k} + {m}, rm killed after {removed} removals, scrub after {cut}");
                let (dir, store) = common::store(k, m, 1024);
                store.put("key", &common::data(cut, 3000)[..]).unwrap();
                drop(store);
                let plan = FaultPlan::new(cut);
                let store = open_with(dir.path(), &plan);
                plan.stop_removals_after(Some(removed));
                store.delete("key").unwrap();
                plan.stop_removals_after(Some(cut));
                store.scrub(&repair(), &|_| {}).unwrap();
                plan.stop_removals_after(None);
                let store = common::reopen(dir.path());
                assert_deleted(&store, "key", &ctx);
                store.scrub(&repair(), &|_| {}).unwrap();
                assert_deleted(&store, "key", &ctx);
                assert_no_shards(dir.path());
                cases += 1;
            }
        }
    }
    assert!(cases >= 50, "{cases} cut points");
}
