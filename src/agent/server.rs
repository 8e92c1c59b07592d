//! The local API server: one thread accepting on the Unix socket, one short
//! thread per connection (requests are rare: pod attach/detach, the CLI).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use anyhow::{Context, Result};

use super::pod_error::PodError;
use super::Agent;
use crate::api::{ErrorKind, Request, Response};

/// Binds the socket (mode 0600: root's API) and serves until the process ends.
pub fn serve(agent: Arc<Agent>) -> Result<std::thread::JoinHandle<()>> {
    let path = agent.info.socket.clone();
    super::claim_socket(&path)?;
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    let h = std::thread::Builder::new()
        .name("twill-api".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        let a = agent.clone();
                        let _ = std::thread::Builder::new()
                            .name("twill-api-conn".into())
                            .spawn(move || handle(&a, s));
                    }
                    Err(e) => tracing::warn!(error = %e, "API accept failed"),
                }
            }
        })?;
    Ok(h)
}

fn handle(agent: &Agent, s: UnixStream) {
    let Ok(w) = s.try_clone() else { return };
    let mut w = w;
    let r = BufReader::new(s);
    for line in r.lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => dispatch(agent, req),
            Err(e) => Response::err(format!("bad request: {e}")),
        };
        let mut out = serde_json::to_string(&resp)
            .unwrap_or_else(|_| r#"{"ok":false,"error":"encoding"}"#.into());
        out.push('\n');
        if w.write_all(out.as_bytes()).is_err() {
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
        Request::Services => Ok(Response::ok(agent.services_json())),
        Request::Check { id } => agent.check(&id).map(Response::ok),
        Request::Gc { network, valid } => agent
            .gc(&network, &valid)
            .map(|released| Response::ok(serde_json::json!({ "released": released }))),
    };
    r.unwrap_or_else(|e| Response::err_kind(kind_of(&e), format!("{e:#}")))
}

/// The kind of the first [`PodError`] in the error's chain; `Internal` if none.
fn kind_of(e: &anyhow::Error) -> ErrorKind {
    e.chain()
        .find_map(|c| c.downcast_ref::<PodError>())
        .map_or(ErrorKind::Internal, PodError::kind)
}
