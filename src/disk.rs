//! Every call by which the store changes or syncs its files on a local disk, in one place.
//!
//! What survives a power loss is decided here: which fsyncs are made, of which file or
//! directory, in which order. Routing the calls through one module keeps that reviewable, and
//! lets the power-loss simulator of the `fault-injection` feature ([`crate::fault::power`])
//! watch them: it counts each call as a possible cut point, keeps the state a real disk would
//! have made durable, and makes the syncs themselves (so the real ones, which it replaces, are
//! skipped under it). Without the feature these are the plain calls.
//!
//! Every sync error is marked [`FsyncFailed`]: after one, the kernel may have dropped the dirty
//! pages, and the store must stop writing rather than retry.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use crate::location::FsyncFailed;

/// A call the power-loss simulator may watch (the only reader of its fields).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
pub(crate) enum Call<'a> {
    /// `fsync` or `fdatasync` of a file.
    SyncFile(&'a File, &'a Path),
    /// `fsync` of a directory: its entries become durable.
    SyncDir(&'a Path),
    /// `syncfs`: everything on the filesystem becomes durable.
    SyncFilesystem(&'a Path),
    /// Bytes `[offset, offset + len)` of a file written back to the disk and waited for, not
    /// yet durable: they are once the disk's cache is flushed, which any later file sync on the
    /// same disk does.
    WrittenBack(&'a File, &'a Path, u64, u64),
    /// A change of a directory's entries or a file's content that is not durable until synced.
    Change(&'a Path),
}

/// What to do about a call (without the simulator, always [`Verdict::Proceed`]).
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
enum Verdict {
    /// Make the real call.
    Proceed,
    /// The simulator has made it (a sync under simulation).
    Done,
    /// The simulated power is off: the call fails.
    PowerLost,
}

#[cfg(feature = "fault-injection")]
fn watch(call: Call<'_>) -> Verdict {
    use crate::fault::power::Observed;
    match crate::fault::power::observe(call) {
        Observed::NotWatched => Verdict::Proceed,
        Observed::Watched { synced: true } => Verdict::Done,
        Observed::Watched { synced: false } => Verdict::Proceed,
        Observed::PowerLost => Verdict::PowerLost,
    }
}

#[cfg(not(feature = "fault-injection"))]
fn watch(_call: Call<'_>) -> Verdict {
    Verdict::Proceed
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss")
}

/// Runs `change` (of `path`'s entries or content) unless the simulated power is off.
pub(crate) fn changing<T>(path: &Path, change: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    match watch(Call::Change(path)) {
        Verdict::PowerLost => Err(power_lost()),
        Verdict::Proceed | Verdict::Done => change(),
    }
}

/// Makes a file's content durable (`fdatasync` if `data_only`, else `fsync`).
pub(crate) fn sync_file(file: &File, path: &Path, data_only: bool) -> io::Result<()> {
    match watch(Call::SyncFile(file, path)) {
        Verdict::Done => Ok(()),
        Verdict::PowerLost => Err(FsyncFailed::wrap(power_lost())),
        Verdict::Proceed if data_only => file.sync_data().map_err(FsyncFailed::wrap),
        Verdict::Proceed => file.sync_all().map_err(FsyncFailed::wrap),
    }
}

/// Starts writing bytes `[offset, offset + len)` of `file` back to the disk without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). A hint that durability is coming: it makes
/// nothing durable (the file's fsync still does), so it is no cut point for power loss, and
/// its errors are left for that fsync to report.
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor belongs to `file`, open for the whole call; the call only reads
    // its arguments and touches no memory of ours.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Writes bytes `[offset, offset + len)` of `file` back to the disk and waits until the disk
/// has them (`sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`): not durable yet, they may
/// sit in the disk's volatile cache, but the cache flush of the next `fdatasync` of any file
/// on the same disk covers them (a flush makes every completed write durable). With this,
/// records on several locations of one disk need one flush, not one each (the small-write
/// log's appends). Errors are marked [`FsyncFailed`], as a sync's: the pages may be dropped.
pub(crate) fn write_back(file: &File, path: &Path, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    match watch(Call::WrittenBack(file, path, offset, len)) {
        Verdict::Done => Ok(()),
        Verdict::PowerLost => Err(FsyncFailed::wrap(power_lost())),
        Verdict::Proceed => {
            let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "range too long"));
            };
            let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // SAFETY: the descriptor belongs to `file`, open for the whole call; the call only
            // reads its arguments and touches no memory of ours.
            match unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) } {
                0 => Ok(()),
                _ => Err(FsyncFailed::wrap(io::Error::last_os_error())),
            }
        }
    }
}

/// The disk under `dir` when a file sync there flushes that disk's cache, making everything
/// written back to it durable ([`write_back`]): on ext4 and XFS, one disk per filesystem, the
/// device number names it. `None` elsewhere (btrfs and ZFS may span several disks; tmpfs keeps
/// nothing). Under a power-loss watch, which models one disk, always the device number.
pub(crate) fn flushed_disk(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    const EXT4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    let device = || fs::metadata(dir).ok().map(|m| m.dev());
    #[cfg(feature = "fault-injection")]
    if crate::fault::power::watching() {
        return device();
    }
    match rustix::fs::statfs(dir).ok()?.f_type as i64 {
        EXT4 | XFS => device(),
        _ => None,
    }
}

/// Makes a directory's entries (files created, renamed in or removed) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    match watch(Call::SyncDir(dir)) {
        Verdict::Done => Ok(()),
        Verdict::PowerLost => Err(FsyncFailed::wrap(power_lost())),
        Verdict::Proceed => File::open(dir)?.sync_all().map_err(FsyncFailed::wrap),
    }
}

/// Makes everything written to the filesystem `dir` lives on durable (`syncfs`).
pub(crate) fn sync_filesystem(dir: &Path) -> io::Result<()> {
    match watch(Call::SyncFilesystem(dir)) {
        Verdict::Done => Ok(()),
        Verdict::PowerLost => Err(FsyncFailed::wrap(power_lost())),
        Verdict::Proceed => {
            let dir = File::open(dir)?;
            rustix::fs::syncfs(&dir).map_err(|e| FsyncFailed::wrap(e.into()))
        }
    }
}

/// `rename(from, to)`.
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    changing(to, || fs::rename(from, to))
}

/// `unlink(path)`.
pub(crate) fn remove_file(path: &Path) -> io::Result<()> {
    changing(path, || fs::remove_file(path))
}

/// `rmdir(path)`.
pub(crate) fn remove_dir(path: &Path) -> io::Result<()> {
    changing(path, || fs::remove_dir(path))
}

/// `mkdir(path)`.
pub(crate) fn create_dir(path: &Path) -> io::Result<()> {
    changing(path, || fs::create_dir(path))
}

/// Creates (or opens) a file with `options`: a change of its directory.
pub(crate) fn open_for_writing(options: &fs::OpenOptions, path: &Path) -> io::Result<File> {
    changing(path, || options.open(path))
}

/// Whether a put may commit its shard files on threads of their own. Not under a power-loss
/// watch: there the calls must come in the same order on every run, so that a sweep's cut
/// point `c` is the same moment each time it is replayed.
pub(crate) fn commits_in_parallel() -> bool {
    #[cfg(feature = "fault-injection")]
    if crate::fault::power::watching() {
        return false;
    }
    true
}

/// How many times its objects' bytes a full small-write log segment's records may take for it
/// to be kept: `usual`, or under a power-loss watch no bound, since a sweep's workload is one
/// thread's, whose one-object packs are never dense enough, and the sweep must cut the keeping.
pub(crate) fn kept_log_overhead(usual: u64) -> u64 {
    #[cfg(feature = "fault-injection")]
    if crate::fault::power::watching() {
        return u64::MAX;
    }
    usual
}

/// The length of a small-write log segment: `usual`, or under a power-loss watch 8 KiB, so
/// that a sweep's copies stay small and its workload fills segments and keeps them.
pub(crate) fn log_segment_len(usual: u64) -> u64 {
    #[cfg(feature = "fault-injection")]
    if crate::fault::power::watching() {
        return 8 << 10;
    }
    usual
}
