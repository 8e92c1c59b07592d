//! The embedded controller end to end, in this process: a real server on
//! 127.0.0.1:0 with its state file in a temp dir, spoken to through the
//! real `ControllerClient`.

// A test crate: helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use control::client::{ClientOptions, ControllerClient};
use control::controller::{Controller, ControllerConfig, ControllerError};
use control::registry::Registry;
use control::{
    AcquireRequest, Lease, LeaseAttrs, LeaseBackend, LeaseEvent, LeaseStore, NetConf, StoreError,
    WatchEvent,
};
use futures::StreamExt;
use ipnet::Ipv4Net;
use support::{next, quiet};

const TOKEN: &str = "s3cret-token";
/// 10.244.1.0/24 .. 10.244.63.0/24: 63 subnets.
const NET: &str = r#"{"Network":"10.244.0.0/18","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;
/// 10.244.1.0/24 .. 10.244.3.0/24: 3 subnets.
const TINY: &str = r#"{"Network":"10.244.0.0/22","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;

fn conf(json: &str) -> NetConf {
    NetConf::parse(json).unwrap()
}

fn state_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state.json")
}

fn config(state: &Path, net: Option<&str>) -> ControllerConfig {
    let mut c = ControllerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        state.to_owned(),
        TOKEN.into(),
    );
    c.net_conf = net.map(conf);
    c.heartbeat = Duration::from_millis(100);
    c
}

async fn start(state: &Path, net: Option<&str>) -> Controller {
    Controller::start(config(state, net)).await.unwrap()
}

fn client_with(c: &Controller, token: &str) -> ControllerClient {
    let opts = ClientOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        heartbeat_timeout: Duration::from_secs(2),
    };
    ControllerClient::with_options(&c.local_addr().to_string(), token, opts).unwrap()
}

fn client(c: &Controller) -> ControllerClient {
    client_with(c, TOKEN)
}

fn ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 100, 0)) + n)
}

fn req(n: u32, ttl_secs: u64) -> AcquireRequest {
    AcquireRequest {
        attrs: LeaseAttrs {
            public_ip: ip(n),
            backend: LeaseBackend::Vxlan {
                vni: Some(1),
                vtep_mac: encap::MacAddr([2, 0, 0, 0, (n >> 8) as u8, n as u8]),
            },
        },
        previous: None,
        ttl_secs,
    }
}

fn added(e: &WatchEvent) -> &Lease {
    match &e.event {
        LeaseEvent::Added { lease } => lease,
        other => panic!("expected Added, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_renew_release_list() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(&state_file(&dir), Some(NET)).await;
    let cl = client(&c);
    assert_eq!(cl.config().await.unwrap(), conf(NET));

    let a = cl.acquire(req(1, 60)).await.unwrap();
    assert!(conf(NET).contains_subnet(&a.subnet));
    assert_eq!(a.attrs, req(1, 60).attrs);
    // Acknowledged means on disk.
    let on_disk = Registry::from_json(&std::fs::read(state_file(&dir)).unwrap()).unwrap();
    assert_eq!(on_disk.get(&a.subnet), Some(&a));

    let snap = cl.list().await.unwrap();
    assert_eq!(snap.leases, vec![a.clone()]);
    assert_eq!(snap.revision, 1);

    let b = cl.renew(&a, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(b.subnet, a.subnet);
    assert!(b.expiration >= a.expiration + 3600 - 60);

    // Someone else's claim on the subnet is refused, and changes nothing.
    let mut theirs = a.clone();
    theirs.attrs.public_ip = ip(2);
    let e = cl
        .renew(&theirs, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::LeaseLost { subnet } if subnet == a.subnet),
        "{e}"
    );
    cl.release(&theirs).await.unwrap();
    assert_eq!(cl.list().await.unwrap().leases, vec![b.clone()]);

    // A second acquire by the same node gets the same subnet.
    let again = cl.acquire(req(1, 60)).await.unwrap();
    assert_eq!(again.subnet, a.subnet);

    cl.release(&a).await.unwrap();
    cl.release(&a).await.unwrap();
    let snap = cl.list().await.unwrap();
    assert!(snap.leases.is_empty());
    assert_eq!(snap.revision, 4, "acquire, renew, re-acquire, release");
    let e = cl.renew(&a, Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(e, StoreError::LeaseLost { .. }), "{e}");
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acquires_never_share_a_subnet() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(&state_file(&dir), Some(NET)).await;
    // Two clients (two connection pools), 25 nodes each, all at once.
    let (cl, other) = (client(&c), client(&c));
    let tasks: Vec<_> = (1..=50)
        .map(|n| {
            let cl = if n % 2 == 0 {
                cl.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move { cl.acquire(req(n, 600)).await })
        })
        .collect();
    let mut leases = Vec::new();
    for t in tasks {
        leases.push(t.await.unwrap().unwrap());
    }
    let subnets: HashSet<Ipv4Net> = leases.iter().map(|l| l.subnet).collect();
    assert_eq!(subnets.len(), 50, "two nodes got one subnet");
    let snap = cl.list().await.unwrap();
    assert_eq!(snap.leases.len(), 50);
    assert_eq!(snap.revision, 50);
    for l in &leases {
        assert!(snap.leases.contains(l), "{l:?} missing from the list");
    }
    let on_disk = Registry::from_json(&std::fs::read(state_file(&dir)).unwrap()).unwrap();
    assert_eq!(on_disk.list(), snap);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_subnets() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(&state_file(&dir), Some(TINY)).await;
    let cl = client(&c);
    for n in 1..=3 {
        cl.acquire(req(n, 60)).await.unwrap();
    }
    let e = cl.acquire(req(4, 60)).await.unwrap_err();
    match e {
        StoreError::OutOfSubnets {
            network,
            subnet_len,
            count,
        } => {
            assert_eq!(network, "10.244.0.0/22".parse::<Ipv4Net>().unwrap());
            assert_eq!((subnet_len, count), (24, 3));
        }
        other => panic!("{other}"),
    }
    // The holders still get theirs.
    cl.acquire(req(2, 60)).await.unwrap();
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(&state_file(&dir), Some(NET)).await;
    let good = client(&c);
    let bad = client_with(&c, "s3cret-tokem");
    let lease = good.acquire(req(1, 60)).await.unwrap();
    let before = good.list().await.unwrap();

    let unauthorized = |r: Result<(), StoreError>| {
        assert!(matches!(r, Err(StoreError::Unauthorized(_))), "{r:?}");
    };
    unauthorized(bad.acquire(req(2, 60)).await.map(drop));
    unauthorized(bad.renew(&lease, Duration::from_secs(999)).await.map(drop));
    unauthorized(bad.release(&lease).await);
    unauthorized(bad.list().await.map(drop));
    unauthorized(bad.config().await.map(drop));
    unauthorized(bad.watch(0).await.map(drop));
    assert_eq!(good.list().await.unwrap(), before);

    // Without any Authorization header: 401 with a JSON error.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/leases", c.local_addr()))
        .body(serde_json::to_vec(&req(3, 60)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");
    assert_eq!(good.list().await.unwrap(), before);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_400_with_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(&state_file(&dir), Some(NET)).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}/v1", c.local_addr());
    let auth = format!("Bearer {TOKEN}");
    for (method, path, body) in [
        ("POST", "/leases", "{"),
        (
            "POST",
            "/leases",
            r#"{"attrs":{"PublicIP":"x"},"ttl_secs":1}"#,
        ),
        (
            "PUT",
            "/leases/10.244.1.1-24",
            r#"{"public_ip":"1.2.3.4","ttl_secs":1}"#,
        ),
        ("PUT", "/leases/10.244.1.0-24", r#"{"ttl_secs":1}"#),
        ("DELETE", "/leases/10.244.1.0-24", ""),
        ("GET", "/watch?after=x", ""),
    ] {
        let resp = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .header("authorization", &auth)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{method} {path} {body}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["code"], "bad_request", "{v}");
    }
    for (method, path, status) in [
        ("GET", "/nothing", 404),
        ("PATCH", "/leases", 405),
        ("POST", "/config", 405),
    ] {
        let resp = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{method} {path}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert!(v["error"].is_string(), "{v}");
    }
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_changes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(&state_file(&dir), Some(NET)).await;
    let cl = client(&c);
    let r0 = cl.list().await.unwrap().revision;
    let mut w = cl.watch(r0).await.unwrap();
    let a = cl.acquire(req(1, 60)).await.unwrap();
    let b = cl.acquire(req(2, 60)).await.unwrap();
    cl.release(&a).await.unwrap();

    let e1 = next(&mut w).await;
    assert_eq!((e1.revision, added(&e1)), (r0 + 1, &a));
    let e2 = next(&mut w).await;
    assert_eq!((e2.revision, added(&e2)), (r0 + 2, &b));
    let e3 = next(&mut w).await;
    assert_eq!(e3.revision, r0 + 3);
    assert_eq!(e3.event, LeaseEvent::Removed { subnet: a.subnet });
    // Heartbeats are not events; nothing else comes.
    quiet(&mut w, Duration::from_millis(400)).await;
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_a_disconnect_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(&state_file(&dir), Some(NET)).await;
    let cl = client(&c);
    let mut w = cl.watch(0).await.unwrap();
    let mut leases = Vec::new();
    for n in 1..=3 {
        leases.push(cl.acquire(req(n, 60)).await.unwrap());
    }
    let mut seen = vec![next(&mut w).await, next(&mut w).await];
    drop(w); // the connection goes away with one event unread
    for n in 4..=5 {
        leases.push(cl.acquire(req(n, 60)).await.unwrap());
    }
    cl.release(&leases[0]).await.unwrap();
    let last = seen.last().unwrap().revision;
    let mut w = cl.watch(last).await.unwrap();
    for _ in 0..4 {
        seen.push(next(&mut w).await);
    }
    quiet(&mut w, Duration::from_millis(300)).await;
    let revisions: Vec<u64> = seen.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, vec![1, 2, 3, 4, 5, 6]);
    for (e, l) in seen.iter().zip(&leases) {
        assert_eq!(added(e), l);
    }
    assert_eq!(
        seen[5].event,
        LeaseEvent::Removed {
            subnet: leases[0].subnet
        }
    );
    // Resuming from the current revision: only what comes next.
    let mut w = cl.watch(6).await.unwrap();
    let l6 = cl.acquire(req(6, 60)).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!((e.revision, added(&e)), (7, &l6));
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lease_expires_with_a_removed_event() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(&state_file(&dir), Some(NET)).await;
    let cl = client(&c);
    let mut w = cl.watch(0).await.unwrap();
    let keep = cl.acquire(req(1, 3600)).await.unwrap();
    let short = cl.acquire(req(2, 1)).await.unwrap();
    next(&mut w).await;
    next(&mut w).await;
    let e = tokio::time::timeout(Duration::from_secs(4), w.next())
        .await
        .expect("expired within 4 s")
        .unwrap()
        .unwrap();
    assert_eq!(e.revision, 3);
    assert_eq!(
        e.event,
        LeaseEvent::Removed {
            subnet: short.subnet
        }
    );
    assert_eq!(cl.list().await.unwrap().leases, vec![keep]);
    let lost = cl.renew(&short, Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(lost, StoreError::LeaseLost { .. }), "{lost}");
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_leases_and_revision_and_compacts_older_watches() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_file(&dir);
    let c = start(&state, Some(NET)).await;
    let cl = client(&c);
    let a = cl.acquire(req(1, 3600)).await.unwrap();
    let b = cl.acquire(req(2, 3600)).await.unwrap();
    cl.release(&b).await.unwrap();
    let _short = cl.acquire(req(3, 2)).await.unwrap();
    let before = cl.list().await.unwrap();
    assert_eq!(before.revision, 4);
    // A watcher connected across the restart sees its stream end.
    let mut w = cl.watch(before.revision).await.unwrap();
    c.shutdown().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap();
    assert!(
        matches!(end, Some(Err(StoreError::Unavailable(_)))),
        "{end:?}"
    );
    assert!(w.next().await.is_none());

    // While it is down, the 2-second lease expires.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    // Later starts need no net-conf (the stored one is used).
    let c = start(&state, None).await;
    let cl = client(&c);
    let after = cl.list().await.unwrap();
    assert_eq!(after.leases, vec![a.clone()]);
    assert_eq!(after.revision, 5, "4, then the expiry at start");
    // From exactly the stored revision, the watch resumes: it gets the
    // expiry. From anything older: compacted.
    let mut w = cl.watch(4).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(e.revision, 5);
    assert!(matches!(e.event, LeaseEvent::Removed { .. }));
    match cl.watch(3).await.map(drop) {
        Err(StoreError::Compacted { requested, oldest }) => assert_eq!((requested, oldest), (3, 4)),
        other => panic!("{other:?}"),
    }
    // A revision from the future (a state this controller never had).
    assert!(matches!(
        cl.watch(99).await.map(drop),
        Err(StoreError::Compacted { requested: 99, .. })
    ));
    // Revisions go on from there.
    let d = cl.acquire(req(4, 60)).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!((e.revision, added(&e)), (6, &d));
    c.shutdown().await.unwrap();

    // A different net-conf is refused, unless replaced explicitly.
    let e = Controller::start(config(&state, Some(TINY)))
        .await
        .unwrap_err();
    assert!(matches!(e, ControllerError::NetConfDiffers { .. }), "{e}");
    let mut cfg = config(&state, Some(TINY));
    cfg.replace_net_conf = true;
    let c = Controller::start(cfg).await.unwrap();
    let cl = client(&c);
    assert_eq!(cl.config().await.unwrap(), conf(TINY));
    let snap = cl.list().await.unwrap();
    assert!(snap
        .leases
        .iter()
        .all(|l| conf(TINY).contains_subnet(&l.subnet)));
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let e = Controller::start(config(&state_file(&dir), None))
        .await
        .unwrap_err();
    assert!(matches!(e, ControllerError::NoNetConf { .. }), "{e}");
    let mut cfg = config(&state_file(&dir), Some(NET));
    cfg.token = " \n".into();
    let e = Controller::start(cfg).await.unwrap_err();
    assert!(matches!(e, ControllerError::EmptyToken), "{e}");
    std::fs::write(state_file(&dir), b"{not json").unwrap();
    let e = Controller::start(config(&state_file(&dir), Some(NET)))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("state.json: controller state:"),
        "{e}"
    );
    let cfg = config(&dir.path().join("no/such/dir/state.json"), Some(NET));
    let e = Controller::start(cfg).await.unwrap_err();
    assert!(matches!(e, ControllerError::Io { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_idle_watch_alive() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(&state_file(&dir), Some(NET)).await;
    let opts = ClientOptions {
        heartbeat_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    let cl = ControllerClient::with_options(&c.local_addr().to_string(), TOKEN, opts).unwrap();
    let mut w = cl.watch(0).await.unwrap();
    // Three heartbeat timeouts without an event: still alive.
    quiet(&mut w, Duration::from_millis(1500)).await;
    let a = cl.acquire(req(1, 60)).await.unwrap();
    assert_eq!(added(&next(&mut w).await), &a);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_controller_ends_the_watch_with_unavailable() {
    // A fake controller that answers the watch and then says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await.unwrap();
        s.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\
              transfer-encoding: chunked\r\n\r\n10\r\n{\"heartbeat\":0}\n\r\n",
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(s);
    });
    let opts = ClientOptions {
        heartbeat_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let cl = ControllerClient::with_options(&addr.to_string(), TOKEN, opts).unwrap();
    let mut w = cl.watch(0).await.unwrap();
    let t = std::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap();
    assert!(
        matches!(&end, Some(Err(StoreError::Unavailable(m))) if m.contains("no heartbeat")),
        "{end:?}"
    );
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert!(w.next().await.is_none());
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_controller_is_unavailable() {
    // Bind and drop a port: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cl = ControllerClient::new(&addr.to_string(), TOKEN).unwrap();
    let e = cl.list().await.unwrap_err();
    assert!(
        matches!(e, StoreError::Unavailable(_)) && e.is_transient(),
        "{e}"
    );
    assert!(matches!(
        cl.watch(0).await.map(drop),
        Err(StoreError::Unavailable(_))
    ));
    assert!(ControllerClient::new("https://x:1", TOKEN).is_err());
}
