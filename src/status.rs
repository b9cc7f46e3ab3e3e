//! The state of a store at a glance: its locations (health, free space), its objects, and the
//! last scrub.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::format::Geometry;
use crate::health::LocationProblem;
use crate::scrub::ScrubReport;
use crate::store::Store;

/// One location's state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocationStatus {
    /// Slot number.
    pub slot: usize,
    /// Directory.
    pub path: PathBuf,
    /// Why it is unusable, or `None` when healthy.
    pub problem: Option<LocationProblem>,
    /// Bytes free on its filesystem, when it can be read (a local location).
    pub free_bytes: Option<u64>,
    /// A remote location's requests so far (this handle's), including the reads `status` made
    /// to count the objects; `None` for a local one.
    pub network: Option<crate::location::NetworkCounts>,
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoreStatus {
    /// Erasure-coding parameters.
    pub geometry: Geometry,
    /// Per location.
    pub locations: Vec<LocationStatus>,
    /// Readable objects and their total size in bytes; `None` when too few locations can be
    /// read to count them.
    pub objects: Option<(u64, u64)>,
    /// The last finished scrub, if any.
    pub last_scrub: Option<ScrubReport>,
    /// How long the objects have gone unscrubbed (from the scrub history); `None` when the
    /// objects could not be listed.
    pub scrub_coverage: Option<ScrubCoverage>,
}

/// How long the objects of a store have gone unscrubbed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScrubCoverage {
    /// Objects no scrub has verified yet.
    pub never_scrubbed: u64,
    /// When the least recently scrubbed of the others was last verified (seconds since the
    /// Unix epoch); `None` if none was.
    pub oldest_scrub_unix: Option<u64>,
}

impl Store {
    /// Locations with health and free space, object count and bytes, and the last scrub.
    ///
    /// # Errors
    /// [`Error::Io`] when listing the objects fails for a reason other than too few readable
    /// locations (which gives `objects: None`).
    pub fn status(&self) -> Result<StoreStatus> {
        let listing = match self.list() {
            Ok(listing) => Some(listing),
            Err(Error::TooFewLocations { .. }) => None,
            Err(e) => return Err(e),
        };
        let objects = listing
            .as_ref()
            .map(|l| (l.len() as u64, l.iter().map(|e| e.len).sum()));
        let scrub_coverage = listing.map(|l| {
            // A packed object is scrubbed with its pack.
            let ids = self.holders(&l);
            let (never_scrubbed, oldest_scrub_unix) = self.scrub_coverage(&ids);
            ScrubCoverage {
                never_scrubbed,
                oldest_scrub_unix,
            }
        });
        let locations = self
            .locations()
            .into_iter()
            .zip(self.location_problems())
            .enumerate()
            .map(|(slot, (path, problem))| LocationStatus {
                slot,
                free_bytes: available_space(&path),
                network: self.slots[slot].location.network(),
                path,
                problem,
            })
            .collect();
        Ok(StoreStatus {
            geometry: self.geometry(),
            locations,
            objects,
            last_scrub: self.last_scrub(),
            scrub_coverage,
        })
    }
}

/// Bytes an unprivileged writer can still use on the filesystem `path` lives on.
fn available_space(path: &std::path::Path) -> Option<u64> {
    let stats = rustix::fs::statvfs(path).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}
