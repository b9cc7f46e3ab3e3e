//! Rebuilding a stripe's lost chunks from survivors that may themselves be wrong.
//!
//! A chunk's checksum is computed after the codec, so parity the codec (or memory) got wrong
//! carries a valid checksum: the one fault the CRCs cannot see. A rebuild is therefore checked
//! before it is trusted, two ways:
//! - against every surviving chunk it did not use (re-encoding must reproduce them): a survivor
//!   that disagrees *refutes* the rebuild, or is itself wrong;
//! - against the checksum stored beside a chunk whose bytes failed verification: rot in the
//!   bytes leaves that checksum naming the right bytes, so a rebuild matching it is *confirmed*.
//!
//! When the first `k` survivors give a refuted rebuild, every other set of `k` survivors is tried
//! (as RAID-Z tries its combinations) and the one with the fewest refutations and the most
//! confirmations is taken; a tie between different rebuilds is reported as ambiguous, for the
//! caller's whole-object checksum to settle.

use crate::codec::{Codec, TooFewChunks};

/// Sets of survivors tried at most per stripe; beyond, the first best found stands.
const MAX_SUBSETS: usize = 4096;

/// How a stripe was rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rebuilt {
    /// The `k` survivors the rebuild came from.
    pub used: Vec<usize>,
    /// Survivors (valid checksums) that the rebuild contradicts: written wrong. Their buffers
    /// now hold the rebuilt bytes, and they should be rewritten.
    pub refuted: Vec<usize>,
    /// Other sets of survivors whose rebuilds fit the evidence as well but differ, each with
    /// the CRC32C of every data chunk as it rebuilds them: only the whole-object checksum can
    /// choose. Empty when the choice is clear.
    pub alternatives: Vec<(Vec<usize>, Vec<u32>)>,
    /// Rebuilt chunks whose stored checksum (read beside their rotten bytes) the rebuild does
    /// not match: either that checksum rotted too, or a survivor is wrong. With no survivor to
    /// spare nothing tells which; a reader then fetches the spares and rebuilds again.
    pub unconfirmed: Vec<usize>,
}

/// What the caller knows of each chunk of a stripe.
pub(crate) struct StripeEvidence<'a> {
    /// Which chunks verified (a chunk that did not is rebuilt).
    pub present: &'a [bool],
    /// For a chunk that failed verification but whose stored checksum was read: that checksum.
    pub stored: &'a [Option<u32>],
    /// The stored checksum a chunk of this shard with this data CRC would have.
    pub bind: &'a dyn Fn(usize, u32) -> u32,
}

/// Rebuilds, in place, every chunk that is not present (with `data_only`, when nothing needs
/// weighing, only the data chunks: what a read needs), from `k` present ones chosen as the
/// module says; `use_only` forces the set (to repeat an earlier choice). Only `parallel`
/// rebuilds use rayon (never under an object lock).
pub(crate) fn rebuild_stripe(
    codec: &Codec,
    chunks: &mut [&mut [u8]],
    evidence: &StripeEvidence<'_>,
    use_only: Option<&[usize]>,
    parallel: bool,
    data_only: bool,
) -> Result<Rebuilt, TooFewChunks> {
    let k = codec.data_shards();
    let survivors: Vec<usize> = (0..chunks.len()).filter(|&s| evidence.present[s]).collect();
    if survivors.len() < k {
        return Err(TooFewChunks {
            available: survivors.len(),
            needed: k,
        });
    }
    if use_only.is_none() && survivors.len() == k {
        // Nothing to spare, so nothing to weigh: rebuilt in place, as fast as the codec goes.
        let mut pairs: Vec<(&mut [u8], bool)> = chunks
            .iter_mut()
            .zip(evidence.present)
            .map(|(c, &p)| (&mut **c, p))
            .collect();
        match parallel {
            true => codec.reconstruct(&mut pairs, data_only)?,
            false => codec.reconstruct_on_this_thread(&mut pairs, data_only)?,
        }
        let rebuilt_len = if data_only {
            codec.data_shards()
        } else {
            chunks.len()
        };
        let unconfirmed = (0..rebuilt_len)
            .filter(|&s| {
                evidence.stored[s]
                    .is_some_and(|stored| (evidence.bind)(s, crc32c::crc32c(&chunks[s][..])) != stored)
            })
            .collect();
        return Ok(Rebuilt {
            used: survivors,
            refuted: Vec::new(),
            alternatives: Vec::new(),
            unconfirmed,
        });
    }
    if let Some(used) = use_only {
        let trial = try_subset(codec, chunks, evidence, used)?;
        apply(chunks, &trial);
        return Ok(trial.rebuilt(Vec::new()));
    }
    let first = try_subset(codec, chunks, evidence, &survivors[..k])?;
    if first.refuted.is_empty() && first.unconfirmed.is_empty() {
        apply(chunks, &first);
        return Ok(first.rebuilt(Vec::new()));
    }
    // Someone is wrong: weigh every set of k survivors.
    let mut best = vec![first];
    for subset in subsets(&survivors, k).skip(1).take(MAX_SUBSETS) {
        let trial = try_subset(codec, chunks, evidence, &subset)?;
        match trial.rank().cmp(&best[0].rank()) {
            std::cmp::Ordering::Less => best = vec![trial],
            std::cmp::Ordering::Equal => best.push(trial),
            std::cmp::Ordering::Greater => {}
        }
    }
    // Tied sets that rebuild the same bytes are one answer (any k of the right chunks agree).
    let chosen = best.remove(0);
    let alternatives = best
        .into_iter()
        .filter(|t| t.bytes != chosen.bytes)
        .map(|t| {
            let data_crcs = t.bytes[..k].iter().map(|b| crc32c::crc32c(b)).collect();
            (t.used, data_crcs)
        })
        .collect();
    apply(chunks, &chosen);
    Ok(chosen.rebuilt(alternatives))
}

/// One set of survivors tried.
struct Trial {
    used: Vec<usize>,
    refuted: Vec<usize>,
    confirmed: usize,
    unconfirmed: Vec<usize>,
    /// Every chunk as this set rebuilds it.
    bytes: Vec<Vec<u8>>,
}

impl Trial {
    /// Lower is better: fewest refutations, then most confirmations.
    fn rank(&self) -> (usize, std::cmp::Reverse<usize>) {
        (self.refuted.len(), std::cmp::Reverse(self.confirmed))
    }

    fn rebuilt(self, alternatives: Vec<(Vec<usize>, Vec<u32>)>) -> Rebuilt {
        Rebuilt {
            used: self.used,
            refuted: self.refuted,
            alternatives,
            unconfirmed: self.unconfirmed,
        }
    }
}

/// Rebuilds every chunk from `used` alone (on copies), and weighs the result.
fn try_subset(
    codec: &Codec,
    chunks: &[&mut [u8]],
    evidence: &StripeEvidence<'_>,
    used: &[usize],
) -> Result<Trial, TooFewChunks> {
    let mut bytes: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
    let mut pairs: Vec<(&mut [u8], bool)> = bytes
        .iter_mut()
        .enumerate()
        .map(|(s, b)| (&mut b[..], used.contains(&s)))
        .collect();
    codec.reconstruct_on_this_thread(&mut pairs, false)?;
    let mut refuted = Vec::new();
    let mut confirmed = 0;
    let mut unconfirmed = Vec::new();
    for (s, rebuilt) in bytes.iter().enumerate() {
        if used.contains(&s) {
            continue;
        }
        if evidence.present[s] {
            if rebuilt[..] != chunks[s][..] {
                refuted.push(s);
            }
        } else if let Some(stored) = evidence.stored[s] {
            match (evidence.bind)(s, crc32c::crc32c(rebuilt)) == stored {
                true => confirmed += 1,
                false => unconfirmed.push(s),
            }
        }
    }
    Ok(Trial {
        used: used.to_vec(),
        refuted,
        confirmed,
        unconfirmed,
        bytes,
    })
}

/// Puts the trial's bytes into every chunk it did not use.
fn apply(chunks: &mut [&mut [u8]], trial: &Trial) {
    for (s, chunk) in chunks.iter_mut().enumerate() {
        if !trial.used.contains(&s) {
            chunk.copy_from_slice(&trial.bytes[s]);
        }
    }
}

/// Every `k`-element subset of `items`, in lexicographic order.
fn subsets(items: &[usize], k: usize) -> impl Iterator<Item = Vec<usize>> + '_ {
    let mut index: Vec<usize> = (0..k).collect();
    let mut done = k > items.len();
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let out = index.iter().map(|&i| items[i]).collect();
        // Advance to the next combination.
        let mut i = k;
        loop {
            if i == 0 {
                done = true;
                break;
            }
            i -= 1;
            if index[i] != i + items.len() - k {
                index[i] += 1;
                for j in i + 1..k {
                    index[j] = index[j - 1] + 1;
                }
                break;
            }
        }
        Some(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(k: usize, m: usize, len: usize) -> Vec<Vec<u8>> {
        let codec = Codec::new(k, m);
        let mut chunks: Vec<Vec<u8>> = (0..k + m)
            .map(|i| (0..len).map(|j| (i * 37 + j * 11 + j / 7) as u8).collect())
            .collect();
        let mut slices: Vec<&mut [u8]> = chunks.iter_mut().map(|c| &mut c[..]).collect();
        codec.encode(&mut slices);
        chunks
    }

    fn bind(_shard: usize, crc: u32) -> u32 {
        crc ^ 0x5a5a_5a5a
    }

    #[test]
    fn subsets_are_every_combination_once() {
        let all: Vec<Vec<usize>> = subsets(&[1, 3, 5, 7, 9], 3).collect();
        assert_eq!(all.len(), 10);
        assert_eq!(all[0], vec![1, 3, 5]);
        assert_eq!(all[9], vec![5, 7, 9]);
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), 10);
    }

    /// The case that made a repair destroy data: one parity chunk wrong with a valid checksum,
    /// and a data chunk of the same stripe rotten. The rotten chunk's stored checksum picks the
    /// right rebuild; the wrong parity is named.
    #[test]
    fn wrong_parity_beside_a_rotten_chunk_is_outvoted_by_the_stored_checksum() {
        let (k, m, len) = (4, 2, 64);
        let codec = Codec::new(k, m);
        let good = encoded(k, m, len);
        for wrong_parity in k..k + m {
            let mut chunks = good.clone();
            chunks[wrong_parity][5] ^= 0x40; // written wrong, checksum computed after
            chunks[2].fill(0xee); // rotten on disk: its stored checksum still names the truth
            let mut stored = vec![None; k + m];
            stored[2] = Some(bind(2, crc32c::crc32c(&good[2])));
            let mut present = vec![true; k + m];
            present[2] = false;
            let evidence = StripeEvidence {
                present: &present,
                stored: &stored,
                bind: &bind,
            };
            let mut slices: Vec<&mut [u8]> = chunks.iter_mut().map(|c| &mut c[..]).collect();
            let rebuilt = rebuild_stripe(&codec, &mut slices, &evidence, None, false, false).unwrap();
            assert_eq!(rebuilt.refuted, vec![wrong_parity]);
            assert!(rebuilt.alternatives.is_empty());
            assert!(
                chunks == good,
                "parity {wrong_parity}: the rebuild is exact, the bad parity fixed"
            );
        }
    }

    /// Without a stored checksum (the chunk's file is gone) the two rebuilds cannot be told
    /// apart from the stripe alone: the choice is reported as ambiguous.
    #[test]
    fn without_a_stored_checksum_one_spare_leaves_the_choice_ambiguous() {
        let (k, m, len) = (4, 2, 64);
        let codec = Codec::new(k, m);
        let good = encoded(k, m, len);
        let mut chunks = good.clone();
        chunks[5][0] ^= 1;
        chunks[1].fill(0);
        let stored = vec![None; k + m];
        let mut present = vec![true; k + m];
        present[1] = false;
        let evidence = StripeEvidence {
            present: &present,
            stored: &stored,
            bind: &bind,
        };
        let mut slices: Vec<&mut [u8]> = chunks.iter_mut().map(|c| &mut c[..]).collect();
        let rebuilt = rebuild_stripe(&codec, &mut slices, &evidence, None, false, false).unwrap();
        assert!(!rebuilt.alternatives.is_empty());
        // The alternative, forced, is the exact rebuild.
        let exact = rebuilt
            .alternatives
            .iter()
            .map(|(used, _)| used)
            .chain([&rebuilt.used])
            .find(|used| !used.contains(&5))
            .unwrap()
            .clone();
        let mut chunks = good.clone();
        chunks[5][0] ^= 1;
        let mut slices: Vec<&mut [u8]> = chunks.iter_mut().map(|c| &mut c[..]).collect();
        rebuild_stripe(&codec, &mut slices, &evidence, Some(&exact), false, false).unwrap();
        assert!(chunks == good);
    }
}
