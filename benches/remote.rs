//! A store on six local S3 servers (`s3s-fs`, one process per location, 4 + 2, 1 MiB chunks)
//! against the same bytes moved with `object_store` directly (issue 14), same run, medians:
//!
//! - put of one object: against uploading its `k + m` shard files' bytes, six PUTs side by side
//!   (each shard whole from memory), and six multipart uploads in 8 MiB parts side by side (as the
//!   store uploads a shard longer than two parts);
//! - get of it: against downloading the `k` data shards' bytes, four GETs side by side;
//! - scrub of the store: against reading every shard's bytes with 1 MiB ranged GETs, a stream
//!   per location;
//! - 4 MiB gets, 100 of them: p50 and p99 latency with every endpoint healthy, and with one
//!   endpoint's chunk reads delayed 200 ms (a proxy in front of it).
//!
//! `cargo bench --features fault-injection --bench remote` (env: SHARDGUARD_BENCH_MIB, default
//! 1024; SHARDGUARD_BENCH_RUNS, default 3; SHARDGUARD_BENCH_DIR, default "."). Needs `s3s-fs`
//! (`cargo install s3s-fs --version 0.14.1 --features binary --locked`).

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, WriteMultipart};
use shardguard::fault::s3::{
    server_binary, use_server_credentials, FaultyProxy, LocalS3Server, ProxyFaults, ACCESS_KEY, BUCKET,
    SECRET_KEY,
};
use shardguard::{ScrubOptions, Store};

mod common;
use common::{env, median};

const LOCATIONS: usize = 6;
const GETS: usize = 100;
/// The part size of the store's multipart uploads, for the baseline's.
const PART_LEN: usize = 8 << 20;

fn client(port: u16) -> Arc<dyn ObjectStore> {
    let store = AmazonS3Builder::new()
        .with_client_options(ClientOptions::new().with_allow_http(true))
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .build()
        .expect("object_store client");
    Arc::new(store)
}

/// Runs `work(i)` for each location on a thread of its own; returns the seconds taken.
fn side_by_side(n: usize, work: impl Fn(usize) + Sync) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for i in 0..n {
            let work = &work;
            s.spawn(move || work(i));
        }
    });
    started.elapsed().as_secs_f64()
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn main() {
    let mib = env("SHARDGUARD_BENCH_MIB", 1024);
    let runs = env("SHARDGUARD_BENCH_RUNS", 3);
    let base = std::env::var("SHARDGUARD_BENCH_DIR").unwrap_or_else(|_| ".".into());
    let Some(binary) = server_binary() else {
        eprintln!(
            "s3s-fs is not installed: cargo install s3s-fs --version 0.14.1 --features binary --locked"
        );
        std::process::exit(2);
    };
    use_server_credentials();
    let dir = tempfile::tempdir_in(&base).expect("bench directory");
    let servers: Vec<LocalS3Server> = (0..LOCATIONS)
        .map(|i| LocalS3Server::start(&binary, dir.path().join(format!("server-{i}"))).expect("start s3s-fs"))
        .collect();
    // The last location goes through a proxy, delayed for the hedging figures only.
    let proxy = FaultyProxy::start(servers[LOCATIONS - 1].port, ProxyFaults::default()).expect("proxy");
    let mut locations: Vec<PathBuf> = servers.iter().map(|s| PathBuf::from(s.location())).collect();
    locations[LOCATIONS - 1] = PathBuf::from(proxy.location());
    let store = Store::builder()
        .locations(locations)
        .create(dir.path().join("store"))
        .expect("store");
    let clients: Vec<Arc<dyn ObjectStore>> = servers.iter().map(|s| client(s.port)).collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let size = mib << 20;
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) as u8)
        .collect();
    let shard_len = size / 4;
    let shard = vec![7u8; shard_len];
    let (mut put, mut put_base, mut put_parts_base) = (vec![], vec![], vec![]);
    let (mut get, mut get_base, mut scrub, mut scrub_base) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let key = format!("big-{run}");
        let started = Instant::now();
        store.put(&key, &data[..]).expect("put");
        put.push(started.elapsed().as_secs_f64());
        put_base.push(side_by_side(LOCATIONS, |i| {
            let path = object_store::path::Path::from(format!("direct/{run}/{i}"));
            runtime
                .block_on(clients[i].put(&path, shard.clone().into()))
                .expect("direct put");
        }));
        put_parts_base.push(side_by_side(LOCATIONS, |i| {
            let path = object_store::path::Path::from(format!("direct-parts/{run}/{i}"));
            runtime
                .block_on(async {
                    let mut upload =
                        WriteMultipart::new_with_chunk_size(clients[i].put_multipart(&path).await?, PART_LEN);
                    upload.write(&shard);
                    upload.finish().await
                })
                .expect("direct multipart upload");
        }));
        let started = Instant::now();
        let mut out = Vec::with_capacity(size);
        store.get(&key).expect("get").read_to_end(&mut out).expect("read");
        get.push(started.elapsed().as_secs_f64());
        assert!(out == data, "exact bytes");
        get_base.push(side_by_side(4, |i| {
            let path = object_store::path::Path::from(format!("direct/{run}/{i}"));
            runtime
                .block_on(async { clients[i].get(&path).await?.bytes().await })
                .expect("direct get");
        }));
        let started = Instant::now();
        store.scrub(&ScrubOptions::default(), &|_| {}).expect("scrub");
        scrub.push(started.elapsed().as_secs_f64());
        // Every shard byte the scrub read (the object's, and those of the earlier runs'),
        // in 1 MiB ranged GETs, a stream per location.
        scrub_base.push(side_by_side(LOCATIONS, |i| {
            for earlier in 0..=run {
                let path = object_store::path::Path::from(format!("direct/{earlier}/{i}"));
                for at in (0..shard_len as u64).step_by(1 << 20) {
                    let options = GetOptions {
                        range: Some(GetRange::Bounded(at..(at + (1 << 20)).min(shard_len as u64))),
                        ..GetOptions::default()
                    };
                    runtime
                        .block_on(async { clients[i].get_opts(&path, options).await?.bytes().await })
                        .expect("ranged get");
                }
            }
        }));
        println!(
            "run {run}: put {:.2} s (direct {:.2}, in parts {:.2}), get {:.2} s (direct {:.2}), scrub {:.2} s (ranged reads {:.2})",
            put[run], put_base[run], put_parts_base[run], get[run], get_base[run], scrub[run], scrub_base[run]
        );
    }

    // 4 MiB gets: healthy, then with the proxied endpoint 200 ms late on every chunk read.
    let small = &data[..4 << 20];
    for i in 0..10 {
        store.put(&format!("four/{i}"), small).expect("put");
    }
    // Each get's whole latency, and how much of it was the open (finding the object's files).
    let latencies = |delay_ms: u64| -> (Vec<Duration>, Vec<Duration>) {
        proxy.faults.delay_ms.store(delay_ms, Ordering::Relaxed);
        (0..GETS)
            .map(|g| {
                let started = Instant::now();
                let mut out = Vec::new();
                let mut reader = store.get(&format!("four/{}", g % 10)).expect("get");
                let opened = started.elapsed();
                reader.read_to_end(&mut out).expect("read");
                assert!(out == small, "exact bytes");
                (started.elapsed(), opened)
            })
            .unzip()
    };
    let (healthy, healthy_open) = latencies(0);
    let (delayed, delayed_open) = latencies(200);
    let p = |v: &Vec<Duration>, q| percentile(v.clone(), q).as_secs_f64() * 1e3;

    println!("\n{mib} MiB object, 4 + 2 over {LOCATIONS} s3s-fs servers, medians of {runs}");
    let (put, put_base, put_parts_base) = (median(put), median(put_base), median(put_parts_base));
    let (get, get_base) = (median(get), median(get_base));
    let (scrub, scrub_base) = (median(scrub), median(scrub_base));
    let mbs = |bytes: usize, s: f64| bytes as f64 / s / 1e6;
    println!(
        "  put    {:>8.1} MB/s  direct upload of the k + m shard bytes {:>8.1} MB/s: {:.2}x",
        mbs(size, put),
        mbs(size, put_base),
        put_base / put
    );
    println!(
        "           multipart uploads of the same bytes (8 MiB parts)    {:>8.1} MB/s: {:.2}x",
        mbs(size, put_parts_base),
        put_parts_base / put
    );
    println!(
        "  get    {:>8.1} MB/s  direct download of the k data shards   {:>8.1} MB/s: {:.2}x",
        mbs(size, get),
        mbs(size, get_base),
        get_base / get
    );
    println!(
        "  scrub  {:>8.1} s     1 MiB ranged reads of the same bytes   {:>8.1} s:    {:.2}x",
        scrub,
        scrub_base,
        scrub_base / scrub
    );
    println!(
        "  4 MiB gets ({GETS}): healthy p50 {:.1} ms p99 {:.1} ms; one endpoint 200 ms late: p50 {:.1} ms p99 {:.1} ms ({:.2}x the healthy p99)",
        p(&healthy, 0.5),
        p(&healthy, 0.99),
        p(&delayed, 0.5),
        p(&delayed, 0.99),
        p(&delayed, 0.99) / p(&healthy, 0.99)
    );
    println!(
        "    of which the open: healthy p50 {:.1} ms p99 {:.1} ms; one endpoint late: p50 {:.1} ms p99 {:.1} ms",
        p(&healthy_open, 0.5),
        p(&healthy_open, 0.99),
        p(&delayed_open, 0.5),
        p(&delayed_open, 0.99)
    );
}
