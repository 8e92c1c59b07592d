//! The etcd lease store against a real etcd: acquire, renew, release,
//! list, flannel's exact layout, races, outages. See also etcd_watch.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use control::lease::{LeaseAttrs, LeaseBackend};
use control::store::unix_secs;
use control::{AcquireRequest, Credentials, EtcdOptions, EtcdStore, LeaseStore, StoreError};
use ipnet::Ipv4Net;
use support::{test_options, vxlan, EtcdServer};

const CONF: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn req(attrs: LeaseAttrs, ttl_secs: u64) -> AcquireRequest {
    AcquireRequest {
        attrs,
        previous: None,
        ttl_secs,
    }
}

#[tokio::test]
async fn acquire_renew_release_list() {
    let Some(etcd) = EtcdServer::start("lifecycle") else {
        return;
    };
    let store = etcd.store().await;
    assert!(matches!(store.config().await, Err(StoreError::NoConfig)));
    store.put_config(CONF).await.unwrap();
    assert_eq!(store.config().await.unwrap().network, net("10.244.0.0/16"));
    assert!(store.list().await.unwrap().leases.is_empty());

    let before = unix_secs(SystemTime::now());
    let lease = store.acquire(req(vxlan(1), 600)).await.unwrap();
    assert_eq!(lease.attrs, vxlan(1));
    assert_eq!(lease.subnet.prefix_len(), 24);
    assert!((before + 599..=before + 601).contains(&lease.expiration));

    let snap = store.list().await.unwrap();
    assert_eq!(snap.leases.len(), 1);
    assert_eq!(snap.leases[0].subnet, lease.subnet);
    assert_eq!(snap.leases[0].attrs, vxlan(1));
    assert!(snap.leases[0].expiration.abs_diff(lease.expiration) <= 2);
    assert!(snap.revision > 0);

    // Renewal: a new etcd lease with the new TTL; the old one is revoked.
    let renewed = store
        .renew(&lease, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(renewed.subnet, lease.subnet);
    assert!(renewed.expiration >= lease.expiration + 2999);
    let snap2 = store.list().await.unwrap();
    assert!(snap2.revision > snap.revision);
    assert!(snap2.leases[0].expiration.abs_diff(renewed.expiration) <= 2);
    let leases = etcd.etcdctl(&["lease", "list"]);
    assert!(leases.starts_with("found 1 leases"), "{leases}");

    store.release(&renewed).await.unwrap();
    assert!(store.list().await.unwrap().leases.is_empty());
    // Idempotent; and a released lease cannot be renewed.
    store.release(&renewed).await.unwrap();
    let err = store
        .renew(&renewed, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseLost { subnet } if subnet == lease.subnet),
        "{err}"
    );
    let leases = etcd.etcdctl(&["lease", "list"]);
    assert!(leases.starts_with("found 0 leases"), "{leases}");
}

#[tokio::test]
async fn keys_and_values_are_flannels_byte_for_byte() {
    let Some(etcd) = EtcdServer::start("layout") else {
        return;
    };
    // The operator writes the config with etcdctl, as for flannel.
    etcd.etcdctl(&["put", "/coreos.com/network/config", CONF]);
    let a = etcd.store().await;
    let vx = a
        .acquire(AcquireRequest {
            previous: Some(net("10.244.7.0/24")),
            ..req(vxlan(1), 600)
        })
        .await
        .unwrap();
    let udp_attrs = LeaseAttrs {
        public_ip: Ipv4Addr::new(10, 168, 0, 95),
        backend: LeaseBackend::Udp,
    };
    let udp = a
        .acquire(AcquireRequest {
            previous: Some(net("10.244.42.0/24")),
            ..req(udp_attrs, 600)
        })
        .await
        .unwrap();
    assert_eq!(vx.subnet, net("10.244.7.0/24"));
    assert_eq!(udp.subnet, net("10.244.42.0/24"));
    let got = etcd.etcdctl(&["get", "--prefix", "/coreos.com/network"]);
    let want = format!(
        "/coreos.com/network/config\n{CONF}\n\
         /coreos.com/network/subnets/10.244.42.0-24\n{{\"PublicIP\":\"10.168.0.95\",\"PublicIPv6\":null}}\n\
         /coreos.com/network/subnets/10.244.7.0-24\n\
         {{\"PublicIP\":\"192.168.100.1\",\"PublicIPv6\":null,\"BackendType\":\"vxlan\",\"BackendData\":{{\"VNI\":1,\"VtepMAC\":\"aa:bb:cc:dd:ee:01\"}}}}\n"
    );
    assert_eq!(got, want);
    // Each key is attached to an etcd lease (flannel's TTL).
    let json = etcd.etcdctl(&[
        "get",
        "/coreos.com/network/subnets/10.244.7.0-24",
        "-w",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["kvs"][0]["lease"].as_i64().unwrap_or(0) != 0, "{json}");

    // A lease flannel wrote (no lease id, older format) reads the same.
    etcd.etcdctl(&[
        "put",
        "/coreos.com/network/subnets/10.244.9.0-24",
        r#"{"PublicIP":"10.0.77.17","BackendType":"vxlan","BackendData":{"VtepMAC":"8e:97:d5:fa:36:ef"}}"#,
    ]);
    let snap = a.list().await.unwrap();
    let subnets: Vec<Ipv4Net> = snap.leases.iter().map(|l| l.subnet).collect();
    assert_eq!(
        subnets,
        [
            net("10.244.7.0/24"),
            net("10.244.9.0/24"),
            net("10.244.42.0/24")
        ]
    );
    assert_eq!(snap.leases[1].attrs.public_ip, Ipv4Addr::new(10, 0, 77, 17));
    // No etcd lease: it does not expire.
    assert!(snap.leases[1].expiration > unix_secs(SystemTime::now()) + 50 * 365 * 86400);

    // Another prefix is another network.
    let other = EtcdStore::connect(&[etcd.endpoint()], "/other/net/", test_options())
        .await
        .unwrap();
    assert!(matches!(other.config().await, Err(StoreError::NoConfig)));
    other
        .put_config(r#"{"Network":"10.50.0.0/16"}"#)
        .await
        .unwrap();
    let l = other.acquire(req(vxlan(1), 60)).await.unwrap();
    assert!(net("10.50.0.0/16").contains(&l.subnet));
    assert_eq!(a.list().await.unwrap().leases.len(), 3);
    let keys = etcd.etcdctl(&["get", "--prefix", "/other/net/", "--keys-only"]);
    assert!(
        keys.contains(&format!("/other/net/subnets/{}-24\n", l.subnet.addr())),
        "{keys}"
    );
}

#[tokio::test]
async fn thirty_concurrent_acquires_never_share_a_subnet() {
    let Some(etcd) = EtcdServer::start("race") else {
        return;
    };
    // 31 subnets (SubnetMin is the second /24) for 30 nodes: many collide.
    let s0 = etcd.store().await;
    s0.put_config(r#"{"Network":"10.244.0.0/19","SubnetLen":24}"#)
        .await
        .unwrap();
    let mut stores = Vec::new();
    for _ in 0..30 {
        stores.push(
            etcd.store_with(EtcdOptions {
                attempts: 60,
                ..test_options()
            })
            .await,
        );
    }
    let leases = futures::future::join_all(
        stores
            .iter()
            .zip(1u8..)
            .map(|(s, n)| s.acquire(req(vxlan(n), 600))),
    )
    .await;
    let leases: Vec<_> = leases.into_iter().map(Result::unwrap).collect();
    let subnets: HashSet<Ipv4Net> = leases.iter().map(|l| l.subnet).collect();
    assert_eq!(subnets.len(), 30, "{leases:?}");
    let snap = s0.list().await.unwrap();
    assert_eq!(snap.leases.len(), 30);
    for l in &leases {
        let listed = snap.leases.iter().find(|x| x.subnet == l.subnet).unwrap();
        assert_eq!(listed.attrs, l.attrs);
    }
}

#[tokio::test]
async fn out_of_subnets_under_contention() {
    let Some(etcd) = EtcdServer::start("full") else {
        return;
    };
    let s0 = etcd.store().await;
    s0.put_config(r#"{"Network":"10.244.0.0/22","SubnetLen":24}"#)
        .await
        .unwrap();
    let mut stores = Vec::new();
    for _ in 0..5 {
        stores.push(etcd.store().await);
    }
    let results = futures::future::join_all(
        stores
            .iter()
            .zip(1u8..)
            .map(|(s, n)| s.acquire(req(vxlan(n), 600))),
    )
    .await;
    let ok: HashSet<Ipv4Net> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|l| l.subnet))
        .collect();
    assert_eq!(ok.len(), 3, "{results:?}");
    for r in &results {
        match r {
            Ok(_) => {}
            Err(StoreError::OutOfSubnets { count: 3, .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    // A node that holds one still gets it back.
    let holder = results.iter().position(Result::is_ok).unwrap();
    let again = s0
        .acquire(req(vxlan(u8::try_from(holder).unwrap() + 1), 600))
        .await
        .unwrap();
    assert!(ok.contains(&again.subnet));
}

#[tokio::test]
async fn reuse_by_public_ip_and_previous_subnet() {
    let Some(etcd) = EtcdServer::start("reuse") else {
        return;
    };
    let s = etcd.store().await;
    s.put_config(CONF).await.unwrap();
    let first = s.acquire(req(vxlan(1), 600)).await.unwrap();

    // The node restarts (a new store knows no etcd lease) with a new MAC:
    // the lease carrying its public IP is reused, and its value updated.
    let restarted = etcd.store().await;
    let mut attrs = vxlan(1);
    attrs.backend = LeaseBackend::Vxlan {
        vni: Some(1),
        vtep_mac: "02:00:00:00:00:99".parse().unwrap(),
    };
    let second = restarted
        .acquire(AcquireRequest {
            attrs,
            previous: Some(net("10.244.200.0/24")),
            ttl_secs: 600,
        })
        .await
        .unwrap();
    assert_eq!(second.subnet, first.subnet);
    let snap = s.list().await.unwrap();
    assert_eq!(snap.leases.len(), 1);
    assert_eq!(snap.leases[0].attrs, attrs);
    // The old holder's renewal still finds its public IP there and takes
    // the key over with its own value (flannel's semantics: the public IP
    // identifies the node).
    let renewed = s.renew(&first, Duration::from_secs(600)).await.unwrap();
    assert_eq!(renewed.attrs, vxlan(1));

    // Previous subnet: taken back when free, not when held by another.
    let p = s
        .acquire(AcquireRequest {
            previous: Some(net("10.244.77.0/24")),
            ..req(vxlan(2), 600)
        })
        .await
        .unwrap();
    assert_eq!(p.subnet, net("10.244.77.0/24"));
    let q = s
        .acquire(AcquireRequest {
            previous: Some(net("10.244.77.0/24")),
            ..req(vxlan(3), 600)
        })
        .await
        .unwrap();
    assert_ne!(q.subnet, net("10.244.77.0/24"));

    // Another node took the subnet: renew is LeaseLost, release leaves it.
    etcd.etcdctl(&[
        "put",
        &format!("/coreos.com/network/subnets/{}-24", q.subnet.addr()),
        &vxlan(9).to_json(),
    ]);
    let err = s.renew(&q, Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    s.release(&q).await.unwrap();
    let snap = s.list().await.unwrap();
    let held = snap.leases.iter().find(|l| l.subnet == q.subnet).unwrap();
    assert_eq!(held.attrs, vxlan(9));
}

#[tokio::test]
async fn bad_keys_and_values_are_skipped() {
    let Some(etcd) = EtcdServer::start("garbage") else {
        return;
    };
    let s = etcd.store().await;
    // Three subnets; one holds garbage, one a key that is no subnet.
    s.put_config(r#"{"Network":"10.244.0.0/22","SubnetLen":24}"#)
        .await
        .unwrap();
    etcd.etcdctl(&[
        "put",
        "/coreos.com/network/subnets/10.244.2.0-24",
        "not json",
    ]);
    etcd.etcdctl(&["put", "/coreos.com/network/subnets/garbage", "{}"]);
    etcd.etcdctl(&["put", "/coreos.com/network/subnets/10.244.3.0-24/x", "{}"]);
    assert!(s.list().await.unwrap().leases.is_empty());
    let a = s.acquire(req(vxlan(1), 60)).await.unwrap();
    let b = s.acquire(req(vxlan(2), 60)).await.unwrap();
    let got: HashSet<Ipv4Net> = [a.subnet, b.subnet].into();
    assert_eq!(got, [net("10.244.1.0/24"), net("10.244.3.0/24")].into());
    assert!(matches!(
        s.acquire(req(vxlan(3), 60)).await,
        Err(StoreError::OutOfSubnets { .. })
    ));
    assert_eq!(s.list().await.unwrap().leases.len(), 2);

    etcd.etcdctl(&[
        "put",
        "/coreos.com/network/config",
        r#"{"Network":"nonsense"}"#,
    ]);
    assert!(matches!(s.config().await, Err(StoreError::Config(_))));
    assert!(matches!(
        s.acquire(req(vxlan(4), 60)).await,
        Err(StoreError::Config(_))
    ));
    assert!(matches!(
        s.put_config("{}").await,
        Err(StoreError::Config(_))
    ));
}

#[tokio::test]
async fn unavailable_while_stopped_and_works_again_after_restart() {
    let Some(mut etcd) = EtcdServer::start("outage") else {
        return;
    };
    let s = etcd.store().await;
    s.put_config(CONF).await.unwrap();
    let lease = s.acquire(req(vxlan(1), 600)).await.unwrap();

    etcd.stop();
    let t = Instant::now();
    let err = s.list().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.is_transient());
    let err = s.renew(&lease, Duration::from_secs(600)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    let err = s.acquire(req(vxlan(2), 600)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // A store made while etcd is down connects later.
    let late = EtcdStore::connect(&[etcd.endpoint()], "", test_options())
        .await
        .unwrap();

    etcd.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let snap = loop {
        match s.list().await {
            Ok(snap) => break snap,
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_transient(), "{e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("etcd is back but the store is not: {e}"),
        }
    };
    assert_eq!(snap.leases.len(), 1);
    assert_eq!(snap.leases[0].subnet, lease.subnet);
    s.renew(&lease, Duration::from_secs(600)).await.unwrap();
    assert_eq!(late.list().await.unwrap().leases.len(), 1);
}

#[tokio::test]
async fn several_endpoints_one_of_them_dead() {
    let Some(etcd) = EtcdServer::start("endpoints") else {
        return;
    };
    // A port nobody listens on (bound and closed again).
    let dead = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let s = EtcdStore::connect(&[dead, etcd.endpoint()], "", test_options())
        .await
        .unwrap();
    s.put_config(CONF).await.unwrap();
    for n in 1..=10u8 {
        s.acquire(req(vxlan(n), 60)).await.unwrap();
        assert_eq!(s.list().await.unwrap().leases.len(), usize::from(n));
    }
    assert!(matches!(
        EtcdStore::connect(&["not a url at all".into()], "", test_options()).await,
        Err(StoreError::Protocol(_))
    ));
    assert!(matches!(
        EtcdStore::connect(&[], "", test_options()).await,
        Err(StoreError::Protocol(_))
    ));
}

#[tokio::test]
async fn credentials_are_checked() {
    let Some(etcd) = EtcdServer::start("auth") else {
        return;
    };
    etcd.etcdctl(&["user", "add", "root:s3cret"]);
    etcd.etcdctl(&["auth", "enable"]);
    let with = |password: &str| EtcdOptions {
        credentials: Some(Credentials {
            user: "root".into(),
            password: password.into(),
        }),
        ..test_options()
    };
    let err = EtcdStore::connect(&[etcd.endpoint()], "", with("wrong"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unauthorized(_)), "{err}");
    assert!(!format!("{:?}", with("s3cret")).contains("s3cret"));
    let anonymous = etcd.store().await;
    let err = anonymous.config().await.unwrap_err();
    assert!(matches!(err, StoreError::Unauthorized(_)), "{err}");
    let s = EtcdStore::connect(&[etcd.endpoint()], "", with("s3cret"))
        .await
        .unwrap();
    s.put_config(CONF).await.unwrap();
    s.acquire(req(vxlan(1), 60)).await.unwrap();
    assert_eq!(s.list().await.unwrap().leases.len(), 1);
}
