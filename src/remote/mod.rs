//! A [`Location`] on an S3-compatible object store (feature `s3`), through the `object_store`
//! crate: the store's `k + m` shards of an object may live in buckets on different machines or
//! providers, each its own failure domain.
//!
//! Layout under the location's prefix (the names of a local location's, and two more):
//!
//! ```text
//! SHARDGUARD-LOCATION                                  identity (store id, slot)
//! SHARDGUARD-STORE                                     copy of the store file
//! SHARDGUARD-LEASE                                     the writer's lease (the `lease` module)
//! objects/<2 hex>/<32 hex>/<stamp>.shard               a committed shard file
//! objects/<2 hex>/<32 hex>/<stamp>.pending             one whose put has not finished committing,
//! objects/<2 hex>/<32 hex>/<stamp>.pending.committed     unless this empty marker is beside it
//! tmp/<32 hex>-<16 hex>.tmp                            a multipart upload still open
//! ```
//!
//! An object store has no rename, no append and no fsync; the contract of [`Location`] maps
//! onto it as follows. A shard file is uploaded while it is written (the `upload` module): by
//! one PUT, or by a multipart upload that is completed when the file is, so it appears whole or
//! not at all, and it is durable once that request is answered. A promotion puts an empty commit
//! marker beside the pending object (a copy would cost the shard's size, and S3 copies at most
//! 5 GiB). A patch rewrites the whole object. A read is a ranged GET made conditional on the
//! ETag the file had when it was opened, so a file replaced meanwhile is a `NotFound` (a race
//! the readers look again for), never a mix of two files' bytes.
//!
//! The library stays synchronous: each location owns a small Tokio runtime and blocks on it.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, GetOptions, GetRange, MultipartId, ObjectStore, PutMode, PutOptions, PutPayload,
    PutResult, RetryConfig, UpdateVersion,
};

use crate::credentials::Credentials;
use crate::format::{bucket_from_hex, ObjectId, WriteStamp};
use crate::location::{
    Location, NetworkCounts, OpenedShard, OpenedShards, ShardFile, ShardWriter, IDENTITY_FILE,
    MAX_STORE_FILE_LEN, STORE_COPY_FILE,
};
use crate::location_spec::S3Spec;

mod client;
mod upload;

use client::{Client, Failure};
use upload::RemoteShardWriter;

/// Name of the writer's lease object at the top of a remote location (the `lease` module).
const LEASE_FILE: &str = "SHARDGUARD-LEASE";
/// Where the markers of open multipart uploads live (the `upload` module).
const TMP_DIR: &str = "tmp";
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
    /// `AWS_REGION` (default `us-east-1`), credentials `credentials` if given, else from
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`. Contacts nothing yet.
    pub fn connect(spec: &S3Spec, credentials: Option<&Credentials>) -> io::Result<Self> {
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
        // With the location's own credentials, nothing of the environment's may sign with them
        // (a session token of other keys): only its region is read.
        let base = match credentials {
            Some(_) => {
                let region = std::env::var("AWS_REGION").or_else(|_| std::env::var("AWS_DEFAULT_REGION"));
                region.map_or_else(
                    |_| AmazonS3Builder::new(),
                    |r| AmazonS3Builder::new().with_region(r),
                )
            }
            None => AmazonS3Builder::from_env(),
        };
        let mut builder = base
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
        if let Some(credentials) = credentials {
            builder = builder
                .with_access_key_id(&credentials.access_key_id)
                .with_secret_access_key(&credentials.secret_access_key);
            if let Some(token) = &credentials.session_token {
                builder = builder.with_token(token);
            }
        }
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
    pub fn with_store<S: ObjectStore + MultipartStore>(
        name: PathBuf,
        store: Arc<S>,
        prefix: &str,
    ) -> io::Result<Self> {
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

    /// Sends part `index` of multipart upload `id` of `path`.
    fn put_part(
        &self,
        path: &ObjectPath,
        id: &MultipartId,
        index: usize,
        bytes: Vec<u8>,
    ) -> io::Result<PartId> {
        let what = self.message(path);
        self.client
            .run(
                self.client
                    .multipart
                    .put_part(path, id, index, PutPayload::from(bytes)),
                false,
            )
            .map_err(|f| f.into_io(&what))
    }

    /// Aborts multipart upload `id` of `path`; one that is no more (completed or aborted) is
    /// no error.
    fn abort_upload(&self, path: &ObjectPath, id: &MultipartId) -> io::Result<()> {
        let what = self.message(path);
        match self
            .client
            .run(self.client.multipart.abort_multipart(path, id), false)
        {
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
    /// the listing says of the object holding its bytes. A stamp is committed when it has a
    /// committed object, or a pending one and a commit marker (a promotion); an older build's
    /// promotion copied the pending object to its committed name, then deleted it, so a stamp
    /// found under both names is committed too, and listed once. A marker alone is nothing (a
    /// removal cut short).
    fn shard_files(&self, object: ObjectId) -> io::Result<Vec<(WriteStamp, bool, object_store::ObjectMeta)>> {
        let (objects, _) = self.list_dir(&self.object_dir(object))?;
        let committed: Vec<WriteStamp> = objects
            .iter()
            .filter_map(|(name, _)| WriteStamp::from_file_name(name))
            .collect();
        let marked: Vec<WriteStamp> = objects
            .iter()
            .filter_map(|(name, _)| stamp_of_marker(name))
            .collect();
        Ok(objects
            .into_iter()
            .filter_map(|(name, meta)| {
                if let Some(stamp) = WriteStamp::from_file_name(&name) {
                    return Some((stamp, false, meta));
                }
                let stamp = WriteStamp::from_pending_file_name(&name)?;
                (!committed.contains(&stamp)).then_some((stamp, !marked.contains(&stamp), meta))
            })
            .collect())
    }

    /// The object holding the bytes of `object`'s write `stamp`, committed or pending.
    fn find_shard(
        &self,
        object: ObjectId,
        stamp: WriteStamp,
        pending: bool,
    ) -> io::Result<object_store::ObjectMeta> {
        self.shard_files(object)?
            .into_iter()
            .find(|f| f.0 == stamp && f.1 == pending)
            .map(|f| f.2)
            .ok_or_else(|| {
                let name = match pending {
                    true => stamp.pending_file_name(),
                    false => stamp.file_name(),
                };
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{}: not found",
                        self.message(&self.object_dir(object).child(name))
                    ),
                )
            })
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
}

/// Overwrites `bytes` from `offset` with `with`; `InvalidInput` if that reaches past their end.
fn overwrite(bytes: &mut [u8], offset: u64, with: &[u8]) -> io::Result<()> {
    let range = usize::try_from(offset)
        .ok()
        .and_then(|at| Some(at..at.checked_add(with.len())?))
        .filter(|r| r.end <= bytes.len())
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    bytes[range].copy_from_slice(with);
    Ok(())
}

/// The name of the marker that commits a pending shard object (`promote`).
fn marker_name(stamp: WriteStamp) -> String {
    format!("{}.committed", stamp.pending_file_name())
}

/// The stamp a commit marker's name commits.
fn stamp_of_marker(name: &str) -> Option<WriteStamp> {
    WriteStamp::from_pending_file_name(name.strip_suffix(".committed")?)
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
        Ok(self.shard_file(self.find_shard(object, stamp, false)?))
    }

    fn open_pending(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<Arc<dyn ShardFile>> {
        Ok(self.shard_file(self.find_shard(object, stamp, true)?))
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
        Ok(Box::new(RemoteShardWriter::new(self.clone(), object, stamp)))
    }

    fn remove_shard(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<()> {
        // The bytes first, the marker last: cut short, what is left is a marker alone
        // (nothing) or a pending object without its marker (uncommitted), never a committed
        // stamp without bytes.
        let dir = self.object_dir(object);
        self.delete(&dir.child(stamp.file_name()))?;
        self.delete(&dir.child(stamp.pending_file_name()))?;
        self.delete(&dir.child(marker_name(stamp)))
    }

    fn remove_pending(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<()> {
        // A pending object with a marker is committed: not this call's to remove (a local
        // location's promoted file is no longer under its pending name either).
        let dir = self.object_dir(object);
        let marker = dir.child(marker_name(stamp));
        let what = self.message(&marker);
        match self.client.run(self.client.store.head(&marker), false) {
            Ok(_) => Ok(()),
            Err(Failure::Store(object_store::Error::NotFound { .. })) => {
                self.delete(&dir.child(stamp.pending_file_name()))
            }
            Err(f) => Err(f.into_io(&what)),
        }
    }

    fn promote(&self, object: ObjectId, stamp: WriteStamp) -> io::Result<()> {
        // An object store has no rename, and a copy costs the shard's size (and fails past
        // 5 GiB on S3): a promotion is an empty marker beside the pending object, one small
        // PUT, whole or not at all.
        self.put(&self.object_dir(object).child(marker_name(stamp)), Vec::new())
    }

    fn shard_path(&self, object: ObjectId, stamp: WriteStamp) -> PathBuf {
        PathBuf::from(self.message(&self.object_dir(object).child(stamp.file_name())))
    }

    fn patch_shard(&self, object: ObjectId, stamp: WriteStamp, offset: u64, bytes: &[u8]) -> io::Result<()> {
        // No writes in place on an object store: the whole object is rewritten (one PUT:
        // whole or not at all, so a failure loses nothing).
        let path = self.find_shard(object, stamp, false)?.location;
        let mut whole = self.get_bounded(&path, usize::MAX)?;
        overwrite(&mut whole, offset, bytes)?;
        self.put(&path, whole)
    }

    fn list_temp(&self) -> io::Result<Vec<String>> {
        // The markers of multipart uploads still open (the `upload` module).
        let (objects, _) = self.list_dir(&self.at(&[TMP_DIR]))?;
        Ok(objects.into_iter().map(|(name, _)| name).collect())
    }

    fn remove_temp(&self, name: &str) -> io::Result<()> {
        // The upload a marker names is aborted, then the marker removed. Only an upload of the
        // object the marker's name names: the caller holds that object's lock (no live put of
        // it), not another's. A marker naming anything else is only removed.
        let marker = self.at(&[TMP_DIR, name]);
        let bytes = self.get_bounded(&marker, upload::MAX_MARKER_LEN)?;
        let dir = crate::location::temp_file_object(name).map(|object| self.object_dir(object));
        if let Some((path, id)) = upload::parse_marker(&bytes)
            .filter(|(path, _)| dir.as_ref().is_some_and(|dir| path.prefix_matches(dir)))
        {
            self.abort_upload(&path, &id)?;
        }
        self.delete(&marker)
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
    fn a_promotion_is_a_marker_and_a_removal_cut_short_never_leaves_a_committed_stamp_without_bytes() {
        let loc = location();
        let object = ObjectId::of_key("k");
        let mut w = loc.create_shard(object, stamp(3)).unwrap();
        w.write_all(b"bytes").unwrap();
        w.stage().unwrap();
        loc.promote(object, stamp(3)).unwrap();
        // Committed now: a pending removal leaves it alone.
        loc.remove_pending(object, stamp(3)).unwrap();
        assert_eq!(loc.list_shards(object).unwrap(), vec![stamp(3)]);
        let dir = loc.object_dir(object);
        // The marker without its pending object (a removal cut short) is nothing.
        loc.delete(&dir.child(stamp(3).pending_file_name())).unwrap();
        assert!(loc.open_shards(object).unwrap().is_empty());
        assert!(matches!(loc.open_shard(object, stamp(3)), Err(e) if e.kind() == io::ErrorKind::NotFound));
        loc.remove_shard(object, stamp(3)).unwrap();
        assert!(loc.list_buckets().unwrap().is_empty(), "the marker went too");
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
        // What a crash between an older build's promotion copy and its delete leaves.
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

/// Multipart uploads, against a real S3 server (the in-memory store of `object_store` 0.12
/// cannot take parts out of order: its `put_part` panics, apache/arrow-rs-object-store#682).
#[cfg(all(test, feature = "fault-injection"))]
mod upload_tests {
    use super::*;
    use crate::fault::s3::{server_binary, use_server_credentials, LocalS3Server};
    use crate::location_spec::LocationSpec;

    fn stamp(version: u64) -> WriteStamp {
        WriteStamp { version, write_id: 7 }
    }

    /// A location on an `s3s-fs` server of its own; `None` (the test says SKIPPED) where the
    /// server is not installed and S3 tests are not required.
    fn on_a_server() -> Option<(tempfile::TempDir, LocalS3Server, RemoteLocation)> {
        let Some(binary) = server_binary() else {
            assert!(
                std::env::var_os("SHARDGUARD_REQUIRE_S3").is_none(),
                "s3s-fs is not installed"
            );
            eprintln!("SKIPPED: s3s-fs is not installed");
            return None;
        };
        use_server_credentials();
        let dir = tempfile::tempdir().expect("a directory for the server");
        let server = LocalS3Server::start(&binary, dir.path().join("server")).expect("start s3s-fs");
        let LocationSpec::S3(spec) = LocationSpec::parse(Path::new(&server.location())).expect("spec") else {
            panic!("an S3 location");
        };
        let location = RemoteLocation::connect(&spec, None).expect("connect");
        Some((dir, server, location))
    }

    /// Part files of uploads still open on the server (`s3s-fs` keeps them at its root).
    fn open_parts(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("server"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".upload_id-"))
            .count()
    }

    /// Bytes of a shard file that needs a multipart upload: three parts and a bit.
    fn long_file() -> Vec<u8> {
        (0..3 * upload::PART_LEN + 1000)
            .map(|i| (i * 31 % 251) as u8)
            .collect()
    }

    fn read_whole(loc: &RemoteLocation, object: ObjectId, at: WriteStamp) -> Vec<u8> {
        let file = loc.open_shard(object, at).unwrap();
        let mut buf = vec![0u8; file.len() as usize];
        file.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    #[test]
    fn a_long_shard_uploaded_in_parts_reads_back_exact_with_its_header_written_last() {
        let Some((dir, _server, loc)) = on_a_server() else {
            return;
        };
        let object = ObjectId::of_key("k");
        let mut want = long_file();
        for (version, stage) in [(1, true), (2, false)] {
            let mut w = loc.create_shard(object, stamp(version)).unwrap();
            // Written in 1 MiB pieces, as the store writes chunks; the header last.
            for piece in want.chunks(1 << 20) {
                w.write_all(piece).unwrap();
            }
            // An open upload is recorded while it lasts.
            assert_eq!(loc.list_temp().unwrap().len(), 1);
            w.write_all_at(b"HEADER", 0).unwrap();
            match stage {
                true => {
                    w.stage().unwrap();
                    loc.promote(object, stamp(version)).unwrap();
                }
                false => w.commit().unwrap(),
            }
            want[..6].copy_from_slice(b"HEADER");
            assert!(read_whole(&loc, object, stamp(version)) == want);
            assert!(
                loc.list_temp().unwrap().is_empty(),
                "the marker goes with the upload"
            );
        }
        assert_eq!(loc.list_shards(object).unwrap(), vec![stamp(1), stamp(2)]);
        assert!(loc.list_pending(object).unwrap().is_empty());
        assert_eq!(open_parts(dir.path()), 0, "no upload left open");
    }

    #[test]
    fn an_upload_its_writer_abandoned_leaves_nothing_and_one_a_crash_left_is_aborted_by_remove_temp() {
        let Some((dir, _server, loc)) = on_a_server() else {
            return;
        };
        let object = ObjectId::of_key("k");
        let mut w = loc.create_shard(object, stamp(1)).unwrap();
        w.write_all(&long_file()).unwrap();
        // Parts are sent on threads of their own: wait until one landed.
        let mut waited = 0;
        while open_parts(dir.path()) == 0 {
            assert!(waited < 200, "no part landed within 10 s");
            std::thread::sleep(Duration::from_millis(50));
            waited += 1;
        }
        drop(w);
        assert!(loc.list_temp().unwrap().is_empty());
        assert_eq!(
            open_parts(dir.path()),
            0,
            "a writer dropped unfinished aborts its upload"
        );
        assert!(loc.list_pending(object).unwrap().is_empty());

        // A process that dies mid-upload runs no destructor.
        let mut w = loc.create_shard(object, stamp(2)).unwrap();
        w.write_all(&long_file()).unwrap();
        std::mem::forget(w);
        // Its two full parts after the first land (a dead process's threads die with it; these
        // live on, and one landing after the abort would leave a part behind).
        let mut waited = 0;
        while open_parts(dir.path()) < 2 {
            assert!(waited < 200, "the parts did not land within 10 s");
            std::thread::sleep(Duration::from_millis(50));
            waited += 1;
        }
        let left = loc.list_temp().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(crate::location::temp_file_object(&left[0]), Some(object));
        let marker = loc.get_bounded(&loc.at(&[TMP_DIR, &left[0]]), 4096).unwrap();
        let (path, id) = upload::parse_marker(&marker).unwrap();
        // A marker under another object's name (forged, or damaged) that points at this
        // upload: removed, and the upload left alone (its object's lock is not the one held).
        let other = ObjectId::of_key("another key");
        let forged = format!("{}-{:016x}.tmp", other.to_hex(), 1);
        loc.put(&loc.at(&[TMP_DIR, &forged]), marker.clone()).unwrap();
        loc.remove_temp(&forged).unwrap();
        assert_eq!(
            loc.list_temp().unwrap(),
            left,
            "the forged marker is gone, the true one stays"
        );
        assert_eq!(
            open_parts(dir.path()),
            2,
            "the upload was not aborted through a forged marker"
        );
        loc.remove_temp(&left[0]).unwrap();
        assert!(loc.list_temp().unwrap().is_empty());
        assert_eq!(open_parts(dir.path()), 0, "the upload was aborted");
        // Aborted: the upload can no longer be completed.
        let complete = loc.client.multipart.complete_multipart(&path, &id, Vec::new());
        assert!(loc.client.run(complete, false).is_err());
        assert!(loc.list_pending(object).unwrap().is_empty());
    }
}
