//! Settings → [`Client`]: where a call goes, with which credentials and options, checked
//! against the host allow-list. Runs on the backend's thread (it reads GUCs); the client it
//! returns is plain Rust and goes to the I/O threads.

use super::guc;
use crate::sqs::credentials::Env;
use crate::sqs::endpoint::{self, Endpoint};
use crate::sqs::executor::Client;
use crate::sqs::SqsError;

fn client(endpoint: Endpoint) -> Result<Client, SqsError> {
    if !endpoint::host_allowed(&endpoint.host, &guc::allowed_hosts()) {
        return Err(SqsError::HostNotAllowed(endpoint.host.clone()));
    }
    Ok(Client {
        endpoint,
        configured: guc::configured_credentials(),
        env: Env::from_process(),
        opts: guc::call_options(),
        max_parallel: guc::max_parallel_requests(),
    })
}

/// The client for calls on a queue: its URL's host, or `sqs_loader.endpoint`.
pub fn for_queue(queue_url: &str) -> Result<Client, SqsError> {
    client(endpoint::for_queue_url(
        queue_url,
        guc::endpoint_override().as_deref(),
        &guc::region(),
    )?)
}

/// The client for calls without a queue (CreateQueue): `sqs_loader.endpoint`, else the host of
/// `sqs_loader.queue_url`, else AWS in `sqs_loader.region`.
pub fn for_service() -> Result<Client, SqsError> {
    client(endpoint::for_service(
        guc::endpoint_override().as_deref(),
        guc::queue_url().as_deref(),
        &guc::region(),
    )?)
}
