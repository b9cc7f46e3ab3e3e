//! Operations (put, overwrite, get, delete, list, scrub, repair) mixed with faults (flipped
//! bytes, truncation, deleted shards, wiped locations, stale shards, transient read faults) on a
//! real store in a temporary directory, checked after every step against a reference model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardguard::fault::properties::{check_store_ops, StoreCase};

fuzz_target!(|case: StoreCase| {
    if let Err(e) = check_store_ops(&case) {
        panic!("{e}");
    }
});
