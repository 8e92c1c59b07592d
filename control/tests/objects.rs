//! Cluster objects end to end, against both stores: a real controller on
//! 127.0.0.1:0 (through `ControllerClient`) and a real etcd (through
//! `EtcdStore`). One contract test runs on both; the rest is what only one
//! of them has (HTTP errors, limits, the state file; etcd's layout and
//! compaction).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use control::client::{ClientOptions, ControllerClient};
use control::controller::{Controller, ControllerConfig};
use control::objects::{
    Kind, ObjectChange, ObjectEvent, ObjectKey, ObjectStore, DEFAULT_OBJECTS_PREFIX,
};
use control::registry::Registry;
use control::{AcquireRequest, EtcdOptions, LeaseStore, NetConf, StoreError};
use futures::StreamExt;
use serde_json::{json, Value};
use support::{next, quiet, test_options, vxlan, EtcdServer};

const TOKEN: &str = "s3cret-token";
const NET: &str = r#"{"Network":"10.244.0.0/18","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;

fn key(kind: Kind, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: "default".into(),
        name: name.into(),
    }
}

fn svc(name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {"selector": {"app": name}, "ports": [{"port": port, "protocol": "TCP"}]},
    })
}

fn slice(name: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.1.5"]}],
    })
}

fn put_of(e: &ObjectEvent) -> (&ObjectKey, &Value, u64) {
    match &e.change {
        ObjectChange::Put { object } => {
            assert_eq!(object.revision, e.revision);
            (&object.key, &object.object, e.revision)
        }
        other => panic!("expected a put, got {other:?}"),
    }
}

/// What every object store does: put, list, delete, and watches from a
/// revision that see later changes in order, each once.
async fn contract(store: &dyn ObjectStore) {
    let start = store.list().await.unwrap();
    assert!(start.objects.is_empty());
    let mut w = store.watch(start.revision).await.unwrap();

    let web = key(Kind::Service, "web");
    let db = key(Kind::Service, "db");
    let ep = key(Kind::EndpointSlice, "web-abc12");
    let r1 = store.put(web.clone(), svc("web", 80)).await.unwrap();
    let r2 = store.put(db.clone(), svc("db", 5432)).await.unwrap();
    let r3 = store.put(ep.clone(), slice("web-abc12")).await.unwrap();
    let r4 = store.put(web.clone(), svc("web", 8080)).await.unwrap();
    assert!(start.revision < r1 && r1 < r2 && r2 < r3 && r3 < r4);
    assert!(store.delete(db.clone()).await.unwrap());
    assert!(!store.delete(db.clone()).await.unwrap(), "already gone");

    let list = store.list().await.unwrap();
    assert!(list.revision > r4);
    let got: Vec<(&ObjectKey, u64, &Value)> = list
        .objects
        .iter()
        .map(|o| (&o.key, o.revision, &o.object))
        .collect();
    // Key order: Service before EndpointSlice (Kind's order).
    assert_eq!(
        got,
        vec![
            (&web, r4, &svc("web", 8080)),
            (&ep, r3, &slice("web-abc12"))
        ]
    );

    assert_eq!(put_of(&next(&mut w).await), (&web, &svc("web", 80), r1));
    assert_eq!(put_of(&next(&mut w).await), (&db, &svc("db", 5432), r2));
    assert_eq!(put_of(&next(&mut w).await), (&ep, &slice("web-abc12"), r3));
    assert_eq!(put_of(&next(&mut w).await), (&web, &svc("web", 8080), r4));
    let del = next(&mut w).await;
    assert_eq!(del.revision, list.revision);
    assert_eq!(del.change, ObjectChange::Deleted { key: db.clone() });
    quiet(&mut w, Duration::from_millis(300)).await;

    // From a revision in the middle: only what came after it.
    let mut w2 = store.watch(r2).await.unwrap();
    assert_eq!(next(&mut w2).await.revision, r3);
    assert_eq!(next(&mut w2).await.revision, r4);
    assert_eq!(next(&mut w2).await.revision, list.revision);
    quiet(&mut w2, Duration::from_millis(300)).await;

    // A body that does not match its key, or that is no Service twill can
    // implement, changes nothing.
    let mut sctp = svc("web", 80);
    sctp["spec"]["ports"][0]["protocol"] = json!("SCTP");
    for bad in [
        sctp,
        svc("other", 80),
        slice("web"),
        json!({"kind": "Service", "metadata": {"name": "web", "namespace": "prod"}}),
        json!("web"),
    ] {
        let e = store.put(web.clone(), bad.clone()).await.unwrap_err();
        assert!(matches!(e, StoreError::InvalidObject(_)), "{bad}: {e}");
    }
    assert_eq!(store.list().await.unwrap(), list);
    quiet(&mut w, Duration::from_millis(300)).await;
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"team": "a"}}})
}

fn namespace_key(name: &str) -> ObjectKey {
    ObjectKey {
        kind: Kind::Namespace,
        namespace: String::new(),
        name: name.into(),
    }
}

/// The policy kinds through a store: a cluster-scoped Namespace (key
/// `namespaces/<name>`), a Pod, a NetworkPolicy and a PodAddress; a
/// Namespace with a namespace, or under a namespaced key, is refused.
async fn policy_kinds(store: &dyn ObjectStore) {
    let start = store.list().await.unwrap();
    let mut w = store.watch(start.revision).await.unwrap();
    let prod = namespace_key("prod");
    let pod = ObjectKey {
        kind: Kind::Pod,
        namespace: "prod".into(),
        name: "db-0".into(),
    };
    let pod_json = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": "prod", "labels": {"role": "db"}},
        "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 6379, "name": "redis"}]}]},
        "status": {"podIP": "10.244.1.5"}});
    let policy = ObjectKey {
        kind: Kind::NetworkPolicy,
        namespace: "prod".into(),
        name: "deny".into(),
    };
    let policy_json = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": "prod"}, "spec": {"podSelector": {}}});
    let address = control::k8s::PodAddress::new(
        "prod",
        "db-0",
        "node-a",
        std::net::Ipv4Addr::new(10, 244, 1, 5),
    );
    let address_key = ObjectKey {
        kind: Kind::PodAddress,
        namespace: "prod".into(),
        name: "db-0".into(),
    };
    let r1 = store.put(prod.clone(), namespace("prod")).await.unwrap();
    store.put(pod.clone(), pod_json.clone()).await.unwrap();
    store.put(policy.clone(), policy_json).await.unwrap();
    store
        .put(address_key.clone(), address.into_value())
        .await
        .unwrap();
    let list = store.list().await.unwrap();
    let keys: Vec<String> = list.objects.iter().map(|o| o.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            "Pod prod/db-0",
            "Namespace prod",
            "NetworkPolicy prod/deny",
            "PodAddress prod/db-0"
        ]
    );
    assert_eq!(put_of(&next(&mut w).await), (&prod, &namespace("prod"), r1));
    assert_eq!(put_of(&next(&mut w).await).1, &pod_json);
    next(&mut w).await;
    next(&mut w).await;

    let mut in_default = namespace("prod");
    in_default["metadata"]["namespace"] = json!("default");
    let e = store.put(prod.clone(), in_default).await.unwrap_err();
    assert!(matches!(e, StoreError::InvalidObject(_)), "{e}");
    let mut sctp = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": "prod"},
        "spec": {"ingress": [{"ports": [{"protocol": "SCTP"}]}]}});
    let e = store.put(policy.clone(), sctp.take()).await.unwrap_err();
    assert!(matches!(e, StoreError::InvalidObject(_)), "{e}");

    assert!(store.delete(prod.clone()).await.unwrap());
    assert!(!store.delete(prod.clone()).await.unwrap());
    let del = next(&mut w).await;
    assert_eq!(del.change, ObjectChange::Deleted { key: prod });
    assert_eq!(store.list().await.unwrap().objects.len(), 3);
}

// ---- the controller ----

fn state_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state.json")
}

fn config(state: &Path) -> ControllerConfig {
    let mut c = ControllerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        state.to_owned(),
        TOKEN.into(),
    );
    c.net_conf = Some(NetConf::parse(NET).unwrap());
    c.heartbeat = Duration::from_millis(100);
    c
}

fn client_with(c: &Controller, token: &str) -> ControllerClient {
    let opts = ClientOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        heartbeat_timeout: Duration::from_secs(2),
    };
    ControllerClient::with_options(&c.local_addr().to_string(), token, opts).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_keeps_the_object_contract() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(config(&state_file(&dir))).await.unwrap();
    let store: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::new(client_with(&c, TOKEN));
    contract(store.as_ref()).await;
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_stores_the_policy_kinds_and_cluster_scoped_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(config(&state_file(&dir))).await.unwrap();
    policy_kinds(&client_with(&c, TOKEN)).await;

    // The route of a cluster-scoped key has no namespace segment.
    let http = reqwest::Client::new();
    let base = format!("http://{}/v1/objects", c.local_addr());
    let auth = format!("Bearer {TOKEN}");
    let send = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = http
            .request(method, format!("{base}{path}"))
            .header("authorization", &auth);
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        req.send()
    };
    let resp = send(
        reqwest::Method::PUT,
        "/namespaces/dev",
        Some(namespace("dev")),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = send(
        reqwest::Method::PUT,
        "/namespaces/default/dev",
        Some(namespace("dev")),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "bad_request", "{body}");
    let resp = send(
        reqwest::Method::PUT,
        "/namespaces/other",
        Some(namespace("dev")),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "invalid_object", "{body}");
    let resp = send(reqwest::Method::DELETE, "/namespaces/dev", None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = send(reqwest::Method::DELETE, "/namespaces/dev", None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_objects_share_revisions_with_leases_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_file(&dir);
    let c = Controller::start(config(&state)).await.unwrap();
    let cl = client_with(&c, TOKEN);
    let web = key(Kind::Service, "web");
    let lease = cl
        .acquire(AcquireRequest {
            attrs: vxlan(1),
            previous: None,
            ttl_secs: 3600,
        })
        .await
        .unwrap();
    let mut leases = LeaseStore::watch(&cl, 1).await.unwrap();
    let mut objects = ObjectStore::watch(&cl, 1).await.unwrap();
    assert_eq!(
        ObjectStore::put(&cl, web.clone(), svc("web", 80))
            .await
            .unwrap(),
        2
    );
    // Acknowledged means on disk.
    let on_disk = Registry::from_json(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(on_disk.get_object(&web).unwrap().object, svc("web", 80));
    cl.renew(&lease, Duration::from_secs(600)).await.unwrap(); // 3
    assert!(ObjectStore::delete(&cl, web.clone()).await.unwrap()); // 4
    assert_eq!(LeaseStore::list(&cl).await.unwrap().revision, 4);
    assert_eq!(ObjectStore::list(&cl).await.unwrap().revision, 4);
    // Each watch sees its own kind, with the shared revisions.
    assert_eq!(next(&mut objects).await.revision, 2);
    assert_eq!(next(&mut objects).await.revision, 4);
    let l = tokio::time::timeout(Duration::from_secs(5), leases.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(l.revision, 3);

    // An identical put is no change: the stored revision, no event.
    let r5 = ObjectStore::put(&cl, web.clone(), svc("web", 80))
        .await
        .unwrap();
    assert_eq!(r5, 5);
    assert_eq!(
        ObjectStore::put(&cl, web.clone(), svc("web", 80))
            .await
            .unwrap(),
        5
    );
    assert_eq!(ObjectStore::list(&cl).await.unwrap().revision, 5);
    assert_eq!(next(&mut objects).await.revision, 5);
    quiet(&mut objects, Duration::from_millis(300)).await;
    let ep = key(Kind::EndpointSlice, "web-1");
    ObjectStore::put(&cl, ep.clone(), slice("web-1"))
        .await
        .unwrap();
    let before = ObjectStore::list(&cl).await.unwrap();
    c.shutdown().await.unwrap();

    // A restart keeps the objects and the revision; older watches re-list.
    let c = Controller::start(config(&state)).await.unwrap();
    let cl = client_with(&c, TOKEN);
    assert_eq!(ObjectStore::list(&cl).await.unwrap(), before);
    assert!(matches!(
        ObjectStore::watch(&cl, before.revision - 1).await.map(drop),
        Err(StoreError::Compacted { .. })
    ));
    let mut w = ObjectStore::watch(&cl, before.revision).await.unwrap();
    assert!(ObjectStore::delete(&cl, ep.clone()).await.unwrap());
    assert_eq!(
        next(&mut w).await.change,
        ObjectChange::Deleted { key: ep.clone() }
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_object_history_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&state_file(&dir));
    cfg.log_capacity = 2;
    let c = Controller::start(cfg).await.unwrap();
    let cl = client_with(&c, TOKEN);
    let web = key(Kind::Service, "web");
    for p in 1..=4 {
        ObjectStore::put(&cl, web.clone(), svc("web", p))
            .await
            .unwrap();
    }
    match ObjectStore::watch(&cl, 1).await.map(drop) {
        Err(StoreError::Compacted { requested, oldest }) => assert_eq!((requested, oldest), (1, 2)),
        other => panic!("{other:?}"),
    }
    let mut w = ObjectStore::watch(&cl, 2).await.unwrap();
    assert_eq!(next(&mut w).await.revision, 3);
    assert_eq!(next(&mut w).await.revision, 4);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_object_requests_need_the_token_and_a_matching_body() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&state_file(&dir));
    cfg.max_objects = 1;
    let c = Controller::start(cfg).await.unwrap();
    let good = client_with(&c, TOKEN);
    let bad = client_with(&c, "s3cret-tokem");
    let web = key(Kind::Service, "web");
    ObjectStore::put(&good, web.clone(), svc("web", 80))
        .await
        .unwrap();
    let before = ObjectStore::list(&good).await.unwrap();

    let unauthorized = |r: Result<(), StoreError>| {
        assert!(matches!(r, Err(StoreError::Unauthorized(_))), "{r:?}");
    };
    unauthorized(ObjectStore::list(&bad).await.map(drop));
    unauthorized(ObjectStore::watch(&bad, 0).await.map(drop));
    unauthorized(
        ObjectStore::put(&bad, web.clone(), svc("web", 81))
            .await
            .map(drop),
    );
    unauthorized(ObjectStore::delete(&bad, web.clone()).await.map(drop));
    assert_eq!(ObjectStore::list(&good).await.unwrap(), before);

    // The object limit.
    let e = ObjectStore::put(&good, key(Kind::Service, "db"), svc("db", 1))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::TooManyObjects { limit: 1 }), "{e}");

    let http = reqwest::Client::new();
    let base = format!("http://{}/v1/objects", c.local_addr());
    let auth = format!("Bearer {TOKEN}");
    // Without a token: 401.
    let resp = http
        .put(format!("{base}/services/default/web"))
        .body(svc("web", 99).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let big = json!({"kind": "Service", "metadata": {"name": "web"}, "pad": "x".repeat(1 << 20)});
    // Under the limit as sent (1,000,000 bytes), over it as stored:
    // "1e9" is stored as 1000000000.0.
    let numbers = format!(
        r#"{{"kind":"Service","metadata":{{"name":"web"}},"n":[{}]}}"#,
        vec!["1e9"; 250_000].join(",")
    );
    let mut sizes = Vec::new();
    for (method, path, body, status, code) in [
        (
            "PUT",
            "/services/default/web",
            svc("db", 1).to_string(),
            400,
            "invalid_object",
        ),
        (
            "PUT",
            "/services/prod/web",
            svc("web", 1).to_string(),
            400,
            "invalid_object",
        ),
        (
            "PUT",
            "/services/default/web",
            "{".to_owned(),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/deployments/default/web",
            "{}".to_owned(),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/services/Default/web",
            "{}".to_owned(),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/services/default/web",
            big.to_string(),
            413,
            "bad_request",
        ),
        ("PUT", "/services/default/web", numbers, 413, "bad_request"),
        (
            "DELETE",
            "/services/default/nothing",
            String::new(),
            404,
            "not_found",
        ),
        ("GET", "/watch?after=x", String::new(), 400, "bad_request"),
        ("GET", "/watch?after=99", String::new(), 410, "compacted"),
    ] {
        let resp = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .header("authorization", &auth)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{method} {path}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], code, "{method} {path}: {v}");
        if status == 404 {
            assert_eq!(v["key"], "services/default/nothing");
        }
        if path == "/services/default/web" && status == 413 {
            sizes.push(v["error"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(sizes.len(), 2);
    assert!(sizes[1].contains("as stored"), "{sizes:?}");
    assert_eq!(ObjectStore::list(&good).await.unwrap(), before);
    c.shutdown().await.unwrap();
}

// ---- etcd ----

#[tokio::test]
async fn etcd_keeps_the_object_contract() {
    let Some(etcd) = EtcdServer::start("objects") else {
        return;
    };
    let store: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::new(etcd.store().await);
    contract(store.as_ref()).await;
    // flannel's keys and ours side by side; the value is the JSON as given.
    let out = etcd.etcdctl(&[
        "get",
        "--print-value-only",
        "/twill/objects/services/default/web",
    ]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v, svc("web", 8080));
    assert_eq!(DEFAULT_OBJECTS_PREFIX, "/twill/objects");
}

#[tokio::test]
async fn etcd_stores_the_policy_kinds_and_cluster_scoped_namespaces() {
    let Some(etcd) = EtcdServer::start("policykinds") else {
        return;
    };
    let store = etcd.store().await;
    ObjectStore::put(&store, namespace_key("dev"), namespace("dev"))
        .await
        .unwrap();
    let out = etcd.etcdctl(&["get", "--print-value-only", "/twill/objects/namespaces/dev"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v, namespace("dev"));
    assert!(ObjectStore::delete(&store, namespace_key("dev"))
        .await
        .unwrap());
    policy_kinds(&store).await;
    let out = etcd.etcdctl(&["get", "--prefix", "--keys-only", "/twill/objects/"]);
    let keys: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        keys,
        [
            "/twill/objects/networkpolicies/prod/deny",
            "/twill/objects/podaddresses/prod/db-0",
            "/twill/objects/pods/prod/db-0"
        ]
    );
}

#[tokio::test]
async fn etcd_objects_skip_foreign_keys_and_honour_the_prefix() {
    let Some(etcd) = EtcdServer::start("objkeys") else {
        return;
    };
    let store = etcd
        .store_with(EtcdOptions {
            objects_prefix: "/custom/objs/".into(),
            ..test_options()
        })
        .await;
    let web = key(Kind::Service, "web");
    let r0 = ObjectStore::list(&store).await.unwrap().revision;
    let mut w = ObjectStore::watch(&store, r0).await.unwrap();
    ObjectStore::put(&store, web.clone(), svc("web", 80))
        .await
        .unwrap();
    let out = etcd.etcdctl(&["get", "--prefix", "--keys-only", "/custom/objs/"]);
    assert_eq!(out.trim(), "/custom/objs/services/default/web");
    // Written by hand: another resource, a deeper key, a value that is not
    // JSON, one that does not match its key.
    etcd.etcdctl(&["put", "/custom/objs/deployments/default/p", "{}"]);
    etcd.etcdctl(&["put", "/custom/objs/services/default/web/x", "{}"]);
    etcd.etcdctl(&["put", "/custom/objs/services/default/junk", "not json"]);
    etcd.etcdctl(&[
        "put",
        "/custom/objs/services/default/db",
        &svc("other", 1).to_string(),
    ]);
    let list = ObjectStore::list(&store).await.unwrap();
    assert_eq!(list.objects.len(), 1);
    assert_eq!(list.objects[0].key, web);
    assert_eq!(put_of(&next(&mut w).await).0, &web);
    // The bad values read as deletions (a list does not show them either);
    // the foreign keys are skipped.
    let e = next(&mut w).await;
    assert_eq!(
        e.change,
        ObjectChange::Deleted {
            key: key(Kind::Service, "junk")
        }
    );
    let e = next(&mut w).await;
    assert_eq!(
        e.change,
        ObjectChange::Deleted {
            key: key(Kind::Service, "db")
        }
    );
    assert_eq!(e.revision, list.revision);
    quiet(&mut w, Duration::from_millis(300)).await;
    // The default prefix holds nothing.
    let default = etcd.store().await;
    assert!(ObjectStore::list(&default)
        .await
        .unwrap()
        .objects
        .is_empty());
}

#[tokio::test]
async fn etcd_a_compacted_object_revision_is_reported() {
    let Some(etcd) = EtcdServer::start("objcompact") else {
        return;
    };
    let s = etcd.store().await;
    let web = key(Kind::Service, "web");
    let old = ObjectStore::list(&s).await.unwrap().revision;
    ObjectStore::put(&s, web.clone(), svc("web", 1))
        .await
        .unwrap();
    let now = ObjectStore::put(&s, web.clone(), svc("web", 2))
        .await
        .unwrap();
    etcd.etcdctl(&["compact", &now.to_string()]);
    match ObjectStore::watch(&s, old).await.map(drop) {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (old, now));
        }
        other => panic!("{other:?}"),
    }
    let mut w = ObjectStore::watch(&s, now).await.unwrap();
    assert!(ObjectStore::delete(&s, web.clone()).await.unwrap());
    assert_eq!(
        next(&mut w).await.change,
        ObjectChange::Deleted { key: web }
    );
}
