//! A TCP proxy on 127.0.0.1 that forwards to an emulator and counts the HTTP requests it
//! carries (request lines ending in " HTTP/1.1"), keep-alive connections included.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct CountingProxy {
    pub url: String,
    requests: Arc<AtomicUsize>,
}

impl CountingProxy {
    pub fn start(upstream: &str) -> CountingProxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let counter = counter.clone();
                std::thread::spawn(move || pipe(client, server, Some(&counter)));
                std::thread::spawn(move || pipe(s2, c2, None));
            }
        });
        CountingProxy { url, requests }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Copy `from` to `to` until either closes, counting request lines when `count` is given.
fn pipe(mut from: TcpStream, mut to: TcpStream, count: Option<&AtomicUsize>) {
    const MARK: &[u8] = b" HTTP/1.1\r\n";
    let mut buf = [0u8; 16 * 1024];
    // The end of the previous read, so that a mark cut in two is still seen.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(count) = count {
            let mut seen = std::mem::take(&mut tail);
            seen.extend_from_slice(&buf[..n]);
            count.fetch_add(
                seen.windows(MARK.len()).filter(|w| *w == MARK).count(),
                Ordering::SeqCst,
            );
            tail = seen[seen.len().saturating_sub(MARK.len() - 1)..].to_vec();
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}
