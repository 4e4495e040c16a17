//! Fuzz target: arbitrary bytes as a Gitea delivery (first byte: the event type).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pipewright::fuzzing::webhook_decode(data));
