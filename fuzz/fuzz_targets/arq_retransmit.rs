//! Random schedules of transient and persistent faults against the retry policy, on a simulated
//! clock: transient faults within the attempt budget are cured, no retry starts after the
//! deadline, persistent faults end as erasures at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardguard::fault::properties::{check_arq_retransmit, ArqCase};

fuzz_target!(|case: ArqCase| {
    if let Err(e) = check_arq_retransmit(&case) {
        panic!("{e}");
    }
});
