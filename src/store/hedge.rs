//! Chunk reads from remote locations on threads of their own: read ahead of the stripe being
//! served, and hedged.
//!
//! **Read-ahead.** A get from remote locations launches the first-round reads of the next few
//! stripes (up to 32 MiB of chunks) while the current one is served: each ranged GET costs a
//! round trip whatever its size, and one stripe at a time would pay them one after another.
//!
//! **Hedging.** A stripe does not wait for the slowest location: if its first-round reads have
//! not all answered within a threshold, a spare (parity) chunk is read for each read still
//! waiting, and the stripe goes on as soon as `k` chunks verified (any `k` rebuild it). A read
//! still running then is abandoned: its thread finishes into a buffer of its own, and its answer
//! is dropped. The threshold is three times the median of the recent chunk-read latencies of the
//! round's remote locations (each location keeps its last 64), between 10 ms and 2 s; 500 ms
//! before any is known. One slow endpoint among healthy ones thus costs a stripe about three
//! healthy reads' time plus one spare read, not its own delay; all endpoints slow raise the
//! threshold with them, so a uniformly slow network does not double every read.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::reader::{read_verified, ChunkOutcome, ChunkReader};

/// The bounds of the threshold, and the threshold before any latency is known.
const MIN_THRESHOLD: Duration = Duration::from_millis(10);
const MAX_THRESHOLD: Duration = Duration::from_secs(2);
const UNKNOWN_THRESHOLD: Duration = Duration::from_millis(500);
/// Bytes of chunks read ahead at most.
const READ_AHEAD_BYTES: usize = 32 << 20;

/// A chunk read that answered: its shard, what it came to, and its bytes (chunk, then CRC).
pub(crate) struct Answer {
    pub shard: usize,
    pub outcome: ChunkOutcome,
    pub bytes: Vec<u8>,
}

/// What a stripe's first round came to.
pub(crate) struct Round {
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

/// How many stripes of `chunk_len`-byte chunks, `k` of them a stripe, are read ahead.
pub(crate) fn window(k: usize, chunk_len: usize) -> u64 {
    (READ_AHEAD_BYTES / (k * chunk_len).max(1)).clamp(1, 16) as u64
}

/// The chunk reads of one object in flight on their threads, by (stripe, shard).
pub(crate) struct InFlight {
    sender: mpsc::Sender<(u64, Answer)>,
    answers: mpsc::Receiver<(u64, Answer)>,
    launched: HashSet<(u64, usize)>,
    ready: HashMap<(u64, usize), Answer>,
    /// Stripes whose first round has been launched: all below this.
    ahead: u64,
}

impl InFlight {
    pub fn new() -> Self {
        let (sender, answers) = mpsc::channel();
        InFlight {
            sender,
            answers,
            launched: HashSet::new(),
            ready: HashMap::new(),
            ahead: 0,
        }
    }

    /// Starts reading `shard` of `reader`'s stripe on a thread of its own (unless it is read
    /// already). `false` if it has no file or no thread could be had.
    pub fn launch(&mut self, reader: &ChunkReader<'_>, shard: usize) -> bool {
        let stripe = reader.shape.index;
        if self.launched.contains(&(stripe, shard)) || self.ready.contains_key(&(stripe, shard)) {
            return true;
        }
        let Some(file) = reader.resolved.shards[shard].clone() else {
            return false;
        };
        let placed = reader.placed(shard);
        let policy = reader.store.retry;
        let sender = self.sender.clone();
        let spawned = std::thread::Builder::new()
            .name("shardguard-chunk-read".into())
            .spawn(move || {
                let mut bytes = vec![0u8; placed.len + crate::format::CHUNK_CRC_LEN as usize];
                let outcome = read_verified(&*file, placed, &policy, &mut bytes);
                // The reader may be gone, or the read abandoned: nobody listens then.
                let _ = sender.send((
                    stripe,
                    Answer {
                        shard,
                        outcome,
                        bytes,
                    },
                ));
            })
            .is_ok();
        if spawned {
            self.launched.insert((stripe, shard));
        }
        spawned
    }

    /// Takes the answers that came in, dropping those of stripes before `stripe` (abandoned).
    fn take_in(&mut self, stripe: u64, (of, answer): (u64, Answer)) {
        self.launched.remove(&(of, answer.shard));
        if of >= stripe {
            self.ready.insert((of, answer.shard), answer);
        }
    }

    /// Launches every shard in `shards` of the stripes from `reader`'s to `to` (exclusive), as
    /// far as `ahead` has not launched them yet.
    pub fn read_ahead(&mut self, reader: &ChunkReader<'_>, shards: &[usize], to: u64) {
        let geometry = reader.store.file.geometry;
        let object_len = reader.resolved.header.object_len;
        for index in self.ahead.max(reader.shape.index)..to {
            let later = ChunkReader {
                shape: geometry.stripe(object_len, index),
                ..*reader
            };
            for &shard in shards {
                self.launch(&later, shard);
            }
        }
        self.ahead = self.ahead.max(to);
    }

    /// `shard` of `reader`'s stripe, launched now unless it was read ahead, once it answered;
    /// `None` if it could not be launched (no file, no thread).
    pub fn wait_for(&mut self, reader: &ChunkReader<'_>, shard: usize) -> Option<Answer> {
        let stripe = reader.shape.index;
        if !self.launch(reader, shard) {
            return None;
        }
        loop {
            if let Some(answer) = self.ready.remove(&(stripe, shard)) {
                return Some(answer);
            }
            // Cannot be disconnected (this holds a sender).
            let answer = self.answers.recv().ok()?;
            self.take_in(stripe, answer);
        }
    }

    /// The first round of `reader`'s stripe: `round`'s chunks (read ahead, or launched now),
    /// hedged with `spares` after `threshold`, until `needed` of them verified or every read
    /// launched for it answered.
    pub fn first_round(
        &mut self,
        reader: &ChunkReader<'_>,
        round: &[usize],
        spares: &[usize],
        needed: usize,
        threshold: Duration,
    ) -> Round {
        let stripe = reader.shape.index;
        let mut waiting: Vec<usize> = round
            .iter()
            .copied()
            .filter(|&s| self.launch(reader, s))
            .collect();
        let mut spares = spares.iter().copied();
        let mut spares_read = Vec::new();
        let mut got = Vec::new();
        let mut verified = 0;
        let hedge_at = Instant::now() + threshold;
        let mut hedged = false;
        while !waiting.is_empty() && verified < needed {
            // Answers already in (read ahead) first.
            if let Some(at) = waiting
                .iter()
                .position(|&s| self.ready.contains_key(&(stripe, s)))
            {
                let shard = waiting.swap_remove(at);
                if let Some(answer) = self.ready.remove(&(stripe, shard)) {
                    verified += usize::from(answer.outcome.data_crc.is_some());
                    got.push(answer);
                }
                continue;
            }
            let next = match hedged {
                true => self.answers.recv().ok(),
                false => match self
                    .answers
                    .recv_timeout(hedge_at.saturating_duration_since(Instant::now()))
                {
                    Ok(answer) => Some(answer),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        hedged = true;
                        for _ in 0..waiting.len() {
                            let Some(spare) = spares.next() else { break };
                            if self.launch(reader, spare) {
                                waiting.push(spare);
                                spares_read.push(spare);
                            }
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                },
            };
            match next {
                Some(answer) => self.take_in(stripe, answer),
                // Cannot happen (this holds a sender); if it did, the rest are abandoned.
                None => break,
            }
        }
        // Read ahead for this stripe but not wanted by its round: dropped.
        self.ready.retain(|&(of, _), _| of > stripe);
        Round {
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

    #[test]
    fn the_read_ahead_window_holds_32_mib_of_chunks() {
        assert_eq!(window(4, 1 << 20), 8);
        assert_eq!(window(4, 64 << 20), 1);
        assert_eq!(window(2, 4096), 16);
    }
}
