//! The store file is no single point of failure: every location keeps a copy, a store whose
//! `shardguard.store` is lost, damaged or replaced by something hostile opens from the copies
//! (saying so), and a repairing scrub rewrites it (and any missing copy).

mod common;

use std::fs;
use std::time::Duration;

use common::{data, sg, within};
use shardguard::{Durability, ScrubOptions, ScrubVerdict, Store, STORE_FILE};

fn repair() -> ScrubOptions {
    ScrubOptions::default().repair(true)
}

#[test]
fn a_lost_or_damaged_store_file_is_read_from_the_locations_and_rewritten() {
    type Damage = fn(&std::path::Path);
    let damages: [(&str, Damage); 8] = [
        ("deleted", |p| fs::remove_file(p).unwrap()),
        ("a flipped byte", |p| common::rot(p, 20, 1)),
        ("truncated to half", |p| {
            let len = fs::metadata(p).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(len / 2)
                .unwrap()
        }),
        ("zeros", |p| {
            let len = fs::metadata(p).unwrap().len() as usize;
            fs::write(p, vec![0u8; len]).unwrap()
        }),
        ("a directory", |p| {
            fs::remove_file(p).unwrap();
            fs::create_dir(p).unwrap()
        }),
        ("a FIFO", |p| {
            fs::remove_file(p).unwrap();
            assert!(std::process::Command::new("mkfifo")
                .arg(p)
                .status()
                .unwrap()
                .success())
        }),
        ("a link to /dev/zero", |p| {
            fs::remove_file(p).unwrap();
            std::os::unix::fs::symlink("/dev/zero", p).unwrap()
        }),
        ("a link to a shard", |p| {
            let shard = p.parent().unwrap().join("shard-link-target");
            fs::write(&shard, b"not a store file").unwrap();
            fs::remove_file(p).unwrap();
            std::os::unix::fs::symlink(&shard, p).unwrap()
        }),
    ];
    for (what, damage) in damages {
        let (dir, store) = common::store(4, 2, 1024);
        let bytes = data(3, 7000);
        store.put("k", &bytes[..]).unwrap();
        drop(store);
        let path = dir.path().join(STORE_FILE);
        damage(&path);
        let root = dir.path().to_path_buf();
        let (problem, got, report) = within(Duration::from_secs(20), what, move || {
            let store = common::reopen(&root);
            let problem = store.store_file_problem();
            let got = store.get_bytes("k").unwrap();
            let report = store.scrub(&repair(), &|_| {}).unwrap();
            (problem, got, report)
        });
        match (what, &problem) {
            ("deleted", Some(shardguard::StoreFileProblem::Missing { .. })) => {}
            ("a flipped byte", Some(shardguard::StoreFileProblem::Damaged { .. })) => {}
            ("deleted" | "a flipped byte", _) => panic!("{what}: {problem:?}"),
            _ => assert!(problem.is_some(), "{what}: the problem is said"),
        }
        assert!(got == bytes, "{what}");
        assert_eq!(report.verdict(), ScrubVerdict::Repaired, "{what}: {report:#?}");
        let store = common::reopen(dir.path());
        assert_eq!(store.store_file_problem(), None, "{what}: rewritten");
        let report = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
        assert_eq!(report.verdict(), ScrubVerdict::Clean, "{what}: {report:#?}");
    }
}

#[test]
fn the_cli_warns_once_and_a_missing_copy_is_rewritten_by_repair() {
    let (dir, store) = common::store(4, 2, 1024);
    store.put("k", &data(4, 3000)[..]).unwrap();
    let copy = store.locations()[1].join("SHARDGUARD-STORE");
    drop(store);
    fs::remove_file(&copy).unwrap();
    fs::remove_file(dir.path().join(STORE_FILE)).unwrap();
    let root = dir.path().to_str().unwrap();
    let out = sg(&["get", root, "k"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("copies in the locations"), "{stderr}");
    let out = sg(&["scrub", root, "--repair"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(copy.exists());
    assert_eq!(sg(&["scrub", root]).status.code(), Some(0));
}

#[test]
fn a_store_whose_locations_are_elsewhere_reopens_from_one_named_location() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let disks: Vec<std::path::PathBuf> = (0..6).map(|i| dir.path().join(format!("disk{i}"))).collect();
    let bytes = data(5, 9000);
    Store::builder()
        .data_shards(4)
        .parity_shards(2)
        .chunk_size(1024)
        .locations(disks.clone())
        .durability(Durability::PageCache)
        .create(&root)
        .unwrap()
        .put("k", &bytes[..])
        .unwrap();
    fs::remove_file(root.join(STORE_FILE)).unwrap();
    // No location under the root: nothing to open from without a hint...
    assert!(Store::open(&root).is_err());
    let (root_s, hint) = (root.to_str().unwrap(), disks[3].to_str().unwrap());
    assert_eq!(sg(&["get", root_s, "k"]).status.code(), Some(8));
    // ...and one location named leads to all of them.
    let store = Store::builder()
        .durability(Durability::PageCache)
        .location_hint(&disks[3])
        .open(&root)
        .unwrap();
    assert!(store.store_file_problem().is_some());
    assert!(store.get_bytes("k").unwrap() == bytes);
    drop(store);
    let out = sg(&["get", root_s, "k", "--location-hint", hint]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == bytes);
    let out = sg(&["--location-hint", hint, "scrub", root_s, "--repair"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Rewritten: opens without the hint.
    let store = Store::open(&root).unwrap();
    assert_eq!(store.store_file_problem(), None);
    assert!(store.get_bytes("k").unwrap() == bytes);
}
