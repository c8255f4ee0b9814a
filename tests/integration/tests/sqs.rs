//! The sqs_* functions against things #[pg_test] cannot do: hanging endpoints cancelled from
//! another connection, signature checking (moto), credentials from instance metadata, Pod
//! Identity and web identity (each on a throwaway cluster whose environment holds only that source).

use sqs_loader_it::*;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A TCP server on 127.0.0.1 that accepts connections and never answers.
fn hanging_endpoint() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            held.push(s);
        }
    });
    port
}

fn sqlstate(e: &postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

#[test]
fn statement_timeout_stops_a_call_to_a_hanging_endpoint() {
    let _g = shared();
    let db = TestDb::new("hang");
    let mut c = db.client();
    let port = hanging_endpoint();
    c.batch_execute("SET sqs_loader.http_timeout_ms = 600000; SET statement_timeout = '1s'")
        .unwrap();
    let t = Instant::now();
    let err = c
        .query(
            &format!("SELECT * FROM sqs_pull('http://127.0.0.1:{port}/000000000000/q', 1)"),
            &[],
        )
        .unwrap_err();
    let took = t.elapsed();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    assert!(
        took < Duration::from_secs(3),
        "statement_timeout=1s ended the call after {took:?}"
    );
    // The session is fine afterwards.
    c.batch_execute("RESET statement_timeout").unwrap();
    assert_eq!(c.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1);
}

#[test]
fn pg_cancel_backend_and_terminate_stop_a_hanging_call() {
    let _g = shared();
    let db = TestDb::new("cancel");
    let port = hanging_endpoint();
    let mut other = db.client();
    let started: std::time::SystemTime = other
        .query_one("SELECT pg_postmaster_start_time()", &[])
        .unwrap()
        .get(0);
    for action in ["pg_cancel_backend", "pg_terminate_backend"] {
        let mut c = db.client();
        c.batch_execute("SET sqs_loader.http_timeout_ms = 600000")
            .unwrap();
        let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        let sql = format!("SELECT * FROM sqs_pull('http://127.0.0.1:{port}/000000000000/q', 1)");
        let h = std::thread::spawn(move || {
            let r = c.query(&sql, &[]);
            (Instant::now(), r.map(|_| ()))
        });
        // Wait until the call is waiting on the endpoint.
        wait_until(Duration::from_secs(10), "the call to start", || {
            other
                .query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND query LIKE '%sqs_pull%'", &[&pid])
                .unwrap()
                .get::<_, i64>(0)
                == 1
        });
        std::thread::sleep(Duration::from_millis(300));
        let sent = Instant::now();
        other
            .execute(&format!("SELECT {action}($1)"), &[&pid])
            .unwrap();
        let (ended, result) = h.join().unwrap();
        let err = result.unwrap_err();
        let took = ended.duration_since(sent);
        assert!(took < Duration::from_secs(1), "{action} took {took:?}");
        if action == "pg_cancel_backend" {
            assert_eq!(sqlstate(&err), "57014", "{err}");
        }
    }
    // Terminating a backend that waits on I/O threads does not crash the server.
    let now: std::time::SystemTime = other
        .query_one("SELECT pg_postmaster_start_time()", &[])
        .unwrap()
        .get(0);
    assert_eq!(started, now, "the server restarted");
}

/// Drive one queue through send, pull, delete on moto, which verifies every SigV4 signature.
fn moto_round_trip(c: &mut postgres::Client, protocol: &str) {
    c.batch_execute(&format!(
        "SET sqs_loader.protocol = '{protocol}'; SET sqs_loader.endpoint = '{}'",
        env().moto
    ))
    .unwrap();
    let name = format!("it-moto-{protocol}-{}", random_suffix());
    let url: String = c
        .query_one("SELECT sqs_create_queue($1)", &[&name])
        .unwrap()
        .get(0);
    c.batch_execute("RESET sqs_loader.endpoint").unwrap();
    let bodies: Vec<String> = (0..15)
        .map(|i| format!("{{\"i\":{i},\"s\":\"<&>é\"}}"))
        .collect();
    send(c, &url, &bodies);
    // SQS is at-least-once, and moto shows it: parallel receives can hand out one message twice
    // (and another not yet). Pull until every message was seen; each stays invisible for 30 s.
    let mut seen = std::collections::BTreeMap::<String, String>::new();
    wait_until(
        std::time::Duration::from_secs(30),
        "all 15 messages received",
        || {
            for r in c
                .query(
                    "SELECT message_id, receipt_handle FROM sqs_pull($1, 15, 30)",
                    &[&url],
                )
                .unwrap()
            {
                seen.insert(r.get(0), r.get(1));
            }
            seen.len() == 15
        },
    );
    let handles: Vec<String> = seen.into_values().collect();
    let deleted: i32 = c
        .query_one("SELECT sqs_delete($1, $2)", &[&url, &handles])
        .unwrap()
        .get(0);
    assert_eq!(deleted, 15, "{protocol}");
    assert_eq!(queue_depth(c, &url), (0, 0));
}

#[test]
fn signatures_verified_by_moto_in_both_protocols() {
    let _g = shared();
    let db = TestDb::new("moto");
    let mut c = db.client();
    let e = env();
    c.batch_execute(&format!(
        "SET sqs_loader.aws_access_key_id = '{}'; SET sqs_loader.aws_secret_access_key = '{}'",
        e.moto_key, e.moto_secret
    ))
    .unwrap();
    moto_round_trip(&mut c, "json");
    moto_round_trip(&mut c, "query");
    // A wrong secret: moto refuses the signature; a clear error without the secret in it.
    c.batch_execute("SET sqs_loader.aws_secret_access_key = 'WRONGwrongWRONGwrong'; SET sqs_loader.protocol = 'json'")
        .unwrap();
    let err = c
        .query(
            &format!("SELECT * FROM sqs_pull('{}/123456789012/x', 1)", e.moto),
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    let text = format!("{err:?}");
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    assert!(
        !text.contains("WRONGwrong") && !text.contains(&e.moto_secret),
        "secret in the error: {text}"
    );
}

/// How a fake credential endpoint wants to be asked.
#[derive(Clone, Copy)]
enum Fake {
    /// EC2 IMDSv2: a session token from `PUT /latest/api/token`, then the role's credentials.
    Imds,
    /// EKS Pod Identity / ECS: `GET /creds` with the `Authorization` header holding this token.
    Container(&'static str),
}

/// A fake IMDSv2 or container credential endpoint handing out moto's temporary credentials (with
/// their session token); anything not asked the way AWS wants gets 401/404.
fn fake_credentials((key, secret, token): (String, String, String), kind: Fake) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let Some((lines, _body)) = read_request(&mut BufReader::new(&s)) else {
                continue;
            };
            let line = &lines[0];
            let header = |name: &str| {
                lines[1..].iter().find_map(|h| {
                    let (k, v) = h.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
            };
            let has_token = header("x-aws-ec2-metadata-token").is_some();
            let authorization = header("authorization").unwrap_or_default();
            let creds = format!(
                r#"{{"Code":"Success","AccessKeyId":"{key}","SecretAccessKey":"{secret}","Token":"{token}","Expiration":"2099-01-01T00:00:00Z"}}"#
            );
            let (status, body) = match kind {
                Fake::Imds if line.starts_with("PUT /latest/api/token") => {
                    (200, "IMDS-TOKEN".to_string())
                }
                Fake::Imds if !has_token => (401, String::new()),
                Fake::Imds
                    if line.starts_with("GET /latest/meta-data/iam/security-credentials/ ") =>
                {
                    (200, "loader-role".to_string())
                }
                Fake::Imds
                    if line.starts_with(
                        "GET /latest/meta-data/iam/security-credentials/loader-role ",
                    ) =>
                {
                    (200, creds)
                }
                Fake::Container(want) if line.starts_with("GET /creds ") => {
                    if authorization == want {
                        (200, creds)
                    } else {
                        (401, String::new())
                    }
                }
                _ => (404, String::new()),
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// Run `f` on a second throwaway cluster whose server environment is `server_env` only (no AWS
/// keys: the credential chain must find them where `server_env` points), then destroy it.
fn on_cluster_with_env(tag: &str, server_env: &str, f: impl FnOnce(&mut postgres::Client)) {
    let e = env();
    // One at a time (these tests hold only the shared lock), each on a port of its own above
    // Linux's ephemeral range (32768-60999 by default): a port in it can be taken, between two
    // of these clusters, as the local port of any of the other tests' connections (seen once).
    static ONE: std::sync::Mutex<u16> = std::sync::Mutex::new(61_000);
    let mut next = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let port = *next;
    *next += 1;
    let name = format!("{tag}{}", random_suffix());
    let script = format!("{}/scripts/pg.sh", e.root);
    let start = std::process::Command::new("bash")
        .args([&script, "start", &name, &port.to_string(), tag])
        .env("PG_SERVER_ENV", server_env)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .status()
        .unwrap();
    assert!(start.success(), "a cluster on port {port}");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut c = postgres::Client::connect(
            &format!("host=127.0.0.1 port={port} user=postgres dbname={tag}"),
            postgres::NoTls,
        )
        .unwrap();
        c.batch_execute("CREATE EXTENSION sqs_loader").unwrap();
        f(&mut c)
    }));
    let _ = std::process::Command::new("bash")
        .args([&script, "destroy", &name])
        .status();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// A file the cluster's OS user can read (the tests run as root, the server does not).
fn readable_file(tag: &str, content: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::temp_dir().join(format!("sqs_loader_it_{tag}_{}", random_suffix()));
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

#[test]
fn credentials_from_instance_metadata_sign_requests_moto_accepts() {
    let _g = shared();
    let imds = fake_credentials(env().moto_temp.clone(), Fake::Imds);
    on_cluster_with_env(
        "imds",
        &format!("AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:{imds}"),
        |c| moto_round_trip(c, "json"),
    );
}

#[test]
fn eks_pod_identity_credentials_sign_requests_moto_accepts() {
    let _g = shared();
    // The agent wants the token of the projected file in `Authorization`; a wrong one is a 401.
    let agent = fake_credentials(env().moto_temp.clone(), Fake::Container("pod-token-7"));
    let good = readable_file("pod", "pod-token-7\n");
    let bad = readable_file("pod", "stolen\n");
    let server_env = |token_file: &std::path::Path| {
        format!(
            "AWS_EC2_METADATA_DISABLED=true AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:{agent}/creds \
             AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={}",
            token_file.display()
        )
    };
    on_cluster_with_env("pod", &server_env(&good), |c| moto_round_trip(c, "json"));
    on_cluster_with_env("pod", &server_env(&bad), |c| {
        let err = c
            .query_one("SELECT sqs_create_queue('it-pod-refused')", &[])
            .unwrap_err();
        assert_eq!(sqlstate(&err), "28000", "{err:?}");
        let text = format!("{err:?}");
        assert!(text.contains("401"), "{text}");
        assert!(!text.contains("stolen"), "token leaked: {text}");
    });
    let _ = std::fs::remove_file(good);
    let _ = std::fs::remove_file(bad);
}

#[test]
fn web_identity_credentials_from_moto_sts_sign_requests_moto_accepts() {
    // moto 5.2.5 checks a signature even on AssumeRoleWithWebIdentity, which AWS never signs (the
    // token is the proof), and fails on the missing header. `/moto-api/reset-auth` with 1 lets
    // exactly the next action through unchecked, so no other test may talk to moto meanwhile:
    // hence the exclusive lock. Every SQS request after it is signature-checked again.
    let _g = exclusive();
    let e = env();
    let token = readable_file(
        "jwt",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6aW5nZXN0OmxvYWRlciJ9.c2ln\n",
    );
    let server_env = format!(
        "AWS_EC2_METADATA_DISABLED=true AWS_ROLE_ARN=arn:aws:iam::123456789012:role/sqs-loader-role \
         AWS_WEB_IDENTITY_TOKEN_FILE={} AWS_ROLE_SESSION_NAME=it-web-identity AWS_ENDPOINT_URL_STS={}",
        token.display(),
        e.moto
    );
    on_cluster_with_env("webid", &server_env, |c| {
        let reset = std::process::Command::new("curl")
            .args([
                "-sf",
                "-X",
                "POST",
                "-H",
                "content-type: text/plain",
                "--data",
                "1",
            ])
            .arg(format!("{}/moto-api/reset-auth", e.moto))
            .output()
            .unwrap();
        assert!(reset.status.success(), "{reset:?}");
        moto_round_trip(c, "json");
    });
    // Without the token file the chain stops at web identity with a clear error, no fallback.
    let missing = server_env.replace(&token.display().to_string(), "/nonexistent/token");
    on_cluster_with_env("webid", &missing, |c| {
        let err = c
            .query_one("SELECT sqs_create_queue('it-webid-refused')", &[])
            .unwrap_err();
        assert_eq!(sqlstate(&err), "28000", "{err:?}");
        let text = format!("{err:?}");
        assert!(text.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{text}");
    });
    let _ = std::fs::remove_file(token);
}

#[test]
fn a_granted_role_sees_no_secret_in_errors_or_notices() {
    let _g = shared();
    let db = TestDb::new("secret");
    let e = env();
    let role = format!("it_role_{}", random_suffix());
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let n2 = notices.clone();
    let mut config: postgres::Config = format!(
        "host=127.0.0.1 port={} user=postgres dbname={}",
        e.pgport, db.name
    )
    .parse()
    .unwrap();
    config.notice_callback(move |n| n2.lock().unwrap().push(format!("{n:?}")));
    let mut c = config.connect(postgres::NoTls).unwrap();
    let secret = "WRONG-SECRET-0123456789abcdef";
    c.batch_execute(&format!(
        "CREATE ROLE {role}; GRANT EXECUTE ON FUNCTION sqs_pull(text, integer, integer, integer) TO {role};
         SET sqs_loader.aws_access_key_id = '{}'; SET sqs_loader.aws_secret_access_key = '{secret}';
         SET sqs_loader.max_retries = 0; SET ROLE {role};",
        e.moto_key
    ))
    .unwrap();
    let mut errors = Vec::new();
    for sql in [
        format!("SELECT * FROM sqs_pull('{}/123456789012/x', 1)", e.moto),
        "SHOW sqs_loader.aws_secret_access_key".to_string(),
        "SELECT current_setting('sqs_loader.aws_secret_access_key')".to_string(),
        "SELECT setting FROM pg_settings WHERE name LIKE 'sqs_loader.aws%'".to_string(),
    ] {
        match c.simple_query(&sql) {
            Err(err) => errors.push(format!("{err:?}")),
            Ok(rows) => {
                for r in rows {
                    if let postgres::SimpleQueryMessage::Row(r) = r {
                        errors.push(format!("row: {:?}", r.get(0)));
                    }
                }
            }
        }
    }
    c.batch_execute(&format!(
        "RESET ROLE; DROP OWNED BY {role}; DROP ROLE {role}"
    ))
    .unwrap();
    assert!(errors.len() >= 3, "{errors:?}");
    assert!(
        errors[0].contains("SignatureDoesNotMatch") && errors[0].contains("E28000"),
        "{}",
        errors[0]
    );
    for text in errors.iter().chain(notices.lock().unwrap().iter()) {
        assert!(!text.contains(secret), "secret leaked: {text}");
    }
}

#[test]
fn an_assumed_role_on_top_of_the_chain_signs_requests_moto_accepts() {
    let _g = shared();
    let db = TestDb::new("assume_role");
    let mut c = db.client();
    let e = env();
    let wrong = "wrong-secret-0123456789abcdef";
    c.batch_execute(&format!(
        "SET sqs_loader.aws_access_key_id = '{}'; SET sqs_loader.aws_secret_access_key = '{wrong}';
         SET sqs_loader.role_arn = 'arn:aws:iam::123456789012:role/sqs-loader-role';
         SET sqs_loader.role_external_id = 'ingest-1'; SET sqs_loader.sts_endpoint = '{}';
         SET sqs_loader.max_retries = 0; SET sqs_loader.endpoint = '{}'",
        e.moto_key, e.moto, e.moto
    ))
    .unwrap();
    // moto checks the AssumeRole signature: a wrong secret of the base credentials is refused
    // there, before any SQS request, and the error names the role step, never the secret.
    let err = c
        .query_one("SELECT sqs_create_queue('it-assume-refused')", &[])
        .unwrap_err();
    let db_err = err.as_db_error().unwrap();
    assert_eq!(db_err.code().code(), "28000", "{err:?}");
    assert!(
        db_err
            .message()
            .contains("sqs_loader.role_arn (STS AssumeRole)"),
        "{}",
        db_err.message()
    );
    assert!(!format!("{err:?}").contains(wrong));
    // The right secret: the role's temporary credentials (with their session token) sign every
    // SQS request, and moto verifies them.
    c.batch_execute(&format!(
        "RESET sqs_loader.endpoint; SET sqs_loader.aws_secret_access_key = '{}'",
        e.moto_secret
    ))
    .unwrap();
    moto_round_trip(&mut c, "json");
}
