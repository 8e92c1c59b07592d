//! The agent's side of `twill capture`: checks who asks, starts a capture
//! on the dataplane ([`vswitch::capture`]), and streams its records to the
//! client as pcap in frames ([`crate::api::capture_frame`]) until the count
//! is reached or the client closes or shuts down its sending half. The
//! capture is a [`vswitch::capture::Session`]: whatever ends the stream (a
//! write error, a vanished client, a panic), dropping it unhooks the
//! capture. No per-packet work happens here but the copy to the socket.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use vswitch::capture::{pcap, Target};
use vswitch::core::PortId;

use super::Agent;
use crate::api::{capture_frame, CaptureEnd, CaptureTarget, Response};

/// How often the client is looked at (has it closed?) while records flow
/// or not.
const CLIENT_POLL: Duration = Duration::from_millis(100);

/// Serves a `capture` request on `s`: an error line, or the OK line, the
/// stream and its end.
pub(super) fn serve(
    agent: &Agent,
    s: &UnixStream,
    target: &CaptureTarget,
    count: Option<u64>,
    snaplen: u32,
) {
    let session = allowed(agent, s)
        .and_then(|()| resolve(agent, target))
        .and_then(|t| {
            agent
                .dataplane()
                .captures()
                .start(t, snaplen)
                .map_err(anyhow::Error::new)
        });
    let mut w = s;
    let session = match session {
        Ok(c) => c,
        Err(e) => {
            let _ = w.write_all(&line(&Response::err(format!("{e:#}"))));
            return;
        }
    };
    tracing::info!(?target, ?count, snaplen, "capture started");
    let ok = Response::ok(serde_json::json!({ "target": target, "snaplen": snaplen }));
    let mut sent = 0u64;
    let streamed = w
        .write_all(&line(&ok))
        .and_then(|()| capture_frame(&mut w, &[&pcap::file_header(snaplen)]))
        .and_then(|()| {
            let mut checked = Instant::now();
            while count.is_none_or(|c| sent < c) {
                if let Some(r) = session.recv_timeout(CLIENT_POLL) {
                    capture_frame(&mut w, &[&pcap::record_header(&r), &r.data])?;
                    sent += 1;
                }
                if checked.elapsed() >= CLIENT_POLL {
                    checked = Instant::now();
                    if client_done(s)? {
                        break;
                    }
                }
            }
            Ok(())
        });
    let end = CaptureEnd {
        captured: sent,
        dropped: session.dropped(),
    };
    // Unhooked before the end is written: a slow client does not keep it.
    drop(session);
    let finished = streamed
        .and_then(|()| capture_frame(&mut w, &[]))
        .and_then(|()| w.write_all(&line(&end)));
    match finished {
        Ok(()) => tracing::info!(?target, end.captured, end.dropped, "capture ended"),
        Err(e) => {
            tracing::info!(?target, end.captured, end.dropped, error = %e, "capture ended: client gone")
        }
    }
}

/// Only root or the owner of the socket file may capture: the socket's
/// mode keeps others out already, this holds if it is ever loosened.
fn allowed(agent: &Agent, s: &UnixStream) -> Result<()> {
    let peer = getsockopt(s, PeerCredentials).context("reading the client's credentials")?;
    let owner = std::fs::metadata(&agent.info.socket)
        .with_context(|| format!("reading the owner of {}", agent.info.socket.display()))?
        .uid();
    if peer.uid() != 0 && peer.uid() != owner {
        bail!(
            "permission denied: only root or the owner of {} (uid {owner}) may capture; you are uid {}",
            agent.info.socket.display(),
            peer.uid()
        );
    }
    Ok(())
}

/// The dataplane's target for the request's.
fn resolve(agent: &Agent, target: &CaptureTarget) -> Result<Target> {
    Ok(match target {
        CaptureTarget::Tunnel => Target::Tunnel,
        CaptureTarget::Pod(id) => {
            Target::Port(agent.pod_port(id)?.with_context(|| {
                format!("pod {id:?} has no port now (its interface is missing)")
            })?)
        }
        CaptureTarget::Port(name) => {
            let stats = agent
                .dataplane()
                .stats()
                .context("reading the dataplane's ports")?;
            let Some(p) = stats.ports.iter().find(|p| &p.name == name) else {
                let names: Vec<&str> = stats.ports.iter().map(|p| p.name.as_str()).collect();
                bail!("no port named {name:?} (ports: {})", names.join(", "));
            };
            Target::Port(PortId(p.id))
        }
    })
}

/// Whether the client closed or shut down its sending half (or sent
/// something, which a capture does not expect): read without waiting.
fn client_done(s: &UnixStream) -> std::io::Result<bool> {
    s.set_nonblocking(true)?;
    let mut b = [0u8; 64];
    let r = (&*s).read(&mut b);
    s.set_nonblocking(false)?;
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

fn line(v: &impl serde::Serialize) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    out
}
