//! A plain HTTP/1.0 GET from inside a lab namespace: what a scraper or the
//! kubelet's probe asks of `--metrics-addr`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::Netns;

/// A response: its status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: String,
}

/// `GET path` from `addr`, in `ns`; the whole response within 10 s.
pub fn http_get(ns: &Netns, addr: SocketAddr, path: &str) -> Result<HttpResponse> {
    ns.run_in(|| http_get_here(addr, path))?
}

/// [`http_get`] from the calling thread's own namespace (a thread that
/// joined one for good, such as the benchmark's scraper).
pub fn http_get_here(addr: SocketAddr, path: &str) -> Result<HttpResponse> {
    let timeout = Duration::from_secs(10);
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).context("the response is not UTF-8")?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no end of headers in {text:?}");
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    let content_type = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-type")
            .then(|| v.trim().to_owned())
    });
    Ok(HttpResponse {
        status,
        content_type,
        body: body.to_owned(),
    })
}
