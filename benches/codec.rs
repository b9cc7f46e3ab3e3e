//! The codec alone against a memcpy of the same bytes, for (4,2) over a grid of chunk sizes,
//! beside the codec crates it was chosen over; this is the measurement behind the default chunk
//! size and the choice of kernels.
//!
//! Throughput counts the stripe's data bytes (`k * chunk`), for every line of a group.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{RngCore, SeedableRng};
use shardguard::codec::Codec;
use std::hint::black_box;

fn codec(c: &mut Criterion) {
    let (k, m) = (4usize, 2usize);
    let codec = Codec::new(k, m);
    let one_core = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let mut group = c.benchmark_group("codec_4_2");
    for chunk in [64usize << 10, 256 << 10, 1 << 20, 4 << 20] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut chunks: Vec<Vec<u8>> = (0..k + m).map(|_| vec![0u8; chunk]).collect();
        for c in &mut chunks[..k] {
            rng.fill_bytes(c);
        }
        let data: Vec<u8> = chunks[..k].concat();
        let mut copy = vec![0u8; data.len()];
        group.throughput(Throughput::Bytes((k * chunk) as u64));
        group.bench_function(BenchmarkId::new("memcpy", chunk), |b| {
            b.iter(|| copy.copy_from_slice(black_box(&data)))
        });
        let mut slices: Vec<&mut [u8]> = chunks.iter_mut().map(|c| &mut c[..]).collect();
        group.bench_function(BenchmarkId::new("encode", chunk), |b| {
            b.iter(|| codec.encode(black_box(&mut slices)))
        });
        // The same on one core, to separate the kernel's speed from the segment parallelism.
        group.bench_function(BenchmarkId::new("encode_1_core", chunk), |b| {
            b.iter(|| one_core.install(|| codec.encode(black_box(&mut slices))))
        });
        // The crate the code comes from (reed-solomon-erasure, `simd-accel`), called directly on
        // one core: the default backend's kernels, or the ones the `rusty-erasure` feature
        // replaces (`codec::BACKEND` says which the lines above use).
        let rse = reed_solomon_erasure::galois_8::ReedSolomon::new(k, m).unwrap();
        group.bench_function(
            BenchmarkId::new("encode_reed_solomon_erasure_1_core", chunk),
            |b| {
                b.iter(|| {
                    let (data, parity) = slices.split_at_mut(k);
                    let data: Vec<&[u8]> = data.iter().map(|d| &**d).collect();
                    rse.encode_sep(black_box(&data), parity).unwrap()
                })
            },
        );
        // Another codec crate, side by side (its encoder copies the input in).
        let mut simd = reed_solomon_simd::ReedSolomonEncoder::new(k, m, chunk).unwrap();
        group.bench_function(BenchmarkId::new("encode_reed_solomon_simd", chunk), |b| {
            b.iter(|| {
                for c in &chunks[..k] {
                    simd.add_original_shard(c).unwrap();
                }
                let result = simd.encode().unwrap();
                black_box(result.recovery_iter().count());
            })
        });
        group.bench_function(BenchmarkId::new("reconstruct_m_lost", chunk), |b| {
            b.iter(|| {
                // Two data chunks lost: the worst case a read meets within tolerance.
                let mut pairs: Vec<(&mut [u8], bool)> = chunks
                    .iter_mut()
                    .enumerate()
                    .map(|(i, c)| (&mut c[..], i >= m))
                    .collect();
                codec.reconstruct(black_box(&mut pairs), true).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
