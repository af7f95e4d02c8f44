//! `set_feed`: see `missiongate_core::fuzzing::set_feed` for the input format and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| missiongate_core::fuzzing::set_feed(data));
