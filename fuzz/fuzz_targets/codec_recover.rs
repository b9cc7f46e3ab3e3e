//! Arbitrary data, (k, m) and a pattern of erased and corrupted chunks: with at most m bad chunks
//! the exact data comes back; with more, an error; never wrong bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardguard::fault::properties::{check_codec_recover, CodecCase};

fuzz_target!(|case: CodecCase| {
    if let Err(e) = check_codec_recover(&case) {
        panic!("{e}");
    }
});
