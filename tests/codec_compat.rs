//! The codec writes exactly the parity reed-solomon-erasure writes, and rebuilds exactly the lost
//! chunks, so shards written by any version of shardguard stay valid, whichever kernels are built
//! (reed-solomon-erasure's own by default, rusty_erasure's with the `rusty-erasure` feature:
//! `.ci/run` runs this file with each).

use proptest::prelude::*;
use reed_solomon_erasure::galois_8::ReedSolomon;
use shardguard::codec::Codec;

/// Parity as the reference crate computes it.
fn reference_parity(k: usize, m: usize, data: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let rs = ReedSolomon::new(k, m).unwrap();
    let mut parity = vec![vec![0u8; data[0].len()]; m];
    let data: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
    let mut out: Vec<&mut [u8]> = parity.iter_mut().map(|p| &mut p[..]).collect();
    rs.encode_sep(&data, &mut out).unwrap();
    parity
}

/// Encodes with shardguard's codec and checks the parity against the reference, then loses
/// the chunks in `lost` and checks both rebuild modes restore them exactly.
fn check(k: usize, m: usize, data: Vec<Vec<u8>>, lost: &[usize]) {
    let codec = Codec::new(k, m);
    let len = data[0].len();
    let mut stripe = data.clone();
    stripe.extend((0..m).map(|_| vec![0u8; len]));
    let mut chunks: Vec<&mut [u8]> = stripe.iter_mut().map(|c| &mut c[..]).collect();
    codec.encode(&mut chunks);
    assert!(
        stripe[k..] == reference_parity(k, m, &data)[..],
        "parity of ({k},{m}) x {len}"
    );
    for data_only in [false, true] {
        let mut damaged: Vec<Vec<u8>> = stripe
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if lost.contains(&i) {
                    vec![0xA5; len]
                } else {
                    c.clone()
                }
            })
            .collect();
        let mut pairs: Vec<(&mut [u8], bool)> = damaged
            .iter_mut()
            .enumerate()
            .map(|(i, c)| (&mut c[..], !lost.contains(&i)))
            .collect();
        codec.reconstruct(&mut pairs, data_only).unwrap();
        let wanted = if data_only { k } else { k + m };
        assert!(
            damaged[..wanted] == stripe[..wanted],
            "({k},{m}) x {len} lost {lost:?}"
        );
    }
}

fn stripe(k: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
    (0..k)
        .map(|i| {
            (0..len)
                .map(|j| {
                    (seed
                        .wrapping_mul(31)
                        .wrapping_add((i * 131 + j * 7 + j / 253) as u64)
                        >> 3) as u8
                })
                .collect()
        })
        .collect()
}

proptest! {
    #[test]
    fn parity_and_rebuilds_match_the_reference_crate(
        k in 1usize..=12,
        m in 1usize..=6,
        len in 1usize..2000,
        seed: u64,
        lost_seed: u64,
    ) {
        // Up to m chunks lost, chosen by the seed.
        let n = k + m;
        let mut lost: Vec<usize> = (0..n).collect();
        let mut state = lost_seed;
        for i in (1..n).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lost.swap(i, (state >> 33) as usize % (i + 1));
        }
        lost.truncate((lost_seed % (m as u64 + 1)) as usize);
        check(k, m, stripe(k, len, seed), &lost);
    }
}

/// Chunks long enough to be coded in parallel segments, with the widest codes the format
/// allows, so the segment split and the large matrices are covered too.
#[test]
fn long_chunks_and_wide_codes_match_the_reference_crate() {
    check(4, 2, stripe(4, 1 << 20, 1), &[0, 3]);
    check(3, 3, stripe(3, 300_001, 2), &[1, 4, 5]);
    check(10, 4, stripe(10, 200_003, 3), &[0, 5, 9, 12]);
    check(
        200,
        55,
        stripe(200, 97, 4),
        &(0..55).map(|i| i * 4).collect::<Vec<_>>(),
    );
}
