//! Verify-only scrub of a store in the page cache against a plain pass that reads the same shard
//! files and computes CRC32C over them, both on one thread and on all cores; the 1-job against
//! the all-jobs scrub gives the parallel speed-up. Two stores: 64 large objects, and 2,000
//! objects whose ids all share one bucket (the case per-bucket locks serialized).
//!
//! A third group prices repair: scrubbing with `--repair` a store with one damaged chunk per
//! object, against a verify-only scrub of the same damage.
//!
//! Throughput counts shard-file bytes. `SHARDGUARD_BENCH_MIB` sets the large objects' data
//! (default 2048, in 64 objects), `SHARDGUARD_BENCH_ONE_BUCKET_KIB` the size of each of the
//! 2,000 (default 1024); `SHARDGUARD_BENCH_DIR` where the stores live (default: here).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{RngCore, SeedableRng};
use rayon::prelude::*;
use shardguard::{Durability, ScrubOptions, Store};

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "shard") {
            out.push(path);
        }
    }
}

/// Reads a file in 1 MiB pieces and returns its CRC32C.
fn crc_file(path: &Path, buf: &mut [u8]) -> u32 {
    let mut f = File::open(path).unwrap();
    let mut crc = 0;
    loop {
        let n = f.read(buf).unwrap();
        if n == 0 {
            return crc;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
}

fn bench_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(std::env::var("SHARDGUARD_BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap()
}

/// A store of `keys`, each `per_object` bytes (seeded, each object different).
fn filled_store(dir: &Path, keys: &[String], per_object: usize) -> Store {
    let store = Store::builder()
        .durability(Durability::PageCache)
        .create(dir)
        .unwrap();
    let mut block = vec![0u8; per_object];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for key in keys {
        rng.fill_bytes(&mut block[..4096.min(per_object)]);
        store.put(key, &block[..]).unwrap();
    }
    store
}

fn scrub_benches(c: &mut Criterion) {
    let mib: u64 = std::env::var("SHARDGUARD_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let dir = bench_dir();
    let keys: Vec<String> = (0..64).map(|i| format!("bench/{i}")).collect();
    let store = filled_store(dir.path(), &keys, ((mib << 20) / 64) as usize);
    compare(c, &format!("scrub_{mib}MiB"), &store);
    drop(store);
    drop(dir);

    // 2,000 objects whose ids all start with the byte 0.
    let kib = std::env::var("SHARDGUARD_BENCH_ONE_BUCKET_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = bench_dir();
    let keys: Vec<String> = (0u64..)
        .map(|i| format!("one-bucket/{i}"))
        .filter(|k| shardguard::location::ObjectId::of_key(k).0[0] == 0)
        .take(2000)
        .collect();
    let store = filled_store(dir.path(), &keys, kib << 10);
    compare(c, &format!("scrub_one_bucket_2000x{kib}KiB"), &store);
    drop(store);
    drop(dir);
    repair_cost(c);
}

/// What repair costs over verification: 256 objects of 1 MiB, one chunk of each damaged before
/// every iteration (the same bytes written each time, outside the timing), scrubbed with
/// `--repair` against a verify-only scrub of the same damaged store.
fn repair_cost(c: &mut Criterion) {
    use std::os::unix::fs::FileExt;
    let dir = bench_dir();
    let keys: Vec<String> = (0..256).map(|i| format!("repair/{i}")).collect();
    let store = filled_store(dir.path(), &keys, 1 << 20);
    // Chunk 0 of shard 1 of every object, 100 bytes in: past the 86 + key-length header.
    let targets: Vec<PathBuf> = keys.iter().map(|k| store.shard_path(k, 1).unwrap()).collect();
    let damage = || {
        for path in &targets {
            let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            file.write_all_at(&[0xa5; 8], 200).unwrap();
        }
    };
    let mut group = c.benchmark_group("repair_one_damaged_chunk_per_object_256x1MiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    for repair in [false, true] {
        let options = ScrubOptions::default().repair(repair).jobs(2);
        let name = if repair {
            "scrub_repair"
        } else {
            "baseline_scrub_verify_only"
        };
        group.bench_function(name, |b| {
            b.iter_batched(
                damage,
                |()| {
                    let report = store.scrub(&options, &|_| {}).unwrap();
                    assert_eq!(report.counts.damaged_chunks, 256);
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// Times verify-only scrubs of `store` with 1 and 2 jobs beside plain read + CRC32C passes over
/// its shard files on 1 thread and on all cores.
fn compare(c: &mut Criterion, name: &str, store: &Store) {
    let mut files = Vec::new();
    for location in store.locations() {
        files_under(&location, &mut files);
    }
    let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    let objects = store.list().unwrap().len() as u64;

    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("baseline_read_crc_1_thread", |b| {
        let mut buf = vec![0u8; 1 << 20];
        b.iter(|| files.iter().map(|f| crc_file(f, &mut buf)).fold(0, |a, c| a ^ c))
    });
    group.bench_function("baseline_read_crc_all_cores", |b| {
        b.iter(|| {
            files
                .par_iter()
                .map_init(|| vec![0u8; 1 << 20], |buf, f| crc_file(f, buf))
                .reduce(|| 0, |a, c| a ^ c)
        })
    });
    for jobs in [1, 2] {
        let options = ScrubOptions::default().jobs(jobs);
        group.bench_function(format!("scrub_verify_{jobs}_jobs"), |b| {
            b.iter(|| {
                let report = store.scrub(&options, &|_| {}).unwrap();
                assert_eq!(report.verdict(), shardguard::ScrubVerdict::Clean);
                assert_eq!(report.objects, objects);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, scrub_benches);
criterion_main!(benches);
