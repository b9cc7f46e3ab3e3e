//! One builder for creating and opening a store: geometry and locations (used by `create`), and
//! the knobs of an open store (used by both).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::arq::RetryPolicy;
use crate::error::Result;
use crate::location::{Durability, Location};

use super::Store;

/// Wraps each location as the store opens it (slot, location) — fault injection uses this.
pub type LocationWrapper = Box<dyn Fn(usize, Arc<dyn Location>) -> Arc<dyn Location> + Send + Sync>;

/// Creates or opens a store: `Store::builder()`, setters, then [`StoreBuilder::create`] or
/// [`StoreBuilder::open`]. Every setter's doc gives its default.
///
/// ```
/// # fn main() -> Result<(), shardguard::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let root = dir.path();
/// use shardguard::{Durability, Store};
///
/// // 6 data + 3 parity shards of 256 KiB chunks: any 3 of the 9 locations may be lost.
/// let store = Store::builder()
///     .data_shards(6)
///     .parity_shards(3)
///     .chunk_size(256 << 10)
///     .create(root)?;
/// drop(store);
/// // The geometry is the store's: opening needs none of it.
/// let store = Store::builder().durability(Durability::Fsync).open(root)?;
/// assert_eq!(store.geometry().k, 6);
/// # Ok(())
/// # }
/// ```
pub struct StoreBuilder {
    pub(super) data_shards: u8,
    pub(super) parity_shards: u8,
    pub(super) chunk_size: u32,
    pub(super) locations: Option<Vec<PathBuf>>,
    /// `None`: the default for the chunk size ([`StoreBuilder::pack_threshold`]).
    pub(super) pack_threshold: Option<u32>,
    pub(super) retry: RetryPolicy,
    pub(super) durability: Durability,
    pub(super) wrapper: Option<LocationWrapper>,
    pub(super) location_hints: Vec<PathBuf>,
    pub(super) lease_duration: std::time::Duration,
    pub(super) log_idle: std::time::Duration,
    pub(super) location_credentials: Vec<(String, crate::credentials::Credentials)>,
}

impl Default for StoreBuilder {
    fn default() -> Self {
        StoreBuilder {
            data_shards: 4,
            parity_shards: 2,
            chunk_size: 1 << 20,
            locations: None,
            pack_threshold: None,
            retry: RetryPolicy::default(),
            durability: Durability::Fsync,
            wrapper: None,
            location_hints: Vec::new(),
            lease_duration: crate::lease::DEFAULT_LEASE,
            log_idle: super::small_log::DEFAULT_LOG_IDLE,
            location_credentials: Vec::new(),
        }
    }
}

impl std::fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBuilder")
            .field("data_shards", &self.data_shards)
            .field("parity_shards", &self.parity_shards)
            .field("chunk_size", &self.chunk_size)
            .field("locations", &self.locations)
            .field("pack_threshold", &self.pack_threshold)
            .field("retry", &self.retry)
            .field("durability", &self.durability)
            .field("wrapper", &self.wrapper.as_ref().map(|_| "…"))
            .field("location_hints", &self.location_hints)
            .field("lease_duration", &self.lease_duration)
            .field("log_idle", &self.log_idle)
            .field("location_credentials", &self.location_credentials)
            .finish()
    }
}

impl StoreBuilder {
    /// Data shards per stripe, `k` (`create` only). Default 4.
    pub fn data_shards(mut self, k: u8) -> Self {
        self.data_shards = k;
        self
    }

    /// Parity shards per stripe, `m`: how many lost chunks per stripe are survived (`create`
    /// only). Default 2.
    pub fn parity_shards(mut self, m: u8) -> Self {
        self.parity_shards = m;
        self
    }

    /// Bytes per chunk (`create` only). Default 1 MiB: of 256 KiB, 1 MiB and 4 MiB, measured
    /// with `benches/store.rs`, 1 MiB gave the fastest put and get (README, Performance), with
    /// 6 MiB of stripe buffers for 4 + 2.
    pub fn chunk_size(mut self, bytes: u32) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// The location directories, one per shard (`k + m`; `create` only), relative to the root
    /// or absolute. Default: `loc-00`, `loc-01`, … under the root.
    pub fn locations<P: Into<PathBuf>>(mut self, dirs: impl IntoIterator<Item = P>) -> Self {
        self.locations = Some(dirs.into_iter().map(Into::into).collect());
        self
    }

    /// Credentials for remote location `location` (`create`; for a store spread over several
    /// providers), kept in the store directory's `credentials` file with owner-only
    /// permissions, never in the store file; a remote location without its own signs with the
    /// standard variables. Later changes: [`crate::credentials::set`].
    pub fn location_credentials(
        mut self,
        location: impl Into<String>,
        credentials: crate::credentials::Credentials,
    ) -> Self {
        self.location_credentials.push((location.into(), credentials));
        self
    }

    /// How long a handle keeps its small-write log after its last logged put (`open`): then
    /// a thread folds the log into packs of their own files and lets its lock go, so that a
    /// long-lived handle that puts now and then neither keeps its segment (4 MiB per location)
    /// nor holds off compaction by a repairing scrub elsewhere. Default 10 s.
    pub fn log_idle(mut self, idle: std::time::Duration) -> Self {
        self.log_idle = idle;
        self
    }

    /// How long the writer's lease on a store's remote locations lasts without being renewed
    /// (`open`; a store with only local locations has none): a machine that stops writing
    /// without closing holds other machines off for this long, plus a quarter for clock skew.
    /// Renewed every third of it while a handle lives. Default 120 s.
    pub fn lease_duration(mut self, duration: std::time::Duration) -> Self {
        self.lease_duration = duration;
        self
    }

    /// Objects shorter than this many bytes are stored in packs shared with other small
    /// objects instead of `k + m` shard files of their own (`create` only; FORMAT.md, "Packs");
    /// 0: none are. Default: 64 KiB when the chunk size leaves room for it and a pack's table
    /// (chunks of at least 64 KiB + 1,095 bytes), else 0. Measured (README): own shard files
    /// cost 12x an object's size at 4 KiB, 1.25x the code's ideal at 64 KiB, 1.06x at 256 KiB.
    /// A store that packs is refused by builds older than the small-write log.
    pub fn pack_threshold(mut self, bytes: u32) -> Self {
        self.pack_threshold = Some(bytes);
        self
    }

    /// The pack threshold a store is created with: the one asked for, or the default.
    pub(super) fn chosen_pack_threshold(&self) -> u32 {
        const DEFAULT: u32 = 64 << 10;
        self.pack_threshold.unwrap_or(
            match DEFAULT as usize + super::PACK_TABLE_ROOM <= self.chunk_size as usize {
                true => DEFAULT,
                false => 0,
            },
        )
    }

    /// Retransmission policy for chunk reads. Default: [`RetryPolicy::default`].
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// What a completed write survives. Default: [`Durability::Fsync`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Wraps every location (for fault injection or instrumentation). Default: none.
    pub fn location_wrapper(
        mut self,
        wrapper: impl Fn(usize, Arc<dyn Location>) -> Arc<dyn Location> + Send + Sync + 'static,
    ) -> Self {
        self.wrapper = Some(Box::new(wrapper));
        self
    }

    /// A location of the store, where a copy of the store file is looked for should the
    /// store file be lost or damaged (`open` only): a directory, or a remote location string
    /// (`s3:...`, signed with the store's credentials file if it can be read). Only needed for
    /// stores whose locations are not under the root (the copy found there lists the others,
    /// which are read too).
    /// Default: none.
    pub fn location_hint(mut self, dir: impl Into<PathBuf>) -> Self {
        self.location_hints.push(dir.into());
        self
    }

    /// Creates a new store at `root` with this geometry and these locations, and opens it.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] for a geometry or location set that cannot work (nothing
    /// is written), [`crate::Error::AlreadyExists`] where a store is, [`crate::Error::Io`] when
    /// a file cannot be written, [`crate::Error::UnsupportedCpu`].
    pub fn create(self, root: impl AsRef<Path>) -> Result<Store> {
        crate::codec::check_cpu()?;
        Store::create_files(root.as_ref(), &self)?;
        self.open(root)
    }

    /// Opens the store at `root`; the geometry and locations are the store's own.
    ///
    /// # Errors
    /// [`crate::Error::NotAStore`] when there is neither a store file nor a copy of it,
    /// [`crate::Error::Format`] or [`crate::Error::Io`] when the store file and every copy of it
    /// are unreadable, [`crate::Error::UnsupportedCpu`]. Unusable locations are not an error: see
    /// [`Store::location_problems`].
    pub fn open(self, root: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(root.as_ref(), self)
    }
}
