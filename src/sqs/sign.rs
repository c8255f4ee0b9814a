//! SigV4 signing with the `aws-sigv4` crate.

use super::credentials::Credentials;
use super::wire::HttpRequest;
use super::SqsError;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use std::time::SystemTime;

/// Sign an SQS request `req` for `url` (the full request URL) and return the headers to add
/// (`authorization`, `x-amz-date`, and `x-amz-security-token` for temporary credentials).
pub fn signed_headers(
    req: &HttpRequest,
    url: &str,
    creds: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, SqsError> {
    signed_headers_for("sqs", req, url, creds, region, time)
}

/// The same for another service (`sts` for AssumeRole).
pub fn signed_headers_for(
    service: &str,
    req: &HttpRequest,
    url: &str,
    creds: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, SqsError> {
    let identity: Identity = aws_credential_types::Credentials::new(
        creds.access_key_id.clone(),
        creds.secret_access_key.clone(),
        creds.session_token.clone(),
        None,
        "sqs_loader",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SqsError::InvalidArgument(format!("cannot sign the request: {e}")))?;
    let headers = req.headers.iter().map(|(k, v)| (*k, v.as_str()));
    let signable = SignableRequest::new("POST", url, headers, SignableBody::Bytes(&req.body))
        .map_err(|e| SqsError::InvalidArgument(format!("cannot sign the request: {e}")))?;
    let (instructions, _signature) = sign(signable, &params.into())
        .map_err(|e| SqsError::InvalidArgument(format!("cannot sign the request: {e}")))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqs::{wire, Protocol, Request};
    use std::time::{Duration, UNIX_EPOCH};

    fn creds(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(str::to_string),
            expires_at: None,
            provider: "test",
        }
    }

    #[test]
    fn signature_is_deterministic_and_scoped() {
        let req = wire::encode(
            Protocol::Json,
            &Request::GetAttributes {
                queue_url: "http://localhost:4566/0/q".into(),
            },
        );
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a =
            signed_headers(&req, "http://localhost:4566/", &creds(None), "us-east-1", t).unwrap();
        let b =
            signed_headers(&req, "http://localhost:4566/", &creds(None), "us-east-1", t).unwrap();
        assert_eq!(a, b);
        let auth = a
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1
            .clone();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/sqs/aws4_request"
            ),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-target"),
            "{auth}"
        );
        assert!(!auth.contains("wJalrXUtnFEMI"));
        assert!(a
            .iter()
            .any(|(k, v)| k == "x-amz-date" && v == "20231114T221320Z"));
        // A different region, body or secret gives a different signature.
        let c =
            signed_headers(&req, "http://localhost:4566/", &creds(None), "eu-west-1", t).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn session_token_header() {
        let req = wire::encode(
            Protocol::Query,
            &Request::GetAttributes {
                queue_url: "u".into(),
            },
        );
        let h = signed_headers(
            &req,
            "https://sqs.us-east-1.amazonaws.com/",
            &creds(Some("TOKEN")),
            "us-east-1",
            SystemTime::now(),
        )
        .unwrap();
        assert!(h
            .iter()
            .any(|(k, v)| k == "x-amz-security-token" && v == "TOKEN"));
    }
}
