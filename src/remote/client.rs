//! The requests of one remote location: run on the location's own Tokio runtime (the library
//! stays synchronous), timed, counted, and not sent at all while the endpoint is known to be
//! down.
//!
//! An endpoint that refuses or drops connections, or does not answer in time, twice in a row, is
//! marked down for a while (250 ms, doubling per further failure up to 15 s); requests meanwhile fail at
//! once, without waiting for a connection, as `NotConnected` (an error the store's
//! retransmission does not repeat: it reads around the location instead). The first request
//! after the pause tries again; one that succeeds clears the mark. Without this, every chunk
//! read of a dead server would wait for its connection attempts: 12 MiB read with two of six
//! servers killed took 29 s, nearly all of it refused connections.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::multipart::MultipartStore;
use object_store::ObjectStore;

use crate::location::NetworkCounts;

/// The first pause after a connection failure; doubles per failure in a row.
const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause.
const MAX_PAUSE: Duration = Duration::from_secs(15);
/// Chunk-read latencies kept for the location's recent latency.
const LATENCIES: usize = 64;

/// A location's requests: its object store, its runtime, and how its endpoint has been doing.
pub(crate) struct Client {
    pub store: Arc<dyn ObjectStore>,
    /// The same store, for multipart uploads.
    pub multipart: Arc<dyn MultipartStore>,
    runtime: tokio::runtime::Runtime,
    health: Mutex<Health>,
    requests: AtomicU64,
    failed: AtomicU64,
    not_contacted: AtomicU64,
}

#[derive(Default)]
struct Health {
    /// Connection failures since the last request that succeeded.
    failures_in_row: u32,
    /// No request is sent before this.
    down_until: Option<Instant>,
    /// The latest chunk reads' latencies, oldest first.
    latencies: VecDeque<Duration>,
}

/// Why a request gave no answer.
pub(crate) enum Failure {
    /// The endpoint is known to be down: nothing was sent.
    NotContacted { retry_in: Duration },
    /// The request failed.
    Store(object_store::Error),
}

impl Failure {
    /// As an I/O error naming `what` (never a credential: requests are signed in headers).
    pub fn into_io(self, what: &str) -> io::Error {
        match self {
            Failure::NotContacted { retry_in } => io::Error::new(
                io::ErrorKind::NotConnected,
                format!(
                    "{what}: not contacted, the endpoint failed to connect just before (next try in {} ms)",
                    retry_in.as_millis()
                ),
            ),
            Failure::Store(e) => super::to_io(e, what),
        }
    }
}

impl Client {
    pub fn new<S: ObjectStore + MultipartStore>(store: Arc<S>) -> io::Result<Client> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shardguard-s3")
            .enable_all()
            .build()?;
        Ok(Client {
            store: Arc::clone(&store) as Arc<dyn ObjectStore>,
            multipart: store,
            runtime,
            health: Mutex::new(Health::default()),
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            not_contacted: AtomicU64::new(0),
        })
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `request` unless the endpoint is known to be down, and notes how it went. A chunk
    /// read (`read`) that succeeds adds its latency to the recent ones.
    pub fn run<T>(
        &self,
        request: impl Future<Output = object_store::Result<T>>,
        read: bool,
    ) -> Result<T, Failure> {
        let started = Instant::now();
        if let Some(until) = self.health().down_until.filter(|&until| started < until) {
            self.not_contacted.fetch_add(1, Ordering::Relaxed);
            return Err(Failure::NotContacted {
                retry_in: until - started,
            });
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let outcome = self.runtime.block_on(request);
        let mut health = self.health();
        match &outcome {
            Ok(_) => {
                health.failures_in_row = 0;
                health.down_until = None;
                if read {
                    if health.latencies.len() == LATENCIES {
                        health.latencies.pop_front();
                    }
                    health.latencies.push_back(started.elapsed());
                }
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if is_connection_failure(e) {
                    health.failures_in_row += 1;
                    // One failure alone is no outage (a pooled connection the server had
                    // closed): paused from the second in a row, or a healthy endpoint's reads
                    // would fail at once for a while, and a stripe with no parity to spare
                    // with them (seen: a get with two of six servers down).
                    if health.failures_in_row >= 2 {
                        let doublings = (health.failures_in_row - 2).min(10);
                        let pause = (FIRST_PAUSE * 2u32.pow(doublings)).min(MAX_PAUSE);
                        health.down_until = Some(Instant::now() + pause);
                    }
                }
            }
        }
        outcome.map_err(Failure::Store)
    }

    /// The counts so far.
    pub fn counts(&self) -> NetworkCounts {
        let health = self.health();
        let mut latencies: Vec<Duration> = health.latencies.iter().copied().collect();
        latencies.sort_unstable();
        NetworkCounts {
            requests: self.requests.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            not_contacted: self.not_contacted.load(Ordering::Relaxed),
            down: health.down_until.is_some_and(|until| Instant::now() < until),
            median_read_latency: latencies.get(latencies.len() / 2).copied(),
        }
    }
}

/// Whether `e` says the endpoint could not be reached (refused, reset, timed out): found as
/// an I/O error in its chain of causes, or as the HTTP client's timeout.
fn is_connection_failure(e: &object_store::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::NotConnected
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            );
        }
        // The client's own timeouts carry no I/O error.
        if error.to_string().contains("operation timed out") {
            return true;
        }
        cause = error.source();
    }
    false
}
