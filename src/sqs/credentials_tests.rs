use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

// Tests that touch the process-wide cache must not interleave.
static SERIAL: Mutex<()> = Mutex::new(());

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// A tiny HTTP/1.1 server on 127.0.0.1 answering from a routing function
/// (method, path, headers, body) -> (status, body). Returns its base URL and a request counter.
fn fake_server(
    route: impl Fn(&str, &str, &[(String, String)], &str) -> (u16, String) + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let (method, path) = (
                parts.next().unwrap_or("").to_string(),
                parts.next().unwrap_or("").to_string(),
            );
            let mut headers = Vec::new();
            let mut len = 0usize;
            loop {
                let mut l = String::new();
                reader.read_line(&mut l).unwrap();
                let l = l.trim_end();
                if l.is_empty() {
                    break;
                }
                let (k, v) = l.split_once(':').unwrap();
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().unwrap();
                }
                headers.push((k, v));
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let (status, body) = route(&method, &path, &headers, &String::from_utf8_lossy(&body));
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (format!("http://{addr}"), hits)
}

fn creds_json(expiration: &str) -> String {
    format!(
        r#"{{"Code":"Success","AccessKeyId":"ASIAFAKE","SecretAccessKey":"fake-secret","Token":"fake-token","Expiration":"{expiration}"}}"#
    )
}

fn env(pairs: &[(&str, &str)]) -> Env {
    Env(pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

#[test]
fn settings_then_environment() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let conf = Configured {
        access_key_id: Some("AKIA1".into()),
        secret_access_key: Some("s1".into()),
        ..Configured::default()
    };
    let e = env(&[
        ("AWS_ACCESS_KEY_ID", "AKIA2"),
        ("AWS_SECRET_ACCESS_KEY", "s2"),
    ]);
    assert_eq!(resolve(&conf, &e, &agent()).unwrap().access_key_id, "AKIA1");
    let c = resolve(&Configured::default(), &e, &agent()).unwrap();
    assert_eq!(
        (c.access_key_id.as_str(), c.provider),
        ("AKIA2", "environment")
    );
    let half = Configured {
        access_key_id: Some("AKIA1".into()),
        ..Default::default()
    };
    assert!(matches!(
        resolve(&half, &e, &agent()),
        Err(SqsError::Credentials { .. })
    ));
}

#[test]
fn imdsv2_flow_and_cache() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    clear_cache();
    let (base, hits) = fake_server(|method, path, headers, _| {
        let token_ok = headers
            .iter()
            .any(|(k, v)| k == "x-aws-ec2-metadata-token" && v == "TOK");
        match (method, path) {
            ("PUT", "/latest/api/token")
                if headers
                    .iter()
                    .any(|(k, _)| k == "x-aws-ec2-metadata-token-ttl-seconds") =>
            {
                (200, "TOK".into())
            }
            ("GET", "/latest/meta-data/iam/security-credentials/") if token_ok => {
                (200, "loader-role\n".into())
            }
            ("GET", "/latest/meta-data/iam/security-credentials/loader-role") if token_ok => {
                (200, creds_json("2099-01-01T00:00:00Z"))
            }
            _ => (401, String::new()),
        }
    });
    let e = env(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &base)]);
    let c = resolve(&Configured::default(), &e, &agent()).unwrap();
    assert_eq!(c.access_key_id, "ASIAFAKE");
    assert_eq!(c.session_token.as_deref(), Some("fake-token"));
    assert_eq!(c.provider, "EC2 instance metadata");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    // Cached until expiry: no new requests.
    resolve(&Configured::default(), &e, &agent()).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    clear_cache();
}

#[test]
fn imds_refreshes_expiring_credentials() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    clear_cache();
    let (base, hits) = fake_server(|method, path, _, _| match (method, path) {
        ("PUT", _) => (200, "T".into()),
        (_, "/latest/meta-data/iam/security-credentials/") => (200, "r".into()),
        // Expires in the refresh margin: every call fetches again.
        _ => (200, creds_json("2000-01-01T00:00:00Z")),
    });
    let e = env(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &base)]);
    resolve(&Configured::default(), &e, &agent()).unwrap();
    resolve(&Configured::default(), &e, &agent()).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 6);
    clear_cache();
}

#[test]
fn container_endpoint_with_token_file() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    clear_cache();
    let (base, _) = fake_server(|_, path, headers, _| {
        let auth = headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == "secret-auth");
        if path == "/creds" && auth {
            (200, creds_json("2099-01-01T00:00:00Z"))
        } else {
            (403, String::new())
        }
    });
    let dir = std::env::temp_dir().join(format!("sqs_loader_tok_{}", std::process::id()));
    std::fs::write(&dir, "secret-auth\n").unwrap();
    let e = env(&[
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            &format!("{base}/creds"),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            dir.to_str().unwrap(),
        ),
    ]);
    let c = resolve(&Configured::default(), &e, &agent()).unwrap();
    assert_eq!(c.provider, "container credentials endpoint");
    std::fs::remove_file(&dir).unwrap();
    clear_cache();
    // Without the token the endpoint refuses: a clear error, no secret in it.
    let e = env(&[(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        &format!("{base}/creds"),
    )]);
    let err = resolve(&Configured::default(), &e, &agent()).unwrap_err();
    assert!(err.to_string().contains("HTTP status 403"), "{err}");
    // Plain http to a non-loopback host is refused before any request.
    let e = env(&[(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "http://example.com/creds",
    )]);
    assert!(resolve(&Configured::default(), &e, &agent()).is_err());
}

#[test]
fn nothing_configured_is_no_credentials() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    clear_cache();
    // A closed port stands in for "not on EC2".
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = env(&[(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        &format!("http://{closed}"),
    )]);
    let err = resolve(&Configured::default(), &e, &agent()).unwrap_err();
    assert!(matches!(err, SqsError::NoCredentials(_)), "{err:?}");
    let e = env(&[("AWS_EC2_METADATA_DISABLED", "true")]);
    assert!(matches!(
        resolve(&Configured::default(), &e, &agent()),
        Err(SqsError::NoCredentials(_))
    ));
}

#[test]
fn debug_redacts() {
    let c = Credentials {
        access_key_id: "AKIA".into(),
        secret_access_key: "very-secret".into(),
        session_token: Some("tok-secret".into()),
        expires_at: None,
        provider: "x",
    };
    let s = format!("{c:?}");
    assert!(
        !s.contains("very-secret") && !s.contains("tok-secret"),
        "{s}"
    );
}

#[test]
fn rfc3339() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
    assert_eq!(
        parse_rfc3339("2023-11-14T22:13:20Z"),
        Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    );
    assert_eq!(
        parse_rfc3339("2023-11-14T23:13:20.123+01:00"),
        Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
    );
    assert_eq!(
        parse_rfc3339("2024-02-29T00:00:00Z"),
        Some(UNIX_EPOCH + Duration::from_secs(1_709_164_800))
    );
    assert_eq!(parse_rfc3339("yesterday"), None);
    assert_eq!(parse_rfc3339("2023-13-01T00:00:00Z"), None);
}

const STS_OK: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:ingest:sqs-loader</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/sqs-loader/sqs_loader-1</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:sqs_loader-1</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>IQoJb3JpZ2luX2VjEXAMPLE</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY</SecretAccessKey>
      <Expiration>2099-01-01T00:00:00Z</Expiration>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#;

#[test]
fn web_identity_exchanges_the_token_file_unsigned_and_caches() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    clear_cache();
    let (base, hits) = fake_server(|method, path, headers, body| {
        let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let has = |k: &str, v: &str| form.iter().any(|(a, b)| a == k && b == v);
        let unsigned = !headers.iter().any(|(k, _)| k == "authorization");
        if method == "POST"
            && path == "/"
            && unsigned
            && has("Action", "AssumeRoleWithWebIdentity")
            && has("RoleArn", "arn:aws:iam::123456789012:role/sqs-loader")
            && has("RoleSessionName", "ingest")
            && has("WebIdentityToken", "eyJhbGciOiJSUzI1NiJ9.token-1")
        {
            (200, STS_OK.to_string())
        } else {
            (400, format!("<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>rejected {}</Message></Error></ErrorResponse>", body.replace('&', " ")))
        }
    });
    let file = std::env::temp_dir().join(format!("sqs_loader_wi_{}", std::process::id()));
    std::fs::write(&file, "eyJhbGciOiJSUzI1NiJ9.token-1\n").unwrap();
    let e = env(&[
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/sqs-loader"),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", file.to_str().unwrap()),
        ("AWS_ROLE_SESSION_NAME", "ingest"),
        ("AWS_ENDPOINT_URL_STS", &base),
        // Web identity comes before instance metadata: this must never be asked.
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9"),
    ]);
    let c = resolve(&Configured::default(), &e, &agent()).unwrap();
    assert_eq!(c.provider, "web identity (STS AssumeRoleWithWebIdentity)");
    assert_eq!(c.access_key_id, "ASIAIOSFODNN7EXAMPLE");
    assert_eq!(c.session_token.as_deref(), Some("IQoJb3JpZ2luX2VjEXAMPLE"));
    assert!(c.expires_at.is_some());
    // Cached until shortly before it expires.
    resolve(&Configured::default(), &e, &agent()).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // A rotated token that STS refuses: the error says so and never shows the token.
    clear_cache();
    std::fs::write(&file, "eyJhbGciOiJSUzI1NiJ9.token-2").unwrap();
    let err = resolve(&Configured::default(), &e, &agent())
        .unwrap_err()
        .to_string();
    assert!(err.contains("InvalidIdentityToken"), "{err}");
    assert!(!err.contains("token-2"), "{err}");
    // No token file: a clear error.
    std::fs::remove_file(&file).unwrap();
    clear_cache();
    let err = resolve(&Configured::default(), &e, &agent())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot read AWS_WEB_IDENTITY_TOKEN_FILE"),
        "{err}"
    );
    clear_cache();
}

#[test]
fn an_assumed_role_is_signed_for_sts_with_the_chain_credentials_and_cached() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    clear_cache();
    let (base, hits) = fake_server(|method, _, headers, body| {
        let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let has = |k: &str, v: &str| form.iter().any(|(a, b)| a == k && b == v);
        let auth = headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if method == "POST"
            && auth.contains("Credential=AKIDBASE/")
            && auth.contains("/eu-west-1/sts/aws4_request")
            && has("Action", "AssumeRole")
            && has("RoleArn", "arn:aws:iam::210987654321:role/queue-owner")
            && has("ExternalId", "x-42")
        {
            (
                200,
                STS_OK.replace("AssumeRoleWithWebIdentity", "AssumeRole"),
            )
        } else {
            (403, "<ErrorResponse><Error><Code>AccessDenied</Code><Message>no</Message></Error></ErrorResponse>".into())
        }
    });
    let mut configured = Configured {
        access_key_id: Some("AKIDBASE".into()),
        secret_access_key: Some("base-secret".into()),
        role_arn: Some("arn:aws:iam::210987654321:role/queue-owner".into()),
        role_external_id: Some("x-42".into()),
        sts_endpoint: Some(base.clone()),
        region: "eu-west-1".into(),
        ..Configured::default()
    };
    let c = resolve(&configured, &Env::default(), &agent()).unwrap();
    assert_eq!(c.access_key_id, "ASIAIOSFODNN7EXAMPLE");
    assert_eq!(c.provider, "sqs_loader.role_arn (STS AssumeRole)");
    resolve(&configured, &Env::default(), &agent()).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1, "cached");
    // Other base credentials: assumed again (and refused here), never the cached role.
    configured.access_key_id = Some("AKIDOTHER".into());
    let err = resolve(&configured, &Env::default(), &agent())
        .unwrap_err()
        .to_string();
    assert!(err.contains("AccessDenied"), "{err}");
    assert!(!err.contains("base-secret"), "{err}");
    clear_cache();
}
