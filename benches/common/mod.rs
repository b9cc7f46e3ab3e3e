//! What the small-object benches share: their settings from the environment, and the objects
//! they put.
#![allow(dead_code)] // each bench uses a different subset

/// Bytes of each object.
pub const SIZE: usize = 4096;

/// The number in the environment variable `name`, or `default`.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Object `i`'s bytes (different for every `i`, so no layer can deduplicate them).
pub fn object(i: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; SIZE];
    for (j, b) in bytes.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) ^ j.wrapping_mul(40_503)) as u8;
    }
    bytes
}

/// The median of `runs`.
pub fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}
