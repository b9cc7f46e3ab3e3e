//! Every pattern of up to `m` erased or corrupted chunks in a stripe reads back exactly; `m + 1`
//! bad chunks give an error naming the stripe, never wrong bytes.

mod common;

use common::{chunk_offset, data, rot, shard_paths, store};
use shardguard::Error;

const CHUNK: u32 = 64;

/// All subsets of `0..n` with exactly `size` members.
fn subsets(n: usize, size: usize) -> Vec<Vec<usize>> {
    (0u32..1 << n)
        .filter(|mask| mask.count_ones() as usize == size)
        .map(|mask| (0..n).filter(|i| mask & (1 << i) != 0).collect())
        .collect()
}

#[test]
fn up_to_m_bad_chunks_in_any_pattern_read_back_exactly() {
    for (k, m) in [(2u8, 1u8), (4, 2), (3, 3), (1, 2)] {
        let (_dir, store) = store(k, m, CHUNK);
        let n = usize::from(k + m);
        // Two stripes, the second one short, so both chunk sizes are exercised.
        let bytes = data(u64::from(k * 10 + m), usize::from(k) * CHUNK as usize + 5);
        let mut case = 0;
        for size in 0..=usize::from(m) {
            for bad in subsets(n, size) {
                // Each bad shard is either deleted (an erasure) or rotten in stripe 0 (a
                // corruption); try every mix of the two.
                for modes in 0u32..1 << bad.len() {
                    case += 1;
                    let key = format!("case-{case}");
                    store.put(&key, &bytes[..]).unwrap();
                    let paths = shard_paths(&store, &key);
                    for (i, &shard) in bad.iter().enumerate() {
                        if modes & (1 << i) != 0 {
                            std::fs::remove_file(&paths[shard]).unwrap();
                        } else {
                            rot(&paths[shard], chunk_offset(&key, CHUNK, 0) + 3, 2);
                        }
                    }
                    let got = store.get_bytes(&key);
                    assert_eq!(
                        got.as_deref().ok(),
                        Some(&bytes[..]),
                        "k={k} m={m} bad={bad:?} modes={modes:b}: {got:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn m_plus_one_bad_chunks_is_unrecoverable_naming_the_stripe() {
    for (k, m) in [(2u8, 1u8), (4, 2), (3, 3), (1, 2)] {
        let (_dir, store) = store(k, m, CHUNK);
        let n = usize::from(k + m);
        let bytes = data(7, 3 * usize::from(k) * CHUNK as usize);
        for (case, bad) in subsets(n, usize::from(m) + 1).into_iter().enumerate() {
            let key = format!("case-{case}");
            store.put(&key, &bytes[..]).unwrap();
            let paths = shard_paths(&store, &key);
            for &shard in &bad {
                rot(&paths[shard], chunk_offset(&key, CHUNK, 1), 1);
            }
            match store.get_bytes(&key) {
                Err(Error::Unrecoverable {
                    key: named,
                    stripe,
                    available,
                    needed,
                }) => {
                    assert_eq!((named.as_str(), stripe), (key.as_str(), 1));
                    assert_eq!((available, needed), (usize::from(k) - 1, usize::from(k)));
                }
                other => panic!("k={k} m={m} bad={bad:?}: expected Unrecoverable, got {other:?}"),
            }
            // The streaming reader hands out the verified stripe before the broken one, then
            // fails: never a byte of the broken stripe.
            let mut reader = store.get(&key).unwrap();
            let mut out = Vec::new();
            assert!(reader.copy_to(&mut out).is_err());
            assert_eq!(out, &bytes[..out.len()]);
            assert!(out.len() <= usize::from(k) * CHUNK as usize);
        }
    }
}

#[test]
fn m_plus_one_missing_shard_files_is_an_error_not_wrong_bytes() {
    let (_dir, store) = store(4, 2, CHUNK);
    let bytes = data(8, 1000);
    store.put("k", &bytes[..]).unwrap();
    let paths = shard_paths(&store, "k");
    for p in &paths[..3] {
        std::fs::remove_file(p).unwrap();
    }
    let err = store.get_bytes("k").unwrap_err();
    assert!(
        matches!(
            err,
            Error::NoQuorum {
                held: 3,
                needed: 4,
                ..
            }
        ),
        "{err:?}"
    );
}
