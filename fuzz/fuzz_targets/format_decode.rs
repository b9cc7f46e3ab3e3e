//! Arbitrary bytes fed to every parser of the on-disk format (shard header, identity file, store
//! file, scrub checkpoint and history, file names): no panic, no allocation beyond the input,
//! and whatever parses re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardguard::fault::properties::check_format_decode;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = check_format_decode(data) {
        panic!("{e}");
    }
});
