//! A single fault in any one file of a store (a shard, an identity, a store file or its copy,
//! the lock file, the scrub's history and report) never costs data and never hangs: every get
//! returns the exact bytes within a time bound, `scrub --repair` then `scrub` come back clean,
//! and every object is exact after. Each case runs on a fresh copy of one sample store.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shardguard::{ScrubOptions, ScrubVerdict, Store};

const KEYS: [(&str, usize); 5] = [
    ("empty", 0),
    ("tiny", 5),
    ("one-stripe", 3000),
    ("several", 20_000),
    ("dir/with/slashes", 1500),
];

#[derive(Debug, Clone, Copy)]
enum Fault {
    Flip(Where),
    TruncateToZero,
    TruncateToHalf,
    Delete,
    Zeros,
    Directory,
    Fifo,
    LinkToAnotherShard,
    LinkToDevZero,
}

#[derive(Debug, Clone, Copy)]
enum Where {
    Start,
    Middle,
    End,
}

const FAULTS: [Fault; 11] = [
    Fault::Flip(Where::Start),
    Fault::Flip(Where::Middle),
    Fault::Flip(Where::End),
    Fault::TruncateToZero,
    Fault::TruncateToHalf,
    Fault::Delete,
    Fault::Zeros,
    Fault::Directory,
    Fault::Fifo,
    Fault::LinkToAnotherShard,
    Fault::LinkToDevZero,
];

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn inflict(path: &Path, fault: Fault, another_shard: &Path) {
    let len = fs::metadata(path).unwrap().len();
    let replace = |make: &dyn Fn()| {
        fs::remove_file(path).unwrap();
        make();
    };
    match fault {
        Fault::Flip(at) if len > 0 => {
            let offset = match at {
                Where::Start => 0,
                Where::Middle => len / 2,
                Where::End => len - 1,
            };
            common::rot(path, offset, 1);
        }
        Fault::Flip(_) => {}
        Fault::TruncateToZero => fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(0)
            .unwrap(),
        Fault::TruncateToHalf => fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len / 2)
            .unwrap(),
        Fault::Delete => fs::remove_file(path).unwrap(),
        Fault::Zeros => fs::write(path, vec![0u8; len as usize]).unwrap(),
        Fault::Directory => replace(&|| fs::create_dir(path).unwrap()),
        Fault::Fifo => replace(&|| assert!(Command::new("mkfifo").arg(path).status().unwrap().success())),
        Fault::LinkToAnotherShard => replace(&|| std::os::unix::fs::symlink(another_shard, path).unwrap()),
        Fault::LinkToDevZero => replace(&|| std::os::unix::fs::symlink("/dev/zero", path).unwrap()),
    }
}

fn copy_tree(from: &Path, to: &Path) {
    assert!(Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success());
}

#[test]
fn any_single_fault_in_any_file_costs_nothing() {
    let sample = tempfile::tempdir().unwrap();
    let root = sample.path().join("store");
    let store = Store::builder()
        .durability(shardguard::Durability::PageCache)
        .data_shards(4)
        .parity_shards(2)
        .chunk_size(1024)
        .create(&root)
        .unwrap();
    for (i, (key, len)) in KEYS.iter().enumerate() {
        store.put(key, &common::data(i as u64, *len)[..]).unwrap();
    }
    // The scrub state exists too: a history and a last report.
    assert_eq!(
        store.scrub(&ScrubOptions::default(), &|_| {}).unwrap().verdict(),
        ScrubVerdict::Clean
    );
    drop(store);
    let mut files = Vec::new();
    files_under(&root, &mut files);
    files.sort();
    let shards: Vec<PathBuf> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "shard"))
        .cloned()
        .collect();
    let work = tempfile::tempdir().unwrap();
    let mut cases = 0;
    let mut failures = Vec::new();
    for (f, file) in files.iter().enumerate() {
        let relative = file.strip_prefix(&root).unwrap().to_path_buf();
        let another = shards
            .iter()
            .find(|s| *s != file)
            .unwrap()
            .strip_prefix(&root)
            .unwrap()
            .to_path_buf();
        for fault in FAULTS {
            cases += 1;
            let copy = work.path().join(format!("case-{f}-{cases}"));
            copy_tree(&root, &copy);
            inflict(&copy.join(&relative), fault, &copy.join(&another));
            let ctx = format!("{} / {fault:?}", relative.display());
            let result = common::within(Duration::from_secs(30), &ctx, {
                let copy = copy.clone();
                move || check(&copy)
            });
            if let Err(e) = result {
                failures.push(format!("{ctx}: {e}"));
            }
            let _ = fs::remove_dir_all(&copy);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(cases >= 500, "{cases} cases");
}

/// Gets, repairs, checks: `Err` says what went wrong.
fn check(root: &Path) -> Result<(), String> {
    let store = Store::builder()
        .durability(shardguard::Durability::PageCache)
        .open(root)
        .map_err(|e| format!("open: {e}"))?;
    for (i, (key, len)) in KEYS.iter().enumerate() {
        let got = store
            .get_bytes(key)
            .map_err(|e| format!("get {key} before repair: {e}"))?;
        if got != common::data(i as u64, *len) {
            return Err(format!("get {key}: WRONG BYTES"));
        }
    }
    let repair = ScrubOptions::default().repair(true);
    let report = store
        .scrub(&repair, &|_| {})
        .map_err(|e| format!("scrub --repair: {e}"))?;
    if !matches!(report.verdict(), ScrubVerdict::Repaired | ScrubVerdict::Clean) {
        return Err(format!("scrub --repair: {:?}: {report:?}", report.verdict()));
    }
    let store = Store::builder()
        .durability(shardguard::Durability::PageCache)
        .open(root)
        .map_err(|e| format!("reopen: {e}"))?;
    let report = store
        .scrub(&ScrubOptions::default(), &|_| {})
        .map_err(|e| format!("scrub: {e}"))?;
    if report.verdict() != ScrubVerdict::Clean {
        return Err(format!("scrub after repair: {:?}: {report:?}", report.verdict()));
    }
    for (i, (key, len)) in KEYS.iter().enumerate() {
        let got = store
            .get_bytes(key)
            .map_err(|e| format!("get {key} after repair: {e}"))?;
        if got != common::data(i as u64, *len) {
            return Err(format!("get {key} after repair: WRONG BYTES"));
        }
    }
    Ok(())
}
