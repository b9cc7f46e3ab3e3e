//! CRC32C of chunks, bound to the chunk's identity.
//!
//! A chunk's checksum covers its bytes *and* where it belongs: (object, write, shard, stripe).
//! A chunk copied to the wrong file or offset, or left over from an earlier write of the same
//! object, therefore fails verification and becomes an erasure instead of wrong data.

use crate::format::{ObjectId, WriteStamp};

/// The checksum stored after a chunk: CRC32C over the identity binding, then the chunk bytes.
pub fn chunk_crc(object: ObjectId, stamp: WriteStamp, shard: u8, stripe: u64, chunk: &[u8]) -> u32 {
    let mut binding = [0u8; 41];
    binding[..16].copy_from_slice(&object.0);
    binding[16..24].copy_from_slice(&stamp.version.to_le_bytes());
    binding[24..32].copy_from_slice(&stamp.write_id.to_le_bytes());
    binding[32] = shard;
    binding[33..41].copy_from_slice(&stripe.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&binding), chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_of_the_identity_changes_the_checksum() {
        let object = ObjectId::of_key("a");
        let stamp = WriteStamp {
            version: 1,
            write_id: 2,
        };
        let base = chunk_crc(object, stamp, 0, 0, b"data");
        assert_ne!(base, chunk_crc(ObjectId::of_key("b"), stamp, 0, 0, b"data"));
        assert_ne!(
            base,
            chunk_crc(object, WriteStamp { version: 2, ..stamp }, 0, 0, b"data")
        );
        assert_ne!(
            base,
            chunk_crc(object, WriteStamp { write_id: 3, ..stamp }, 0, 0, b"data")
        );
        assert_ne!(base, chunk_crc(object, stamp, 1, 0, b"data"));
        assert_ne!(base, chunk_crc(object, stamp, 0, 1, b"data"));
        assert_ne!(base, chunk_crc(object, stamp, 0, 0, b"datA"));
    }
}
