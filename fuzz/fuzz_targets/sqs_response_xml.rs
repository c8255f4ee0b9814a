//! The query-protocol (XML) response decoder on arbitrary bodies and statuses, for every action.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sqs_loader::sqs::Protocol;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| common::decode_all(Protocol::Query, data));
