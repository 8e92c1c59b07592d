//! The controller over HTTPS, end to end in this process: a real server on
//! 127.0.0.1:0 with certificates made by rcgen, spoken to through the real
//! `ControllerClient`: the right CA works, a wrong CA, a missing or foreign
//! client certificate and plain HTTP each fail with an error that says so.

// A test crate: helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use control::client::{ClientOptions, ControllerClient};
use control::controller::{Controller, ControllerConfig, ControllerError};
use control::{
    AcquireRequest, ClientTls, LeaseAttrs, LeaseBackend, LeaseStore, NetConf, ServerTls, StoreError,
};
use support::certs::Pki;
use support::next;

const TOKEN: &str = "s3cret-token";
const NET: &str = r#"{"Network":"10.244.0.0/18","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;

/// A controller with its state in a temp dir (kept as long as it runs).
struct Running {
    controller: Controller,
    _dir: tempfile::TempDir,
}

fn config(dir: &tempfile::TempDir, tls: Option<ServerTls>) -> ControllerConfig {
    let mut c = ControllerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("state.json"),
        TOKEN.into(),
    );
    c.net_conf = Some(NetConf::parse(NET).unwrap());
    c.heartbeat = Duration::from_millis(100);
    c.tls = tls;
    c
}

async fn start(tls: Option<ServerTls>) -> Running {
    start_with(tls, |_| {}).await
}

async fn start_with(tls: Option<ServerTls>, f: impl FnOnce(&mut ControllerConfig)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, tls);
    f(&mut cfg);
    Running {
        controller: Controller::start(cfg).await.unwrap(),
        _dir: dir,
    }
}

fn opts() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        heartbeat_timeout: Duration::from_secs(2),
    }
}

/// A client of `c` at `https://127.0.0.1:PORT` (or `scheme://`).
fn client(c: &Running, scheme: &str, tls: &ClientTls) -> Result<ControllerClient, StoreError> {
    let url = format!("{scheme}://{}", c.controller.local_addr());
    ControllerClient::with_tls(&url, TOKEN, opts(), tls)
}

fn req(n: u8) -> AcquireRequest {
    AcquireRequest {
        attrs: LeaseAttrs {
            public_ip: Ipv4Addr::new(192, 168, 100, n),
            backend: LeaseBackend::Vxlan {
                vni: Some(1),
                vtep_mac: format!("aa:bb:cc:dd:ee:{n:02x}").parse().unwrap(),
            },
        },
        previous: None,
        ttl_secs: 60,
    }
}

/// A call's TLS error message; panics on anything else.
fn tls_error<T: std::fmt::Debug>(r: Result<T, StoreError>) -> String {
    match r {
        Err(StoreError::Tls(m)) => {
            eprintln!("TLS error: {m}");
            m
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_watches_work_over_https_with_the_right_ca() {
    let pki = Pki::new();
    let c = start(Some(pki.server(false))).await;
    let cl = client(&c, "https", &pki.client("ca.pem", None)).unwrap();
    let mut w = cl.watch(0).await.unwrap();
    let lease = cl.acquire(req(1)).await.unwrap();
    assert_eq!(cl.list().await.unwrap().leases, vec![lease.clone()]);
    match next(&mut w).await.event {
        control::LeaseEvent::Added { lease: got } => assert_eq!(got, lease),
        e => panic!("{e:?}"),
    }
    // `localhost` is in the certificate too.
    let url = format!("https://localhost:{}", c.controller.local_addr().port());
    let by_name = ControllerClient::with_tls(&url, TOKEN, opts(), &pki.client("ca.pem", None));
    assert_eq!(by_name.unwrap().list().await.unwrap().leases.len(), 1);
    c.controller.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_still_required_over_https() {
    let pki = Pki::new();
    let c = start(Some(pki.server(false))).await;
    let url = format!("https://{}", c.controller.local_addr());
    let cl = ControllerClient::with_tls(&url, "wrong", opts(), &pki.client("ca.pem", None));
    let e = cl.unwrap().list().await.unwrap_err();
    assert!(matches!(e, StoreError::Unauthorized(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_is_a_clear_error() {
    let pki = Pki::new();
    let c = start(Some(pki.server(false))).await;
    let cl = client(&c, "https", &pki.client("other-ca.pem", None)).unwrap();
    let m = tls_error(cl.list().await);
    assert!(m.contains("certificate") && m.contains("cafile"), "{m}");
    assert!(m.contains("UnknownIssuer"), "{m}");
    // A watch says the same, and is not retried as if the controller were
    // down.
    let e = cl.watch(0).await.map(drop).unwrap_err();
    assert!(matches!(e, StoreError::Tls(_)) && !e.is_transient(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_checked_when_a_client_ca_is_given() {
    let pki = Pki::new();
    let c = start(Some(pki.server(true))).await;

    let none = client(&c, "https", &pki.client("ca.pem", None)).unwrap();
    let m = tls_error(none.list().await);
    assert!(
        m.contains("client certificate") && m.contains("certfile"),
        "{m}"
    );

    let foreign = client(&c, "https", &pki.client("ca.pem", Some("other-client"))).unwrap();
    let m = tls_error(foreign.list().await);
    assert!(m.contains("client certificate"), "{m}");

    let good = client(&c, "https", &pki.client("ca.pem", Some("client"))).unwrap();
    good.acquire(req(2)).await.unwrap();
    assert_eq!(good.list().await.unwrap().leases.len(), 1);
    c.controller.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_an_https_controller_is_told_so() {
    let pki = Pki::new();
    let c = start(Some(pki.server(false))).await;
    let cl = client(&c, "http", &ClientTls::default()).unwrap();
    let e = cl.list().await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Protocol(m) if m.contains("HTTP request to an HTTPS server")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_a_plain_controller_is_a_clear_error() {
    let pki = Pki::new();
    let c = start(None).await;
    let cl = client(&c, "https", &pki.client("ca.pem", None)).unwrap();
    let m = tls_error(cl.list().await);
    assert!(m.contains("does not speak TLS"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_files_are_checked_up_front() {
    let pki = Pki::new();
    let c = start(Some(pki.server(false))).await;
    // https without a CA: the system's roots are not used.
    let m = tls_error(client(&c, "https", &ClientTls::default()));
    assert!(m.contains("cafile"), "{m}");
    // TLS files with http://.
    let m = tls_error(client(&c, "http", &pki.client("ca.pem", None)));
    assert!(m.contains("http://"), "{m}");
    // A key file that is a certificate.
    let mut bad = pki.client("ca.pem", Some("client"));
    bad.key_file = Some(pki.path("client.pem"));
    let m = tls_error(client(&c, "https", &bad));
    assert!(m.contains("client.pem") && m.contains("private key"), "{m}");
    // A certificate without its key.
    bad.key_file = None;
    let m = tls_error(client(&c, "https", &bad));
    assert!(m.contains("both"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_server_files_stop_the_start_naming_the_file() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let missing = ServerTls {
        key_file: pki.path("nope.pem"),
        ..pki.server(false)
    };
    let e = Controller::start(config(&dir, Some(missing)))
        .await
        .unwrap_err();
    assert!(matches!(e, ControllerError::Tls(_)), "{e}");
    assert!(e.to_string().contains("nope.pem"), "{e}");

    // The client's key with the server's certificate.
    let mismatched = ServerTls {
        key_file: pki.path("client-key.pem"),
        ..pki.server(false)
    };
    let e = Controller::start(config(&dir, Some(mismatched)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("do not go together"), "{e}");

    let not_a_ca = ServerTls {
        client_ca_file: Some(pki.path("server-key.pem")),
        ..pki.server(false)
    };
    let e = Controller::start(config(&dir, Some(not_a_ca)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("server-key.pem"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_handshake_does_not_hold_a_slot() {
    let pki = Pki::new();
    let c = start_with(Some(pki.server(false)), |cfg| {
        cfg.max_connections = 1;
        cfg.header_timeout = Duration::from_millis(500);
    })
    .await;
    // Takes the only slot: a TLS record header, then nothing.
    let mut silent = tokio::net::TcpStream::connect(c.controller.local_addr())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut silent, &[0x16, 0x03, 0x01])
        .await
        .unwrap();
    let cl = client(&c, "https", &pki.client("ca.pem", None)).unwrap();
    let t = std::time::Instant::now();
    cl.list().await.unwrap();
    // Served once the silent one was cut at the header timeout.
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    drop(silent);
    c.controller.shutdown().await.unwrap();
}
