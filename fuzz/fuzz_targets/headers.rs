//! `headers`: see `missiongate_core::fuzzing::headers` for the input format and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| missiongate_core::fuzzing::headers(data));
