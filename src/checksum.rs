//! CRC32C of chunks, bound to the chunk's identity, and the whole-object checksum built on them.
//!
//! A chunk's checksum covers its bytes *and* where it belongs: (object, write, shard, stripe).
//! A chunk copied to the wrong file or offset, or left over from an earlier write of the same
//! object, therefore fails verification and becomes an erasure instead of wrong data.
//!
//! The identity is appended after the chunk bytes, so the plain CRC32C of the bytes is an
//! intermediate value: the object checksum is built from it without a second pass over the data.

use crate::format::{ObjectId, WriteStamp};

/// Where a chunk belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkId {
    /// The object.
    pub object: ObjectId,
    /// The write of the object.
    pub stamp: WriteStamp,
    /// The shard index.
    pub shard: u8,
    /// The stripe number.
    pub stripe: u64,
}

impl ChunkId {
    /// The stored checksum of a chunk whose bytes have CRC32C `data_crc`.
    pub fn bind(&self, data_crc: u32) -> u32 {
        let mut binding = [0u8; 41];
        binding[..16].copy_from_slice(&self.object.0);
        binding[16..24].copy_from_slice(&self.stamp.version.to_le_bytes());
        binding[24..32].copy_from_slice(&self.stamp.write_id.to_le_bytes());
        binding[32] = self.shard;
        binding[33..41].copy_from_slice(&self.stripe.to_le_bytes());
        crc32c::crc32c_append(data_crc, &binding)
    }

    /// The stored checksum of `chunk`: CRC32C over the chunk bytes, then the identity.
    pub fn checksum(&self, chunk: &[u8]) -> u32 {
        self.bind(crc32c::crc32c(chunk))
    }
}

/// The whole-object checksum: CRC32C over the little-endian CRC32C of every data chunk, in
/// object order (the last stripe's chunks with their zero padding). Fed chunk by chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectChecksum(u32);

impl ObjectChecksum {
    /// Adds the next data chunk's CRC32C.
    pub fn push(&mut self, data_crc: u32) {
        self.0 = crc32c::crc32c_append(self.0, &data_crc.to_le_bytes());
    }

    /// The checksum so far.
    pub fn value(&self) -> u32 {
        self.0
    }

    /// Continues from a [`ObjectChecksum::value`] saved earlier (a resumed scrub).
    pub fn resume(value: u32) -> Self {
        ObjectChecksum(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_of_the_identity_changes_the_checksum() {
        let id = ChunkId {
            object: ObjectId::of_key("a"),
            stamp: WriteStamp {
                version: 1,
                write_id: 2,
            },
            shard: 0,
            stripe: 0,
        };
        let base = id.checksum(b"data");
        let changed = [
            ChunkId {
                object: ObjectId::of_key("b"),
                ..id
            },
            ChunkId {
                stamp: WriteStamp {
                    version: 2,
                    ..id.stamp
                },
                ..id
            },
            ChunkId {
                stamp: WriteStamp {
                    write_id: 3,
                    ..id.stamp
                },
                ..id
            },
            ChunkId { shard: 1, ..id },
            ChunkId { stripe: 1, ..id },
        ];
        for other in changed {
            assert_ne!(base, other.checksum(b"data"), "{other:?}");
        }
        assert_ne!(base, id.checksum(b"datA"));
        // Pinned so an accidental change of the on-disk checksum fails loudly.
        assert_eq!(base, 0xd8c5_970a, "{base:#010x}");
    }
}
