//! Eight writer threads putting small objects with fsync durability (issue 13): single `put`s
//! into a default store (packs through group commit and the small-write log, folds included)
//! against the same objects written by eight threads as plain files, each written, fsynced, and
//! its directory fsynced: 100 files to a directory (a mail store, a source tree), and all in
//! one directory. Same run, each going first in turn, medians.
//!
//! `cargo bench --bench writers` (env: SHARDGUARD_BENCH_OBJECTS, default 100000;
//! SHARDGUARD_BENCH_RUNS, default 3; SHARDGUARD_BENCH_DIR, default "."). The store's time
//! includes closing it (the last fold of its log), so every object ends in a pack file.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use shardguard::Store;

mod common;
use common::{env, median, object, SIZE};

const WRITERS: usize = 8;
/// Plain files per directory, as a mail store or source tree spreads them.
const PER_DIRECTORY: usize = 100;

/// Runs `write(i)` for every object index, spread over the writer threads.
fn eight_writers(objects: usize, write: impl Fn(usize) + Sync) {
    let write = &write;
    std::thread::scope(|s| {
        for writer in 0..WRITERS {
            s.spawn(move || (writer..objects).step_by(WRITERS).for_each(write));
        }
    });
}

/// Writes object `i` as a plain file under `root`, `per_directory` files to a directory.
fn plain_file(root: &Path, per_directory: usize, i: usize, bytes: &[u8]) {
    let dir = root.join(format!("{:04}", i / per_directory));
    let path = dir.join(format!("{i:06}.eml"));
    let mut file = File::create(&path).expect("create");
    file.write_all(bytes).expect("write");
    file.sync_all().expect("fsync");
    File::open(&dir).and_then(|d| d.sync_all()).expect("dir fsync");
}

/// What is measured, in the order of a run's first turn.
const CONTENDERS: [&str; 3] = ["store", "plain, 100 a directory", "plain, one directory"];

fn main() {
    // `cargo bench` passes harness flags; this bench takes none.
    let objects = env("SHARDGUARD_BENCH_OBJECTS", 100_000);
    let runs = env("SHARDGUARD_BENCH_RUNS", 3);
    let base = std::env::var("SHARDGUARD_BENCH_DIR").unwrap_or_else(|_| ".".into());
    let data: Vec<Vec<u8>> = (0..objects).map(object).collect();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); CONTENDERS.len()];
    // Every run's files stay until the end: ext4 without a journal skips inodes freed in the
    // last minutes when it allocates, so deleting one contender's 100,000 files would slow
    // whichever contender comes next (the baselines swung 4,100-11,100 obj/s that way).
    let mut kept = Vec::new();
    for run in 0..runs {
        let dir = tempfile::tempdir_in(&base).expect("bench directory");
        // Each goes first in turn: the filesystem remembers the last one's files.
        for turn in 0..CONTENDERS.len() {
            let which = (run + turn) % CONTENDERS.len();
            let root = dir.path().join(format!("{which}"));
            let started;
            match which {
                0 => {
                    let store = Store::create(&root).expect("create store");
                    started = Instant::now();
                    eight_writers(objects, |i| {
                        let key = format!("mail/{:04}/{i:06}.eml", i / PER_DIRECTORY);
                        store.put(&key, &data[i][..]).expect("put");
                    });
                    // Closing folds the last of the log: every object in a pack file.
                    drop(store);
                }
                _ => {
                    let per_directory = if which == 1 { PER_DIRECTORY } else { objects };
                    // The directories exist beforehand, as the store's do after `init`.
                    for d in 0..objects.div_ceil(per_directory) {
                        fs::create_dir_all(root.join(format!("{d:04}"))).expect("mkdir");
                    }
                    started = Instant::now();
                    eight_writers(objects, |i| plain_file(&root, per_directory, i, &data[i]));
                }
            }
            rates[which].push(objects as f64 / started.elapsed().as_secs_f64());
        }
        kept.push(dir);
        let last: Vec<String> = rates.iter().map(|r| format!("{:.0}", r[run])).collect();
        println!("run {run}: {} obj/s ({})", last.join(", "), CONTENDERS.join(", "));
    }
    let medians: Vec<f64> = rates.into_iter().map(median).collect();
    println!("{objects} objects of {SIZE} bytes, {WRITERS} writers, fsync durability, medians of {runs}");
    for (name, rate) in CONTENDERS.iter().zip(&medians).skip(1) {
        println!(
            "  {name:<24} {rate:>7.0} obj/s;  store {:>7.0} obj/s: {:.2}x",
            medians[0],
            medians[0] / rate
        );
    }
}
