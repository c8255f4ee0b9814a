//! Typed errors → PostgreSQL errors with a fitting SQLSTATE, a clear message and a hint.
//! No message carries a secret: the typed errors are built without them.

use crate::mask::MaskError;
use crate::sqs::{SqsError, TransportKind};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Raise `e` as an ERROR. Never returns.
pub fn raise(
    code: PgSqlErrorCode,
    message: String,
    detail: Option<String>,
    hint: Option<&str>,
) -> ! {
    let mut r = ErrorReport::new(code, message, "sqs_loader");
    if let Some(d) = detail {
        r = r.set_detail(d);
    }
    if let Some(h) = hint {
        r = r.set_hint(h);
    }
    r.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

pub fn sqlstate_for_aws_code(code: &str, status: u16) -> PgSqlErrorCode {
    use PgSqlErrorCode::*;
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
        "AccessDenied" | "AccessDeniedException" | "KMS.AccessDeniedException" => {
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

pub fn sqs(e: SqsError) -> ! {
    use PgSqlErrorCode::*;
    let message = e.to_string();
    match &e {
        SqsError::InvalidArgument(_) => raise(ERRCODE_INVALID_PARAMETER_VALUE, message, None, None),
        SqsError::HostNotAllowed(_) => raise(
            ERRCODE_INSUFFICIENT_PRIVILEGE,
            message,
            None,
            Some("A superuser can add the host to sqs_loader.allowed_hosts."),
        ),
        SqsError::NoCredentials(_) | SqsError::Credentials { .. } => raise(
            ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            message,
            None,
            Some(
                "Give the server AWS credentials: an instance or task role, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY \
                 in the server's environment, or (superuser) the sqs_loader.aws_* settings.",
            ),
        ),
        SqsError::Transport { kind, .. } => raise(
            ERRCODE_IO_ERROR,
            message,
            None,
            Some(match kind {
                TransportKind::Timeout => "The endpoint did not answer within sqs_loader.http_timeout_ms.",
                TransportKind::Connect => "Check the queue URL, sqs_loader.endpoint and that the endpoint is running.",
                TransportKind::Io => "The connection failed; messages not deleted return after their visibility timeout.",
            }),
        ),
        SqsError::Aws { code, status, attempts, .. } => raise(
            sqlstate_for_aws_code(code, *status),
            message,
            Some(format!("AWS error code {code}, HTTP status {status}, {attempts} attempt(s).")),
            match code.as_str() {
                "QueueDoesNotExist" => Some("Create it with sqs_create_queue(name), or check the queue URL and region."),
                "InvalidClientTokenId" | "UnrecognizedClientException" | "SignatureDoesNotMatch" => {
                    Some("Check the AWS credentials the server uses and sqs_loader.region.")
                }
                _ => None,
            },
        ),
        SqsError::Protocol { .. } => raise(
            ERRCODE_SYSTEM_ERROR,
            message,
            None,
            Some("Is the endpoint an SQS API? Check sqs_loader.protocol (json or query)."),
        ),
    }
}

pub fn mask(e: MaskError) -> ! {
    use PgSqlErrorCode::*;
    let message = e.to_string();
    match &e {
        MaskError::BadKey(_) => raise(ERRCODE_INVALID_PARAMETER_VALUE, message, None, None),
        MaskError::WrongKey => raise(
            ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            message,
            None,
            Some("Use the RSA private key whose public key was installed when the value was masked (or rotated to)."),
        ),
        MaskError::Corrupt(_) => raise(ERRCODE_DATA_CORRUPTED, message, None, None),
        MaskError::State { hint, .. } => raise(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, message, None, Some(hint)),
    }
}
