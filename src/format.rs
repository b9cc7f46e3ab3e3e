//! The on-disk bytes: shard headers, chunk framing, location identity and the store file.
//!
//! Pure functions, no I/O, so the parsers can be fuzzed directly. Every decoder rejects malformed
//! input with a [`FormatError`] and never allocates more than the input's own length. The byte
//! tables live in `FORMAT.md`; the `layout_matches_format_md` test pins the offsets used here.
//!
//! All integers are little-endian.

/// Maximum key length in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Largest chunk size a store may use (64 MiB); bounds every allocation a header can ask for.
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;
/// Bytes of CRC32C that follow every chunk.
pub const CHUNK_CRC_LEN: u64 = 4;
/// Largest `k + m` the Reed-Solomon codec (GF(2^8)) supports.
pub const MAX_SHARDS: usize = 255;
/// Longest location path the store file records.
pub const MAX_PATH_LEN: usize = 4096;

const SHARD_MAGIC: [u8; 8] = *b"SGSHARD\0";
const IDENTITY_MAGIC: [u8; 8] = *b"SGLOCID\0";
const STORE_MAGIC: [u8; 8] = *b"SGSTORE\0";
const CHECKPOINT_MAGIC: [u8; 8] = *b"SGSCRUB\0";
const HISTORY_MAGIC: [u8; 8] = *b"SGHIST\0\0";
const PACK_MAGIC: [u8; 8] = *b"SGPACK\0\0";
const FORMAT_VERSION: u16 = 1;
/// The store file's version when the store packs small objects (FORMAT.md, "Packs").
/// A store that packs small objects, without a small-write log (development builds only):
/// read as [`STORE_VERSION_PACKS`], the same layout.
const STORE_VERSION_PACKS_UNLOGGED: u16 = 2;
/// A store that packs small objects and logs grouped small writes (FORMAT.md).
const STORE_VERSION_PACKS: u16 = 3;
/// A store file whose locations may be remote (`s3:` locations): the layout of
/// [`STORE_VERSION_PACKS`] with a pack threshold that may be 0. Older builds refuse it, instead of
/// taking a URL for a local directory.
const STORE_VERSION_REMOTE: u16 = 4;
/// [`STORE_VERSION_PACKS`] whose small-write log records carry their segment's tag (FORMAT.md,
/// "The small-write log"), so that a handle may write a folded segment's file again (as builds
/// before kept segments did). Older builds refuse it: they would take a reused segment's
/// earlier records for its own.
const STORE_VERSION_PACKS_TAGGED: u16 = 5;
/// [`STORE_VERSION_REMOTE`] with tagged log records, as [`STORE_VERSION_PACKS_TAGGED`].
const STORE_VERSION_REMOTE_TAGGED: u16 = 6;

/// Size of the shard header without the key and its trailing CRC.
pub const SHARD_HEADER_FIXED_LEN: usize = 82;
/// Size of a location identity file.
pub const IDENTITY_LEN: usize = 36;
const STORE_FIXED_LEN: usize = 36;

/// Why some bytes are not a valid encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The input ended before the structure did.
    #[error("truncated: {len} bytes, at least {needed} needed")]
    Truncated {
        /// Bytes available.
        len: usize,
        /// Bytes the structure needs.
        needed: usize,
    },
    /// The magic number is not the expected one.
    #[error("bad magic number (not a {expected} file)")]
    BadMagic {
        /// The kind of file that was expected.
        expected: &'static str,
    },
    /// The format version is not one this build reads.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    /// The stored checksum does not match the bytes.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// The checksum in the file.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// A field holds a value outside its documented range.
    #[error("invalid field {field}: {value}")]
    InvalidField {
        /// The field's name in FORMAT.md.
        field: &'static str,
        /// The offending value.
        value: u64,
    },
    /// Bytes follow the end of the structure.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
}

/// Which object a shard file belongs to: the first 16 bytes of BLAKE3(key).
///
/// Keys are never used as paths; this hash names the object's directory, so no key can escape
/// the store, whatever characters it holds. The full key is kept in every header, so a hash
/// collision is detected, not silently merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 16]);

/// Keys of pack objects start with this. A user's key never holds NUL, so none is taken for one.
pub const PACK_KEY_PREFIX: &str = "\0pack/";
/// The first bytes of every pack's id (bucket `ff`): a listing of that one bucket finds every
/// pack. (A user's key hashes to such an id once in 2^32 keys; its header's key tells them apart.)
const PACK_ID_PREFIX: [u8; 4] = [0xff, 0xff, b'P', b'K'];

/// The pack a key names, if it is a pack's key (the prefix, then a pack id in hex).
fn pack_of_key(key: &str) -> Option<ObjectId> {
    key.strip_prefix(PACK_KEY_PREFIX)
        .and_then(ObjectId::from_hex)
        .filter(ObjectId::is_pack)
}

/// Whether `key` is a pack's key: the only keys with a NUL that a shard header may hold.
pub fn is_pack_key(key: &str) -> bool {
    pack_of_key(key).is_some()
}

impl ObjectId {
    /// The id of a key: BLAKE3 of the key, or for a pack's key the pack's id.
    pub fn of_key(key: &str) -> Self {
        if let Some(id) = pack_of_key(key) {
            return id;
        }
        let hash = blake3::hash(key.as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&hash.as_bytes()[..16]);
        ObjectId(id)
    }

    /// The id of a pack holding `entries`: the pack prefix and 12 bytes of BLAKE3 over what
    /// the entries are (key, version, length, CRC). Unique as the writes are; derived, not
    /// drawn, so that a seeded test replays with the same placements.
    pub fn of_pack(entries: &[PackEntry]) -> Self {
        let mut hasher = blake3::Hasher::new();
        for e in entries {
            hasher.update(&(e.key.len() as u64).to_le_bytes());
            hasher.update(e.key.as_bytes());
            hasher.update(&e.stamp.version.to_le_bytes());
            hasher.update(&[u8::from(e.tombstone)]);
            hasher.update(&e.len.to_le_bytes());
            hasher.update(&e.crc.to_le_bytes());
        }
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&PACK_ID_PREFIX);
        id[4..].copy_from_slice(&hasher.finalize().as_bytes()[..12]);
        ObjectId(id)
    }

    /// Whether the id has a pack's form (a user object's id may too: see `PACK_ID_PREFIX`).
    pub fn is_pack(&self) -> bool {
        self.0[..4] == PACK_ID_PREFIX
    }

    /// The key of the pack with this id.
    pub fn pack_key(&self) -> String {
        format!("{PACK_KEY_PREFIX}{}", self.to_hex())
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 32 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut id = [0u8; 16];
        parse_hex(s, &mut id)?;
        Some(ObjectId(id))
    }
}

/// One write of an object: its version number and the random id of the put that made it.
///
/// The write id tells apart two writes that were given the same version number (possible when a
/// location holding a newer version was offline during a put), so they are never mixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteStamp {
    /// Monotonic per key: one more than the highest version seen when the write began.
    pub version: u64,
    /// Random per put.
    pub write_id: u64,
}

impl WriteStamp {
    /// The shard file name for this write: `{version:016x}-{write_id:016x}.shard`.
    pub fn file_name(&self) -> String {
        format!("{:016x}-{:016x}.shard", self.version, self.write_id)
    }

    /// The name of this write's shard file while its put is still committing:
    /// `{version:016x}-{write_id:016x}.pending` (FORMAT.md, "Committing a write").
    pub fn pending_file_name(&self) -> String {
        format!("{:016x}-{:016x}.pending", self.version, self.write_id)
    }

    /// Parses a shard file name made by [`WriteStamp::file_name`].
    pub fn from_file_name(name: &str) -> Option<Self> {
        Self::from_stem(name.strip_suffix(".shard")?)
    }

    /// Parses a pending shard file name made by [`WriteStamp::pending_file_name`].
    pub fn from_pending_file_name(name: &str) -> Option<Self> {
        Self::from_stem(name.strip_suffix(".pending")?)
    }

    fn from_stem(stem: &str) -> Option<Self> {
        let (version, write_id) = stem.split_once('-')?;
        if version.len() != 16 || write_id.len() != 16 {
            return None;
        }
        let mut v = [0u8; 8];
        let mut w = [0u8; 8];
        parse_hex(version, &mut v)?;
        parse_hex(write_id, &mut w)?;
        Some(WriteStamp {
            version: u64::from_be_bytes(v),
            write_id: u64::from_be_bytes(w),
        })
    }
}

/// Erasure-coding parameters shared by a store and every object in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Data shards per stripe.
    pub k: u8,
    /// Parity shards per stripe.
    pub m: u8,
    /// Bytes per chunk in a full stripe.
    pub chunk_size: u32,
}

impl Geometry {
    /// Checks the documented ranges: `k >= 1`, `k + m <= 255`, `1 <= chunk_size <= 64 MiB`.
    #[doc(hidden)] // For the store's internals.
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.k == 0 {
            return Err(FormatError::InvalidField { field: "k", value: 0 });
        }
        if usize::from(self.k) + usize::from(self.m) > MAX_SHARDS {
            return Err(FormatError::InvalidField {
                field: "m",
                value: self.m.into(),
            });
        }
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return Err(FormatError::InvalidField {
                field: "chunk_size",
                value: self.chunk_size.into(),
            });
        }
        Ok(())
    }

    /// Total shards per stripe, `k + m`.
    pub fn shards(&self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }

    /// Data bytes a full stripe holds, `k * chunk_size`.
    pub fn stripe_capacity(&self) -> u64 {
        u64::from(self.k) * u64::from(self.chunk_size)
    }

    /// Number of stripes of an object of `len` bytes (0 for an empty object).
    pub fn stripe_count(&self, len: u64) -> u64 {
        len.div_ceil(self.stripe_capacity())
    }

    /// The shape of stripe `stripe` of an object of `len` bytes.
    ///
    /// Full stripes use `chunk_size`; the last one shrinks its chunks to `ceil(rest / k)` so a
    /// small object costs `k + m` small chunks, not `k + m` full ones.
    #[doc(hidden)] // For the store's internals.
    pub fn stripe(&self, len: u64, stripe: u64) -> StripeShape {
        let capacity = self.stripe_capacity();
        let start = stripe * capacity;
        let data_len = (len - start).min(capacity);
        let chunk_len = if data_len == capacity {
            u64::from(self.chunk_size)
        } else {
            data_len.div_ceil(u64::from(self.k))
        };
        StripeShape {
            index: stripe,
            data_start: start,
            data_len: data_len as usize,
            chunk_len: chunk_len as usize,
            // Every earlier stripe is full, so the offset inside a shard file is regular.
            offset_in_shard: stripe * (u64::from(self.chunk_size) + CHUNK_CRC_LEN),
        }
    }

    /// The longest chunk of an object of `len` bytes (its first stripe's): what a buffer for
    /// one chunk must hold. Small objects need small buffers.
    #[doc(hidden)] // For the store's internals.
    pub fn max_chunk_len(&self, len: u64) -> usize {
        if len == 0 {
            0
        } else {
            self.stripe(len, 0).chunk_len
        }
    }

    /// Like [`Geometry::shard_body_len`], or `None` when a shard file of an object this long
    /// would not fit in 2^63 bytes (only a hostile header claims such a length).
    #[doc(hidden)] // For the store's internals.
    pub fn checked_shard_body_len(&self, len: u64) -> Option<u64> {
        let stripes = self.stripe_count(len);
        if stripes == 0 {
            return Some(0);
        }
        let framed_chunk = u64::from(self.chunk_size) + CHUNK_CRC_LEN;
        let body = stripes.checked_mul(framed_chunk)?;
        (body < 1 << 62).then_some(body).map(|_| self.shard_body_len(len))
    }

    /// Bytes of chunk data and CRCs in one shard file of an object of `len` bytes.
    #[doc(hidden)] // For the store's internals.
    pub fn shard_body_len(&self, len: u64) -> u64 {
        let stripes = self.stripe_count(len);
        if stripes == 0 {
            return 0;
        }
        let last = self.stripe(len, stripes - 1);
        last.offset_in_shard + last.chunk_len as u64 + CHUNK_CRC_LEN
    }
}

/// Where one stripe's bytes sit, in the object and in each shard file's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeShape {
    /// The stripe number.
    pub index: u64,
    /// Offset of the stripe's first data byte in the object.
    pub data_start: u64,
    /// Object bytes in this stripe.
    pub data_len: usize,
    /// Bytes per chunk (data chunks are zero-padded to it).
    pub chunk_len: usize,
    /// Offset of this stripe's chunk within a shard file's body (after the header).
    pub offset_in_shard: u64,
}

/// The self-describing header at the start of every shard file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardHeader {
    /// The store this shard belongs to.
    pub store_id: [u8; 16],
    /// The object's key.
    pub key: String,
    /// Which write of the object this shard belongs to.
    pub stamp: WriteStamp,
    /// A tombstone records a delete; it has no chunks.
    pub tombstone: bool,
    /// Erasure-coding parameters of the object.
    pub geometry: Geometry,
    /// This shard's index, `0..k` data, `k..k+m` parity.
    pub shard_index: u8,
    /// Length of the object in bytes.
    pub object_len: u64,
    /// The whole-object checksum (see [`crate::checksum::ObjectChecksum`]).
    pub object_crc: u32,
}

const FLAG_TOMBSTONE: u16 = 1;

impl ShardHeader {
    /// Encoded size of a header for a key of `key_len` bytes.
    pub fn encoded_len_for_key(key_len: usize) -> usize {
        SHARD_HEADER_FIXED_LEN + key_len + 4
    }

    /// Encoded size of this header.
    pub fn encoded_len(&self) -> usize {
        Self::encoded_len_for_key(self.key.len())
    }

    /// The object this shard belongs to.
    pub fn object_id(&self) -> ObjectId {
        ObjectId::of_key(&self.key)
    }

    /// Encodes the header (layout in FORMAT.md).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = begin(SHARD_MAGIC, self.encoded_len());
        let flags = if self.tombstone { FLAG_TOMBSTONE } else { 0 };
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&self.store_id);
        out.extend_from_slice(&self.object_id().0);
        out.extend_from_slice(&self.stamp.version.to_le_bytes());
        out.extend_from_slice(&self.stamp.write_id.to_le_bytes());
        out.push(self.geometry.k);
        out.push(self.geometry.m);
        out.push(self.shard_index);
        out.push(0);
        out.extend_from_slice(&self.geometry.chunk_size.to_le_bytes());
        out.extend_from_slice(&self.object_len.to_le_bytes());
        out.extend_from_slice(&self.object_crc.to_le_bytes());
        out.extend_from_slice(&(self.key.len() as u16).to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        seal(out)
    }

    /// Decodes a header from the start of `bytes`; returns it and its encoded length.
    ///
    /// Bytes after the header (the chunks) are ignored.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(ShardHeader, usize), FormatError> {
        let mut r = Reader::new(bytes);
        r.magic(SHARD_MAGIC, "shard")?;
        let flags = r.u16()?;
        if flags & !FLAG_TOMBSTONE != 0 {
            return Err(FormatError::InvalidField {
                field: "flags",
                value: flags.into(),
            });
        }
        let store_id = r.array::<16>()?;
        let object_id = ObjectId(r.array::<16>()?);
        let stamp = WriteStamp {
            version: r.u64()?,
            write_id: r.u64()?,
        };
        let geometry = Geometry {
            k: r.u8()?,
            m: r.u8()?,
            chunk_size: 0,
        };
        let shard_index = r.u8()?;
        let reserved = r.u8()?;
        let geometry = Geometry {
            chunk_size: r.u32()?,
            ..geometry
        };
        let object_len = r.u64()?;
        let object_crc = r.u32()?;
        let key_len = usize::from(r.u16()?);
        // Check the checksum before trusting any field's value.
        let body_len = SHARD_HEADER_FIXED_LEN + key_len;
        r.need(body_len + 4)?;
        let stored = u32::from_le_bytes(bytes[body_len..body_len + 4].try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(&bytes[..body_len]);
        if stored != computed {
            return Err(FormatError::Checksum { stored, computed });
        }
        reserved_zero(reserved.into())?;
        geometry.validate()?;
        if usize::from(shard_index) >= geometry.shards() {
            return Err(FormatError::InvalidField {
                field: "shard_index",
                value: shard_index.into(),
            });
        }
        let key = std::str::from_utf8(&bytes[SHARD_HEADER_FIXED_LEN..body_len])
            .map_err(|_| FormatError::InvalidField {
                field: "key",
                value: key_len as u64,
            })?
            .to_owned();
        if crate::key::validate(&key).is_err() && !is_pack_key(&key) {
            return Err(FormatError::InvalidField {
                field: "key",
                value: key_len as u64,
            });
        }
        let tombstone = flags & FLAG_TOMBSTONE != 0;
        // A tombstone has no data; and no object may be so long that its shard file's length
        // overflows (offsets are computed from it everywhere).
        if (tombstone && object_len != 0) || geometry.checked_shard_body_len(object_len).is_none() {
            return Err(FormatError::InvalidField {
                field: "object_len",
                value: object_len,
            });
        }
        let header = ShardHeader {
            store_id,
            key,
            stamp,
            tombstone,
            geometry,
            shard_index,
            object_len,
            object_crc,
        };
        if header.object_id() != object_id {
            return Err(FormatError::InvalidField {
                field: "object_id",
                value: 0,
            });
        }
        Ok((header, body_len + 4))
    }

    /// Length the whole shard file must have: header plus every chunk with its CRC.
    pub fn expected_file_len(&self) -> u64 {
        self.encoded_len() as u64 + self.geometry.shard_body_len(self.object_len)
    }
}

/// The identity file at the top of every location: which store and which slot it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocationIdentity {
    /// The store's random id.
    pub store_id: [u8; 16],
    /// This location's slot in the store's location list.
    pub slot: u16,
    /// How many locations the store has.
    pub location_count: u16,
}

impl LocationIdentity {
    /// Encodes the identity file (36 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = begin(IDENTITY_MAGIC, IDENTITY_LEN);
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.store_id);
        out.extend_from_slice(&self.slot.to_le_bytes());
        out.extend_from_slice(&self.location_count.to_le_bytes());
        seal(out)
    }

    /// Decodes an identity file; the input must be exactly one identity.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        r.magic(IDENTITY_MAGIC, "location identity")?;
        let reserved = r.u16()?;
        let store_id = r.array::<16>()?;
        let slot = r.u16()?;
        let location_count = r.u16()?;
        r.crc_of_preceding()?;
        r.finish()?;
        reserved_zero(reserved)?;
        if slot >= location_count {
            return Err(FormatError::InvalidField {
                field: "slot",
                value: slot.into(),
            });
        }
        Ok(LocationIdentity {
            store_id,
            slot,
            location_count,
        })
    }
}

/// The store file at the store's root: its id, geometry and location list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFile {
    /// The store's random id.
    pub store_id: [u8; 16],
    /// Erasure-coding parameters.
    pub geometry: Geometry,
    /// Objects shorter than this many bytes are stored in packs (0: none are). A store that
    /// packs is written as version 3, which older builds refuse; one that does not stays
    /// version 1.
    pub pack_threshold: u32,
    /// Location directories, one per shard slot (`k + m` of them), as raw path bytes; relative
    /// paths are relative to the store root. With `remote`, an entry may also be an S3 location
    /// (`s3:...`, FORMAT.md).
    pub locations: Vec<Vec<u8>>,
    /// Whether the entries of `locations` are read as location strings that may name remote
    /// locations (version 4 or 6), not only as local paths.
    pub remote: bool,
    /// Whether the small-write log's records carry their segment's tag (version 5 or 6: what
    /// a build that packs creates), so that a segment file reused by an earlier build is read
    /// right, and full segments may be kept (FORMAT.md, "Kept segments"). A
    /// store of version 3 or 4 that packs keeps untagged records, which the older builds
    /// that open it read. Without packs there is no log: read as `true`.
    pub tagged_log: bool,
}

impl StoreFile {
    /// Whether grouped small writes are made durable through the small-write log (a store
    /// that packs: FORMAT.md, "The small-write log").
    pub fn logs_small_writes(&self) -> bool {
        self.pack_threshold > 0
    }

    /// Encodes the store file.
    pub fn encode(&self) -> Vec<u8> {
        let tagged = self.tagged_log && self.pack_threshold > 0;
        let version = match (self.remote, self.pack_threshold, tagged) {
            (true, _, false) => STORE_VERSION_REMOTE,
            (true, _, true) => STORE_VERSION_REMOTE_TAGGED,
            (false, 0, _) => FORMAT_VERSION,
            (false, _, false) => STORE_VERSION_PACKS,
            (false, _, true) => STORE_VERSION_PACKS_TAGGED,
        };
        let mut out = begin_version(STORE_MAGIC, version, 64);
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.store_id);
        out.push(self.geometry.k);
        out.push(self.geometry.m);
        out.extend_from_slice(&(self.locations.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.geometry.chunk_size.to_le_bytes());
        if self.pack_threshold > 0 || self.remote {
            out.extend_from_slice(&self.pack_threshold.to_le_bytes());
        }
        for path in &self.locations {
            out.extend_from_slice(&(path.len() as u16).to_le_bytes());
            out.extend_from_slice(path);
        }
        seal(out)
    }

    /// Decodes a store file; the input must be exactly one store file.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        let version = r.magic_of_versions(
            STORE_MAGIC,
            "store",
            &[
                FORMAT_VERSION,
                STORE_VERSION_PACKS_UNLOGGED,
                STORE_VERSION_PACKS,
                STORE_VERSION_REMOTE,
                STORE_VERSION_PACKS_TAGGED,
                STORE_VERSION_REMOTE_TAGGED,
            ],
        )?;
        let reserved = r.u16()?;
        let store_id = r.array::<16>()?;
        let k = r.u8()?;
        let m = r.u8()?;
        let count = usize::from(r.u16()?);
        let geometry = Geometry {
            k,
            m,
            chunk_size: r.u32()?,
        };
        debug_assert_eq!(r.pos, STORE_FIXED_LEN);
        let pack_threshold = match version {
            // Tagged log records are written only by a store that packs (one that does not
            // stays at version 1 or 4).
            STORE_VERSION_PACKS_UNLOGGED
            | STORE_VERSION_PACKS
            | STORE_VERSION_PACKS_TAGGED
            | STORE_VERSION_REMOTE_TAGGED => match r.u32()? {
                0 => {
                    return Err(FormatError::InvalidField {
                        field: "pack_threshold",
                        value: 0,
                    })
                }
                t => t,
            },
            STORE_VERSION_REMOTE => r.u32()?,
            _ => 0,
        };
        // Each location needs at least its 2-byte length: bound the allocation by the input.
        r.need(r.pos + 2 * count)?;
        let mut locations = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(r.u16()?);
            if len == 0 || len > MAX_PATH_LEN {
                return Err(FormatError::InvalidField {
                    field: "path_len",
                    value: len as u64,
                });
            }
            let path = r.bytes(len)?;
            if path.contains(&0) {
                return Err(FormatError::InvalidField {
                    field: "path",
                    value: 0,
                });
            }
            locations.push(path.to_vec());
        }
        r.crc_of_preceding()?;
        r.finish()?;
        reserved_zero(reserved)?;
        geometry.validate()?;
        if count != geometry.shards() {
            return Err(FormatError::InvalidField {
                field: "location_count",
                value: count as u64,
            });
        }
        Ok(StoreFile {
            store_id,
            geometry,
            pack_threshold,
            locations,
            remote: matches!(version, STORE_VERSION_REMOTE | STORE_VERSION_REMOTE_TAGGED),
            tagged_log: pack_threshold == 0
                || matches!(version, STORE_VERSION_PACKS_TAGGED | STORE_VERSION_REMOTE_TAGGED),
        })
    }
}

/// One object held in a pack: where its bytes are in the pack, and which write of its key it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackEntry {
    /// The object's key.
    pub key: String,
    /// The write (version, write id) this entry is.
    pub stamp: WriteStamp,
    /// A delete: no bytes.
    pub tombstone: bool,
    /// Offset of the object's bytes in the pack.
    pub offset: u64,
    /// The object's length.
    pub len: u64,
    /// CRC32C of the object's bytes.
    pub crc: u32,
}

/// The table at the end of a pack: every entry, then a fixed trailer that says where the table
/// starts (FORMAT.md, "Packs").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackTable {
    /// The entries, in the order of their bytes.
    pub entries: Vec<PackEntry>,
}

impl PackEntry {
    /// The entry of `bytes` written as `key`'s `stamp` (a delete: `tombstone`, no bytes); its
    /// offset is set when the pack is laid out.
    pub fn new(key: &str, stamp: WriteStamp, bytes: &[u8], tombstone: bool) -> Self {
        PackEntry {
            key: key.to_owned(),
            stamp,
            tombstone,
            offset: 0,
            len: bytes.len() as u64,
            crc: crc32c::crc32c(bytes),
        }
    }
}

impl PackTable {
    /// Bytes of the trailer that ends every copy of the table.
    pub const TRAILER_LEN: usize = 32;
    /// Bytes of an entry in the table besides its key.
    pub const ENTRY_FIXED_LEN: usize = 2 + 8 + 8 + 1 + 8 + 8 + 4;

    /// Bytes of the table with its trailer.
    pub fn encoded_len(&self) -> usize {
        Self::encoded_len_of(&self.entries)
    }

    /// Bytes of a table of `entries` with its trailer (offsets do not change it).
    pub fn encoded_len_of<'a>(entries: impl IntoIterator<Item = &'a PackEntry>) -> usize {
        entries
            .into_iter()
            .map(|e| Self::ENTRY_FIXED_LEN + e.key.len())
            .sum::<usize>()
            + Self::TRAILER_LEN
    }

    /// The table and its trailer, for a pack of `pack_len` bytes.
    pub fn encode(&self, pack_len: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        for e in &self.entries {
            out.extend_from_slice(&(e.key.len() as u16).to_le_bytes());
            out.extend_from_slice(e.key.as_bytes());
            out.extend_from_slice(&e.stamp.version.to_le_bytes());
            out.extend_from_slice(&e.stamp.write_id.to_le_bytes());
            out.push(u8::from(e.tombstone));
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.len.to_le_bytes());
            out.extend_from_slice(&e.crc.to_le_bytes());
        }
        let table_len = out.len() as u32;
        out.extend_from_slice(&PACK_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&table_len.to_le_bytes());
        out.extend_from_slice(&pack_len.to_le_bytes());
        seal(out)
    }

    /// The table whose copy ends `bytes` (a data chunk of a pack: FORMAT.md, "Packs"), for a
    /// pack of `pack_len` bytes.
    pub fn decode_at_end(bytes: &[u8], pack_len: u64) -> Result<Self, FormatError> {
        let trailer_at = Self::trailer_at(bytes)?;
        let mut t = Reader::new(&bytes[trailer_at..]);
        t.magic(PACK_MAGIC, "pack")?;
        let _reserved = t.u16()?;
        let _count = t.u32()?;
        let table_len = t.u32()? as usize;
        let start = trailer_at.checked_sub(table_len).ok_or(FormatError::InvalidField {
            field: "table_len",
            value: table_len as u64,
        })?;
        Self::decode(&bytes[start..], pack_len)
    }

    /// Where the trailer ending `bytes` starts.
    fn trailer_at(bytes: &[u8]) -> Result<usize, FormatError> {
        bytes
            .len()
            .checked_sub(Self::TRAILER_LEN)
            .ok_or(FormatError::Truncated {
                len: bytes.len(),
                needed: Self::TRAILER_LEN,
            })
    }

    /// Decodes exactly one table with its trailer, for a pack of `pack_len` bytes.
    pub fn decode(bytes: &[u8], pack_len: u64) -> Result<Self, FormatError> {
        let trailer_at = Self::trailer_at(bytes)?;
        let mut t = Reader::new(bytes);
        t.pos = trailer_at;
        t.magic(PACK_MAGIC, "pack")?;
        let reserved = t.u16()?;
        let count = t.u32()? as usize;
        let table_len = t.u32()? as usize;
        let stated_pack_len = t.u64()?;
        t.crc_of_preceding()?;
        t.finish()?;
        reserved_zero(reserved)?;
        if table_len != trailer_at {
            return Err(FormatError::InvalidField {
                field: "table_len",
                value: table_len as u64,
            });
        }
        if stated_pack_len != pack_len {
            return Err(FormatError::InvalidField {
                field: "pack_len",
                value: stated_pack_len,
            });
        }
        // Bound the allocation by the input: every entry takes its fixed bytes and a key.
        if count > trailer_at / (Self::ENTRY_FIXED_LEN + 1) {
            return Err(FormatError::InvalidField {
                field: "entry_count",
                value: count as u64,
            });
        }
        let mut r = Reader::new(&bytes[..trailer_at]);
        let mut entries = Vec::with_capacity(count);
        let mut end_of_previous = 0u64;
        for _ in 0..count {
            let key_len = usize::from(r.u16()?);
            if key_len == 0 || key_len > MAX_KEY_LEN {
                return Err(FormatError::InvalidField {
                    field: "key_len",
                    value: key_len as u64,
                });
            }
            let key = std::str::from_utf8(r.bytes(key_len)?)
                .ok()
                .filter(|k| !k.contains('\0'))
                .ok_or(FormatError::InvalidField { field: "key", value: 0 })?
                .to_owned();
            let stamp = WriteStamp {
                version: r.u64()?,
                write_id: r.u64()?,
            };
            let tombstone = match r.u8()? {
                0 => false,
                1 => true,
                flags => {
                    return Err(FormatError::InvalidField {
                        field: "entry_flags",
                        value: u64::from(flags),
                    })
                }
            };
            let offset = r.u64()?;
            let len = r.u64()?;
            let crc = r.u32()?;
            // Entries lie in order, apart, inside the pack; a delete has no bytes; version 0
            // is never written.
            let end = offset.checked_add(len).filter(|end| *end <= pack_len);
            let Some(end) = end.filter(|_| offset >= end_of_previous && !(tombstone && len != 0)) else {
                return Err(FormatError::InvalidField {
                    field: "entry_offset",
                    value: offset,
                });
            };
            if stamp.version == 0 {
                return Err(FormatError::InvalidField {
                    field: "entry_version",
                    value: 0,
                });
            }
            end_of_previous = end;
            entries.push(PackEntry {
                key,
                stamp,
                tombstone,
                offset,
                len,
                crc,
            });
        }
        r.finish()?;
        Ok(PackTable { entries })
    }
}

/// Where an interrupted scrub stopped: every object up to `done_through` (in object id order)
/// was verified. Written atomically after each batch of objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubCheckpoint {
    /// Bit 0: repair; bit 1: deep.
    pub flags: u16,
    /// The scrub's `--percent` (1-100), or 0 for all.
    pub percent: u8,
    /// When the scrub started (seconds since the Unix epoch).
    pub started_unix: u64,
    /// Objects verified so far.
    pub objects_done: u64,
    /// The last object verified; all before it in id order were verified too.
    pub done_through: ObjectId,
    /// The scrub's `--prefix` (empty for all), at most [`MAX_KEY_LEN`] bytes.
    pub prefix: Vec<u8>,
    /// What the scrub found so far, opaque here (the scrub's JSON), at most
    /// [`ScrubCheckpoint::MAX_FINDINGS_LEN`] bytes.
    pub findings: Vec<u8>,
}

impl ScrubCheckpoint {
    /// Size without the prefix and the findings.
    pub const FIXED_LEN: usize = 55;
    /// Bound on the findings, so reading a checkpoint is bounded too.
    pub const MAX_FINDINGS_LEN: usize = 8 << 20;
    /// Bound on a whole checkpoint.
    pub const MAX_LEN: usize = Self::FIXED_LEN + MAX_KEY_LEN + Self::MAX_FINDINGS_LEN;

    /// Encodes the checkpoint.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = begin(
            CHECKPOINT_MAGIC,
            Self::FIXED_LEN + self.prefix.len() + self.findings.len(),
        );
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.push(self.percent);
        out.extend_from_slice(&self.started_unix.to_le_bytes());
        out.extend_from_slice(&self.objects_done.to_le_bytes());
        out.extend_from_slice(&self.done_through.0);
        out.extend_from_slice(&(self.prefix.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&(self.findings.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.findings);
        seal(out)
    }

    /// Decodes a checkpoint; the input must be exactly one.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        r.magic(CHECKPOINT_MAGIC, "scrub checkpoint")?;
        let flags = r.u16()?;
        let percent = r.u8()?;
        let started_unix = r.u64()?;
        let objects_done = r.u64()?;
        let done_through = ObjectId(r.array()?);
        let prefix_len = usize::from(r.u16()?);
        if prefix_len > MAX_KEY_LEN {
            return Err(FormatError::InvalidField {
                field: "prefix length",
                value: prefix_len as u64,
            });
        }
        let prefix = r.bytes(prefix_len)?.to_vec();
        let findings_len = r.u32()? as usize;
        if findings_len > Self::MAX_FINDINGS_LEN {
            return Err(FormatError::InvalidField {
                field: "findings length",
                value: findings_len as u64,
            });
        }
        let findings = r.bytes(findings_len)?.to_vec();
        r.crc_of_preceding()?;
        r.finish()?;
        if flags > 3 {
            return Err(FormatError::InvalidField {
                field: "flags",
                value: flags.into(),
            });
        }
        if percent > 100 {
            return Err(FormatError::InvalidField {
                field: "percent",
                value: percent.into(),
            });
        }
        Ok(ScrubCheckpoint {
            flags,
            percent,
            started_unix,
            objects_done,
            done_through,
            prefix,
            findings,
        })
    }
}

/// When each object was last verified by a scrub, for choosing the least recently scrubbed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubHistory {
    /// (object, seconds since the Unix epoch), strictly ascending by object.
    pub entries: Vec<(ObjectId, u64)>,
}

impl ScrubHistory {
    /// When `object` was last scrubbed (seconds since the Unix epoch), 0 for never.
    pub fn last_scrubbed(&self, object: ObjectId) -> u64 {
        self.entries
            .binary_search_by_key(&object, |(id, _)| *id)
            .map_or(0, |i| self.entries[i].1)
    }

    /// Encodes the history.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = begin(HISTORY_MAGIC, 24 + 24 * self.entries.len());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (object, time) in &self.entries {
            out.extend_from_slice(&object.0);
            out.extend_from_slice(&time.to_le_bytes());
        }
        seal(out)
    }

    /// Decodes a history; the input must be exactly one.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        r.magic(HISTORY_MAGIC, "scrub history")?;
        let reserved = r.u16()?;
        let count = r.u64()?;
        // 24 bytes an entry: refuse a count the input cannot hold before allocating for it.
        let needed = count
            .checked_mul(24)
            .and_then(|n| n.checked_add(24))
            .unwrap_or(u64::MAX);
        if (bytes.len() as u64) < needed {
            return Err(FormatError::Truncated {
                len: bytes.len(),
                needed: usize::try_from(needed).unwrap_or(usize::MAX),
            });
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let object = ObjectId(r.array()?);
            let time = r.u64()?;
            if entries.last().is_some_and(|(last, _)| *last >= object) {
                return Err(FormatError::InvalidField {
                    field: "entries (not ascending)",
                    value: time,
                });
            }
            entries.push((object, time));
        }
        r.crc_of_preceding()?;
        r.finish()?;
        reserved_zero(reserved)?;
        Ok(ScrubHistory { entries })
    }
}

/// Starts an encoding: magic number and format version.
fn begin(magic: [u8; 8], capacity: usize) -> Vec<u8> {
    begin_version(magic, FORMAT_VERSION, capacity)
}

fn begin_version(magic: [u8; 8], version: u16, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(&magic);
    out.extend_from_slice(&version.to_le_bytes());
    out
}

/// Ends an encoding: the CRC32C of every byte before it.
fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reserved fields must be zero, so a later version can give them a meaning.
fn reserved_zero(value: u16) -> Result<(), FormatError> {
    match value {
        0 => Ok(()),
        v => Err(FormatError::InvalidField {
            field: "reserved",
            value: v.into(),
        }),
    }
}

/// A bounds-checked little-endian cursor; every read past the end is `Truncated`.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    fn need(&self, end: usize) -> Result<(), FormatError> {
        if self.bytes.len() < end {
            Err(FormatError::Truncated {
                len: self.bytes.len(),
                needed: end,
            })
        } else {
            Ok(())
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        self.need(self.pos + n)?;
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads the magic number and the format version that follows it.
    fn magic(&mut self, magic: [u8; 8], expected: &'static str) -> Result<(), FormatError> {
        self.magic_of_versions(magic, expected, &[FORMAT_VERSION]).map(|_| ())
    }

    /// The magic number, then a version among `versions` (returned).
    fn magic_of_versions(
        &mut self,
        magic: [u8; 8],
        expected: &'static str,
        versions: &[u16],
    ) -> Result<u16, FormatError> {
        if self.array::<8>()? != magic {
            return Err(FormatError::BadMagic { expected });
        }
        let version = self.u16()?;
        if !versions.contains(&version) {
            return Err(FormatError::UnsupportedVersion(version));
        }
        Ok(version)
    }

    /// Reads a CRC32C and checks it against every byte before it.
    fn crc_of_preceding(&mut self) -> Result<(), FormatError> {
        let computed = crc32c::crc32c(&self.bytes[..self.pos]);
        let stored = self.u32()?;
        if stored != computed {
            return Err(FormatError::Checksum { stored, computed });
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), FormatError> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            n => Err(FormatError::TrailingBytes(n)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    // By table, not `write!` per byte: object ids are turned into paths on every file access.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Parses the name of a bucket (the first byte of the ObjectIds it holds): 2 lowercase hex digits.
pub fn bucket_from_hex(s: &str) -> Option<u8> {
    let mut bucket = [0u8; 1];
    parse_hex(s, &mut bucket)?;
    Some(bucket[0])
}

fn parse_hex(s: &str, out: &mut [u8]) -> Option<()> {
    let digits = s.as_bytes();
    if digits.len() != out.len() * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(key: &str) -> ShardHeader {
        ShardHeader {
            store_id: [7; 16],
            key: key.to_owned(),
            stamp: WriteStamp {
                version: 3,
                write_id: 0xdead_beef,
            },
            tombstone: false,
            geometry: Geometry {
                k: 4,
                m: 2,
                chunk_size: 1 << 20,
            },
            shard_index: 5,
            object_len: 12345,
            object_crc: 99,
        }
    }

    /// The offsets in FORMAT.md's shard header table, checked against the encoder.
    #[test]
    fn layout_matches_format_md() {
        let h = header("abc");
        let b = h.encode();
        assert_eq!(&b[0..8], b"SGSHARD\0");
        assert_eq!(u16::from_le_bytes([b[8], b[9]]), 1);
        assert_eq!(&b[12..28], &[7; 16]);
        assert_eq!(&b[28..44], &ObjectId::of_key("abc").0);
        assert_eq!(u64::from_le_bytes(b[44..52].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(b[52..60].try_into().unwrap()), 0xdead_beef);
        assert_eq!((b[60], b[61], b[62], b[63]), (4, 2, 5, 0));
        assert_eq!(u32::from_le_bytes(b[64..68].try_into().unwrap()), 1 << 20);
        assert_eq!(u64::from_le_bytes(b[68..76].try_into().unwrap()), 12345);
        assert_eq!(u32::from_le_bytes(b[76..80].try_into().unwrap()), 99);
        assert_eq!(u16::from_le_bytes([b[80], b[81]]), 3);
        assert_eq!(&b[82..85], b"abc");
        assert_eq!(b.len(), 89);
        let identity = LocationIdentity {
            store_id: [1; 16],
            slot: 2,
            location_count: 6,
        }
        .encode();
        assert_eq!(identity.len(), IDENTITY_LEN);
        assert_eq!(&identity[28..32], &[2, 0, 6, 0]);
        let checkpoint = ScrubCheckpoint {
            flags: 3,
            percent: 10,
            started_unix: 5,
            objects_done: 6,
            done_through: ObjectId([9; 16]),
            prefix: b"ab".to_vec(),
            findings: b"{}".to_vec(),
        }
        .encode();
        assert_eq!(&checkpoint[0..8], b"SGSCRUB\0");
        assert_eq!((checkpoint[10], checkpoint[12]), (3, 10));
        assert_eq!(u64::from_le_bytes(checkpoint[13..21].try_into().unwrap()), 5);
        assert_eq!(u64::from_le_bytes(checkpoint[21..29].try_into().unwrap()), 6);
        assert_eq!(&checkpoint[29..45], &[9; 16]);
        assert_eq!(&checkpoint[45..49], &[2, 0, b'a', b'b']);
        assert_eq!(&checkpoint[49..55], &[2, 0, 0, 0, b'{', b'}']);
        assert_eq!(checkpoint.len(), ScrubCheckpoint::FIXED_LEN + 4);
        assert_eq!(ScrubCheckpoint::decode(&checkpoint).map(|c| c.percent), Ok(10));
    }

    #[test]
    fn header_round_trips_and_every_single_byte_change_is_rejected() {
        let h = header("some/key");
        let bytes = h.encode();
        assert_eq!(ShardHeader::decode_prefix(&bytes), Ok((h, bytes.len())));
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(ShardHeader::decode_prefix(&damaged).is_err(), "byte {i}");
        }
        for len in 0..bytes.len() {
            assert!(ShardHeader::decode_prefix(&bytes[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn objects_too_long_for_their_offsets_are_rejected() {
        let g = Geometry {
            k: 1,
            m: 0,
            chunk_size: 1,
        };
        let mut h = header("k");
        h.geometry = g;
        h.shard_index = 0;
        h.object_len = u64::MAX;
        assert!(ShardHeader::decode_prefix(&h.encode()).is_err());
        h.object_len = (1 << 62) / 5 - 1;
        let (decoded, _) = ShardHeader::decode_prefix(&h.encode()).unwrap();
        assert!(decoded.expected_file_len() < i64::MAX as u64);
        h.object_len = (1 << 62) / 5 + 1;
        assert!(ShardHeader::decode_prefix(&h.encode()).is_err());
    }

    #[test]
    fn last_stripe_shrinks_and_offsets_are_regular() {
        let g = Geometry {
            k: 4,
            m: 2,
            chunk_size: 100,
        };
        assert_eq!(g.stripe_count(0), 0);
        assert_eq!(g.shard_body_len(0), 0);
        assert_eq!(g.stripe_count(400), 1);
        assert_eq!(g.stripe_count(401), 2);
        let last = g.stripe(401, 1);
        assert_eq!((last.data_len, last.chunk_len, last.offset_in_shard), (1, 1, 104));
        assert_eq!(g.shard_body_len(401), 104 + 1 + 4);
        let small = g.stripe(9, 0);
        assert_eq!((small.data_len, small.chunk_len), (9, 3));
    }

    #[test]
    fn write_stamp_file_names_round_trip() {
        let s = WriteStamp {
            version: 42,
            write_id: u64::MAX,
        };
        assert_eq!(WriteStamp::from_file_name(&s.file_name()), Some(s));
        assert_eq!(WriteStamp::from_file_name("../x.shard"), None);
        assert_eq!(
            WriteStamp::from_pending_file_name(&s.pending_file_name()),
            Some(s)
        );
        assert_eq!(WriteStamp::from_file_name(&s.pending_file_name()), None);
        assert_eq!(
            ObjectId::from_hex(&ObjectId::of_key("k").to_hex()),
            Some(ObjectId::of_key("k"))
        );
    }

    #[test]
    fn bucket_names_are_exactly_two_lowercase_hex_digits() {
        for b in 0..=u8::MAX {
            assert_eq!(bucket_from_hex(&format!("{b:02x}")), Some(b));
        }
        for stray in ["+f", "0F", "f", "0ff", "", "g0"] {
            assert_eq!(bucket_from_hex(stray), None, "{stray:?}");
        }
    }

    #[test]
    fn store_file_round_trips_and_rejects_damage() {
        // Version 1 without packs, version 5 with (3 with untagged log records; version 2, of
        // development builds, is read too), version 6 with remote locations (4 untagged, or
        // without packs).
        for (pack_threshold, remote, tagged_log, version) in [
            (0, false, true, 1u16),
            (65536, false, true, 5),
            (65536, false, false, 3),
            (0, true, true, 4),
            (65536, true, true, 6),
            (65536, true, false, 4),
        ] {
            let s = StoreFile {
                tagged_log,
                store_id: [9; 16],
                geometry: Geometry {
                    k: 2,
                    m: 1,
                    chunk_size: 4096,
                },
                pack_threshold,
                locations: vec![b"loc-00".to_vec(), b"/mnt/disk2/sg".to_vec(), b"s3://bucket/p".to_vec()],
                remote,
            };
            let bytes = s.encode();
            assert_eq!(bytes[8..10], version.to_le_bytes());
            assert_eq!(StoreFile::decode(&bytes), Ok(s));
            for i in 0..bytes.len() {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1;
                assert!(StoreFile::decode(&damaged).is_err(), "byte {i}");
            }
        }
    }

    #[test]
    fn pack_tables_round_trip_and_reject_damage() {
        let entry = |key: &str, offset, len, tombstone| PackEntry {
            key: key.into(),
            stamp: WriteStamp {
                version: 7,
                write_id: 3,
            },
            tombstone,
            offset,
            len,
            crc: 0xabcd,
        };
        let table = PackTable {
            entries: vec![entry("a", 0, 10, false), entry("b/c", 10, 5, false), entry("a", 15, 0, true)],
        };
        let bytes = table.encode(100);
        assert_eq!(bytes.len(), table.encoded_len());
        assert_eq!(PackTable::decode(&bytes, 100), Ok(table.clone()));
        // A copy at the end of a chunk is found from the end.
        let mut chunk = vec![7u8; 40];
        chunk.extend(&bytes);
        assert_eq!(PackTable::decode_at_end(&chunk, 100), Ok(table));
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 1;
            assert!(PackTable::decode(&damaged, 100).is_err(), "byte {i}");
        }
        // Entries past the pack, overlapping, or a delete with bytes are refused.
        for bad in [
            vec![entry("a", 95, 10, false)],
            vec![entry("a", 0, 10, false), entry("b", 5, 2, false)],
            vec![entry("a", 0, 3, true)],
        ] {
            let bytes = PackTable { entries: bad }.encode(100);
            assert!(PackTable::decode(&bytes, 100).is_err());
        }
    }

    #[test]
    fn pack_ids_are_their_keys_ids_and_user_keys_are_hashed() {
        let entry = PackEntry {
            key: "k".into(),
            stamp: WriteStamp {
                version: 1,
                write_id: 2,
            },
            tombstone: false,
            offset: 0,
            len: 3,
            crc: 4,
        };
        let pack = ObjectId::of_pack(&[entry]);
        assert!(pack.is_pack());
        assert_eq!(pack.0[0], 0xff);
        assert_eq!(ObjectId::of_key(&pack.pack_key()), pack);
        assert!(!ObjectId::of_key("photos/cat.jpg").is_pack());
        // A key that only looks like a pack's (not a pack id) is hashed like any other.
        let fake = format!("{PACK_KEY_PREFIX}{}", "00".repeat(16));
        assert!(!ObjectId::of_key(&fake).is_pack());
    }
}

/// Small-write log records (FORMAT.md, "The small-write log"): 24-byte header (magic, body
/// length u32, body CRC32C u32, CRC32C of the 16 bytes before u32, the segment's tag u32), then
/// the body.
pub(crate) mod log_record {
    use super::{ObjectId, WriteStamp};

    /// A record's header length.
    pub const HEADER_LEN: usize = 24;
    /// A shard record: the body is a shard file's bytes.
    pub const SHARD: &[u8; 8] = b"SGLOGREC";
    /// A commit record: the body is the object id and the write's version and write id.
    pub const COMMIT: &[u8; 8] = b"SGLOGCOM";
    /// Written over the start of a segment whose packs are folded (empty body): the segment
    /// holds nothing any more, wherever a copy of it is left.
    pub const FOLDED: &[u8; 8] = b"SGLOGFLD";

    /// Written at the end of a full segment that is *kept* (FORMAT.md, "Kept segments"): the
    /// body indexes its committed shard records on this location (`KEPT_ENTRY_LEN` bytes
    /// each), then names the segment (u64); the segment's last 8 bytes give the record's length.
    pub const KEPT: &[u8; 8] = b"SGLOGKPT";
    /// One entry of a kept segment's index: pack id, version, write id, then the offset and
    /// length of the shard file's bytes (a shard record's body) in the segment.
    pub const KEPT_ENTRY_LEN: usize = 48;
    /// The length field that ends a kept segment.
    pub const KEPT_LEN_FIELD: usize = 8;

    /// The room a kept segment's index of `writes` records takes at its end.
    pub fn kept_tail_len(writes: usize) -> usize {
        HEADER_LEN + writes * KEPT_ENTRY_LEN + 8 + KEPT_LEN_FIELD
    }

    /// One entry of a kept segment's index: the write, and where its shard record's body is.
    pub fn kept_entry((object, stamp): (ObjectId, WriteStamp), offset: u64, len: u64) -> [u8; KEPT_ENTRY_LEN] {
        let mut entry = [0u8; KEPT_ENTRY_LEN];
        entry[..16].copy_from_slice(&object.0);
        entry[16..24].copy_from_slice(&stamp.version.to_le_bytes());
        entry[24..32].copy_from_slice(&stamp.write_id.to_le_bytes());
        entry[32..40].copy_from_slice(&offset.to_le_bytes());
        entry[40..48].copy_from_slice(&len.to_le_bytes());
        entry
    }

    /// The tail that keeps segment `segment` (tagged `tag`): its index record of `entries`
    /// (concatenated `kept_entry`s), then that record's length. Written to end exactly at the
    /// segment's end.
    pub fn kept_tail(segment: u64, tag: u32, entries: &[u8]) -> Vec<u8> {
        let mut body = entries.to_vec();
        body.extend_from_slice(&segment.to_le_bytes());
        let mut tail = frame(KEPT, &body, tag);
        tail.extend_from_slice(&(tail.len() as u64).to_le_bytes());
        tail
    }

    /// A kept segment's shard records, from its index `record` (the bytes the length at its
    /// end names), if that verifies as segment `segment`'s, tagged `tag`, inside a file of
    /// `file_len` bytes: each write with the offset and length of its shard file's bytes.
    pub fn kept_index(record: &[u8], segment: u64, tag: u32, file_len: u64) -> Option<Vec<KeptRecord>> {
        let (kind, len) = header(record, tag)?;
        let body = record.get(HEADER_LEN..)?;
        let ours = kind == KEPT && len == body.len() && body_verifies(record, body) && len >= 8;
        let (entries, id) = body.split_at(len.checked_sub(8).filter(|_| ours)?);
        if id != segment.to_le_bytes() || entries.len() % KEPT_ENTRY_LEN != 0 {
            return None;
        }
        let word = |e: &[u8], at: usize| u64::from_le_bytes(e[at..at + 8].try_into().unwrap_or([0; 8]));
        entries
            .chunks_exact(KEPT_ENTRY_LEN)
            .map(|e| {
                let object = ObjectId(e[..16].try_into().ok()?);
                let stamp = WriteStamp { version: word(e, 16), write_id: word(e, 24) };
                let (offset, len) = (word(e, 32), word(e, 40));
                (offset.checked_add(len)? <= file_len).then_some(((object, stamp), offset, len))
            })
            .collect()
    }

    /// A write in a kept segment, and where its shard file's bytes are.
    pub type KeptRecord = ((ObjectId, WriteStamp), u64, u64);

    /// The tag of segment `segment`'s records in a store that tags them (never 0, an untagged
    /// record's): a reused segment's file keeps its earlier records past the new ones' end, and
    /// their tags are another segment's.
    pub fn tag(segment: u64) -> u32 {
        segment as u32 | 1
    }

    /// `body` framed as a record of `kind`, tagged `tag` (0: untagged).
    pub fn frame(kind: &[u8; 8], body: &[u8], tag: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(kind);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        let header_crc = crc32c::crc32c(&out);
        out.extend_from_slice(&header_crc.to_le_bytes());
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    /// The commit record of (`object`, `stamp`), tagged `tag`.
    pub fn commit(object: ObjectId, stamp: WriteStamp, tag: u32) -> Vec<u8> {
        let mut body = object.0.to_vec();
        body.extend_from_slice(&stamp.version.to_le_bytes());
        body.extend_from_slice(&stamp.write_id.to_le_bytes());
        frame(COMMIT, &body, tag)
    }

    /// What a commit record's body names.
    pub fn committed(body: &[u8]) -> Option<(ObjectId, WriteStamp)> {
        let id: [u8; 16] = body.get(..16)?.try_into().ok()?;
        let word = |at: usize| Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?));
        (body.len() == 32).then_some(())?;
        Some((ObjectId(id), WriteStamp { version: word(16)?, write_id: word(24)? }))
    }

    /// A record's header, if it verifies as one of the segment tagged `tag` (or untagged, as
    /// a store of version 3 or 4 writes them): its kind and body length.
    pub fn header(header: &[u8], tag: u32) -> Option<(&'static [u8; 8], usize)> {
        let header = header.get(..HEADER_LEN)?;
        let word = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let kind = [SHARD, COMMIT, FOLDED, KEPT].into_iter().find(|k| header[..8] == k[..])?;
        let ours = word(20) == 0 || word(20) == tag;
        (crc32c::crc32c(&header[..16]) == word(16) && ours).then_some((kind, word(8) as usize))
    }

    /// Whether a segment tagged `tag` starting with `start` is folded.
    pub fn is_folded(start: &[u8], tag: u32) -> bool {
        header(start, tag).is_some_and(|(kind, _)| kind == FOLDED)
    }

    /// Whether a body verifies against its header.
    pub fn body_verifies(header: &[u8], body: &[u8]) -> bool {
        header.len() >= 16 && crc32c::crc32c(body).to_le_bytes() == header[12..16]
    }

    /// A record read back: its kind and body.
    pub type Record<'a> = (&'static [u8; 8], &'a [u8]);

    /// The records of the bytes of a segment tagged `tag`, in order: a record whose body fails
    /// its CRC is skipped, the first header that fails its own or is another segment's (zeros:
    /// the end; a torn append; a reused file's earlier records) ends them. Also returns where
    /// that end is.
    pub fn parse(segment: &[u8], tag: u32) -> (Vec<Record<'_>>, usize) {
        let mut out = Vec::new();
        let mut at = 0usize;
        while let Some((kind, len)) = segment.get(at..).and_then(|h| header(h, tag)) {
            let start = at + HEADER_LEN;
            let Some(body) = segment.get(start..start + len) else {
                break;
            };
            if body_verifies(&segment[at..start], body) {
                out.push((kind, body));
            }
            at = start + len;
        }
        (out, at)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn records_read_back_in_order_a_rotten_one_is_skipped_a_torn_header_ends_them() {
            const TAG: u32 = 0x1234_5679;
            let record = |body: &[u8]| frame(SHARD, body, TAG);
            let (a, b, c) = (record(b"first"), record(b"second"), record(b"third"));
            let mut segment = vec![0u8; 4096];
            let mut at = 0;
            for r in [&a, &b, &c] {
                segment[at..at + r.len()].copy_from_slice(r);
                at += r.len();
            }
            let bodies = |bytes: &[u8]| parse(bytes, TAG).0.into_iter().map(|(_, b)| b.to_vec()).collect::<Vec<_>>();
            assert_eq!(bodies(&segment), [&b"first"[..], b"second", b"third"]);
            assert_eq!(parse(&segment, TAG).1, at, "the end: where the next record goes");
            let mut rotten = segment.clone();
            rotten[a.len() + HEADER_LEN + 2] ^= 1;
            assert_eq!(bodies(&rotten), [&b"first"[..], b"third"]);
            let mut torn = segment.clone();
            torn[a.len() + 9] ^= 1;
            assert_eq!(bodies(&torn), [&b"first"[..]]);
            assert!(!is_folded(&segment, TAG));
            let mut folded = segment.clone();
            folded[..HEADER_LEN].copy_from_slice(&frame(FOLDED, &[], TAG));
            assert!(is_folded(&folded, TAG));
            let object = ObjectId([7; 16]);
            let stamp = WriteStamp { version: 3, write_id: 9 };
            let commit = commit(object, stamp, TAG);
            assert_eq!(committed(&commit[HEADER_LEN..]), Some((object, stamp)));
        }

        #[test]
        fn a_kept_segment_s_index_reads_back_only_as_its_own_segment_s_and_inside_the_file() {
            const SEGMENT: u64 = 0x5e6_0000_0000_0003;
            let t = tag(SEGMENT);
            let write = (ObjectId([3; 16]), WriteStamp { version: 2, write_id: 77 });
            let entries = [kept_entry(write, 24, 1000), kept_entry(write, 2000, 500)].concat();
            let tail = kept_tail(SEGMENT, t, &entries);
            assert_eq!(tail.len(), kept_tail_len(2));
            let record = &tail[..tail.len() - KEPT_LEN_FIELD];
            let len = u64::from_le_bytes(tail[tail.len() - KEPT_LEN_FIELD..].try_into().unwrap());
            assert_eq!(len as usize, record.len());
            let read = kept_index(record, SEGMENT, t, 4096).unwrap();
            assert_eq!(read, vec![(write, 24, 1000), (write, 2000, 500)]);
            // Another segment's (a copy's, a file's earlier use), or a record past the file's end.
            assert_eq!(kept_index(record, SEGMENT + 2, tag(SEGMENT + 2), 4096), None);
            assert_eq!(kept_index(record, SEGMENT, t, 2400), None);
            let mut rotten = record.to_vec();
            rotten[HEADER_LEN + 40] ^= 1;
            assert_eq!(kept_index(&rotten, SEGMENT, t, 4096), None);
            // No shard record reads as a kept index.
            assert_eq!(kept_index(&frame(SHARD, &[0; 56], t), SEGMENT, t, 4096), None);
        }

        #[test]
        fn a_reused_segment_reads_its_own_records_only_not_the_earlier_ones_past_their_end() {
            // The file's first use: three records, then folded (its start overwritten).
            let (old, new) = (tag(0xaaaa_0000_0000_0002), tag(0xbbbb_0000_0000_0004));
            assert_ne!(old, new);
            let mut segment = vec![0u8; 4096];
            let mut at = 0;
            for body in [&b"old one"[..], b"old two", b"old three"] {
                let r = frame(SHARD, body, old);
                segment[at..at + r.len()].copy_from_slice(&r);
                at += r.len();
            }
            segment[..HEADER_LEN].copy_from_slice(&frame(FOLDED, &[], old));
            assert!(is_folded(&segment, old));
            // Reused under another id: the earlier fold mark is not its own, so it is empty.
            assert!(!is_folded(&segment, new));
            assert_eq!(parse(&segment, new), (Vec::new(), 0));
            // One record of its own, ending exactly where an earlier one starts: read, and
            // the earlier one after it is not.
            let first_old = frame(SHARD, b"old one", old).len();
            let own = frame(SHARD, &vec![7u8; first_old - HEADER_LEN], new);
            segment[..own.len()].copy_from_slice(&own);
            let (records, end) = parse(&segment, new);
            assert_eq!(records.len(), 1);
            assert_eq!(end, own.len());
            // Untagged records (a store of version 3 or 4) read as before.
            let untagged = frame(SHARD, b"v3", 0);
            assert_eq!(parse(&untagged, new).0.len(), 1);
        }
    }
}
