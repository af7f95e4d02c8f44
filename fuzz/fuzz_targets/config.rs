//! `config`: see `missiongate_core::fuzzing::config` for the input format and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| missiongate_core::fuzzing::config(data));
