//! Helpers shared by the integration tests: seeded data, stores in temporary directories, and
//! direct damage to shard files (the way real faults hit a disk).
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shardguard::{Durability, Store};

/// Seeded pseudo-random bytes, so a failure replays.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

/// A store in a fresh temporary directory; page-cache durability keeps the tests fast (fsync
/// paths are covered by the crash tests and the CLI tests).
pub fn store(k: u8, m: u8, chunk_size: u32) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::builder()
        .durability(Durability::PageCache)
        .data_shards(k)
        .parity_shards(m)
        .chunk_size(chunk_size)
        .create(dir.path())
        .expect("create");
    (dir, store)
}

pub fn reopen(dir: &Path) -> Store {
    Store::builder()
        .durability(Durability::PageCache)
        .open(dir)
        .expect("open")
}

/// Overwrites `len` bytes at `offset` of the file with their complement (bit rot).
pub fn rot(path: &Path, offset: u64, len: usize) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open shard");
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).expect("read");
    for b in &mut buf {
        *b = !*b;
    }
    f.write_all_at(&buf, offset).expect("write");
}

/// Byte offset of stripe `stripe`'s chunk in a shard file of `key`.
pub fn chunk_offset(key: &str, chunk_size: u32, stripe: u64) -> u64 {
    (86 + key.len()) as u64 + stripe * (u64::from(chunk_size) + 4)
}

/// Every shard file path of `key`, by shard index.
pub fn shard_paths(store: &Store, key: &str) -> Vec<PathBuf> {
    let n = store.geometry().shards();
    (0..n)
        .map(|s| store.shard_path(key, s).expect("shard path"))
        .collect()
}

/// Runs the `shardguard` binary to completion.
pub fn sg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardguard"))
        .args(args)
        .output()
        .expect("run shardguard")
}

/// Starts the `shardguard` binary with its output piped.
pub fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_shardguard"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shardguard")
}

/// Keys whose object ids all start with the byte `bucket`: they share one bucket (and, before
/// per-object locks, one lock file).
pub fn keys_in_bucket(bucket: u8, count: usize) -> Vec<String> {
    (0u64..)
        .map(|i| format!("same-bucket/{i}"))
        .filter(|k| shardguard::location::ObjectId::of_key(k).0[0] == bucket)
        .take(count)
        .collect()
}

/// Runs `work` on its own thread and fails the test if it has not finished within `limit`: a
/// hang fails by timeout instead of hanging CI (the stuck thread is abandoned).
pub fn within<T: Send + 'static>(
    limit: std::time::Duration,
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked (above)"),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: not finished within {limit:?} (deadlock or hang)")
        }
    }
}

/// Copies the tree under `from` to `to` (a snapshot of a store, as a power cut would find it).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Whether a small-write log segment's bytes end with the index that keeps it (FORMAT.md,
/// "Kept segments"): its last 8 bytes give the length of a record before them, which starts
/// with the index's magic.
pub fn kept_segment(segment: &[u8]) -> bool {
    let Some(at) = segment.len().checked_sub(8) else {
        return false;
    };
    let len = u64::from_le_bytes(segment[at..].try_into().unwrap()) as usize;
    at.checked_sub(len)
        .is_some_and(|start| segment[start..].starts_with(b"SGLOGKPT"))
}
