//! The local API server: one thread accepting on the Unix socket, one short
//! thread per connection (requests are rare: pod attach/detach, the CLI).
//!
//! Bounded so that a client cannot take the agent down: at most
//! [`MAX_CONNECTIONS`] connections at once (one more is accepted, answered
//! with one error line and closed at once — a clear "try again" beats a
//! client hanging in the listen queue, and the refusal costs no thread); a
//! request line of at most [`MAX_REQUEST`] bytes (a longer one is answered
//! with an error and the connection closed, without reading the rest); a
//! request line must arrive whole within the idle timeout (an idle
//! connection, or one trickling a byte now and then, is closed then); a reply
//! that cannot be written within [`WRITE_TIMEOUT`] ends its connection.
//! Accept errors (EMFILE when out of descriptors) back off from 10 ms to 1 s
//! and are logged at most once per [`LOG_INTERVAL`] with a count.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::backoff::Backoff;
use super::lograte::LogRate;
use super::pod_error::PodError;
use super::Agent;
use crate::api::{ErrorKind, Request, Response};

/// Connections served at once; more are refused with an error line.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest request line, in bytes (without its newline).
pub const MAX_REQUEST: usize = 1 << 20;
/// How long a reply may wait for the client to read it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A repeated error is logged at most once per this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The accept loop's backoff after an error: from 10 ms, doubling, to 1 s.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Binds the socket (mode 0600: root's API) and serves until the process
/// ends, closing a connection that sends nothing for `idle_timeout`.
pub fn serve(agent: Arc<Agent>, idle_timeout: Duration) -> Result<std::thread::JoinHandle<()>> {
    let path = agent.info.socket.clone();
    super::claim_socket(&path)?;
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    agent
        .api_serving
        .store(true, std::sync::atomic::Ordering::Release);
    let h = std::thread::Builder::new()
        .name("twill-api".into())
        .spawn(move || accept_loop(&agent, &listener, idle_timeout))?;
    Ok(h)
}

fn accept_loop(agent: &Arc<Agent>, listener: &UnixListener, idle_timeout: Duration) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut backoff = Backoff::new(ACCEPT_BACKOFF.0, ACCEPT_BACKOFF.1);
    let mut accept_errors = LogRate::new(LOG_INTERVAL);
    let mut refusals = LogRate::new(LOG_INTERVAL);
    let mut spawn_errors = LogRate::new(LOG_INTERVAL);
    loop {
        let s = match listener.accept() {
            Ok((s, _)) => {
                backoff.reset();
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if let Some(n) = accept_errors.hit(Instant::now()) {
                    tracing::warn!(
                        error = %e,
                        "API accept failed ({} more in the last {} s)",
                        n.count,
                        n.over.as_secs()
                    );
                }
                std::thread::sleep(backoff.next_delay());
                continue;
            }
        };
        let Some(slot) = Slot::take(&open) else {
            if let Some(n) = refusals.hit(Instant::now()) {
                tracing::warn!(
                    max = MAX_CONNECTIONS,
                    "API connection refused: too many open ({} more in the last {} s)",
                    n.count,
                    n.over.as_secs()
                );
            }
            refuse(&s);
            continue;
        };
        let a = agent.clone();
        let spawned = std::thread::Builder::new()
            .name("twill-api-conn".into())
            .spawn(move || {
                let _slot = slot;
                handle(&a, &s, idle_timeout);
            });
        if let Err(e) = spawned {
            // The closure, with its socket and slot, is dropped: closed and freed.
            if let Some(n) = spawn_errors.hit(Instant::now()) {
                tracing::warn!(
                    error = %e,
                    "API connection thread not started ({} more in the last {} s)",
                    n.count,
                    n.over.as_secs()
                );
            }
        }
    }
}

/// One of the [`MAX_CONNECTIONS`] places, given back on drop.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_CONNECTIONS).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers a connection over the limit with one error line, never
/// blocking the accept loop, and closes it.
fn refuse(s: &UnixStream) {
    let resp = Response::err_kind(
        ErrorKind::NotReady,
        format!("too many API connections (at most {MAX_CONNECTIONS} at once); try again"),
    );
    if s.set_nonblocking(true).is_ok() {
        let _ = (&*s).write_all(&encode(&resp));
    }
}

/// How a request line ended.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line (its newline, if any, still in the buffer).
    Complete,
    /// The connection ended with nothing more.
    Eof,
    /// More than `limit` bytes without a newline.
    TooLong,
}

/// Reads one line of at most `limit` bytes (plus its newline) into `buf`;
/// never buffers more than `limit + 1` bytes. A last line without a newline
/// before the end of the stream is complete.
fn read_line_limited(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let max = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let n = r.take(max).read_until(b'\n', buf)?;
    Ok(if n == 0 {
        Line::Eof
    } else if buf.last() == Some(&b'\n') || buf.len() <= limit {
        Line::Complete
    } else {
        Line::TooLong
    })
}

fn encode(resp: &Response) -> Vec<u8> {
    let mut out =
        serde_json::to_vec(resp).unwrap_or_else(|_| br#"{"ok":false,"error":"encoding"}"#.to_vec());
    out.push(b'\n');
    out
}

/// Reads from the connection until a deadline: each read waits at most
/// what is left of it, so a client trickling a byte now and then cannot
/// hold a connection past it.
struct DeadlineReader<'a> {
    s: &'a UnixStream,
    until: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.s.set_read_timeout(Some(left))?;
        (&*self.s).read(buf)
    }
}

/// Serves one connection: each request line must arrive whole within
/// `idle_timeout` of when the agent starts waiting for it (so an idle
/// connection and one that trickles a line alike are closed then).
fn handle(agent: &Agent, s: &UnixStream, idle_timeout: Duration) {
    // A failure here would leave the connection unbounded: don't serve it.
    if s.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
        return;
    }
    let mut r = BufReader::new(DeadlineReader {
        s,
        until: Instant::now() + idle_timeout,
    });
    let mut w = s;
    let mut line = Vec::new();
    loop {
        r.get_mut().until = Instant::now() + idle_timeout;
        // An error is the deadline or a reset: either way, the end.
        let Ok(end) = read_line_limited(&mut r, &mut line, MAX_REQUEST) else {
            return;
        };
        let resp = match end {
            Line::Eof => return,
            Line::TooLong => {
                let resp = Response::err_kind(
                    ErrorKind::InvalidArgument,
                    format!("request line longer than {MAX_REQUEST} bytes"),
                );
                let _ = w.write_all(&encode(&resp));
                return;
            }
            Line::Complete => {
                let text = String::from_utf8_lossy(&line);
                if text.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Request>(&text) {
                    // The connection becomes the capture's stream.
                    Ok(Request::Capture {
                        target,
                        count,
                        snaplen,
                    }) => return super::capture::serve(agent, s, &target, count, snaplen),
                    Ok(req) => dispatch(agent, req),
                    Err(e) => Response::err(format!("bad request: {e}")),
                }
            }
        };
        if line.capacity() > 64 << 10 {
            line = Vec::new();
        }
        if w.write_all(&encode(&resp)).is_err() {
            return;
        }
    }
}

fn dispatch(agent: &Agent, req: Request) -> Response {
    let r = match req {
        Request::Attach(a) => agent.attach(&a).map(Response::ok),
        Request::Detach { id } => agent
            .detach(&id)
            .map(|found| Response::ok(serde_json::json!({ "id": id, "found": found }))),
        Request::List => agent.list().map(Response::ok),
        Request::Status => Ok(Response::ok(agent.status_json())),
        Request::Counters => agent.counters_json().map(Response::ok),
        Request::Bgp => match agent.bgp_json() {
            serde_json::Value::Null => Err(anyhow::anyhow!(
                "BGP is not configured on this node (no `bgp` block in its configuration)"
            )),
            v => Ok(Response::ok(v)),
        },
        Request::Services => Ok(Response::ok(agent.services_json())),
        Request::Fdb => agent.fdb_view().map(Response::ok),
        Request::Nodes => Ok(Response::ok(agent.nodes_view())),
        Request::Routes => Ok(Response::ok(agent.routes_view())),
        Request::Ports => agent.ports_view().map(Response::ok),
        Request::Check { id } => agent.check(&id).map(Response::ok),
        Request::Gc { network, valid } => agent
            .gc(&network, &valid)
            .map(|released| Response::ok(serde_json::json!({ "released": released }))),
        // `handle` serves it, on its connection.
        Request::Capture { .. } => Err(anyhow::anyhow!("capture is not a one-line request")),
    };
    r.unwrap_or_else(|e| Response::err_kind(kind_of(&e), format!("{e:#}")))
}

/// The kind of the first [`PodError`] in the error's chain; `Internal` if none.
fn kind_of(e: &anyhow::Error) -> ErrorKind {
    e.chain()
        .find_map(|c| c.downcast_ref::<PodError>())
        .map_or(ErrorKind::Internal, PodError::kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8], limit: usize) -> Vec<(Line, Vec<u8>)> {
        let mut r = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let end = read_line_limited(&mut r, &mut buf, limit).unwrap_or(Line::Eof);
            let stop = end != Line::Complete;
            out.push((end, buf.clone()));
            if stop {
                return out;
            }
        }
    }

    #[test]
    fn lines_up_to_the_limit_pass_and_a_longer_one_stops_at_limit_plus_one() {
        let got = read_all(b"12345\n123\n1234567890", 5);
        assert_eq!(
            got,
            vec![
                (Line::Complete, b"12345\n".to_vec()),
                (Line::Complete, b"123\n".to_vec()),
                (Line::TooLong, b"123456".to_vec()),
            ]
        );
    }

    #[test]
    fn a_last_line_without_newline_is_complete() {
        let got = read_all(b"ab\ncd", 5);
        assert_eq!(
            got,
            vec![
                (Line::Complete, b"ab\n".to_vec()),
                (Line::Complete, b"cd".to_vec()),
                (Line::Eof, Vec::new()),
            ]
        );
    }
}
