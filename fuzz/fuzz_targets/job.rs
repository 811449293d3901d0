//! The job parser on arbitrary bytes: never panics, and what it accepts re-serialises to a
//! document it accepts again, unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    protocol::job::fuzz_one(data);
});
