//! Faults for tests and benches of remote locations: a TCP proxy in front of a local S3 server
//! that makes it slow or hands out rotten bytes. The servers themselves are
//! [`crate::s3_server`]'s, re-exported here.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

use crate::s3_server::location_at;
pub use crate::s3_server::{server_binary, LocalS3Server, ACCESS_KEY, BUCKET, SECRET_KEY};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Sets the standard AWS variables to the servers' keys, for every store of this process (a
/// test's or a bench's: the demo gives each server keys of its own instead).
pub fn use_server_credentials() {
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    std::env::set_var("AWS_REGION", "us-east-1");
}

/// What a [`FaultyProxy`] does to each answer of a ranged GET (status 206: the chunk reads).
#[derive(Debug, Default)]
pub struct ProxyFaults {
    /// Flip a byte in the middle of the body: a network or server handing out rotten bytes.
    pub corrupt: AtomicBool,
    /// Hold the answer back this long: a slow endpoint.
    pub delay_ms: AtomicU64,
}

/// A TCP proxy on 127.0.0.1 in front of a server, doing [`ProxyFaults`] to the answers of
/// ranged GETs; every other answer passes as it is. Each client connection gets its own
/// connection to the server. Its threads end with the process.
pub struct FaultyProxy {
    /// The port it listens on.
    pub port: u16,
    /// What it does now (may be changed at any time).
    pub faults: Arc<ProxyFaults>,
}

impl FaultyProxy {
    /// Starts a proxy in front of the server on `server_port`.
    ///
    /// # Errors
    /// When no port can be had.
    pub fn start(server_port: u16, faults: ProxyFaults) -> io::Result<FaultyProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let faults = Arc::new(faults);
        let shared = Arc::clone(&faults);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) else {
                    continue;
                };
                let (Ok(from_client), Ok(to_server)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                // The requests' methods, in order: a HEAD's answer has a length but no body.
                let (methods, asked) = std::sync::mpsc::channel();
                std::thread::spawn(move || relay_requests(from_client, to_server, &methods));
                let faults = Arc::clone(&shared);
                std::thread::spawn(move || relay_responses(server, client, &asked, &faults));
            }
        });
        Ok(FaultyProxy { port, faults })
    }

    /// The location string reaching its server's bucket through it.
    pub fn location(&self) -> String {
        location_at(self.port)
    }
}

/// Reads one HTTP message head (up to its blank line) into `pending` from `from`; its length
/// in `pending`, or `None` at the end of the stream.
fn read_head(from: &mut TcpStream, pending: &mut Vec<u8>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(at + 4));
        }
        let n = from.read(buf)?;
        if n == 0 {
            return Ok(None);
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// A head's Content-Length, and whether its body is chunked.
fn framing(head: &str) -> (Option<usize>, bool) {
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    (length, head.contains("transfer-encoding: chunked"))
}

/// Reads until `pending` holds `len` bytes (or the stream ends).
fn fill(from: &mut TcpStream, pending: &mut Vec<u8>, len: usize, buf: &mut [u8]) -> io::Result<()> {
    while pending.len() < len {
        let n = from.read(buf)?;
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// Copies HTTP requests from `client` to `server`, telling `methods` each one's method (`None`
/// once they can no longer be told apart: a chunked body; from then on all passes as it is).
fn relay_requests(
    mut client: TcpStream,
    mut server: TcpStream,
    methods: &std::sync::mpsc::Sender<Option<String>>,
) -> io::Result<()> {
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let outcome = (|| loop {
        let Some(end) = read_head(&mut client, &mut pending, &mut buf)? else {
            return server.write_all(&pending);
        };
        let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
        let method = head.split(' ').next().unwrap_or_default().to_owned();
        let (length, chunked) = framing(&head);
        if chunked {
            let _ = methods.send(None);
            server.write_all(&pending)?;
            return io::copy(&mut client, &mut server).map(drop);
        }
        let _ = methods.send(Some(method));
        let body_end = end + length.unwrap_or(0);
        fill(&mut client, &mut pending, body_end, &mut buf)?;
        let body_end = body_end.min(pending.len());
        server.write_all(&pending[..body_end])?;
        pending.drain(..body_end);
    })();
    let _ = server.shutdown(Shutdown::Write);
    outcome
}

/// Copies HTTP responses from `server` to `client`, with `faults` on each 206 answer (one
/// with a Content-Length; once the framing cannot be followed, everything passes as it is).
fn relay_responses(
    mut server: TcpStream,
    mut client: TcpStream,
    methods: &std::sync::mpsc::Receiver<Option<String>>,
    faults: &ProxyFaults,
) -> io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let Some(end) = read_head(&mut server, &mut pending, &mut buf)? else {
            return client.write_all(&pending);
        };
        let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
        let status = head.split(' ').nth(1).unwrap_or_default().to_owned();
        let method = methods.recv().ok().flatten();
        let (length, chunked) = framing(&head);
        let bodiless = method.as_deref() == Some("head")
            || status.starts_with('1')
            || status == "204"
            || status == "304";
        let length = match (bodiless, length, chunked, &method) {
            (true, _, _, Some(_)) => 0,
            (false, Some(length), false, Some(_)) => length,
            // Not followed any further: the rest passes as it is.
            _ => {
                client.write_all(&pending)?;
                return io::copy(&mut server, &mut client).map(drop);
            }
        };
        fill(&mut server, &mut pending, end + length, &mut buf)?;
        let body_end = (end + length).min(pending.len());
        let ranged = status == "206" && length > 0 && body_end == end + length;
        if ranged && faults.corrupt.load(Ordering::Relaxed) {
            pending[end + length / 2] ^= 0x40;
        }
        let delay = faults.delay_ms.load(Ordering::Relaxed);
        if ranged && delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        client.write_all(&pending[..body_end])?;
        pending.drain(..body_end);
    }
}
