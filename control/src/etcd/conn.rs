//! The etcd store's connection layer: flannel's keys under a prefix, the
//! endpoints and their clients, calls bounded in time that fail over from
//! one endpoint to the next, and etcd's errors mapped onto [`StoreError`].

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use etcd_client::{Client, Compare, ConnectOptions, KeyValue, TlsOptions, Txn, TxnOp};
use ipnet::Ipv4Net;
use tracing::debug;

use super::EtcdOptions;
use crate::lease::{parse_subnet_key, subnet_key};
use crate::objects::ObjectKey;
use crate::store::StoreError;
use crate::tls::{explain, probe, tls_reason, ClientPem, ClientTls, H2_HELLO};

/// The keys of one flannel network, and of the cluster objects.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    /// `<prefix>/config`.
    pub(super) config: String,
    /// `<prefix>/subnets/`, with the trailing slash.
    pub(super) subnets: String,
    /// `<objects-prefix>/`, with the trailing slash.
    pub(super) objects: String,
}

impl Keys {
    pub(super) fn new(prefix: &str, objects_prefix: &str) -> Keys {
        let prefix = prefix.trim_end_matches('/');
        Keys {
            config: format!("{prefix}/config"),
            subnets: format!("{prefix}/subnets/"),
            objects: format!("{}/", objects_prefix.trim_end_matches('/')),
        }
    }

    /// The key of a cluster object.
    pub(super) fn object(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.objects, key.path())
    }

    /// The object key an etcd key under the objects prefix names.
    pub(super) fn parse_object(&self, key: &[u8]) -> Result<ObjectKey, String> {
        let key = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8".to_owned())?;
        let rest = key
            .strip_prefix(&self.objects)
            .ok_or_else(|| format!("{key:?} is not under {:?}", self.objects))?;
        ObjectKey::from_path(rest).ok_or_else(|| {
            format!("{key:?} is not <prefix>/<resource>/<namespace>/<name> of a kind twill stores")
        })
    }

    pub(super) fn subnet(&self, s: &Ipv4Net) -> String {
        format!("{}{}", self.subnets, subnet_key(s))
    }

    /// The subnet a key under the subnets prefix names.
    pub(super) fn parse_subnet(&self, key: &[u8]) -> Result<Ipv4Net, String> {
        let key = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8".to_owned())?;
        let last = key
            .strip_prefix(&self.subnets)
            .filter(|rest| !rest.contains('/'))
            .ok_or_else(|| format!("{key:?} is not directly under {:?}", self.subnets))?;
        parse_subnet_key(last).map_err(|e| e.to_string())
    }
}

/// One etcd endpoint and its client, made on first use.
pub(super) struct Endpoint {
    pub(super) url: String,
    client: tokio::sync::OnceCell<Client>,
}

/// What the store and its watch streams share.
pub(super) struct Shared {
    pub(super) endpoints: Vec<Endpoint>,
    connect: ConnectOptions,
    /// `connect` with TLS, for the `https://` endpoints (etcd-client
    /// refuses TLS options for an `http://` one).
    connect_tls: ConnectOptions,
    /// The TLS files as read, to find out why an `https://` endpoint
    /// closed a connection.
    pem: Option<ClientPem>,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
    pub(super) keys: Keys,
    pub(super) opts: EtcdOptions,
}

impl Shared {
    pub(super) fn new(
        endpoints: &[String],
        keys: Keys,
        opts: EtcdOptions,
        tls: Option<(TlsOptions, ClientPem)>,
    ) -> Shared {
        // etcd refuses keep-alive pings on a connection without an open
        // stream (its PermitWithoutStream is false): ping only while busy.
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(opts.connect_timeout)
            .with_keep_alive(opts.keepalive_interval, opts.keepalive_timeout)
            .with_keep_alive_while_idle(false);
        if let Some(c) = &opts.credentials {
            connect = connect.with_user(c.user.clone(), c.password.clone());
        }
        let (connect_tls, pem) = match tls {
            Some((tls, pem)) => (connect.clone().with_tls(tls), Some(pem)),
            None => (connect.clone(), None),
        };
        Shared {
            endpoints: endpoints
                .iter()
                .map(|url| Endpoint {
                    url: url.clone(),
                    client: tokio::sync::OnceCell::new(),
                })
                .collect(),
            connect,
            connect_tls,
            pem,
            preferred: AtomicUsize::new(0),
            keys,
            opts,
        }
    }

    /// The client of endpoint `idx`, connecting it if need be.
    pub(super) async fn client(&self, idx: usize) -> Result<Client, StoreError> {
        let ep = self
            .endpoints
            .get(idx)
            .ok_or_else(|| StoreError::Protocol(format!("no etcd endpoint #{idx}")))?;
        let t = self.opts.request_timeout;
        ep.client
            .get_or_try_init(|| async {
                let opts = if ep.url.starts_with("https://") {
                    &self.connect_tls
                } else {
                    &self.connect
                };
                let connect = Client::connect([ep.url.as_str()], Some(opts.clone()));
                match tokio::time::timeout(t, connect).await {
                    Ok(Ok(c)) => Ok(c),
                    Ok(Err(e)) => Err(map_err(&format!("connect {}", ep.url), &e)),
                    Err(_) => Err(StoreError::Unavailable(format!(
                        "connect {}: no answer within {t:?}",
                        ep.url
                    ))),
                }
            })
            .await
            .cloned()
    }

    /// Runs one etcd call, `f(client)`, on the endpoints in turn (the last
    /// one that answered first), each within the request timeout, until one
    /// answers. An answer that is an error (other than etcd being
    /// unavailable) is returned as etcd's error in `Ok(Err(_))`; `Err(_)`
    /// means no endpoint answered.
    pub(super) async fn try_call<T, F, Fut>(
        &self,
        what: &str,
        f: F,
    ) -> Result<Result<T, etcd_client::Error>, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (first + i) % n;
            let url = self.endpoints.get(idx).map_or("?", |e| e.url.as_str());
            let client = match self.client(idx).await {
                Ok(c) => c,
                Err(e) if e.is_transient() => {
                    let e = self.diagnose(url, e).await;
                    if !e.is_transient() {
                        return Err(e);
                    }
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let e = match tokio::time::timeout(self.opts.request_timeout, f(client)).await {
                Ok(Ok(v)) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(Ok(v));
                }
                Ok(Err(e)) => {
                    let mapped = map_err(what, &e);
                    if !mapped.is_transient() {
                        self.preferred.store(idx, Ordering::Relaxed);
                        return Ok(Err(e));
                    }
                    let mapped = self.diagnose(url, mapped).await;
                    if !mapped.is_transient() {
                        return Err(mapped);
                    }
                    mapped
                }
                Err(_) => StoreError::Unavailable(format!(
                    "{what}: no answer from etcd at {url} within {:?}",
                    self.opts.request_timeout
                )),
            };
            debug!(endpoint = url, error = %e, "etcd: endpoint unavailable");
            last = Some(e);
        }
        Err(last.unwrap_or_else(|| StoreError::Protocol("no etcd endpoint".into())))
    }

    /// `e`, an `https://` endpoint's failure to answer, or the TLS error
    /// behind it: an etcd with `--client-cert-auth` refuses a missing or
    /// foreign client certificate only after the handshake (TLS 1.3), and
    /// the gRPC client then says no more than "connection closed".
    async fn diagnose(&self, url: &str, e: StoreError) -> StoreError {
        let Some(pem) = self.pem.as_ref().filter(|_| url.starts_with("https://")) else {
            return e;
        };
        match probe(url, pem, H2_HELLO, self.opts.connect_timeout).await {
            Some(r) => StoreError::Tls(format!("{url}: {}", explain("etcd", &r))),
            None => e,
        }
    }

    /// [`Shared::try_call`] with etcd's errors mapped.
    pub(super) async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.try_call(what, f).await?.map_err(|e| map_err(what, &e))
    }

    /// The remaining TTL of an etcd lease in seconds: `None` for no lease
    /// (id 0), negative when it has expired.
    pub(super) async fn remaining_ttl(&self, id: i64) -> Result<Option<i64>, StoreError> {
        if id == 0 {
            return Ok(None);
        }
        let resp = self
            .call("lease time-to-live", |c| async move {
                c.lease_client().time_to_live(id, None).await
            })
            .await?;
        Ok(Some(resp.ttl()))
    }

    /// Reads the value at `key`: `None` when absent.
    pub(super) async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut resp = self
            .call("get", |c| async move { c.kv_client().get(key, None).await })
            .await?;
        Ok(resp.take_kvs().into_iter().next())
    }

    /// One transaction `if cond then op`; whether `cond` held.
    pub(super) async fn txn(
        &self,
        what: &str,
        cond: Compare,
        op: TxnOp,
    ) -> Result<bool, StoreError> {
        let txn = Txn::new().when([cond]).and_then([op]);
        let resp = self
            .call(what, |c| {
                let txn = txn.clone();
                async move { c.kv_client().txn(txn).await }
            })
            .await?;
        Ok(resp.succeeded())
    }
}

/// The TLS settings of `endpoints`: `None` when none is `https://`. An
/// `https://` endpoint needs a CA file; TLS files need an `https://`
/// endpoint.
pub(super) fn tls_options(
    endpoints: &[String],
    tls: &ClientTls,
) -> Result<Option<(TlsOptions, ClientPem)>, StoreError> {
    let Some(https) = endpoints.iter().find(|u| u.starts_with("https://")) else {
        if tls.is_empty() {
            return Ok(None);
        }
        return Err(StoreError::Tls(format!(
            "TLS files are given but no etcd endpoint is https:// ({}): use https:// or \
             leave cafile, certfile and keyfile out",
            endpoints.join(",")
        )));
    };
    if tls.ca_file.is_none() {
        return Err(StoreError::Tls(format!(
            "the etcd endpoint {https} is https:// but no cafile is given: name the CA that \
             signed etcd's certificate (the system's roots are not used)"
        )));
    }
    let pem = tls.load()?;
    let mut opts = TlsOptions::new();
    if let Some(ca) = &pem.ca {
        opts = opts.ca_certificate(etcd_client::Certificate::from_pem(ca));
    }
    if let Some((cert, key)) = &pem.identity {
        opts = opts.identity(etcd_client::Identity::from_pem(cert, key));
    }
    Ok(Some((opts, pem)))
}

/// Maps an etcd client error onto the store's errors.
pub(super) fn map_err(what: &str, e: &etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    use tonic::Code;
    // etcd_client::Error has no `source()`: look inside its variants.
    let reason = match e {
        E::GRpcStatus(s) => tls_reason(s),
        E::TransportError(t) => tls_reason(t),
        E::IoError(io) => tls_reason(io),
        _ => None,
    };
    if let Some(r) = reason {
        return StoreError::Tls(format!("{what}: {}", explain("etcd", r)));
    }
    match e {
        E::GRpcStatus(s) => {
            let msg = format!("{what}: {}", s.message());
            match s.code() {
                Code::Unauthenticated | Code::PermissionDenied => StoreError::Unauthorized(msg),
                // etcd answers a bad user or password with InvalidArgument.
                Code::InvalidArgument
                    if s.message().contains("authentication failed")
                        || s.message().contains("user name is empty")
                        || s.message().contains("invalid auth token") =>
                {
                    StoreError::Unauthorized(msg)
                }
                // Transport failures reach us as Unknown ("transport error")
                // or Internal (an h2 error); etcd without a leader, or a
                // request it timed out, as Unavailable / DeadlineExceeded.
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted
                | Code::ResourceExhausted
                | Code::Unknown
                | Code::Internal => StoreError::Unavailable(msg),
                code => StoreError::Protocol(format!("{msg} ({code:?})")),
            }
        }
        E::TransportError(t) => StoreError::Unavailable(format!("{what}: {t}")),
        E::IoError(io) => StoreError::Unavailable(format!("{what}: {io}")),
        E::WatchError(w) => StoreError::Unavailable(format!("{what}: {w}")),
        E::InvalidUri(u) => StoreError::Protocol(format!("{what}: invalid etcd endpoint: {u}")),
        E::InvalidArgs(a) => StoreError::Protocol(format!("{what}: {a}")),
        other => StoreError::Protocol(format!("{what}: {other}")),
    }
}

/// Whether a gRPC error says the revision asked for is compacted.
pub(super) fn is_compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == tonic::Code::OutOfRange && s.message().contains("compacted"))
}

/// Whether a gRPC error says the revision asked for is in the future.
pub(super) fn is_future_revision(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == tonic::Code::OutOfRange && s.message().contains("future revision"))
}
