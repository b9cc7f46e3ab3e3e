//! get: a streaming reader that verifies every chunk, retransmits failures, and rebuilds what
//! stays missing from parity. Memory: one stripe, whatever the object's size.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use rayon::prelude::*;

use crate::arq::{self, ChunkFault, SystemClock};
use crate::checksum::{ChunkId, ObjectChecksum};
use crate::error::{Error, Result};
use crate::format::{ObjectId, StripeShape, CHUNK_CRC_LEN};
use crate::key;
use crate::location::ShardFile;

use super::hedge::{self, InFlight};
use super::packs::{Located, PackFiles};
use super::rebuild::{rebuild_stripe, StripeEvidence};
use super::resolve::Resolved;
use super::Store;

/// What a read had to do to return correct bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadStats {
    /// Chunks read and verified on some try.
    pub chunks_verified: u64,
    /// Extra tries (retransmissions) made after a failed read or checksum.
    pub retransmissions: u64,
    /// Chunks that failed at first and verified on a retransmission (transient faults).
    pub cured_by_retransmission: u64,
    /// Chunks given up as erasures after the retry policy (persistent faults, missing files).
    pub erasures: u64,
    /// Stripes rebuilt from parity.
    pub stripes_reconstructed: u64,
    /// Spare chunks read because a remote location was slow to answer (hedged reads).
    pub hedged_reads: u64,
}

impl ReadStats {
    /// Adds another read's counts to these.
    pub fn add(&mut self, other: &ReadStats) {
        self.chunks_verified += other.chunks_verified;
        self.retransmissions += other.retransmissions;
        self.cured_by_retransmission += other.cured_by_retransmission;
        self.erasures += other.erasures;
        self.stripes_reconstructed += other.stripes_reconstructed;
        self.hedged_reads += other.hedged_reads;
    }
}

/// A verified, streaming read of one object's current version (an `io::Read`).
///
/// Every chunk is checked against its CRC32C before a byte of it is returned, and the whole
/// object against its checksum at the end: a mismatch there is an error from the final `read`.
pub struct ObjectReader {
    store: Store,
    key: String,
    object: ObjectId,
    resolved: Resolved,
    stripes: u64,
    next_stripe: u64,
    /// One buffer per shard: chunk bytes followed by their CRC.
    buffers: Vec<Vec<u8>>,
    /// Each buffer's length.
    buffer_len: usize,
    /// The stripe being served and how far into its data.
    current: Option<StripeShape>,
    served: usize,
    /// Built from each data chunk's CRC as stripes are fetched, checked at the end.
    checksum: ObjectChecksum,
    stats: ReadStats,
    /// Shards whose chunk read failed with an I/O error in an earlier stripe: the next stripes
    /// read parity in their place in the first round, instead of trying them again first (a
    /// remote location that went down would cost every stripe a second round trip).
    avoid: Vec<bool>,
    /// Chunk reads on threads of their own, for an object on remote locations (read ahead,
    /// hedged). In a mutex only to keep the reader `Sync` (it is reached through `&mut self`).
    in_flight: Option<std::sync::Mutex<InFlight>>,
    /// The object bytes `[start, end)` this reader hands out: the whole object, or a range.
    start: u64,
    end: u64,
    /// Set when the object read is a pack and the bytes handed out are one packed object.
    packed: Option<PackedView>,
    /// A packed object's bytes (the range wanted), already verified against its entry's CRC:
    /// read straight from the one data file holding them, no chunk read.
    direct: Option<Vec<u8>>,
}

/// One object of a pack, as its reader sees it.
pub(crate) struct PackedView {
    /// The packed object's length and version (the pack has its own).
    pub len: u64,
    pub version: u64,
    /// Its entry's CRC32C, checked when the whole object is read, and the CRC of what was
    /// handed out so far.
    pub crc: u32,
    pub whole: bool,
    pub running: u32,
}

impl Store {
    /// Opens `key` for a verified streaming read.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such object, [`Error::Unrecoverable`],
    /// [`Error::NoQuorum`] or [`Error::ObjectChecksum`] when its bytes cannot be given back exactly
    /// (never wrong bytes), [`Error::TooFewLocations`] when too few locations can be listed to be
    /// sure of the newest version, [`Error::InvalidKey`]. Reads through the reader fail as
    /// `io::Error`s wrapping these.
    pub fn get(&self, key: &str) -> Result<ObjectReader> {
        self.get_range(key, 0..u64::MAX)
    }

    /// Opens bytes `range` of `key` for a verified read: only the stripes holding them are
    /// read, each chunk checked against its CRC32C and rebuilt from parity when it fails, as
    /// for [`Store::get`]. The whole-object checksum is checked only when the range covers the
    /// whole object. A range past the end is cut at the end (one starting past it is empty).
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such object, [`Error::Unrecoverable`],
    /// [`Error::NoQuorum`] or [`Error::ObjectChecksum`] when its bytes cannot be given back exactly
    /// (never wrong bytes), [`Error::TooFewLocations`] when too few locations can be listed to be
    /// sure of the newest version, [`Error::InvalidKey`].
    pub fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<ObjectReader> {
        key::validate(key)?;
        self.get_range_with(key, range, PackFiles::Kept)
    }

    /// [`Store::get_range`], a pack's files as `files` says.
    fn get_range_with(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        files: PackFiles,
    ) -> Result<ObjectReader> {
        let (located, kept) = self.locate_with(key, false, files)?;
        Ok(match located {
            Located::Own(resolved) => self.reader_of(key, resolved, range, None),
            Located::Packed { pack, entry } => {
                let end = range.end.min(entry.len);
                let start = range.start.min(end);
                let view = PackedView {
                    len: entry.len,
                    version: entry.stamp.version,
                    crc: entry.crc,
                    whole: start == 0 && end == entry.len,
                    running: 0,
                };
                let direct = self.entry_bytes(&pack, &entry).map(|mut bytes| {
                    bytes.truncate(end as usize);
                    bytes.drain(..start as usize);
                    bytes
                });
                if kept && direct.is_none() {
                    // Kept files that do not give the entry's bytes (rot since they were opened,
                    // a file repaired since, or an entry across two chunks): read it through
                    // files opened now, as a get without kept files would. Rotten ones are
                    // not kept any longer.
                    if self.entry_place(&pack, &entry).is_some() {
                        let id = pack.header.object_id();
                        self.packs
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .forget_opened(id);
                    }
                    return self.get_range_with(key, range, PackFiles::Fresh);
                }
                // Rotten, missing or unreadable: read through the chunks (verified, retried,
                // rebuilt from parity).
                let range = entry.offset + start..entry.offset + end;
                let mut reader = self.reader_of(key, pack, range, Some(view));
                reader.direct = direct;
                reader
            }
        })
    }

    /// A reader of bytes `range` of a resolved object (a pack, with `packed`), named `key` in
    /// errors.
    pub(crate) fn reader_of(
        &self,
        key: &str,
        resolved: Resolved,
        range: std::ops::Range<u64>,
        packed: Option<PackedView>,
    ) -> ObjectReader {
        let g = self.file.geometry;
        let len = resolved.header.object_len;
        let stripes = g.stripe_count(len);
        let buffer_len = g.max_chunk_len(len) + CHUNK_CRC_LEN as usize;
        let end = range.end.min(len);
        let start = range.start.min(end);
        ObjectReader {
            store: self.clone(),
            key: key.to_owned(),
            object: resolved.header.object_id(),
            stripes,
            next_stripe: start / g.stripe_capacity(),
            start,
            end,
            // Allocated at the first stripe fetched (never, for a packed object read straight).
            buffers: Vec::new(),
            buffer_len,
            current: None,
            served: 0,
            checksum: ObjectChecksum::default(),
            stats: ReadStats::default(),
            avoid: Vec::new(),
            in_flight: None,
            resolved,
            packed,
            direct: None,
        }
    }

    /// A packed object's bytes, read from the data file of its pack that holds them and
    /// verified against its entry's CRC32C (the file's header, verified when it was resolved,
    /// says it is that pack's shard); `None` if they do not verify or cannot be read.
    fn entry_bytes(&self, pack: &Resolved, entry: &crate::format::PackEntry) -> Option<Vec<u8>> {
        let (shard, within) = self.entry_place(pack, entry)?;
        let file = pack.shards.get(shard)?.as_deref()?;
        let mut bytes = vec![0u8; usize::try_from(entry.len).ok()?];
        file.read_exact_at(&mut bytes, pack.header.encoded_len() as u64 + within)
            .ok()?;
        (crc32c::crc32c(&bytes) == entry.crc).then_some(bytes)
    }

    /// Where a packed entry's bytes are, if all in one data chunk: the shard and the offset
    /// in its chunk.
    fn entry_place(&self, pack: &Resolved, entry: &crate::format::PackEntry) -> Option<(usize, u64)> {
        let chunk_len = self.file.geometry.stripe(pack.header.object_len, 0).chunk_len as u64;
        let shard = entry.offset.checked_div(chunk_len)?;
        let within = entry.offset % chunk_len;
        let fits = within.checked_add(entry.len)? <= chunk_len && shard < u64::from(self.file.geometry.k);
        fits.then_some((usize::try_from(shard).ok()?, within))
    }

    /// Reads the object into the file at `path`, verified, atomically: the bytes go to a
    /// temporary file beside it, which is fsynced and renamed into place only once every byte
    /// verified. A failed read leaves no partial file. Returns the bytes written.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such object, [`Error::Unrecoverable`],
    /// [`Error::NoQuorum`] or [`Error::ObjectChecksum`] when its bytes cannot be given back exactly
    /// (never wrong bytes), [`Error::TooFewLocations`] when too few locations can be listed to be
    /// sure of the newest version, [`Error::InvalidKey`]. [`Error::Io`] when the file cannot be
    /// written (nothing is left at `path`).
    pub fn get_to_path(&self, key: &str, path: &Path) -> Result<u64> {
        let mut reader = self.get(key)?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{name}.{:016x}.shardguard-tmp",
            crate::ids::random_u64()
        ));
        let mut write = || -> Result<u64> {
            let file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| Error::io(path, e))?;
            let mut out = io::BufWriter::with_capacity(1 << 20, file);
            let len = reader.copy_to(&mut out)?;
            let file = out.into_inner().map_err(|e| Error::io(path, e.into_error()))?;
            file.sync_all().map_err(|e| Error::io(path, e))?;
            fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
            Ok(len)
        };
        write().inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }

    /// Reads the whole object into memory, verified.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such object, [`Error::Unrecoverable`],
    /// [`Error::NoQuorum`] or [`Error::ObjectChecksum`] when its bytes cannot be given back exactly
    /// (never wrong bytes), [`Error::TooFewLocations`] when too few locations can be listed to be
    /// sure of the newest version, [`Error::InvalidKey`].
    pub fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        let mut reader = self.get(key)?;
        let mut out = Vec::with_capacity(reader.len().min(1 << 30) as usize);
        reader.copy_to(&mut out)?;
        Ok(out)
    }
}

impl ObjectReader {
    /// The object's length in bytes.
    pub fn len(&self) -> u64 {
        self.packed.as_ref().map_or(self.object_len(), |p| p.len)
    }

    /// The length of the object whose shard files are read (a pack, for a packed object).
    fn object_len(&self) -> u64 {
        self.resolved.header.object_len
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The version being read.
    pub fn version(&self) -> u64 {
        self.packed
            .as_ref()
            .map_or(self.resolved.header.stamp.version, |p| p.version)
    }

    /// Bytes of buffer the reader holds: one stripe, whatever the object's size.
    pub fn buffered_bytes(&self) -> usize {
        self.buffers.iter().map(Vec::capacity).sum()
    }

    /// What the read has had to do so far.
    pub fn stats(&self) -> ReadStats {
        self.stats
    }

    /// Writes the rest of the object to `out`, with typed errors (unlike `io::copy`).
    ///
    /// # Errors
    /// The read errors of [`Store::get`] for the chunks still to read, and [`Error::Output`] when
    /// `out` fails.
    pub fn copy_to(&mut self, out: &mut impl Write) -> Result<u64> {
        let mut written = 0;
        loop {
            let data = self.available()?;
            if data.is_empty() {
                return Ok(written);
            }
            let len = data.len();
            out.write_all(data).map_err(|source| Error::Output { source })?;
            self.consume(len);
            written += len as u64;
        }
    }

    /// The verified bytes ready to hand out: the rest of the current chunk, fetching the next
    /// stripe when needed. Empty at the end of the object.
    fn available(&mut self) -> Result<&[u8]> {
        if self.direct.is_some() {
            let served = self.served;
            return Ok(self
                .direct
                .as_deref()
                .map_or(&[][..], |b| &b[served.min(b.len())..]));
        }
        loop {
            if let Some(shape) = self.current {
                // What the range still wants of this stripe.
                let wanted = (self.end.saturating_sub(shape.data_start) as usize).min(shape.data_len);
                if self.served < wanted {
                    let chunk = self.served / shape.chunk_len;
                    let start = self.served % shape.chunk_len;
                    let end = shape.chunk_len.min(wanted - chunk * shape.chunk_len);
                    return Ok(&self.buffers[chunk][start..end]);
                }
            }
            let past_range = self
                .current
                .is_some_and(|s| s.data_start + s.data_len as u64 >= self.end);
            if self.is_range() && (past_range || self.start == self.end) {
                if self.stripes != u64::MAX {
                    self.check_packed()?;
                }
                self.current = None;
                self.stripes = u64::MAX;
                return Ok(&[]);
            }
            if self.next_stripe == self.stripes {
                if self.current.take().is_some() || self.stripes == 0 {
                    self.finish()?;
                    self.stripes = u64::MAX; // finished; later calls return empty
                }
                return Ok(&[]);
            }
            if self.stripes == u64::MAX {
                return Ok(&[]);
            }
            let shape = self
                .store
                .file
                .geometry
                .stripe(self.object_len(), self.next_stripe);
            self.fetch_stripe(shape)?;
            self.next_stripe += 1;
            self.current = Some(shape);
            // A range may start inside its first stripe.
            self.served = self.start.saturating_sub(shape.data_start) as usize;
        }
    }

    /// Whether only part of the object is read (then its whole-object checksum cannot be).
    fn is_range(&self) -> bool {
        self.start > 0 || self.end < self.object_len()
    }

    fn consume(&mut self, n: usize) {
        if self.direct.is_some() {
            self.served += n;
            return;
        }
        if let (Some(view), Some(shape)) = (self.packed.as_mut(), self.current) {
            // What `available` handed out: within one chunk of the current stripe.
            let chunk = self.served / shape.chunk_len;
            let start = self.served % shape.chunk_len;
            view.running = crc32c::crc32c_append(view.running, &self.buffers[chunk][start..start + n]);
        }
        self.served += n;
    }

    /// A whole packed object read: its bytes against its entry's CRC32C (each chunk was
    /// verified already; this catches a rebuild or a pack written wrong under valid CRCs).
    fn check_packed(&self) -> Result<()> {
        match &self.packed {
            Some(view) if view.whole && view.running != view.crc => Err(Error::ObjectChecksum {
                key: self.key.clone(),
                expected: view.crc,
                actual: view.running,
            }),
            _ => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<()> {
        let expected = self.resolved.header.object_crc;
        let actual = self.checksum.value();
        if actual != expected {
            return Err(Error::ObjectChecksum {
                key: self.key.clone(),
                expected,
                actual,
            });
        }
        Ok(())
    }

    /// Reads the stripe's data chunks in parallel, retransmitting failures; if any stay bad,
    /// reads parity and rebuilds them. Parity for shards already known to be missing (no file)
    /// is read in the first round, so a lost location costs no extra round trip. A rebuild that
    /// a rotten chunk's stored checksum does not confirm is weighed again with every parity
    /// chunk (see `rebuild`), so a parity chunk written wrong cannot slip into the output.
    fn fetch_stripe(&mut self, shape: StripeShape) -> Result<()> {
        if self.buffers.is_empty() {
            // Each its own zeroed allocation (no copies of a first one).
            let len = self.buffer_len;
            self.buffers = (0..self.store.file.geometry.shards())
                .map(|_| vec![0u8; len])
                .collect();
        }
        let k = usize::from(self.store.file.geometry.k);
        let n = self.buffers.len();
        let has_file: Vec<bool> = self.resolved.shards.iter().map(Option::is_some).collect();
        self.avoid.resize(n, false);
        let mut present = vec![false; n];
        let mut stored = vec![None; n];
        let mut tried = vec![false; n];
        let mut data_crcs = vec![0u32; k];
        let first_choice = |s: usize| has_file[s] && !self.avoid[s];
        let known_missing = (0..k).filter(|&s| !first_choice(s)).count();
        let mut round: Vec<usize> = (0..k).filter(|&s| first_choice(s)).collect();
        round.extend((k..n).filter(|&s| first_choice(s)).take(known_missing));
        let ctx = ChunkReader {
            store: &self.store,
            object: self.object,
            resolved: &self.resolved,
            shape,
        };
        let mut spares_read = false;
        // From remote locations, the first round runs on threads of its own: read ahead and
        // hedged (the `hedge` module).
        // (Every object has a shard on every location: one remote location is enough.)
        if self.in_flight.is_none() && self.store.file.remote {
            self.in_flight = Some(std::sync::Mutex::new(InFlight::new()));
        }
        let mut first = self.in_flight.is_some();
        let refuted = loop {
            let outcomes: Vec<(usize, ChunkOutcome)> = if let Some(in_flight) = self
                .in_flight
                .as_mut()
                .filter(|_| std::mem::take(&mut first))
                .map(|m| m.get_mut().unwrap_or_else(|e| e.into_inner()))
            {
                // The next stripes' first rounds, as far as the window and the range go.
                let wanted = self
                    .end
                    .div_ceil(self.store.file.geometry.stripe_capacity())
                    .min(self.stripes);
                let ahead_to = wanted.min(shape.index + 1 + hedge::window(k, shape.chunk_len));
                in_flight.read_ahead(&ctx, &round, ahead_to);
                let spares: Vec<usize> = (k..n)
                    .filter(|&s| !round.contains(&s) && has_file[s] && !self.avoid[s])
                    .collect();
                let threshold = self.store.hedge_threshold(self.object, &round);
                let hedged = in_flight.first_round(&ctx, &round, &spares, k, threshold);
                for &shard in hedged.spares_read.iter().chain(&hedged.abandoned) {
                    tried[shard] = true;
                }
                // Slow now: the object's next stripes read a spare in its place at once.
                for &shard in &hedged.abandoned {
                    self.avoid[shard] = true;
                }
                self.stats.hedged_reads += hedged.spares_read.len() as u64;
                hedged
                    .answers
                    .into_iter()
                    .map(|answer| {
                        let len = answer.bytes.len();
                        self.buffers[answer.shard][..len].copy_from_slice(&answer.bytes);
                        (answer.shard, answer.outcome)
                    })
                    .collect()
            } else {
                let mut bufs: Vec<(usize, &mut Vec<u8>)> = self
                    .buffers
                    .iter_mut()
                    .enumerate()
                    .filter(|(s, _)| round.contains(s))
                    .collect();
                bufs.par_iter_mut()
                    .map(|(shard, buf)| (*shard, ctx.read(*shard, buf)))
                    .collect()
            };
            for (shard, outcome) in outcomes {
                self.stats.note(&outcome);
                self.avoid[shard] = outcome.io_failed;
                tried[shard] = true;
                present[shard] = outcome.data_crc.is_some();
                stored[shard] = outcome.stored;
                if shard < k {
                    data_crcs[shard] = outcome.data_crc.unwrap_or(0);
                }
            }
            if present[..k].iter().all(|&p| p) {
                data_crcs.iter().for_each(|&crc| self.checksum.push(crc));
                self.stats.erasures += (0..k).filter(|&s| !has_file[s]).count() as u64;
                return Ok(());
            }
            let deficit = k.saturating_sub(present.iter().filter(|&&p| p).count());
            // Parity first, then data shards the first round avoided (they failed or lagged on
            // an earlier stripe, and may answer now): a stripe with no parity to spare needs
            // them (seen: a remote get with two of six servers gone reported a recoverable
            // stripe unrecoverable).
            round = (k..n)
                .chain(0..k)
                .filter(|&s| !tried[s] && has_file[s])
                .take(deficit)
                .collect();
            if deficit > 0 && !round.is_empty() {
                continue;
            }
            let bind = |shard: usize, crc: u32| {
                ChunkId {
                    object: self.object,
                    stamp: self.resolved.header.stamp,
                    shard: shard as u8,
                    stripe: shape.index,
                }
                .bind(crc)
            };
            let evidence = StripeEvidence {
                present: &present,
                stored: &stored,
                bind: &bind,
            };
            let mut chunks: Vec<&mut [u8]> = self
                .buffers
                .iter_mut()
                .map(|b| &mut b[..shape.chunk_len])
                .collect();
            let rebuilt = rebuild_stripe(&self.store.codec, &mut chunks, &evidence, None, true, true)
                .map_err(|e| Error::Unrecoverable {
                    key: self.key.clone(),
                    stripe: shape.index,
                    available: e.available,
                    needed: e.needed,
                })?;
            // A rebuild the rotten chunk's own stored checksum disowns: read the spare parity
            // and weigh every set of survivors (once).
            round = (k..n).filter(|&s| !tried[s] && has_file[s]).collect();
            if !rebuilt.unconfirmed.is_empty() && !spares_read && !round.is_empty() {
                spares_read = true;
                continue;
            }
            break rebuilt.refuted;
        };
        // A survivor the rebuild refuted now holds rebuilt bytes too.
        refuted.iter().for_each(|&s| present[s] = false);
        self.stats.erasures += (0..k).filter(|&s| !has_file[s]).count() as u64;
        self.stats.stripes_reconstructed += 1;
        for (shard, &crc) in data_crcs.iter().enumerate() {
            // Rebuilt chunks are checksummed afresh: the object checksum then checks the rebuild.
            let crc = if present[shard] {
                crc
            } else {
                crc32c::crc32c(&self.buffers[shard][..shape.chunk_len])
            };
            self.checksum.push(crc);
        }
        Ok(())
    }
}

/// Reads chunks of one stripe of a resolved object (shared by get and scrub).
#[derive(Clone, Copy)]
pub(crate) struct ChunkReader<'r> {
    pub store: &'r Store,
    pub object: ObjectId,
    pub resolved: &'r Resolved,
    pub shape: StripeShape,
}

/// What reading one chunk came to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkOutcome {
    /// The chunk bytes' CRC32C if the chunk verified.
    pub data_crc: Option<u32>,
    /// Tries made (0 when the shard has no file).
    pub attempts: u32,
    /// For a chunk read whole whose bytes did not verify: the checksum stored beside them
    /// (unless it rotted too, the checksum of the right bytes: a rebuild can be checked by it).
    pub stored: Option<u32>,
    /// The read ended in an I/O error, not in bytes that failed their checksum: the location
    /// (a disk failing, an endpoint down) is worth avoiding for the object's next stripes.
    pub io_failed: bool,
}

impl ChunkReader<'_> {
    /// Reads and verifies one chunk (into `buf`, followed by its CRC) under the retry policy.
    pub fn read(&self, shard: usize, buf: &mut [u8]) -> ChunkOutcome {
        let Some(file) = &self.resolved.shards[shard] else {
            return ChunkOutcome {
                data_crc: None,
                attempts: 0,
                stored: None,
                io_failed: false,
            };
        };
        read_verified(&**file, self.placed(shard), &self.store.retry, buf)
    }

    /// Where shard `shard`'s chunk of this stripe is, and what it must verify as.
    pub fn placed(&self, shard: usize) -> PlacedChunk {
        PlacedChunk {
            offset: self.resolved.header_len + self.shape.offset_in_shard,
            len: self.shape.chunk_len,
            id: ChunkId {
                object: self.object,
                stamp: self.resolved.header.stamp,
                shard: shard as u8,
                stripe: self.shape.index,
            },
        }
    }
}

/// One chunk in its shard file: at `offset`, `len` bytes followed by their CRC, bound to `id`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlacedChunk {
    pub offset: u64,
    pub len: usize,
    pub id: ChunkId,
}

/// Reads and verifies the chunk `at` of `file` into `buf` (its bytes, then its CRC) under
/// `policy`.
pub(crate) fn read_verified(
    file: &dyn ShardFile,
    at: PlacedChunk,
    policy: &crate::arq::RetryPolicy,
    buf: &mut [u8],
) -> ChunkOutcome {
    let PlacedChunk { offset, len, id } = at;
    let clock = SystemClock::start();
    let retried = arq::retry(policy, &clock, || {
        read_chunk(file, &mut buf[..len + CHUNK_CRC_LEN as usize], offset)?;
        let stored = u32::from_le_bytes(buf[len..len + 4].try_into().expect("4 bytes"));
        let data_crc = crc32c::crc32c(&buf[..len]);
        if id.bind(data_crc) != stored {
            return Err(ChunkFault::Corrupt);
        }
        Ok(data_crc)
    });
    let stored = match &retried.result {
        Err(ChunkFault::Corrupt) => Some(u32::from_le_bytes(buf[len..len + 4].try_into().expect("4 bytes"))),
        _ => None,
    };
    ChunkOutcome {
        io_failed: matches!(retried.result, Err(ChunkFault::Io(_))),
        data_crc: retried.result.ok(),
        attempts: retried.attempts,
        stored,
    }
}

fn read_chunk(file: &dyn ShardFile, buf: &mut [u8], offset: u64) -> Result<(), ChunkFault> {
    file.read_exact_at(buf, offset).map_err(ChunkFault::Io)
}

impl ReadStats {
    pub(crate) fn note(&mut self, outcome: &ChunkOutcome) {
        let retries = u64::from(outcome.attempts.saturating_sub(1));
        self.retransmissions += retries;
        if outcome.data_crc.is_some() {
            self.chunks_verified += 1;
            self.cured_by_retransmission += u64::from(retries > 0);
        } else {
            self.erasures += 1;
        }
    }
}

impl Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let data = self.available().map_err(io::Error::other)?;
        let n = data.len().min(out.len());
        out[..n].copy_from_slice(&data[..n]);
        self.consume(n);
        Ok(n)
    }
}
