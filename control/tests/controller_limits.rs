//! What the controller refuses and how it bounds its clients (issue 13,
//! item 2): a field no node could send is a 400 naming it; a client that
//! trickles its request head or body, or sends nothing, is cut off after a
//! timeout; connections beyond the cap wait. A real server on
//! 127.0.0.1:0, spoken to with reqwest and raw TCP.

// A test crate: helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use control::controller::{Controller, ControllerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "s3cret-token";
const NET: &str = r#"{"Network":"10.244.0.0/18","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;

fn config(state: &Path) -> ControllerConfig {
    let mut c = ControllerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        state.to_owned(),
        TOKEN.into(),
    );
    c.net_conf = Some(control::NetConf::parse(NET).unwrap());
    c.heartbeat = Duration::from_millis(100);
    c
}

async fn start_with(dir: &tempfile::TempDir, f: impl FnOnce(&mut ControllerConfig)) -> Controller {
    let mut cfg = config(&dir.path().join("state.json"));
    f(&mut cfg);
    Controller::start(cfg).await.unwrap()
}

/// Sends `body` to `path` (below /v1); the status and the JSON answer.
async fn send(c: &Controller, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .request(
            method.parse().unwrap(),
            format!("http://{}/v1{path}", c.local_addr()),
        )
        .bearer_auth(TOKEN)
        .body(body.to_owned())
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

/// A lease request with these fields as JSON text.
fn acquire(ip: &str, mac: &str, ttl: &str) -> String {
    format!(
        r#"{{"attrs":{{"PublicIP":"{ip}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}},"ttl_secs":{ttl}}}"#
    )
}

const MAC: &str = "02:00:00:00:00:01";

/// Asserts a 400 `bad_request` whose `field` and message name `field`.
fn assert_names(answer: &(u16, serde_json::Value), field: &str, what: &str) {
    let (status, v) = answer;
    assert_eq!(*status, 400, "{what}: {v}");
    assert_eq!(v["code"], "bad_request", "{what}: {v}");
    assert_eq!(v["field"], field, "{what}: {v}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains(field), "{what}: {msg}");
}

/// Nothing refused was stored.
async fn assert_no_leases(c: &Controller) {
    let (status, v) = send(c, "GET", "/leases", "").await;
    assert_eq!(status, 200);
    assert_eq!(v["leases"], serde_json::json!([]), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unspecified_public_ip_is_400_naming_attrs_public_ip() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_with(&dir, |_| {}).await;
    let a = send(&c, "POST", "/leases", &acquire("0.0.0.0", MAC, "60")).await;
    assert_names(&a, "attrs.PublicIP", "0.0.0.0");
    assert_no_leases(&c).await;
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ips_no_node_can_have_are_400() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_with(&dir, |_| {}).await;
    for ip in [
        "0.1.2.3",
        "127.0.0.1",
        "224.0.0.1",
        "239.255.0.1",
        "240.0.0.1",
        "255.255.255.255",
    ] {
        let a = send(&c, "POST", "/leases", &acquire(ip, MAC, "60")).await;
        assert_names(&a, "attrs.PublicIP", ip);
    }
    assert_no_leases(&c).await;
    // A link-local address can be a node's (nodes on one link).
    let (status, v) = send(&c, "POST", "/leases", &acquire("169.254.7.1", MAC, "60")).await;
    assert_eq!(status, 200, "{v}");
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_of_zero_or_above_24_hours_is_400_naming_ttl_secs() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_with(&dir, |_| {}).await;
    for ttl in [u64::MAX, 86_401, 0] {
        let a = send(
            &c,
            "POST",
            "/leases",
            &acquire("192.168.100.1", MAC, &ttl.to_string()),
        )
        .await;
        assert_names(&a, "ttl_secs", &ttl.to_string());
    }
    assert_no_leases(&c).await;
    let (status, v) = send(
        &c,
        "POST",
        "/leases",
        &acquire("192.168.100.1", MAC, "86400"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multicast_or_zero_vtep_mac_is_400_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_with(&dir, |_| {}).await;
    for mac in [
        "ff:ff:ff:ff:ff:ff",
        "01:00:5e:00:00:01",
        "00:00:00:00:00:00",
    ] {
        let a = send(&c, "POST", "/leases", &acquire("192.168.100.1", mac, "60")).await;
        assert_names(&a, "attrs.BackendData.VtepMAC", mac);
    }
    assert_no_leases(&c).await;
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_is_checked_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_with(&dir, |_| {}).await;
    let (status, lease) = send(&c, "POST", "/leases", &acquire("192.168.100.1", MAC, "60")).await;
    assert_eq!(status, 200, "{lease}");
    let key = lease["subnet"].as_str().unwrap().replace('/', "-");
    let path = format!("/leases/{key}");
    let a = send(
        &c,
        "PUT",
        &path,
        &format!(r#"{{"public_ip":"192.168.100.1","ttl_secs":{}}}"#, u64::MAX),
    )
    .await;
    assert_names(&a, "ttl_secs", "renew ttl");
    let a = send(&c, "PUT", &path, r#"{"public_ip":"0.0.0.0","ttl_secs":60}"#).await;
    assert_names(&a, "public_ip", "renew public_ip");
    let a = send(&c, "PUT", &path, &format!(
        r#"{{"attrs":{},"ttl_secs":60}}"#,
        r#"{"PublicIP":"192.168.100.1","BackendType":"vxlan","BackendData":{"VtepMAC":"ff:ff:ff:ff:ff:ff"}}"#
    ))
    .await;
    assert_names(&a, "attrs.BackendData.VtepMAC", "renew attrs");
    let (status, v) = send(
        &c,
        "PUT",
        &path,
        r#"{"public_ip":"192.168.100.1","ttl_secs":120}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    c.shutdown().await.unwrap();
}

/// Whether the server closes `s` (read gives EOF or an error) within
/// `within`, while a byte of a request head (or body) is sent every
/// `every` if `trickle` is set; when it closed, after how long.
async fn closed_within(
    mut s: TcpStream,
    trickle: Option<Duration>,
    within: Duration,
) -> Option<(Duration, Vec<u8>)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let mut tick = tokio::time::interval(trickle.unwrap_or(within * 2));
    tick.tick().await;
    let deadline = tokio::time::sleep(within);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Some((start.elapsed(), got)),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick(), if trickle.is_some() => {
                if s.write_all(b"x").await.is_err() {
                    return Some((start.elapsed(), got));
                }
            }
            () = &mut deadline => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_headers_are_cut_off_while_requests_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_with(&dir, |cfg| cfg.header_timeout = Duration::from_secs(1)).await;
    let mut tricklers = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(c.local_addr()).await.unwrap();
        s.write_all(b"GET /v1/config HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        tricklers.push(tokio::spawn(closed_within(
            s,
            Some(Duration::from_millis(100)),
            Duration::from_secs(6),
        )));
    }
    // Served meanwhile.
    let (status, v) = send(&c, "GET", "/config", "").await;
    assert_eq!(status, 200, "{v}");
    for t in tricklers {
        let (after, got) = t.await.unwrap().expect("a trickler was never cut off");
        assert!(after >= Duration::from_millis(900), "{after:?}");
        // hyper answers nothing to a head it never finished reading, or 408.
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
            "{got:?}"
        );
    }
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_with(&dir, |cfg| cfg.header_timeout = Duration::from_secs(1)).await;
    let s = TcpStream::connect(c.local_addr()).await.unwrap();
    let closed = closed_within(s, None, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "a connection sending nothing stayed open");
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_408_after_the_body_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_with(&dir, |cfg| cfg.body_timeout = Duration::from_secs(1)).await;
    let mut s = TcpStream::connect(c.local_addr()).await.unwrap();
    let head = format!(
        "POST /v1/leases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (after, got) = closed_within(s, Some(Duration::from_millis(100)), Duration::from_secs(5))
        .await
        .expect("a trickled body was never cut off");
    assert!(after >= Duration::from_millis(900), "{after:?}");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_with(&dir, |cfg| {
        cfg.max_connections = 4;
        cfg.header_timeout = Duration::from_secs(60);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(c.local_addr()).await.unwrap());
    }
    // Give the server time to accept them all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = format!("http://{}/v1/config", c.local_addr());
    let get = |timeout| {
        reqwest::Client::new()
            .get(&url)
            .bearer_auth(TOKEN)
            .timeout(timeout)
            .send()
    };
    let err = get(Duration::from_millis(700)).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // One closes: the waiting request is served.
    let waiting = tokio::spawn(get(Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(held.pop());
    let resp = waiting.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    drop(held);
    c.shutdown().await.unwrap();
}
