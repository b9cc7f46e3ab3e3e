//! The only module that knows the Reed-Solomon crates: encode parity, rebuild lost chunks.
//!
//! The code is reed-solomon-erasure's (its systematic Vandermonde matrix over GF(2^8)/0x11d), and
//! that crate, with `simd-accel`, is the runtime codec: mature, and the one the on-disk format
//! is defined by. The opt-in `rusty-erasure` feature swaps in rusty_erasure's kernels on the
//! same matrix (every parity row updated in one pass over the data, like ISA-L): faster alone,
//! but a put is fsync-bound far below either (README, Performance), and the crate is young.
//! `tests/codec_compat.rs` holds whichever backend is built to reed-solomon-erasure's bytes.
//!
//! `m = 0` (plain striping) needs no codec at all; the crates refuse zero parity shards, so that
//! case is handled here rather than by every caller.

use rayon::prelude::*;

/// The kernels in use, for messages and benches.
#[cfg(not(feature = "rusty-erasure"))]
pub const BACKEND: &str = "reed-solomon-erasure";
/// The kernels in use, for messages and benches.
#[cfg(feature = "rusty-erasure")]
pub const BACKEND: &str = "rusty_erasure";

#[cfg(not(feature = "rusty-erasure"))]
type Coder = reed_solomon_erasure::galois_8::ReedSolomon;
#[cfg(feature = "rusty-erasure")]
type Coder = rusty_erasure::Coder;

/// The CPU lacks instructions the codec's kernels were compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this CPU lacks AVX2/FMA/BMI2, which the codec was built for: rebuild with \
     RUST_REED_SOLOMON_ERASURE_ARCH=x86-64 (or this CPU's -march name) set"
)]
pub struct UnsupportedCpu;

/// Whether this CPU runs the codec's compiled kernels. reed-solomon-erasure's `simd-accel` C
/// code is built for Haswell (AVX2, FMA, BMI2) unless `RUST_REED_SOLOMON_ERASURE_ARCH` named
/// another target at build time: on an older CPU it would die of an illegal instruction, so a
/// store checks first and says how to build for it.
pub fn check_cpu() -> Result<(), UnsupportedCpu> {
    #[cfg(all(target_arch = "x86_64", not(feature = "rusty-erasure")))]
    {
        let haswell = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("bmi2");
        if env!("SHARDGUARD_RSE_ARCH") == "haswell" && !haswell {
            return Err(UnsupportedCpu);
        }
    }
    Ok(())
}

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
pub struct Codec {
    k: usize,
    m: usize,
    coder: Option<Coder>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Codec({} + {}, {BACKEND})", self.k, self.m)
    }
}

impl Codec {
    /// A codec for `k` data and `m` parity chunks; `k >= 1` and `k + m <= 255` must hold (the
    /// caller validated the geometry).
    pub fn new(k: usize, m: usize) -> Self {
        let coder = (m > 0).then(|| new_coder(k, m));
        Codec { k, m, coder }
    }

    /// Data chunks per stripe.
    pub fn data_shards(&self) -> usize {
        self.k
    }

    /// Fills the `m` parity chunks from the `k` data chunks; all chunks have one length.
    ///
    /// Long chunks are cut into segments coded on all cores: Reed-Solomon works byte position by
    /// byte position, so segments are independent (see `benches/codec.rs` for the gain). The
    /// store itself codes on one thread per stripe ([`Codec::encode_on_this_thread`]); this is
    /// for the benches, tests and fuzz targets.
    #[cfg_attr(not(feature = "unstable"), allow(dead_code))]
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
            encode_sep(coder, &data, parity)
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
            encode_sep(coder, data, parity);
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
        if (0..wanted).all(|i| present[i]) {
            return Ok(());
        }
        let coder = self
            .coder
            .as_ref()
            .expect("with m = 0 every chunk is needed, so a missing one failed the count above");
        let len = chunks.first().map_or(0, |(c, _)| c.len());
        let recover =
            |segment: Vec<&mut [u8]>| recover(coder, &present, data_only, segment).map_err(|_| too_few);
        let segments = split(chunks.iter_mut().map(|(c, _)| &mut **c), len, parallel);
        match parallel {
            true => segments.into_par_iter().try_for_each(recover),
            false => segments.into_iter().try_for_each(recover),
        }
    }
}

#[cfg(not(feature = "rusty-erasure"))]
fn new_coder(k: usize, m: usize) -> Coder {
    Coder::new(k, m).expect("geometry validated: 1 <= k, 1 <= m, k + m <= 255")
}

#[cfg(feature = "rusty-erasure")]
fn new_coder(k: usize, m: usize) -> Coder {
    let matrix = rusty_erasure::compat::reed_solomon_erasure_matrix(k, m)
        .expect("geometry validated: 1 <= k, k + m <= 255");
    rusty_erasure::coder(matrix).expect("a systematic matrix with parity rows")
}

#[cfg(not(feature = "rusty-erasure"))]
fn encode_sep(coder: &Coder, data: &[&[u8]], parity: &mut [&mut [u8]]) {
    coder
        .encode_sep(data, parity)
        .expect("chunk count and lengths are set by the caller")
}

#[cfg(feature = "rusty-erasure")]
fn encode_sep(coder: &Coder, data: &[&[u8]], parity: &mut [&mut [u8]]) {
    coder
        .encode(data, parity)
        .expect("chunk count and lengths are set by the caller")
}

/// Rebuilds the missing chunks of one segment (`present` per chunk).
#[cfg(not(feature = "rusty-erasure"))]
fn recover(coder: &Coder, present: &[bool], data_only: bool, segment: Vec<&mut [u8]>) -> Result<(), ()> {
    let mut pairs: Vec<(&mut [u8], bool)> = segment.into_iter().zip(present.iter().copied()).collect();
    match data_only {
        true => coder.reconstruct_data(&mut pairs),
        false => coder.reconstruct(&mut pairs),
    }
    .map_err(|_| ())
}

/// Rebuilds the missing chunks of one segment (`present` per chunk).
#[cfg(feature = "rusty-erasure")]
fn recover(coder: &Coder, present: &[bool], data_only: bool, segment: Vec<&mut [u8]>) -> Result<(), ()> {
    let wanted = if data_only { coder.k() } else { present.len() };
    let rebuild: Vec<usize> = (0..wanted).filter(|&i| !present[i]).collect();
    let plan = coder.decode_plan(present, &rebuild).map_err(|_| ())?;
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
    coder.recover_with(&plan, &shards, &mut out).map_err(|_| ())
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
