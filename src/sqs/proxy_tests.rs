//! Proxies: only the one `sqs_loader.proxy` names, never the server's environment's, and the
//! address check still sees the target.

use super::*;
use crate::sqs::fake::{connect_proxy, fake_with, lock};
use crate::sqs::{credentials, SqsError};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const Q: &str = "http://127.0.0.1/000000000000/q";

#[test]
fn a_proxy_url_is_checked_and_its_password_never_quoted() {
    let p = proxy(" http://ops:s3cret@proxy.internal:3128 ").unwrap();
    assert_eq!((p.host(), p.port()), ("proxy.internal", 3128));
    assert_eq!((p.username(), p.password()), (Some("ops"), Some("s3cret")));
    assert!(
        p.resolve_target(),
        "the target is resolved here, for the address check"
    );
    assert_eq!(proxy("http://10.0.0.5").unwrap().port(), 80);
    for bad in [
        "socks5://ops:s3cret@proxy.internal:1080",
        "https://ops:s3cret@proxy.internal:3128",
        "ops:s3cret@proxy.internal:3128",
        "http://ops:s3cret@proxy.internal:port",
        "http://",
    ] {
        let Err(why) = proxy(bad) else {
            panic!("{bad} was taken")
        };
        assert!(!why.contains("s3cret"), "{bad}: {why}");
    }
}

#[test]
fn requests_go_through_the_configured_proxy() {
    let (fake, mut c) = fake_with(3);
    let (url, seen) = connect_proxy();
    c.endpoint.proxy = Some(proxy(&url).unwrap());
    assert_eq!(c.attributes(Q).unwrap()["ApproximateNumberOfMessages"], "3");
    let port = c.endpoint.base.rsplit(':').next().unwrap().to_string();
    let target = format!("127.0.0.1:{port}");
    assert_eq!(
        *lock(&seen),
        vec![format!("CONNECT {target} HTTP/1.1\r\nHost: {target}")]
    );
    assert_eq!(fake.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn the_proxy_gets_the_user_and_its_refusal_is_an_error_without_the_password() {
    let (_fake, mut c) = fake_with(1);
    let (url, seen) = connect_proxy();
    c.endpoint.proxy = Some(proxy(&url.replace("://", "://ops:s3cret@")).unwrap());
    c.attributes(Q).unwrap();
    // base64("ops:s3cret")
    assert!(
        lock(&seen)[0].ends_with("\r\nProxy-Authorization: Basic b3BzOnMzY3JldA=="),
        "{:?}",
        lock(&seen)
    );
    // A proxy that wants other credentials.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let refusing = format!("http://ops:s3cret@{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut head = [0u8; 1024];
            let _ = conn.read(&mut head);
            let _ = conn.write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n",
            );
        }
    });
    c.endpoint.proxy = Some(proxy(&refusing).unwrap());
    let e = c.attributes(Q).unwrap_err();
    let shown = format!("{e:?} {e}");
    assert!(shown.contains("the proxy answered 407"), "{shown}");
    // The status code only: what else a proxy writes is not shown to the callers.
    assert!(!shown.contains("Authentication Required"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn only_the_proxys_own_address_passes_the_public_check() {
    let p = proxy("http://127.0.0.1:3128").unwrap();
    let config = ureq::Agent::config_builder().proxy(Some(p.clone())).build();
    let r = PublicOnly::default();
    assert!(r.resolve(p.uri(), &config, NextTimeout::default()).is_ok());
    // The same URL as a target (another Uri, however equal) is checked like any other.
    let target = p.uri().clone();
    let e = r
        .resolve(&target, &config, NextTimeout::default())
        .unwrap_err();
    assert!(address_refusal(&e).is_some(), "{e:?}");
}

#[test]
fn through_a_proxy_the_address_check_still_sees_the_target() {
    let (fake, mut c) = fake_with(3);
    let (url, seen) = connect_proxy();
    c.endpoint.proxy = Some(proxy(&url).unwrap());
    // A host allowed by a wildcard: public addresses only. The proxy itself is on loopback
    // (chosen by a superuser); the target is refused before the proxy is asked for it.
    c.endpoint.addresses = endpoint::AddressPolicy::PublicOnly;
    let e = c.attributes(Q).unwrap_err();
    assert!(matches!(e, SqsError::AddressNotAllowed(_)), "{e:?}");
    assert!(lock(&seen).is_empty(), "{:?}", lock(&seen));
    assert_eq!(fake.requests.load(Ordering::SeqCst), 0);
}

/// Run as its own process by [`the_servers_proxy_environment_is_ignored`], with the proxy
/// variables set before any agent is built (setting them in the shared test process would
/// race with the other tests).
#[test]
#[ignore = "run by the_servers_proxy_environment_is_ignored"]
fn with_proxy_environment() {
    assert!(std::env::var("ALL_PROXY").is_ok(), "run by the parent test");
    let (fake, c) = fake_with(2);
    assert_eq!(c.attributes(Q).unwrap()["ApproximateNumberOfMessages"], "2");
    assert_eq!(fake.requests.load(Ordering::SeqCst), 1);
    // The container credential endpoint the parent named: it closes at once, so this fails;
    // where the request went is what the parent checks.
    let env = credentials::Env::from_process();
    let _ = credentials::resolve(
        &credentials::Configured::default(),
        &env,
        &credentials_agent(),
    );
}

/// A listener on 127.0.0.1 that counts connections and closes each at once: its URL and count.
fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for _conn in listener.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    (url, connections)
}

#[test]
fn the_servers_proxy_environment_is_ignored() {
    let (env_proxy, proxied) = counting_listener();
    let (container, direct) = counting_listener();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", "sqs::http::proxy_tests::with_proxy_environment"])
        .args(["--ignored", "--test-threads=1"])
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{container}/creds"),
        );
    for var in credentials::ENV_VARS
        .iter()
        .filter(|v| !v.starts_with("AWS_CONTAINER_CREDENTIALS_FULL"))
        .chain(&["NO_PROXY", "no_proxy"])
    {
        child.env_remove(var);
    }
    for var in ["ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "http_proxy"] {
        child.env(var, &env_proxy);
    }
    let out = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        proxied.load(Ordering::SeqCst),
        0,
        "nothing went to the environment's proxy"
    );
    assert!(
        direct.load(Ordering::SeqCst) >= 1,
        "the credential endpoint was asked directly"
    );
}
