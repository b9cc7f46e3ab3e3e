//! A simulated power loss: what a disk keeps of a store when the power goes at a chosen call.
//!
//! A SIGKILL leaves the page cache intact, so crash tests built on it would pass with every
//! fsync deleted. [`PowerLoss`] watches every call by which the store changes or syncs its files
//! under a directory (the `disk` module) and keeps, beside the real files, the state a disk would
//! have made durable, with the rules POSIX guarantees and no more:
//!
//! - a file's content is durable as of its last `fsync`/`fdatasync` (or a `syncfs`), or as of
//!   its last write-back waited for (`disk::write_back`) once a file under the watch is synced
//!   after it: the watch is one disk, and a file sync flushes the disk's cache, which makes
//!   every completed write durable (Linux's block layer, beyond POSIX: the store relies on it
//!   only where `LocalDir::log_disk` says so);
//! - a directory's entries (a file created, renamed in or out, removed) are durable as of the
//!   directory's last `fsync` (or a `syncfs`), whatever became of the file;
//! - what was there when the watch began is durable.
//!
//! Each watched call is a possible cut point. At the cut every later call fails (the machine is
//! off), and [`PowerLoss::reboot`] replaces the directory by what the disk holds after the
//! reboot: with [`Aftermath::Drop`], only the durable state; with [`Aftermath::Tear`], for each
//! directory either its durable or its current entries, and for each file changed since its
//! last sync a seeded mix of old and new 4 KiB pages at a length between the two (a torn
//! write). Syncs under the watch are made by the simulator, not the disk, which also keeps a
//! sweep of hundreds of cut points fast.
//!
//! Inode numbers identify files across renames; every inode the model refers to is kept open,
//! so none is reused while the watch lasts.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::disk::Call;

/// What the disk holds after the reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aftermath {
    /// Exactly the durable state: everything not synced is gone.
    Drop,
    /// Unsynced changes survive in part, chosen by the seed: per directory its durable or its
    /// current entries; per changed file a mix of old and new pages (a torn write).
    Tear {
        /// Seed of the choices.
        seed: u64,
    },
}

/// A watch over the store files under one directory, ending in a power cut.
pub struct PowerLoss {
    sim: Arc<Mutex<Simulation>>,
}

/// What a watched call came to (for [`crate::disk`]).
pub(crate) enum Observed {
    /// No watch covers the path.
    NotWatched,
    /// Counted; `synced` if the simulator made the sync.
    Watched { synced: bool },
    /// The power is off.
    PowerLost,
}

/// The watches in force. Their number is checked first, so unwatched calls cost one atomic load.
static WATCHES: Mutex<Vec<(PathBuf, Arc<Mutex<Simulation>>)>> = Mutex::new(Vec::new());
static WATCH_COUNT: AtomicUsize = AtomicUsize::new(0);

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir(u64),
    File(u64),
    Symlink(PathBuf),
}

/// A directory tree as the disk holds it after the reboot.
enum Node {
    Dir(BTreeMap<OsString, Node>),
    File(Vec<u8>),
    Symlink(PathBuf),
}

struct Simulation {
    root: PathBuf,
    root_inode: u64,
    /// Watched calls made so far.
    calls: u64,
    /// The power goes when this many calls have been made.
    cut_after: Option<u64>,
    aftermath: Aftermath,
    /// Durable entries of each directory, by inode.
    durable_entries: HashMap<u64, BTreeMap<OsString, Entry>>,
    /// Durable content of each file, by inode.
    durable_content: HashMap<u64, Vec<u8>>,
    /// Content written back to the disk (`disk::write_back`) since the last flush, by inode:
    /// durable at the next file sync.
    written_back: HashMap<u64, Vec<u8>>,
    /// An open handle on every inode the model refers to: the inode cannot be freed and its
    /// number reused, and its current state stays readable after a rename.
    pinned: HashMap<u64, File>,
    /// Set at the cut: what the disk holds after the reboot.
    after_reboot: Option<Node>,
    /// The call the power went at, for messages.
    cut_at: Option<String>,
}

impl PowerLoss {
    /// Starts watching the store files under `root` (everything there now counts as durable).
    /// The power goes just before call number `cut_after + 1`, or at [`PowerLoss::reboot`] if
    /// fewer calls are made or `cut_after` is `None`.
    ///
    /// # Errors
    /// The I/O error of reading the tree under `root`.
    pub fn watch(root: &Path, cut_after: Option<u64>, aftermath: Aftermath) -> io::Result<PowerLoss> {
        let root_inode = fs::metadata(root)?.ino();
        let mut sim = Simulation {
            root: root.to_path_buf(),
            root_inode,
            calls: 0,
            cut_after,
            aftermath,
            durable_entries: HashMap::new(),
            durable_content: HashMap::new(),
            written_back: HashMap::new(),
            pinned: HashMap::new(),
            after_reboot: None,
            cut_at: None,
        };
        sim.sync_tree(root)?;
        let sim = Arc::new(Mutex::new(sim));
        let mut watches = lock(&WATCHES);
        if watches
            .iter()
            .any(|(other, _)| other.starts_with(root) || root.starts_with(other))
        {
            return Err(io::Error::other("overlapping power-loss watches"));
        }
        watches.push((root.to_path_buf(), Arc::clone(&sim)));
        WATCH_COUNT.store(watches.len(), Ordering::SeqCst);
        Ok(PowerLoss { sim })
    }

    /// Watched calls made so far (at most `cut_after`): a run without a cut tells a sweep how
    /// many cut points there are.
    pub fn calls(&self) -> u64 {
        lock(&self.sim).calls
    }

    /// The call the power went at (none if it went at the reboot), for messages.
    pub fn cut_at(&self) -> Option<String> {
        lock(&self.sim).cut_at.clone()
    }

    /// Whether the power has gone.
    pub fn power_lost(&self) -> bool {
        lock(&self.sim).after_reboot.is_some()
    }

    /// Ends the watch, cutting the power now if it has not gone yet, and replaces everything
    /// under the root by what the disk holds after the reboot. Whoever used the store must have
    /// let go of it first.
    ///
    /// # Errors
    /// The I/O error of rewriting the tree.
    pub fn reboot(self) -> io::Result<()> {
        {
            let mut watches = lock(&WATCHES);
            watches.retain(|(_, w)| !Arc::ptr_eq(w, &self.sim));
            WATCH_COUNT.store(watches.len(), Ordering::SeqCst);
        }
        let mut sim = lock(&self.sim);
        if sim.after_reboot.is_none() {
            sim.cut()?;
        }
        let Some(Node::Dir(entries)) = sim.after_reboot.take() else {
            return Err(io::Error::other("the watched root is not a directory"));
        };
        for entry in fs::read_dir(&sim.root)? {
            let path = entry?.path();
            match fs::symlink_metadata(&path)?.is_dir() {
                true => fs::remove_dir_all(&path)?,
                false => fs::remove_file(&path)?,
            }
        }
        materialize(&sim.root, entries)
    }
}

/// Whether any watch is in force.
pub(crate) fn watching() -> bool {
    WATCH_COUNT.load(Ordering::SeqCst) > 0
}

/// Counts `call` against the watch covering its path, if any, and applies it to the model.
pub(crate) fn observe(call: Call<'_>) -> Observed {
    if WATCH_COUNT.load(Ordering::SeqCst) == 0 {
        return Observed::NotWatched;
    }
    let path = match call {
        Call::SyncFile(_, path)
        | Call::SyncDir(path)
        | Call::SyncFilesystem(path)
        | Call::Change(path)
        | Call::WrittenBack(_, path, ..) => path,
    };
    let sim = {
        let watches = lock(&WATCHES);
        match watches.iter().find(|(root, _)| path.starts_with(root)) {
            Some((_, w)) => Arc::clone(w),
            None => return Observed::NotWatched,
        }
    };
    let mut sim = lock(&sim);
    if sim.after_reboot.is_some() {
        return Observed::PowerLost;
    }
    if sim.cut_after == Some(sim.calls) {
        sim.cut_at = Some(format!("{call:?}"));
        // A model that cannot be read back is a broken test setup, not a power cut to survive.
        if let Err(e) = sim.cut() {
            panic!("power-loss simulation under {}: {e}", sim.root.display());
        }
        return Observed::PowerLost;
    }
    sim.calls += 1;
    let applied = match call {
        Call::SyncFile(file, _) => sim.sync_file(file).map(|()| sim.flush_written_back()),
        Call::WrittenBack(file, _, offset, len) => sim.write_back(file, offset, len),
        Call::SyncDir(dir) => sim.sync_dir(dir),
        Call::SyncFilesystem(_) => {
            let root = sim.root.clone();
            // Everything is durable as it is now, newer than anything written back.
            sim.written_back.clear();
            sim.sync_tree(&root)
        }
        Call::Change(_) => return Observed::Watched { synced: false },
    };
    match applied {
        Ok(()) => Observed::Watched { synced: true },
        // The path is gone or unreadable: the real sync would have failed too.
        Err(_) => Observed::Watched { synced: false },
    }
}

impl Simulation {
    /// Records a file's current content as durable.
    fn sync_file(&mut self, file: &File) -> io::Result<()> {
        let (inode, content) = self.current_content(file)?;
        // Newer than what it had written back.
        self.written_back.remove(&inode);
        self.durable_content.insert(inode, content);
        Ok(())
    }

    /// Records bytes `[offset, offset + len)` of a file as written back, as they are now:
    /// durable at the next file sync. Only those bytes: the rest of the file stays as durable
    /// (or written back) as it was.
    fn write_back(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        let (inode, current) = self.current_content(file)?;
        let mut content = match self.written_back.remove(&inode) {
            Some(content) => content,
            None => self.durable_content.get(&inode).cloned().unwrap_or_default(),
        };
        let start = usize::try_from(offset).map_or(current.len(), |o| o.min(current.len()));
        let end = usize::try_from(offset.saturating_add(len)).map_or(current.len(), |e| e.min(current.len()));
        if content.len() < end {
            content.resize(end, 0);
        }
        content[start..end].copy_from_slice(&current[start..end]);
        self.written_back.insert(inode, content);
        Ok(())
    }

    /// A file sync flushed the disk's cache: what was written back before it is durable.
    fn flush_written_back(&mut self) {
        self.durable_content.extend(self.written_back.drain());
    }

    /// A file's inode and content now (the file pinned).
    fn current_content(&mut self, file: &File) -> io::Result<(u64, Vec<u8>)> {
        // Reopened for reading: the handle being synced may be write-only.
        let readable = File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        let inode = readable.metadata()?.ino();
        let content = read_all(&readable)?;
        self.pinned.entry(inode).or_insert(readable);
        Ok((inode, content))
    }

    /// Records a directory's current entries as durable.
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        let inode = fs::metadata(dir)?.ino();
        let entries = self.current_entries(dir)?;
        self.durable_entries.insert(inode, entries);
        Ok(())
    }

    /// Records everything under `dir` as durable (`syncfs`, and the state a watch starts from).
    fn sync_tree(&mut self, dir: &Path) -> io::Result<()> {
        self.sync_dir(dir)?;
        for (name, entry) in self.current_entries(dir)? {
            match entry {
                Entry::Dir(_) => self.sync_tree(&dir.join(name))?,
                Entry::File(inode) => {
                    let content = read_all(&self.pinned[&inode])?;
                    self.durable_content.insert(inode, content);
                }
                Entry::Symlink(_) => {}
            }
        }
        Ok(())
    }

    /// A directory's entries now, each inode pinned. Anything but directories, regular files
    /// and links (which the store never makes) is left out.
    fn current_entries(&mut self, dir: &Path) -> io::Result<BTreeMap<OsString, Entry>> {
        let mut entries = BTreeMap::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let Ok(metadata) = fs::symlink_metadata(&path) else {
                continue; // removed meanwhile
            };
            let inode = metadata.ino();
            let kind = if metadata.is_dir() {
                Entry::Dir(inode)
            } else if metadata.is_file() {
                Entry::File(inode)
            } else if metadata.is_symlink() {
                entries.insert(entry.file_name(), Entry::Symlink(fs::read_link(&path)?));
                continue;
            } else {
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(pin) = self.pinned.entry(inode) {
                let Ok(file) = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(&path)
                else {
                    continue;
                };
                if file.metadata()?.ino() != inode {
                    continue; // replaced meanwhile
                }
                pin.insert(file);
            }
            entries.insert(entry.file_name(), kind);
        }
        Ok(entries)
    }

    /// Cuts the power: fixes what the disk holds after the reboot.
    fn cut(&mut self) -> io::Result<()> {
        let mut rng = match self.aftermath {
            Aftermath::Drop => None,
            Aftermath::Tear { seed } => Some(ChaCha8Rng::seed_from_u64(seed)),
        };
        let root = self.root.clone();
        let tree = self.after_reboot_dir(self.root_inode, &root, &mut rng)?;
        self.after_reboot = Some(tree);
        Ok(())
    }

    /// What the directory with `inode` (now reachable at `path`) holds after the reboot.
    fn after_reboot_dir(
        &mut self,
        inode: u64,
        path: &Path,
        rng: &mut Option<ChaCha8Rng>,
    ) -> io::Result<Node> {
        let durable = self.durable_entries.get(&inode).cloned().unwrap_or_default();
        let current = rng.as_mut().is_some_and(|rng| rng.random_bool(0.5));
        let entries = match current {
            true => self.current_entries(path).unwrap_or_default(),
            false => durable,
        };
        let mut out = BTreeMap::new();
        for (name, entry) in entries {
            let node = match entry {
                Entry::Dir(child) => {
                    let child_path = self.path_of(child, &path.join(&name));
                    self.after_reboot_dir(child, &child_path, rng)?
                }
                Entry::File(child) => {
                    let durable = self.durable_content.get(&child).cloned().unwrap_or_default();
                    match rng {
                        Some(rng) => {
                            let current = read_all(&self.pinned[&child])?;
                            Node::File(tear(&durable, &current, rng))
                        }
                        None => Node::File(durable),
                    }
                }
                Entry::Symlink(target) => Node::Symlink(target),
            };
            out.insert(name, node);
        }
        Ok(Node::Dir(out))
    }

    /// Where a pinned directory can be listed now (it may have been renamed since).
    fn path_of(&self, inode: u64, fallback: &Path) -> PathBuf {
        match self.pinned.get(&inode) {
            Some(file) => PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
            None => fallback.to_path_buf(),
        }
    }
}

/// A torn write: between the durable and the current content, a length between theirs and,
/// page by page, either's bytes (zeros past the end of the shorter).
fn tear(durable: &[u8], current: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    if durable == current {
        return durable.to_vec();
    }
    const PAGE: usize = 4096;
    let (short, long) = (durable.len().min(current.len()), durable.len().max(current.len()));
    let len = rng.random_range(short..=long);
    let mut out = vec![0u8; len];
    for (page, bytes) in out.chunks_mut(PAGE).enumerate() {
        let from = if rng.random_bool(0.5) { current } else { durable };
        let start = page * PAGE;
        // Past the end of the one chosen: the zeros already there.
        if let Some(from) = from.get(start..) {
            let available = from.len().min(bytes.len());
            bytes[..available].copy_from_slice(&from[..available]);
        }
    }
    out
}

fn read_all(file: &File) -> io::Result<Vec<u8>> {
    let len = file.metadata()?.len() as usize;
    let mut bytes = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut bytes[done..], done as u64)? {
            0 => break, // shrank meanwhile
            n => done += n,
        }
    }
    bytes.truncate(done);
    Ok(bytes)
}

fn materialize(dir: &Path, entries: BTreeMap<OsString, Node>) -> io::Result<()> {
    for (name, node) in entries {
        let path = dir.join(name);
        match node {
            Node::Dir(children) => {
                fs::create_dir(&path)?;
                materialize(&path, children)?;
            }
            Node::File(bytes) => fs::write(&path, bytes)?,
            Node::Symlink(target) => std::os::unix::fs::symlink(target, &path)?,
        }
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked mid-call leaves a model that is still consistent enough to drop.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
