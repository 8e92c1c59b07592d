//! [`ControllerClient`]: the [`LeaseStore`] and the [`ObjectStore`] of a
//! node whose control plane is twill's embedded controller, spoken to over
//! its HTTP/JSON API (see [`crate::controller`]).
//!
//! HTTP/1.1, or HTTPS (rustls) for an `https://` address with a CA file
//! ([`ClientTls`]: that CA is the only root trusted, the system's are not
//! read) and optionally a client certificate; a bearer token on every
//! request, proxies from the environment ignored. A failed handshake (the
//! controller's certificate not signed by the CA, ours refused) is
//! [`StoreError::Tls`], saying what to check. Errors map back to [`StoreError`]: a connection
//! that fails or times out, and 5xx answers, are
//! [`StoreError::Unavailable`] (retry); 401 is [`StoreError::Unauthorized`];
//! 409 is [`StoreError::LeaseLost`]; 410 is [`StoreError::Compacted`]; 507
//! is [`StoreError::OutOfSubnets`] (or [`StoreError::TooManyObjects`]); 400
//! `invalid_object` is [`StoreError::InvalidObject`]; deleting an object
//! that is not there is `Ok(false)`; anything unexpected is
//! [`StoreError::Protocol`].
//!
//! A watch stream (of leases or of objects: one reader for both) yields the
//! controller's events and skips its heartbeats.
//! It ends with one [`StoreError::Unavailable`] item when the connection
//! breaks, when the controller ends the stream (it stops, or this watcher
//! lagged), or when nothing (not even a heartbeat) arrives within
//! [`ClientOptions::heartbeat_timeout`]; with [`StoreError::Protocol`] when
//! a line cannot be read.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::controller::wire::{
    ErrorBody, ErrorCode, PutAnswer, RenewRequest, MAX_OBJECT_BYTES, PREFIX,
};
use crate::lease::subnet_key;
use crate::netconf::NetConf;
use crate::objects::{ObjectEvent, ObjectKey, ObjectList, ObjectStore, ObjectWatch};
use crate::store::{
    AcquireRequest, Lease, LeaseStore, Snapshot, StoreError, WatchEvent, WatchStream,
};
use crate::tls::{explain, probe, tls_reason, ClientPem, ClientTls, H1_HELLO};

/// The longest line a watch stream may send: an object (at most
/// [`MAX_OBJECT_BYTES`] as the controller stores it) with its key and
/// revision; a lease is a few hundred bytes.
const MAX_LINE: usize = MAX_OBJECT_BYTES + (16 << 10);

/// Timeouts of a [`ControllerClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Connecting to the controller.
    pub connect_timeout: Duration,
    /// A whole request and its answer (for a watch: until the stream
    /// starts).
    pub request_timeout: Duration,
    /// A watch stream that sends nothing for this long is taken for dead:
    /// set it to a few of the controller's heartbeat intervals.
    pub heartbeat_timeout: Duration,
}

impl Default for ClientOptions {
    /// 5 s to connect, 15 s per request, 20 s without a heartbeat (four of
    /// the controller's default 5 s).
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(20),
        }
    }
}

/// A [`LeaseStore`] and an [`ObjectStore`] backed by a twill controller.
/// Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct ControllerClient {
    http: reqwest::Client,
    /// `http://host:port`, no trailing slash.
    base: String,
    auth: HeaderValue,
    opts: ClientOptions,
    /// The TLS files as read (`https://` only), to find out why the
    /// controller closed a connection.
    pem: Option<Arc<ClientPem>>,
}

impl std::fmt::Debug for ControllerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerClient")
            .field("base", &self.base)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl ControllerClient {
    /// A client of the controller at `endpoint` (`http://host:port`, or
    /// just `host:port`) with the default timeouts.
    pub fn new(endpoint: &str, token: &str) -> Result<ControllerClient, StoreError> {
        ControllerClient::with_options(endpoint, token, ClientOptions::default())
    }

    /// A client with the given timeouts (plain HTTP).
    pub fn with_options(
        endpoint: &str,
        token: &str,
        opts: ClientOptions,
    ) -> Result<ControllerClient, StoreError> {
        ControllerClient::with_tls(endpoint, token, opts, &ClientTls::default())
    }

    /// A client with the given timeouts and TLS files: an `https://`
    /// endpoint needs [`ClientTls::ca_file`]; an `http://` one takes none.
    /// A file that cannot be used is [`StoreError::Tls`] naming it.
    pub fn with_tls(
        endpoint: &str,
        token: &str,
        opts: ClientOptions,
        tls: &ClientTls,
    ) -> Result<ControllerClient, StoreError> {
        let base = if endpoint.contains("://") {
            endpoint.to_owned()
        } else {
            format!("http://{endpoint}")
        };
        let url = reqwest::Url::parse(&base)
            .map_err(|e| StoreError::Protocol(format!("controller address {endpoint:?}: {e}")))?;
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => {
                return Err(StoreError::Protocol(format!(
                    "controller address {endpoint:?}: want http://host:port or https://host:port"
                )))
            }
        };
        if url.host().is_none() {
            return Err(StoreError::Protocol(format!(
                "controller address {endpoint:?}: no host"
            )));
        }
        if !https && !tls.is_empty() {
            return Err(StoreError::Tls(format!(
                "TLS files are given but the controller address {endpoint:?} is http://: \
                 use https:// or leave cafile, certfile and keyfile out"
            )));
        }
        if https && tls.ca_file.is_none() {
            return Err(StoreError::Tls(format!(
                "the controller address {endpoint:?} is https:// but no cafile is given: \
                 name the CA that signed the controller's certificate (the system's roots \
                 are not used)"
            )));
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| StoreError::Protocol("the token is not a valid header value".into()))?;
        auth.set_sensitive(true);
        let mut builder = reqwest::Client::builder();
        let mut loaded = None;
        if https {
            let pem = tls.load()?;
            let bad = |e: reqwest::Error| StoreError::Tls(format!("TLS files: {}", chain(&e)));
            builder = builder
                .use_rustls_tls()
                .https_only(true)
                .tls_built_in_root_certs(false);
            if let Some(ca) = &pem.ca {
                for cert in reqwest::Certificate::from_pem_bundle(ca).map_err(bad)? {
                    builder = builder.add_root_certificate(cert);
                }
            }
            if let Some((cert, key)) = &pem.identity {
                let mut both = cert.clone();
                both.push(b'\n');
                both.extend_from_slice(key);
                builder = builder.identity(reqwest::Identity::from_pem(&both).map_err(bad)?);
            }
            loaded = Some(Arc::new(pem));
        }
        let http = builder
            .no_proxy()
            .connect_timeout(opts.connect_timeout)
            .tcp_nodelay(true)
            .tcp_keepalive(Some(Duration::from_secs(30)))
            // The controller closes a connection idle for its header
            // timeout (10 s by default): drop ours first, so that a
            // request rarely meets one the controller is closing.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| StoreError::Protocol(format!("HTTP client: {}", chain(&e))))?;
        Ok(ControllerClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            auth,
            opts,
            pem: loaded,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{PREFIX}{path}", self.base)
    }

    /// Sends a request (with the token and the request timeout) and turns
    /// an error answer into its [`StoreError`].
    async fn send(&self, req: RequestBuilder) -> Result<Response, StoreError> {
        check(self.send_unchecked(req).await?).await
    }

    /// [`ControllerClient::send`] without turning error answers into errors.
    async fn send_unchecked(&self, req: RequestBuilder) -> Result<Response, StoreError> {
        match req
            .header(AUTHORIZATION, self.auth.clone())
            .timeout(self.opts.request_timeout)
            .send()
            .await
        {
            Ok(r) => Ok(r),
            Err(e) => Err(self.no_answer(e).await),
        }
    }

    /// A request that got no answer: [`StoreError::Tls`] when TLS failed,
    /// else [`StoreError::Unavailable`]. With TLS 1.3 the controller
    /// refuses a client certificate after the handshake, and the request
    /// then fails as "connection closed" at times, without the alert: when
    /// an `https://` request fails so (not by a timeout), one probing
    /// connection with the same files finds the reason.
    async fn no_answer(&self, e: reqwest::Error) -> StoreError {
        let timeout = e.is_timeout();
        let err = unavailable(e);
        let Some(pem) = self.pem.as_deref() else {
            return err;
        };
        if timeout || !matches!(err, StoreError::Unavailable(_)) {
            return err;
        }
        match probe(&self.base, pem, H1_HELLO, self.opts.connect_timeout).await {
            Some(r) => StoreError::Tls(explain("the controller", &r)),
            None => err,
        }
    }

    /// Opens the watch stream at `path` from `after`: events of type `E`.
    async fn open_watch<E>(
        &self,
        path: &str,
        after: u64,
    ) -> Result<BoxStream<'static, Result<E, StoreError>>, StoreError>
    where
        E: DeserializeOwned + Send + 'static,
    {
        // No request timeout: the answer is endless. The start is bounded
        // here, the rest by the heartbeat timeout.
        let req = self
            .http
            .get(self.url(path))
            .query(&[("after", after)])
            .header(AUTHORIZATION, self.auth.clone());
        let resp = match tokio::time::timeout(self.opts.request_timeout, req.send()).await {
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "the controller did not answer the watch within {:?}",
                    self.opts.request_timeout
                )))
            }
            Ok(Err(e)) => return Err(self.no_answer(e).await),
            Ok(Ok(r)) => r,
        };
        let resp = check(resp).await?;
        Ok(watch_stream(
            resp.bytes_stream().boxed(),
            self.opts.heartbeat_timeout,
        ))
    }

    fn object_url(&self, key: &ObjectKey) -> String {
        // Every segment is a resource name or a DNS subdomain: nothing to
        // escape.
        self.url(&format!("/objects/{}", key.path()))
    }

    async fn get_json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, StoreError> {
        let resp = self.send(req).await?;
        let body = resp.bytes().await.map_err(unavailable)?;
        serde_json::from_slice(&body)
            .map_err(|e| StoreError::Protocol(format!("controller answer: {e}")))
    }
}

impl LeaseStore for ControllerClient {
    fn config(&self) -> BoxFuture<'_, Result<NetConf, StoreError>> {
        let req = self.http.get(self.url("/config"));
        Box::pin(async move {
            let body = self.send(req).await?.bytes().await.map_err(unavailable)?;
            let text = std::str::from_utf8(&body)
                .map_err(|_| StoreError::Protocol("net-conf is not UTF-8".into()))?;
            Ok(NetConf::parse(text)?)
        })
    }

    fn acquire(&self, req: AcquireRequest) -> BoxFuture<'_, Result<Lease, StoreError>> {
        let req = self.http.post(self.url("/leases")).json(&req);
        Box::pin(self.get_json(req))
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> BoxFuture<'_, Result<Lease, StoreError>> {
        let body = RenewRequest {
            attrs: Some(lease.attrs),
            public_ip: None,
            ttl_secs: ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0),
        };
        let req = self
            .http
            .put(self.url(&format!("/leases/{}", subnet_key(&lease.subnet))))
            .json(&body);
        Box::pin(self.get_json(req))
    }

    fn release(&self, lease: &Lease) -> BoxFuture<'_, Result<(), StoreError>> {
        let req = self
            .http
            .delete(self.url(&format!("/leases/{}", subnet_key(&lease.subnet))))
            .query(&[("public_ip", lease.attrs.public_ip.to_string())]);
        Box::pin(async move { self.send(req).await.map(drop) })
    }

    fn list(&self) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        let req = self.http.get(self.url("/leases"));
        Box::pin(self.get_json(req))
    }

    fn watch(&self, after: u64) -> BoxFuture<'_, Result<WatchStream, StoreError>> {
        Box::pin(self.open_watch::<WatchEvent>("/watch", after))
    }
}

impl ObjectStore for ControllerClient {
    fn list(&self) -> BoxFuture<'_, Result<ObjectList, StoreError>> {
        let req = self.http.get(self.url("/objects"));
        Box::pin(self.get_json(req))
    }

    fn watch(&self, after: u64) -> BoxFuture<'_, Result<ObjectWatch, StoreError>> {
        Box::pin(self.open_watch::<ObjectEvent>("/objects/watch", after))
    }

    fn put(
        &self,
        key: ObjectKey,
        object: serde_json::Value,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        let req = self.http.put(self.object_url(&key)).json(&object);
        Box::pin(async move {
            let answer: PutAnswer = self.get_json(req).await?;
            Ok(answer.revision)
        })
    }

    fn delete(&self, key: ObjectKey) -> BoxFuture<'_, Result<bool, StoreError>> {
        let req = self.http.delete(self.object_url(&key));
        Box::pin(async move {
            let resp = self.send_unchecked(req).await?;
            if resp.status() != StatusCode::NOT_FOUND {
                return check(resp).await.map(|_| true);
            }
            let body = resp.bytes().await.map_err(unavailable)?;
            match serde_json::from_slice::<ErrorBody>(&body) {
                // The controller's "no such object", not "no such endpoint".
                Ok(b) if b.code == ErrorCode::NotFound && b.key.is_some() => Ok(false),
                _ => Err(StoreError::Protocol(format!(
                    "HTTP 404: {}",
                    String::from_utf8_lossy(&body).trim()
                ))),
            }
        })
    }
}

/// The state of a watch stream being read.
struct Reader<E> {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buf: Vec<u8>,
    ready: VecDeque<Result<E, StoreError>>,
    done: bool,
    timeout: Duration,
}

impl<E: DeserializeOwned> Reader<E> {
    /// Queues every complete line of `buf`; false after a bad one.
    fn parse_lines(&mut self) -> bool {
        let mut start = 0;
        while let Some(n) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let line = &self.buf[start..start + n];
            start += n + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match parse_line(line) {
                Ok(Some(e)) => self.ready.push_back(Ok(e)),
                Ok(None) => {}
                Err(e) => {
                    self.ready.push_back(Err(e));
                    return false;
                }
            }
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            self.ready.push_back(Err(StoreError::Protocol(format!(
                "watch line longer than {MAX_LINE} bytes"
            ))));
            return false;
        }
        true
    }
}

/// One line: an event, or `None` for a heartbeat.
fn parse_line<E: DeserializeOwned>(line: &[u8]) -> Result<Option<E>, StoreError> {
    let bad = |e: serde_json::Error| StoreError::Protocol(format!("watch line: {e}"));
    let v: serde_json::Value = serde_json::from_slice(line).map_err(bad)?;
    if v.get("heartbeat").is_some_and(serde_json::Value::is_u64) {
        return Ok(None);
    }
    serde_json::from_value(v).map(Some).map_err(bad)
}

fn watch_stream<E: DeserializeOwned + Send + 'static>(
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    timeout: Duration,
) -> BoxStream<'static, Result<E, StoreError>> {
    let reader = Reader {
        body,
        buf: Vec::new(),
        ready: VecDeque::new(),
        done: false,
        timeout,
    };
    stream::unfold(reader, |mut r| async move {
        loop {
            if let Some(item) = r.ready.pop_front() {
                return Some((item, r));
            }
            if r.done {
                return None;
            }
            let end = match tokio::time::timeout(r.timeout, r.body.next()).await {
                Err(_) => format!("no heartbeat from the controller within {:?}", r.timeout),
                Ok(None) => "the controller ended the watch stream".to_owned(),
                Ok(Some(Err(e))) => format!("watch stream broken: {}", chain(&e)),
                Ok(Some(Ok(chunk))) => {
                    r.buf.extend_from_slice(&chunk);
                    r.done = !r.parse_lines();
                    continue;
                }
            };
            r.done = true;
            r.ready.push_back(Err(StoreError::Unavailable(end)));
        }
    })
    .boxed()
}

/// Passes a success through; turns an error answer into its [`StoreError`].
async fn check(resp: Response) -> Result<Response, StoreError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.bytes().await.unwrap_or_default();
    let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
    let msg = parsed.as_ref().map_or_else(
        || String::from_utf8_lossy(&body).trim().to_owned(),
        |b| b.error.clone(),
    );
    let missing = || StoreError::Protocol(format!("HTTP {status} without its details: {msg}"));
    let b = parsed.as_ref();
    let code = b.map(|b| b.code);
    Err(match status {
        StatusCode::UNAUTHORIZED => StoreError::Unauthorized(msg),
        StatusCode::BAD_REQUEST if code == Some(ErrorCode::InvalidObject) => {
            StoreError::InvalidObject(msg)
        }
        StatusCode::INSUFFICIENT_STORAGE if code == Some(ErrorCode::TooManyObjects) => {
            match b.and_then(|b| b.limit) {
                Some(limit) => StoreError::TooManyObjects { limit },
                None => missing(),
            }
        }
        StatusCode::CONFLICT if b.is_some_and(|b| b.code == ErrorCode::LeaseLost) => {
            match b.and_then(|b| b.subnet) {
                Some(subnet) => StoreError::LeaseLost { subnet },
                None => missing(),
            }
        }
        StatusCode::GONE => match b.and_then(|b| b.requested.zip(b.oldest)) {
            Some((requested, oldest)) => StoreError::Compacted { requested, oldest },
            None => missing(),
        },
        StatusCode::INSUFFICIENT_STORAGE => {
            match b.and_then(|b| Some((b.network?, b.subnet_len?, b.count?))) {
                Some((network, subnet_len, count)) => StoreError::OutOfSubnets {
                    network,
                    subnet_len,
                    count,
                },
                None => missing(),
            }
        }
        s if s.is_server_error() => StoreError::Unavailable(format!("HTTP {s}: {msg}")),
        s => StoreError::Protocol(format!("HTTP {s}: {msg}")),
    })
}

/// A request that got no answer: [`StoreError::Tls`] when TLS failed
/// (retrying will not help), else [`StoreError::Unavailable`].
fn unavailable(e: reqwest::Error) -> StoreError {
    match tls_reason(&e) {
        Some(r) => StoreError::Tls(explain("the controller", r)),
        None => StoreError::Unavailable(chain(&e)),
    }
}

/// An error with its causes, `a: b: c` (reqwest's own message alone says
/// little: "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
