//! shardguard: objects stored as Reed-Solomon-coded, CRC32C-checked shards over several
//! locations, so that bit rot, lost files and lost disks cost nothing but a rebuild.
//!
//! ```
//! use shardguard::Store;
//!
//! # fn main() -> Result<(), shardguard::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! // 4 data + 2 parity shards, one per location (subdirectories of the root by default).
//! let store = Store::create(dir.path())?;
//! store.put("photos/2026/cat.jpg", &b"meow"[..])?;
//!
//! // Lose a whole location: every object is still read back exactly.
//! std::fs::remove_dir_all(&store.locations()[0]).unwrap();
//! let store = Store::open(dir.path())?;
//! assert_eq!(store.get_bytes("photos/2026/cat.jpg")?, b"meow");
//! # Ok(())
//! # }
//! ```
//!
//! # The model
//!
//! A [`Store`] is a directory holding the store file and `k + m` *locations* (directories,
//! ideally one per disk). An object (any bytes under a UTF-8 key) is cut into stripes of `k`
//! chunks; `m` parity chunks are computed per stripe, and each of the `k + m` chunks goes to
//! its own location, with a CRC32C bound to the chunk's identity. Any `k` verified chunks of a
//! stripe give it back. A put is acknowledged once a write quorum of shard files is durable
//! (fsynced, by default); an overwrite makes a new version, and readers take the newest version
//! a quorum holds. Every read verifies every chunk: a chunk that fails is read again
//! (retransmission, [`RetryPolicy`]), then rebuilt from parity. A read never returns bytes that
//! differ from what was written: when it cannot give them back it fails.
//!
//! [`Store::scrub`] reads everything and, with [`ScrubOptions::repair`], rewrites what is
//! damaged: rotten chunks, lost shard files, wiped locations, leftovers of interrupted writes.
//! It runs in parallel, can be rate-limited, cancelled ([`ScrubCancel`]) and resumed, and is
//! safe while the store is in use.
//!
//! # Using it
//!
//! - Create or open with [`Store::create`] / [`Store::open`], or [`Store::builder`] for other
//!   geometries, locations, durability and retry settings.
//! - Write with [`Store::put`] (from an `io::Read`), [`Store::writer`] (an `io::Write` sink),
//!   or [`Store::put_with`] and [`PutMode`] for conditional puts.
//! - Read with [`Store::get`] (an owned `io::Read`), [`Store::get_range`], [`Store::get_bytes`]
//!   or [`Store::get_to_path`]; look with [`Store::stat`], [`Store::list_prefix`] and
//!   [`Store::status`].
//!
//! # Errors
//!
//! Every operation returns [`Error`], whose variants name the key, location or file involved;
//! [`Error::is_retryable`] says whether trying again later may help. States are enums
//! ([`LocationState`], [`LocationProblem`], [`ShardState`]), not strings.
//!
//! # Threads and processes
//!
//! `Store` is `Send + Sync` and a cheap `Clone`; readers and writers it hands out own a clone.
//! Any number of threads and processes may use one store: writers of one key are serialized
//! by a lock file, readers take no lock, and a scrub may run beside them.
//!
//! # Features
//!
//! - `cli` (default): the `shardguard` command's dependencies; library users can turn it off.
//! - `fault-injection`: the `fault` module, seeded faults behind the [`Location`] trait, for tests.
//! - `unstable`: the internals (codec, checksums, placement, format) as public modules, for
//!   the fuzz targets, benches and tests; no stability promise.
//! - `rusty-erasure`: faster codec kernels from a younger crate, same bytes.
//!
//! [`Location`] is the extension point for other kinds of locations; its documentation states
//! the contract an implementation must keep.

#![deny(missing_docs)]

/// Declares internal modules: public (hidden from the docs) with the `unstable` feature, for the
/// fuzz targets, benches and tests; private otherwise. Not an API to build on: they change in
/// any release.
macro_rules! internal_modules {
    ($($name:ident),*) => {$(
        #[cfg(feature = "unstable")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "unstable"))]
        mod $name;
    )*};
}

internal_modules!(arq, checksum, codec, format, placement);

pub mod credentials;
#[cfg(feature = "demo")]
pub mod demo;
mod disk;
mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod health;
mod ids;
mod key;
mod lease;
pub mod location;
mod location_spec;
mod lock;
mod log_view;
mod own_files;
#[cfg(feature = "s3")]
mod remote;
#[cfg(all(feature = "s3", any(feature = "demo", feature = "fault-injection")))]
pub mod s3_server;
mod scrub;
mod status;
mod store;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use arq::RetryPolicy;
pub use codec::UnsupportedCpu;
pub use credentials::Credentials;
pub use error::{ConfigProblem, Error, Result};
pub use format::{FormatError, Geometry};
pub use health::{HeaderProblem, LocationProblem, LocationState, StoreFileProblem};
pub use key::validate as validate_key;
pub use location::{Durability, Location, NetworkCounts};
pub use location_spec::{LocationSpec, S3Spec, SpecError};
pub use scrub::{
    LocationSummary, ResumeOutcome, ScrubCancel, ScrubCounts, ScrubOptions, ScrubProgress, ScrubReport,
    ScrubVerdict, UnrecoverableObject, LAST_REPORT_FILE,
};
pub use status::{LocationStatus, ScrubCoverage, StoreStatus};
pub use store::{
    CompactionSummary, ListEntry, ListIter, LocationWrapper, ObjectReader, ObjectStat, ObjectWriter, PutMode,
    PutOutcome, ReadStats, ShardHealth, ShardState, Store, StoreBuilder, STORE_FILE,
};
