//! The writer's lease on a store's remote locations: two machines must not write one store.
//!
//! Handles on one machine that share a store's directory coordinate through its lock files
//! (`locks/`); a second machine has its own directory, and so its own lock files. So a handle
//! that is about to write a store with remote locations first holds a *lease*: an object
//! `SHARDGUARD-LEASE` on each remote location, created with a conditional PUT
//! (`If-None-Match: *`) and renewed with another (`If-Match` its ETag), naming the holder (a
//! random id kept in the store directory's `locks/lease-holder`, so every process of one machine
//! sharing it is one holder), its host, process and directory, and when it expires. It must be
//! held on more than half of the remote locations, so two holders can never both hold it. A
//! thread renews it every third of its duration while the handle lives; the last handle of a
//! process releases it. Another holder's lease that has expired (by this machine's clock, plus a
//! quarter of the duration for clock skew) is taken over, again by a conditional PUT: of two
//! machines racing for it, one wins.
//!
//! A handle that finds its lease could not be renewed in time refuses to write (it may have been
//! taken over); it takes it again at its next write if it can.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::location::Location;

/// The file under the store's `locks/` holding this machine's holder id.
const HOLDER_FILE: &str = "lease-holder";
/// Default lease duration.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(120);

/// What a lease object says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LeaseText {
    holder: u64,
    host: String,
    pid: u32,
    root: String,
    /// Unix time in milliseconds, by the holder's clock.
    expires_ms: u64,
}

impl LeaseText {
    fn encode(&self) -> Vec<u8> {
        format!(
            "shardguard lease\nholder {:016x}\nhost {}\npid {}\nroot {}\nexpires {}\n",
            self.holder, self.host, self.pid, self.root, self.expires_ms
        )
        .into_bytes()
    }

    /// `None` for anything else: a damaged lease is treated as expired.
    fn decode(bytes: &[u8]) -> Option<LeaseText> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        (lines.next()? == "shardguard lease").then_some(())?;
        let mut field = |name: &str| -> Option<String> {
            let line = lines.next()?;
            line.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned)
        };
        Some(LeaseText {
            holder: u64::from_str_radix(&field("holder")?, 16).ok()?,
            host: field("host")?,
            pid: field("pid")?.parse().ok()?,
            root: field("root")?,
            expires_ms: field("expires")?.parse().ok()?,
        })
    }

    fn describe(&self) -> String {
        format!(
            "process {} on {} (store directory {})",
            self.pid, self.host, self.root
        )
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This handle's lease: which remote locations it is held on, and the renewing thread.
pub(crate) struct Lease {
    shared: Arc<Shared>,
    renewer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("duration", &self.shared.duration)
            .finish()
    }
}

struct Shared {
    /// The remote locations, by slot (`None`: a local one).
    remote: Vec<Option<Arc<dyn Location>>>,
    root: PathBuf,
    duration: Duration,
    state: Mutex<State>,
    /// Wakes the renewer early: to stop.
    stop: Condvar,
}

#[derive(Default)]
struct State {
    /// This machine's holder id, once read or made.
    holder: Option<u64>,
    /// The ETag of this holder's lease object, per slot where it holds it.
    held: Vec<Option<String>>,
    /// Until when (by this machine's monotonic clock) the lease is certainly this holder's.
    valid_until: Option<Instant>,
    stopping: bool,
}

impl Lease {
    /// A lease over `locations`' remote ones (none: nothing to lease, every write may go on).
    pub fn new(root: &Path, locations: Vec<Option<Arc<dyn Location>>>, duration: Duration) -> Self {
        let n = locations.len();
        Lease {
            shared: Arc::new(Shared {
                remote: locations,
                root: root.to_path_buf(),
                duration,
                state: Mutex::new(State {
                    held: vec![None; n],
                    ..State::default()
                }),
                stop: Condvar::new(),
            }),
            renewer: Mutex::new(None),
        }
    }

    /// Ok if this handle may write: no remote location, or the lease is held (taken now if it
    /// is not).
    ///
    /// # Errors
    /// [`Error::Leased`] when another machine holds it, [`Error::Io`] when too few remote
    /// locations answer to hold it.
    pub fn check(&self) -> Result<()> {
        if self.shared.remote.iter().all(Option::is_none) {
            return Ok(());
        }
        let mut state = self.shared.state();
        if state.valid_until.is_some_and(|until| Instant::now() < until) {
            return Ok(());
        }
        self.shared.take(&mut state)?;
        drop(state);
        self.start_renewer();
        Ok(())
    }

    fn start_renewer(&self) {
        let mut renewer = self.renewer.lock().unwrap_or_else(|e| e.into_inner());
        if renewer.as_ref().is_some_and(|r| !r.is_finished()) {
            return;
        }
        let shared = Arc::clone(&self.shared);
        *renewer = std::thread::Builder::new()
            .name("shardguard-lease".into())
            .spawn(move || shared.renew_until_stopped())
            .ok();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shared.state().stopping = true;
        self.shared.stop.notify_all();
        if let Some(renewer) = self.renewer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = renewer.join();
        }
        self.shared.release();
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remote_count(&self) -> usize {
        self.remote.iter().flatten().count()
    }

    /// This machine's holder id: read from `locks/lease-holder`, or made there.
    fn holder(&self, state: &mut State) -> Result<u64> {
        if let Some(holder) = state.holder {
            return Ok(holder);
        }
        let path = self.root.join(crate::lock::LOCKS_DIR).join(HOLDER_FILE);
        let io = |e| Error::io(&path, e);
        let read = |path: &Path| -> io::Result<Option<u64>> {
            match crate::own_files::read_bounded(path, 64) {
                Ok(bytes) => Ok(std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|t| u64::from_str_radix(t.trim(), 16).ok())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        };
        let holder = match read(&path).map_err(io)? {
            Some(holder) => holder,
            None => {
                let made = crate::ids::random_u64();
                std::fs::create_dir_all(path.parent().unwrap_or(&self.root)).map_err(io)?;
                // Another process may make it at the same moment: whichever lands is the id.
                crate::location::write_atomically(
                    path.parent().unwrap_or(&self.root),
                    HOLDER_FILE,
                    format!("{made:016x}\n").as_bytes(),
                    crate::location::Durability::Fsync,
                )
                .map_err(io)?;
                read(&path).map_err(io)?.unwrap_or(made)
            }
        };
        state.holder = Some(holder);
        Ok(holder)
    }

    /// Takes (or renews) the lease on every remote location that answers; Ok once more than
    /// half hold it.
    fn take(&self, state: &mut State) -> Result<()> {
        let holder = self.holder(state)?;
        let started = Instant::now();
        let ours = LeaseText {
            holder,
            host: hostname(),
            pid: std::process::id(),
            // One line each: a directory name with a line break cannot break the format.
            root: self.root.display().to_string().replace(['\n', '\r'], " "),
            expires_ms: now_ms() + self.duration.as_millis() as u64,
        };
        let mut held = 0;
        let mut other: Option<(PathBuf, LeaseText)> = None;
        let mut last_error = None;
        for (slot, location) in self.remote.iter().enumerate() {
            let Some(location) = location else { continue };
            match self.take_one(&**location, &ours) {
                Ok(Taken::Ours(e_tag)) => {
                    state.held[slot] = Some(e_tag);
                    held += 1;
                }
                Ok(Taken::Theirs(lease)) => {
                    state.held[slot] = None;
                    other = Some((location.path().to_path_buf(), lease));
                }
                Err(e) => {
                    state.held[slot] = None;
                    last_error = Some((location.path().to_path_buf(), e));
                }
            }
        }
        if 2 * held > self.remote_count() {
            // Valid for its duration from when the first request left, less a margin for the
            // time a write then takes to land.
            state.valid_until = Some(started + self.duration * 3 / 4);
            return Ok(());
        }
        state.valid_until = None;
        if let Some((location, lease)) = other {
            let left_ms = lease.expires_ms.saturating_sub(now_ms());
            return Err(Error::Leased {
                location,
                holder: lease.describe(),
                expires_in: Duration::from_millis(left_ms) + self.skew(),
            });
        }
        let (location, source) =
            last_error.unwrap_or_else(|| (self.root.clone(), io::Error::other("no remote location")));
        Err(Error::Io {
            path: location,
            source: io::Error::new(
                source.kind(),
                format!(
                    "the writer's lease is held on {held} of {} remote locations, more than half needed: {source}",
                    self.remote_count()
                ),
            ),
        })
    }

    /// The margin added to another holder's expiry for clock skew between machines.
    fn skew(&self) -> Duration {
        self.duration / 4
    }

    fn take_one(&self, location: &dyn Location, ours: &LeaseText) -> io::Result<Taken> {
        let found = location.read_lease()?;
        let expected = match &found {
            None => None,
            Some((bytes, e_tag)) => match LeaseText::decode(bytes) {
                Some(lease) if lease.holder == ours.holder => Some(e_tag.clone()),
                // Another holder's, still running by this clock (with the skew margin): theirs.
                Some(lease) if now_ms() < lease.expires_ms + self.skew().as_millis() as u64 => {
                    return Ok(Taken::Theirs(lease))
                }
                // Expired, or not a lease: taken over, if nobody else took it since.
                _ => Some(e_tag.clone()),
            },
        };
        match location.write_lease(&ours.encode(), expected.as_deref()) {
            Ok(e_tag) => Ok(Taken::Ours(e_tag)),
            // Someone wrote it between the read and the write: look again next time.
            Err(e) if matches!(e.kind(), io::ErrorKind::AlreadyExists | io::ErrorKind::NotFound) => {
                match location
                    .read_lease()?
                    .and_then(|(bytes, _)| LeaseText::decode(&bytes))
                {
                    Some(lease) if lease.holder != ours.holder => Ok(Taken::Theirs(lease)),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn renew_until_stopped(&self) {
        let mut state = self.state();
        loop {
            let (next, _) = self
                .stop
                .wait_timeout(state, self.duration / 3)
                .unwrap_or_else(|e| e.into_inner());
            state = next;
            if state.stopping {
                return;
            }
            // Lost (taken over, or too few locations answered): the next write takes it again
            // if it can.
            if self.take(&mut state).is_err() {
                return;
            }
        }
    }

    /// Removes this holder's lease objects (another holder's, if one took over, stay).
    fn release(&self) {
        let mut state = self.state();
        let Some(holder) = state.holder else { return };
        for (slot, location) in self.remote.iter().enumerate() {
            let (Some(location), Some(_)) = (location, state.held[slot].take()) else {
                continue;
            };
            let ours = location
                .read_lease()
                .ok()
                .flatten()
                .and_then(|(bytes, _)| LeaseText::decode(&bytes))
                .is_some_and(|lease| lease.holder == holder);
            if ours {
                let _ = location.remove_lease();
            }
        }
        state.valid_until = None;
    }
}

enum Taken {
    /// Held: the lease object's new ETag.
    Ours(String),
    /// Another holder's, still running.
    Theirs(LeaseText),
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty() && h.len() < 256 && !h.contains('\n'))
        .unwrap_or_else(|| "unknown host".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_text_round_trips_and_anything_else_reads_as_none() {
        let lease = LeaseText {
            holder: 0xabc,
            host: "box-1".into(),
            pid: 42,
            root: "/srv/sg".into(),
            expires_ms: 1_700_000_000_000,
        };
        assert_eq!(LeaseText::decode(&lease.encode()), Some(lease.clone()));
        assert!(lease.describe().contains("box-1"));
        for bad in [
            &b""[..],
            b"shardguard lease\nholder zz\n",
            b"\xff\xfe",
            b"other\n",
        ] {
            assert_eq!(LeaseText::decode(bad), None);
        }
    }
}
