//! A shard file being written to a remote location: uploaded while it is written.
//!
//! A shard of at most two parts ([`PART_LEN`] bytes each) is held in memory and uploaded by
//! one PUT when it is committed or staged. A longer one becomes a multipart upload as soon as
//! its third part begins: each full part after the first is sent on a thread of its own while
//! the store goes on encoding (at most [`PARTS_IN_FLIGHT`] per shard at a time, so memory stays
//! bounded), and the first part, which holds the header the store writes last, is sent when the
//! file is finished, followed by the request that completes the upload. Either way the object
//! appears whole or not at all (an incomplete multipart upload is invisible to listings and
//! reads).
//!
//! A multipart upload is always made under the pending name; a shard committed directly (a
//! rebuild) is then promoted like a put's. Its upload id is recorded in a marker object in the
//! location's `tmp/` area for as long as the upload is open: a process that dies mid-upload
//! leaves the marker, and `scrub --repair` (holding the object's lock, so no live put of it is
//! under way) aborts the upload it names and removes it (`Location::remove_temp`).

use std::collections::VecDeque;
use std::io;
use std::thread::JoinHandle;

use object_store::multipart::PartId;
use object_store::path::Path as ObjectPath;
use object_store::MultipartId;

use super::RemoteLocation;
use crate::format::{ObjectId, WriteStamp};
use crate::location::{Location, ShardWriter};

/// The size of every part of a multipart upload but the last (some providers, R2 among them,
/// want them all equal; S3 wants at least 5 MiB).
pub(super) const PART_LEN: usize = 8 << 20;
/// Parts of one shard being uploaded at once.
const PARTS_IN_FLIGHT: usize = 4;
/// The longest upload marker read back.
pub(super) const MAX_MARKER_LEN: usize = 4096;

/// A shard file being written.
pub(super) struct RemoteShardWriter {
    location: RemoteLocation,
    object: ObjectId,
    stamp: WriteStamp,
    /// The file's first bytes, up to `PART_LEN`: the first part, sent last (the header is
    /// written over its start once the object's length is known).
    head: Vec<u8>,
    /// Bytes after `head` not sent yet.
    tail: Vec<u8>,
    /// The multipart upload, once the file outgrew two parts.
    upload: Option<Multipart>,
}

/// An open multipart upload and its parts after the first.
struct Multipart {
    path: ObjectPath,
    id: MultipartId,
    /// The marker that records it in `tmp/`.
    marker: ObjectPath,
    /// Parts 1, 2, ... sent, in order.
    sent: Vec<PartId>,
    /// The parts after those, being sent, in order.
    sending: VecDeque<JoinHandle<io::Result<PartId>>>,
}

impl Multipart {
    /// Waits for the oldest part being sent.
    fn wait_oldest(&mut self) -> io::Result<()> {
        if let Some(thread) = self.sending.pop_front() {
            let id = thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a part upload's thread panicked")))?;
            self.sent.push(id);
        }
        Ok(())
    }

    fn parts(&self) -> usize {
        self.sent.len() + self.sending.len()
    }

    /// Sends `bytes` as the part after those sent or being sent, on a thread of its own.
    fn send_next(&mut self, location: &RemoteLocation, bytes: Vec<u8>) -> io::Result<()> {
        let index = self.parts() + 1;
        let (location, path, id) = (location.clone(), self.path.clone(), self.id.clone());
        let thread = std::thread::Builder::new()
            .name("shardguard-upload".into())
            .spawn(move || location.put_part(&path, &id, index, bytes))
            .map_err(|e| io::Error::other(format!("no thread for a part upload: {e}")))?;
        self.sending.push_back(thread);
        Ok(())
    }
}

/// What an upload marker holds: the upload's object path and its id, a line each.
pub(super) fn marker_bytes(path: &ObjectPath, id: &MultipartId) -> Vec<u8> {
    format!("{path}\n{id}\n").into_bytes()
}

/// The upload a marker names, if it is one.
pub(super) fn parse_marker(bytes: &[u8]) -> Option<(ObjectPath, MultipartId)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    let path = ObjectPath::parse(lines.next()?).ok()?;
    let id = lines.next()?.to_owned();
    (!id.is_empty()).then_some((path, id))
}

impl RemoteShardWriter {
    pub fn new(location: RemoteLocation, object: ObjectId, stamp: WriteStamp) -> Self {
        RemoteShardWriter {
            location,
            object,
            stamp,
            head: Vec::new(),
            tail: Vec::new(),
            upload: None,
        }
    }

    /// Opens the multipart upload under the pending name, and records it.
    fn start_upload(&self) -> io::Result<Multipart> {
        let location = &self.location;
        let path = location
            .object_dir(self.object)
            .child(self.stamp.pending_file_name());
        let what = location.message(&path);
        let id = location
            .client
            .run(location.client.multipart.create_multipart(&path), false)
            .map_err(|f| f.into_io(&what))?;
        let marker = location.at(&[
            super::TMP_DIR,
            &format!("{}-{:016x}.tmp", self.object.to_hex(), crate::ids::random_u64()),
        ]);
        if let Err(e) = location.put(&marker, marker_bytes(&path, &id)) {
            // Unrecorded, it must not outlive this call.
            let _ = location.abort_upload(&path, &id);
            return Err(e);
        }
        Ok(Multipart {
            path,
            id,
            marker,
            sent: Vec::new(),
            sending: VecDeque::new(),
        })
    }

    /// Sends the first `PART_LEN` bytes of `tail` as the next part, on a thread of its own.
    fn send_part(&mut self) -> io::Result<()> {
        if self.upload.is_none() {
            self.upload = Some(self.start_upload()?);
        }
        let Some(upload) = self.upload.as_mut() else {
            return Ok(());
        };
        // Room for one more: wait for the oldest part still being sent.
        if upload.sending.len() >= PARTS_IN_FLIGHT {
            upload.wait_oldest()?;
        }
        let rest = self.tail.split_off(PART_LEN);
        upload.send_next(&self.location, std::mem::replace(&mut self.tail, rest))
    }

    /// Finishes the file under `name` (its committed or pending name).
    fn finish(mut self, pending: bool) -> io::Result<()> {
        let Some(mut upload) = self.upload.take() else {
            let name = match pending {
                true => self.stamp.pending_file_name(),
                false => self.stamp.file_name(),
            };
            let path = self.location.object_dir(self.object).child(name);
            let mut bytes = std::mem::take(&mut self.head);
            bytes.append(&mut self.tail);
            return self.location.put(&path, bytes);
        };
        let location = self.location.clone();
        let mut sent = || -> io::Result<()> {
            // The last part on a thread of its own, beside the first.
            if !self.tail.is_empty() {
                upload.send_next(&location, std::mem::take(&mut self.tail))?;
            }
            let first = location.put_part(&upload.path, &upload.id, 0, std::mem::take(&mut self.head));
            while !upload.sending.is_empty() {
                upload.wait_oldest()?;
            }
            let mut ids = vec![first?];
            ids.append(&mut upload.sent);
            let what = location.message(&upload.path);
            location
                .client
                .run(
                    location
                        .client
                        .multipart
                        .complete_multipart(&upload.path, &upload.id, ids),
                    false,
                )
                .map_err(|f| f.into_io(&what))?;
            Ok(())
        };
        let outcome = sent();
        if outcome.is_err() {
            let _ = location.abort_upload(&upload.path, &upload.id);
        }
        // The upload is complete or aborted: the marker has nothing left to say. (If removing
        // it fails, a scrub's abort of a finished upload finds nothing to abort.)
        let _ = location.delete(&upload.marker);
        outcome?;
        match pending {
            true => Ok(()),
            false => location.promote(self.object, self.stamp),
        }
    }
}

impl Drop for RemoteShardWriter {
    /// A writer dropped unfinished (its put failed elsewhere) leaves no upload open.
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            for thread in upload.sending.drain(..) {
                let _ = thread.join();
            }
            let _ = self.location.abort_upload(&upload.path, &upload.id);
            let _ = self.location.delete(&upload.marker);
        }
    }
}

impl ShardWriter for RemoteShardWriter {
    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        if self.head.len() < PART_LEN {
            let take = (PART_LEN - self.head.len()).min(buf.len());
            self.head.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
        }
        self.tail.extend_from_slice(buf);
        // The second part is held until a third begins: a file of two parts is one PUT.
        while self.tail.len() > PART_LEN || (self.upload.is_some() && self.tail.len() == PART_LEN) {
            self.send_part()?;
        }
        Ok(())
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let sent = self.upload.as_ref().map_or(0, |u| u.parts() * PART_LEN);
        let tail_at = (PART_LEN + sent) as u64;
        let (bytes, at) = match offset < PART_LEN as u64 {
            true => (&mut self.head, offset),
            false => (
                &mut self.tail,
                offset.checked_sub(tail_at).ok_or(io::ErrorKind::InvalidInput)?,
            ),
        };
        super::overwrite(bytes, at, buf)
    }

    fn commit(self: Box<Self>) -> io::Result<()> {
        self.finish(false)
    }

    fn stage(self: Box<Self>) -> io::Result<()> {
        self.finish(true)
    }

    fn commit_deferred(self: Box<Self>) -> io::Result<()> {
        self.finish(false)
    }
}
