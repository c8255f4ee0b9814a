//! Plain TCP for ureq with fewer system calls per request than ureq's own `TcpConnector`.
//! `strace -c -f` of the bare client draining fauxqs (2026-12-03) counted 12 socket calls per
//! request there: two writes (ureq hands the head and the body over separately), three
//! `setsockopt` (a timeout set before every read and write, because the request's remaining time
//! changes by microseconds between them), and two liveness probes of a pooled connection of three
//! calls each (`ioctl(FIONBIO)`, `read`, `ioctl(FIONBIO)`). Here:
//!
//! - what ureq hands over is kept until it waits for the answer, then sent in one write: one TCP
//!   segment and one wake-up of the server per request instead of two;
//! - a socket timeout is rounded up to [`GRAIN`] and set only when that changes (a timeout may
//!   end up to [`GRAIN`] late);
//! - the liveness probe is one `recv(MSG_PEEK | MSG_DONTWAIT)`.
//!
//! A proxy (`sqs_loader.proxy`) is an HTTP CONNECT tunnel opened here ([`tunnel`]) to an
//! address the agent's resolver checked. TLS (rustls) is ureq's own connector chained after
//! this one ([`super::http`]). What rustls writes without reading afterwards (an alert when a
//! handshake fails) is not sent: the connection is dropped without it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use ureq::unversioned::transport::time::Duration as UreqDuration;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, ShutdownHandle,
    Transport,
};

/// Socket timeouts are rounded up to a multiple of this.
pub const GRAIN: Duration = Duration::from_millis(100);

/// Unsent request bytes beyond this are written without waiting for the rest.
const FLUSH_AT: usize = 64 * 1024;

/// The most room for unsent bytes a connection keeps between requests.
const KEEP: usize = 16 * 1024;

/// The shortest time given to one address of a name that resolved to several.
const MIN_PER_ADDRESS: Duration = Duration::from_millis(10);

/// Opens plain TCP connections (when no connector before it in the chain made one).
#[derive(Debug, Default)]
pub struct TcpConnector;

impl<In: Transport> Connector<In> for TcpConnector {
    type Out = Either<In, TcpTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if let Some(made) = chained {
            return Ok(Some(Either::A(made)));
        }
        let stream = Arc::new(match details.config.proxy() {
            None => connect(&details.addrs, &Budget::of(details), details)?,
            Some(proxy) => tunnel(proxy, details)?,
        });
        stream.set_nodelay(true)?;
        let handle = Arc::downgrade(&stream) as Weak<dyn ShutdownHandle>;
        (details.register_shutdown)(handle)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TcpTransport::new(stream, buffers))))
    }
}

/// Tries `addrs` in turn within `budget` (None: no limit; else the time left until the
/// deadline): each address but the last gets half the time left (at least
/// [`MIN_PER_ADDRESS`]); an address that refuses or cannot be reached passes to the next one,
/// any other error ends the attempt.
fn connect(
    addrs: &[SocketAddr],
    budget: &Budget,
    details: &ConnectionDetails,
) -> Result<TcpStream, ureq::Error> {
    let count = addrs.len();
    let mut last = None;
    for (i, addr) in addrs.iter().enumerate() {
        let attempt = match budget.left(details)? {
            None => TcpStream::connect(addr),
            Some(left) => {
                let this = if i + 1 < count {
                    (left / 2).max(MIN_PER_ADDRESS).min(left)
                } else {
                    left
                };
                TcpStream::connect_timeout(addr, this)
            }
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                last = Some(ureq::Error::Timeout(details.timeout.reason))
            }
            Err(e) if address_specific(&e) => last = Some(ureq::Error::Io(e)),
            Err(e) => return Err(ureq::Error::Io(e)),
        }
    }
    Err(last.unwrap_or_else(|| {
        ureq::Error::Io(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "no address to connect to",
        ))
    }))
}

/// The deadline of opening one connection (ureq's timeout for it, from when it started).
struct Budget(Option<Instant>);

impl Budget {
    fn of(details: &ConnectionDetails) -> Budget {
        Budget(details.timeout.not_zero().map(|d| Instant::now() + *d))
    }

    /// The time left (None: no limit); a timeout error when none is.
    fn left(&self, details: &ConnectionDetails) -> Result<Option<Duration>, ureq::Error> {
        match self.0 {
            None => Ok(None),
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(d) if !d.is_zero() => Ok(Some(d)),
                _ => Err(ureq::Error::Timeout(details.timeout.reason)),
            },
        }
    }
}

/// The longest answer to a CONNECT read before giving up on the proxy.
const MAX_PROXY_ANSWER: usize = 8 * 1024;

/// A tunnel through an HTTP CONNECT proxy to the target's addresses, which the agent's
/// resolver produced and checked (ureq's own CONNECT connector lets the proxy resolve the
/// name, which the address check never sees, and with `resolve_target` it writes the port
/// twice). The proxy's own address is resolved by the same resolver, which lets it through.
/// When the proxy cannot reach an address (a 5xx answer), the next one is tried.
fn tunnel(proxy: &ureq::Proxy, details: &ConnectionDetails) -> Result<TcpStream, ureq::Error> {
    if proxy.protocol() != ureq::ProxyProtocol::Http {
        return Err(ureq::Error::ConnectProxyFailed(
            "not an HTTP CONNECT proxy".into(),
        ));
    }
    let budget = Budget::of(details);
    let proxy_addrs = details
        .resolver
        .resolve(proxy.uri(), details.config, details.timeout)?;
    let mut last = ureq::Error::ConnectProxyFailed("no address to ask the proxy for".into());
    for target in details.addrs.iter() {
        let stream = connect(&proxy_addrs, &budget, details)?;
        match ask(proxy, &stream, *target, &budget, details)? {
            Answer::Open => return Ok(stream),
            Answer::Unreachable(code) => {
                last = ureq::Error::ConnectProxyFailed(format!("the proxy answered {code}"))
            }
        }
    }
    Err(last)
}

/// What a proxy said to CONNECT, when it did not refuse outright.
enum Answer {
    Open,
    /// A 5xx: the proxy could not reach this address; another may do.
    Unreachable(u16),
}

/// Ask the proxy on `stream` for a tunnel to `target`. Errors quote the status code only:
/// what else a proxy writes is not shown to the roles that call the functions.
fn ask(
    proxy: &ureq::Proxy,
    stream: &TcpStream,
    target: SocketAddr,
    budget: &Budget,
    details: &ConnectionDetails,
) -> Result<Answer, ureq::Error> {
    let failed = |why: String| ureq::Error::ConnectProxyFailed(why);
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(user) = proxy.username() {
        use base64::Engine as _;
        let pair = format!("{user}:{}", proxy.password().unwrap_or_default());
        head.push_str("Proxy-Authorization: Basic ");
        head.push_str(&base64::engine::general_purpose::STANDARD.encode(pair));
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.set_write_timeout(budget.left(details)?)?;
    let mut writer = stream;
    writer
        .write_all(head.as_bytes())
        .map_err(|e| io_error(e, details.timeout))?;
    // Byte by byte up to the blank line: what follows it is the tunnel's, not the proxy's.
    let mut answer = Vec::with_capacity(128);
    let mut byte = [0u8];
    while !(answer.ends_with(b"\r\n\r\n") || answer.ends_with(b"\n\n")) {
        if answer.len() >= MAX_PROXY_ANSWER {
            return Err(failed("the proxy's answer to CONNECT is too long".into()));
        }
        stream.set_read_timeout(budget.left(details)?)?;
        let mut reader = stream;
        match reader.read(&mut byte) {
            Ok(0) => return Err(failed("the proxy closed the connection".into())),
            Ok(_) => answer.push(byte[0]),
            Err(e) => return Err(io_error(e, details.timeout)),
        }
    }
    let code = answer
        .strip_prefix(b"HTTP/1.")
        .and_then(|rest| rest.get(1..5))
        .filter(|c| c[0] == b' ' && c[1..].iter().all(u8::is_ascii_digit))
        .map(|c| {
            c[1..]
                .iter()
                .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'))
        })
        .ok_or_else(|| failed("the proxy's answer to CONNECT is not HTTP".into()))?;
    match code {
        200..=299 => {
            // A new transport starts from a socket without timeouts.
            stream.set_read_timeout(None)?;
            stream.set_write_timeout(None)?;
            Ok(Answer::Open)
        }
        500..=599 => Ok(Answer::Unreachable(code)),
        _ => Err(failed(format!("the proxy answered {code}"))),
    }
}

/// An error about this address only: the next one may work.
fn address_specific(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::NetworkDown
            | io::ErrorKind::AddrNotAvailable
    )
}

/// One connection: ureq's buffers, the request bytes not sent yet, and the timeouts the socket
/// has now (None: none, as a new socket has).
pub struct TcpTransport {
    stream: Arc<TcpStream>,
    buffers: LazyBuffers,
    pending: Vec<u8>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl TcpTransport {
    pub fn new(stream: Arc<TcpStream>, buffers: LazyBuffers) -> Self {
        TcpTransport {
            stream,
            buffers,
            pending: Vec::new(),
            read_timeout: None,
            write_timeout: None,
        }
    }

    /// Writes what is pending, in one call unless the socket takes less.
    fn flush(&mut self, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = checked(timeout.for_write())?;
        let stream = Arc::clone(&self.stream);
        set_timeout(&mut self.write_timeout, timeout, |t| {
            stream.set_write_timeout(t)
        })?;
        let result = (&*self.stream).write_all(&self.pending);
        self.pending.clear();
        // An idle pooled connection keeps no more than a usual request's worth.
        self.pending.shrink_to(KEEP);
        result.map_err(|e| io_error(e, timeout))
    }
}

/// `timeout` less what `spent` used of it: writing the request counts against the wait for the
/// answer, as it does when ureq computes the next phase's budget after a write.
fn less(timeout: NextTimeout, spent: Duration) -> Result<NextTimeout, ureq::Error> {
    if timeout.after.is_not_happening() {
        return Ok(timeout);
    }
    let after = timeout.after.saturating_sub(spent);
    checked(NextTimeout {
        after: UreqDuration::Exact(after),
        ..timeout
    })
}

/// A timeout that has run out is an error before any I/O (as ureq's own transport does).
fn checked(timeout: NextTimeout) -> Result<NextTimeout, ureq::Error> {
    if timeout.after.is_zero() {
        Err(ureq::Error::Timeout(timeout.reason))
    } else {
        Ok(timeout)
    }
}

/// `d` rounded up to a multiple of [`GRAIN`] (a day or more is left as it is).
pub fn rounded(d: Duration) -> Duration {
    if d.as_secs() >= 86_400 {
        return d;
    }
    let grain = GRAIN.as_nanos();
    Duration::from_nanos((d.as_nanos().div_ceil(grain) * grain) as u64)
}

/// Sets the socket's timeout to `timeout` rounded up, unless it has that already.
fn set_timeout(
    current: &mut Option<Duration>,
    timeout: NextTimeout,
    set: impl FnOnce(Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    let wanted = timeout.not_zero().map(|d| rounded(*d));
    if wanted != *current {
        set(wanted)?;
        *current = wanted;
    }
    Ok(())
}

/// A socket timeout shows as WouldBlock (or TimedOut): ureq's timeout error, with its reason.
fn io_error(e: io::Error, timeout: NextTimeout) -> ureq::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ureq::Error::Timeout(timeout.reason),
        _ => ureq::Error::Io(e),
    }
}

impl Transport for TcpTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        checked(timeout.for_write())?;
        self.pending
            .extend_from_slice(&self.buffers.output()[..amount]);
        if self.pending.len() >= FLUSH_AT {
            self.flush(timeout)?;
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = if self.pending.is_empty() {
            timeout
        } else {
            let started = Instant::now();
            self.flush(timeout)?;
            less(timeout, started.elapsed())?
        };
        let timeout = checked(timeout.for_read())?;
        let stream = Arc::clone(&self.stream);
        set_timeout(&mut self.read_timeout, timeout, |t| {
            stream.set_read_timeout(t)
        })?;
        let started = Instant::now();
        let input = self.buffers.input_append_buf();
        let read = loop {
            match (&*stream).read(input) {
                // A signal: read again in the time left (I/O threads block signals; others may not).
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if let Some(total) = timeout.not_zero() {
                        let left = total.saturating_sub(started.elapsed());
                        if left.is_zero() {
                            break Err(io::ErrorKind::TimedOut.into());
                        }
                        // The cached value is now wrong: the next read sets the full one again.
                        stream.set_read_timeout(Some(left))?;
                        self.read_timeout = Some(Duration::ZERO);
                    }
                }
                other => break other,
            }
        };
        let amount = read.map_err(|e| io_error(e, timeout))?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        if !self.pending.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        // SAFETY: the descriptor is open for as long as self.stream is; recv writes at most one
        // byte into `byte`, and MSG_PEEK leaves it in the socket.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                byte.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        // Open: nothing to read and no error. Bytes nobody asked for, an end of stream or an
        // error: not to be reused.
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }
}

impl fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpTransport")
            .field("peer", &self.stream.peer_addr().ok())
            .field("pending", &self.pending.len())
            .finish()
    }
}

#[cfg(test)]
#[path = "tcp_tests.rs"]
mod tests;
