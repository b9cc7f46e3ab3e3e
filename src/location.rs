//! Where shard files live: the [`Location`] trait and its local-directory implementation.
//!
//! A location is one directory (ideally its own disk). The store only talks to locations through
//! this trait, so fault injection (and, later, remote object stores) slot in behind it.
//!
//! Layout of a local location:
//!
//! ```text
//! SHARDGUARD-LOCATION                    identity (store id, slot), FORMAT.md
//! objects/<2 hex>/<32 hex>/<stamp>.shard one shard file per write of an object
//! objects/<2 hex>/<32 hex>/<stamp>.pending one whose put has not finished committing
//! tmp/<random>.tmp                       shard files being written
//! log/<16 hex>.log                       a handle's small-write log segment (FORMAT.md)
//! ```

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk;
use crate::format::bucket_from_hex;
pub use crate::format::{ObjectId, WriteStamp};

/// Name of the identity file at the top of a location.
pub const IDENTITY_FILE: &str = "SHARDGUARD-LOCATION";
/// Name of the copy of the store file at the top of a location: the store opens from these
/// when its own store file is lost or damaged.
pub const STORE_COPY_FILE: &str = "SHARDGUARD-STORE";
/// Bound on a store file (255 locations of at most 4 KiB of path each).
pub(crate) const MAX_STORE_FILE_LEN: usize = 2 << 20;
const OBJECTS_DIR: &str = "objects";
const TMP_DIR: &str = "tmp";
const LOG_DIR: &str = "log";
/// The bucket of every pack (the only objects written through the log).
const PACK_BUCKET: u8 = 0xff;
/// Bound on a log segment read back whole (a segment is far smaller: FORMAT.md).
const MAX_LOG_LEN: u64 = 64 << 20;
/// How much of a new log segment's zeros each write covers: near a small object's log record,
/// so the page cache keeps the segment in small folios (`create_log` says why).
const ZERO_WRITE: usize = 16 << 10;
/// A shard file being written to a `Fsync` location has its writeback started every this many
/// bytes, so the commit's fsync finds little left to write and the kernel's dirty-page
/// throttling never stalls a large put (RocksDB's `bytes_per_sync`, same reason).
const WRITEBACK_STEP: u64 = 8 << 20;

/// What survives a power loss once a write has returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every shard file and the directory entry naming it are fsynced before a put or delete
    /// returns: a completed write survives power loss.
    #[default]
    Fsync,
    /// Nothing is fsynced: a completed write survives a process crash (the page cache holds it),
    /// not a power loss or kernel crash. For tests, benches and scratch data.
    PageCache,
}

/// Marks an I/O error as a failed fsync: the kernel may have dropped the dirty pages, so the
/// store stops writing rather than retry (see [`crate::Error::Poisoned`]).
#[derive(Debug, thiserror::Error)]
#[error("fsync failed: {0}")]
pub struct FsyncFailed(pub io::Error);

impl FsyncFailed {
    /// `e`, marked as a failed fsync (its kind kept).
    pub fn wrap(e: io::Error) -> io::Error {
        io::Error::new(e.kind(), FsyncFailed(e))
    }

    /// Whether `e` is a failed fsync.
    pub fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<FsyncFailed>())
    }
}

/// The shard files of an object at one location, each opened (or why it did not open).
pub type OpenedShards = Vec<OpenedShard>;

/// One shard file of an object, opened for reading.
pub struct OpenedShard {
    /// The write it belongs to.
    pub stamp: WriteStamp,
    /// Whether it is still pending (its put had not finished committing: FORMAT.md).
    pub pending: bool,
    /// The open file, or why it did not open.
    pub file: io::Result<Arc<dyn ShardFile>>,
}

/// A readable shard file. Reads are positional so several threads can share one handle.
#[allow(clippy::missing_errors_doc)] // The contract on `Location` gives the error rules.
pub trait ShardFile: Send + Sync {
    /// The file's length when it was opened.
    fn len(&self) -> u64;
    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset`; a short file is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

/// A shard file being written. It becomes visible only through [`ShardWriter::commit`]; dropped
/// uncommitted, it is removed.
#[allow(clippy::missing_errors_doc)] // The contract on `Location` gives the error rules.
pub trait ShardWriter: Send {
    /// Appends bytes.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Overwrites bytes already written (the header, once the object's length is known).
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file durable (per the location's [`Durability`]) and renames it into place,
    /// committed: for a shard rebuilt into a write that is already committed.
    fn commit(self: Box<Self>) -> io::Result<()>;
    /// Makes the file durable and renames it into place as pending: the first step of
    /// committing a put; [`Location::promote`] is the second.
    fn stage(self: Box<Self>) -> io::Result<()>;
    /// Renames the file into place without waiting for the disk; a later [`Location::sync`]
    /// makes it durable. For writes that replace nothing (a power loss before the sync leaves a
    /// missing or unverifiable file, which was missing anyway): a scrub rebuilding a location
    /// syncs once per batch instead of three times per file.
    fn commit_deferred(self: Box<Self>) -> io::Result<()>;
}

/// What a remote location's requests came to so far ([`Location::network`]), for `status` and
/// the scrub report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct NetworkCounts {
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed (after the client's own retries), connection failures included.
    pub failed: u64,
    /// Requests not sent because the endpoint was down (its last connection had just failed).
    pub not_contacted: u64,
    /// Whether the endpoint is taken for down right now.
    pub down: bool,
    /// The median latency of the recent chunk reads, if any.
    pub median_read_latency: Option<std::time::Duration>,
}

impl NetworkCounts {
    /// The requests made since `before` was taken; the endpoint's state as now.
    pub fn since(self, before: NetworkCounts) -> NetworkCounts {
        NetworkCounts {
            requests: self.requests.saturating_sub(before.requests),
            failed: self.failed.saturating_sub(before.failed),
            not_contacted: self.not_contacted.saturating_sub(before.not_contacted),
            ..self
        }
    }
}

/// One place where shard files are stored.
///
/// # Contract
///
/// The store's guarantees (no acknowledged write or delete lost, no wrong bytes returned) hold
/// only over locations that keep this contract; [`LocalDir`] is the reference, and
/// `tests/power_loss.rs` checks it against simulated power cuts.
///
/// - **Durability.** When a method that writes returns `Ok` under [`Durability::Fsync`], what
///   it wrote survives a power loss: [`ShardWriter::commit`] and [`ShardWriter::stage`] (the
///   file's bytes and its name in place), [`Location::promote`], [`Location::remove_shard`],
///   [`Location::remove_pending`], [`Location::patch_shard`], the identity and store-copy
///   writes. [`ShardWriter::commit_deferred`] may wait for the next [`Location::sync`].
/// - **Failed syncs.** An error from an fsync (or anything that may have lost written pages)
///   must be returned wrapped with [`FsyncFailed::wrap`]: the store then refuses further
///   writes ([`crate::Error::Poisoned`]) instead of retrying over lost data.
/// - **Atomic names.** A shard file appears under its final name whole or not at all (written
///   elsewhere, then renamed); `promote` turns a pending file into a committed one so that
///   after a crash it is one or the other, never neither.
/// - **Listings.** `list_shards` and `list_pending` return what is there now; a name is never
///   reported for a file that was not written whole. A file listed but gone when opened is a
///   `NotFound` error, which readers treat as a race and look again.
/// - **Reads.** A [`ShardFile`] keeps serving the bytes of the file it opened even if the name
///   is removed or replaced meanwhile; a short file is an `UnexpectedEof` error, never a crash
///   (no `mmap`: a truncated file must be an erasure, not a SIGBUS). Errors of kind
///   `InvalidData` mean "not one of ours" (a link, a directory): an erasure, not retried.
/// - **Confinement.** Nothing is read or written outside the location: names come from the
///   store (hex ids, stamps), never from keys, and links are not followed.
/// - **Threads.** Every method may be called from several threads at once; the store
///   serializes writers of one object itself (lock file), not the location.
#[allow(clippy::missing_errors_doc)] // The contract on `Location` gives the error rules.
pub trait Location: Send + Sync + fmt::Debug {
    /// The location's directory, for messages.
    fn path(&self) -> &Path;
    /// Reads the identity file's bytes.
    fn read_identity(&self) -> io::Result<Vec<u8>>;
    /// Writes the identity file atomically, creating the location's directories.
    fn write_identity(&self, bytes: &[u8]) -> io::Result<()>;
    /// Reads this location's copy of the store file.
    fn read_store_copy(&self) -> io::Result<Vec<u8>>;
    /// Writes this location's copy of the store file atomically.
    fn write_store_copy(&self, bytes: &[u8]) -> io::Result<()>;
    /// The buckets (first bytes of object ids) that have a directory here, so a walk opens
    /// only those.
    fn list_buckets(&self) -> io::Result<Vec<u8>>;
    /// The objects with a directory here whose id starts with the byte `bucket`. Listing a
    /// store bucket by bucket keeps memory to a 256th of the object count.
    fn list_bucket(&self, bucket: u8) -> io::Result<Vec<ObjectId>>;
    /// The writes of `object` with a committed shard file here; none if the object is absent.
    fn list_shards(&self, object: ObjectId) -> io::Result<Vec<WriteStamp>>;
    /// The writes of `object` with a pending shard file here (committed ones not included).
    fn list_pending(&self, object: ObjectId) -> io::Result<Vec<WriteStamp>>;
    /// Opens a shard file for reading.
    fn open_shard(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<Arc<dyn ShardFile>>;
    /// Opens a pending shard file for reading.
    fn open_pending(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<Arc<dyn ShardFile>>;
    /// Lists the shard files of `object` held here, committed and pending, and opens each (a
    /// read's first step, so a location may do both in one pass). A file listed but gone when
    /// opened is a `NotFound`.
    fn open_shards(&self, object: ObjectId) -> io::Result<OpenedShards> {
        let committed = self.list_shards(object)?.into_iter().map(|stamp| OpenedShard {
            stamp,
            pending: false,
            file: self.open_shard(object, stamp),
        });
        let pending = self.list_pending(object)?.into_iter().map(|stamp| OpenedShard {
            stamp,
            pending: true,
            file: self.open_pending(object, stamp),
        });
        Ok(committed.chain(pending).collect())
    }
    /// Starts writing a shard file in the temporary area.
    fn create_shard(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<Box<dyn ShardWriter>>;
    /// Removes a shard file (and the object's directory once empty).
    fn remove_shard(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<()>;
    /// Removes a pending shard file (and the object's directory once empty).
    fn remove_pending(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<()>;
    /// Turns a pending shard file into a committed one, durably (per the location's
    /// [`Durability`]): the second step of committing a put (FORMAT.md).
    fn promote(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<()>;
    /// The path of a shard file, for messages.
    fn shard_path(&self, object: ObjectId, stamp: WriteStamp) -> PathBuf;
    /// Overwrites bytes of a committed shard file in place and makes them durable. Only used to
    /// replace chunks that already failed verification, so a torn write loses nothing.
    fn patch_shard(&self, object: ObjectId, stamp: WriteStamp, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Names of the files in the temporary area.
    fn list_temp(&self) -> io::Result<Vec<String>>;
    /// Removes a file from the temporary area.
    fn remove_temp(&self, name: &str) -> io::Result<()>;
    /// Makes every completed write here durable (per the location's [`Durability`]).
    fn sync(&self) -> io::Result<()>;
    /// Creates log segment `segment` as `len` bytes of zeros, durable with its name, so that
    /// appends into it change no file metadata (FORMAT.md, "The small-write log"). A location
    /// that keeps no log (the default) says `Unsupported`, and small writes commit without one.
    fn create_log(&self, segment: u64, len: u64) -> io::Result<()> {
        let _ = (segment, len);
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Writes `bytes` at `offset` of log segment `segment` (inside its length), and if
    /// `durable` makes them durable (per the durability): with fsync durability, one
    /// `fdatasync`.
    fn append_log(&self, segment: u64, offset: u64, bytes: &[u8], durable: bool) -> io::Result<()> {
        let _ = (segment, offset, bytes, durable);
        Err(io::ErrorKind::Unsupported.into())
    }
    /// The disk whose cache one log `fdatasync` here flushes, when that flush also makes
    /// durable what other locations on the same disk wrote back ([`Location::write_back_log`]):
    /// then the records of one commit on several locations of a disk need one flush between
    /// them, not one each. `None` (the default) when unknown: each record is synced itself.
    fn log_disk(&self) -> Option<u64> {
        None
    }
    /// Writes bytes `[offset, offset + len)` of log segment `segment` back to the disk and, if
    /// `wait`, waits until it has them (not flushed from its cache: a later `append_log` with
    /// `durable` on a location of the same [`Location::log_disk`] does that); else only
    /// starts it, which cannot fail.
    fn write_back_log(&self, segment: u64, offset: u64, len: u64, wait: bool) -> io::Result<()> {
        let _ = (segment, offset, len, wait);
        Err(io::ErrorKind::Unsupported.into())
    }
    /// The log segments here.
    fn list_logs(&self) -> io::Result<Vec<u64>> {
        Ok(Vec::new())
    }
    /// A log segment's bytes; `InvalidData` if it is not a regular file of at most 64 MiB.
    fn read_log(&self, segment: u64) -> io::Result<Vec<u8>> {
        let _ = segment;
        Err(io::ErrorKind::NotFound.into())
    }
    /// The record a kept log segment ends with (FORMAT.md, "Kept segments"): the bytes its
    /// last 8 bytes name, not yet verified, with the segment's length; `None` if they name
    /// none that fits in the file, or the segment is folded.
    fn kept_log_record(&self, segment: u64) -> io::Result<Option<(Vec<u8>, u64)>> {
        let _ = segment;
        Ok(None)
    }
    /// The pack writes held in kept log segments here (FORMAT.md, "Kept segments"), as their
    /// indexes list them: each is committed here.
    fn kept_log_writes(&self) -> Vec<(ObjectId, WriteStamp)> {
        Vec::new()
    }
    /// Removes a log segment, durably (per the durability).
    fn remove_log(&self, segment: u64) -> io::Result<()> {
        let _ = segment;
        Ok(())
    }
    /// How a remote location's requests have gone so far; `None` for a local one.
    fn network(&self) -> Option<NetworkCounts> {
        None
    }
    /// Whether the location is remote (on an object store, reached over the network): a store
    /// with remote locations holds a writer's lease on them (the `lease` module).
    fn is_remote(&self) -> bool {
        false
    }
    /// The writer's lease object here and its ETag, or `None` if there is none. Remote
    /// locations only.
    fn read_lease(&self) -> io::Result<Option<(Vec<u8>, String)>> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Writes the lease object if it is still as last read: absent (`expected` `None`; else an
    /// `AlreadyExists` error) or with ETag `expected` (else `NotFound`); returns its new ETag.
    fn write_lease(&self, bytes: &[u8], expected: Option<&str>) -> io::Result<String> {
        let _ = (bytes, expected);
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Removes the lease object.
    fn remove_lease(&self) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Whether the location's place is there: a local location's directory exists (a missing
    /// one may be an unmounted disk, never to be created), a remote one's bucket answers. Only
    /// a location that is there is claimed again when its identity is missing.
    fn is_there(&self) -> bool {
        self.path().is_dir()
    }
    /// What the location lives on right now (for a local directory, its device): checked
    /// before writing, so a disk unmounted or swapped under a running process is noticed
    /// rather than written through to whatever is left at its path.
    fn instance(&self) -> io::Result<u64> {
        Ok(0)
    }
}

/// Replaces `dir/name` with `bytes` atomically: a temporary file beside it, fsynced, renamed
/// over it, the directory fsynced (fsyncs per `durability`). A crash leaves the old or the new
/// file, and at worst a `name.*.tmp` leftover.
pub(crate) fn write_atomically(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    durability: Durability,
) -> io::Result<()> {
    write_atomically_with_mode(dir, name, bytes, durability, 0o666)
}

/// [`write_atomically`], the file created with permissions `mode` (less the umask): 0600 for a
/// file only its owner may read, from its first byte.
pub(crate) fn write_atomically_with_mode(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    durability: Durability,
    mode: u32,
) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!("{name}.{:016x}.tmp", crate::ids::random_u64()));
    let write = || -> io::Result<()> {
        let mut file =
            disk::open_for_writing(OpenOptions::new().write(true).create_new(true).mode(mode), &tmp)?;
        file.write_all(bytes)?;
        if durability == Durability::Fsync {
            disk::sync_file(&file, &tmp, false)?;
        }
        disk::rename(&tmp, &dir.join(name))
    };
    if let Err(e) = write() {
        let _ = disk::remove_file(&tmp);
        return Err(e);
    }
    if durability == Durability::Fsync {
        disk::sync_dir(dir)?;
    }
    Ok(())
}

/// What `parse` makes of the names in `dir`; names it rejects (stray files, not ours to read)
/// are left out, and a directory that does not exist has none.
fn parsed_names<T>(dir: &Path, parse: impl Fn(&str) -> Option<T>) -> io::Result<Vec<T>> {
    // Most directories looked for are absent (every small put looks for the key's own files on
    // every location): a failing `statx` takes neither a descriptor slot (the process's file
    // table lock, contended by every thread) nor a file structure, as a failing `opendir` does.
    if let Err(e) = fs::symlink_metadata(dir) {
        if e.kind() == io::ErrorKind::NotFound {
            return Ok(Vec::new());
        }
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        if let Some(parsed) = entry?.file_name().to_str().and_then(&parse) {
            out.push(parsed);
        }
    }
    Ok(out)
}

/// The object a temporary shard file belongs to (its name starts with the object id), if any.
pub(crate) fn temp_file_object(name: &str) -> Option<ObjectId> {
    let (hex, rest) = name.split_once('-')?;
    rest.ends_with(".tmp").then(|| ObjectId::from_hex(hex)).flatten()
}

/// A location in a local directory.
#[derive(Debug)]
pub struct LocalDir {
    dir: PathBuf,
    durability: Durability,
    /// The pack writes held only in this location's small-write log.
    log_view: std::sync::Mutex<crate::log_view::LogView>,
    /// The segment this handle appends to, open, with its length (one open per segment, not
    /// per record).
    appending: std::sync::Mutex<Option<(u64, Arc<File>, u64)>>,
}

impl LocalDir {
    /// A location rooted at `dir` (which need not exist yet).
    pub fn new(dir: impl Into<PathBuf>, durability: Durability) -> Self {
        LocalDir {
            dir: dir.into(),
            durability,
            log_view: Default::default(),
            appending: Default::default(),
        }
    }

    /// Log segment `segment`'s path, its file open for writing and its length: opened once
    /// per segment, not per record.
    fn appending_file(&self, segment: u64) -> io::Result<(PathBuf, Arc<File>, u64)> {
        let path = log_path(&self.dir.join(LOG_DIR), segment);
        let mut appending = self.appending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((id, file, len)) = &*appending {
            if *id == segment {
                return Ok((path, Arc::clone(file), *len));
            }
        }
        let file = Arc::new(File::from(rustix::fs::open(
            &path,
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NOFOLLOW,
            rustix::fs::Mode::empty(),
        )?));
        let len = file.metadata()?.len();
        *appending = Some((segment, Arc::clone(&file), len));
        Ok((path, file, len))
    }

    /// Closes segment `segment`'s file kept open for appends, if it is the one.
    fn stop_appending(&self, segment: u64) {
        let mut appending = self.appending.lock().unwrap_or_else(|e| e.into_inner());
        if appending.as_ref().is_some_and(|(id, _, _)| *id == segment) {
            *appending = None;
        }
    }

    /// `f` of the log view, brought up to date with the segments first.
    fn logged<T>(&self, f: impl FnOnce(&crate::log_view::LogView) -> T) -> T {
        let mut view = self.log_view.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh_log_view(&mut view);
        f(&view)
    }

    /// `f` of the log view as it is, or if that finds nothing, brought up to date. A pack's
    /// logged write, once seen, does not change: looking one up costs no listing of the
    /// segments unless it is new.
    fn logged_lookup<T>(&self, f: impl Fn(&crate::log_view::LogView) -> Option<T>) -> Option<T> {
        let mut view = self.log_view.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = f(&view) {
            return Some(found);
        }
        self.refresh_log_view(&mut view);
        f(&view)
    }

    fn refresh_log_view(&self, view: &mut crate::log_view::LogView) {
        let dir = self.dir.join(LOG_DIR);
        let listed = self.list_logs().unwrap_or_default();
        view.refresh(&listed, |id| crate::log_view::open_segment(&log_path(&dir, id)));
    }

    fn object_dir(&self, object: ObjectId) -> PathBuf {
        let hex = object.to_hex();
        // One allocation: every put and get builds this path for every location.
        let mut path = PathBuf::with_capacity(self.dir.as_os_str().len() + OBJECTS_DIR.len() + 40);
        path.push(&self.dir);
        path.push(OBJECTS_DIR);
        path.push(&hex[..2]);
        path.push(&hex);
        path
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.durability == Durability::Fsync {
            disk::sync_dir(dir)?;
        }
        Ok(())
    }

    /// Replaces a file at the top of the location atomically: written in `tmp/`, fsynced,
    /// renamed into place, the directory fsynced (per the durability).
    fn write_top_file(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.create_dirs(&self.dir.join(TMP_DIR), true)?;
        let tmp = self
            .dir
            .join(TMP_DIR)
            .join(format!("{name}-{}.tmp", crate::ids::random_u64()));
        let mut file =
            disk::open_for_writing(OpenOptions::new().write(true).create(true).truncate(true), &tmp)?;
        file.write_all(bytes)?;
        if self.durability == Durability::Fsync {
            disk::sync_file(&file, &tmp, false)?;
        }
        let target = self.dir.join(name);
        self.move_aside_if_directory(&target)?;
        disk::rename(&tmp, &target)?;
        self.sync_dir(&self.dir)
    }

    /// A directory where one of our files belongs would refuse the rename of the new file: it
    /// is moved into `tmp/` (never deleted: it may be someone's). Not beside it, as the store
    /// root's files are (`own_files::move_aside`): in an object's directory it would keep the
    /// directory, and the object's listing, alive for good. A link, FIFO or device the rename
    /// simply replaces.
    fn move_aside_if_directory(&self, target: &Path) -> io::Result<()> {
        if fs::symlink_metadata(target).is_ok_and(|m| m.is_dir()) {
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let aside = format!("quarantine-{name}-{:016x}", crate::ids::random_u64());
            disk::rename(target, &self.dir.join(TMP_DIR).join(aside))?;
        }
        Ok(())
    }

    /// Removes one file of an object's directory, then the directory once empty, each change
    /// made durable (per the durability).
    fn remove_from_object_dir(&self, object: ObjectId, name: &str) -> io::Result<()> {
        let dir = self.object_dir(object);
        match disk::remove_file(&dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        self.sync_dir(&dir)?;
        // Fails harmlessly while other writes of the object remain.
        if disk::remove_dir(&dir).is_ok() {
            if let Some(parent) = dir.parent() {
                self.sync_dir(parent)?;
            }
        }
        Ok(())
    }

    /// Creates `dir` and any missing parents, fsyncing each parent whose entries changed
    /// (unless `sync` is false: a later [`Location::sync`] covers them).
    fn create_dirs(&self, dir: &Path, sync: bool) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.create_dirs(parent, sync)?;
        }
        match disk::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(e),
        }
        match dir.parent() {
            Some(parent) if sync => self.sync_dir(parent),
            _ => Ok(()),
        }
    }
}

impl Location for LocalDir {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn read_identity(&self) -> io::Result<Vec<u8>> {
        // Tiny: a bounded read, never through a link or blocking on a FIFO.
        crate::own_files::read_bounded(&self.dir.join(IDENTITY_FILE), 4096)
    }

    fn write_identity(&self, bytes: &[u8]) -> io::Result<()> {
        self.create_dirs(&self.dir.join(OBJECTS_DIR), true)?;
        self.write_top_file(IDENTITY_FILE, bytes)
    }

    fn read_store_copy(&self) -> io::Result<Vec<u8>> {
        crate::own_files::read_bounded(&self.dir.join(STORE_COPY_FILE), MAX_STORE_FILE_LEN)
    }

    fn write_store_copy(&self, bytes: &[u8]) -> io::Result<()> {
        self.write_top_file(STORE_COPY_FILE, bytes)
    }

    fn list_buckets(&self) -> io::Result<Vec<u8>> {
        let mut buckets = parsed_names(&self.dir.join(OBJECTS_DIR), bucket_from_hex)?;
        if !buckets.contains(&PACK_BUCKET) && self.logged(|view| view.has_bucket(PACK_BUCKET)) {
            buckets.push(PACK_BUCKET);
        }
        Ok(buckets)
    }

    fn list_bucket(&self, bucket: u8) -> io::Result<Vec<ObjectId>> {
        let dir = self.dir.join(OBJECTS_DIR).join(format!("{bucket:02x}"));
        let mut objects = parsed_names(&dir, |name| {
            ObjectId::from_hex(name).filter(|id| id.0[0] == bucket)
        })?;
        if bucket == PACK_BUCKET {
            let logged: Vec<ObjectId> = self.logged(|view| view.objects_in(bucket).collect());
            objects.extend(
                logged
                    .into_iter()
                    .filter(|o| !objects.contains(o))
                    .collect::<Vec<_>>(),
            );
        }
        Ok(objects)
    }

    fn list_shards(&self, object: ObjectId) -> io::Result<Vec<WriteStamp>> {
        let mut stamps = parsed_names(&self.object_dir(object), WriteStamp::from_file_name)?;
        // A pack with a committed file here is not looked for in the log (see `logged_shards`).
        if object.is_pack() && stamps.is_empty() {
            let logged = self.logged_lookup(|view| Some(view.stamps(object)).filter(|s| !s.is_empty()));
            for stamp in logged.unwrap_or_default() {
                if !stamps.contains(&stamp) {
                    stamps.push(stamp);
                }
            }
        }
        Ok(stamps)
    }

    fn list_pending(&self, object: ObjectId) -> io::Result<Vec<WriteStamp>> {
        parsed_names(&self.object_dir(object), WriteStamp::from_pending_file_name)
    }

    fn open_shard(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<Arc<dyn ShardFile>> {
        let path = self.shard_path(object, stamp);
        match rustix::fs::open(&path, READ_FLAGS, rustix::fs::Mode::empty()) {
            Ok(fd) => LocalShardFile::from_fd(fd),
            Err(rustix::io::Errno::NOENT) if object.is_pack() => self
                .logged_lookup(|view| view.open(object, stamp))
                .ok_or_else(|| io::ErrorKind::NotFound.into()),
            Err(e) => Err(e.into()),
        }
    }

    fn open_pending(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<Arc<dyn ShardFile>> {
        let path = self.object_dir(object).join(stamp.pending_file_name());
        let fd = rustix::fs::open(&path, READ_FLAGS, rustix::fs::Mode::empty())?;
        LocalShardFile::from_fd(fd)
    }

    fn open_shards(&self, object: ObjectId) -> io::Result<OpenedShards> {
        use rustix::fs::{Dir, Mode, OFlags};
        // One descriptor of the object's directory serves the listing and every open (no path
        // walk per file, no stat per listing): what a small object's scrub spends most on.
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let dir = match rustix::fs::open(self.object_dir(object), dir_flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(self.logged_shards::<()>(object, &[]).collect()),
            Err(e) => return Err(e.into()),
        };
        let mut entries = Dir::new(dir)?;
        let mut names = Vec::new();
        while let Some(entry) = entries.read() {
            let entry = entry?;
            let name = entry.file_name();
            let Ok(text) = name.to_str() else { continue };
            if let Some(stamp) = WriteStamp::from_file_name(text) {
                names.push((stamp, false, name.to_owned()));
            } else if let Some(stamp) = WriteStamp::from_pending_file_name(text) {
                names.push((stamp, true, name.to_owned()));
            }
        }
        let dir = entries.fd()?;
        let logged: Vec<OpenedShard> = self.logged_shards(object, &names).collect();
        Ok(names
            .into_iter()
            .map(|(stamp, pending, name)| {
                let file = rustix::fs::openat(dir, name.as_c_str(), READ_FLAGS, Mode::empty())
                    .map_err(io::Error::from)
                    .and_then(LocalShardFile::from_fd);
                OpenedShard { stamp, pending, file }
            })
            .chain(logged)
            .collect())
    }

    fn create_shard(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<Box<dyn ShardWriter>> {
        let tmp_dir = self.dir.join(TMP_DIR);
        self.create_dirs(&tmp_dir, true)?;
        let tmp = tmp_dir.join(format!("{}-{}.tmp", object.to_hex(), crate::ids::random_u64()));
        let file = disk::open_for_writing(OpenOptions::new().write(true).create_new(true), &tmp)?;
        Ok(Box::new(LocalShardWriter {
            file: Some(BufWriter::with_capacity(256 << 10, file)),
            written: 0,
            writeback_from: 0,
            tmp,
            target_dir: self.object_dir(object),
            stamp,
            location: LocalDir::new(&self.dir, self.durability),
        }))
    }

    fn remove_shard(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<()> {
        self.remove_from_object_dir(object, &stamp.file_name())
    }

    fn remove_pending(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<()> {
        self.remove_from_object_dir(object, &stamp.pending_file_name())
    }

    fn promote(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<()> {
        let dir = self.object_dir(object);
        // Within one directory: after a crash the file is pending or committed, never gone.
        disk::rename(&dir.join(stamp.pending_file_name()), &dir.join(stamp.file_name()))?;
        self.sync_dir(&dir)
    }

    fn shard_path(&self, object: ObjectId, stamp: WriteStamp) -> PathBuf {
        self.object_dir(object).join(stamp.file_name())
    }

    fn patch_shard(&self, object: ObjectId, stamp: WriteStamp, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let path = self.shard_path(object, stamp);
        if !path.exists() && object.is_pack() {
            // Held only in the log: the patched bytes become a shard file of its own, which
            // outranks the record from then on.
            let logged = self
                .logged_lookup(|view| view.open(object, stamp))
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            let mut whole = vec![0u8; logged.len() as usize];
            logged.read_exact_at(&mut whole, 0)?;
            let end = usize::try_from(offset)
                .ok()
                .and_then(|at| Some(at..at.checked_add(bytes.len())?));
            let Some(range) = end.filter(|r| r.end <= whole.len()) else {
                return Err(io::ErrorKind::InvalidInput.into());
            };
            whole[range].copy_from_slice(bytes);
            let mut writer = self.create_shard(object, stamp)?;
            writer.write_all(&whole)?;
            return writer.commit();
        }
        let file = disk::open_for_writing(OpenOptions::new().write(true), &path)?;
        file.write_all_at(bytes, offset)?;
        if self.durability == Durability::Fsync {
            disk::sync_file(&file, &path, true)?;
        }
        Ok(())
    }

    fn list_temp(&self) -> io::Result<Vec<String>> {
        parsed_names(&self.dir.join(TMP_DIR), |name| Some(name.to_owned()))
    }

    fn remove_temp(&self, name: &str) -> io::Result<()> {
        // Names come from list_temp, but never let one climb out of the temporary area.
        if name.contains('/') || name == ".." || name == "." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a temporary file name",
            ));
        }
        disk::remove_file(&self.dir.join(TMP_DIR).join(name))
    }

    fn instance(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(fs::metadata(&self.dir)?.dev())
    }

    fn create_log(&self, segment: u64, len: u64) -> io::Result<()> {
        let dir = self.dir.join(LOG_DIR);
        self.create_dirs(&dir, true)?;
        let path = log_path(&dir, segment);
        let mut file = disk::open_for_writing(OpenOptions::new().write(true).create_new(true), &path)?;
        // Written, not `fallocate`d: an append into unwritten extents would change the extent
        // tree, and its `fdatasync` would wait for a journal commit like any new file's.
        // Written 16 KiB at a time: the page cache sizes a write's folios by the write, and
        // every later append into a large folio walks all of its blocks (ext4's
        // `block_write_begin`: 1 MiB writes made it 5% of all CPU time of eight writers).
        let zeros = vec![0u8; ZERO_WRITE];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        if self.durability == Durability::Fsync {
            disk::sync_file(&file, &path, false)?;
        }
        self.sync_dir(&dir)
    }

    fn append_log(&self, segment: u64, offset: u64, bytes: &[u8], durable: bool) -> io::Result<()> {
        let (path, file, len) = self.appending_file(segment)?;
        if offset + bytes.len() as u64 > len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "append past the log segment's end",
            ));
        }
        disk::changing(&path, || file.write_all_at(bytes, offset))?;
        if durable && self.durability == Durability::Fsync {
            disk::sync_file(&file, &path, true)?;
        }
        Ok(())
    }

    fn log_disk(&self) -> Option<u64> {
        match self.durability {
            Durability::Fsync => disk::flushed_disk(&self.dir.join(LOG_DIR)),
            _ => None,
        }
    }

    fn write_back_log(&self, segment: u64, offset: u64, len: u64, wait: bool) -> io::Result<()> {
        let (path, file, _) = self.appending_file(segment)?;
        match (self.durability, wait) {
            (Durability::Fsync, true) => disk::write_back(&file, &path, offset, len),
            (Durability::Fsync, false) => {
                disk::start_writeback(&file, offset, len);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn list_logs(&self) -> io::Result<Vec<u64>> {
        parsed_names(&self.dir.join(LOG_DIR), |name| {
            let hex = name.strip_suffix(".log").filter(|h| h.len() == 16)?;
            u64::from_str_radix(hex, 16).ok()
        })
    }

    fn read_log(&self, segment: u64) -> io::Result<Vec<u8>> {
        let path = log_path(&self.dir.join(LOG_DIR), segment);
        let fd = rustix::fs::open(&path, READ_FLAGS, rustix::fs::Mode::empty())?;
        let file = File::from(fd);
        let metadata = file.metadata()?;
        if !metadata.is_file() || metadata.len() > MAX_LOG_LEN {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a log segment"));
        }
        let mut bytes = vec![0u8; metadata.len() as usize];
        file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }

    fn kept_log_record(&self, segment: u64) -> io::Result<Option<(Vec<u8>, u64)>> {
        let file = crate::log_view::open_segment(&log_path(&self.dir.join(LOG_DIR), segment))?;
        crate::log_view::kept_record(&file, crate::format::log_record::tag(segment))
    }

    fn kept_log_writes(&self) -> Vec<(ObjectId, WriteStamp)> {
        self.logged(|view| view.kept_writes())
    }

    fn remove_log(&self, segment: u64) -> io::Result<()> {
        let dir = self.dir.join(LOG_DIR);
        self.stop_appending(segment);
        match disk::remove_file(&log_path(&dir, segment)) {
            Ok(()) => self.sync_dir(&dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn sync(&self) -> io::Result<()> {
        if self.durability == Durability::Fsync {
            // One syncfs flushes the whole filesystem the location lives on.
            disk::sync_filesystem(&self.dir)?;
        }
        Ok(())
    }
}

impl LocalDir {
    /// The committed logged shard files of `object`, if it is a pack with no committed file
    /// among those `named` in its directory here. A pack has files of its own here only once
    /// folded (a write of it newer than its logged one) or once a repair wrote the logged
    /// write's file (which outranks its record): either way the log has nothing newer, and
    /// a read of a folded pack lists no segments.
    fn logged_shards<'a, N>(
        &self,
        object: ObjectId,
        named: &'a [(WriteStamp, bool, N)],
    ) -> impl Iterator<Item = OpenedShard> + 'a {
        let has_files = named.iter().any(|(_, pending, _)| !pending);
        let logged: Vec<OpenedShard> = match object.is_pack() && !has_files {
            true => self
                .logged_lookup(|view| Some(view.stamps(object)).filter(|s| !s.is_empty()))
                .unwrap_or_default()
                .into_iter()
                .filter(|stamp| !named.iter().any(|(s, pending, _)| s == stamp && !pending))
                .filter_map(|stamp| {
                    let file = self.logged_lookup(|view| view.open(object, stamp))?;
                    Some(OpenedShard {
                        stamp,
                        pending: false,
                        file: Ok(file),
                    })
                })
                .collect(),
            false => Vec::new(),
        };
        logged.into_iter()
    }
}
fn log_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:016x}.log"))
}

/// How shard files are opened for reading: never through a symbolic link, never blocking on a
/// FIFO or device (only a regular file is then accepted).
const READ_FLAGS: rustix::fs::OFlags = rustix::fs::OFlags::RDONLY
    .union(rustix::fs::OFlags::CLOEXEC)
    .union(rustix::fs::OFlags::NOFOLLOW)
    .union(rustix::fs::OFlags::NONBLOCK);

struct LocalShardFile {
    file: File,
    len: u64,
}

impl LocalShardFile {
    fn from_fd(fd: std::os::fd::OwnedFd) -> io::Result<Arc<dyn ShardFile>> {
        let file = File::from(fd);
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(Arc::new(LocalShardFile {
            file,
            len: metadata.len(),
        }))
    }
}

impl ShardFile for LocalShardFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        // pread, not mmap: a file truncated or failing underneath us must be an error we can
        // turn into an erasure, not a SIGBUS that kills the process.
        FileExt::read_exact_at(&self.file, buf, offset)
    }
}

struct LocalShardWriter {
    file: Option<BufWriter<File>>,
    /// Bytes written so far (appended; patches at offsets do not count).
    written: u64,
    /// Where the next early writeback starts ([`WRITEBACK_STEP`]).
    writeback_from: u64,
    tmp: PathBuf,
    target_dir: PathBuf,
    stamp: WriteStamp,
    location: LocalDir,
}

impl LocalShardWriter {
    fn file(&mut self) -> io::Result<&mut BufWriter<File>> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("shard writer already finished"))
    }
}

impl LocalShardWriter {
    /// Flushes, fsyncs (if `sync`), renames into place (as pending if `pending`), fsyncs the
    /// directory (if `sync`).
    fn finish(mut self, sync: bool, pending: bool) -> io::Result<()> {
        let mut writer = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("shard writer already finished"))?;
        writer.flush()?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        let sync = sync && self.location.durability == Durability::Fsync;
        if sync {
            disk::sync_file(&file, &self.tmp, false)?;
        }
        drop(file);
        self.location.create_dirs(&self.target_dir, sync)?;
        let name = match pending {
            true => self.stamp.pending_file_name(),
            false => self.stamp.file_name(),
        };
        let target = self.target_dir.join(name);
        self.location.move_aside_if_directory(&target)?;
        disk::rename(&self.tmp, &target)?;
        if sync {
            self.location.sync_dir(&self.target_dir)?;
        }
        Ok(())
    }
}

impl ShardWriter for LocalShardWriter {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file()?.write_all(buf)?;
        self.written += buf.len() as u64;
        if self.location.durability == Durability::Fsync
            && self.written - self.writeback_from >= WRITEBACK_STEP
        {
            let (from, len) = (self.writeback_from, self.written - self.writeback_from);
            let file = self.file()?;
            file.flush()?;
            disk::start_writeback(file.get_ref(), from, len);
            self.writeback_from = self.written;
        }
        Ok(())
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let file = self.file()?;
        file.flush()?;
        file.get_ref().write_all_at(buf, offset)
    }

    fn commit(self: Box<Self>) -> io::Result<()> {
        (*self).finish(true, false)
    }

    fn stage(self: Box<Self>) -> io::Result<()> {
        (*self).finish(true, true)
    }

    fn commit_deferred(self: Box<Self>) -> io::Result<()> {
        (*self).finish(false, false)
    }
}

impl Drop for LocalShardWriter {
    fn drop(&mut self) {
        // Uncommitted (or failed) writes leave nothing behind; after a commit the rename already
        // moved the temporary file, so this removal finds nothing.
        let _ = disk::remove_file(&self.tmp);
    }
}
