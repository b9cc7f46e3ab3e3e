//! The store's own files get the suspicion data gets: a FIFO, a link to `/dev/zero`, a link to a
//! shard, or a directory in place of the store file, an identity, a shard file, the scrub
//! checkpoint or a history file never hangs the store, never exhausts its memory, and is never
//! written through.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{data, within};
use shardguard::{ScrubOptions, Store};

/// What to put in place of a file.
#[derive(Debug, Clone, Copy)]
enum Hostile {
    Fifo,
    LinkToDevZero,
    LinkToShard,
    Directory,
    /// A sparse regular file of 16 GiB: only a bounded read survives it.
    Huge,
}

fn replace(path: &Path, with: Hostile, shard: &Path) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_dir_all(path);
    match with {
        Hostile::Fifo => assert!(std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap()
            .success()),
        Hostile::LinkToDevZero => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        Hostile::LinkToShard => std::os::unix::fs::symlink(shard, path).unwrap(),
        Hostile::Directory => fs::create_dir(path).unwrap(),
        Hostile::Huge => fs::File::create(path).unwrap().set_len(16 << 30).unwrap(),
    }
}

/// A store whose scrub state exists: one object, one finished scrub, a checkpoint left by an
/// interrupted one.
fn sample() -> (tempfile::TempDir, Vec<u8>, PathBuf) {
    let (dir, store) = common::store(4, 2, 1024);
    let bytes = data(1, 9000);
    store.put("k", &bytes[..]).unwrap();
    store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    let shard = store.shard_path("k", 1).unwrap();
    (dir, bytes, shard)
}

#[test]
fn hostile_files_in_place_of_the_stores_own_neither_hang_nor_get_written_through() {
    let targets: [fn(&Path, &Path) -> PathBuf; 4] = [
        |root, _| root.join("shardguard.store"),
        |root, _| root.join("loc-03").join("SHARDGUARD-LOCATION"),
        |_, shard| shard.to_path_buf(),
        |root, _| root.join("scrub.checkpoint"),
    ];
    let mut cases = 0;
    for (t, target) in targets.iter().enumerate() {
        for with in [
            Hostile::Fifo,
            Hostile::LinkToDevZero,
            Hostile::LinkToShard,
            Hostile::Directory,
        ] {
            let (dir, bytes, shard) = sample();
            let root = dir.path().to_path_buf();
            // A link to a shard is tested with a shard other than the one replaced.
            let other_shard = Store::open(&root).unwrap().shard_path("k", 2).unwrap();
            let original = fs::read(&other_shard).unwrap();
            replace(&target(&root, &shard), with, &other_shard);
            let ctx = format!("target {t}, {with:?}");
            let outcome = within(Duration::from_secs(20), &ctx, move || {
                let store = match Store::builder()
                    .durability(shardguard::Durability::PageCache)
                    .open(&root)
                {
                    Ok(store) => store,
                    // A store file that is not one: a clear error (rebuilding it from the
                    // locations is the open part of issue 10).
                    Err(e) => return Err(e.to_string()),
                };
                let got = store.get_bytes("k").map_err(|e| e.to_string());
                let options = ScrubOptions::default().repair(true).resume(true);
                let _ = store.scrub(&options, &|_| {});
                Ok(got)
            });
            match outcome {
                Ok(Ok(got)) => assert!(got == bytes, "{ctx}: wrong bytes"),
                Ok(Err(e)) => panic!("{ctx}: the object is readable, yet {e}"),
                Err(e) => assert!(t == 0, "{ctx}: only the store file may stop the store: {e}"),
            }
            assert_eq!(
                fs::read(&other_shard).unwrap(),
                original,
                "{ctx}: a shard was written through a link"
            );
            cases += 1;
        }
    }
    assert_eq!(cases, 16);
}

/// A directory in place of a shard file is an erasure at once (not retried as if it were a
/// transient fault), and a repair moves it aside and rebuilds the shard.
#[test]
fn a_directory_in_place_of_a_shard_is_read_around_then_moved_aside_and_rebuilt() {
    let (dir, bytes, shard) = sample();
    replace(&shard, Hostile::Directory, &shard);
    fs::write(shard.join("inside"), b"someone's file").unwrap();
    let store = common::reopen(dir.path());
    let mut reader = store.get("k").unwrap();
    let mut got = Vec::new();
    reader.copy_to(&mut got).unwrap();
    assert!(got == bytes);
    assert_eq!(reader.stats().retransmissions, 0, "{:?}", reader.stats());
    let options = ScrubOptions::default().repair(true);
    let report = store.scrub(&options, &|_| {}).unwrap();
    assert_eq!(
        report.verdict(),
        shardguard::ScrubVerdict::Repaired,
        "{report:#?}"
    );
    assert!(fs::symlink_metadata(&shard).unwrap().is_file(), "not rebuilt");
    let report = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert_eq!(report.verdict(), shardguard::ScrubVerdict::Clean, "{report:#?}");
    assert_eq!(store.get_bytes("k").unwrap(), bytes);
}

/// Advisory files are advisory: hostile ones in place of the lock file, the checkpoint, the
/// last report or a history file never stop a scrub; it reports them, a repairing scrub moves
/// them aside, and writers and the next scrub work again.
#[test]
fn hostile_advisory_files_are_reported_then_moved_aside_by_repair() {
    let (dir, bytes, _shard) = sample();
    let root = dir.path();
    let history = fs::read_dir(root.join("scrub-history"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let lock = root.join("locks").join("objects.lock");
    replace(&lock, Hostile::Directory, &lock);
    replace(&root.join("scrub.checkpoint"), Hostile::Fifo, &lock);
    replace(&root.join("scrub.last.json"), Hostile::Directory, &lock);
    replace(&history, Hostile::LinkToDevZero, &lock);
    let store = common::reopen(root);
    let err = store.put("k", &b"new"[..]).unwrap_err();
    assert!(
        err.to_string().contains("remove it"),
        "a clear, specific error: {err}"
    );
    let report = within(Duration::from_secs(20), "scrub", {
        let root = root.to_path_buf();
        move || {
            common::reopen(&root)
                .scrub(&ScrubOptions::default(), &|_| {})
                .unwrap()
        }
    });
    assert_eq!(report.own_files.len(), 4, "{report:#?}");
    assert_eq!(report.verdict(), shardguard::ScrubVerdict::NeedsRepair);
    let repair = ScrubOptions::default().repair(true);
    let report = store.scrub(&repair, &|_| {}).unwrap();
    assert_eq!(
        report.verdict(),
        shardguard::ScrubVerdict::Repaired,
        "{report:#?}"
    );
    let store = common::reopen(root);
    store.put("k2", &b"new"[..]).unwrap();
    assert_eq!(store.get_bytes("k").unwrap(), bytes);
    let report = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert_eq!(report.verdict(), shardguard::ScrubVerdict::Clean, "{report:#?}");
}

/// Runs the CLI to its end within `limit` and returns its exit code and peak resident memory
/// in bytes (from `wait4`'s resource usage); killed, and the test failed, past the limit.
// Reaped by wait4, which also gives the child's resource usage (std's wait does not).
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str], limit: Duration, ctx: &str) -> (Option<i32>, u64) {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_shardguard"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let started = std::time::Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `usage` is a plain C struct that wait4 fills in; zeroed is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our own child, not yet reaped; the pointers are to live locals.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            return (code, usage.ru_maxrss as u64 * 1024);
        }
        if started.elapsed() > limit {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{ctx}: not finished within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn no_get_scrub_or_status_exceeds_64_mib_or_hangs_whatever_the_stores_own_files_hold() {
    type Target = (&'static str, fn(&Path) -> PathBuf);
    let targets: [Target; 6] = [
        ("store file", |root| root.join("shardguard.store")),
        ("identity", |root| root.join("loc-03").join("SHARDGUARD-LOCATION")),
        ("checkpoint", |root| root.join("scrub.checkpoint")),
        ("last report", |root| root.join("scrub.last.json")),
        ("lock file", |root| root.join("locks").join("objects.lock")),
        ("history file", |root| {
            let dir = root.join("scrub-history");
            fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path()
        }),
    ];
    let mut cases = 0;
    for (what, target) in targets {
        for with in [Hostile::LinkToDevZero, Hostile::Fifo, Hostile::Huge] {
            let (dir, _, shard) = sample();
            let root = dir.path();
            replace(&target(root), with, &shard);
            let root_s = root.to_str().unwrap();
            for args in [
                vec!["get", root_s, "k"],
                vec!["status", root_s],
                vec!["scrub", root_s, "--resume"],
                vec!["scrub", root_s, "--repair"],
            ] {
                let ctx = format!("{what} as {with:?}, {args:?}");
                let (code, peak) = run_measured(&args, Duration::from_secs(30), &ctx);
                assert!(code.is_some(), "{ctx}: killed by a signal");
                assert!(peak < 64 << 20, "{ctx}: peak memory {} MiB", peak >> 20);
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 72);
}

/// The small-object lock files are advisory too: with a FIFO in place of the small-write log's
/// lock file, small puts go on (committed without the log) and nothing hangs; with a directory
/// in place of the packs' change mark, a small put fails with a clear error (other handles
/// could not learn of its pack) and loses nothing; a repairing scrub moves both aside, and
/// small puts are logged again.
#[test]
fn hostile_small_object_lock_files_are_moved_aside_by_repair_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::builder()
        .data_shards(4)
        .parity_shards(2)
        .chunk_size(16384)
        .pack_threshold(8192)
        .durability(shardguard::Durability::Fsync)
        .create(root)
        .unwrap();
    for i in 0..3 {
        store.put(&format!("k{i}"), &data(i, 3000)[..]).unwrap();
    }
    drop(store);
    let log_lock = root.join("locks").join("small-log");
    let mark = root.join("locks").join("packs.changes");
    replace(&log_lock, Hostile::Fifo, &log_lock);
    let store = within(Duration::from_secs(20), "open and put", {
        let root = root.to_path_buf();
        move || {
            let store = Store::open(&root).unwrap();
            for i in 3..6 {
                store.put(&format!("k{i}"), &data(i, 3000)[..]).unwrap();
            }
            store
        }
    });
    replace(&mark, Hostile::Directory, &mark);
    let store = {
        drop(store);
        Store::open(root).unwrap()
    };
    let err = store.put("k9", &data(9, 3000)[..]).unwrap_err();
    assert!(
        err.to_string().contains("remove it"),
        "a clear, specific error: {err}"
    );
    let report = store
        .scrub(&ScrubOptions::default().repair(true), &|_| {})
        .unwrap();
    assert_eq!(report.own_files.len(), 2, "{report:#?}");
    drop(store);
    let store = Store::open(root).unwrap();
    for i in 6..9 {
        store.put(&format!("k{i}"), &data(i, 3000)[..]).unwrap();
    }
    assert!(
        fs::read_dir(store.locations()[0].join("log"))
            .unwrap()
            .next()
            .is_some(),
        "small puts are logged again"
    );
    for i in 0..9 {
        assert_eq!(store.get_bytes(&format!("k{i}")).unwrap(), data(i, 3000), "k{i}");
    }
    assert!(store.get_bytes("k9").is_err(), "the failed put left nothing");
}
