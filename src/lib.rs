//! shardguard: objects stored as Reed-Solomon-coded, CRC32C-checked shards over several
//! locations, so that bit rot, lost files and lost disks cost nothing but a rebuild.
//!
//! ```
//! use shardguard::{Store, StoreConfig};
//!
//! # fn main() -> Result<(), shardguard::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! // 4 data + 2 parity shards, one per location (subdirectories of the root by default).
//! let store = Store::create(dir.path(), &StoreConfig::default())?;
//! store.put("photos/2026/cat.jpg", &b"meow"[..])?;
//!
//! // Lose a whole location: every object is still read back exactly.
//! std::fs::remove_dir_all(&store.locations()[0]).unwrap();
//! let store = Store::open(dir.path())?;
//! assert_eq!(store.get_bytes("photos/2026/cat.jpg")?, b"meow");
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

// Internals, public for the fuzz targets, benches and tests: not part of the API a library
// user should build on (hidden from the docs; they may change in any release).
#[doc(hidden)]
pub mod arq;
#[doc(hidden)]
pub mod checksum;
#[doc(hidden)]
pub mod codec;
#[cfg(feature = "demo")]
pub mod demo;
mod disk;
mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod format;
mod ids;
mod key;
pub mod location;
mod lock;
mod own_files;
#[doc(hidden)]
pub mod placement;
mod scrub;
mod status;
mod store;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use arq::RetryPolicy;
pub use error::{Error, Result};
pub use key::validate as validate_key;
pub use location::{Durability, Location};
pub use scrub::{
    LocationSummary, ResumeOutcome, ScrubCancel, ScrubCounts, ScrubOptions, ScrubProgress, ScrubReport,
    ScrubVerdict, UnrecoverableObject, LAST_REPORT_FILE,
};
pub use status::{LocationStatus, ScrubCoverage, StoreStatus};
pub use store::{
    ListEntry, ListIter, LocationWrapper, ObjectReader, ObjectStat, ObjectWriter, OpenOptions, PutMode,
    PutOutcome, ReadStats, ShardHealth, ShardState, Store, StoreConfig, STORE_FILE,
};
