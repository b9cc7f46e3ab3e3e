//! Local S3 servers (`s3s-fs`, one process per location on 127.0.0.1), for the remote demo,
//! tests and benches: each its own failure domain, killed, restarted, or restarted empty.
//!
//! `s3s-fs` keeps each bucket as a directory under the server's root and each object as a file
//! in it, so a test (or the demo) can also rot an object at rest. Install it with `cargo install
//! s3s-fs --version 0.14.1 --features binary --locked`.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to install the server, for messages.
pub const INSTALL: &str = "cargo install s3s-fs --version 0.14.1 --features binary --locked";

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
        let port = free_port()?;
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

/// A port the kernel just handed out, so free for a server to take, and never handed to another
/// server of this process: the kernel may hand a port it took back to the next `bind` at once,
/// and two servers started side by side (tests run in parallel) could then both be told the
/// same port. The second one's process fails to bind, but its start waits only for the port to
/// accept connections, which the first's does: its store then finds another test's data there
/// (seen as a `LocationTaken` at `create`).
fn free_port() -> io::Result<u16> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return Ok(port);
        }
    }
}

impl Drop for LocalS3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn location_at(port: u16) -> String {
    format!("s3:http://127.0.0.1:{port}/{BUCKET}/store")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_port_is_handed_to_two_servers_of_one_process() {
        // The kernel hands a port just let go to a later `bind` often enough (a few times in
        // a few hundred binds on this project's machine) for servers started side by side to
        // be told the same one.
        let mut ports: Vec<u16> = (0..500).map(|_| free_port().expect("a free port")).collect();
        let handed = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), handed, "a port was handed out twice");
    }
}
