//! Local S3 servers for tests and benches of remote locations: an `s3s-fs` process per
//! location on 127.0.0.1 (each its own failure domain: killed, restarted empty), and a TCP proxy
//! that makes one of them slow or hands out rotten bytes.
//!
//! `s3s-fs` keeps each bucket as a directory under the server's root and each object as a file
//! in it, so a test can also rot an object at rest.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The access key the servers accept (set it as `AWS_ACCESS_KEY_ID`).
pub const ACCESS_KEY: &str = "shardguard-test";
/// The secret key the servers accept (set it as `AWS_SECRET_ACCESS_KEY`).
pub const SECRET_KEY: &str = "shardguard-test-secret";
/// The bucket every server is started with.
pub const BUCKET: &str = "sgtest";

/// The `s3s-fs` binary: `SHARDGUARD_S3S_FS`, else in Cargo's `bin` directory, else on `PATH`.
pub fn server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SHARDGUARD_S3S_FS") {
        return Some(PathBuf::from(path));
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin").join("s3s-fs"));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("s3s-fs"));
    cargo_bin.into_iter().chain(on_path).find(|p| p.is_file())
}

/// Sets the standard AWS variables to the servers' keys, for every store of this process.
pub fn use_server_credentials() {
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    std::env::set_var("AWS_REGION", "us-east-1");
}

/// One `s3s-fs` server: its process, its port, and the directory holding its buckets. Killed
/// when dropped.
pub struct LocalS3Server {
    binary: PathBuf,
    /// The directory holding its buckets (one directory each).
    pub root: PathBuf,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// The access key and secret it accepts.
    keys: (String, String),
    child: Option<Child>,
}

impl LocalS3Server {
    /// Starts a server of `binary` with [`BUCKET`] under `root`, on a free port, and waits
    /// (at most 20 s) until it accepts connections.
    ///
    /// # Errors
    /// When the directory, the port or the process cannot be had, or it does not start.
    pub fn start(binary: &Path, root: PathBuf) -> io::Result<LocalS3Server> {
        Self::start_with_keys(binary, root, ACCESS_KEY, SECRET_KEY)
    }

    /// [`Self::start`], the server accepting only `access_key` with `secret_key` (a provider of
    /// its own).
    ///
    /// # Errors
    /// As [`Self::start`].
    pub fn start_with_keys(
        binary: &Path,
        root: PathBuf,
        access_key: &str,
        secret_key: &str,
    ) -> io::Result<LocalS3Server> {
        std::fs::create_dir_all(root.join(BUCKET))?;
        // A port the kernel just handed out is free for the server to take.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = LocalS3Server {
            binary: binary.to_path_buf(),
            root,
            port,
            keys: (access_key.to_owned(), secret_key.to_owned()),
            child: None,
        };
        server.restart()?;
        Ok(server)
    }

    /// Starts the process again (on the same port and directory) after [`Self::kill`].
    ///
    /// # Errors
    /// When the process cannot be started, or does not accept connections within 20 s.
    pub fn restart(&mut self) -> io::Result<()> {
        let child = Command::new(&self.binary)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", &self.keys.0, "--secret-key", &self.keys.1])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                self.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("s3s-fs on port {} did not start within 20 s", self.port),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills the process (what it stored stays on disk).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server, deletes everything it stored, and starts it again empty.
    ///
    /// # Errors
    /// As [`Self::restart`], or when its directory cannot be emptied.
    pub fn restart_empty(&mut self) -> io::Result<()> {
        self.kill();
        std::fs::remove_dir_all(&self.root)?;
        std::fs::create_dir_all(self.root.join(BUCKET))?;
        self.restart()
    }

    /// The location string of prefix `store` in its bucket.
    pub fn location(&self) -> String {
        location_at(self.port)
    }
}

impl Drop for LocalS3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn location_at(port: u16) -> String {
    format!("s3:http://127.0.0.1:{port}/{BUCKET}/store")
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
