//! Whole-store throughput against plain-file baselines measured in the same run:
//!
//! - `put`: a 1 GiB object against writing the same bytes plus the parity's share to `k + m`
//!   plain files, each fsynced, like the store's shard files; and the put without fsyncs
//!   (page-cache durability), where the codec's share shows;
//! - `get`: reading it back verified, from the page cache, against plainly reading its `k` data
//!   shard files; and again with one location lost (every stripe rebuilt from parity).
//!
//! Throughput counts object bytes. `SHARDGUARD_BENCH_MIB` sets the object size (default 1024),
//! `SHARDGUARD_BENCH_CHUNK_KIB` the chunk size (default: the store's default).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{RngCore, SeedableRng};
use shardguard::fault::{Fault, FaultPlan, Rule};
use shardguard::location::ObjectId;
use shardguard::{placement, Store};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `len` bytes cycled from one seeded 16 MiB block, so the source costs no I/O and little memory.
struct Source<'a> {
    block: &'a [u8],
    left: u64,
    pos: usize,
}

impl Read for Source<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.left as usize).min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos = (self.pos + n) % self.block.len();
        self.left -= n as u64;
        Ok(n)
    }
}

/// The same bytes as a put writes, as `files` plain files, each fsynced, then the directory.
/// With `early_writeback`, writeback of every 8 MiB written is started at once
/// (`sync_file_range`), as the store does: the baseline a careful hand-written writer sets.
fn plain_write(
    dir: &Path,
    files: usize,
    per_file: u64,
    chunk: usize,
    block: &[u8],
    early_writeback: bool,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    for i in 0..files {
        let mut f = File::create(dir.join(format!("plain-{i}")))?;
        let (mut left, mut pos, mut written, mut started) = (per_file, 0, 0u64, 0u64);
        while left > 0 {
            let n = chunk.min(left as usize).min(block.len() - pos);
            f.write_all(&block[pos..pos + n])?;
            pos = (pos + n) % block.len();
            left -= n as u64;
            written += n as u64;
            if early_writeback && written - started >= 8 << 20 {
                // SAFETY: `f` is open for the whole call, which touches no memory of ours.
                unsafe {
                    libc::sync_file_range(
                        f.as_raw_fd(),
                        started as i64,
                        (written - started) as i64,
                        libc::SYNC_FILE_RANGE_WRITE,
                    )
                };
                started = written;
            }
        }
        f.sync_all()?;
    }
    File::open(dir)?.sync_all()
}

fn plain_read(paths: &[std::path::PathBuf], buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0;
    for p in paths {
        let f = File::open(p)?;
        let len = f.metadata()?.len();
        let mut offset = 0;
        while offset < len {
            let n = buf.len().min((len - offset) as usize);
            f.read_exact_at(&mut buf[..n], offset)?;
            offset += n as u64;
        }
        total += len;
    }
    Ok(total)
}

struct Sink;
impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        std::hint::black_box(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn store_benches(c: &mut Criterion) {
    let len = env_u64("SHARDGUARD_BENCH_MIB", 1024) << 20;
    let chunk_size = env_u64("SHARDGUARD_BENCH_CHUNK_KIB", 1024) as u32 * 1024;
    let dir = tempfile::tempdir_in(std::env::var("SHARDGUARD_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .expect("bench directory");
    let mut block = vec![0u8; 16 << 20];
    rand_chacha::ChaCha8Rng::seed_from_u64(7).fill_bytes(&mut block);
    let source = || Source {
        block: &block,
        left: len,
        pos: 0,
    };
    let store = Store::builder()
        .chunk_size(chunk_size)
        .create(dir.path().join("store"))
        .unwrap();
    let geometry = store.geometry();
    let (k, n) = (usize::from(geometry.k), geometry.shards());
    let plain_dir = dir.path().join("plain");
    fs::create_dir(&plain_dir).unwrap();

    let mut group = c.benchmark_group(format!("put_{}MiB_chunk_{}KiB", len >> 20, chunk_size >> 10));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Bytes(len));
    let per_file = len.div_ceil(k as u64);
    group.bench_function("baseline_plain_files_fsync", |b| {
        b.iter(|| plain_write(&plain_dir, n, per_file, chunk_size as usize, &block, false).unwrap())
    });
    group.bench_function("baseline_plain_files_fsync_early_writeback", |b| {
        b.iter(|| plain_write(&plain_dir, n, per_file, chunk_size as usize, &block, true).unwrap())
    });
    group.bench_function("store_put_fsync", |b| {
        b.iter(|| store.put("bench", source()).unwrap())
    });
    // Without fsyncs the put's own work shows: reading, coding, checksumming, writing.
    let page_cache = Store::builder()
        .chunk_size(chunk_size)
        .durability(shardguard::Durability::PageCache)
        .create(dir.path().join("store-page-cache"))
        .unwrap();
    group.bench_function("store_put_page_cache", |b| {
        b.iter(|| page_cache.put("bench", source()).unwrap())
    });
    drop(page_cache);
    fs::remove_dir_all(dir.path().join("store-page-cache")).unwrap();
    group.finish();
    fs::remove_dir_all(&plain_dir).unwrap();

    // The object the reads time (the put group may have been filtered out).
    store.put("bench", source()).unwrap();
    let object = ObjectId::of_key("bench");
    let data_paths: Vec<_> = (0..k).map(|s| store.shard_path("bench", s).unwrap()).collect();
    let mut buf = vec![0u8; chunk_size as usize];
    let plan = FaultPlan::new(1);
    plan.inject(Rule::at(placement::slot_of_shard(object, 0, n), Fault::Hide));
    let degraded = Store::builder()
        .location_wrapper(plan.wrapper())
        .open(dir.path().join("store"))
        .unwrap();
    // Warm the page cache with every shard file before timing reads.
    degraded.get("bench").unwrap().copy_to(&mut Sink).unwrap();
    store.get("bench").unwrap().copy_to(&mut Sink).unwrap();

    let mut group = c.benchmark_group(format!("get_{}MiB_chunk_{}KiB", len >> 20, chunk_size >> 10));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(len));
    group.bench_function("baseline_plain_read_k_files", |b| {
        b.iter(|| plain_read(&data_paths, &mut buf).unwrap())
    });
    group.bench_function("store_get", |b| {
        b.iter(|| store.get("bench").unwrap().copy_to(&mut Sink).unwrap())
    });
    group.bench_function("store_get_one_location_lost", |b| {
        b.iter(|| degraded.get("bench").unwrap().copy_to(&mut Sink).unwrap())
    });
    group.finish();
}

criterion_group!(benches, store_benches);
criterion_main!(benches);
