//! Amazon SQS client: plain Rust, no Postgres. Both wire protocols (AWS JSON 1.0 and query/XML),
//! SigV4 signing, retries with backoff, and the credential provider chain.
//!
//! Everything here may run on a worker thread: it must never call into Postgres.

pub mod advice;
pub mod credentials;
pub mod endpoint;
pub mod executor;
#[cfg(test)]
mod fake;
pub mod heartbeat;
pub mod http;
pub mod pace;
pub mod pool;
pub mod sign;
pub mod tcp;
pub mod wire;
mod xml;

use std::collections::BTreeMap;

/// Which SQS wire protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// AWS JSON 1.0 (`X-Amz-Target: AmazonSQS.<Action>`): what AWS and current SDKs use.
    Json,
    /// The query protocol (form-encoded request, XML response): all LocalStack 0.14 speaks.
    Query,
}

/// The SQS operations this extension uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ReceiveMessage,
    DeleteMessageBatch,
    SendMessageBatch,
    CreateQueue,
    GetQueueAttributes,
    ChangeMessageVisibilityBatch,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::ReceiveMessage => "ReceiveMessage",
            Action::DeleteMessageBatch => "DeleteMessageBatch",
            Action::SendMessageBatch => "SendMessageBatch",
            Action::CreateQueue => "CreateQueue",
            Action::GetQueueAttributes => "GetQueueAttributes",
            Action::ChangeMessageVisibilityBatch => "ChangeMessageVisibilityBatch",
        }
    }
}

/// A request, independent of the protocol that carries it.
#[derive(Debug, Clone)]
pub enum Request {
    Receive {
        queue_url: String,
        max_messages: u32,
        visibility_timeout: Option<i32>,
        wait_seconds: i32,
        /// FIFO queues: the ReceiveRequestAttemptId, the same for every retry of this receive,
        /// so that a retry after a lost reply gets the same messages instead of leaving them
        /// (and their message groups) locked until their visibility timeout.
        attempt_id: Option<String>,
    },
    DeleteBatch {
        queue_url: String,
        /// (entry id, receipt handle)
        entries: Vec<(String, String)>,
    },
    SendBatch {
        queue_url: String,
        /// (entry id, message body)
        entries: Vec<(String, String)>,
        /// FIFO queues: the MessageGroupId of every entry, and a MessageDeduplicationId prefix
        /// made for this request (the entry id completes it): a retried request is deduplicated
        /// by SQS, a new call is sent again.
        fifo: Option<(String, String)>,
    },
    CreateQueue {
        name: String,
        attributes: BTreeMap<String, String>,
    },
    GetAttributes {
        queue_url: String,
    },
    ChangeVisibilityBatch {
        queue_url: String,
        /// (entry id, receipt handle)
        entries: Vec<(String, String)>,
        visibility_timeout: i32,
    },
}

impl Request {
    pub fn action(&self) -> Action {
        match self {
            Request::Receive { .. } => Action::ReceiveMessage,
            Request::DeleteBatch { .. } => Action::DeleteMessageBatch,
            Request::SendBatch { .. } => Action::SendMessageBatch,
            Request::CreateQueue { .. } => Action::CreateQueue,
            Request::GetAttributes { .. } => Action::GetQueueAttributes,
            Request::ChangeVisibilityBatch { .. } => Action::ChangeMessageVisibilityBatch,
        }
    }

    /// The queue the request is about (all but CreateQueue).
    pub fn queue_url(&self) -> Option<&str> {
        match self {
            Request::Receive { queue_url, .. }
            | Request::DeleteBatch { queue_url, .. }
            | Request::SendBatch { queue_url, .. }
            | Request::GetAttributes { queue_url }
            | Request::ChangeVisibilityBatch { queue_url, .. } => Some(queue_url),
            Request::CreateQueue { .. } => None,
        }
    }
}

/// Whether a queue URL names a FIFO queue (its name ends in `.fifo`).
pub fn is_fifo(queue_url: &str) -> bool {
    queue_url.trim_end_matches('/').ends_with(".fifo")
}

/// A random id for ReceiveRequestAttemptId / MessageDeduplicationId (hex, 32 characters).
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        b = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub md5_of_body: Option<String>,
    /// SentTimestamp: milliseconds since the Unix epoch.
    pub sent_timestamp_ms: Option<i64>,
    pub receive_count: Option<i32>,
}

/// A failed entry of a batch call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFailure {
    pub id: String,
    pub code: String,
    pub message: String,
    pub sender_fault: bool,
}

/// A decoded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Received(Vec<Message>),
    Batch {
        /// ids of the successful entries (for SendMessageBatch: with the new MessageId)
        successful: Vec<(String, Option<String>)>,
        failed: Vec<BatchFailure>,
    },
    QueueUrl(String),
    Attributes(BTreeMap<String, String>),
}

/// How a transport-level failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Timeout,
    Connect,
    Io,
}

/// Everything that can go wrong talking to SQS. Messages never contain a secret, a signature
/// or an Authorization header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqsError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("host \"{0}\" is not allowed by sqs_loader.allowed_hosts")]
    HostNotAllowed(String),
    /// The host is allowed by a wildcard entry but resolved to a non-public address.
    #[error("{0}")]
    AddressNotAllowed(String),
    #[error("no AWS credentials found (tried: {0})")]
    NoCredentials(String),
    #[error("could not get AWS credentials from {provider}: {message}")]
    Credentials {
        provider: &'static str,
        message: String,
    },
    #[error("SQS {action} to {endpoint} failed after {attempts} attempt(s): {message}")]
    Transport {
        action: &'static str,
        endpoint: String,
        kind: TransportKind,
        attempts: u32,
        message: String,
    },
    #[error("SQS {action} failed: {code}: {message}")]
    Aws {
        action: &'static str,
        status: u16,
        code: String,
        message: String,
        attempts: u32,
        /// What to change, when the error is a known misconfiguration ([`advice`]).
        advice: Option<String>,
    },
    #[error("SQS {action}: unexpected response from {endpoint}: {message}")]
    Protocol {
        action: &'static str,
        endpoint: String,
        message: String,
    },
}

impl SqsError {
    /// Whether a retry may succeed: 5xx, throttling and transport failures.
    pub fn retryable(&self) -> bool {
        match self {
            SqsError::Transport { .. } => true,
            SqsError::Aws { status, code, .. } => {
                *status >= 500 || *status == 429 || is_throttling(code)
            }
            _ => false,
        }
    }
}

/// AWS error codes that mean "slow down".
pub fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "SlowDown"
            | "AWS.SimpleQueueService.RequestThrottled"
            | "ServiceUnavailable"
            | "AWS.SimpleQueueService.ServiceUnavailable"
            | "InternalError"
            | "InternalFailure"
            | "KmsThrottled"
    )
}

/// Normalise AWS error codes that the two protocols spell differently to the modern (JSON) name,
/// so callers can match on one spelling.
pub fn normalize_code(code: &str) -> String {
    let code = code.rsplit('#').next().unwrap_or(code);
    match code {
        "AWS.SimpleQueueService.NonExistentQueue" => "QueueDoesNotExist".into(),
        // The query protocol's spelling of the KMS errors (the JSON protocol's in the SDKs).
        "KMS.AccessDeniedException" => "KmsAccessDenied".into(),
        "KMS.DisabledException" => "KmsDisabled".into(),
        "KMS.NotFoundException" => "KmsNotFound".into(),
        "KMS.InvalidStateException" | "KMS.KMSInvalidStateException" => "KmsInvalidState".into(),
        "KMS.InvalidKeyUsageException" => "KmsInvalidKeyUsage".into(),
        "KMS.OptInRequired" => "KmsOptInRequired".into(),
        "KMS.ThrottlingException" => "KmsThrottled".into(),
        other => other.to_string(),
    }
}

/// A mutex's guard, also after a thread panicked holding it (the data stays consistent: every
/// critical section here is a plain insert, take or replace).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
