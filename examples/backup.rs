//! A small backup tool built on the library: stores every file under a directory in a store,
//! reads each back verified and compares it with the original, then scrubs the store.
//!
//! ```text
//! cargo run --release --example backup -- SOURCE_DIR STORE_DIR
//! cargo run --release --example backup            # on generated files, in a temporary directory
//! ```

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use shardguard::{Error, PutMode, ScrubOptions, ScrubVerdict, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let scratch;
    let (source, store_dir) = match args.as_slice() {
        [source, store] => (source.clone(), store.clone()),
        [] => {
            scratch = tempfile::tempdir()?;
            let source = scratch.path().join("source");
            generate(&source)?;
            (source, scratch.path().join("store"))
        }
        _ => return Err("usage: backup [SOURCE_DIR STORE_DIR]".into()),
    };
    let store = match Store::open(&store_dir) {
        Ok(store) => store,
        Err(Error::NotAStore { .. }) => Store::create(&store_dir)?,
        Err(e) => return Err(e.into()),
    };

    let files = files_under(&source)?;
    let mut stored = 0u64;
    for path in &files {
        let key = key_of(&source, path);
        // Only what changed is written again: same length and bytes means same content here.
        if unchanged(&store, &key, path)? {
            continue;
        }
        let outcome = match store.stat(&key) {
            Ok(stat) => store.put_with(
                &key,
                fs::File::open(path)?,
                PutMode::Update {
                    version: stat.version,
                },
            )?,
            Err(Error::NotFound { .. }) => store.put_with(&key, fs::File::open(path)?, PutMode::Create)?,
            Err(e) => return Err(e.into()),
        };
        stored += outcome.len;
    }
    println!("backed up {} files ({stored} bytes written)", files.len());

    // Every file read back through the store's verified path and compared with the original.
    for path in &files {
        if !unchanged(&store, &key_of(&source, path), path)? {
            return Err(format!("{} does not read back as it was", path.display()).into());
        }
    }
    println!("verified {} files byte for byte", files.len());

    let report = store.scrub(&ScrubOptions::default(), &|_| {})?;
    println!("scrub: {:?}, {} objects", report.verdict(), report.objects);
    if report.verdict() != ScrubVerdict::Clean {
        return Err("the scrub found damage: run shardguard scrub --repair".into());
    }
    Ok(())
}

/// The key of a file: its path under the source directory.
fn key_of(source: &Path, path: &Path) -> String {
    path.strip_prefix(source)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Whether the store holds exactly the file's bytes under `key`.
fn unchanged(store: &Store, key: &str, path: &Path) -> Result<bool, Box<dyn std::error::Error>> {
    let mut stored = match store.get(key) {
        Ok(reader) => reader,
        Err(Error::NotFound { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if stored.len() != fs::metadata(path)?.len() {
        return Ok(false);
    }
    let mut file = io::BufReader::new(fs::File::open(path)?);
    let (mut a, mut b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = stored.read(&mut a)?;
        if n == 0 {
            return Ok(true);
        }
        file.read_exact(&mut b[..n])?;
        if a[..n] != b[..n] {
            return Ok(false);
        }
    }
}

fn files_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.extend(files_under(&entry.path())?);
        } else if entry.file_type()?.is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// A few files of various sizes, for a run without arguments.
fn generate(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir.join("docs"))?;
    for (name, len) in [
        ("docs/notes.txt", 1_000usize),
        ("docs/empty", 0),
        ("photo.raw", 3 << 20),
        ("db.dump", 700_000),
    ] {
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i as u64).wrapping_mul(2_654_435_761) as u8)
            .collect();
        fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}
