//! A [`Location`] on an S3-compatible object store (feature `s3`), through the `object_store`
//! crate: the store's `k + m` shards of an object may live in buckets on different machines or
//! providers, each its own failure domain.
//!
//! Layout under the location's prefix (the same names as a local location's):
//!
//! ```text
//! SHARDGUARD-LOCATION                         identity (store id, slot)
//! SHARDGUARD-STORE                            copy of the store file
//! objects/<2 hex>/<32 hex>/<stamp>.shard      one object per shard file
//! objects/<2 hex>/<32 hex>/<stamp>.pending    one whose put has not finished committing
//! ```
//!
//! An object store has no rename, no append and no fsync; the contract of [`Location`] maps
//! onto it as follows. A shard file is written into memory and uploaded by one PUT when it is
//! committed or staged, so it appears whole or not at all, and it is durable once the PUT is
//! answered. A promotion copies the pending object to its committed name, then deletes the
//! pending one: after a crash it is one or both, never neither (a listing counts a stamp that is
//! both as committed). A patch rewrites the whole object. A read is a ranged GET made
//! conditional on the ETag the file had when it was opened, so a file replaced meanwhile is a
//! `NotFound` (a race the readers look again for), never a mix of two files' bytes.
//!
//! The library stays synchronous: each location owns a small Tokio runtime and blocks on it.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, PutMode, PutOptions, PutPayload, PutResult,
    RetryConfig, UpdateVersion,
};

use crate::format::{bucket_from_hex, ObjectId, WriteStamp};
use crate::location::{
    Location, NetworkCounts, OpenedShard, OpenedShards, ShardFile, ShardWriter, IDENTITY_FILE,
    MAX_STORE_FILE_LEN, STORE_COPY_FILE,
};
use crate::location_spec::S3Spec;

mod client;

use client::{Client, Failure};

/// Name of the writer's lease object at the top of a remote location (the `lease` module).
const LEASE_FILE: &str = "SHARDGUARD-LEASE";
/// Bound on a lease object read back.
const MAX_LEASE_LEN: u64 = 4096;

/// How long one request may take before it is an error (the store's retry policy decides what
/// follows). Long enough for a 64 MiB shard on a slow link.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take: an endpoint that is down fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An object's last name component and what a listing says of it.
type Named = (String, object_store::ObjectMeta);

/// A location on an S3-compatible object store.
#[derive(Clone)]
pub(crate) struct RemoteLocation {
    /// The location as given (`s3:...`), for messages: it holds no credentials.
    name: PathBuf,
    client: Arc<Client>,
    /// Where the location's objects live in the bucket.
    prefix: ObjectPath,
}

impl std::fmt::Debug for RemoteLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the client: its configuration holds the credentials.
        f.debug_struct("RemoteLocation")
            .field("name", &self.name)
            .finish()
    }
}

impl RemoteLocation {
    /// A location for `spec`: endpoint from the spec or from `AWS_ENDPOINT_URL`, region from
    /// `AWS_REGION` (default `us-east-1`), credentials from `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`. Contacts nothing yet.
    pub fn connect(spec: &S3Spec) -> io::Result<Self> {
        let endpoint = spec
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        // Client options first: setting them replaces every client option set before
        // (`allow_http` is one).
        let mut client = ClientOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT);
        if let Some(endpoint) = &endpoint {
            client = client.with_allow_http(endpoint.starts_with("http://"));
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_client_options(client)
            // The writer's lease is created with If-None-Match and renewed with If-Match.
            .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
            .with_bucket_name(&spec.bucket)
            // The store's own retry policy retries across locations; a request retried here
            // too would hold up a hedge for minutes.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(15),
                ..RetryConfig::default()
            });
        if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
            builder = builder.with_region("us-east-1");
        }
        if let Some(endpoint) = &endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        let store = builder.build().map_err(|e| to_io(e, &spec.to_string()))?;
        Self::with_store(PathBuf::from(spec.to_string()), Arc::new(store), &spec.prefix)
    }

    /// A location on `store` under `prefix`, named `name` in messages (tests use the in-memory
    /// store this way).
    pub fn with_store(name: PathBuf, store: Arc<dyn ObjectStore>, prefix: &str) -> io::Result<Self> {
        Ok(RemoteLocation {
            name,
            client: Arc::new(Client::new(store)?),
            prefix: ObjectPath::from(prefix),
        })
    }

    fn at(&self, parts: &[&str]) -> ObjectPath {
        let mut path = self.prefix.clone();
        for part in parts {
            path = path.child(*part);
        }
        path
    }

    fn object_dir(&self, object: ObjectId) -> ObjectPath {
        let hex = object.to_hex();
        self.at(&["objects", &hex[..2], &hex])
    }

    fn message(&self, path: &ObjectPath) -> String {
        format!(
            "{}/{}",
            self.name.display(),
            path.as_ref()
                .strip_prefix(self.prefix.as_ref())
                .unwrap_or(path.as_ref())
                .trim_start_matches('/')
        )
    }

    /// The whole object at `path`, if at most `limit` bytes.
    fn get_bounded(&self, path: &ObjectPath, limit: usize) -> io::Result<Vec<u8>> {
        let what = self.message(path);
        let store = &self.client.store;
        let got = self.client.run(
            async {
                let got = store.get(path).await?;
                match got.meta.size > limit as u64 {
                    true => Ok(None),
                    false => got.bytes().await.map(|b| Some(b.to_vec())),
                }
            },
            false,
        );
        got.map_err(|f| f.into_io(&what))?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{what}: longer than {limit} bytes"),
            )
        })
    }

    fn put(&self, path: &ObjectPath, bytes: Vec<u8>) -> io::Result<()> {
        let what = self.message(path);
        self.client
            .run(self.client.store.put(path, PutPayload::from(bytes)), false)
            .map(drop)
            .map_err(|f| f.into_io(&what))
    }

    fn delete(&self, path: &ObjectPath) -> io::Result<()> {
        let what = self.message(path);
        match self.client.run(self.client.store.delete(path), false) {
            Ok(()) | Err(Failure::Store(object_store::Error::NotFound { .. })) => Ok(()),
            Err(f) => Err(f.into_io(&what)),
        }
    }

    /// The names directly under `dir` (objects), and the sub-prefixes' last components.
    fn list_dir(&self, dir: &ObjectPath) -> io::Result<(Vec<Named>, Vec<String>)> {
        let what = self.message(dir);
        let listed = self
            .client
            .run(self.client.store.list_with_delimiter(Some(dir)), false)
            .map_err(|f| f.into_io(&what))?;
        let objects = listed
            .objects
            .into_iter()
            .filter_map(|meta| Some((meta.location.filename()?.to_owned(), meta)))
            .collect();
        let prefixes = listed
            .common_prefixes
            .into_iter()
            .filter_map(|p| Some(p.filename()?.to_owned()))
            .collect();
        Ok((objects, prefixes))
    }

    /// The shard files of `object` here: each write's stamp, whether it is pending, and what
    /// the listing says of it. A promotion copies, then deletes: a stamp found under both names
    /// is committed, and listed once.
    fn shard_files(&self, object: ObjectId) -> io::Result<Vec<(WriteStamp, bool, object_store::ObjectMeta)>> {
        let (objects, _) = self.list_dir(&self.object_dir(object))?;
        let committed: Vec<WriteStamp> = objects
            .iter()
            .filter_map(|(name, _)| WriteStamp::from_file_name(name))
            .collect();
        Ok(objects
            .into_iter()
            .filter_map(|(name, meta)| {
                if let Some(stamp) = WriteStamp::from_file_name(&name) {
                    return Some((stamp, false, meta));
                }
                let stamp = WriteStamp::from_pending_file_name(&name)?;
                (!committed.contains(&stamp)).then_some((stamp, true, meta))
            })
            .collect())
    }

    fn shard_file(&self, meta: object_store::ObjectMeta) -> Arc<dyn ShardFile> {
        Arc::new(RemoteShardFile {
            what: self.message(&meta.location),
            client: Arc::clone(&self.client),
            len: meta.size,
            e_tag: meta.e_tag,
            path: meta.location,
        })
    }

    fn open_named(&self, path: ObjectPath) -> io::Result<Arc<dyn ShardFile>> {
        let what = self.message(&path);
        let meta = self
            .client
            .run(self.client.store.head(&path), false)
            .map_err(|f| f.into_io(&what))?;
        Ok(self.shard_file(meta))
    }
}

/// An object-store error as an I/O error of the kind the store's rules expect, naming the
/// location's object (never a credential: requests are signed in headers).
fn to_io(e: object_store::Error, what: &str) -> io::Error {
    let kind = match &e {
        // A file replaced since it was opened: a race the readers look again for.
        object_store::Error::NotFound { .. } | object_store::Error::Precondition { .. } => {
            io::ErrorKind::NotFound
        }
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            io::ErrorKind::PermissionDenied
        }
        object_store::Error::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{what}: {e}"))
}

impl Location for RemoteLocation {
    fn path(&self) -> &Path {
        &self.name
    }

    fn read_identity(&self) -> io::Result<Vec<u8>> {
        self.get_bounded(&self.at(&[IDENTITY_FILE]), 4096)
    }

    fn write_identity(&self, bytes: &[u8]) -> io::Result<()> {
        self.put(&self.at(&[IDENTITY_FILE]), bytes.to_vec())
    }

    fn read_store_copy(&self) -> io::Result<Vec<u8>> {
        self.get_bounded(&self.at(&[STORE_COPY_FILE]), MAX_STORE_FILE_LEN)
    }

    fn write_store_copy(&self, bytes: &[u8]) -> io::Result<()> {
        self.put(&self.at(&[STORE_COPY_FILE]), bytes.to_vec())
    }

    fn list_buckets(&self) -> io::Result<Vec<u8>> {
        let (_, prefixes) = self.list_dir(&self.at(&["objects"]))?;
        Ok(prefixes.iter().filter_map(|p| bucket_from_hex(p)).collect())
    }

    fn list_bucket(&self, bucket: u8) -> io::Result<Vec<ObjectId>> {
        let (_, prefixes) = self.list_dir(&self.at(&["objects", &format!("{bucket:02x}")]))?;
        Ok(prefixes
            .iter()
            .filter_map(|p| ObjectId::from_hex(p).filter(|id| id.0[0] == bucket))
            .collect())
    }

    fn list_shards(&self, object: ObjectId) -> io::Result<Vec<WriteStamp>> {
        let listed = self.shard_files(object)?;
        Ok(listed.into_iter().filter(|f| !f.1).map(|f| f.0).collect())
    }

    fn list_pending(&self, object: ObjectId) -> io::Result<Vec<WriteStamp>> {
        let listed = self.shard_files(object)?;
        Ok(listed.into_iter().filter(|f| f.1).map(|f| f.0).collect())
    }

    fn open_shard(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<Arc<dyn ShardFile>> {
        self.open_named(self.object_dir(object).child(stamp.file_name()))
    }

    fn open_pending(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<Arc<dyn ShardFile>> {
        self.open_named(self.object_dir(object).child(stamp.pending_file_name()))
    }

    fn open_shards(&self, object: ObjectId) -> io::Result<OpenedShards> {
        // One LIST serves the listing and every open: its sizes and ETags are what a HEAD of
        // each would say.
        Ok(self
            .shard_files(object)?
            .into_iter()
            .map(|(stamp, pending, meta)| OpenedShard {
                stamp,
                pending,
                file: Ok(self.shard_file(meta)),
            })
            .collect())
    }

    fn create_shard(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<Box<dyn ShardWriter>> {
        Ok(Box::new(RemoteShardWriter {
            location: self.clone(),
            object,
            stamp,
            bytes: Vec::new(),
        }))
    }

    fn remove_shard(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<()> {
        self.delete(&self.object_dir(object).child(stamp.file_name()))
    }

    fn remove_pending(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<()> {
        self.delete(&self.object_dir(object).child(stamp.pending_file_name()))
    }

    fn promote(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<()> {
        let dir = self.object_dir(object);
        let (from, to) = (dir.child(stamp.pending_file_name()), dir.child(stamp.file_name()));
        let what = self.message(&from);
        // Copied, then deleted: after a crash between them the stamp is both, which counts as
        // committed; never neither.
        self.client
            .run(self.client.store.copy(&from, &to), false)
            .map_err(|f| f.into_io(&what))?;
        self.delete(&from)
    }

    fn shard_path(&self, object: ObjectId, stamp: WriteStamp) -> PathBuf {
        PathBuf::from(self.message(&self.object_dir(object).child(stamp.file_name())))
    }

    fn patch_shard(&self, object: ObjectId, stamp: WriteStamp, offset: u64, bytes: &[u8]) -> io::Result<()> {
        // No writes in place on an object store: the whole object is rewritten (one PUT:
        // whole or not at all, so a failure loses nothing).
        let path = self.object_dir(object).child(stamp.file_name());
        let mut whole = self.get_bounded(&path, usize::MAX)?;
        let range = usize::try_from(offset)
            .ok()
            .and_then(|at| Some(at..at.checked_add(bytes.len())?))
            .filter(|r| r.end <= whole.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        whole[range].copy_from_slice(bytes);
        self.put(&path, whole)
    }

    fn list_temp(&self) -> io::Result<Vec<String>> {
        // Shard files are uploaded by single PUTs: nothing is left half written.
        Ok(Vec::new())
    }

    fn remove_temp(&self, _name: &str) -> io::Result<()> {
        Err(io::ErrorKind::NotFound.into())
    }

    fn sync(&self) -> io::Result<()> {
        // A PUT is durable when it is answered.
        Ok(())
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn network(&self) -> Option<NetworkCounts> {
        Some(self.client.counts())
    }

    fn read_lease(&self) -> io::Result<Option<(Vec<u8>, String)>> {
        let path = self.at(&[LEASE_FILE]);
        let what = self.message(&path);
        let store = &self.client.store;
        let got = self.client.run(
            async {
                let got = store.get(&path).await?;
                let e_tag = got.meta.e_tag.clone();
                if got.meta.size > MAX_LEASE_LEN {
                    return Ok(Err(e_tag));
                }
                got.bytes().await.map(|b| Ok((b.to_vec(), e_tag)))
            },
            false,
        );
        match got {
            Ok(Ok((bytes, Some(e_tag)))) => Ok(Some((bytes, e_tag))),
            // Too long to be a lease: damaged, replaced like an expired one.
            Ok(Err(Some(e_tag))) => Ok(Some((Vec::new(), e_tag))),
            Ok(_) => Err(io::Error::other(format!(
                "{what}: the server gives no ETag, needed for a lease"
            ))),
            Err(Failure::Store(object_store::Error::NotFound { .. })) => Ok(None),
            Err(f) => Err(f.into_io(&what)),
        }
    }

    fn write_lease(&self, bytes: &[u8], expected: Option<&str>) -> io::Result<String> {
        let path = self.at(&[LEASE_FILE]);
        let what = self.message(&path);
        let mode = match expected {
            None => PutMode::Create,
            Some(e_tag) => PutMode::Update(UpdateVersion {
                e_tag: Some(e_tag.to_owned()),
                version: None,
            }),
        };
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let payload = PutPayload::from(bytes.to_vec());
        let put = self
            .client
            .run(self.client.store.put_opts(&path, payload, options), false);
        match put {
            Ok(PutResult {
                e_tag: Some(e_tag), ..
            }) => Ok(e_tag),
            Ok(_) => Err(io::Error::other(format!(
                "{what}: the server gives no ETag, needed for a lease"
            ))),
            Err(Failure::Store(e @ object_store::Error::AlreadyExists { .. })) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{what}: {e}"),
            )),
            Err(f) => Err(f.into_io(&what)),
        }
    }

    fn remove_lease(&self) -> io::Result<()> {
        self.delete(&self.at(&[LEASE_FILE]))
    }

    fn is_there(&self) -> bool {
        self.client
            .run(self.client.store.list_with_delimiter(Some(&self.prefix)), false)
            .is_ok()
    }
}

/// A shard file on an object store, read by ranged GETs conditional on its ETag.
struct RemoteShardFile {
    what: String,
    client: Arc<Client>,
    path: ObjectPath,
    len: u64,
    e_tag: Option<String>,
}

impl ShardFile for RemoteShardFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let range: Range<u64> = offset..end;
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            if_match: self.e_tag.clone(),
            ..GetOptions::default()
        };
        let store = &self.client.store;
        let bytes = self.client.run(
            async {
                let got = store.get_opts(&self.path, options).await?;
                got.bytes().await
            },
            true,
        );
        let bytes = bytes.map_err(|f| f.into_io(&self.what))?;
        if bytes.len() != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: a ranged read returned {} bytes, not {}",
                    self.what,
                    bytes.len(),
                    buf.len()
                ),
            ));
        }
        buf.copy_from_slice(&bytes);
        Ok(())
    }
}

/// A shard file being written: held in memory, uploaded whole by one PUT.
struct RemoteShardWriter {
    location: RemoteLocation,
    object: ObjectId,
    stamp: WriteStamp,
    bytes: Vec<u8>,
}

impl RemoteShardWriter {
    fn upload(self, name: String) -> io::Result<()> {
        let path = self.location.object_dir(self.object).child(name);
        self.location.put(&path, self.bytes)
    }
}

impl ShardWriter for RemoteShardWriter {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.bytes.extend_from_slice(buf);
        Ok(())
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let range = usize::try_from(offset)
            .ok()
            .and_then(|at| Some(at..at.checked_add(buf.len())?))
            .filter(|r| r.end <= self.bytes.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.bytes[range].copy_from_slice(buf);
        Ok(())
    }

    fn commit(self: Box<Self>) -> io::Result<()> {
        let name = self.stamp.file_name();
        self.upload(name)
    }

    fn stage(self: Box<Self>) -> io::Result<()> {
        let name = self.stamp.pending_file_name();
        self.upload(name)
    }

    fn commit_deferred(self: Box<Self>) -> io::Result<()> {
        self.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn location() -> RemoteLocation {
        RemoteLocation::with_store(
            PathBuf::from("s3://test-bucket/p"),
            Arc::new(InMemory::new()),
            "p",
        )
        .unwrap()
    }

    fn stamp(version: u64) -> WriteStamp {
        WriteStamp { version, write_id: 7 }
    }

    #[test]
    fn a_staged_then_promoted_shard_reads_back_and_lists_as_committed() {
        let loc = location();
        let object = ObjectId::of_key("k");
        let mut w = loc.create_shard(object, stamp(1)).unwrap();
        w.write_all(b"xxxx-payload").unwrap();
        w.write_all_at(b"HEAD", 0).unwrap();
        w.stage().unwrap();
        assert_eq!(loc.list_pending(object).unwrap(), vec![stamp(1)]);
        assert!(loc.list_shards(object).unwrap().is_empty());
        loc.promote(object, stamp(1)).unwrap();
        assert_eq!(loc.list_shards(object).unwrap(), vec![stamp(1)]);
        assert!(loc.list_pending(object).unwrap().is_empty());
        let file = loc.open_shard(object, stamp(1)).unwrap();
        let mut buf = vec![0u8; 8];
        file.read_exact_at(&mut buf, 4).unwrap();
        assert_eq!(&buf, b"-payload");
        let mut past = vec![0u8; 4];
        assert_eq!(
            file.read_exact_at(&mut past, 10).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(loc.list_buckets().unwrap(), vec![object.0[0]]);
        assert_eq!(loc.list_bucket(object.0[0]).unwrap(), vec![object]);
    }

    #[test]
    fn a_file_replaced_after_it_was_opened_is_not_found_never_mixed() {
        let loc = location();
        let object = ObjectId::of_key("k");
        let mut w = loc.create_shard(object, stamp(1)).unwrap();
        w.write_all(b"old bytes").unwrap();
        w.commit().unwrap();
        let opened = loc.open_shard(object, stamp(1)).unwrap();
        loc.patch_shard(object, stamp(1), 0, b"new").unwrap();
        let mut buf = vec![0u8; 3];
        assert_eq!(
            opened.read_exact_at(&mut buf, 0).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        loc.open_shard(object, stamp(1))
            .unwrap()
            .read_exact_at(&mut buf, 0)
            .unwrap();
        assert_eq!(&buf, b"new");
    }

    #[test]
    fn a_stamp_both_pending_and_committed_counts_as_committed_once() {
        let loc = location();
        let object = ObjectId::of_key("k");
        for stage in [true, false] {
            let mut w = loc.create_shard(object, stamp(2)).unwrap();
            w.write_all(b"bytes").unwrap();
            if stage {
                w.stage().unwrap()
            } else {
                w.commit().unwrap()
            }
        }
        // What a crash between a promotion's copy and its delete leaves.
        assert_eq!(loc.list_shards(object).unwrap(), vec![stamp(2)]);
        assert!(loc.list_pending(object).unwrap().is_empty());
        let opened = loc.open_shards(object).unwrap();
        assert_eq!(opened.len(), 1);
        assert!(!opened[0].pending);
        loc.remove_shard(object, stamp(2)).unwrap();
        loc.remove_pending(object, stamp(2)).unwrap();
        assert!(loc.open_shards(object).unwrap().is_empty());
        assert!(loc.list_buckets().unwrap().is_empty());
    }
}
