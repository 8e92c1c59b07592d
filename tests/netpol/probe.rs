//! Servers and probes inside the pods' namespaces (upstream's agnhost
//! `serve-hostname` and `connect`, as sockets of this process).
//!
//! Every pod serves ports 80 and 81 on TCP and UDP. A TCP server greets
//! each connection with `ns/pod:port` and then echoes; a UDP server answers
//! each datagram with `ns/pod:port ` and the datagram. Denied traffic is
//! dropped silently, so a probe's "blocked" is a timeout: a TCP probe
//! connects with a [`PROBE_TIMEOUT`] and reads the greeting; a UDP probe
//! sends a datagram (again halfway through the timeout) and waits for the
//! answer. A probe that reaches the wrong server is an error, not a
//! "blocked".

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use twill_lab::{udp_socket, Netns};

use super::model::{Protocol, PORTS};

/// How long a probe waits before it calls the destination unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The servers of one pod; dropping it stops them.
#[derive(Debug)]
pub struct PodServers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl PodServers {
    /// Binds ports 80 and 81 on TCP and UDP at `ip` inside `ns`, answering
    /// as `name` (`x/a`).
    pub fn start(ns: &Netns, ip: Ipv4Addr, name: &str) -> Result<PodServers> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut servers = PodServers {
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for port in PORTS {
            let addr = SocketAddrV4::new(ip, port);
            let tcp = ns
                .run_in(|| TcpListener::bind(addr))?
                .with_context(|| format!("binding TCP {addr} in {}", ns.name()))?;
            tcp.set_nonblocking(true)?;
            let (s, id) = (stop.clone(), format!("{name}:{port}"));
            servers
                .threads
                .push(std::thread::spawn(move || serve_tcp(&tcp, &id, &s)));
            let udp = udp_socket(ns, addr)?;
            udp.set_read_timeout(Some(Duration::from_millis(100)))?;
            let (s, id) = (stop.clone(), format!("{name}:{port}"));
            servers
                .threads
                .push(std::thread::spawn(move || serve_udp(&udp, &id, &s)));
        }
        Ok(servers)
    }
}

impl Drop for PodServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_tcp(listener: &TcpListener, id: &str, stop: &Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                let (id, stop) = (id.to_owned(), stop.clone());
                std::thread::spawn(move || echo(conn, &id, &stop));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Greets, then echoes until EOF, an error or the stop flag.
fn echo(mut conn: TcpStream, id: &str, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    if conn.write_all(format!("{id}\n").as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

fn serve_udp(sock: &UdpSocket, id: &str, stop: &AtomicBool) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let mut answer = format!("{id} ").into_bytes();
            answer.extend_from_slice(&buf[..n]);
            let _ = sock.send_to(&answer, peer);
        }
    }
}

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The expected server answered.
    Connected,
    /// Nothing came back within the timeout (or the connection was refused).
    Blocked(String),
    /// Somebody else answered: a bug in the path, not a policy verdict.
    Wrong(String),
}

impl Outcome {
    /// Whether the probe got through to the expected server.
    pub fn connected(&self) -> bool {
        matches!(self, Outcome::Connected)
    }
}

/// One probe from `from` (whose address is `from_ip`) to `to`, expecting
/// the server that calls itself `expect_id` (`y/b:80`).
pub fn probe(
    from: &Netns,
    from_ip: Ipv4Addr,
    to: SocketAddrV4,
    protocol: Protocol,
    expect_id: &str,
) -> Outcome {
    let got = match protocol {
        Protocol::Tcp => probe_tcp(from, to),
        Protocol::Udp => probe_udp(from, from_ip, to),
    };
    match got {
        Ok(id) if id == expect_id => Outcome::Connected,
        Ok(id) => Outcome::Wrong(format!("{to} answered as {id:?}, not {expect_id:?}")),
        Err(e) => Outcome::Blocked(format!("{e:#}")),
    }
}

/// Connects and reads the greeting.
fn probe_tcp(from: &Netns, to: SocketAddrV4) -> Result<String> {
    from.run_in(move || -> Result<String> {
        let s = TcpStream::connect_timeout(&to.into(), PROBE_TIMEOUT)
            .with_context(|| format!("connecting to {to}"))?;
        s.set_read_timeout(Some(PROBE_TIMEOUT))?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .context("reading the greeting")?;
        Ok(line.trim().to_owned())
    })?
}

/// Sends a datagram (twice, half a timeout apart) and waits for the answer.
fn probe_udp(from: &Netns, from_ip: Ipv4Addr, to: SocketAddrV4) -> Result<String> {
    let sock = udp_socket(from, SocketAddrV4::new(from_ip, 0))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let token = format!("probe-{}", sock.local_addr()?.port());
    let mut sent = 0;
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            bail!("no UDP answer from {to} within {PROBE_TIMEOUT:?}");
        }
        if sent < 2 && (sent == 0 || deadline - now <= PROBE_TIMEOUT / 2) {
            sock.send_to(token.as_bytes(), to)?;
            sent += 1;
        }
        let wait = if sent < 2 {
            (deadline - now).saturating_sub(PROBE_TIMEOUT / 2)
        } else {
            deadline - now
        };
        sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if src != SocketAddr::V4(to) {
                    bail!("answer from {src}, not {to}: {text:?}");
                }
                if let Some(id) = text.strip_suffix(&format!(" {token}")) {
                    return Ok(id.to_owned());
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e).context("receiving"),
        }
    }
}

/// A TCP connection kept open across a policy change.
#[derive(Debug)]
pub struct Established {
    stream: TcpStream,
    /// `from -> to`, for messages.
    pub label: String,
}

impl Established {
    /// Connects from `from` to `to` and checks the greeting is `expect_id`.
    pub fn open(from: &Netns, to: SocketAddrV4, expect_id: &str, label: &str) -> Result<Self> {
        let stream = from
            .run_in(move || TcpStream::connect_timeout(&to.into(), PROBE_TIMEOUT))?
            .with_context(|| format!("{label}: connecting to {to}"))?;
        stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
        let mut line = String::new();
        BufReader::new(stream.try_clone()?)
            .read_line(&mut line)
            .with_context(|| format!("{label}: reading the greeting"))?;
        if line.trim() != expect_id {
            bail!("{label}: greeted by {line:?}, not {expect_id:?}");
        }
        Ok(Established {
            stream,
            label: label.to_owned(),
        })
    }

    /// Whether a message still makes the round trip within twice the probe
    /// timeout (a dropped segment is retransmitted once in that time).
    pub fn alive(&mut self, round: u32) -> bool {
        let msg = format!("round {round}\n");
        if self.stream.write_all(msg.as_bytes()).is_err() {
            return false;
        }
        let _ = self.stream.set_read_timeout(Some(PROBE_TIMEOUT * 2));
        let mut back = vec![0u8; msg.len()];
        self.stream.read_exact(&mut back).is_ok() && back == msg.as_bytes()
    }
}
