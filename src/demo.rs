//! The built-in demonstration: build a store on generated data, damage it the way disks fail,
//! and read everything back verified, reporting what had to be repaired on the way.
//!
//! The library runs the demo and reports [`DemoEvent`]s; the CLI only prints them.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::scrub::{ScrubOptions, ScrubReport};
use crate::store::{ReadStats, Store};

/// How much sample data the demo generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoOptions {
    /// Number of objects. Default 64.
    pub objects: usize,
    /// Approximate total bytes over all objects. Default 320 MiB.
    pub total_bytes: u64,
    /// Seed of the data and of the damage. Default 2026.
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            objects: 64,
            total_bytes: 320 << 20,
            seed: 2026,
        }
    }
}

/// One step of the demo, for the caller to show.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DemoEvent {
    /// The store was created.
    Created {
        /// Its root.
        root: PathBuf,
        /// Data shards.
        k: u8,
        /// Parity shards.
        m: u8,
    },
    /// All objects were stored.
    Stored {
        /// How many.
        objects: usize,
        /// Their total size.
        bytes: u64,
        /// Seconds taken (fsync included).
        secs: f64,
    },
    /// Damage was done to the store's files.
    Damaged {
        /// What was done, to which file.
        what: String,
    },
    /// The store was reopened and a location was found unusable.
    LocationLost {
        /// The location's directory.
        location: PathBuf,
        /// Why it is unusable.
        problem: crate::LocationProblem,
    },
    /// Every object was read back and compared with what was written.
    Verified {
        /// Objects read back byte-exact.
        objects: usize,
        /// Their total size.
        bytes: u64,
        /// Seconds taken.
        secs: f64,
        /// What the reads had to do.
        stats: ReadStats,
    },
    /// Something damaged earlier was put right from outside (a server back).
    Restored {
        /// What.
        what: String,
    },
    /// A scrub finished.
    Scrubbed {
        /// Whether it repaired.
        repair: bool,
        /// Its report.
        report: Box<ScrubReport>,
    },
}

/// Runs the demo in `dir` (created if missing; it must not already hold a store). Returns the
/// report of the final scrub, which must be clean.
///
/// # Errors
/// Any error of the store operations it runs (create, put, read back, scrub), and
/// [`Error::Io`] when damaging its own files fails. The scrubs' verdicts are in the reports.
///
/// # Panics
/// Not for any input: it always stores at least one object, over the default six locations.
pub fn run(dir: &Path, options: &DemoOptions, mut on_event: impl FnMut(DemoEvent)) -> Result<ScrubReport> {
    let store = Store::create(dir)?;
    let (sizes, checksums) = store_samples(&store, dir, options, &mut on_event)?;

    // Damage within tolerance (m = 2): one lost location everywhere, plus one more bad shard in
    // a few objects, each on a different shard than the lost location's.
    let lost_slot = 3;
    let n = store.geometry().shards();
    let pick = |i: usize| {
        let key = object_key(i);
        let shard = (0..n)
            .find(|&s| {
                crate::placement::slot_of_shard(crate::format::ObjectId::of_key(&key), s, n) != lost_slot
            })
            .expect("n > 1");
        (key, shard)
    };
    let biggest = (0..sizes.len()).max_by_key(|&i| sizes[i]).expect("objects > 0");
    let (key, shard) = pick(biggest);
    let path = store.shard_path(&key, shard)?;
    let len = fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
    for offset in [len / 5, len / 2, len - 100] {
        flip_byte(&path, offset)?;
    }
    on_event(DemoEvent::Damaged {
        what: format!("bit rot: flipped 3 bytes in shard {shard} of {key:?}"),
    });
    let (key, shard) = pick((biggest + 1) % sizes.len());
    let path = store.shard_path(&key, shard)?;
    fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    on_event(DemoEvent::Damaged {
        what: format!("deleted shard {shard} of {key:?}"),
    });
    let (key, shard) = pick((biggest + 2) % sizes.len());
    let path = store.shard_path(&key, shard)?;
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    file.set_len(0).map_err(|e| Error::io(&path, e))?;
    on_event(DemoEvent::Damaged {
        what: format!("truncated shard {shard} of {key:?} to 0 bytes"),
    });
    let wiped = store.locations()[lost_slot].clone();
    fs::remove_dir_all(&wiped).map_err(|e| Error::io(&wiped, e))?;
    fs::create_dir(&wiped).map_err(|e| Error::io(&wiped, e))?;
    on_event(DemoEvent::Damaged {
        what: format!("wiped location {} (a replaced, empty disk)", wiped.display()),
    });
    drop(store);

    let store = Store::open(dir)?;
    for (location, problem) in store.locations().into_iter().zip(store.location_problems()) {
        if let Some(problem) = problem {
            on_event(DemoEvent::LocationLost { location, problem });
        }
    }
    verify_samples(&store, &sizes, &checksums, &mut on_event)?;
    // Repair everything, then check that a second, verify-only scrub finds nothing.
    scrub(&store, true, &mut on_event)?;
    scrub(&store, false, &mut on_event)
}

/// The remote demo: six local S3 servers (`s3s-fs` processes, `server` the binary), each a
/// provider with keys of its own, as one 4 + 2 store; objects stored, one server's disk rotted
/// and another's emptied (a provider that lost everything), everything read back verified,
/// repaired by a scrub; then a third server stopped (an endpoint down) and everything read back
/// again, and a final verify-only scrub once it is back. Servers and store live in `dir`.
///
/// # Errors
/// As [`run`], and [`Error::Io`] when a server cannot be started.
#[cfg(feature = "s3")]
pub fn run_remote(
    dir: &Path,
    server: &Path,
    options: &DemoOptions,
    mut on_event: impl FnMut(DemoEvent),
) -> Result<ScrubReport> {
    use crate::s3_server::{LocalS3Server, BUCKET};
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x5353);
    let mut servers = Vec::new();
    let mut builder = Store::builder();
    for i in 0..6 {
        let root = dir.join(format!("server-{i}"));
        let credentials = crate::credentials::Credentials {
            access_key_id: format!("demo-provider-{i}"),
            secret_access_key: format!("{:032x}", rng.random::<u128>()),
            session_token: None,
        };
        let started = LocalS3Server::start_with_keys(
            server,
            root.clone(),
            &credentials.access_key_id,
            &credentials.secret_access_key,
        )
        .map_err(|e| Error::io(&root, e))?;
        builder = builder.location_credentials(started.location(), credentials);
        servers.push(started);
    }
    let root = dir.join("store");
    let store = builder
        .locations(
            servers
                .iter()
                .map(|s| PathBuf::from(s.location()))
                .collect::<Vec<_>>(),
        )
        .create(&root)?;
    let (sizes, checksums) = store_samples(&store, &root, options, &mut on_event)?;
    drop(store);

    // Rot at rest: the biggest object on server 1's disk (s3s-fs keeps each as a file).
    let objects = servers[1].root.join(BUCKET).join("store").join("objects");
    let biggest = files_under(&objects)
        .into_iter()
        .filter_map(|p| Some((fs::metadata(&p).ok()?.len(), p)))
        .max()
        .ok_or_else(|| Error::io(&objects, io::ErrorKind::NotFound.into()))?;
    for offset in [biggest.0 / 3, biggest.0 / 2] {
        flip_byte(&biggest.1, offset)?;
    }
    on_event(DemoEvent::Damaged {
        what: format!("bit rot at rest: flipped 2 bytes of {}", biggest.1.display()),
    });
    servers[5]
        .restart_empty()
        .map_err(|e| Error::io(&servers[5].root, e))?;
    on_event(DemoEvent::Damaged {
        what: format!(
            "server 5 ({}) restarted empty: a provider that lost everything",
            servers[5].location()
        ),
    });

    let store = Store::open(&root)?;
    for (location, problem) in store.locations().into_iter().zip(store.location_problems()) {
        if let Some(problem) = problem {
            on_event(DemoEvent::LocationLost { location, problem });
        }
    }
    verify_samples(&store, &sizes, &checksums, &mut on_event)?;
    scrub(&store, true, &mut on_event)?;
    servers[3].kill();
    on_event(DemoEvent::Damaged {
        what: format!("server 3 ({}) stopped: an endpoint down", servers[3].location()),
    });
    verify_samples(&store, &sizes, &checksums, &mut on_event)?;
    servers[3].restart().map_err(|e| Error::io(&servers[3].root, e))?;
    on_event(DemoEvent::Restored {
        what: format!("server 3 ({}) back", servers[3].location()),
    });
    // A fresh handle: this one's client lets a failed endpoint rest a while before trying it
    // again.
    drop(store);
    scrub(&Store::open(&root)?, false, &mut on_event)
}

/// Announces the store just created at `root`, and stores the sample objects in it; their
/// sizes and CRC32Cs.
fn store_samples(
    store: &Store,
    root: &Path,
    options: &DemoOptions,
    on_event: &mut impl FnMut(DemoEvent),
) -> Result<(Vec<u64>, Vec<u32>)> {
    let geometry = store.geometry();
    on_event(DemoEvent::Created {
        root: root.to_path_buf(),
        k: geometry.k,
        m: geometry.m,
    });
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let sizes = object_sizes(&mut rng, options);
    let started = Instant::now();
    let mut checksums = Vec::with_capacity(sizes.len());
    for (i, &len) in sizes.iter().enumerate() {
        let mut source = SampleData::new(options.seed + i as u64, len);
        store.put(&object_key(i), &mut source)?;
        checksums.push(source.crc);
    }
    on_event(DemoEvent::Stored {
        objects: sizes.len(),
        bytes: sizes.iter().sum(),
        secs: started.elapsed().as_secs_f64(),
    });
    Ok((sizes, checksums))
}

/// Reads every sample object back and compares its CRC32C with what was stored.
fn verify_samples(
    store: &Store,
    sizes: &[u64],
    checksums: &[u32],
    on_event: &mut impl FnMut(DemoEvent),
) -> Result<()> {
    let started = Instant::now();
    let mut stats = ReadStats::default();
    for (i, expected) in checksums.iter().enumerate() {
        let key = object_key(i);
        let mut reader = store.get(&key)?;
        let mut check = Crc(0);
        reader.copy_to(&mut check)?;
        stats.add(&reader.stats());
        if check.0 != *expected {
            return Err(Error::ObjectChecksum {
                key,
                expected: *expected,
                actual: check.0,
            });
        }
    }
    on_event(DemoEvent::Verified {
        objects: sizes.len(),
        bytes: sizes.iter().sum(),
        secs: started.elapsed().as_secs_f64(),
        stats,
    });
    Ok(())
}

/// A scrub of the whole store, reported.
fn scrub(store: &Store, repair: bool, on_event: &mut impl FnMut(DemoEvent)) -> Result<ScrubReport> {
    let report = store.scrub(&ScrubOptions::default().repair(repair), &|_| {})?;
    on_event(DemoEvent::Scrubbed {
        repair,
        report: Box::new(report.clone()),
    });
    Ok(report)
}

/// Every file under `dir`.
#[cfg(feature = "s3")]
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => out.extend(files_under(&path)),
            false => out.push(path),
        }
    }
    out
}

fn object_key(i: usize) -> String {
    format!("samples/object-{i:03}.bin")
}

/// Sizes from a few bytes to many MiB, summing to about `total_bytes`.
fn object_sizes(rng: &mut ChaCha8Rng, options: &DemoOptions) -> Vec<u64> {
    let weights: Vec<f64> = (0..options.objects.max(1))
        .map(|_| rng.random_range(0.0..1.0f64).powi(3))
        .collect();
    let sum: f64 = weights.iter().sum();
    weights
        .iter()
        .map(|w| ((w / sum) * options.total_bytes as f64) as u64 + rng.random_range(1..4096))
        .collect()
}

fn flip_byte(path: &Path, offset: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset)
        .map_err(|e| Error::io(path, e))?;
    file.write_all_at(&[!byte[0]], offset)
        .map_err(|e| Error::io(path, e))
}

/// Generated object contents, checksummed as they stream into the store.
struct SampleData {
    rng: ChaCha8Rng,
    left: u64,
    crc: u32,
}

impl SampleData {
    fn new(seed: u64, len: u64) -> Self {
        SampleData {
            rng: ChaCha8Rng::seed_from_u64(seed),
            left: len,
            crc: 0,
        }
    }
}

impl Read for SampleData {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        self.rng.fill_bytes(&mut buf[..n]);
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Checksums what is read back, holding none of it.
struct Crc(u32);

impl io::Write for Crc {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 = crc32c::crc32c_append(self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
