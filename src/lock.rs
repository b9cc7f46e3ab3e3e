//! Who may write what: one writer at a time per object (a put, a delete, or a scrub repairing
//! it), across the threads of a process and across processes.
//!
//! Two layers. In front, an in-process table of locked objects (a mutex and a condition
//! variable). Behind it, an open-file-description (OFD) lock on one byte of `locks/objects.lock`
//! per object (the byte's offset comes from the object id), so other processes and other
//! [`crate::Store`] handles are excluded too. OFD locks belong to the open file, not the process:
//! closing some other descriptor of the file does not drop them (POSIX `fcntl` locks would), and
//! one lock file serves every object without a file per key.
//!
//! Deadlock is impossible by construction because of two rules the callers keep:
//! - a thread holds at most one object lock at a time;
//! - code holding a lock never waits on work-stealing (rayon `join`, `scope`, `par_iter`,
//!   `install`): a waiting rayon worker runs other queued jobs, and one of them may be a put or
//!   scrub of the very object this thread has locked. Under a lock, I/O fans out over
//!   `std::thread::scope` threads or runs on the calling thread.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

use crate::error::{Error, Result};
use crate::format::ObjectId;
use crate::own_files;

/// Directory of the lock file, under the store's root.
pub(crate) const LOCKS_DIR: &str = "locks";
/// The lock file: one byte per object (by id), never written.
pub(crate) const LOCK_FILE: &str = "objects.lock";

/// The object locks of one store handle.
#[derive(Debug)]
pub(crate) struct ObjectLocks {
    path: PathBuf,
    /// Opened at the first lock; shared by every thread (OFD locks of one open file do not
    /// exclude each other, which is what the in-process table is for).
    file: OnceLock<File>,
    held: Mutex<HashSet<ObjectId>>,
    released: Condvar,
}

/// An object's writer lock; released when dropped.
#[derive(Debug)]
pub(crate) struct ObjectGuard<'a> {
    locks: &'a ObjectLocks,
    object: ObjectId,
}

impl Drop for ObjectGuard<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.locks.file.get() {
            // Cannot fail for a range this descriptor holds; if it did, the lock would stay
            // until the store handle is dropped, which blocks writers but loses nothing.
            let _ = set_lock(file, self.object, libc::F_UNLCK, false);
        }
        self.locks.table().remove(&self.object);
        self.locks.released.notify_all();
    }
}

impl ObjectLocks {
    /// The locks of the store rooted at `root` (nothing is opened yet).
    pub fn new(root: &Path) -> Self {
        ObjectLocks {
            path: root.join(LOCKS_DIR).join(LOCK_FILE),
            file: OnceLock::new(),
            held: Mutex::new(HashSet::new()),
            released: Condvar::new(),
        }
    }

    fn table(&self) -> MutexGuard<'_, HashSet<ObjectId>> {
        // The table holds no invariant a panicking holder could break halfway.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for and takes `object`'s writer lock.
    pub fn lock(&self, object: ObjectId) -> Result<ObjectGuard<'_>> {
        let file = self.file()?;
        let mut held = self.table();
        while held.contains(&object) {
            held = self.released.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        held.insert(object);
        drop(held);
        // From here the guard owns the table entry, so an error below releases it.
        let guard = ObjectGuard { locks: self, object };
        set_lock(file, object, libc::F_WRLCK, true).map_err(|e| Error::io(&self.path, e))?;
        Ok(guard)
    }

    /// Whether some writer (in this process or another) holds `object`'s lock right now. A
    /// lock file that cannot be opened answers "no": the caller then treats what it sees as
    /// finished writes, which errs towards an error, never towards wrong bytes.
    pub fn is_locked(&self, object: ObjectId) -> bool {
        if self.table().contains(&object) {
            return true;
        }
        let Ok(file) = self.file() else { return false };
        let mut query = lock_request(object, libc::F_WRLCK);
        match fcntl(file, FcntlArg::F_OFD_GETLK(&mut query)) {
            Ok(_) => query.l_type != libc::F_UNLCK as libc::c_short,
            Err(_) => false,
        }
    }

    fn file(&self) -> Result<&File> {
        if let Some(file) = self.file.get() {
            return Ok(file);
        }
        let opened = open_lock_file(&self.path).map_err(|e| Error::io(&self.path, e))?;
        // Two threads may race to open it; either descriptor serves.
        Ok(self.file.get_or_init(|| opened))
    }
}

/// Opens (creating if needed) the lock file, with the care given to every file of the store
/// (`own_files`); one that is not a regular file is a clear error saying to remove it.
pub(crate) fn open_lock_file(path: &Path) -> io::Result<File> {
    let open = || {
        own_files::open_regular(
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            path,
        )
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            open()
        }
        other => other,
    }
    .map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => io::Error::other(format!("the lock file is {e}; remove it")),
        _ => e,
    })
}

/// The lock file byte standing for `object` (ids are uniformly random, so two objects share a
/// byte with probability 2⁻⁶³; sharing would only serialize them).
fn lock_request(object: ObjectId, kind: libc::c_int) -> libc::flock {
    let mut id = [0u8; 8];
    id.copy_from_slice(&object.0[..8]);
    byte_lock_request((u64::from_le_bytes(id) >> 1) as libc::off_t, kind)
}

/// An OFD lock request of `kind` for one byte of a file.
pub(crate) fn byte_lock_request(byte: libc::off_t, kind: libc::c_int) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: byte,
        l_len: 1,
        l_pid: 0,
    }
}

fn set_lock(file: &File, object: ObjectId, kind: libc::c_int, wait: bool) -> io::Result<()> {
    set_byte_lock(file, &lock_request(object, kind), wait)
}

/// Sets (or, with `F_UNLCK`, releases) an OFD lock, waiting for it if `wait`.
pub(crate) fn set_byte_lock(file: &File, request: &libc::flock, wait: bool) -> io::Result<()> {
    loop {
        let result = match wait {
            true => fcntl(file, FcntlArg::F_OFD_SETLKW(request)),
            false => fcntl(file, FcntlArg::F_OFD_SETLK(request)),
        };
        match result {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn a_second_handle_waits_for_the_first_and_sees_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (ObjectLocks::new(dir.path()), ObjectLocks::new(dir.path()));
        let object = ObjectId::of_key("k");
        let other = ObjectId::of_key("other");
        let guard = a.lock(object).unwrap();
        // Another handle stands for another process: its descriptor's locks conflict.
        assert!(b.is_locked(object));
        assert!(!b.is_locked(other));
        let _other = b.lock(other).unwrap();
        let released = AtomicBool::new(false);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let _g = b.lock(object).unwrap();
                assert!(released.load(Ordering::SeqCst), "the lock was taken while held");
            });
            std::thread::sleep(Duration::from_millis(50));
            released.store(true, Ordering::SeqCst);
            drop(guard);
            waiter.join().unwrap();
        });
        assert!(!a.is_locked(object));
    }

    #[test]
    fn a_lock_file_that_is_not_a_regular_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(LOCKS_DIR).join(LOCK_FILE)).unwrap();
        let err = ObjectLocks::new(dir.path())
            .lock(ObjectId::of_key("k"))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("a directory, not a file of the store; remove it"),
            "{err}"
        );
    }
}
