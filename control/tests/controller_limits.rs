//! What the controller refuses and how it bounds its clients (issue 13,
//! item 2): a field no node could send is a 400 naming it; a client that
//! trickles its request head or body, or sends nothing, is cut off after a
//! timeout; connections beyond the cap wait. A real server on
//! 127.0.0.1:0, spoken to with reqwest and raw TCP.

// A test crate: helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use control::controller::{Controller, ControllerConfig};

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
