//! The fuzz targets' properties, checked by proptest on every commit (stable toolchain): the
//! format parsers reject or round-trip, the codec recovers within tolerance and never returns
//! wrong bytes, retransmission cures transient faults within budget and deadline, and a store
//! under a random mix of operations and faults agrees with a reference model.
//!
//! Inputs are random bytes decoded by `arbitrary`, exactly as the fuzz targets decode theirs, so
//! a failing case here replays under `cargo fuzz run` and the other way round.

use arbitrary::{Arbitrary, Unstructured};
use proptest::collection::vec;
use proptest::prelude::*;
use shardguard::fault::properties::{
    check_arq_retransmit, check_codec_recover, check_format_decode, check_store_ops, ArqCase, CodecCase,
    StoreCase,
};
use shardguard::format::{
    Geometry, LocationIdentity, ObjectId, PackEntry, PackTable, ShardHeader, StoreFile, WriteStamp,
};

fn decode<'a, T: Arbitrary<'a>>(bytes: &'a [u8]) -> T {
    T::arbitrary(&mut Unstructured::new(bytes)).expect("arbitrary never fails on short input")
}

/// Valid encodings with a few bytes changed: the inputs most likely to slip past a check.
fn near_valid(seed: &[u8], edits: &[(u16, u8)]) -> Vec<u8> {
    let key = String::from_utf8_lossy(&seed[..seed.len().min(40)]).replace('\0', "_");
    let key = if key.is_empty() { "k".to_owned() } else { key };
    let mut bytes = match seed.first().copied().unwrap_or(0) % 4 {
        0 => ShardHeader {
            store_id: [3; 16],
            key,
            stamp: WriteStamp {
                version: 9,
                write_id: 4,
            },
            tombstone: false,
            geometry: Geometry {
                k: 3,
                m: 2,
                chunk_size: 4096,
            },
            shard_index: 1,
            object_len: 77,
            object_crc: 5,
        }
        .encode(),
        1 => LocationIdentity {
            store_id: [1; 16],
            slot: 1,
            location_count: 3,
        }
        .encode(),
        2 => StoreFile {
            store_id: ObjectId::of_key(&key).0,
            geometry: Geometry {
                k: 2,
                m: 1,
                chunk_size: 64,
            },
            pack_threshold: (seed.len() % 3) as u32 * 4096,
            locations: vec![b"a".to_vec(), key.into_bytes(), b"/c".to_vec()],
            remote: seed.len() % 2 == 0,
            tagged_log: seed.len() % 5 != 0,
        }
        .encode(),
        // A pack of two objects and a delete: their bytes, then the table and trailer.
        _ => {
            let entry = |key: String, offset, len, tombstone| PackEntry {
                key,
                stamp: WriteStamp {
                    version: 3,
                    write_id: 8,
                },
                tombstone,
                offset,
                len,
                crc: 11,
            };
            let mut pack = seed.to_vec();
            let n = pack.len() as u64;
            let table = PackTable {
                entries: vec![
                    entry(key.clone(), 0, n / 2, false),
                    entry("b".into(), n / 2, n - n / 2, false),
                    entry(key, n, 0, true),
                ],
            };
            let pack_len = n + table.encoded_len() as u64;
            pack.extend(table.encode(pack_len));
            pack
        }
    };
    for &(at, mask) in edits {
        let len = bytes.len();
        bytes[usize::from(at) % len] ^= mask;
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn format_parsers_reject_or_round_trip(bytes in vec(any::<u8>(), 0..600)) {
        prop_assert_eq!(check_format_decode(&bytes), Ok(()));
    }

    #[test]
    fn format_parsers_reject_or_round_trip_near_valid_input(
        seed in vec(any::<u8>(), 0..60),
        edits in vec((any::<u16>(), any::<u8>()), 0..3),
    ) {
        prop_assert_eq!(check_format_decode(&near_valid(&seed, &edits)), Ok(()));
    }

    #[test]
    fn codec_recovers_within_tolerance_and_never_returns_wrong_bytes(bytes in vec(any::<u8>(), 0..400)) {
        let case: CodecCase = decode(&bytes);
        prop_assert_eq!(check_codec_recover(&case), Ok(()), "{:?}", case);
    }

    #[test]
    fn retransmission_cures_transient_faults_within_budget(bytes in vec(any::<u8>(), 0..64)) {
        let case: ArqCase = decode(&bytes);
        prop_assert_eq!(check_arq_retransmit(&case), Ok(()), "{:?}", case);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn a_store_under_operations_and_faults_agrees_with_the_model(bytes in vec(any::<u8>(), 0..1500)) {
        let case: StoreCase = decode(&bytes);
        prop_assert_eq!(check_store_ops(&case), Ok(()), "{:?}", case);
    }
}

/// A case the model test found (2026-11-27), replayed: in a 1 + 1 packing store a pack's
/// parity file rebuilt by a scrub lacked the pack's table (no parity file was left to copy it
/// from), so once the pack was down to that one file in doubt, a key in it read as absent.
#[test]
fn a_packed_key_in_a_pack_down_to_a_rebuilt_parity_file_is_not_reported_absent() {
    let bytes: Vec<u8> = vec![
        168, 133, 231, 186, 209, 10, 184, 8, 47, 45, 232, 140, 21, 167, 35, 176, 145, 101, 249, 61, 51, 11,
        43, 214, 252, 88, 166, 199, 191, 119, 223, 222, 103, 230, 154, 106, 203, 234, 85, 177, 69, 99, 94,
        128, 252, 147, 77, 255, 133, 70, 80, 115, 69, 202, 138, 117, 17, 194, 116, 139, 7, 139, 72, 78, 84,
        209, 228, 196, 186, 214, 205, 54, 169, 45, 177, 96, 65, 185, 132, 212, 2, 66, 6, 200, 1, 84, 168,
        109, 78, 8, 16, 203, 152, 16, 153, 64, 231, 23, 242, 213, 79, 228, 7, 239, 43, 90, 194, 189, 135,
        248, 97, 243, 86, 162, 7, 206, 39, 5, 175, 184, 90, 123, 208, 67, 201, 46, 48, 90, 34, 171, 103, 55,
        97, 219, 95, 251, 230, 210, 129, 61, 54, 124, 238, 70, 155, 35, 150, 78, 105, 186, 148, 160, 210,
        112, 166, 254, 69, 2, 174, 9, 24, 248, 250, 104, 99, 25, 78, 160, 118, 111, 85, 47, 183, 144, 56,
        193, 73, 78, 131, 227, 22, 149, 231, 120, 154, 101, 137, 90, 133, 166, 130, 32, 212, 240, 206, 70,
        49, 11, 151, 80, 225, 155, 205, 114, 139, 32, 35, 79, 86, 240, 92, 126, 240, 215, 217, 4, 56, 9, 29,
        87, 37, 199, 35, 99, 127, 100, 218, 45, 195, 147, 2, 91, 106, 113, 98, 87, 231, 232, 243, 17, 229,
        141, 117, 10, 138, 131, 160, 59, 61, 244, 11, 215, 198, 204, 98, 92, 240, 77, 80, 17, 236, 89, 86,
        126, 88, 152, 183, 230, 224, 106, 230, 127, 185, 187, 133, 51, 33, 175, 208, 184, 115, 144, 74, 129,
        45, 238, 182, 118, 148, 241, 24, 31, 137, 219, 105, 214, 178, 37, 174, 158, 68, 107, 65, 193, 65, 4,
        62, 53, 59, 248, 24, 22, 226, 17, 197, 25, 18, 88, 253, 137, 152, 151, 205, 187, 177, 62, 77, 181,
        84, 186, 160, 44, 112, 210, 132, 174, 218, 170, 197, 245, 47, 231, 207, 19, 14, 1, 89, 50, 30, 21,
        197, 0, 27, 135, 217, 193, 124, 226, 168, 87, 131, 231, 94, 215, 112, 107, 98, 81, 163, 216, 149,
        151, 192,
    ];
    let case: StoreCase = decode(&bytes);
    assert_eq!(check_store_ops(&case), Ok(()), "{case:?}");
}
