//! Fuzz target: arbitrary bytes as a pipeline file, through parsing, selection and plans.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pipewright_pipelines::fuzzing::pipeline_parse(data));
