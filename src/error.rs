//! The one error type of the library: every variant names what failed and where.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in a store operation.
///
/// Variants carry the key, location, shard, stripe or path involved, so the message alone tells
/// an operator what failed and where; [`Error::is_retryable`] says whether trying again later
/// may help. (The CLI maps variants to its exit codes itself.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key is not a valid object name (empty, longer than 1024 bytes, or contains NUL).
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// Why the key was rejected.
        reason: &'static str,
    },

    /// No object with this key exists (or it was deleted).
    #[error("object {key:?} not found")]
    NotFound {
        /// The key that was looked up.
        key: String,
    },

    /// More chunks of a stripe are lost or damaged than the parity can rebuild.
    #[error("object {key:?} is unrecoverable at stripe {stripe}: {available} good chunks < {needed} needed")]
    Unrecoverable {
        /// The object's key.
        key: String,
        /// The stripe (0-based) that cannot be rebuilt.
        stripe: u64,
        /// How many chunks of the stripe verified.
        available: usize,
        /// How many are needed (the data shard count `k`).
        needed: usize,
    },

    /// Shard files of the object exist, but no version of it is held by enough locations.
    #[error(
        "object {key:?} has no readable version: the newest (version {version}) is held by {held} locations < {needed} needed"
    )]
    NoQuorum {
        /// The object's key.
        key: String,
        /// The newest version found.
        version: u64,
        /// How many locations hold a verified header of that version.
        held: usize,
        /// How many are needed (the data shard count `k`).
        needed: usize,
    },

    /// Too few locations can be read to be sure of the object's newest version: answering
    /// could return a version older than the newest acknowledged write (or call it absent).
    #[error(
        "{}only {usable} of {total} locations can be read, too few to be sure of the newest versions (bring the others back)",
        .key.as_ref().map(|k| format!("object {k:?}: ")).unwrap_or_default()
    )]
    TooFewLocations {
        /// The object's key, when one object was asked for.
        key: Option<String>,
        /// Locations that could be listed.
        usable: usize,
        /// All locations of the store.
        total: usize,
    },

    /// The object's data did not match the whole-object checksum after every chunk verified.
    #[error(
        "object {key:?} failed its whole-object checksum (expected {expected:#010x}, computed {actual:#010x})"
    )]
    ObjectChecksum {
        /// The object's key.
        key: String,
        /// The checksum recorded at write time.
        expected: u32,
        /// The checksum of the bytes read.
        actual: u32,
    },

    /// A put could not make enough shards durable; the previous version is still the current one.
    #[error("put of {key:?} failed: {written} shards durable < write quorum {needed}: {source}")]
    WriteQuorum {
        /// The object's key.
        key: String,
        /// How many shard files were made durable.
        written: usize,
        /// The write quorum.
        needed: usize,
        /// The last write error seen.
        source: io::Error,
    },

    /// A setting given to `create` or `scrub` cannot work; nothing was written.
    #[error("invalid configuration: {problem}")]
    InvalidConfig {
        /// What is wrong with it.
        problem: ConfigProblem,
    },

    /// No store where one was to be opened: no store file, and no copy of it found.
    #[error(
        "{path}: not a shardguard store (no shardguard.store, and no copy of it in a location under it; \
         if its locations are elsewhere, name one with --location-hint)"
    )]
    NotAStore {
        /// The directory given as the store.
        path: PathBuf,
    },
    /// A conditional put ([`crate::PutMode`]) whose condition did not hold: nothing was written.
    #[error("put of {key:?} refused: the current version is {current:?}, the put required {expected:?} (None: absent)")]
    PreconditionFailed {
        /// The key.
        key: String,
        /// The version the put required (`None`: absent).
        expected: Option<u64>,
        /// The version found (`None`: absent).
        current: Option<u64>,
    },

    /// Another machine holds the writer's lease on the store's remote locations: two machines
    /// must not write one store. Nothing was written.
    #[error(
        "the store is being written by another machine: {holder} holds the writer's lease ({location}); \
         it expires in {} s unless renewed",
        expires_in.as_secs()
    )]
    Leased {
        /// A remote location where the lease was found.
        location: PathBuf,
        /// Who holds it: process, host and store directory.
        holder: String,
        /// When it expires if its holder stops renewing it.
        expires_in: std::time::Duration,
    },

    /// A scrub stopped by its [`crate::ScrubCancel`]; a scrub with `resume` continues it.
    #[error("scrub cancelled (a scrub with resume continues it)")]
    Cancelled,

    /// A store already exists where `create` was asked to make one.
    #[error("a store already exists at {path}")]
    AlreadyExists {
        /// The existing store file.
        path: PathBuf,
    },

    /// A file of the store could not be decoded.
    #[error("{path}: {source}")]
    Format {
        /// The file that failed to decode.
        path: PathBuf,
        /// What is wrong with its bytes.
        source: crate::format::FormatError,
    },

    /// An I/O operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },

    /// An earlier fsync failed; the store refuses further writes in this process because the
    /// kernel may have dropped the dirty pages (see the USENIX ATC '20 fsync study).
    #[error("store is poisoned by an earlier failed fsync; reopen it after checking the disks")]
    Poisoned,

    /// This CPU cannot run the codec as it was built (an older CPU than the Haswell the C
    /// kernels target by default; the message says how to build for it).
    #[error(transparent)]
    UnsupportedCpu(#[from] crate::codec::UnsupportedCpu),

    /// Writing to the caller's output (the object being read) failed.
    #[error("writing the object's output failed: {source}")]
    Output {
        /// The writer's error.
        source: io::Error,
    },

    /// The scrub's worker threads could not be started.
    #[error("cannot start {jobs} scrub threads: {source}")]
    Threads {
        /// How many were asked for (0: one per core).
        jobs: usize,
        /// Why not.
        source: rayon::ThreadPoolBuildError,
    },

    /// Reading the caller's input (the object being put) failed.
    #[error("reading the object's input failed: {source}")]
    Input {
        /// The reader's error.
        source: io::Error,
    },
}

impl Error {
    /// Whether the same call may succeed if tried again later without anyone fixing the
    /// store: an I/O error, or too few locations (disks may come back). Not for verdicts on
    /// the data (unrecoverable, not found), bad input, a failed condition, or a poisoned store
    /// (which needs reopening after the disks are checked).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Io { .. } | Error::TooFewLocations { .. } | Error::WriteQuorum { .. }
        )
    }

    pub(crate) fn invalid_config(problem: ConfigProblem) -> Self {
        Error::InvalidConfig { problem }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// What is wrong with a setting ([`Error::InvalidConfig`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// The erasure-coding geometry cannot be used.
    #[error(
        "k = {k}, m = {m}, chunk size = {chunk_size}: {reason} (need 1 <= k, k + m <= 255, \
         1 <= chunk size <= 64 MiB)"
    )]
    Geometry {
        /// Data shards asked for.
        k: u8,
        /// Parity shards asked for.
        m: u8,
        /// Chunk size asked for.
        chunk_size: u32,
        /// Which rule it breaks.
        reason: crate::format::FormatError,
    },
    /// The store's root exists and is not a directory.
    #[error("{0}: exists and is not a directory")]
    RootNotADirectory(PathBuf),
    /// The number of locations given is not `k + m`.
    #[error("{given} locations given, k + m = {needed} needed")]
    LocationCount {
        /// Locations given.
        given: usize,
        /// `k + m`.
        needed: usize,
    },
    /// A location given already belongs to a store.
    #[error("{0} already belongs to a store")]
    LocationTaken(PathBuf),
    /// A location's path is longer than the store file can record (4096 bytes).
    #[error("a location path is longer than 4096 bytes: {0}")]
    LocationPathTooLong(PathBuf),
    /// A location string that looks like a URL but is not an accepted S3 location.
    #[error("{0}")]
    LocationSpec(#[from] crate::location_spec::SpecError),
    /// A credentials file that cannot be used (others may read it, damaged, not a file), or
    /// credentials given for a location that is not remote. Never quotes a secret.
    #[error("{path}: {why}")]
    Credentials {
        /// The file, or the location.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A remote location that cannot be used: no S3 support in this build, a bad client
    /// configuration, or (at `create`) a bucket that does not answer.
    #[error("location {location}: {detail}")]
    RemoteLocation {
        /// The location, as given.
        location: String,
        /// What went wrong (never a credential).
        detail: String,
    },
    /// A location is the store's own root directory.
    #[error("location {0}: is the store's own directory")]
    LocationIsRoot(PathBuf),
    /// A location is inside the store's own files (locks, scrub state).
    #[error("location {0}: is inside the store's own files")]
    LocationInOwnFiles(PathBuf),
    /// Two locations are one directory.
    #[error("location {0}: is the same directory as {1}")]
    LocationsSame(PathBuf, PathBuf),
    /// One location is inside another.
    #[error("location {0}: and {1} are nested")]
    LocationsNested(PathBuf, PathBuf),
    /// A pack threshold that leaves no room in a chunk for the pack's table (an object in a pack
    /// lies in one chunk beside a copy of the table: at most the chunk size less 1095 bytes), or
    /// above 16 MiB (packed objects are held in memory while written).
    #[error(
        "a pack threshold of {threshold} bytes does not fit chunks of {chunk_size} bytes (at most the \
         chunk size less 1095 bytes, and at most 16 MiB)"
    )]
    PackThreshold {
        /// The threshold asked for.
        threshold: u32,
        /// The chunk size asked for.
        chunk_size: u32,
    },
    /// A scrub percentage outside 1-100.
    #[error("the scrub percentage must be 1 to 100, not {0}")]
    ScrubPercent(u8),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
