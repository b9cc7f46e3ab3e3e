//! Hedged chunk reads: a stripe whose chunks come from remote locations does not wait for the
//! slowest of them. Its first round of reads runs each read on a thread of its own; if they have
//! not all answered within a threshold, a spare (parity) chunk is read for each read still
//! waiting, and the stripe goes on as soon as `k` chunks verified: any `k` rebuild it. A read
//! still running then is abandoned (its thread finishes into a buffer of its own).
//!
//! The threshold is three times the median of the recent chunk-read latencies of the round's
//! remote locations (each location keeps its last 64), between 10 ms and 2 s; 500 ms before any
//! is known. One slow endpoint among healthy ones thus costs a stripe about three healthy reads'
//! time plus one spare read, not its own delay; all endpoints slow raise the threshold with them,
//! so a uniformly slow network does not double every read.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::reader::{read_verified, ChunkOutcome, ChunkReader};

/// The bounds of the threshold, and the threshold before any latency is known.
const MIN_THRESHOLD: Duration = Duration::from_millis(10);
const MAX_THRESHOLD: Duration = Duration::from_secs(2);
const UNKNOWN_THRESHOLD: Duration = Duration::from_millis(500);

/// A chunk read that answered: its shard, what it came to, and its bytes (chunk, then CRC).
pub(crate) struct Answer {
    pub shard: usize,
    pub outcome: ChunkOutcome,
    pub bytes: Vec<u8>,
}

/// What a hedged round came to.
pub(crate) struct HedgedRound {
    pub answers: Vec<Answer>,
    /// The spares read besides the round.
    pub spares_read: Vec<usize>,
    /// Reads launched that had not answered when the round ended (abandoned).
    pub abandoned: Vec<usize>,
}

/// The threshold for a round whose locations' median chunk-read latencies are `medians`.
pub(crate) fn threshold(medians: impl Iterator<Item = Option<Duration>>) -> Duration {
    let mut known: Vec<Duration> = medians.flatten().collect();
    if known.is_empty() {
        return UNKNOWN_THRESHOLD;
    }
    known.sort_unstable();
    (known[known.len() / 2] * 3).clamp(MIN_THRESHOLD, MAX_THRESHOLD)
}

impl ChunkReader<'_> {
    /// Reads `round`'s chunks, hedged with `spares` after `threshold` (see the module), until
    /// `needed` of them verified or every read launched answered.
    pub fn read_hedged(
        &self,
        round: &[usize],
        spares: &[usize],
        needed: usize,
        threshold: Duration,
    ) -> HedgedRound {
        let (answer, answers) = mpsc::channel();
        let launch = |shard: usize| {
            let Some(file) = self.resolved.shards[shard].clone() else {
                return false;
            };
            let placed = self.placed(shard);
            let policy = self.store.retry;
            let answer = answer.clone();
            // No thread to be had: not read in this round (a later round may).
            std::thread::Builder::new()
                .name("shardguard-hedged-read".into())
                .spawn(move || {
                    let mut bytes = vec![0u8; placed.len + crate::format::CHUNK_CRC_LEN as usize];
                    let outcome = read_verified(&*file, placed, &policy, &mut bytes);
                    // The round may be over (this read abandoned): nobody listens then.
                    let _ = answer.send(Answer {
                        shard,
                        outcome,
                        bytes,
                    });
                })
                .is_ok()
        };
        let mut waiting: Vec<usize> = round.iter().copied().filter(|&s| launch(s)).collect();
        let mut spares = spares.iter().copied();
        let mut spares_read = Vec::new();
        let mut got = Vec::new();
        let mut verified = 0;
        let hedge_at = Instant::now() + threshold;
        let mut hedged = false;
        while !waiting.is_empty() && verified < needed {
            let next = match hedged {
                true => answers.recv().ok(),
                false => match answers.recv_timeout(hedge_at.saturating_duration_since(Instant::now())) {
                    Ok(a) => Some(a),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        hedged = true;
                        for _ in 0..waiting.len() {
                            let Some(spare) = spares.next() else { break };
                            if launch(spare) {
                                waiting.push(spare);
                                spares_read.push(spare);
                            }
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                },
            };
            let Some(a) = next else { break };
            waiting.retain(|&s| s != a.shard);
            verified += usize::from(a.outcome.data_crc.is_some());
            got.push(a);
        }
        HedgedRound {
            answers: got,
            spares_read,
            abandoned: waiting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_follows_the_typical_location_not_the_slow_one() {
        let ms = Duration::from_millis;
        let medians = [Some(ms(15)), Some(ms(14)), Some(ms(16)), Some(ms(200))];
        assert_eq!(threshold(medians.into_iter()), ms(48));
        assert_eq!(threshold([None, None].into_iter()), UNKNOWN_THRESHOLD);
        assert_eq!(
            threshold([Some(Duration::from_micros(100))].into_iter()),
            MIN_THRESHOLD
        );
        assert_eq!(
            threshold([Some(Duration::from_secs(5))].into_iter()),
            MAX_THRESHOLD
        );
    }
}
