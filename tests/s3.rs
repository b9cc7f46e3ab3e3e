//! Stores whose locations are buckets on real S3 servers (issue 14): one `s3s-fs` process per
//! location on 127.0.0.1, each its own failure domain, started and stopped by each test.
//!
//! `s3s-fs` is installed by `.ci/run` (`cargo install s3s-fs --version 0.14.1 --features
//! binary`); where it is missing these tests say so and pass, unless SHARDGUARD_REQUIRE_S3 is set
//! (as `.ci/run` sets it), when they fail.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use shardguard::fault::s3::{
    server_binary, FaultyProxy, LocalS3Server as Server, ProxyFaults, BUCKET, SECRET_KEY,
};
use shardguard::{Error, ScrubOptions, ScrubVerdict, Store};

/// The binary, or `None` after saying why the test does not run (a failure where S3 tests are
/// required).
fn servers_available() -> Option<PathBuf> {
    let found = server_binary();
    if found.is_none() {
        assert!(
            std::env::var_os("SHARDGUARD_REQUIRE_S3").is_none(),
            "s3s-fs is not installed: cargo install s3s-fs --version 0.14.1 --features binary --locked"
        );
        eprintln!("SKIPPED: s3s-fs is not installed (cargo install s3s-fs --version 0.14.1 --features binary --locked)");
    }
    // Every store in this process signs with these (the standard variables).
    shardguard::fault::s3::use_server_credentials();
    found
}

/// `n` servers, each in its own directory under `dir`.
fn start_servers(binary: &Path, dir: &Path, n: usize) -> Vec<Server> {
    (0..n)
        .map(|i| Server::start(binary, dir.join(format!("server-{i}"))).expect("start s3s-fs"))
        .collect()
}

/// The servers' location strings, with `through`'s location in place of server `slot`'s.
fn locations_with_proxy(servers: &[Server], slot: usize, through: &FaultyProxy) -> Vec<PathBuf> {
    let mut locations: Vec<PathBuf> = servers.iter().map(|s| PathBuf::from(s.location())).collect();
    locations[slot] = PathBuf::from(through.location());
    locations
}

/// `n` servers and a 4 + 2 store over them, with chunks of `chunk_size`.
fn store_on_servers(binary: &Path, dir: &Path, n: usize, chunk_size: u32) -> (Vec<Server>, Store) {
    let servers = start_servers(binary, dir, n);
    let store = Store::builder()
        .data_shards(4)
        .parity_shards(2)
        .chunk_size(chunk_size)
        .locations(
            servers
                .iter()
                .map(|s| PathBuf::from(s.location()))
                .collect::<Vec<_>>(),
        )
        .create(dir.join("store"))
        .expect("create a store on six S3 servers");
    (servers, store)
}

fn read_all(store: &Store, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    store.get(key).expect("get").read_to_end(&mut out).expect("read");
    out
}

#[test]
fn objects_from_0_bytes_to_100_mib_round_trip_through_six_s3_servers_and_a_reopen() {
    let Some(binary) = servers_available() else { return };
    common::within(Duration::from_secs(600), "round trip over S3", move || {
        let dir = tempfile::tempdir().unwrap();
        // 1 MiB chunks (the default): the largest object spans 25 stripes.
        let (_servers, store) = store_on_servers(&binary, dir.path(), 6, 1 << 20);
        let sizes = [0usize, 1, 4096, (64 << 10) + 3, 3 << 20, 100 << 20];
        for (i, &size) in sizes.iter().enumerate() {
            let bytes = common::data(i as u64, size);
            store.put(&format!("obj/{size}"), &bytes[..]).expect("put");
            assert_eq!(read_all(&store, &format!("obj/{size}")), bytes, "{size} bytes");
        }
        drop(store);
        // The store file names the remote locations: a fresh handle finds them again.
        let store = Store::open(dir.path().join("store")).expect("reopen");
        for (i, &size) in sizes.iter().enumerate() {
            assert_eq!(
                read_all(&store, &format!("obj/{size}")),
                common::data(i as u64, size)
            );
        }
        // A range read reads ahead only as far as the range goes, and returns exactly it.
        let big = common::data(5, 100 << 20);
        let range = (30 << 20) + 7..(33 << 20) + 11;
        let mut slice = Vec::new();
        store
            .get_range("obj/104857600", range.start as u64..range.end as u64)
            .expect("get_range")
            .read_to_end(&mut slice)
            .expect("read the range");
        assert!(slice == big[range], "the range's exact bytes");
        let report = store.scrub(&ScrubOptions::default(), &|_| {}).expect("scrub");
        assert_eq!(report.verdict(), ScrubVerdict::Clean, "{report:#?}");
    });
}

#[test]
fn with_m_servers_down_every_get_is_exact_with_one_down_puts_succeed_and_past_m_errors_are_clear() {
    let Some(binary) = servers_available() else { return };
    common::within(Duration::from_secs(300), "servers down", move || {
        let dir = tempfile::tempdir().unwrap();
        let (mut servers, store) = store_on_servers(&binary, dir.path(), 6, 64 << 10);
        let objects: Vec<(String, Vec<u8>)> = (0..6)
            .map(|i| (format!("k{i}"), common::data(100 + i, 200_000 + i as usize * 7)))
            .collect();
        for (key, bytes) in &objects {
            store.put(key, &bytes[..]).unwrap();
        }
        servers[1].kill();
        let late = common::data(999, 150_000);
        store
            .put("late", &late[..])
            .expect("a put with one server down keeps its quorum");
        servers[4].kill();
        for (key, bytes) in objects.iter().chain([&("late".to_owned(), late)]) {
            assert_eq!(&read_all(&store, key), bytes, "{key} with two servers down");
        }
        // One more than the parity covers: clear errors, never wrong bytes, nothing
        // acknowledged.
        servers[0].kill();
        let mut out = Vec::new();
        let got = store.get("k0").and_then(|mut r| r.copy_to(&mut out).map(drop));
        assert!(got.is_err(), "a get with three of six servers down fails");
        assert!(store.put("too-late", &b"x"[..]).is_err(), "no write quorum");
        assert!(matches!(
            store.stat("too-late"),
            Err(Error::NotFound { .. } | Error::NoQuorum { .. } | Error::TooFewLocations { .. })
        ));
    });
}

#[test]
fn a_server_restarted_empty_is_rebuilt_by_scrub_repair() {
    let Some(binary) = servers_available() else { return };
    common::within(Duration::from_secs(300), "rebuild a server", move || {
        let dir = tempfile::tempdir().unwrap();
        let (mut servers, store) = store_on_servers(&binary, dir.path(), 6, 64 << 10);
        let objects: Vec<(String, Vec<u8>)> = (0..8)
            .map(|i| (format!("k{i}"), common::data(200 + i, 100_000 + i as usize * 13)))
            .collect();
        for (key, bytes) in &objects {
            store.put(key, &bytes[..]).unwrap();
        }
        servers[2].restart_empty().unwrap();
        let repaired = store
            .scrub(&ScrubOptions::default().repair(true), &|_| {})
            .expect("scrub --repair");
        assert_eq!(repaired.verdict(), ScrubVerdict::Repaired, "{repaired:#?}");
        // Two other servers gone: the objects now need the rebuilt one's shards.
        servers[0].kill();
        servers[5].kill();
        for (key, bytes) in &objects {
            assert_eq!(&read_all(&store, key), bytes, "{key} from the rebuilt server");
        }
    });
}

#[test]
fn a_missing_bucket_is_a_clear_error_at_init_and_claims_nothing() {
    let Some(binary) = servers_available() else { return };
    common::within(Duration::from_secs(120), "missing bucket", move || {
        let dir = tempfile::tempdir().unwrap();
        let servers = start_servers(&binary, dir.path(), 3);
        let mut locations: Vec<PathBuf> = servers.iter().map(|s| PathBuf::from(s.location())).collect();
        locations[2] = PathBuf::from(format!(
            "s3:http://127.0.0.1:{}/no-such-bucket/x",
            servers[2].port
        ));
        let err = Store::builder()
            .data_shards(2)
            .parity_shards(1)
            .locations(locations)
            .create(dir.path().join("store"))
            .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
        assert!(message.contains("no-such-bucket"), "{message}");
        assert!(!message.contains(SECRET_KEY), "{message}");
        // Two prefixes of one bucket, one inside the other: refused as nested local
        // directories are (a listing of the outer would wander into the inner).
        let mut nested: Vec<PathBuf> = servers.iter().map(|s| PathBuf::from(s.location())).collect();
        nested[2] = PathBuf::from(format!("{}/inner", servers[0].location()));
        let err = Store::builder()
            .data_shards(2)
            .parity_shards(1)
            .locations(nested)
            .create(dir.path().join("store"))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidConfig {
                    problem: shardguard::ConfigProblem::LocationsNested(..)
                }
            ),
            "{err:?}"
        );
        // Nothing was claimed: the same servers make a store once the bucket is right.
        let good: Vec<PathBuf> = servers.iter().map(|s| PathBuf::from(s.location())).collect();
        Store::builder()
            .data_shards(2)
            .parity_shards(1)
            .locations(good)
            .create(dir.path().join("store2"))
            .expect("create after a refused create");
    });
}

/// A lease object as another machine's process would leave it, expiring `expires_ms` (Unix ms).
fn foreign_lease(expires_ms: u128) -> String {
    format!("shardguard lease\nholder 00000000deadbeef\nhost other-host\npid 4242\nroot /srv/other\nexpires {expires_ms}\n")
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[test]
fn a_second_machine_is_refused_while_the_first_holds_the_lease_and_writes_once_it_is_released() {
    let Some(binary) = servers_available() else { return };
    common::within(Duration::from_secs(120), "two machines", move || {
        let dir = tempfile::tempdir().unwrap();
        let (_servers, first) = store_on_servers(&binary, dir.path(), 6, 64 << 10);
        first.put("from-first", &b"one"[..]).unwrap();
        // The second machine: its own store directory, with the same store file.
        let second_dir = dir.path().join("second");
        std::fs::create_dir_all(&second_dir).unwrap();
        std::fs::copy(
            dir.path().join("store/shardguard.store"),
            second_dir.join("shardguard.store"),
        )
        .unwrap();
        let second = Store::open(&second_dir).expect("opening needs no lease");
        assert_eq!(read_all(&second, "from-first"), b"one", "reads need no lease");
        let err = second.put("from-second", &b"two"[..]).unwrap_err();
        assert!(matches!(err, Error::Leased { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&std::process::id().to_string()),
            "names the holder: {message}"
        );
        assert!(message.contains("store"), "names its directory: {message}");
        assert!(second.delete("from-first").is_err(), "deletes are writes too");
        drop(first);
        second
            .put("from-second", &b"two"[..])
            .expect("the lease was released at close");
        let first = Store::open(dir.path().join("store")).unwrap();
        assert_eq!(read_all(&first, "from-second"), b"two");
        assert!(matches!(first.put("x", &b"x"[..]), Err(Error::Leased { .. })));
    });
}

#[test]
fn another_machines_lease_is_respected_until_it_expires_then_taken_over() {
    let Some(binary) = servers_available() else { return };
    common::within(Duration::from_secs(120), "lease expiry", move || {
        let dir = tempfile::tempdir().unwrap();
        let (servers, store) = store_on_servers(&binary, dir.path(), 6, 64 << 10);
        drop(store);
        // What a machine that died while writing leaves on every server (s3s-fs keeps each
        // object as a file under its bucket's directory).
        let leave = |expires_ms| {
            for server in &servers {
                std::fs::write(
                    server.root.join(BUCKET).join("store/SHARDGUARD-LEASE"),
                    foreign_lease(expires_ms),
                )
                .unwrap();
            }
        };
        leave(now_ms() + 3_600_000);
        let store = Store::open(dir.path().join("store")).unwrap();
        let err = store.put("k", &b"v"[..]).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Leased { .. }), "{err:?}");
        assert!(
            message.contains("4242") && message.contains("other-host"),
            "{message}"
        );
        // Expired an hour ago (far past the margin for clock skew): taken over.
        leave(now_ms() - 3_600_000);
        store.put("k", &b"v"[..]).expect("an expired lease is taken over");
        assert_eq!(read_all(&store, "k"), b"v");
    });
}

/// Hands out `bytes`, and runs `at_half` once half of them have been read.
struct KillingReader<'a, F: FnMut()> {
    bytes: &'a [u8],
    read: usize,
    at_half: Option<F>,
}

impl<F: FnMut()> Read for KillingReader<'_, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read >= self.bytes.len() / 2 {
            if let Some(mut kill) = self.at_half.take() {
                kill();
            }
        }
        let n = buf.len().min(self.bytes.len() - self.read).min(1 << 20);
        buf[..n].copy_from_slice(&self.bytes[self.read..self.read + n]);
        self.read += n;
        Ok(n)
    }
}

#[test]
fn a_server_killed_mid_put_and_another_mid_get_cost_nothing() {
    let Some(binary) = servers_available() else { return };
    common::within(
        Duration::from_secs(300),
        "servers killed mid-operation",
        move || {
            let dir = tempfile::tempdir().unwrap();
            let (mut servers, store) = store_on_servers(&binary, dir.path(), 6, 64 << 10);
            let bytes = common::data(7, 12 << 20);
            let (first, rest) = servers.split_at_mut(1);
            let put = store.put(
                "big",
                KillingReader {
                    bytes: &bytes,
                    read: 0,
                    at_half: Some(|| first[0].kill()),
                },
            );
            put.expect("a put that loses one server half way keeps its write quorum");
            assert_eq!(read_all(&store, "big"), bytes);
            let mut reader = store.get("big").unwrap();
            let mut out = vec![0u8; 3 << 20];
            reader.read_exact(&mut out).unwrap();
            rest[2].kill();
            reader.read_to_end(&mut out).unwrap();
            assert!(
                out == bytes,
                "a get that loses a second server half way returns the exact bytes"
            );
        },
    );
}

#[test]
fn the_cli_makes_a_store_on_s3_servers_and_status_shows_each_endpoint() {
    let Some(binary) = servers_available() else { return };
    common::within(Duration::from_secs(120), "the CLI over S3", move || {
        let dir = tempfile::tempdir().unwrap();
        let servers = start_servers(&binary, dir.path(), 3);
        let store = dir.path().join("store");
        let store = store.to_str().unwrap();
        let mut init = vec!["init", store, "--data", "2", "--parity", "1"];
        let locations: Vec<String> = servers.iter().map(Server::location).collect();
        for location in &locations {
            init.extend(["--location", location.as_str()]);
        }
        let out = common::sg(&init);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let file = dir.path().join("f");
        std::fs::write(&file, common::data(3, 300_000)).unwrap();
        assert!(common::sg(&["put", store, "k", file.to_str().unwrap()])
            .status
            .success());
        let got = common::sg(&["get", store, "k"]);
        assert!(
            got.stdout == common::data(3, 300_000),
            "get returns the exact bytes"
        );
        let status = common::sg(&["status", store]);
        let text = String::from_utf8_lossy(&status.stdout);
        assert_eq!(text.matches("endpoint reachable").count(), 3, "{text}");
        assert!(!text.contains(SECRET_KEY), "{text}");
        // A URL that is not an S3 location: one line, exit 2, nothing created.
        let bad = common::sg(&["init", &format!("{store}-2"), "--location", "https://host/bucket"]);
        assert_eq!(bad.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("looks like a URL"), "{stderr}");
        assert!(
            !Path::new(&format!("{store}-2")).exists(),
            "a refused init creates nothing"
        );
    });
}

#[test]
fn a_server_handing_out_rotten_bytes_is_read_around_and_rot_at_rest_is_repaired_by_scrub() {
    let Some(binary) = servers_available() else { return };
    common::within(Duration::from_secs(300), "rotten bytes", move || {
        let dir = tempfile::tempdir().unwrap();
        let servers = start_servers(&binary, dir.path(), 6);
        let faults = ProxyFaults::default();
        faults.corrupt.store(true, Ordering::Relaxed);
        let proxy = FaultyProxy::start(servers[3].port, faults).unwrap();
        let locations = locations_with_proxy(&servers, 3, &proxy);
        let store = Store::builder()
            .chunk_size(64 << 10)
            .locations(locations)
            .create(dir.path().join("store"))
            .unwrap();
        let objects: Vec<(String, Vec<u8>)> = (0..6)
            .map(|i| (format!("k{i}"), common::data(300 + i, 150_000 + i as usize * 11)))
            .collect();
        for (key, bytes) in &objects {
            store.put(key, &bytes[..]).unwrap();
        }
        // In flight: every chunk that location serves fails its CRC, and is rebuilt.
        for (key, bytes) in &objects {
            assert_eq!(
                &read_all(&store, key),
                bytes,
                "{key} read around the rotten location"
            );
        }
        let found = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
        assert_eq!(found.verdict(), ScrubVerdict::NeedsRepair, "{found:#?}");
        // The report names the location, and what the scrub asked of each endpoint.
        for summary in &found.locations {
            let network = summary.network.expect("a remote location's requests");
            assert!(network.requests > 0 && network.failed == 0, "{summary:?}");
            assert_eq!(summary.damaged_chunks > 0, summary.slot == 3, "{summary:?}");
        }
        proxy.faults.corrupt.store(false, Ordering::Relaxed);
        let clean = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
        assert_eq!(
            clean.verdict(),
            ScrubVerdict::Clean,
            "the stored bytes were fine: {clean:#?}"
        );
        // At rest: rot a shard file on a server's disk (s3s-fs keeps each object as a file; a
        // put's committed shard is its pending object with a commit marker beside it).
        let rotten = walk_files(&servers[1].root.join(BUCKET).join("store/objects"))
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "pending"))
            .expect("a shard file on server 1");
        let mut bytes = std::fs::read(&rotten).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&rotten, &bytes).unwrap();
        let repaired = store
            .scrub(&ScrubOptions::default().repair(true), &|_| {})
            .unwrap();
        assert_eq!(repaired.verdict(), ScrubVerdict::Repaired, "{repaired:#?}");
        let after = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
        assert_eq!(after.verdict(), ScrubVerdict::Clean, "{after:#?}");
        for (key, bytes) in &objects {
            assert_eq!(&read_all(&store, key), bytes);
        }
    });
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn a_slow_server_is_hedged_around_and_every_get_is_exact() {
    let Some(binary) = servers_available() else { return };
    common::within(Duration::from_secs(300), "slow server", move || {
        let dir = tempfile::tempdir().unwrap();
        let servers = start_servers(&binary, dir.path(), 6);
        let proxy = FaultyProxy::start(servers[2].port, ProxyFaults::default()).unwrap();
        let locations = locations_with_proxy(&servers, 2, &proxy);
        let store = Store::builder()
            .chunk_size(256 << 10)
            .locations(locations)
            .create(dir.path().join("store"))
            .unwrap();
        let objects: Vec<(String, Vec<u8>)> = (0..6)
            .map(|i| {
                (
                    format!("k{i}"),
                    common::data(400 + i, (1 << 20) + i as usize * 17),
                )
            })
            .collect();
        for (key, bytes) in &objects {
            store.put(key, &bytes[..]).unwrap();
        }
        // Far slower than the first threshold (500 ms while no latency is known, then three
        // times the healthy reads'): every read of it is hedged, whatever the machine's load.
        proxy.faults.delay_ms.store(1_500, Ordering::Relaxed);
        let mut read_around = 0;
        for (key, bytes) in &objects {
            let mut reader = store.get(key).unwrap();
            let mut out = Vec::new();
            reader.read_to_end(&mut out).unwrap();
            assert!(&out == bytes, "{key}: exact bytes");
            // Around the slow location: at open (its shards left out, parity read instead) or
            // in the stripe reads (spares read past the threshold).
            let stats = reader.stats();
            read_around += stats.hedged_reads + stats.stripes_reconstructed;
        }
        // The slow location holds a data shard of most objects (of six shards, four are data).
        assert!(
            read_around >= 3,
            "{read_around} objects read around the slow location of 6"
        );
    });
}

/// The part files of multipart uploads still open on the servers under `dir` (`s3s-fs` keeps
/// them at the top of its root as `.upload_id-<id>.part-<n>`).
fn open_upload_parts(dir: &Path) -> Vec<PathBuf> {
    walk_files(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".upload_id-"))
        })
        .collect()
}

#[test]
fn a_put_killed_mid_upload_leaves_uploads_that_scrub_repair_aborts() {
    let Some(binary) = servers_available() else { return };
    common::within(
        Duration::from_secs(300),
        "uploads left by a killed put",
        move || {
            use std::io::Write;
            let dir = tempfile::tempdir().unwrap();
            let (servers, store) = store_on_servers(&binary, dir.path(), 6, 1 << 20);
            // Long enough shards (32 MiB each) to be uploaded in parts, and a put that completes.
            let whole = common::data(11, 128 << 20);
            store.put("done", &whole[..]).unwrap();
            drop(store);
            assert!(
                open_upload_parts(dir.path()).is_empty(),
                "a finished put leaves no upload open"
            );

            let root = dir.path().join("store");
            let mut put = std::process::Command::new(env!("CARGO_BIN_EXE_shardguard"))
                .args(["put", root.to_str().unwrap(), "killed", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn shardguard put");
            let mut input = put.stdin.take().unwrap();
            // 96 MiB in: 24 MiB per shard, parts beyond the first two on their way.
            input.write_all(&whole[..96 << 20]).unwrap();
            let mut waited = 0;
            while open_upload_parts(dir.path()).is_empty() {
                assert!(waited < 600, "no part upload seen within a minute");
                std::thread::sleep(Duration::from_millis(100));
                waited += 1;
            }
            put.kill().unwrap();
            put.wait().unwrap();
            drop(input);
            assert!(!open_upload_parts(dir.path()).is_empty());

            let store = Store::open(&root).unwrap();
            let report = store
                .scrub(&ScrubOptions::default().repair(true), &|_| {})
                .unwrap();
            assert!(report.counts.leftover_files >= 1, "{report:?}");
            assert_eq!(report.counts.leftover_files, report.counts.leftover_files_removed);
            assert!(
                open_upload_parts(dir.path()).is_empty(),
                "scrub --repair aborted every upload the killed put left: {:?}",
                open_upload_parts(dir.path())
            );
            assert!(matches!(store.get("killed"), Err(Error::NotFound { .. })));
            assert_eq!(read_all(&store, "done"), whole);
            drop(servers);
        },
    );
}

#[test]
fn locations_on_providers_with_their_own_keys_sign_with_the_owner_only_credentials_file() {
    let Some(binary) = servers_available() else { return };
    common::within(Duration::from_secs(120), "credentials per location", move || {
        let dir = tempfile::tempdir().unwrap();
        // Three providers, none of which accepts the environment's keys.
        let servers: Vec<Server> = (0..3)
            .map(|i| {
                let (key, secret) = (format!("provider-{i}"), format!("provider-{i}-secret"));
                Server::start_with_keys(&binary, dir.path().join(format!("server-{i}")), &key, &secret)
                    .unwrap()
            })
            .collect();
        let root = dir.path().join("store");
        let store = root.to_str().unwrap();
        let locations: Vec<String> = servers.iter().map(Server::location).collect();
        let mut init = vec!["init", store, "--data", "2", "--parity", "1"];
        for location in &locations {
            init.extend(["--location", location.as_str()]);
        }
        // Without its own keys, a provider refuses the bucket listing: init says so, exit 2.
        let refused = common::sg(&init);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
        for (i, location) in locations.iter().enumerate() {
            let set = std::process::Command::new(env!("CARGO_BIN_EXE_shardguard"))
                .args(["credentials", store, location])
                .env("AWS_ACCESS_KEY_ID", format!("provider-{i}"))
                .env("AWS_SECRET_ACCESS_KEY", format!("provider-{i}-secret"))
                .output()
                .unwrap();
            assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
            assert!(!String::from_utf8_lossy(&set.stdout).contains("secret"));
        }
        let file = root.join("credentials");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let out = common::sg(&init);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let input = dir.path().join("f");
        std::fs::write(&input, common::data(5, 200_000)).unwrap();
        assert!(common::sg(&["put", store, "k", input.to_str().unwrap()])
            .status
            .success());
        assert!(common::sg(&["get", store, "k"]).stdout == common::data(5, 200_000));
        // No secret anywhere but the credentials file: not in the store file, its copies on
        // the servers, or what status prints.
        let status = common::sg(&["status", store]);
        assert!(status.status.success());
        for path in walk_files(dir.path()).iter().filter(|p| **p != file) {
            let bytes = std::fs::read(path).unwrap();
            assert!(
                !bytes.windows(15).any(|w| w.ends_with(b"-secret")),
                "a secret in {}",
                path.display()
            );
        }
        assert!(!String::from_utf8_lossy(&status.stdout).contains("-secret"));
        // A credentials file others may read is refused, with one line, before anything is sent.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let exposed = common::sg(&["get", store, "k"]);
        assert_eq!(exposed.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&exposed.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("chmod 600") && !stderr.contains("-secret"),
            "{stderr}"
        );
    });
}

#[test]
fn the_remote_demo_runs_on_local_servers_and_says_how_to_install_them_when_missing() {
    let Some(binary) = servers_available() else { return };
    common::within(Duration::from_secs(300), "the remote demo", move || {
        let dir = tempfile::tempdir().unwrap();
        let demo = std::process::Command::new(env!("CARGO_BIN_EXE_shardguard"))
            .args(["demo", "--remote", dir.path().join("demo").to_str().unwrap()])
            .env("SHARDGUARD_S3S_FS", &binary)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&demo.stdout);
        assert!(
            demo.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&demo.stderr)
        );
        assert!(
            stdout.contains("restarted empty") && stdout.contains("stopped: an endpoint down"),
            "{stdout}"
        );
        assert!(
            stdout.trim_end().ends_with("every object reads back byte-exact"),
            "{stdout}"
        );
        // Without the server: one line saying how to install it, exit 2, nothing created.
        let missing = std::process::Command::new(env!("CARGO_BIN_EXE_shardguard"))
            .args(["demo", "--remote", dir.path().join("none").to_str().unwrap()])
            .env_remove("SHARDGUARD_S3S_FS")
            .env("PATH", "")
            .env("CARGO_HOME", dir.path().join("no-cargo"))
            .env("HOME", dir.path().join("no-home"))
            .output()
            .unwrap();
        assert_eq!(missing.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&missing.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("cargo install s3s-fs"), "{stderr}");
        assert!(!dir.path().join("none").exists());
    });
}

#[test]
fn a_lost_store_file_is_found_again_in_a_remote_location_named_as_a_hint() {
    let Some(binary) = servers_available() else { return };
    common::within(
        Duration::from_secs(120),
        "store file from remote copies",
        move || {
            let dir = tempfile::tempdir().unwrap();
            let (servers, store) = store_on_servers(&binary, dir.path(), 6, 64 << 10);
            let bytes = common::data(21, 500_000);
            store.put("k", &bytes[..]).unwrap();
            drop(store);
            let root = dir.path().join("store");
            std::fs::remove_file(root.join("shardguard.store")).unwrap();
            assert!(matches!(Store::open(&root), Err(Error::NotAStore { .. })));
            // One remote location named leads to the copies in all of them.
            let store = Store::builder()
                .location_hint(servers[2].location())
                .open(&root)
                .expect("opened from the copies in the remote locations");
            assert_eq!(read_all(&store, "k"), bytes);
            let repaired = store
                .scrub(&ScrubOptions::default().repair(true), &|_| {})
                .unwrap();
            assert!(!repaired.own_files.is_empty(), "{repaired:#?}");
            drop(store);
            assert_eq!(
                read_all(&Store::open(&root).unwrap(), "k"),
                bytes,
                "the store file is back"
            );
        },
    );
}

#[test]
fn a_store_mixing_local_directories_and_s3_servers_survives_losing_one_of_each() {
    let Some(binary) = servers_available() else { return };
    common::within(Duration::from_secs(180), "a mixed store", move || {
        let dir = tempfile::tempdir().unwrap();
        let mut servers = start_servers(&binary, dir.path(), 3);
        let mut locations: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("disk-{i}"))).collect();
        locations.extend(servers.iter().map(|s| PathBuf::from(s.location())));
        let root = dir.path().join("store");
        let store = Store::builder()
            .chunk_size(64 << 10)
            .locations(locations.clone())
            .create(&root)
            .unwrap();
        let objects: Vec<(String, Vec<u8>)> = (0..8)
            .map(|i| (format!("m{i}"), common::data(40 + i, 1000 + i as usize * 77_777)))
            .collect();
        for (key, bytes) in &objects {
            store.put(key, &bytes[..]).unwrap();
        }
        drop(store);
        // A local disk replaced empty, and a server that lost everything.
        std::fs::remove_dir_all(&locations[1]).unwrap();
        std::fs::create_dir(&locations[1]).unwrap();
        servers[2].restart_empty().unwrap();
        let store = Store::open(&root).unwrap();
        for (key, bytes) in &objects {
            assert_eq!(
                &read_all(&store, key),
                bytes,
                "{key} with a disk and a server lost"
            );
        }
        let repaired = store
            .scrub(&ScrubOptions::default().repair(true), &|_| {})
            .unwrap();
        assert_eq!(repaired.verdict(), ScrubVerdict::Repaired, "{repaired:#?}");
        let clean = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
        assert_eq!(clean.verdict(), ScrubVerdict::Clean, "{clean:#?}");
        assert!(clean.locations[..3].iter().all(|l| l.network.is_none()));
        assert!(clean.locations[3..].iter().all(|l| l.network.is_some()));
    });
}

#[test]
fn a_server_killed_during_a_multipart_upload_costs_the_put_nothing_and_its_leftovers_are_repaired() {
    let Some(binary) = servers_available() else { return };
    common::within(
        Duration::from_secs(300),
        "a server killed mid-upload",
        move || {
            let dir = tempfile::tempdir().unwrap();
            let (mut servers, store) = store_on_servers(&binary, dir.path(), 6, 1 << 20);
            // 48 MiB shards, six parts each; the server is killed half way, once a part of its
            // upload landed (parts are sent on threads of their own: waited for, at most 60 s).
            let bytes = common::data(8, 192 << 20);
            let root0 = servers[0].root.clone();
            let (first, _) = servers.split_at_mut(1);
            let kill = || {
                let started = std::time::Instant::now();
                while open_upload_parts(&root0).is_empty() {
                    assert!(started.elapsed() < Duration::from_secs(60), "no part landed");
                    std::thread::sleep(Duration::from_millis(10));
                }
                first[0].kill();
            };
            store
                .put(
                    "big",
                    KillingReader {
                        bytes: &bytes,
                        read: 0,
                        at_half: Some(kill),
                    },
                )
                .expect("a put that loses one server mid-upload keeps its write quorum");
            assert_eq!(read_all(&store, "big"), bytes);
            // Back with an upload the put could not abort (its parts, its marker) and no shard.
            servers[0].restart().unwrap();
            assert!(
                !open_upload_parts(&servers[0].root).is_empty(),
                "the killed server holds parts of an upload"
            );
            drop(store);
            let store = Store::open(dir.path().join("store")).unwrap();
            let repaired = store
                .scrub(&ScrubOptions::default().repair(true), &|_| {})
                .unwrap();
            assert_eq!(repaired.verdict(), ScrubVerdict::Repaired, "{repaired:#?}");
            assert!(repaired.counts.rebuilt_shards >= 1, "{repaired:#?}");
            assert!(
                open_upload_parts(dir.path()).is_empty(),
                "the dead upload was aborted: {:?}",
                open_upload_parts(dir.path())
            );
            let clean = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
            assert_eq!(clean.verdict(), ScrubVerdict::Clean, "{clean:#?}");
            servers[1].kill();
            servers[2].kill();
            assert_eq!(read_all(&store, "big"), bytes, "the rebuilt shard serves");
        },
    );
}
