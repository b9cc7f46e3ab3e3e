//! Eight writer threads putting small objects with fsync durability (issue 13): single `put`s
//! into a default store (packs through group commit and the small-write log, folds included)
//! against the same objects written by eight threads as plain files, each written, fsynced, and
//! its directory fsynced. Same run, which goes first alternating from run to run, medians.
//!
//! `cargo bench --bench writers` (env: SHARDGUARD_BENCH_OBJECTS, default 100000;
//! SHARDGUARD_BENCH_RUNS, default 3; SHARDGUARD_BENCH_DIR, default "."). The store's time
//! includes closing it (the last fold of its log), so every object ends in a pack file.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use shardguard::Store;

const SIZE: usize = 4096;
const WRITERS: usize = 8;
/// Plain files per directory, as a mail store or source tree spreads them.
const PER_DIRECTORY: usize = 100;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn object(i: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; SIZE];
    for (j, b) in bytes.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) ^ j.wrapping_mul(40_503)) as u8;
    }
    bytes
}

fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// Runs `write(i)` for every object index, spread over the writer threads.
fn eight_writers(objects: usize, write: impl Fn(usize) + Sync) {
    let write = &write;
    std::thread::scope(|s| {
        for writer in 0..WRITERS {
            s.spawn(move || (writer..objects).step_by(WRITERS).for_each(write));
        }
    });
}

fn plain_file(root: &Path, i: usize, bytes: &[u8]) {
    let dir = root.join(format!("{:04}", i / PER_DIRECTORY));
    let path = dir.join(format!("{i:06}.eml"));
    let mut file = File::create(&path).expect("create");
    file.write_all(bytes).expect("write");
    file.sync_all().expect("fsync");
    File::open(&dir).and_then(|d| d.sync_all()).expect("dir fsync");
}

fn main() {
    // `cargo bench` passes harness flags; this bench takes none.
    let objects = env("SHARDGUARD_BENCH_OBJECTS", 100_000);
    let runs = env("SHARDGUARD_BENCH_RUNS", 3);
    let base = std::env::var("SHARDGUARD_BENCH_DIR").unwrap_or_else(|_| ".".into());
    let data: Vec<Vec<u8>> = (0..objects).map(object).collect();
    let (mut plain, mut store) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let dir = tempfile::tempdir_in(&base).expect("bench directory");
        // The plain files' directories exist beforehand, as the store's do after `init`.
        let plain_root = dir.path().join("plain");
        for d in 0..objects.div_ceil(PER_DIRECTORY) {
            fs::create_dir_all(plain_root.join(format!("{d:04}"))).expect("mkdir");
        }
        let plain_rate = || {
            let started = Instant::now();
            eight_writers(objects, |i| plain_file(&plain_root, i, &data[i]));
            objects as f64 / started.elapsed().as_secs_f64()
        };
        let store_rate = || {
            let sg = Store::create(dir.path().join("store")).expect("create store");
            let started = Instant::now();
            eight_writers(objects, |i| {
                let key = format!("mail/{:04}/{i:06}.eml", i / PER_DIRECTORY);
                sg.put(&key, &data[i][..]).expect("put");
            });
            drop(sg);
            objects as f64 / started.elapsed().as_secs_f64()
        };
        // Alternate which goes first: the filesystem remembers the last run's deletions.
        let (plain_rate, store_rate) = match run % 2 {
            0 => (plain_rate(), store_rate()),
            _ => {
                let store_rate = store_rate();
                (plain_rate(), store_rate)
            }
        };
        println!(
            "run {run}: plain {plain_rate:.0} obj/s, store {store_rate:.0} obj/s, {:.2}x",
            store_rate / plain_rate
        );
        plain.push(plain_rate);
        store.push(store_rate);
    }
    let (plain, store) = (median(plain), median(store));
    println!("{objects} objects of {SIZE} bytes, {WRITERS} writers, fsync durability, medians of {runs}");
    println!("  plain files (write + fsync + dir fsync)  {plain:>9.0} obj/s  1.00x");
    println!(
        "  store, put (default store)              {store:>9.0} obj/s  {:.2}x",
        store / plain
    );
}
