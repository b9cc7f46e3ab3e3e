//! A location that changes under an open store (its disk unmounted, leaving the empty mount
//! point behind; another store's disk mounted in its place) receives no shard: before each
//! write the store checks the location is still the one it opened, and marks it unusable.

mod common;

use std::fs;
use std::path::Path;

use common::data;
use shardguard::{ScrubOptions, ScrubVerdict};

/// Every file and directory under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn an_unmounted_location_under_an_open_store_receives_no_shard() {
    let (_dir, store) = common::store(4, 2, 1024);
    store.put("before", &data(1, 5000)[..]).unwrap();
    let location = store.locations()[2].clone();
    // The disk goes away under the running store; its empty mount point stays.
    fs::rename(&location, location.with_extension("unmounted")).unwrap();
    fs::create_dir(&location).unwrap();
    store.put("after", &data(2, 5000)[..]).unwrap();
    store.put("before", &data(3, 5000)[..]).unwrap();
    assert!(
        tree(&location).is_empty(),
        "written through: {:?}",
        tree(&location)
    );
    assert!(store.location_problems()[2].is_some());
    assert_eq!(store.get_bytes("after").unwrap(), data(2, 5000));
    let report = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert_eq!(report.verdict(), ScrubVerdict::NeedsRepair, "{report:#?}");
    assert!(
        tree(&location).is_empty(),
        "a scrub wrote there: {:?}",
        tree(&location)
    );
}

#[test]
fn another_stores_disk_swapped_in_under_an_open_store_is_left_alone() {
    let (_dir, store) = common::store(4, 2, 1024);
    store.put("k", &data(4, 5000)[..]).unwrap();
    let (_other_dir, other) = common::store(4, 2, 1024);
    other.put("theirs", &data(5, 5000)[..]).unwrap();
    let theirs = other.locations()[2].clone();
    drop(other);
    let location = store.locations()[2].clone();
    fs::rename(&location, location.with_extension("away")).unwrap();
    fs::rename(&theirs, &location).unwrap();
    let before = tree(&location);
    store.put("k", &data(6, 5000)[..]).unwrap();
    store.put("new", &data(7, 5000)[..]).unwrap();
    let repair = ScrubOptions::default().repair(true);
    store.scrub(&repair, &|_| {}).unwrap();
    assert_eq!(tree(&location), before, "another store's disk was written to");
    assert_eq!(store.get_bytes("k").unwrap(), data(6, 5000));
}
