//! TCP endpoints living inside container/client namespaces, driven from the test thread:
//! an echo server, a client connection, and a tiny HTTP server that records who
//! connected (to see masquerading).

use crate::netns::in_netns;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// Binds a listener in namespace `ns`; the socket stays there whichever thread uses it.
pub fn listen_in(ns: &str, ip: Ipv4Addr, port: u16) -> Result<TcpListener> {
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
    in_netns(ns, move || TcpListener::bind(addr))?.with_context(|| format!("bind {addr} in {ns}"))
}

/// Connects from namespace `ns` to `ip:port`.
pub fn connect_in(ns: &str, ip: Ipv4Addr, port: u16) -> Result<TcpStream> {
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
    let stream = in_netns(ns, move || TcpStream::connect_timeout(&addr, IO_TIMEOUT))?
        .with_context(|| format!("connect {addr} from {ns}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Writes `payload` and reads the same number of bytes back; they must be identical.
pub fn echo_roundtrip(stream: &mut TcpStream, payload: &[u8]) -> Result<()> {
    stream.write_all(payload)?;
    let mut back = vec![0u8; payload.len()];
    stream
        .read_exact(&mut back)
        .context("reading echo (connection reset or data path broken?)")?;
    if back != payload {
        bail!(
            "echo mismatch: sent {} bytes, got different data",
            payload.len()
        );
    }
    Ok(())
}

/// Accepts connections on a background thread until dropped; each connection is served
/// by `serve` on its own thread.
struct Acceptor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    fn start<F>(listener: TcpListener, serve: F) -> Result<Self>
    where
        F: Fn(TcpStream, SocketAddr, &AtomicBool) + Send + Sync + 'static,
    {
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let serve = Arc::new(serve);
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, peer)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                        let (serve, stop) = (serve.clone(), stop2.clone());
                        std::thread::spawn(move || serve(conn, peer, &stop));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(ACCEPT_POLL)
                    }
                    Err(_) => std::thread::sleep(ACCEPT_POLL),
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// TCP echo server inside a namespace.
pub struct EchoServer {
    pub addr: SocketAddrV4,
    _acceptor: Acceptor,
}

impl EchoServer {
    pub fn start(ns: &str, ip: Ipv4Addr, port: u16) -> Result<Self> {
        let listener = listen_in(ns, ip, port)?;
        let acceptor = Acceptor::start(listener, |mut conn, _peer, stop| {
            let mut buf = [0u8; 16 * 1024];
            while !stop.load(Ordering::SeqCst) {
                match conn.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) if is_timeout(&e) => continue,
                    Err(_) => return,
                }
            }
        })?;
        Ok(Self {
            addr: SocketAddrV4::new(ip, port),
            _acceptor: acceptor,
        })
    }
}

/// Minimal HTTP server inside a namespace that answers every request with `ok` and
/// records the peer address of each connection (what the server "sees").
pub struct HttpProbe {
    pub addr: SocketAddrV4,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    _acceptor: Acceptor,
}

pub const PROBE_BODY: &str = "netd-tests-probe-ok";

impl HttpProbe {
    pub fn start(ns: &str, ip: Ipv4Addr, port: u16) -> Result<Self> {
        let listener = listen_in(ns, ip, port)?;
        let peers = Arc::new(Mutex::new(Vec::new()));
        let peers2 = peers.clone();
        let acceptor = Acceptor::start(listener, move |mut conn, peer, stop| {
            peers2.lock().unwrap().push(peer);
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the request head (to its blank line) before answering, like a server.
            while !stop.load(Ordering::SeqCst) && !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                    Err(e) if is_timeout(&e) => continue,
                    Err(_) => return,
                }
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PROBE_BODY}",
                PROBE_BODY.len()
            );
            let _ = conn.write_all(resp.as_bytes());
        })?;
        Ok(Self {
            addr: SocketAddrV4::new(ip, port),
            peers,
            _acceptor: acceptor,
        })
    }

    /// Source addresses of the connections accepted so far.
    pub fn peer_ips(&self) -> Vec<Ipv4Addr> {
        self.peers
            .lock()
            .unwrap()
            .iter()
            .filter_map(|p| match p {
                SocketAddr::V4(a) => Some(*a.ip()),
                SocketAddr::V6(_) => None,
            })
            .collect()
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

/// Parses `a.b.c.d` or `a.b.c.d/len` into the address part.
pub fn ip_of(cidr: &str) -> Result<Ipv4Addr> {
    cidr.split('/')
        .next()
        .ok_or_else(|| anyhow!("empty address"))?
        .parse()
        .with_context(|| format!("bad address {cidr:?}"))
}
