//! What a location given by a user names: a local directory, or a bucket (and prefix) on an
//! S3-compatible object store. A string that looks like a URL is never taken for a local path:
//! it is an S3 location in one of the two accepted forms, or refused.
//!
//! Accepted forms (restic's, and the AWS CLI's):
//!
//! ```text
//! s3:http://127.0.0.1:9000/BUCKET/PREFIX    endpoint in the location (or https://)
//! s3://BUCKET/PREFIX                        endpoint and region from AWS_ENDPOINT_URL, AWS_REGION
//! ```
//!
//! The prefix is optional. A location string never holds credentials: they come from the
//! environment, so that no message naming a location can leak one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::location::Location;

/// A parsed location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationSpec {
    /// A local directory (relative paths are relative to the store's root).
    Local(PathBuf),
    /// A bucket, and a prefix in it, on an S3-compatible object store.
    S3(S3Spec),
}

/// An S3 location: where the endpoint is, the bucket, and the prefix under which the
/// location's objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Spec {
    /// `http://host:port` or `https://host`; `None`: from the environment (`AWS_ENDPOINT_URL`,
    /// else AWS itself).
    pub endpoint: Option<String>,
    /// The bucket's name.
    pub bucket: String,
    /// The prefix (no leading or trailing `/`; empty for the whole bucket).
    pub prefix: String,
}

/// Why a location string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A URL of a kind shardguard does not store to.
    #[error(
        "{given:?} looks like a URL but is not an S3 location (s3:http://HOST:PORT/BUCKET/PREFIX, \
         s3:https://..., or s3://BUCKET/PREFIX); a local directory whose name looks like a URL \
         must be given as ./{given}"
    )]
    UnsupportedUrl {
        /// The string given.
        given: String,
    },
    /// An S3 location without a valid bucket, or with a malformed endpoint.
    #[error("S3 location {given:?}: {reason}")]
    BadS3 {
        /// The string given.
        given: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Not valid UTF-8 (a local path may be any bytes; a URL may not).
    #[error("location {0:?} is not valid UTF-8 and looks like a URL")]
    NotUtf8(PathBuf),
}

impl LocationSpec {
    /// Parses a location as a user gives it (or as the store file records it).
    ///
    /// # Errors
    /// [`SpecError`] when it looks like a URL but is not an accepted S3 location.
    pub fn parse(given: &Path) -> Result<Self, SpecError> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = given.as_os_str().as_bytes();
        let Some(text) = given.to_str() else {
            return match looks_like_url(&String::from_utf8_lossy(bytes)) {
                true => Err(SpecError::NotUtf8(given.to_path_buf())),
                false => Ok(LocationSpec::Local(given.to_path_buf())),
            };
        };
        if let Some(url) = text.strip_prefix("s3:") {
            return parse_s3(text, url).map(LocationSpec::S3);
        }
        if looks_like_url(text) {
            return Err(SpecError::UnsupportedUrl {
                given: redacted(text),
            });
        }
        Ok(LocationSpec::Local(given.to_path_buf()))
    }

    /// Whether this is a remote location.
    pub fn is_remote(&self) -> bool {
        matches!(self, LocationSpec::S3(_))
    }
}

/// The location `spec` names, ready to use (nothing contacted yet); or why not.
/// `credentials`: the location's own (the store's `credentials` file), else the standard
/// variables sign its requests.
pub(crate) fn remote_location(
    spec: &S3Spec,
    credentials: Option<&crate::credentials::Credentials>,
) -> Result<Arc<dyn Location>, String> {
    #[cfg(feature = "s3")]
    {
        crate::remote::RemoteLocation::connect(spec, credentials)
            .map(|location| Arc::new(location) as Arc<dyn Location>)
            .map_err(|e| e.to_string())
    }
    #[cfg(not(feature = "s3"))]
    {
        let _ = (spec, credentials);
        Err("this build of shardguard has no S3 support (cargo feature `s3`)".to_owned())
    }
}

impl S3Spec {
    /// Whether `self` and `other` are one bucket of one endpoint, one prefix inside (or equal
    /// to) the other's.
    pub fn is_nested_with(&self, other: &S3Spec) -> bool {
        let inside = |outer: &str, inner: &str| {
            outer.is_empty()
                || inner == outer
                || inner
                    .strip_prefix(outer)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        self.endpoint == other.endpoint
            && self.bucket == other.bucket
            && (inside(&self.prefix, &other.prefix) || inside(&other.prefix, &self.prefix))
    }
}

impl fmt::Display for S3Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Some(endpoint) => write!(f, "s3:{endpoint}/{}", self.bucket)?,
            None => write!(f, "s3://{}", self.bucket)?,
        }
        match self.prefix.is_empty() {
            true => Ok(()),
            false => write!(f, "/{}", self.prefix),
        }
    }
}

/// A scheme (`letters:`) followed by `//`, or a scheme alone that is a known URL scheme: what a
/// user means as a URL, never as a directory name.
fn looks_like_url(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    let is_scheme = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    is_scheme
        && (rest.starts_with("//")
            || matches!(
                scheme.to_ascii_lowercase().as_str(),
                "s3" | "gs" | "az" | "azure" | "abfs" | "http" | "https" | "file" | "sftp" | "b2" | "rclone"
            ))
}

/// `s3:` followed by `//BUCKET/PREFIX` or `http(s)://HOST[:PORT]/BUCKET/PREFIX`.
fn parse_s3(given: &str, url: &str) -> Result<S3Spec, SpecError> {
    let bad = |reason| SpecError::BadS3 {
        given: redacted(given),
        reason,
    };
    let (endpoint, path) = if let Some(path) = url.strip_prefix("//") {
        (None, path)
    } else {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
            ("http", rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            ("https", rest)
        } else {
            return Err(bad(
                "expected s3://BUCKET/PREFIX or s3:http(s)://HOST[:PORT]/BUCKET/PREFIX",
            ));
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() || host.contains('@') {
            // `user:secret@host` would put a credential in the store file and in messages.
            return Err(bad(
                "the endpoint needs a host, and no credentials (they come from the environment)",
            ));
        }
        (Some(format!("{scheme}://{host}")), path)
    };
    let path = path.trim_matches('/');
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    if !valid_bucket(bucket) {
        return Err(bad(
            "a bucket name is 3-63 characters of lowercase letters, digits, '.' and '-'",
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|part| part == "." || part == "..")
        || prefix.contains("//")
        || prefix.chars().any(char::is_control)
    {
        return Err(bad(
            "the prefix has an empty, '.' or '..' component or a control character",
        ));
    }
    Ok(S3Spec {
        endpoint,
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
    })
}

/// `given` with any `user:password@` part of an endpoint replaced: an error message never
/// repeats a credential.
fn redacted(given: &str) -> String {
    let Some((scheme, rest)) = given.split_once("://") else {
        return given.to_owned();
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => given.to_owned(),
    }
}

/// S3's bucket naming rules (the part that matters for telling a bucket from a typo).
fn valid_bucket(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<LocationSpec, SpecError> {
        LocationSpec::parse(Path::new(s))
    }

    #[test]
    fn prefixes_of_one_bucket_are_nested_when_one_is_a_path_inside_the_other() {
        let s3 = |s: &str| match parse(s).unwrap() {
            LocationSpec::S3(spec) => spec,
            other => panic!("not S3: {other:?}"),
        };
        let a = s3("s3:http://h:9000/bkt/sg");
        assert!(a.is_nested_with(&s3("s3:http://h:9000/bkt/sg/inner")));
        assert!(a.is_nested_with(&s3("s3:http://h:9000/bkt")));
        assert!(a.is_nested_with(&s3("s3:http://h:9000/bkt/sg/")));
        assert!(!a.is_nested_with(&s3("s3:http://h:9000/bkt/sg2")));
        assert!(!a.is_nested_with(&s3("s3:http://h:9000/ccc/sg/inner")));
        assert!(!a.is_nested_with(&s3("s3:http://other:9000/bkt/sg/inner")));
    }

    #[test]
    fn s3_locations_in_both_forms_parse_and_print_back() {
        let with_endpoint = parse("s3:http://127.0.0.1:9000/bucket-1/some/prefix/").unwrap();
        let LocationSpec::S3(spec) = &with_endpoint else {
            panic!("not S3: {with_endpoint:?}")
        };
        assert_eq!(spec.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(
            (spec.bucket.as_str(), spec.prefix.as_str()),
            ("bucket-1", "some/prefix")
        );
        assert_eq!(spec.to_string(), "s3:http://127.0.0.1:9000/bucket-1/some/prefix");
        let from_env = parse("s3://my.bucket").unwrap();
        assert_eq!(
            from_env,
            LocationSpec::S3(S3Spec {
                endpoint: None,
                bucket: "my.bucket".into(),
                prefix: String::new()
            })
        );
        assert!(parse("s3:https://s3.example.com/b12/p").unwrap().is_remote());
    }

    #[test]
    fn nothing_that_looks_like_a_url_is_taken_for_a_local_path() {
        for url in [
            "http://host/bucket",
            "https://host/bucket",
            "gs://bucket/x",
            "file:///tmp/x",
            "sftp://host/x",
            "S3://Bucket",
            "az:container",
        ] {
            assert!(
                matches!(parse(url), Err(SpecError::UnsupportedUrl { .. })),
                "{url} was accepted"
            );
        }
        for bad in [
            "s3:",
            "s3:/bucket",
            "s3://",
            "s3://Upper",
            "s3://ab",
            "s3:ftp://host/bucket",
            "s3:http:///bucket",
            "s3:http://user:secret@host/bucket",
            "s3://bucket/../escape",
            "s3://bucket/a//b",
        ] {
            assert!(
                matches!(parse(bad), Err(SpecError::BadS3 { .. })),
                "{bad} was accepted"
            );
        }
        let message = parse("s3:http://user:secret@host/bucket")
            .unwrap_err()
            .to_string();
        assert!(
            !message.contains("secret") && !message.contains("user"),
            "{message}"
        );
        for local in ["loc-00", "/mnt/disk2/sg", "./s3:odd", "dir:with:colons", "C"] {
            assert_eq!(parse(local).unwrap(), LocationSpec::Local(PathBuf::from(local)));
        }
    }
}
