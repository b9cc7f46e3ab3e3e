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
    child: Option<Child>,
}

impl LocalS3Server {
    /// Starts a server of `binary` with [`BUCKET`] under `root`, on a free port, and waits
    /// (at most 20 s) until it accepts connections.
    ///
    /// # Errors
    /// When the directory, the port or the process cannot be had, or it does not start.
    pub fn start(binary: &Path, root: PathBuf) -> io::Result<LocalS3Server> {
        std::fs::create_dir_all(root.join(BUCKET))?;
        // A port the kernel just handed out is free for the server to take.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = LocalS3Server {
            binary: binary.to_path_buf(),
            root,
            port,
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
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
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
                let (Ok(mut from_client), Ok(mut to_server)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                std::thread::spawn(move || {
                    let _ = io::copy(&mut from_client, &mut to_server);
                    let _ = to_server.shutdown(Shutdown::Write);
                });
                let faults = Arc::clone(&shared);
                std::thread::spawn(move || relay_responses(server, client, &faults));
            }
        });
        Ok(FaultyProxy { port, faults })
    }

    /// The location string reaching its server's bucket through it.
    pub fn location(&self) -> String {
        location_at(self.port)
    }
}

/// Copies HTTP responses from `server` to `client`, with `faults` on each 206 answer (one
/// with a Content-Length; from an answer without one on, everything passes as it is).
fn relay_responses(mut server: TcpStream, mut client: TcpStream, faults: &ProxyFaults) -> io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let end = loop {
            if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = server.read(&mut buf)?;
            if n == 0 {
                return client.write_all(&pending);
            }
            pending.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let Some(length) = length else {
            client.write_all(&pending)?;
            return io::copy(&mut server, &mut client).map(drop);
        };
        while pending.len() < end + length {
            let n = server.read(&mut buf)?;
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
        }
        let body_end = (end + length).min(pending.len());
        let ranged = head.starts_with("http/1.1 206") && length > 0 && body_end == end + length;
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
