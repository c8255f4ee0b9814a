//! What both response-decoder targets share: one request of every action.
use sqs_loader::sqs::{wire, Protocol, Request};

pub fn decode_all(protocol: Protocol, data: &[u8]) {
    let Some((&status, body)) = data.split_first() else { return };
    let status = 100 + status as u16 * 2;
    let requests = [
        Request::Receive { queue_url: "u".into(), max_messages: 10, visibility_timeout: None, wait_seconds: 0, attempt_id: None },
        Request::DeleteBatch { queue_url: "u".into(), entries: vec![] },
        Request::SendBatch { queue_url: "u".into(), entries: vec![], fifo: None },
        Request::CreateQueue { name: "q".into(), attributes: Default::default() },
        Request::GetAttributes { queue_url: "u".into() },
        Request::ChangeVisibilityBatch { queue_url: "u".into(), entries: vec![], visibility_timeout: 0 },
    ];
    for req in &requests {
        let _ = wire::decode(protocol, req, status, &|_| None, body, "fuzz", false);
    }
}
