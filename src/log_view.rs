//! A local location's view of its small-write log segments: the committed pack writes whose
//! shard files live only as records there (FORMAT.md, "The small-write log"). Listing and
//! opening shard files consult it beside the object directories, so a logged pack is read,
//! scrubbed and repaired as any object; its records are read in place from the segment.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::format::log_record;
use crate::format::{ObjectId, ShardHeader, WriteStamp};
use crate::location::ShardFile;

/// Bound on a kept segment's index record (a 4 MiB segment's is far shorter: FORMAT.md).
const MAX_KEPT_RECORD: u64 = 16 << 20;

/// Segments read so far, by id.
#[derive(Debug, Default)]
pub(crate) struct LogView {
    segments: HashMap<u64, Segment>,
}

#[derive(Debug)]
struct Segment {
    file: Arc<File>,
    /// Its records' tag (`log_record::tag`): a reused file's earlier records are not its own.
    tag: u32,
    /// Where the next record to read starts.
    scanned: u64,
    /// Kept: its records were all read from its index and no more come (FORMAT.md, "Kept
    /// segments").
    kept: bool,
    /// Shard records whose write is not committed yet: where their bodies are.
    pending: HashMap<(ObjectId, WriteStamp), (u64, u64)>,
    /// Committed shard records.
    committed: HashMap<ObjectId, Vec<(WriteStamp, u64, u64)>>,
}

/// A shard file held as a record of a segment.
struct LoggedShard {
    file: Arc<File>,
    offset: u64,
    len: u64,
}

impl ShardFile for LoggedShard {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset + buf.len() as u64 > self.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.file.read_exact_at(buf, self.offset + offset)
    }
}

impl LogView {
    /// Reads what was appended to the segments in `dir` since the last look (`open` opens one
    /// for reading), and forgets the segments gone.
    pub fn refresh(&mut self, listed: &[u64], open: impl Fn(u64) -> io::Result<File>) {
        self.segments.retain(|id, _| listed.contains(id));
        for &id in listed {
            if let std::collections::hash_map::Entry::Vacant(vacant) = self.segments.entry(id) {
                let Ok(file) = open(id) else { continue };
                let mut segment = Segment {
                    file: Arc::new(file),
                    tag: log_record::tag(id),
                    scanned: 0,
                    kept: false,
                    pending: HashMap::new(),
                    committed: HashMap::new(),
                };
                segment.read_index(id);
                vacant.insert(segment);
            }
            if let Some(segment) = self.segments.get_mut(&id) {
                if !segment.kept {
                    segment.read_on();
                }
                // Folded: its packs are in packs of their own files now.
                if segment.folded() {
                    segment.pending.clear();
                    segment.committed.clear();
                }
            }
        }
    }

    /// The objects with committed logged writes in `bucket`.
    pub fn objects_in(&self, bucket: u8) -> impl Iterator<Item = ObjectId> + '_ {
        self.segments
            .values()
            .flat_map(|s| s.committed.keys())
            .filter(move |o| o.0[0] == bucket)
            .copied()
    }

    /// Whether any committed logged write is in `bucket`.
    pub fn has_bucket(&self, bucket: u8) -> bool {
        self.objects_in(bucket).next().is_some()
    }

    /// The committed logged writes of `object`.
    pub fn stamps(&self, object: ObjectId) -> Vec<WriteStamp> {
        let mut stamps: Vec<WriteStamp> = self
            .segments
            .values()
            .flat_map(|s| s.committed.get(&object).into_iter().flatten())
            .map(|(stamp, _, _)| *stamp)
            .collect();
        stamps.sort();
        stamps.dedup();
        stamps
    }

    /// The writes held in kept segments (not folded), as their indexes list them.
    pub fn kept_writes(&self) -> Vec<(ObjectId, WriteStamp)> {
        self.segments
            .values()
            .filter(|s| s.kept)
            .flat_map(|s| &s.committed)
            .flat_map(|(object, writes)| writes.iter().map(|(stamp, _, _)| (*object, *stamp)))
            .collect()
    }

    /// The committed logged shard file of (`object`, `stamp`), if there is one.
    pub fn open(&self, object: ObjectId, stamp: WriteStamp) -> Option<Arc<dyn ShardFile>> {
        self.segments.values().find_map(|s| {
            let &(_, offset, len) = s.committed.get(&object)?.iter().find(|(st, _, _)| *st == stamp)?;
            Some(Arc::new(LoggedShard {
                file: Arc::clone(&s.file),
                offset,
                len,
            }) as Arc<dyn ShardFile>)
        })
    }
}

impl Segment {
    fn folded(&self) -> bool {
        let mut start = [0u8; log_record::HEADER_LEN];
        self.file.read_exact_at(&mut start, 0).is_ok() && log_record::is_folded(&start, self.tag)
    }

    /// Takes a kept segment's records from its index (two reads, not one per record); a
    /// segment whose index does not verify is read record by record.
    fn read_index(&mut self, id: u64) {
        let Ok(Some((record, len))) = kept_record(&self.file, self.tag) else {
            return;
        };
        let Some(records) = log_record::kept_index(&record, id, self.tag, len) else {
            return;
        };
        for ((object, stamp), offset, len) in records {
            self.committed
                .entry(object)
                .or_default()
                .push((stamp, offset, len));
        }
        self.kept = true;
    }

    /// Reads the records appended since the last look, one at a time, up to the first header
    /// that does not verify (the end for now).
    fn read_on(&mut self) {
        let mut header = [0u8; log_record::HEADER_LEN];
        loop {
            if self.file.read_exact_at(&mut header, self.scanned).is_err() {
                return;
            }
            let Some((kind, len)) = log_record::header(&header, self.tag) else {
                return;
            };
            let start = self.scanned + log_record::HEADER_LEN as u64;
            let mut body = vec![0u8; len];
            if self.file.read_exact_at(&mut body, start).is_err() {
                return;
            }
            self.scanned = start + len as u64;
            if !log_record::body_verifies(&header, &body) {
                continue;
            }
            if kind == log_record::FOLDED {
                return;
            }
            if kind == log_record::SHARD {
                if let Ok((shard, _)) = ShardHeader::decode_prefix(&body) {
                    let write = (shard.object_id(), shard.stamp);
                    self.pending.insert(write, (start, len as u64));
                }
            } else if let Some(write) = log_record::committed(&body) {
                if let Some((offset, len)) = self.pending.remove(&write) {
                    self.committed
                        .entry(write.0)
                        .or_default()
                        .push((write.1, offset, len));
                }
            }
        }
    }
}

/// Opens a segment for reading: a regular file, never through a link.
pub(crate) fn open_segment(path: &Path) -> io::Result<File> {
    let flags = rustix::fs::OFlags::RDONLY
        | rustix::fs::OFlags::CLOEXEC
        | rustix::fs::OFlags::NOFOLLOW
        | rustix::fs::OFlags::NONBLOCK;
    let file = File::from(rustix::fs::open(path, flags, rustix::fs::Mode::empty())?);
    match file.metadata()?.is_file() {
        true => Ok(file),
        false => Err(io::Error::new(io::ErrorKind::InvalidData, "not a log segment")),
    }
}

/// The record a kept segment tagged `tag` ends with (FORMAT.md, "Kept segments"), not yet
/// verified, and the segment's length: `None` if its last 8 bytes name no record that fits
/// before them, or the segment is folded (a fold mark at its start: its packs are in packs of
/// their own files).
pub(crate) fn kept_record(file: &File, tag: u32) -> io::Result<Option<(Vec<u8>, u64)>> {
    let len = file.metadata()?.len();
    let field = log_record::KEPT_LEN_FIELD as u64;
    let mut start = [0u8; log_record::HEADER_LEN];
    if len < field || file.read_exact_at(&mut start, 0).is_err() || log_record::is_folded(&start, tag) {
        return Ok(None);
    }
    let mut named = [0u8; log_record::KEPT_LEN_FIELD];
    file.read_exact_at(&mut named, len - field)?;
    let record_len = u64::from_le_bytes(named);
    let fits =
        record_len >= log_record::HEADER_LEN as u64 && record_len <= (len - field).min(MAX_KEPT_RECORD);
    if !fits {
        return Ok(None);
    }
    let mut record = vec![0u8; record_len as usize];
    file.read_exact_at(&mut record, len - field - record_len)?;
    Ok(Some((record, len)))
}
