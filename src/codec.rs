//! The only module that knows the Reed-Solomon crate: encode parity, rebuild lost chunks.
//!
//! `m = 0` (plain striping) needs no codec at all; the crate refuses zero parity shards, so that
//! case is handled here rather than by every caller.

use reed_solomon_erasure::galois_8::ReedSolomon;

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
    rs: Option<ReedSolomon>,
}

impl Codec {
    /// A codec for `k` data and `m` parity chunks; `k >= 1` and `k + m <= 255` must hold (the
    /// caller validated the geometry).
    pub fn new(k: usize, m: usize) -> Self {
        let rs = (m > 0).then(|| ReedSolomon::new(k, m).expect("geometry validated: 1 <= k, k + m <= 255"));
        Codec { k, m, rs }
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
    pub fn encode<T: AsRef<[u8]> + AsMut<[u8]>>(&self, chunks: &mut [T]) {
        debug_assert_eq!(chunks.len(), self.k + self.m);
        if let Some(rs) = &self.rs {
            rs.encode(chunks)
                .expect("chunk count and lengths are set by the caller");
        }
    }

    /// Rebuilds the missing chunks (`false` in the pair) from the present ones.
    ///
    /// With `data_only`, only missing data chunks are rebuilt (what a read needs).
    pub fn reconstruct<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        chunks: &mut [(T, bool)],
        data_only: bool,
    ) -> Result<(), TooFewChunks> {
        let available = chunks.iter().filter(|(_, present)| *present).count();
        if available < self.k {
            return Err(TooFewChunks {
                available,
                needed: self.k,
            });
        }
        if available == chunks.len() {
            return Ok(());
        }
        let rs = self
            .rs
            .as_ref()
            .expect("with m = 0 every chunk is needed, so a missing one failed the count above");
        let result = if data_only {
            rs.reconstruct_data(chunks)
        } else {
            rs.reconstruct(chunks)
        };
        result.map_err(|_| TooFewChunks {
            available,
            needed: self.k,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_m_lost_chunks_are_rebuilt_exactly() {
        let codec = Codec::new(3, 2);
        let mut chunks: Vec<Vec<u8>> = (0..5).map(|i| vec![i as u8 * 17; 64]).collect();
        codec.encode(&mut chunks);
        let original = chunks.clone();
        for a in 0..5 {
            for b in a + 1..5 {
                let mut pairs: Vec<(Vec<u8>, bool)> = original
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        if i == a || i == b {
                            (vec![0; 64], false)
                        } else {
                            (c.clone(), true)
                        }
                    })
                    .collect();
                codec.reconstruct(&mut pairs, false).unwrap();
                let rebuilt: Vec<Vec<u8>> = pairs.into_iter().map(|(c, _)| c).collect();
                assert_eq!(rebuilt, original, "lost {a} and {b}");
            }
        }
    }

    #[test]
    fn more_than_m_lost_is_an_error() {
        let codec = Codec::new(2, 1);
        let mut pairs = vec![(vec![0u8; 8], false), (vec![0u8; 8], true), (vec![0u8; 8], false)];
        assert_eq!(
            codec.reconstruct(&mut pairs, true),
            Err(TooFewChunks {
                available: 1,
                needed: 2
            })
        );
    }
}
