//! Credentials per remote location, for a store spread over several providers: kept in the
//! store directory's `credentials` file, never in the store file (whose copies live in every
//! location) and never printed.
//!
//! The file is JSON, written atomically with owner-only permissions (0600); a file that others
//! may read, or that is not a regular file, is refused rather than used (as ssh refuses a private
//! key others can read). A remote location without an entry signs with the standard variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ConfigProblem, Error, Result};
use crate::location::Durability;
use crate::location_spec::LocationSpec;

/// The file under the store's root.
pub const CREDENTIALS_FILE: &str = "credentials";
/// Longer than any real credentials file: a bigger one is not read.
const MAX_LEN: u64 = 1 << 20;

/// The keys one remote location signs its requests with.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The access key id (not secret: `status` may name it).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A session token, for temporary credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    /// The access key id only: the secret and the token never reach a message or a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Credentials {
    /// The credentials of the standard variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`), if the first two are set.
    pub fn from_env() -> Option<Credentials> {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Some(Credentials {
            access_key_id: var("AWS_ACCESS_KEY_ID")?,
            secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
            session_token: var("AWS_SESSION_TOKEN"),
        })
    }
}

/// What the file holds: credentials by location string (as the store file spells it).
#[derive(Default, Serialize, Deserialize)]
struct CredentialsFile {
    locations: BTreeMap<String, Credentials>,
}

/// The location string `location` normalised as the store file spells it; refused unless it
/// is a remote location.
fn key_of(location: &str) -> Result<String> {
    match LocationSpec::parse(Path::new(location)).map_err(|e| Error::invalid_config(e.into()))? {
        LocationSpec::S3(spec) => Ok(spec.to_string()),
        LocationSpec::Local(_) => Err(refused(
            Path::new(location),
            "credentials are for remote locations (s3:...) only".into(),
        )),
    }
}

fn refused(path: &Path, why: String) -> Error {
    Error::invalid_config(ConfigProblem::Credentials {
        path: path.to_path_buf(),
        why,
    })
}

fn read(root: &Path) -> Result<CredentialsFile> {
    let path = root.join(CREDENTIALS_FILE);
    let meta = match fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(CredentialsFile::default()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    if !meta.is_file() {
        return Err(refused(&path, "not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(refused(
            &path,
            format!("others may read it (mode {mode:03o}): chmod 600 it, or remove it"),
        ));
    }
    if meta.len() > MAX_LEN {
        return Err(refused(&path, format!("longer than {MAX_LEN} bytes")));
    }
    let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
    // The parser's message may quote the file's text: only its position is passed on.
    serde_json::from_slice(&bytes).map_err(|e| {
        refused(
            &path,
            format!(
                "not a credentials file (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

/// The credentials kept for each remote location of the store at `root`, by location string.
///
/// # Errors
/// [`Error::InvalidConfig`] for a file others may read, or that is not one; [`Error::Io`].
pub fn load(root: &Path) -> Result<BTreeMap<String, Credentials>> {
    Ok(read(root)?.locations)
}

/// Keeps `credentials` for remote location `location` of the store at `root` (or, with `None`,
/// forgets them), replacing the file atomically with owner-only permissions. The store need not
/// exist yet (credentials may be set before `init`, which needs them to list the bucket); the
/// directory is created if missing.
///
/// # Errors
/// [`Error::InvalidConfig`] if `location` is not a remote location or the file is refused (as
/// [`load`]); [`Error::Io`].
pub fn set(root: &Path, location: &str, credentials: Option<Credentials>) -> Result<PathBuf> {
    update(root, [(location, credentials)]).map(|(path, _)| path)
}

/// [`set`] for each of `changes`, in one write of the file; returns its path and what it now
/// holds.
pub(crate) fn update<'a>(
    root: &Path,
    changes: impl IntoIterator<Item = (&'a str, Option<Credentials>)>,
) -> Result<(PathBuf, BTreeMap<String, Credentials>)> {
    let mut file = read(root)?;
    for (location, credentials) in changes {
        let key = key_of(location)?;
        match credentials {
            Some(credentials) => file.locations.insert(key, credentials),
            None => file.locations.remove(&key),
        };
    }
    fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let bytes = serde_json::to_vec_pretty(&file)
        .map_err(|e| Error::io(root, io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
    let path = root.join(CREDENTIALS_FILE);
    crate::location::write_atomically_with_mode(root, CREDENTIALS_FILE, &bytes, Durability::Fsync, 0o600)
        .map_err(|e| Error::io(&path, e))?;
    Ok((path, file.locations))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(id: &str) -> Credentials {
        Credentials {
            access_key_id: id.into(),
            secret_access_key: format!("{id}-secret"),
            session_token: None,
        }
    }

    #[test]
    fn credentials_are_kept_owner_only_by_normalised_location_and_never_shown_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let path = set(
            dir.path(),
            "s3:http://127.0.0.1:9000/bucket/prefix/",
            Some(keys("a")),
        )
        .unwrap();
        set(dir.path(), "s3://other", Some(keys("b"))).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded["s3:http://127.0.0.1:9000/bucket/prefix"], keys("a"));
        assert_eq!(loaded["s3://other"], keys("b"));
        assert!(!format!("{loaded:?}").contains("a-secret"), "{loaded:?}");
        set(dir.path(), "s3://other", None).unwrap();
        assert_eq!(load(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn a_credentials_file_others_may_read_is_refused_and_a_local_location_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = set(dir.path(), "s3://bkt/p", Some(keys("a"))).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let refused = load(dir.path()).unwrap_err().to_string();
        assert!(refused.contains("chmod 600"), "{refused}");
        assert!(!refused.contains("a-secret"), "{refused}");
        assert!(set(dir.path(), "loc-00", Some(keys("a"))).is_err());
        // A damaged file is refused without quoting it.
        fs::write(&path, "{\"locations\": {\"s3://bkt/p\": a-secret").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let refused = load(dir.path()).unwrap_err().to_string();
        assert!(!refused.contains("a-secret"), "{refused}");
    }
}
