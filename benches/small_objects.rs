//! Small objects (issue 13): put throughput with fsync durability and disk space, for 4 KiB
//! objects (4 + 2, default 1 MiB chunks), each figure beside its baseline in the same run.
//!
//! Baseline: the same objects as plain files in one directory, each written, fsynced, and the
//! directory fsynced (what a careful program does for a durable small file). Measured: one
//! `put` per object into a store without packs and into a default store (packs, through the
//! small-write log), and `put_many` batches into a store with a 64 KiB pack threshold. Disk
//! space is the blocks allocated (`st_blocks`) under each tree, per object, with the files per
//! object ("single" with its log still open); "compacted" is that store after a repairing
//! scrub compacted its small packs. Eight writers: `benches/writers.rs`.
//!
//! Reads: each object read back (page cache warm), from its plain file and from the packing
//! store.
//!
//! `cargo bench --bench small_objects` (env: SHARDGUARD_BENCH_OBJECTS, default 5000;
//! SHARDGUARD_BENCH_BATCH, default 1000; SHARDGUARD_BENCH_DIR, default "."; 3 runs, medians).

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use shardguard::Store;

mod common;
use common::{env, median, object, SIZE};

/// Allocated bytes and regular files under `dir`.
fn usage(dir: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    for entry in fs::read_dir(dir).expect("read dir").flatten() {
        let meta = entry.metadata().expect("metadata");
        total.0 += meta.blocks() * 512;
        if meta.is_dir() {
            let (bytes, files) = usage(&entry.path());
            total = (total.0 + bytes, total.1 + files);
        } else {
            total.1 += 1;
        }
    }
    total
}

fn main() {
    // `cargo bench` passes harness flags; this bench takes none.
    let objects = env("SHARDGUARD_BENCH_OBJECTS", 5000);
    let batch = env("SHARDGUARD_BENCH_BATCH", 1000);
    let base = std::env::var("SHARDGUARD_BENCH_DIR").unwrap_or_else(|_| ".".into());
    let data: Vec<Vec<u8>> = (0..objects).map(object).collect();
    let keys: Vec<String> = (0..objects).map(|i| format!("mail/{:06}", i)).collect();
    let (mut plain, mut own, mut packed) = (Vec::new(), Vec::new(), Vec::new());
    let mut single = Vec::new();
    let (mut plain_get, mut packed_get) = (Vec::new(), Vec::new());
    let mut space = Vec::new();
    for run in 0..3 {
        let dir = tempfile::tempdir_in(&base).expect("bench directory");
        let plain_dir = dir.path().join("plain");
        fs::create_dir(&plain_dir).expect("mkdir");
        let started = Instant::now();
        for (key, bytes) in keys.iter().zip(&data) {
            let path = plain_dir.join(key.replace('/', "_"));
            let mut file = File::create(&path).expect("create");
            file.write_all(bytes).expect("write");
            file.sync_all().expect("fsync");
            File::open(&plain_dir)
                .and_then(|d| d.sync_all())
                .expect("dir fsync");
        }
        plain.push(objects as f64 / started.elapsed().as_secs_f64());

        let own_store = Store::builder()
            .pack_threshold(0)
            .create(dir.path().join("own"))
            .expect("create store");
        let started = Instant::now();
        for (key, bytes) in keys.iter().zip(&data) {
            own_store.put(key, &bytes[..]).expect("put");
        }
        own.push(objects as f64 / started.elapsed().as_secs_f64());

        // The default store: single puts of small objects go to packs, through the log.
        let single_store = Store::create(dir.path().join("single")).expect("create store");
        let started = Instant::now();
        for (key, bytes) in keys.iter().zip(&data) {
            single_store.put(key, &bytes[..]).expect("put");
        }
        single.push(objects as f64 / started.elapsed().as_secs_f64());

        let packed_store = Store::builder()
            .pack_threshold(64 << 10)
            .create(dir.path().join("packed"))
            .expect("create packing store");
        let started = Instant::now();
        for (keys, data) in keys.chunks(batch).zip(data.chunks(batch)) {
            packed_store
                .put_many(keys.iter().map(String::as_str).zip(data.iter().map(|b| &b[..])))
                .expect("put_many");
        }
        packed.push(objects as f64 / started.elapsed().as_secs_f64());

        // Reads, page cache warm: each packed object against its plain file.
        let started = Instant::now();
        for key in &keys {
            let bytes = fs::read(plain_dir.join(key.replace('/', "_"))).expect("read");
            assert_eq!(bytes.len(), SIZE);
        }
        plain_get.push(objects as f64 / started.elapsed().as_secs_f64());
        let started = Instant::now();
        for key in &keys {
            let bytes = packed_store.get_bytes(key).expect("get");
            assert_eq!(bytes.len(), SIZE);
        }
        packed_get.push(objects as f64 / started.elapsed().as_secs_f64());

        if run == 0 {
            // The same number of 1-byte objects, batched into packs: the per-object cost.
            let tiny = Store::builder()
                .pack_threshold(64 << 10)
                .create(dir.path().join("tiny"))
                .expect("create packing store");
            for keys in keys.chunks(batch) {
                tiny.put_many(keys.iter().map(|k| (k.as_str(), &b"x"[..])))
                    .expect("put_many");
            }
            space = ["plain", "own", "packed", "single", "tiny"]
                .iter()
                .map(|name| (*name, usage(&dir.path().join(name))))
                .collect();
            // The small packs of single puts, compacted by a repairing scrub.
            let repair = shardguard::ScrubOptions::default().repair(true);
            single_store.scrub(&repair, &|_| {}).expect("scrub --repair");
            space.push(("compacted", usage(&dir.path().join("single"))));
        }
    }
    let (plain, own, packed, single) = (median(plain), median(own), median(packed), median(single));
    println!("{objects} objects of {SIZE} bytes, fsync durability, 3 runs, medians");
    println!("put, one writer:");
    println!("  plain files (write + fsync + dir fsync)  {plain:>9.0} obj/s  1.00x");
    println!(
        "  store, put, own shard files             {own:>9.0} obj/s  {:.2}x",
        own / plain
    );
    println!(
        "  store, put, packs (default store)       {single:>9.0} obj/s  {:.2}x",
        single / plain
    );
    println!(
        "  store, put_many of {batch}, packs        {packed:>9.0} obj/s  {:.2}x",
        packed / plain
    );
    let (plain_get, packed_get) = (median(plain_get), median(packed_get));
    println!("get, one reader, page cache warm:");
    println!("  plain files (read)                      {plain_get:>9.0} obj/s  1.00x");
    println!(
        "  store, get_bytes, packs                 {packed_get:>9.0} obj/s  {:.2}x",
        packed_get / plain_get
    );
    println!(
        "disk space per object (allocated blocks; raw {SIZE} bytes, ideal for 4 + 2: {}):",
        SIZE * 3 / 2
    );
    for (name, (bytes, files)) in space {
        let per = bytes as f64 / objects as f64;
        if name == "tiny" {
            println!(
                "  1-byte objects, packed: {per:.0} B each, {:.3} files/object",
                files as f64 / objects as f64
            );
            continue;
        }
        println!(
            "  {name:<7} {per:>9.0} B  {:>5.2}x raw  {:>6.3} files/object",
            per / SIZE as f64,
            files as f64 / objects as f64
        );
    }
}
