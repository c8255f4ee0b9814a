use super::*;
use crate::sqs::fake::{connect_proxy, lock, read_request};
use std::io::BufReader;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use ureq::Timeout;

/// A connected pair: our transport on one end, the server's socket on the other.
fn pair() -> (TcpTransport, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (
        TcpTransport::new(Arc::new(client), LazyBuffers::new(4096, 4096)),
        server,
    )
}

fn within(d: Duration) -> NextTimeout {
    NextTimeout {
        after: UreqDuration::Exact(d),
        reason: Timeout::Global,
        per_read: None,
        per_write: None,
    }
}

fn hand_over(t: &mut TcpTransport, bytes: &[u8]) {
    t.buffers().output()[..bytes.len()].copy_from_slice(bytes);
    t.transmit_output(bytes.len(), within(Duration::from_secs(5)))
        .unwrap();
}

#[test]
fn head_and_body_are_sent_together_when_the_answer_is_awaited() {
    let (mut t, mut server) = pair();
    hand_over(&mut t, b"POST / HTTP/1.1\r\ncontent-length: 4\r\n\r\n");
    hand_over(&mut t, b"body");

    // Nothing has left yet.
    server.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    let early = (&server).read(&mut buf).unwrap_err();
    assert_eq!(early.kind(), io::ErrorKind::WouldBlock);
    server.set_nonblocking(false).unwrap();

    server.write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
    assert!(t.await_input(within(Duration::from_secs(5))).unwrap());
    assert_eq!(t.buffers().input(), b"HTTP/1.1 200 OK\r\n");

    let n = server.read(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"POST / HTTP/1.1\r\ncontent-length: 4\r\n\r\nbody".as_slice()
    );
}

#[test]
fn a_large_request_is_written_before_the_answer_is_awaited() {
    let (mut t, mut server) = pair();
    let chunk = vec![b'x'; 4096];
    for _ in 0..(FLUSH_AT / chunk.len()) {
        hand_over(&mut t, &chunk);
    }
    let mut got = vec![0u8; FLUSH_AT];
    server.read_exact(&mut got).unwrap();
    assert!(got.iter().all(|&b| b == b'x'));
    assert!(t.is_open());
}

#[test]
fn an_idle_connection_is_open_until_the_server_talks_or_closes() {
    let (mut t, server) = pair();
    assert!(t.is_open());
    assert!(t.is_open(), "the probe leaves the socket as it was");
    (&server).write_all(b"x").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(!t.is_open(), "bytes nobody asked for");
    let mut byte = [0u8; 1];
    (&*t.stream).read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"x", "the probe only peeked");

    let (mut t, server) = pair();
    drop(server);
    std::thread::sleep(Duration::from_millis(50));
    assert!(!t.is_open(), "closed by the server");

    let (mut t, _server) = pair();
    t.pending.extend_from_slice(b"unsent");
    assert!(!t.is_open(), "a request half handed over");
}

#[test]
fn a_read_that_gets_no_answer_is_a_timeout_with_ureqs_reason() {
    let (mut t, _server) = pair();
    let mut timeout = within(Duration::from_millis(150));
    timeout.reason = Timeout::RecvResponse;
    match t.await_input(timeout) {
        Err(ureq::Error::Timeout(Timeout::RecvResponse)) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    match t.await_input(within(Duration::ZERO)) {
        Err(ureq::Error::Timeout(Timeout::Global)) => {}
        other => panic!("a spent timeout fails before any I/O, got {other:?}"),
    }
}

#[test]
fn writing_the_request_counts_against_the_wait_for_the_answer() {
    let left = less(within(Duration::from_secs(10)), Duration::from_secs(3)).unwrap();
    assert_eq!(*left.after, Duration::from_secs(7));
    assert_eq!(left.reason, Timeout::Global);
    match less(within(Duration::from_secs(1)), Duration::from_secs(2)) {
        Err(ureq::Error::Timeout(Timeout::Global)) => {}
        other => panic!("a write that used the whole budget is a timeout, got {other:?}"),
    }
    let never = less(NextTimeout::default(), Duration::from_secs(5)).unwrap();
    assert!(never.after.is_not_happening());
}

#[test]
fn timeouts_are_rounded_up_and_set_only_when_they_change() {
    assert_eq!(rounded(Duration::from_micros(1)), GRAIN);
    assert_eq!(rounded(GRAIN), GRAIN);
    assert_eq!(
        rounded(Duration::from_secs(10) - Duration::from_micros(3)),
        Duration::from_secs(10)
    );
    assert_eq!(
        rounded(Duration::from_millis(10_001)),
        Duration::from_millis(10_100)
    );
    let long = Duration::from_secs(3 * 86_400 + 1);
    assert_eq!(rounded(long), long);

    let mut current = None;
    let mut set = Vec::new();
    // The remaining time of successive reads of one request, then of the next request.
    for left in [
        10_000_000u64,
        9_999_990,
        9_950_000,
        9_900_001,
        9_899_999,
        10_000_000,
    ] {
        set_timeout(&mut current, within(Duration::from_micros(left)), |t| {
            set.push(t);
            Ok(())
        })
        .unwrap();
    }
    let s = Duration::from_millis;
    assert_eq!(
        set,
        vec![Some(s(10_000)), Some(s(9_900)), Some(s(10_000))],
        "one setsockopt per change of the rounded value"
    );
    let never = NextTimeout::default();
    set_timeout(&mut current, never, |t| {
        set.push(t);
        Ok(())
    })
    .unwrap();
    assert_eq!(
        set.last(),
        Some(&None),
        "no timeout: the socket's is cleared"
    );
}

/// Answers every request with its own body, keep-alive, on each connection (made a stream of
/// bytes by `wrap`: plain or TLS), and counts the connections.
fn serve<S: Read + Write>(
    connections: Arc<AtomicUsize>,
    wrap: impl Fn(TcpStream) -> S + Send + Sync + 'static,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let wrap = Arc::new(wrap);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            connections.fetch_add(1, Ordering::SeqCst);
            let wrap = Arc::clone(&wrap);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(wrap(conn));
                while let Some((_, body)) = read_request(&mut reader) {
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{}",
                        body.len(),
                        String::from_utf8_lossy(&body)
                    );
                    reader.get_mut().write_all(answer.as_bytes()).unwrap();
                    reader.get_mut().flush().unwrap();
                }
            });
        }
    });
    addr
}

/// An agent on this transport alone (no proxy, whatever the environment says; no TLS).
fn plain_agent(resolver: impl ureq::unversioned::resolver::Resolver) -> ureq::Agent {
    ureq::Agent::with_parts(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .proxy(None)
            .build(),
        ().chain(TcpConnector),
        resolver,
    )
}

/// Twenty requests, one of them larger than what is kept back before it is written.
fn echo_twenty_times(agent: &ureq::Agent, url: &str) {
    for i in 0..20 {
        let size = if i == 7 { 3 * FLUSH_AT } else { i * 1000 };
        let sent = format!("request {i} {}", "y".repeat(size));
        let mut reply = agent.post(url).send(sent.as_str()).unwrap();
        assert_eq!(reply.body_mut().read_to_string().unwrap(), sent);
    }
}

#[test]
fn an_agent_reuses_its_connection_and_gets_each_answer_whole() {
    let connections = Arc::new(AtomicUsize::new(0));
    let addr = serve(Arc::clone(&connections), |tcp| tcp);
    let agent = plain_agent(ureq::unversioned::resolver::DefaultResolver::default());
    echo_twenty_times(&agent, &format!("http://{addr}/"));
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

/// https (as to real SQS): rustls runs over this transport, the handshake's writes included.
#[test]
fn https_runs_over_this_transport_in_the_agents_chain() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let server = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap(),
    );
    let connections = Arc::new(AtomicUsize::new(0));
    let addr = serve(Arc::clone(&connections), move |tcp| {
        rustls::StreamOwned::new(
            rustls::ServerConnection::new(Arc::clone(&server)).unwrap(),
            tcp,
        )
    });
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![
            ureq::tls::Certificate::from_der(der.as_ref()).to_owned(),
        ])))
        .build();
    let agent = ureq::Agent::with_parts(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .tls_config(tls)
            .proxy(None)
            .build(),
        crate::sqs::http::connector(),
        ureq::unversioned::resolver::DefaultResolver::default(),
    );
    echo_twenty_times(&agent, &format!("https://localhost:{}/", addr.port()));
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

/// Resolves every name to a port nothing listens on, then to `good`.
#[derive(Debug)]
struct RefusedFirst(std::net::SocketAddr);

impl ureq::unversioned::resolver::Resolver for RefusedFirst {
    fn resolve(
        &self,
        _: &http::Uri,
        _: &ureq::config::Config,
        _: NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        // A port that was just free: connecting to it is refused.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut addrs = self.empty();
        addrs.push(closed);
        addrs.push(self.0);
        Ok(addrs)
    }
}

#[test]
fn an_address_that_refuses_passes_to_the_next() {
    let connections = Arc::new(AtomicUsize::new(0));
    let addr = serve(Arc::clone(&connections), |tcp| tcp);
    let agent = plain_agent(RefusedFirst(addr));
    let mut reply = agent
        .post("http://sqs.example.invalid/")
        .send("hello")
        .unwrap();
    assert_eq!(reply.body_mut().read_to_string().unwrap(), "hello");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

/// Fixed addresses for one host name; the rest as ureq resolves them.
#[derive(Debug)]
struct Fixed(&'static str, Vec<std::net::SocketAddr>);

impl ureq::unversioned::resolver::Resolver for Fixed {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        if uri.host() != Some(self.0) {
            return ureq::unversioned::resolver::DefaultResolver::default()
                .resolve(uri, config, timeout);
        }
        let mut out = self.empty();
        for a in &self.1 {
            out.push(*a);
        }
        Ok(out)
    }
}

#[test]
fn through_a_proxy_an_address_it_cannot_reach_passes_to_the_next() {
    let echo = serve(Arc::new(AtomicUsize::new(0)), |s| s);
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (proxy_url, seen) = connect_proxy();
    let agent = ureq::Agent::with_parts(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .proxy(Some(super::super::http::proxy(&proxy_url).unwrap()))
            .build(),
        ().chain(TcpConnector),
        Fixed("queue.test", vec![closed, echo]),
    );
    let answer = agent
        .post("http://queue.test/")
        .send("hello")
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert_eq!(answer, "hello");
    let asked: Vec<String> = lock(&seen)
        .iter()
        .map(|head| head.lines().next().unwrap().to_string())
        .collect();
    assert_eq!(
        asked,
        [closed, echo].map(|a| format!("CONNECT {a} HTTP/1.1")),
        "the proxy answered 502 for the first, and was asked for the next"
    );
}
