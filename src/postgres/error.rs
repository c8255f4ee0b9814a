//! Errors → PostgreSQL errors with a fitting SQLSTATE, a clear message, detail and hint.
//!
//! Each unit has its own error type (`SqsError`, `MaskError`, `ThreadError`); [`Error`] is the
//! union the glue returns, and every one of them converts into pgrx's [`ErrorReport`], so the
//! `#[pg_extern]` wrappers return `Result<T, ErrorReport>` and use `?`. No message carries a
//! secret: the typed errors are built without them.

use super::audit::AuditError;
use super::backend::ThreadError;
use super::log_guard::NotPreloaded;
use crate::mask::MaskError;
use crate::sqs::{SqsError, TransportKind};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode::{self, *};

/// What the Postgres glue can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sqs(#[from] SqsError),
    #[error(transparent)]
    Mask(#[from] MaskError),
    #[error(transparent)]
    Thread(#[from] ThreadError),
    /// An argument a SQL function was given is not acceptable.
    #[error("{0}")]
    InvalidArgument(String),
    /// A NULL where none is allowed (e.g. inside an array argument).
    #[error("{0} must not contain NULL")]
    NullValue(&'static str),
    /// AWS credentials or a proxy password stored with ALTER ROLE/DATABASE SET, readable by
    /// every role.
    #[error("AWS credentials or a proxy password are stored in pg_db_role_setting, which every role can read ({0})")]
    SecretInCatalog(String),
    /// Something that cannot happen unless the extension's own objects were tampered with.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn report(
    code: PgSqlErrorCode,
    message: String,
    detail: Option<String>,
    hint: Option<&str>,
) -> ErrorReport {
    let mut r = ErrorReport::new(code, message, "sqs_loader");
    if let Some(d) = detail {
        r = r.set_detail(d);
    }
    if let Some(h) = hint {
        r = r.set_hint(h);
    }
    r
}

pub fn sqlstate_for_aws_code(code: &str, status: u16) -> PgSqlErrorCode {
    match code {
        "QueueDoesNotExist" => ERRCODE_UNDEFINED_OBJECT,
        "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "MissingAuthenticationTokenException"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "InvalidSecurity"
        | "AuthFailure"
        | "InvalidAccessKeyId" => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
        "AccessDenied" | "AccessDeniedException" | "KmsAccessDenied" => {
            ERRCODE_INSUFFICIENT_PRIVILEGE
        }
        "QueueDeletedRecently" | "QueueNameExists" | "QueueAlreadyExists" => {
            ERRCODE_DUPLICATE_OBJECT
        }
        "OverLimit" => ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
        _ if status >= 500 || status == 429 || crate::sqs::is_throttling(code) => {
            ERRCODE_SYSTEM_ERROR
        }
        _ if (400..500).contains(&status) => ERRCODE_INVALID_PARAMETER_VALUE,
        _ => ERRCODE_SYSTEM_ERROR,
    }
}

impl From<SqsError> for ErrorReport {
    fn from(e: SqsError) -> ErrorReport {
        let message = e.to_string();
        match &e {
            SqsError::InvalidArgument(_) => report(ERRCODE_INVALID_PARAMETER_VALUE, message, None, None),
            SqsError::HostNotAllowed(_) => report(
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                message,
                None,
                Some("A superuser can add the host to sqs_loader.allowed_hosts."),
            ),
            SqsError::AddressNotAllowed(_) => report(
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                message,
                None,
                Some("A host allowed by a wildcard may only resolve to public addresses. A superuser can list the host exactly in sqs_loader.allowed_hosts (emulators, VPC endpoints with private DNS)."),
            ),
            SqsError::NoCredentials(_) | SqsError::Credentials { .. } => report(
                ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                message,
                None,
                Some(
                    "Give the server AWS credentials: an instance or task role, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY \
                     in the server's environment, or (superuser) the sqs_loader.aws_* settings.",
                ),
            ),
            SqsError::Transport { kind, .. } => report(
                ERRCODE_IO_ERROR,
                message,
                None,
                Some(match kind {
                    TransportKind::Timeout => "The endpoint did not answer within sqs_loader.http_timeout_ms.",
                    TransportKind::Connect => "Check the queue URL, sqs_loader.endpoint and that the endpoint is running.",
                    TransportKind::Io => "The connection failed; messages not deleted return after their visibility timeout.",
                }),
            ),
            SqsError::Aws { code, status, attempts, advice, .. } => report(
                sqlstate_for_aws_code(code, *status),
                message,
                Some(format!("AWS error code {code}, HTTP status {status}, {attempts} attempt(s).")),
                advice.as_deref().or(match code.as_str() {
                    "QueueDoesNotExist" => Some("Create it with sqs_create_queue(name), or check the queue URL and region."),
                    "InvalidClientTokenId" | "UnrecognizedClientException" | "SignatureDoesNotMatch" => {
                        Some("Check the AWS credentials the server uses and sqs_loader.region.")
                    }
                    _ => None,
                }),
            ),
            SqsError::Protocol { .. } => report(
                ERRCODE_SYSTEM_ERROR,
                message,
                None,
                Some("Is the endpoint an SQS API? Check sqs_loader.protocol (json or query)."),
            ),
        }
    }
}

impl From<MaskError> for ErrorReport {
    fn from(e: MaskError) -> ErrorReport {
        let message = e.to_string();
        match &e {
            MaskError::BadKey(_) => report(ERRCODE_INVALID_PARAMETER_VALUE, message, None, None),
            MaskError::WrongKey => report(
                ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                message,
                None,
                Some("Use the RSA private key whose public key was installed when the value was masked (or rotated to)."),
            ),
            MaskError::Corrupt(_) => report(ERRCODE_DATA_CORRUPTED, message, None, None),
            MaskError::State { hint, .. } => {
                report(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, message, None, Some(hint))
            }
        }
    }
}

impl From<ThreadError> for ErrorReport {
    fn from(e: ThreadError) -> ErrorReport {
        let hint = match &e {
            ThreadError::Spawn(_) => {
                "The server could not start a thread: check the operating system's limits on processes and threads (ulimit -u, memory)."
            }
            ThreadError::Panicked(_) | ThreadError::Vanished => {
                "This is a bug in sqs_loader: please report it with the server log around this error."
            }
        };
        report(ERRCODE_INTERNAL_ERROR, e.to_string(), None, Some(hint))
    }
}

impl From<AuditError> for ErrorReport {
    fn from(e: AuditError) -> ErrorReport {
        report(
            ERRCODE_INSUFFICIENT_RESOURCES,
            e.to_string(),
            None,
            Some(
                "Unmasking requires its audit row: check max_worker_processes and the server log.",
            ),
        )
    }
}

impl From<NotPreloaded> for ErrorReport {
    fn from(e: NotPreloaded) -> ErrorReport {
        report(
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            e.to_string(),
            Some("Only then does every session mask private keys and passphrases in the server log and in pg_stat_activity.".into()),
            Some("Add sqs_loader to shared_preload_libraries in postgresql.conf and restart the server; or recover values offline with sqs_loader_unmask."),
        )
    }
}

impl From<Error> for ErrorReport {
    fn from(e: Error) -> ErrorReport {
        match e {
            Error::Sqs(e) => e.into(),
            Error::Mask(e) => e.into(),
            Error::Thread(e) => e.into(),
            Error::InvalidArgument(m) => report(ERRCODE_INVALID_PARAMETER_VALUE, m, None, None),
            Error::Internal(m) => report(
                ERRCODE_INTERNAL_ERROR,
                m,
                None,
                Some("The extension's objects may have been altered: compare them with a fresh install (ALTER EXTENSION sqs_loader UPDATE, or re-create it)."),
            ),
            e @ Error::NullValue(_) => {
                report(ERRCODE_NULL_VALUE_NOT_ALLOWED, e.to_string(), None, None)
            }
            e @ Error::SecretInCatalog(_) => report(
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                e.to_string(),
                Some("They were set with ALTER ROLE/DATABASE ... SET in a session where sqs_loader was not loaded (preloading it refuses that). Until they are removed, sqs_loader makes no request.".into()),
                Some("Remove them (ALTER ROLE ... RESET sqs_loader.aws_secret_access_key, and the key id, session token and sqs_loader.proxy likewise; see pg_db_role_setting), rotate what was exposed, and give the server credentials through its environment or an instance role."),
            ),
        }
    }
}
