//! The AWS JSON 1.0 response decoder on arbitrary bodies and statuses, for every action.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sqs_loader::sqs::Protocol;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| common::decode_all(Protocol::Json, data));
