//! Sending a request: sign, POST, decode, retry with bounded exponential backoff and jitter.
//! Runs on a worker thread (blocking I/O); never touches Postgres.

use super::advice;
use super::credentials::Credentials;
use super::endpoint::{self, AddressPolicy, Endpoint};
use super::lock;
use super::{sign, tcp, wire, Protocol, Request, Response, SqsError, TransportKind};
use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{Connector, NextTimeout, RustlsConnector, Transport};
use ureq::{Proxy, ProxyProtocol};

/// Largest response body accepted (ten 1 MiB messages, escaped, with room to spare).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// The start of the message of the I/O error [`PublicOnly`] fails with, to recognise it.
const REFUSED: &str = "sqs_loader refused the address";

/// How long a name's addresses are kept (what the JVM keeps them for by default).
const DNS_CACHE_TTL: Duration = Duration::from_secs(30);

/// Name resolution without a thread per request. ureq resolves before every request, even one
/// on a pooled connection, and its default resolver then starts a thread to bound the lookup by
/// the timeout: a thread start and exit per request, about half the I/O threads' CPU in a
/// profile of the loader. An address literal needs no lookup; a name's addresses are kept for
/// [`DNS_CACHE_TTL`].
#[derive(Debug, Default)]
struct Cached {
    lookup: DefaultResolver,
    names: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl Resolver for Cached {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().unwrap_or_default();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            let mut one = self.empty();
            one.push(SocketAddr::new(ip, port));
            return Ok(one);
        }
        let key = format!("{host}:{port}");
        let now = Instant::now();
        if let Some((at, addrs)) = lock(&self.names).get(&key) {
            if now.duration_since(*at) < DNS_CACHE_TTL {
                return Ok(addrs.clone());
            }
        }
        let addrs = self.lookup.resolve(uri, config, timeout)?;
        let mut names = lock(&self.names);
        if names.len() >= 256 {
            names.clear();
        }
        names.insert(key, (now, addrs.clone()));
        Ok(addrs)
    }
}

/// A resolver that keeps only public addresses, and fails (not retryably) when none is left:
/// the check is on the address actually connected to, so a name that resolves (or rebinds) to
/// loopback or a private network is refused.
#[derive(Debug, Default)]
struct PublicOnly(Cached);

impl Resolver for PublicOnly {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let all = self.0.resolve(uri, config, timeout)?;
        // The proxy of `sqs_loader.proxy` (ureq resolves it with the proxy's own URI): a
        // superuser chose it, and it commonly sits on a private network. The target's
        // addresses are checked as without a proxy ([`proxy`] resolves the target here).
        if config.proxy().is_some_and(|p| std::ptr::eq(p.uri(), uri)) {
            return Ok(all);
        }
        let mut public = self.empty();
        let mut refused = None;
        for a in all.iter() {
            if endpoint::is_public(a.ip()) {
                public.push(*a);
            } else {
                refused.get_or_insert(a.ip());
            }
        }
        if public.is_empty() {
            return Err(ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{REFUSED}: {} resolves to {}, not a public address",
                    uri.host().unwrap_or_default(),
                    refused.map(|a| a.to_string()).unwrap_or_default()
                ),
            )));
        }
        Ok(public)
    }
}

fn build(policy: AddressPolicy) -> ureq::Agent {
    // Parallel receives need more idle connections per host than ureq's default of 3.
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(256)
        .max_idle_connections_per_host(64)
        .max_redirects(0)
        .user_agent(concat!("sqs_loader/", env!("CARGO_PKG_VERSION")))
        // Not the HTTP(S)_PROXY / ALL_PROXY of the server's environment, ureq's default: they
        // would route signed requests and credential endpoints' tokens through whatever host
        // the environment names, and a proxy that resolves the target itself escapes the
        // address check. A proxy is set per request, from `sqs_loader.proxy` ([`proxy`]).
        .proxy(None)
        .build();
    match policy {
        AddressPolicy::Any => ureq::Agent::with_parts(config, connector(), Cached::default()),
        AddressPolicy::PublicOnly => {
            ureq::Agent::with_parts(config, connector(), PublicOnly::default())
        }
    }
}

/// This crate's TCP ([`tcp`]: fewer system calls per request, and the CONNECT tunnel of a
/// proxy), then rustls for https.
pub fn connector() -> impl Connector<(), Out = impl Transport> {
    ().chain(tcp::TcpConnector)
        .chain(RustlsConnector::default())
}

/// The proxy of `sqs_loader.proxy`: an HTTP CONNECT proxy, `http://[user:password@]host[:port]`
/// (port 80 when none is given). The target's name is resolved here (`resolve_target`), so the
/// address check of [`PublicOnly`] sees what is connected to, and [`tcp`] asks the proxy for
/// that address. The error never quotes the URL (it may hold a password).
pub fn proxy(url: &str) -> Result<Proxy, String> {
    let url = url.trim();
    if !url.to_ascii_lowercase().starts_with("http://") {
        return Err("only http:// proxies (HTTP CONNECT) are supported".into());
    }
    let invalid = || "not a valid proxy URL".to_string();
    let uri: http::Uri = url.parse().map_err(|_| invalid())?;
    let authority = uri.authority().ok_or_else(invalid)?;
    // `Authority::port()` is None for a port that is not a number: look at the text.
    let host_port = authority.as_str().rsplit('@').next().unwrap_or_default();
    let after_host = host_port
        .rsplit_once(']')
        .map_or(host_port, |(_, rest)| rest);
    let bad_port = after_host
        .split_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_err());
    if authority.host().is_empty()
        || bad_port
        || !matches!(uri.path(), "" | "/")
        || uri.query().is_some()
    {
        return Err(invalid());
    }
    let parsed = Proxy::new(url).map_err(|_| invalid())?;
    let mut b = Proxy::builder(ProxyProtocol::Http)
        .host(parsed.host())
        .port(parsed.port())
        .resolve_target(true);
    if let Some(user) = parsed.username() {
        b = b.username(user);
    }
    if let Some(password) = parsed.password() {
        b = b.password(password);
    }
    b.build().map_err(|_| invalid())
}

/// The agent (connection pool, one per policy and process) for requests to `endpoint`.
pub fn agent(endpoint: &Endpoint) -> ureq::Agent {
    static PUBLIC: OnceLock<ureq::Agent> = OnceLock::new();
    static ANY: OnceLock<ureq::Agent> = OnceLock::new();
    match endpoint.addresses {
        AddressPolicy::PublicOnly => PUBLIC.get_or_init(|| build(AddressPolicy::PublicOnly)),
        AddressPolicy::Any => ANY.get_or_init(|| build(AddressPolicy::Any)),
    }
    .clone()
}

/// The agent for credential endpoints (instance metadata, container credentials): their
/// addresses come from the server's environment, not from SQL, and are link-local by design.
pub fn credentials_agent() -> ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| build(AddressPolicy::Any)).clone()
}

#[derive(Debug, Clone, Copy)]
pub struct CallOptions {
    pub protocol: Protocol,
    /// Whole-request timeout (connect, send, wait, read).
    pub timeout: Duration,
    /// Retries after the first attempt for retryable failures.
    pub max_retries: u32,
    /// Whether an error may quote the body of a reply that is not an SQS error document (for
    /// superusers: it helps to debug an endpoint; for others it would be a window on whatever
    /// answered).
    pub reveal_foreign_bodies: bool,
}

/// Delay before retry number `attempt` (0-based): "equal jitter" over a capped exponential.
pub fn backoff(attempt: u32, random: u64) -> Duration {
    let exp = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_CAP);
    let half = exp / 2;
    let jitter_ms = if half.as_millis() == 0 {
        0
    } else {
        random % (half.as_millis() as u64 + 1)
    };
    half + Duration::from_millis(jitter_ms)
}

fn random_u64() -> u64 {
    getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15)
}

/// Remove every occurrence of a secret from a message.
pub fn redact(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s, "[redacted]");
    }
    out
}

/// Refused by [`PublicOnly`]: the message, if this is that error.
fn address_refusal(e: &ureq::Error) -> Option<String> {
    match e {
        ureq::Error::Io(io) if io.to_string().starts_with(REFUSED) => Some(io.to_string()),
        _ => None,
    }
}

fn transport_error(e: &ureq::Error) -> (TransportKind, String) {
    let kind = match e {
        ureq::Error::Timeout(_) => TransportKind::Timeout,
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => TransportKind::Connect,
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            TransportKind::Connect
        }
        _ => TransportKind::Io,
    };
    (kind, e.to_string())
}

/// Send one request with retries. Blocking.
pub fn call(
    agent: &ureq::Agent,
    endpoint: &Endpoint,
    creds: &Credentials,
    req: &Request,
    opts: &CallOptions,
) -> Result<Response, SqsError> {
    let action = req.action().name();
    let url = format!("{}/", endpoint.base);
    let secrets = creds.secrets();
    let mut attempt = 0u32;
    loop {
        let result = call_once(agent, endpoint, &url, creds, req, opts);
        let err = match result {
            Ok(r) => return Ok(r),
            Err(e) => e,
        };
        if err.retryable() && attempt < opts.max_retries {
            std::thread::sleep(backoff(attempt, random_u64()));
            attempt += 1;
            continue;
        }
        let attempts = attempt + 1;
        return Err(match err {
            SqsError::Transport { kind, message, .. } => SqsError::Transport {
                action,
                endpoint: endpoint.base.clone(),
                kind,
                attempts,
                message: redact(&message, &secrets),
            },
            SqsError::Aws {
                status,
                code,
                message,
                ..
            } => SqsError::Aws {
                action,
                status,
                advice: advice::for_error(req.action(), &code, &message, endpoint, req.queue_url()),
                code,
                message: redact(&message, &secrets),
                attempts,
            },
            other => other,
        });
    }
}

fn call_once(
    agent: &ureq::Agent,
    endpoint: &Endpoint,
    url: &str,
    creds: &Credentials,
    req: &Request,
    opts: &CallOptions,
) -> Result<Response, SqsError> {
    let action = req.action().name();
    let http_req = wire::encode(opts.protocol, req);
    let auth = sign::signed_headers(&http_req, url, creds, &endpoint.region, SystemTime::now())?;
    let mut builder = agent
        .post(url)
        .config()
        .timeout_global(Some(opts.timeout))
        .proxy(endpoint.proxy.clone())
        .build();
    for (k, v) in &http_req.headers {
        builder = builder.header(*k, v);
    }
    for (k, v) in &auth {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let transport = |e: ureq::Error| {
        if let Some(message) = address_refusal(&e) {
            return SqsError::AddressNotAllowed(message);
        }
        let (kind, message) = transport_error(&e);
        SqsError::Transport {
            action,
            endpoint: endpoint.base.clone(),
            kind,
            attempts: 1,
            message,
        }
    };
    let (parts, mut body) = builder
        .send(&http_req.body[..])
        .map_err(transport)?
        .into_parts();
    // Sized from Content-Length when there is one, up to 1 MiB (a receive's reply is tens of
    // kilobytes: growing from empty copied it several times).
    let mut bytes =
        Vec::with_capacity(body.content_length().map_or(0, |n| n.min(1 << 20) as usize));
    body.with_config()
        .limit(MAX_RESPONSE_BYTES)
        .reader()
        .read_to_end(&mut bytes)
        .map_err(|e| transport(e.into()))?;
    let status = parts.status.as_u16();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    wire::decode(
        opts.protocol,
        req,
        status,
        &header,
        &bytes,
        &endpoint.base,
        opts.reveal_foreign_bodies,
    )
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod proxy_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(r: &Cached, url: &str) -> Vec<SocketAddr> {
        let uri: http::Uri = url.parse().unwrap();
        r.resolve(
            &uri,
            &ureq::config::Config::default(),
            NextTimeout::default(),
        )
        .unwrap()
        .iter()
        .copied()
        .collect()
    }

    #[test]
    fn an_address_literal_is_not_looked_up() {
        let r = Cached::default();
        assert_eq!(
            resolve(&r, "http://127.0.0.1:4566/000000000000/q"),
            vec!["127.0.0.1:4566".parse().unwrap()]
        );
        assert_eq!(
            resolve(&r, "https://[::1]/"),
            vec!["[::1]:443".parse().unwrap()]
        );
        assert!(lock(&r.names).is_empty(), "nothing was looked up");
    }

    #[test]
    fn a_name_is_looked_up_once_then_kept() {
        let r = Cached::default();
        let first = resolve(&r, "http://localhost:4566/");
        assert!(
            !first.is_empty()
                && first
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 4566)
        );
        assert_eq!(lock(&r.names).len(), 1);
        // A stale entry is looked up again; a fresh one is used as it is.
        lock(&r.names).get_mut("localhost:4566").unwrap().1 = r.empty();
        assert!(resolve(&r, "http://localhost:4566/").is_empty(), "kept");
        lock(&r.names).get_mut("localhost:4566").unwrap().0 -= DNS_CACHE_TTL;
        assert_eq!(
            resolve(&r, "http://localhost:4566/"),
            first,
            "looked up again"
        );
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        for attempt in 0..20 {
            for r in [0, 1, 77, u64::MAX] {
                let d = backoff(attempt, r);
                assert!(d <= BACKOFF_CAP, "{attempt} {d:?}");
                let exp = BACKOFF_BASE
                    .saturating_mul(1 << attempt.min(16))
                    .min(BACKOFF_CAP);
                assert!(d >= exp / 2);
            }
        }
        assert!(backoff(0, 0) < backoff(5, 0));
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact("bad key abcd1234 for x", &["abcd1234"]),
            "bad key [redacted] for x"
        );
        assert_eq!(redact("short ab", &["ab"]), "short ab");
    }
}
