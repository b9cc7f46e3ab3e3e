//! The state of a store at a glance: its locations (health, free space), its objects, and the
//! last scrub.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::format::Geometry;
use crate::scrub::ScrubReport;
use crate::store::Store;

/// One location's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationStatus {
    /// Slot number.
    pub slot: usize,
    /// Directory.
    pub path: PathBuf,
    /// Why it is unusable, or `None` when healthy.
    pub problem: Option<String>,
    /// Bytes free on its filesystem, when it can be read.
    pub free_bytes: Option<u64>,
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq)]
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
}

impl Store {
    /// Locations with health and free space, object count and bytes, and the last scrub.
    pub fn status(&self) -> Result<StoreStatus> {
        let objects = match self.list() {
            Ok(listing) => Some((listing.len() as u64, listing.iter().map(|e| e.len).sum())),
            Err(Error::TooFewLocations { .. }) => None,
            Err(e) => return Err(e),
        };
        let locations = self
            .locations()
            .into_iter()
            .zip(self.location_problems())
            .enumerate()
            .map(|(slot, (path, problem))| LocationStatus {
                slot,
                free_bytes: available_space(&path),
                path,
                problem,
            })
            .collect();
        Ok(StoreStatus {
            geometry: self.geometry(),
            locations,
            objects,
            last_scrub: self.last_scrub(),
        })
    }
}

/// Bytes an unprivileged writer can still use on the filesystem `path` lives on.
fn available_space(path: &std::path::Path) -> Option<u64> {
    let stats = rustix::fs::statvfs(path).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}
