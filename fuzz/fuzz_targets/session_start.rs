//! The `session_start` target; its body is `session_archive::conformance::fuzz::session_start`, shared with the
//! seed-replay test `tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| session_archive::conformance::fuzz::session_start(data));
