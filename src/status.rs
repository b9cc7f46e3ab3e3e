//! The state of a store at a glance: its locations (health, free space), its objects, and the
//! last scrub.

use std::path::PathBuf;

use crate::error::Result;
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
    /// Readable objects.
    pub objects: u64,
    /// Their total size.
    pub bytes: u64,
    /// The last finished scrub, if any.
    pub last_scrub: Option<ScrubReport>,
}

impl Store {
    /// Locations with health and free space, object count and bytes, and the last scrub.
    pub fn status(&self) -> Result<StoreStatus> {
        let listing = self.list()?;
        let locations = self
            .locations()
            .into_iter()
            .zip(self.location_problems())
            .enumerate()
            .map(|(slot, (path, problem))| LocationStatus {
                slot,
                free_bytes: fs4::available_space(&path).ok(),
                path,
                problem,
            })
            .collect();
        Ok(StoreStatus {
            geometry: self.geometry(),
            locations,
            objects: listing.len() as u64,
            bytes: listing.iter().map(|e| e.len).sum(),
            last_scrub: self.last_scrub(),
        })
    }
}
