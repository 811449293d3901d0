//! The media probe, the frame decoder and the still decoder on arbitrary bytes: typed errors,
//! never a panic, within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    worker::media::fuzz_one(data);
});
