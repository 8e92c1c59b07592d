//! The etcd store over TLS against a real etcd started with
//! `--client-cert-auth` on loopback, certificates made by rcgen: the right
//! CA and client certificate work (leases, watch); a wrong CA, a missing
//! client certificate and one from another CA each fail with a TLS error
//! that says what to check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use control::{AcquireRequest, ClientTls, EtcdOptions, EtcdStore, LeaseStore, StoreError};
use support::certs::Pki;
use support::{next, test_options, vxlan, EtcdServer, Tls};

const CONF: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

fn etcd(test: &str, pki: &Pki) -> Option<EtcdServer> {
    EtcdServer::start_tls(
        test,
        Tls {
            cert: pki.path("server.pem"),
            key: pki.path("server-key.pem"),
            client_ca: pki.path("ca.pem"),
        },
    )
}

fn options(tls: ClientTls) -> EtcdOptions {
    EtcdOptions {
        tls,
        ..test_options()
    }
}

/// Connects and reads the config: the first call that talks to etcd.
async fn first_call(etcd: &EtcdServer, tls: ClientTls) -> Result<(), StoreError> {
    let store = EtcdStore::connect(&[etcd.endpoint()], "", options(tls)).await?;
    store.config().await.map(drop)
}

fn tls_error(r: Result<(), StoreError>) -> String {
    match r {
        Err(StoreError::Tls(m)) => {
            eprintln!("TLS error: {m}");
            m
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test]
async fn leases_work_with_the_right_ca_and_client_certificate() {
    let pki = Pki::new();
    let Some(etcd) = etcd("tls-ok", &pki) else {
        return;
    };
    assert!(etcd.endpoint().starts_with("https://"));
    let store = etcd
        .store_with(options(pki.client("ca.pem", Some("client"))))
        .await;
    store.put_config(CONF).await.unwrap();
    let mut w = store.watch(0).await.unwrap();
    let lease = store
        .acquire(AcquireRequest {
            attrs: vxlan(1),
            previous: None,
            ttl_secs: 600,
        })
        .await
        .unwrap();
    assert_eq!(store.list().await.unwrap().leases.len(), 1);
    match next(&mut w).await.event {
        control::LeaseEvent::Added { lease: got } => assert_eq!(got.subnet, lease.subnet),
        e => panic!("{e:?}"),
    }
    store.release(&lease).await.unwrap();
}

#[tokio::test]
async fn a_wrong_ca_is_a_clear_error() {
    let pki = Pki::new();
    let Some(etcd) = etcd("tls-wrong-ca", &pki) else {
        return;
    };
    let m = tls_error(first_call(&etcd, pki.client("other-ca.pem", Some("client"))).await);
    assert!(
        m.contains("etcd's certificate") && m.contains("cafile"),
        "{m}"
    );
}

#[tokio::test]
async fn a_missing_client_certificate_is_a_clear_error() {
    let pki = Pki::new();
    let Some(etcd) = etcd("tls-no-cert", &pki) else {
        return;
    };
    let m = tls_error(first_call(&etcd, pki.client("ca.pem", None)).await);
    assert!(
        m.contains("client certificate") && m.contains("certfile"),
        "{m}"
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let Some(etcd) = etcd("tls-other-cert", &pki) else {
        return;
    };
    let m = tls_error(first_call(&etcd, pki.client("ca.pem", Some("other-client"))).await);
    assert!(m.contains("client certificate"), "{m}");
}

#[tokio::test]
async fn tls_settings_are_checked_before_connecting() {
    let pki = Pki::new();
    // No etcd needed: nothing is dialled.
    let https = ["https://127.0.0.1:1".to_owned()];
    let e = EtcdStore::connect(&https, "", options(ClientTls::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Tls(m) if m.contains("cafile")),
        "{e}"
    );
    let http = ["http://127.0.0.1:1".to_owned()];
    let e = EtcdStore::connect(&http, "", options(pki.client("ca.pem", None)))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Tls(m) if m.contains("https://")),
        "{e}"
    );
    let mut missing = pki.client("ca.pem", Some("client"));
    missing.key_file = Some(pki.path("nope-key.pem"));
    let e = EtcdStore::connect(&https, "", options(missing))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Tls(m) if m.contains("nope-key.pem")),
        "{e}"
    );
}
