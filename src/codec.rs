//! The only module that knows the Reed-Solomon crate: encode parity, rebuild lost chunks.
//!
//! The code is reed-solomon-erasure's (its systematic Vandermonde matrix over GF(2^8)/0x11d),
//! so every shard ever written stays valid; the arithmetic runs on rusty_erasure's kernels,
//! which take that matrix as it is. Measured side by side in `benches/codec.rs` on this
//! project's machine (AMD EPYC with GFNI, one core, (4,2), 1 MiB chunks): reed-solomon-erasure
//! with `simd-accel` 13.0 GiB/s, rusty_erasure 41.9 GiB/s, memcpy of the same data 35.6 GiB/s.
//! That crate makes one pass over each parity chunk per data chunk; rusty_erasure updates every
//! parity row in one pass over the data, like ISA-L. `tests/codec_compat.rs` holds the two
//! crates to the same bytes.
//!
//! `m = 0` (plain striping) needs no codec at all; the crate refuses zero parity shards, so that
//! case is handled here rather than by every caller.

use rayon::prelude::*;
use rusty_erasure::Coder;

/// Too many chunks of a stripe are missing to rebuild it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{available} chunks present < {needed} needed")]
pub struct TooFewChunks {
    /// Chunks present.
    pub available: usize,
    /// Chunks needed (`k`).
    pub needed: usize,
}

/// A Reed-Solomon code with `k` data and `m` parity chunks per stripe.
#[derive(Debug)]
pub struct Codec {
    k: usize,
    m: usize,
    coder: Option<Coder>,
}

impl Codec {
    /// A codec for `k` data and `m` parity chunks; `k >= 1` and `k + m <= 255` must hold (the
    /// caller validated the geometry).
    pub fn new(k: usize, m: usize) -> Self {
        let coder = (m > 0).then(|| {
            let matrix = rusty_erasure::compat::reed_solomon_erasure_matrix(k, m)
                .expect("geometry validated: 1 <= k, k + m <= 255");
            rusty_erasure::coder(matrix).expect("a systematic matrix with parity rows")
        });
        Codec { k, m, coder }
    }

    /// Data chunks per stripe.
    pub fn data_shards(&self) -> usize {
        self.k
    }

    /// Parity chunks per stripe.
    pub fn parity_shards(&self) -> usize {
        self.m
    }

    /// Fills the `m` parity chunks from the `k` data chunks; all chunks have one length.
    ///
    /// Long chunks are cut into segments coded on all cores: Reed-Solomon works byte position by
    /// byte position, so segments are independent (see `benches/codec.rs` for the gain).
    pub fn encode(&self, chunks: &mut [&mut [u8]]) {
        self.encode_with(chunks, true)
    }

    /// [`Codec::encode`] on the calling thread only: for code holding an object lock, which must
    /// never wait on rayon's work stealing (see the `lock` module).
    pub fn encode_on_this_thread(&self, chunks: &mut [&mut [u8]]) {
        self.encode_with(chunks, false)
    }

    fn encode_with(&self, chunks: &mut [&mut [u8]], parallel: bool) {
        debug_assert_eq!(chunks.len(), self.k + self.m);
        let Some(coder) = &self.coder else { return };
        let len = chunks.first().map_or(0, |c| c.len());
        let encode = |mut segment: Vec<&mut [u8]>| {
            let (data, parity) = segment.split_at_mut(self.k);
            let data: Vec<&[u8]> = data.iter().map(|d| &**d).collect();
            coder
                .encode(&data, parity)
                .expect("chunk count and lengths are set by the caller")
        };
        let segments = split(chunks.iter_mut().map(|c| &mut **c), len, parallel);
        match parallel {
            true => segments.into_par_iter().for_each(encode),
            false => segments.into_iter().for_each(encode),
        }
    }

    /// Computes the `m` parity chunks of read-only `data` into `parity` (all of one length), on
    /// one core: for checking stored parity, not for the write path.
    pub fn encode_parity(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) {
        if let Some(coder) = &self.coder {
            coder
                .encode(data, parity)
                .expect("chunk count and lengths are set by the caller");
        }
    }

    /// Rebuilds the missing chunks (`false` in the pair) from the present ones, on all cores.
    ///
    /// With `data_only`, only missing data chunks are rebuilt (what a read needs).
    pub fn reconstruct(&self, chunks: &mut [(&mut [u8], bool)], data_only: bool) -> Result<(), TooFewChunks> {
        self.reconstruct_with(chunks, data_only, true)
    }

    /// [`Codec::reconstruct`] on the calling thread only, for code holding an object lock.
    pub fn reconstruct_on_this_thread(
        &self,
        chunks: &mut [(&mut [u8], bool)],
        data_only: bool,
    ) -> Result<(), TooFewChunks> {
        self.reconstruct_with(chunks, data_only, false)
    }

    fn reconstruct_with(
        &self,
        chunks: &mut [(&mut [u8], bool)],
        data_only: bool,
        parallel: bool,
    ) -> Result<(), TooFewChunks> {
        let available = chunks.iter().filter(|(_, present)| *present).count();
        let too_few = TooFewChunks {
            available,
            needed: self.k,
        };
        if available < self.k {
            return Err(too_few);
        }
        let present: Vec<bool> = chunks.iter().map(|(_, p)| *p).collect();
        let wanted = if data_only { self.k } else { chunks.len() };
        let rebuild: Vec<usize> = (0..wanted).filter(|&i| !present[i]).collect();
        if rebuild.is_empty() {
            return Ok(());
        }
        let coder = self
            .coder
            .as_ref()
            .expect("with m = 0 every chunk is needed, so a missing one failed the count above");
        // One plan (the inverted submatrix) serves every segment.
        let plan = coder.decode_plan(&present, &rebuild).map_err(|_| too_few)?;
        let len = chunks.first().map_or(0, |(c, _)| c.len());
        let recover = |segment: Vec<&mut [u8]>| {
            let mut shards: Vec<Option<&[u8]>> = Vec::with_capacity(segment.len());
            let mut out: Vec<&mut [u8]> = Vec::with_capacity(rebuild.len());
            for (i, piece) in segment.into_iter().enumerate() {
                if present[i] {
                    shards.push(Some(piece));
                } else {
                    shards.push(None);
                    if i < wanted {
                        out.push(piece);
                    }
                }
            }
            coder.recover_with(&plan, &shards, &mut out).map_err(|_| too_few)
        };
        let segments = split(chunks.iter_mut().map(|(c, _)| &mut **c), len, parallel);
        match parallel {
            true => segments.into_par_iter().try_for_each(recover),
            false => segments.into_iter().try_for_each(recover),
        }
    }
}

/// Chunks shorter than this are coded on one core: splitting costs more than it saves.
const PARALLEL_MIN_LEN: usize = 128 << 10;

/// Segment length when coding in parallel: a segment of every chunk of a stripe stays within a
/// core's L2 cache while the codec works through it.
const SEGMENT_LEN: usize = 64 << 10;

/// Cuts every chunk (all of length `len`) into the same segments and regroups them per segment:
/// `out[s][i]` is segment `s` of chunk `i`. Not `parallel`: one segment.
fn split<'a>(
    chunks: impl Iterator<Item = &'a mut [u8]>,
    len: usize,
    parallel: bool,
) -> Vec<Vec<&'a mut [u8]>> {
    let parts = if !parallel || len < PARALLEL_MIN_LEN {
        1
    } else {
        len.div_ceil(SEGMENT_LEN).max(rayon::current_num_threads())
    };
    // Segments on 64-byte boundaries keep the SIMD kernels on full-width loads.
    let segment = len.div_ceil(parts).next_multiple_of(64).max(1);
    let mut out: Vec<Vec<&'a mut [u8]>> = Vec::new();
    for chunk in chunks {
        for (s, piece) in chunk.chunks_mut(segment).enumerate() {
            if out.len() <= s {
                out.push(Vec::new());
            }
            out[s].push(piece);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long enough to be coded in parallel segments, so the segment split is covered too.
    #[test]
    fn any_m_lost_chunks_are_rebuilt_exactly() {
        let codec = Codec::new(3, 2);
        let len = 300_001;
        let mut chunks: Vec<Vec<u8>> = (0..5)
            .map(|i| (0..len).map(|j| (i * 31 + j * 7 + j / 251) as u8).collect())
            .collect();
        let mut slices: Vec<&mut [u8]> = chunks.iter_mut().map(|c| &mut c[..]).collect();
        codec.encode(&mut slices);
        let original = chunks.clone();
        for a in 0..5 {
            for b in a + 1..5 {
                let mut rebuilt: Vec<Vec<u8>> = original
                    .iter()
                    .enumerate()
                    .map(|(i, c)| if i == a || i == b { vec![0; len] } else { c.clone() })
                    .collect();
                let mut pairs: Vec<(&mut [u8], bool)> = rebuilt
                    .iter_mut()
                    .enumerate()
                    .map(|(i, c)| (&mut c[..], i != a && i != b))
                    .collect();
                codec.reconstruct(&mut pairs, false).unwrap();
                assert!(rebuilt == original, "lost {a} and {b}");
            }
        }
    }

    #[test]
    fn parity_from_read_only_data_matches_encode() {
        let codec = Codec::new(3, 2);
        let mut chunks: Vec<Vec<u8>> = (0..5)
            .map(|i| (0..100).map(|j| (i * 7 + j * 3) as u8).collect())
            .collect();
        let mut all: Vec<&mut [u8]> = chunks.iter_mut().map(|c| &mut c[..]).collect();
        codec.encode(&mut all);
        let data: Vec<&[u8]> = chunks[..3].iter().map(|c| &c[..]).collect();
        let mut parity = vec![vec![0u8; 100]; 2];
        let mut out: Vec<&mut [u8]> = parity.iter_mut().map(|p| &mut p[..]).collect();
        codec.encode_parity(&data, &mut out);
        assert!(parity[..] == chunks[3..]);
    }

    #[test]
    fn more_than_m_lost_is_an_error() {
        let codec = Codec::new(2, 1);
        let mut bufs = [[0u8; 8]; 3];
        let mut pairs: Vec<(&mut [u8], bool)> = bufs
            .iter_mut()
            .enumerate()
            .map(|(i, b)| (&mut b[..], i == 1))
            .collect();
        assert_eq!(
            codec.reconstruct(&mut pairs, true),
            Err(TooFewChunks {
                available: 1,
                needed: 2
            })
        );
    }
}
