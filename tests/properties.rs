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
