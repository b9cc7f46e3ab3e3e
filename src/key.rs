//! What a key may be. Keys are names, never paths: the store addresses objects by a hash of the
//! key ([`crate::format::ObjectId`]), so `../../x` or `/etc/passwd` is an ordinary key.

use crate::error::Error;
use crate::format::MAX_KEY_LEN;

/// Accepts UTF-8 keys of 1 to 1024 bytes without NUL.
///
/// # Errors
/// [`Error::InvalidKey`] with the rule the key breaks.
pub fn validate(key: &str) -> Result<(), Error> {
    let reason = if key.is_empty() {
        "a key must not be empty"
    } else if key.len() > MAX_KEY_LEN {
        "a key must be at most 1024 bytes"
    } else if key.contains('\0') {
        "a key must not contain NUL"
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey { reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_by_length_and_nul_only() {
        assert!(validate("").is_err());
        assert!(validate("a\0b").is_err());
        assert!(validate(&"x".repeat(1025)).is_err());
        assert!(validate(&"x".repeat(1024)).is_ok());
        assert!(validate("../../etc/passwd").is_ok());
        assert!(validate("/etc/passwd").is_ok());
    }
}
