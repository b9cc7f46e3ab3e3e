//! The store's own files (the store file, location identities, scrub state) handled with the suspicion given to
//! data: opened without following a link (`O_NOFOLLOW`) and without blocking on a FIFO or
//! device (`O_NONBLOCK`), accepted only as regular files, and read only up to a bound, so no
//! damaged or hostile file in their place can hang the store, exhaust its memory, or have a
//! write land in some other file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Reads the whole of a regular file of at most `max` bytes.
pub(crate) fn read_bounded(path: &Path, max: usize) -> io::Result<Vec<u8>> {
    let file = open_regular(OpenOptions::new().read(true), path)?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(not_ours(&format!(
            "longer than the {max} bytes such a file can hold"
        )));
    }
    Ok(bytes)
}

/// Replaces the content of a regular file (creating it) in place, never through a link.
pub(crate) fn overwrite(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = open_regular(OpenOptions::new().write(true).create(true).truncate(false), path)?;
    file.write_all(bytes)?;
    file.set_len(bytes.len() as u64)
}

/// Moves whatever is at `path` aside, beside it as `NAME.not-ours.HEX`: never deleted (it may
/// be someone's), but out of the way of the file the store puts there.
pub(crate) fn move_aside(path: &Path) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let aside = path.with_file_name(format!("{name}.not-ours.{:016x}", crate::ids::random_u64()));
    crate::disk::rename(path, &aside)
}

/// Opens `path` with `options`, never through a link nor blocking on a special file, and only
/// if it is a regular file.
pub(crate) fn open_regular(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => not_ours("a symbolic link, not a file of the store"),
            Some(libc::EISDIR) => not_ours("a directory, not a file of the store"),
            _ => e,
        })?;
    if !file.metadata()?.is_file() {
        return Err(not_ours("not a regular file"));
    }
    Ok(file)
}

/// Something in the place of one of the store's files that cannot be it (a link, a directory,
/// a FIFO, a file too long): `InvalidData`, which callers treat like damage, not like an
/// unreadable disk.
fn not_ours(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_fifos_directories_and_endless_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"precious").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(overwrite(&link, b"x").is_err());
        assert_eq!(
            std::fs::read(&target).unwrap(),
            b"precious",
            "written through a link"
        );
        assert!(read_bounded(&link, 100).is_err());
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(
            read_bounded(&fifo, 100).is_err(),
            "a FIFO must not block or be read"
        );
        assert!(read_bounded(dir.path(), 100).is_err());
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(read_bounded(&zero, 100).is_err());
        std::fs::write(&target, vec![7u8; 101]).unwrap();
        assert!(read_bounded(&target, 100).is_err());
        assert_eq!(read_bounded(&target, 101).unwrap().len(), 101);
    }
}
