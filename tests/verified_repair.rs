//! Repairs can only make things better: a parity chunk written wrong (its checksum valid, so
//! only a rebuild can expose it) beside a rotten chunk of the same stripe is outvoted, not
//! copied; reads return the exact bytes, and a scrub writes nothing until the whole object
//! passes its checksum.

mod common;

use std::os::unix::fs::FileExt;

use common::{chunk_offset, data, rot};
use shardguard::checksum::ChunkId;
use shardguard::location::{ObjectId, WriteStamp};
use shardguard::{ScrubOptions, ScrubVerdict, Store};

const CHUNK: u32 = 1024;
const K: usize = 4;

/// Replaces the chunk of `shard` at `stripe` with different bytes under a valid checksum: what
/// a codec fault, or memory flipping a bit between encoding and checksumming, writes.
fn write_wrong_but_valid(store: &Store, key: &str, shard: usize, stripe: u64) {
    let path = store.shard_path(key, shard).unwrap();
    let stamp = WriteStamp::from_file_name(path.file_name().unwrap().to_str().unwrap()).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let offset = chunk_offset(key, CHUNK, stripe);
    let mut chunk = vec![0u8; CHUNK as usize];
    file.read_exact_at(&mut chunk, offset).unwrap();
    chunk[17] ^= 0x24;
    let id = ChunkId {
        object: ObjectId::of_key(key),
        stamp,
        shard: shard as u8,
        stripe,
    };
    file.write_all_at(&chunk, offset).unwrap();
    file.write_all_at(&id.checksum(&chunk).to_le_bytes(), offset + u64::from(CHUNK))
        .unwrap();
}

fn options(repair: bool, deep: bool) -> ScrubOptions {
    ScrubOptions::default().repair(repair).deep(deep)
}

#[test]
fn wrong_parity_beside_rot_is_outvoted_by_reads_and_repairs() {
    for deep in [false, true] {
        for wrong_parity in [K, K + 1] {
            let ctx = format!("deep {deep}, parity {wrong_parity} wrong");
            let (_dir, store) = common::store(4, 2, CHUNK);
            let bytes = data(wrong_parity as u64, 3 * K * CHUNK as usize);
            store.put("k", &bytes[..]).unwrap();
            write_wrong_but_valid(&store, "k", wrong_parity, 1);
            // Rot in the bytes of a data chunk of the same stripe; its stored checksum survives.
            rot(
                &common::shard_paths(&store, "k")[2],
                chunk_offset("k", CHUNK, 1) + 100,
                3,
            );
            assert!(
                store.get_bytes("k").unwrap() == bytes,
                "{ctx}: a read returned wrong bytes"
            );
            let report = store.scrub(&options(true, deep), &|_| {}).unwrap();
            assert_eq!(report.verdict(), ScrubVerdict::Repaired, "{ctx}: {report:#?}");
            assert!(
                store.get_bytes("k").unwrap() == bytes,
                "{ctx}: the repair wrote wrong bytes"
            );
            let report = store.scrub(&options(false, true), &|_| {}).unwrap();
            assert_eq!(
                report.verdict(),
                ScrubVerdict::Clean,
                "{ctx}: the wrong parity was not fixed: {report:#?}"
            );
        }
    }
}

/// With the rotten chunk's file gone there is no stored checksum to ask: the stripe alone
/// cannot tell the two rebuilds apart, and the whole-object checksum chooses.
#[test]
fn the_object_checksum_chooses_when_the_stripe_cannot() {
    for deep in [false, true] {
        let (dir, store) = common::store(4, 2, CHUNK);
        let bytes = data(77, 3 * K * CHUNK as usize);
        store.put("k", &bytes[..]).unwrap();
        write_wrong_but_valid(&store, "k", K + 1, 2);
        std::fs::remove_file(store.shard_path("k", 1).unwrap()).unwrap();
        let store = common::reopen(dir.path());
        match store.get_bytes("k") {
            Ok(got) => assert!(got == bytes, "a read returned wrong bytes"),
            Err(e) => assert!(matches!(e, shardguard::Error::ObjectChecksum { .. }), "{e}"),
        }
        let report = store.scrub(&options(true, deep), &|_| {}).unwrap();
        assert_eq!(
            report.verdict(),
            ScrubVerdict::Repaired,
            "deep {deep}: {report:#?}"
        );
        assert!(store.get_bytes("k").unwrap() == bytes);
        let report = store.scrub(&options(false, true), &|_| {}).unwrap();
        assert_eq!(report.verdict(), ScrubVerdict::Clean, "deep {deep}: {report:#?}");
    }
}
