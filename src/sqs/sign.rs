//! SigV4 signing. The `aws-sigv4` crate signs every request whose shape it alone should judge;
//! the requests this loader makes per batch (a POST to the endpoint's root, a few plain
//! headers) are signed by [`fast`], which writes the same canonical request directly and keeps
//! the day's signing key, and uses the crate for the key derivation and the signature. A
//! property test checks that both give the same headers.

use super::credentials::Credentials;
use super::wire::HttpRequest;
use super::SqsError;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use std::time::SystemTime;

/// Sign an SQS request `req` for `url` (the full request URL) and return the headers to add
/// (`x-amz-date`, `authorization`, and `x-amz-security-token` for temporary credentials).
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
    match fast::signed_headers(service, req, url, creds, region, time) {
        Some(headers) => Ok(headers),
        None => with_crate(service, req, url, creds, region, time),
    }
}

/// Signed by `aws_sigv4::http_request::sign`: any request (what [`signed_headers_for`] does
/// for the requests its direct signer does not take; public for `make bench ARGS=client`).
pub fn with_crate(
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

/// The per-batch requests, signed without the crate's general machinery: in a profile of the
/// bare client, `aws_sigv4::http_request::sign` took a sixth of the I/O threads' CPU, most of it
/// building and formatting the canonical request through an `http::HeaderMap` and deriving
/// the signing key (four HMACs) for every request. Only a request of the plain shape is taken
/// (a POST to `http(s)://authority/` with no query, header names lowercase and not ones the
/// crate adds or excludes, values already in canonical form); anything else answers `None`
/// and goes to the crate.
mod fast {
    use super::{Credentials, HttpRequest};
    use crate::hex::push_hex;
    use sha2::{Digest, Sha256};
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// Header names the canonical request gets from elsewhere, or that the crate's default
    /// settings leave unsigned.
    const NOT_TAKEN: [&str; 7] = [
        "host",
        "x-amz-date",
        "x-amz-security-token",
        "authorization",
        "user-agent",
        "x-amzn-trace-id",
        "transfer-encoding",
    ];

    /// The signing key of one day, region, service and secret (it is valid for that day). The
    /// secret is known by its SHA-256: no copy of it is kept here.
    struct Key {
        date: [u8; 8],
        region: String,
        service: String,
        secret_sha256: [u8; 32],
        key: [u8; 32],
    }

    thread_local! {
        /// The I/O threads live as long as the process: each derives the key once a day.
        static KEY: RefCell<Option<Key>> = const { RefCell::new(None) };
    }

    pub fn signed_headers(
        service: &str,
        req: &HttpRequest,
        url: &str,
        creds: &Credentials,
        region: &str,
        time: SystemTime,
    ) -> Option<Vec<(String, String)>> {
        let host = host_of(url)?;
        if req.path != "/" {
            return None;
        }
        let token = creds.session_token.as_deref();
        if token.is_some_and(|t| !canonical_value(t)) {
            return None;
        }
        // The canonical headers, sorted by name.
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(req.headers.len() + 3);
        for (name, value) in &req.headers {
            let plain_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !plain_name || NOT_TAKEN.contains(name) || !canonical_value(value) {
                return None;
            }
            headers.push((name, value));
        }
        let (date, date_time) = date_time(time)?;
        let date_time = std::str::from_utf8(&date_time).ok()?;
        let date = std::str::from_utf8(&date).ok()?;
        headers.push(("host", host));
        headers.push(("x-amz-date", date_time));
        if let Some(t) = token {
            headers.push(("x-amz-security-token", t));
        }
        headers.sort_unstable_by(|a, b| a.0.cmp(b.0));
        if headers.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }

        let mut signed = String::with_capacity(96);
        for (i, (name, _)) in headers.iter().enumerate() {
            if i > 0 {
                signed.push(';');
            }
            signed.push_str(name);
        }
        let mut creq = String::with_capacity(256);
        creq.push_str("POST\n/\n\n");
        for (name, value) in &headers {
            creq.push_str(name);
            creq.push(':');
            creq.push_str(value);
            creq.push('\n');
        }
        creq.push('\n');
        creq.push_str(&signed);
        creq.push('\n');
        push_hex(&mut creq, &Sha256::digest(&req.body));

        let mut scope = String::with_capacity(64);
        scope.push_str(date);
        scope.push('/');
        scope.push_str(region);
        scope.push('/');
        scope.push_str(service);
        scope.push_str("/aws4_request");
        let mut sts = String::with_capacity(160);
        sts.push_str("AWS4-HMAC-SHA256\n");
        sts.push_str(date_time);
        sts.push('\n');
        sts.push_str(&scope);
        sts.push('\n');
        push_hex(&mut sts, &Sha256::digest(creq.as_bytes()));

        let key = signing_key(&creds.secret_access_key, date, time, region, service);
        let signature = aws_sigv4::sign::v4::calculate_signature(key, sts.as_bytes());
        let mut auth = String::with_capacity(200);
        auth.push_str("AWS4-HMAC-SHA256 Credential=");
        auth.push_str(&creds.access_key_id);
        auth.push('/');
        auth.push_str(&scope);
        auth.push_str(", SignedHeaders=");
        auth.push_str(&signed);
        auth.push_str(", Signature=");
        auth.push_str(&signature);

        let mut out = Vec::with_capacity(3);
        out.push(("x-amz-date".to_string(), date_time.to_string()));
        out.push(("authorization".to_string(), auth));
        if let Some(t) = token {
            out.push(("x-amz-security-token".to_string(), t.to_string()));
        }
        Some(out)
    }

    /// This thread's key for the day, derived by the crate when the day, region, service or
    /// secret changed.
    fn signing_key(
        secret: &str,
        date: &str,
        time: SystemTime,
        region: &str,
        service: &str,
    ) -> [u8; 32] {
        let secret_sha256: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        KEY.with(|cell| {
            let mut cell = cell.borrow_mut();
            if let Some(k) = cell.as_ref() {
                if k.date == date.as_bytes()
                    && k.region == region
                    && k.service == service
                    && k.secret_sha256 == secret_sha256
                {
                    return k.key;
                }
            }
            let derived = aws_sigv4::sign::v4::generate_signing_key(secret, time, region, service);
            let mut key = [0u8; 32];
            key.copy_from_slice(derived.as_ref());
            let mut day = [0u8; 8];
            day.copy_from_slice(date.as_bytes());
            *cell = Some(Key {
                date: day,
                region: region.to_string(),
                service: service.to_string(),
                secret_sha256,
                key,
            });
            key
        })
    }

    /// The Host header's value for a URL of the plain shape (`scheme://authority/`, the port
    /// left out when it is the scheme's default), or `None`.
    pub(super) fn host_of(url: &str) -> Option<&str> {
        // The longest URI the crate (http::Uri) parses.
        if url.len() >= usize::from(u16::MAX) {
            return None;
        }
        let (rest, default_port) = if let Some(r) = url.strip_prefix("http://") {
            (r, "80")
        } else if let Some(r) = url.strip_prefix("https://") {
            (r, "443")
        } else {
            return None;
        };
        let authority = rest.strip_suffix('/')?;
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        };
        match authority.rsplit_once(':') {
            None => plain(authority).then_some(authority),
            Some((host, port)) => {
                let port_ok = !port.is_empty()
                    && port.len() <= 5
                    && !port.starts_with('0')
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && port.parse::<u16>().is_ok();
                if !plain(host) || !port_ok {
                    return None;
                }
                Some(if port == default_port {
                    host
                } else {
                    authority
                })
            }
        }
    }

    /// A header value the crate would sign as it is: visible ASCII, single spaces inside.
    fn canonical_value(v: &str) -> bool {
        let b = v.as_bytes();
        !b.is_empty()
            && b[0] != b' '
            && b[b.len() - 1] != b' '
            && b.iter().all(|&c| (b' '..=b'~').contains(&c))
            && !v.contains("  ")
    }

    /// `YYYYMMDD` and `YYYYMMDDTHHMMSSZ` (UTC) of `time`, whole seconds.
    pub(super) fn date_time(time: SystemTime) -> Option<([u8; 8], [u8; 16])> {
        let secs = time.duration_since(UNIX_EPOCH).ok()?.as_secs();
        let days = i64::try_from(secs / 86_400).ok()?;
        let rem = secs % 86_400;
        // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        if !(0..=9999).contains(&year) {
            return None;
        }
        let mut d = [0u8; 8];
        let put = |out: &mut [u8], mut v: u64| {
            for slot in out.iter_mut().rev() {
                *slot = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(&mut d[0..4], year as u64);
        put(&mut d[4..6], month as u64);
        put(&mut d[6..8], day as u64);
        let mut dt = [0u8; 16];
        dt[..8].copy_from_slice(&d);
        dt[8] = b'T';
        put(&mut dt[9..11], rem / 3_600);
        put(&mut dt[11..13], rem % 3_600 / 60);
        put(&mut dt[13..15], rem % 60);
        dt[15] = b'Z';
        Some((d, dt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqs::{wire, Protocol, Request};
    use proptest::prelude::Just;
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

    /// A request of the plain shape: what the SQS encoders make, to `url`.
    fn plain(protocol: Protocol, body: Vec<u8>) -> HttpRequest {
        let mut req = wire::encode(
            protocol,
            &Request::GetAttributes {
                queue_url: "http://localhost:4566/0/q".into(),
            },
        );
        req.body = body;
        req
    }

    proptest::proptest! {
        /// The direct signer signs a request only to give what the crate gives; and it takes
        /// the requests of the plain shape.
        #[test]
        fn the_direct_signer_agrees_with_the_crate(
            https in proptest::bool::ANY,
            host in "[a-zA-Z0-9.-]{1,12}|sqs\\.[a-z]{2}-[a-z]{4}-[1-9]\\.amazonaws\\.com|\\[::1\\]|a@b|a%41",
            port in proptest::option::of(proptest::prop_oneof![Just(80u32), Just(443), 1u32..70_000]),
            tail in proptest::prop_oneof![8 => Just("/"), 1 => Just("/x"), 1 => Just("/?a=b"), 1 => Just("")],
            json in proptest::bool::ANY,
            extra in proptest::option::weighted(0.3, (
                "content-length|X-Upper|host|user-agent|x-amz-date|authorization|x-custom",
                "[ -~]{0,6}|a  b| a",
            )),
            key_id in "[A-Z0-9]{1,20}",
            secret in "[a-zA-Z0-9/+]{1,40}",
            token in proptest::option::of("[a-zA-Z0-9/+=]{1,40}|a  b|é"),
            region in "[a-z0-9-]{1,15}",
            sts in proptest::bool::ANY,
            secs in 0u64..4_102_444_800,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let scheme = if https { "https" } else { "http" };
            let url = match port {
                Some(p) => format!("{scheme}://{host}:{p}{tail}"),
                None => format!("{scheme}://{host}{tail}"),
            };
            let mut req = plain(if json { Protocol::Json } else { Protocol::Query }, body);
            let extra_header = extra.is_some();
            if let Some((name, value)) = extra {
                req.headers.push((Box::leak(name.into_boxed_str()), value));
            }
            let mut c = creds(None);
            c.access_key_id = key_id;
            c.secret_access_key = secret;
            c.session_token = token.clone();
            let service = if sts { "sts" } else { "sqs" };
            let time = UNIX_EPOCH + Duration::from_secs(secs);
            let direct = fast::signed_headers(service, &req, &url, &c, &region, time);
            if let Some(direct) = &direct {
                let by_crate = with_crate(service, &req, &url, &c, &region, time);
                proptest::prop_assert_eq!(Ok(direct), by_crate.as_ref(), "{}", url);
            }
            let plain_host = host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            let plain_port = port.is_none_or(|p| p <= 65_535);
            let plain_token = token.as_deref().is_none_or(|t| !t.contains("  ") && t.is_ascii());
            if tail == "/" && plain_host && plain_port && plain_token && !extra_header {
                proptest::prop_assert!(direct.is_some(), "{}", url);
            }
        }
    }

    #[test]
    fn the_day_key_follows_the_secret_region_and_day() {
        let req = plain(Protocol::Json, b"{}".to_vec());
        let url = "http://127.0.0.1:4566/";
        let day = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let next_day = day + Duration::from_secs(86_400);
        let mut other = creds(None);
        other.secret_access_key = "another-secret".into();
        for (c, region, time) in [
            (creds(None), "us-east-1", day),
            (creds(None), "us-east-1", day),
            (other.clone(), "us-east-1", day),
            (creds(None), "us-east-1", day),
            (creds(None), "eu-west-1", day),
            (creds(None), "eu-west-1", next_day),
            (other, "eu-west-1", next_day),
        ] {
            let direct = fast::signed_headers("sqs", &req, url, &c, region, time).unwrap();
            assert_eq!(Ok(direct), with_crate("sqs", &req, url, &c, region, time));
        }
    }

    #[test]
    fn dates_are_the_crates() {
        assert_eq!(fast::date_time(UNIX_EPOCH).unwrap().1, *b"19700101T000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_164_799); // 2024-02-28T23:59:59Z
        assert_eq!(fast::date_time(t).unwrap().1, *b"20240228T235959Z");
        let t = t + Duration::from_millis(86_400_999); // a leap day, the fraction dropped
        assert_eq!(fast::date_time(t).unwrap().1, *b"20240229T235959Z");
        assert_eq!(
            fast::host_of("https://sqs.us-east-1.amazonaws.com:443/"),
            Some("sqs.us-east-1.amazonaws.com")
        );
        assert_eq!(
            fast::host_of("http://127.0.0.1:4566/"),
            Some("127.0.0.1:4566")
        );
        assert_eq!(fast::host_of("http://h:0443/"), None);
        assert_eq!(fast::host_of("http://user@h/"), None);
        let long = format!("http://{}/", "a".repeat(65_530));
        assert_eq!(fast::host_of(&long), None, "longer than http::Uri takes");
    }
}
