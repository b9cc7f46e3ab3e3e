//! Typed answers to "what is wrong here?": why a location cannot be used, what a scrub found of
//! it, and why a shard header was rejected. Each has a `Display` for operators; the variants are
//! for code that decides.

use serde::{Deserialize, Serialize};

use crate::format::FormatError;

/// Why a location cannot serve its slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LocationProblem {
    /// The directory does not exist: a disk not mounted (never created by a scrub, which would
    /// write onto the filesystem below the mount point).
    #[error(
        "directory does not exist (disk not mounted?): mount it; for a new disk, create the \
         directory and a repairing scrub rebuilds it"
    )]
    DirectoryMissing,
    /// The directory exists but holds no identity file: a wiped, replaced or new disk. A scrub
    /// with repair rebuilds it.
    #[error("no identity file (a wiped, replaced or new disk?): a repairing scrub rebuilds it")]
    IdentityMissing,
    /// The identity file fails its checksum (or is not a file). A scrub with repair rewrites it.
    #[error("identity file damaged: {detail}")]
    IdentityDamaged {
        /// What is wrong with it.
        detail: String,
    },
    /// The identity file cannot be read.
    #[error("identity file unreadable: {detail}")]
    IdentityUnreadable {
        /// The operating system's error.
        detail: String,
    },
    /// Another store's disk: never written to.
    #[error("belongs to another store: never written to (check which disk is mounted here)")]
    ForeignStore,
    /// Another slot of this store: never written to.
    #[error("holds slot {holds} of this store: never written to (check which disk is mounted here)")]
    WrongSlot {
        /// The slot its identity names.
        holds: u16,
    },
    /// The location disappeared while the store was using it.
    #[error("location vanished while in use: {detail}")]
    Vanished {
        /// The operating system's error.
        detail: String,
    },
    /// The location now lives on another filesystem than when it was found usable.
    #[error("location now lives on another filesystem (unmounted or swapped while in use?)")]
    Remounted,
    /// The location's identity changed while the store was using it.
    #[error("location changed while in use: {now}")]
    ChangedInUse {
        /// What it looks like now.
        now: Box<LocationProblem>,
    },
    /// Listing the location's files failed.
    #[error("listing failed: {detail}")]
    ListingFailed {
        /// The operating system's error.
        detail: String,
    },
}

impl LocationProblem {
    /// Whether a repairing scrub may claim the location again: it is ours by path, exists, and
    /// holds no other store's or slot's identity.
    pub fn rebuildable(&self) -> bool {
        matches!(
            self,
            LocationProblem::IdentityMissing | LocationProblem::IdentityDamaged { .. }
        )
    }
}

/// What a scrub found of one location.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LocationState {
    /// Usable throughout.
    #[default]
    #[error("healthy")]
    Healthy,
    /// Found unusable; the repairing scrub rewrote its identity and used it again.
    #[error("rebuilt ({was})")]
    Rebuilt {
        /// What was wrong.
        was: LocationProblem,
    },
    /// Unusable for the whole scrub.
    #[error("{problem}")]
    Unusable {
        /// Why.
        problem: LocationProblem,
    },
    /// Claimable, but rewriting its identity failed.
    #[error("{problem}; rewriting the identity failed: {detail}")]
    RebuildFailed {
        /// What was wrong.
        problem: LocationProblem,
        /// The operating system's error.
        detail: String,
    },
    /// Readable, but it refused writes (repairs, removals): a read-only mount or a full disk.
    #[error("readable but not writable ({refused} writes refused)")]
    NotWritable {
        /// How many writes it refused.
        refused: u64,
    },
}

/// What was wrong with the store file (`shardguard.store`) when the store opened from the
/// copies its locations keep; a repairing scrub rewrites it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreFileProblem {
    /// No store file.
    #[error("{path}: missing; opened from the copies in the locations")]
    Missing {
        /// Where it should be.
        path: std::path::PathBuf,
    },
    /// The store file could not be read (or is not a regular file).
    #[error("{path}: {detail}; opened from the copies in the locations")]
    Unreadable {
        /// The store file.
        path: std::path::PathBuf,
        /// The operating system's error.
        detail: String,
    },
    /// The store file's bytes are not a valid store file.
    #[error("{path}: {reason}; opened from the copies in the locations")]
    Damaged {
        /// The store file.
        path: std::path::PathBuf,
        /// What is wrong with its bytes.
        reason: FormatError,
    },
}

/// Why a shard file's header was rejected (its chunks are still used, each verified by its own
/// checksum).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderProblem {
    /// The file could not be read.
    #[error("unreadable: {detail}")]
    Unreadable {
        /// The operating system's error.
        detail: String,
    },
    /// The bytes are not a valid header.
    #[error(transparent)]
    Invalid(#[from] FormatError),
    /// The header names another store.
    #[error("belongs to another store")]
    ForeignStore,
    /// The header names another write than the file's name does.
    #[error("header names another write than its file name")]
    WrongWrite,
    /// The header's `k`, `m` or chunk size differ from the store's.
    #[error("header's k, m or chunk size differ from the store's")]
    WrongGeometry,
}
