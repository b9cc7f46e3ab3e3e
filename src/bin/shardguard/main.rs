//! The `shardguard` command: parses arguments, calls the library, prints. Every decision lives
//! in the library.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use shardguard::demo::{self, DemoEvent, DemoOptions};
use shardguard::{
    Error, LocationState, ScrubOptions, ScrubProgress, ScrubReport, ScrubVerdict, ShardState, Store,
};

/// `println!` that ends the program quietly when stdout is closed (`shardguard ls | head`)
/// instead of panicking, and with exit code 8 on any other write error.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("shardguard: <stdout>: {e}");
            std::process::exit(8);
        }
    }};
}

const EXIT_CODES: &str = "\
Exit codes:
  0  success (scrub: everything verified clean)
  1  key not found (scrub: damage found and all of it repaired)
  2  usage error (bad arguments, invalid key or configuration, a store already there)
  3  scrub: damage found, repairable, not repaired (run with --repair)
  4  data unrecoverable (more chunks lost than the parity can rebuild)
  8  any other operational error (I/O, damaged store file, ...)";

/// Keep data correct on storage that fails: objects stored as Reed-Solomon-coded,
/// CRC32C-checked shards over several directories (ideally disks).
#[derive(Parser, Debug)]
#[command(name = "shardguard", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// A location of the store, where a copy of its store file is read if the store file is
    /// lost or damaged: needed only when the locations are not under the store's directory. A
    /// directory or a remote location (s3:...).
    #[arg(long = "location-hint", value_name = "LOCATION", global = true)]
    location_hints: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a store.
    Init {
        /// The store's root directory (created if missing).
        store: PathBuf,
        /// Data shards per stripe (k).
        #[arg(long = "data", short = 'k', default_value_t = 4)]
        data: u8,
        /// Parity shards per stripe (m): lost chunks per stripe that are survived.
        #[arg(long = "parity", short = 'm', default_value_t = 2)]
        parity: u8,
        /// Bytes per chunk, e.g. 64KiB or 1MiB.
        #[arg(long, default_value = "1MiB", value_parser = parse_chunk_size)]
        chunk_size: u32,
        /// A location directory (relative to the current directory), or a bucket on an
        /// S3-compatible store (s3:http://HOST:PORT/BUCKET/PREFIX, s3://BUCKET/PREFIX); give it
        /// k + m times (default: subdirectories of the store). No two may be the same or nested.
        #[arg(long = "location")]
        locations: Vec<PathBuf>,
        /// Store objects smaller than this in shared packs, e.g. 64KiB (0: never; at most
        /// 16MiB) [default: 64KiB, or 0 for chunks under 64KiB + 1095 bytes]. A packing store
        /// is refused by builds older than the small-write log.
        #[arg(long, value_parser = parse_chunk_size)]
        pack_threshold: Option<u32>,
    },
    /// Store an object (from FILE, or standard input when FILE is omitted or "-").
    Put {
        /// The store's root directory.
        store: PathBuf,
        /// The object's key (any UTF-8 name of 1 to 1024 bytes without NUL).
        key: String,
        /// The file to store.
        file: Option<PathBuf>,
    },
    /// Store every regular file under DIR, each under its path relative to DIR ('/'-separated,
    /// after --prefix), in batches: in a packing store small files share packs and fsyncs.
    /// Symbolic links and special files are not followed; each is named on stderr.
    Import {
        /// The store's root directory.
        store: PathBuf,
        /// The directory whose files to store.
        dir: PathBuf,
        /// Put this before every key, e.g. "home/".
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Read an object, verified (to standard output unless -o is given).
    Get {
        /// The store's root directory.
        store: PathBuf,
        /// The object's key.
        key: String,
        /// Write to this file instead (written whole and verified, then renamed into place,
        /// replacing an existing file unless --no-clobber is given).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// With -o: refuse (exit 2) if the file already exists.
        #[arg(long, requires = "output")]
        no_clobber: bool,
    },
    /// List objects (keys with control characters or backslashes are printed escaped: \n, \\).
    Ls {
        /// The store's root directory.
        store: PathBuf,
        /// Also show size and version.
        #[arg(short, long)]
        long: bool,
        /// Print a JSON array of {key, len, version} objects (keys exact).
        #[arg(long, conflicts_with = "null")]
        json: bool,
        /// End each key with a NUL byte instead of a newline (keys exact, for xargs -0).
        #[arg(short = '0', long)]
        null: bool,
    },
    /// Delete objects (several keys are deleted as one batch: in a packing store, a few
    /// fsyncs for all of them). Exit 1 if any key was not there (the others are deleted).
    Rm {
        /// The store's root directory.
        store: PathBuf,
        /// The objects' keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Show an object's size, version and each shard's state as its header says (chunks are
    /// not read unless --verify is given).
    Stat {
        /// The store's root directory.
        store: PathBuf,
        /// The object's key.
        key: String,
        /// Also read the whole object, verifying every data chunk (parity where needed).
        #[arg(long)]
        verify: bool,
    },
    /// Verify every chunk of every object; with --repair, fix what is damaged.
    Scrub {
        /// The store's root directory.
        store: PathBuf,
        /// Repair: rewrite damaged chunks, rebuild missing shards and wiped locations, remove
        /// leftovers of crashed writes.
        #[arg(long)]
        repair: bool,
        /// Also recompute parity and compare (catches parity written wrong with a valid CRC).
        #[arg(long)]
        deep: bool,
        /// Worker threads, 1 to 256 (default: all cores).
        #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: Option<u16>,
        /// Cap on bytes read per second, e.g. 200MiB (at least 1; omit it for no cap).
        #[arg(long, value_parser = parse_rate)]
        max_rate: Option<u64>,
        /// Only objects whose key starts with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Only this percentage of the objects, least recently scrubbed first.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
        percent: Option<u8>,
        /// Continue an interrupted scrub, skipping what it already verified.
        #[arg(long)]
        resume: bool,
        /// Print the report as one JSON object on stdout (and no progress).
        #[arg(long)]
        json: bool,
    },
    /// Show locations (health, free space), objects, and the last scrub.
    Status {
        /// The store's root directory.
        store: PathBuf,
    },
    /// Keep credentials for one remote location of a store (from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN as now set), for stores spread over several
    /// providers: written to STORE/credentials, owner-only, never to the store file. May be run
    /// before `init` (which needs them to list the bucket).
    Credentials {
        /// The store's root directory.
        store: PathBuf,
        /// The remote location, as given to `init`.
        location: String,
        /// Forget this location's credentials (it then signs with the environment's).
        #[arg(long)]
        remove: bool,
    },
    /// Build a store on generated data, damage it, repair it with a scrub, and verify it.
    Demo {
        /// Where to build the store (default: a temporary directory, removed afterwards).
        dir: Option<PathBuf>,
        /// Over six local S3 servers (s3s-fs, started and stopped by the demo), each with keys
        /// of its own: rot at rest, a server emptied, another stopped.
        #[arg(long)]
        remote: bool,
    },
}

fn parse_chunk_size(s: &str) -> Result<u32, String> {
    let bytes = parse_size::parse_size(s).map_err(|e| format!("{s:?}: {e}"))?;
    u32::try_from(bytes).map_err(|_| format!("{s:?} is too large (at most 64MiB)"))
}

fn parse_rate(s: &str) -> Result<u64, String> {
    match parse_size::parse_size(s).map_err(|e| format!("{s:?}: {e}"))? {
        0 => {
            Err("0 would never finish: give at least 1 byte per second, or omit --max-rate for no cap".into())
        }
        rate => Ok(rate),
    }
}

/// Opens the store, warning (one line on stderr) when it had to open from the copies of its
/// store file kept in the locations (`hints`: locations to look in besides those under it).
fn open_store(path: &std::path::Path, hints: &[PathBuf]) -> Result<Store, shardguard::Error> {
    let store = hints
        .iter()
        .fold(Store::builder(), |options, hint| options.location_hint(hint))
        .open(path)?;
    if let Some(problem) = store.store_file_problem() {
        let _ = writeln!(
            io::stderr(),
            "shardguard: warning: {problem} (scrub --repair rewrites it)"
        );
    }
    Ok(store)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return argument_error(e),
    };
    match run(cli.command, &cli.location_hints) {
        Ok(code) => ExitCode::from(code),
        // The reader went away (`get … | head`): nothing to report.
        Err(Failure::Store(Error::Output { source })) if source.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(Failure::Store(e)) => {
            eprintln!("shardguard: {e}");
            ExitCode::from(exit_code(&e))
        }
        Err(Failure::Usage(message)) => {
            eprintln!("shardguard: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Io(context, e)) => {
            if e.kind() == io::ErrorKind::BrokenPipe {
                // The reader went away (`| head`): nothing to report.
                return ExitCode::SUCCESS;
            }
            eprintln!("shardguard: {context}: {e}");
            ExitCode::from(8)
        }
    }
}

/// Prints an argument error as one line (the README's promise for every error) with the
/// command's `--help` as the hint, and exits 2; help and version requests print as usual.
fn argument_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
    }
    let rendered = e.render().to_string();
    // The message, with the items a "…:" line announces (missing arguments) on the same line.
    let mut lines = rendered.lines();
    let mut message = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    if message.ends_with(':') {
        for item in lines.take_while(|l| l.starts_with("  ")) {
            message.push(' ');
            message.push_str(item.trim());
        }
    }
    // The subcommand given, whose help to point at.
    let subcommands: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    let command = std::env::args()
        .skip(1)
        .find(|a| subcommands.contains(a))
        .map_or("shardguard".to_owned(), |sub| format!("shardguard {sub}"));
    eprintln!("shardguard: {message} (see '{command} --help')");
    ExitCode::from(2)
}

enum Failure {
    Store(Error),
    Io(String, io::Error),
    /// A usage error found after parsing (exit 2).
    Usage(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Store(e)
    }
}

fn io_context(context: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Failure {
    move |e| Failure::Io(context.to_string(), e)
}

/// Runs a command; returns the exit code on success (0, or a scrub's verdict).
fn run(command: Command, hints: &[PathBuf]) -> Result<u8, Failure> {
    match command {
        Command::Init {
            store,
            data,
            parity,
            chunk_size,
            locations,
            pack_threshold,
        } => {
            // Relative locations are relative to where the command runs, as for every other
            // path argument; the store records them absolute. Remote ones stay as given.
            let locations = locations
                .iter()
                .map(|l| match shardguard::LocationSpec::parse(l) {
                    Ok(shardguard::LocationSpec::Local(_)) => {
                        std::path::absolute(l).map_err(io_context(l.display()))
                    }
                    _ => Ok(l.clone()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut builder = Store::builder()
                .data_shards(data)
                .parity_shards(parity)
                .chunk_size(chunk_size);
            if let Some(threshold) = pack_threshold {
                builder = builder.pack_threshold(threshold);
            }
            if !locations.is_empty() {
                builder = builder.locations(locations);
            }
            let s = builder.create(&store)?;
            say!(
                "created store {} ({data} data + {parity} parity shards, {} locations, chunk {chunk_size} bytes)",
                store.display(),
                s.locations().len()
            );
        }
        Command::Put { store, key, file } => {
            if file.is_none() && io::stdin().is_terminal() {
                return Err(Failure::Usage(
                    "no FILE given and standard input is a terminal: give FILE, or \"-\" to read the terminal".into(),
                ));
            }
            let store = open_store(&store, hints)?;
            let outcome = match file.filter(|f| f.as_os_str() != "-") {
                Some(path) => {
                    let f = File::open(&path).map_err(io_context(path.display()))?;
                    if f.metadata().is_ok_and(|m| m.is_dir()) {
                        return Err(Failure::Usage(format!(
                            "{}: a directory, not a file",
                            path.display()
                        )));
                    }
                    // A failed read of the input names the user's file.
                    match store.put(&key, io::BufReader::with_capacity(1 << 20, f)) {
                        Err(Error::Input { source }) => {
                            return Err(Failure::Io(path.display().to_string(), source))
                        }
                        other => other?,
                    }
                }
                None => store.put(&key, io::stdin().lock())?,
            };
            let n = store.geometry().shards();
            if outcome.shards_written < n {
                eprintln!(
                    "shardguard: warning: {key:?} is stored with reduced redundancy: {} of {n} shards \
                     written (a location is unusable: see `status`); a scrub --repair restores the rest",
                    outcome.shards_written
                );
            }
            eprintln!(
                "stored {key:?}: {} bytes, version {}, {} shards",
                outcome.len, outcome.version, outcome.shards_written
            );
        }
        Command::Get {
            store,
            key,
            output,
            no_clobber,
        } => {
            if let Some(path) = output
                .as_ref()
                .filter(|p| no_clobber && p.symlink_metadata().is_ok())
            {
                return Err(Failure::Usage(format!(
                    "{}: exists (--no-clobber)",
                    path.display()
                )));
            }
            let store = open_store(&store, hints)?;
            if let Some(path) = output {
                store.get_to_path(&key, &path)?;
                return Ok(0);
            }
            let mut reader = store.get(&key)?;
            let mut out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
            reader.copy_to(&mut out)?;
            out.flush().map_err(io_context("<stdout>"))?;
            let stats = reader.stats();
            if stats.erasures + stats.retransmissions > 0 {
                eprintln!(
                    "read {key:?} verified: {} retransmissions ({} cured), {} chunks rebuilt from parity in {} stripes",
                    stats.retransmissions,
                    stats.cured_by_retransmission,
                    stats.erasures,
                    stats.stripes_reconstructed
                );
            }
        }
        Command::Ls {
            store,
            long,
            json,
            null,
        } => {
            let store = open_store(&store, hints)?;
            let listing = store.list()?;
            let mut out = BufWriter::new(io::stdout().lock());
            if json {
                let entries: Vec<_> = listing
                    .iter()
                    .map(|e| serde_json::json!({"key": e.key, "len": e.len, "version": e.version}))
                    .collect();
                serde_json::to_writer(&mut out, &entries)
                    .map_err(|e| Failure::Io("<stdout>".into(), e.into()))?;
                writeln!(out).map_err(io_context("<stdout>"))?;
            }
            for entry in listing.iter().filter(|_| !json) {
                let key = match null {
                    true => entry.key.clone(),
                    false => escaped(&entry.key),
                };
                let end = if null { '\0' } else { '\n' };
                let line = match long {
                    true => write!(out, "{:>14} {:>6} {key}{end}", entry.len, entry.version),
                    false => write!(out, "{key}{end}"),
                };
                line.map_err(io_context("<stdout>"))?;
            }
            out.flush().map_err(io_context("<stdout>"))?;
        }
        Command::Import { store, dir, prefix } => {
            let store = open_store(&store, hints)?;
            let mut files = Vec::new();
            let skipped = files_under(&dir, &dir, &prefix, &mut files)?;
            let (mut count, mut bytes) = (0u64, 0u64);
            for batch in import_batches(&files) {
                let readers = batch
                    .iter()
                    .map(|(key, path, _)| (key.as_str(), LazyFile { path, file: None }));
                for outcome in store.put_many(readers)? {
                    count += 1;
                    bytes += outcome.len;
                }
            }
            let skipped = match skipped {
                0 => String::new(),
                n => format!("; skipped {n} symbolic links and special files (named above)"),
            };
            say!("imported {count} files ({bytes} bytes){skipped}");
        }
        Command::Rm { store, keys } => {
            let store = open_store(&store, hints)?;
            if let [key] = keys.as_slice() {
                store.delete(key)?;
                return Ok(0);
            }
            let there = store.delete_many(keys.iter().map(String::as_str))?;
            let absent: Vec<&String> = keys
                .iter()
                .zip(there)
                .filter(|(_, t)| !t)
                .map(|(k, _)| k)
                .collect();
            if !absent.is_empty() {
                eprintln!(
                    "shardguard: {} of {} keys not found (the others are deleted): {}",
                    absent.len(),
                    keys.len(),
                    absent.iter().map(|k| escaped(k)).collect::<Vec<_>>().join(" ")
                );
                return Ok(1);
            }
        }
        Command::Stat { store, key, verify } => {
            let store = open_store(&store, hints)?;
            let stat = store.stat(&key)?;
            say!("key:      {}", escaped(&stat.key));
            say!("size:     {} bytes", stat.len);
            say!("version:  {}", stat.version);
            say!("stripes:  {}", stat.stripes);
            if let Some(pack) = &stat.pack {
                say!("pack:     {pack} (stored with other small objects: the shards below are the pack's)");
            }
            say!("shards:");
            for s in &stat.shards {
                say!(
                    "  {:>3}  slot {:>3}  {:<24} {}",
                    s.shard,
                    s.slot,
                    state(&s.state),
                    s.location.display()
                );
            }
            if !verify {
                say!("(from the shard headers; chunks not verified: stat --verify reads them, scrub checks parity too)");
            } else {
                let mut reader = store.get(&key)?;
                let len = reader.copy_to(&mut io::sink())?;
                let stats = reader.stats();
                say!(
                    "verified: {len} bytes read back exact; {} chunks rebuilt from parity, {} retransmissions",
                    stats.erasures,
                    stats.retransmissions
                );
            }
        }
        Command::Demo { dir, remote } => {
            // Checked first: nothing is created for a demo that cannot run.
            let server = match remote {
                true => Some(shardguard::s3_server::server_binary().ok_or_else(|| {
                    Failure::Usage(format!(
                        "the remote demo runs on local S3 servers: install them with `{}`",
                        shardguard::s3_server::INSTALL
                    ))
                })?),
                false => None,
            };
            let temp;
            let dir = match dir {
                Some(d) => d,
                None => {
                    temp = tempfile::Builder::new()
                        .prefix("shardguard-demo-")
                        .tempdir()
                        .map_err(io_context("creating a temporary directory"))?;
                    temp.path().join("demo")
                }
            };
            let last = match server {
                Some(server) => {
                    // Modest sample data: every byte goes through six local servers.
                    let options = DemoOptions {
                        objects: 32,
                        total_bytes: 96 << 20,
                        ..DemoOptions::default()
                    };
                    demo::run_remote(&dir, &server, &options, print_demo_event)?
                }
                None => demo::run(&dir, &DemoOptions::default(), print_demo_event)?,
            };
            if last.verdict() != ScrubVerdict::Clean {
                eprintln!("shardguard: demo failed: the last scrub did not come out clean");
                return Ok(verdict_exit_code(last.verdict()));
            }
            say!("demo finished: the damage was found and repaired; every object reads back byte-exact");
        }
        Command::Scrub {
            store,
            repair,
            deep,
            jobs,
            max_rate,
            prefix,
            percent,
            resume,
            json,
        } => {
            let store = open_store(&store, hints)?;
            let mut options = ScrubOptions::default().repair(repair).deep(deep).resume(resume);
            if let Some(jobs) = jobs {
                options = options.jobs(jobs.into());
            }
            if let Some(rate) = max_rate {
                options = options.max_rate(rate);
            }
            if let Some(prefix) = prefix {
                options = options.prefix(prefix);
            }
            if let Some(percent) = percent {
                options = options.percent(percent);
            }
            // Made at the first report, once the totals are known, so no frame shows empty fields.
            let show_progress = !json && io::stderr().is_terminal();
            let bar = std::sync::OnceLock::new();
            let report = store.scrub(&options, &|p: ScrubProgress| {
                if show_progress {
                    let bar = bar.get_or_init(|| progress_bar(p.bytes_total));
                    bar.set_position(p.bytes_done.min(p.bytes_total));
                    bar.set_message(format!("{}/{} objects", p.objects_done, p.objects_total));
                }
            })?;
            if let Some(bar) = bar.get() {
                bar.finish_and_clear();
            }
            if json {
                let text =
                    serde_json::to_string(&report).map_err(|e| Failure::Io("report".into(), e.into()))?;
                say!("{text}");
            } else {
                print_scrub_report(&report);
            }
            return Ok(verdict_exit_code(report.verdict()));
        }
        Command::Credentials {
            store,
            location,
            remove,
        } => {
            let credentials = match remove {
                true => None,
                false => Some(shardguard::Credentials::from_env().ok_or_else(|| {
                    Failure::Usage(
                        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to the location's keys first".into(),
                    )
                })?),
            };
            let id = credentials.as_ref().map(|c| c.access_key_id.clone());
            let file = shardguard::credentials::set(&store, &location, credentials)?;
            match id {
                Some(id) => say!(
                    "{location}: signs with access key {id} (kept in {}, owner-only)",
                    file.display()
                ),
                None => say!("{location}: signs with the environment's keys"),
            }
        }
        Command::Status { store } => {
            let status = open_store(&store, hints)?.status()?;
            let g = status.geometry;
            say!(
                "store {}: {} data + {} parity shards, chunk {}",
                store.display(),
                g.k,
                g.m,
                indicatif::HumanBytes(u64::from(g.chunk_size))
            );
            match status.objects {
                Some((count, bytes)) => say!("objects: {count} ({})", indicatif::HumanBytes(bytes)),
                None => say!("objects: unknown (too few locations can be read to count them)"),
            }
            for l in &status.locations {
                let free = l
                    .free_bytes
                    .map_or("?".into(), |b| indicatif::HumanBytes(b).to_string());
                let health = l.problem.as_ref().map_or("healthy".into(), ToString::to_string);
                let Some(net) = l.network else {
                    say!(
                        "  slot {:>3}  {:<10} free  {}  {}",
                        l.slot,
                        free,
                        l.path.display(),
                        health
                    );
                    continue;
                };
                let latency = net
                    .median_read_latency
                    .map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3));
                say!(
                    "  slot {:>3}  remote      {}  {}; endpoint {}, read latency {latency}, {} requests, {} failed, {} not sent",
                    l.slot,
                    l.path.display(),
                    health,
                    if net.down { "down" } else { "reachable" },
                    net.requests,
                    net.failed,
                    net.not_contacted
                );
            }
            match &status.last_scrub {
                None => say!("last scrub: never"),
                Some(r) => say!(
                    "last scrub: finished {}, {} objects in {:.1} s, result: {}",
                    when(r.finished_unix),
                    r.objects,
                    r.duration_secs,
                    verdict_text(r)
                ),
            }
            if let Some(c) = status.scrub_coverage {
                match c.oldest_scrub_unix {
                    Some(oldest) => say!("least recently scrubbed object: verified {}", when(oldest)),
                    None => say!("least recently scrubbed object: none verified yet"),
                }
                if c.never_scrubbed > 0 {
                    say!("never scrubbed: {} objects (run scrub)", c.never_scrubbed);
                }
            }
        }
    }
    Ok(0)
}

/// Bytes of shard files (data and parity) read of the total, with a byte rate and an ETA from it.
fn progress_bar(bytes_total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(bytes_total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:20} {bytes}/{total_bytes} shard bytes (data+parity) {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_secs(1));
    bar
}

/// A key as one unambiguous line: control characters and backslashes escaped (`\n`, `\t`,
/// `\\`, `\u{1b}`), everything else as is.
/// Collects the regular files under `dir` (walked in name order) as `(key, path, length)`,
/// keys relative to `root` after `prefix`; returns how many entries were skipped (symbolic links
/// and special files, each named on stderr). A name that is not UTF-8 is a usage error: it has
/// no key, and nothing is written before it is found.
fn files_under(
    root: &std::path::Path,
    dir: &std::path::Path,
    prefix: &str,
    files: &mut Vec<(String, PathBuf, u64)>,
) -> Result<usize, Failure> {
    let mut entries = std::fs::read_dir(dir)
        .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
        .map_err(io_context(dir.display()))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    let mut skipped = 0;
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(io_context(path.display()))?;
        if kind.is_dir() {
            skipped += files_under(root, &path, prefix, files)?;
        } else if kind.is_file() {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let Some(name) = relative.to_str() else {
                return Err(Failure::Usage(format!(
                    "{}: the name is not UTF-8, so it cannot be a key (nothing imported)",
                    path.display()
                )));
            };
            let key = format!("{prefix}{name}");
            if let Err(e) = shardguard::validate_key(&key) {
                return Err(Failure::Usage(format!(
                    "{}: {e} (nothing imported)",
                    path.display()
                )));
            }
            let len = entry.metadata().map_err(io_context(path.display()))?.len();
            files.push((key, path, len));
        } else {
            eprintln!(
                "shardguard: skipped {} (not a regular file or directory)",
                path.display()
            );
            skipped += 1;
        }
    }
    Ok(skipped)
}

/// Cuts an import into batches of at most 1000 files and 256 MiB (a batch's small files are
/// held in memory while their packs are written).
fn import_batches(files: &[(String, PathBuf, u64)]) -> Vec<&[(String, PathBuf, u64)]> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, (_, _, len)) in files.iter().enumerate() {
        if i > start && (i - start == 1000 || bytes + len > 256 << 20) {
            batches.push(&files[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < files.len() {
        batches.push(&files[start..]);
    }
    batches
}

/// A file of an import, opened when first read: a batch holds one file open at a time. Its
/// errors name the file.
struct LazyFile<'p> {
    path: &'p std::path::Path,
    file: Option<File>,
}

impl io::Read for LazyFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", self.path.display()));
        let file = match &mut self.file {
            Some(file) => file,
            none => none.insert(File::open(self.path).map_err(named)?),
        };
        file.read(buf).map_err(named)
    }
}

fn escaped(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// A moment as a UTC date and its age: "2026-11-24T09:00:00Z (3 days ago)".
fn when(unix_secs: u64) -> String {
    let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_secs);
    let date = humantime::format_rfc3339_seconds(then);
    match std::time::SystemTime::now().duration_since(then) {
        Ok(age) => format!("{date} ({} ago)", rough(age.as_secs())),
        Err(_) => format!("{date} (in the future: check the clock)"),
    }
}

/// A duration to its largest whole unit: "3 days", "1 hour", "42 seconds".
fn rough(secs: u64) -> String {
    let (n, unit) = [(86_400, "day"), (3_600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(size, _)| secs >= *size)
        .map_or((secs, "second"), |(size, unit)| (secs / size, unit));
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// The exit code for an error (README, "exit codes"): 1 not found, 2 usage (bad key or
/// configuration, a store already there), 4 data unrecoverable, 8 any other operational error.
fn exit_code(e: &Error) -> u8 {
    match e {
        Error::NotFound { .. } => 1,
        Error::InvalidKey { .. } | Error::InvalidConfig { .. } | Error::AlreadyExists { .. } => 2,
        Error::Unrecoverable { .. } | Error::NoQuorum { .. } | Error::ObjectChecksum { .. } => 4,
        _ => 8,
    }
}

/// The exit code for a scrub's verdict: 0 clean, 1 damage found and all repaired, 3 damage
/// found and not (all) repaired, 4 some data unrecoverable.
fn verdict_exit_code(verdict: ScrubVerdict) -> u8 {
    match verdict {
        ScrubVerdict::Clean => 0,
        ScrubVerdict::Repaired => 1,
        ScrubVerdict::NeedsRepair => 3,
        ScrubVerdict::Unrecoverable => 4,
        // A verdict added to the library and not mapped here is operational.
        _ => 8,
    }
}

/// The verdict in words; what to do next is never the command that just ran.
fn verdict_text(r: &ScrubReport) -> &'static str {
    match r.verdict() {
        ScrubVerdict::Clean => "clean",
        ScrubVerdict::Repaired => "damage found and repaired",
        ScrubVerdict::NeedsRepair if r.repair => {
            "DAMAGE FOUND, not all of it repaired (see the locations and messages above)"
        }
        ScrubVerdict::NeedsRepair => "DAMAGE FOUND, not repaired (run scrub --repair)",
        ScrubVerdict::Unrecoverable => "SOME DATA UNRECOVERABLE",
        _ => "unknown verdict (a newer library?)",
    }
}

fn print_scrub_report(r: &ScrubReport) {
    const MIB: f64 = (1u64 << 20) as f64;
    say!(
        "scrubbed {} objects{}: {:.1} MiB in {} chunks verified in {:.1} s ({:.0} MiB/s)",
        r.objects,
        if r.skipped_by_resume > 0 {
            format!(" ({} skipped, done before the resume)", r.skipped_by_resume)
        } else {
            String::new()
        },
        r.counts.bytes_verified as f64 / MIB,
        r.counts.chunks_verified,
        r.duration_secs,
        r.counts.bytes_verified as f64 / MIB / r.duration_secs.max(1e-9)
    );
    say!(
        "damaged chunks: {} ({} repaired, {} parity mismatches), damaged shard files: {} ({} rebuilt, {} stale)",
        r.counts.damaged_chunks, r.counts.repaired_chunks, r.counts.parity_mismatches, r.counts.damaged_shards, r.counts.rebuilt_shards, r.counts.stale_shards
    );
    say!(
        "transient faults cured by retransmission: {}; leftover files: {} ({} removed)",
        r.counts.transient_faults_cured,
        r.counts.leftover_files,
        r.counts.leftover_files_removed
    );
    let c = &r.compaction;
    if c.packs_compacted > 0 {
        say!(
            "packs compacted: {} into {} ({} bytes of overwritten or deleted objects reclaimed, {} delete entries dropped)",
            c.packs_compacted,
            c.packs_written,
            c.dead_bytes_reclaimed,
            c.deletes_dropped
        );
    }
    if let Some(why) = &c.not_done {
        say!("packs not compacted: {why} (a later scrub --repair tries again)");
    }
    match r.resume {
        shardguard::ResumeOutcome::OptionsDiffer => say!(
            "--resume: the checkpoint was of a scrub with other options (repair, deep, prefix or percent); scrubbed from the start"
        ),
        shardguard::ResumeOutcome::NoCheckpoint => say!("--resume: no checkpoint to resume; scrubbed from the start"),
        _ => {}
    }
    for line in &r.own_files {
        say!("{line}");
    }
    for e in &r.advisory_errors {
        say!("warning: the scrub's own state was not saved (the scrub went on): {e}");
    }
    if r.counts.conflicting_writes > 0 {
        say!(
            "conflicting writes: {} shard files carry the current version number of another write \
             (disks put back from elsewhere?); kept, not removed: check the keys with stat",
            r.counts.conflicting_writes
        );
    }
    for l in &r.locations {
        if l.state != LocationState::Healthy || l.damaged_chunks + l.damaged_shards > 0 {
            say!(
                "  location {} ({}): {}; {} damaged chunks, {} repaired; {} damaged shards, {} rebuilt",
                l.slot,
                l.path.display(),
                l.state,
                l.damaged_chunks,
                l.repaired_chunks,
                l.damaged_shards,
                l.rebuilt_shards
            );
        }
        if let Some(n) = &l.network {
            say!(
                "  location {} ({}): {} requests, {} failed, {} not sent (endpoint down); {} chunks read again to verify; endpoint {}",
                l.slot,
                l.path.display(),
                n.requests,
                n.failed,
                n.not_contacted,
                l.transient_faults_cured,
                if n.down { "down" } else { "reachable" }
            );
        }
    }
    for u in &r.unrecoverable {
        say!(
            "  UNRECOVERABLE {:?}: stripes {:?}: {}",
            u.key,
            u.stripes,
            u.detail
        );
    }
    say!("result: {}", verdict_text(r));
}

fn state(state: &ShardState) -> String {
    match state {
        ShardState::Healthy => "healthy".into(),
        ShardState::Missing => "MISSING".into(),
        ShardState::Stale { version } => format!("STALE (version {version})"),
        ShardState::HeaderDamaged { problem } => format!("HEADER DAMAGED ({problem})"),
        ShardState::Truncated { len, expected } => format!("TRUNCATED ({len} of {expected} bytes)"),
        ShardState::Misplaced => "MISPLACED".into(),
        ShardState::Unavailable { problem } => format!("UNAVAILABLE ({problem})"),
        other => format!("{other:?}"),
    }
}

fn print_demo_event(event: DemoEvent) {
    const MIB: f64 = (1u64 << 20) as f64;
    match event {
        DemoEvent::Created { root, k, m } => {
            say!(
                "created a store in {} with {k} data + {m} parity shards",
                root.display()
            )
        }
        DemoEvent::Stored { objects, bytes, secs } => say!(
            "stored {objects} objects, {:.0} MiB, in {secs:.1} s ({:.0} MiB/s, fsynced)",
            bytes as f64 / MIB,
            bytes as f64 / MIB / secs
        ),
        DemoEvent::Damaged { what } => say!("damage: {what}"),
        DemoEvent::Restored { what } => say!("restored: {what}"),
        DemoEvent::LocationLost { location, problem } => {
            say!("reopened: location {} is unusable: {problem}", location.display())
        }
        DemoEvent::Verified {
            objects,
            bytes,
            secs,
            stats,
        } => {
            say!(
                "read back {objects} objects, {:.0} MiB, in {secs:.1} s ({:.0} MiB/s), every byte verified",
                bytes as f64 / MIB,
                bytes as f64 / MIB / secs
            );
            say!(
                "  chunks verified: {}, failed and rebuilt from parity: {}, stripes rebuilt: {}, retransmissions: {} ({} cured)",
                stats.chunks_verified,
                stats.erasures,
                stats.stripes_reconstructed,
                stats.retransmissions,
                stats.cured_by_retransmission
            );
        }
        DemoEvent::Scrubbed { repair, report } => {
            say!(
                "\n$ shardguard scrub{} STORE",
                if repair { " --repair" } else { "" }
            );
            print_scrub_report(&report);
        }
        other => say!("{other:?}"),
    }
}
