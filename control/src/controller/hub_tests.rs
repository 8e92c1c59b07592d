use std::net::Ipv4Addr;
use std::time::{Duration, UNIX_EPOCH};

use futures::StreamExt;

use super::*;
use crate::lease::{LeaseAttrs, LeaseBackend};
use crate::netconf::NetConf;
use crate::store::AcquireRequest;

fn registry() -> Mutex<Registry> {
    Mutex::new(Registry::new(
        NetConf::parse(r#"{"Network":"10.244.0.0/16"}"#).unwrap(),
    ))
}

/// Acquires a lease for node `n` and publishes it, as the persister would
/// after writing it.
fn change(reg: &Mutex<Registry>, hub: &Hub<WatchEvent>, n: u8) {
    let rev = unpublished(reg, n);
    hub.publish(reg, rev);
}

/// Acquires a lease for node `n`, not yet written: returns the revision.
fn unpublished(reg: &Mutex<Registry>, n: u8) -> u64 {
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let req = AcquireRequest {
        attrs: LeaseAttrs {
            public_ip: Ipv4Addr::new(192, 168, 0, n),
            backend: LeaseBackend::Udp,
        },
        previous: None,
        ttl_secs: 60,
    };
    let mut r = reg.lock().unwrap();
    r.acquire(&req, now).unwrap();
    r.revision()
}

fn lines(b: &Bytes) -> Vec<serde_json::Value> {
    std::str::from_utf8(b)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_watcher_gets_heartbeat_backlog_then_live_changes_once() {
    let reg = registry();
    let hub = Hub::<WatchEvent>::new(0, 16);
    change(&reg, &hub, 1);
    change(&reg, &hub, 2);
    // An unpublished (not yet durable) change is in the registry only.
    assert_eq!(unpublished(&reg, 3), 3);
    let sub = hub.subscribe(&reg, 1).unwrap();
    let mut s = Box::pin(sub.into_stream());
    let first = lines(&s.next().await.unwrap().unwrap());
    assert_eq!(first[0], serde_json::json!({"heartbeat": 2}));
    assert_eq!(first.len(), 2);
    assert_eq!(first[1]["revision"], 2);
    assert_eq!(hub.watchers(), 1);
    hub.publish(&reg, 3);
    hub.heartbeat();
    let next = lines(&s.next().await.unwrap().unwrap());
    assert_eq!(next[0]["revision"], 3);
    assert_eq!(next[0]["type"], "added");
    assert_eq!(next[1], serde_json::json!({"heartbeat": 3}));
    // Closing ends the stream after what was sent.
    hub.close();
    assert!(s.next().await.is_none());
    assert!(matches!(
        hub.subscribe(&reg, 3),
        Err(SubscribeError::Closed)
    ));
}

#[tokio::test]
async fn a_lagging_watcher_is_ended() {
    let reg = registry();
    let hub = Hub::<WatchEvent>::new(0, 2);
    let mut s = Box::pin(hub.subscribe(&reg, 0).unwrap().into_stream());
    assert_eq!(lines(&s.next().await.unwrap().unwrap()).len(), 1);
    for n in 1..=5 {
        change(&reg, &hub, n);
    }
    assert!(s.next().await.is_none(), "lagged: the stream ends");
    // It resumes from where it was.
    let sub = hub.subscribe(&reg, 0).unwrap();
    let first = lines(&Box::pin(sub.into_stream()).next().await.unwrap().unwrap());
    assert_eq!(first.len(), 6);
}

#[test]
fn a_revision_not_yet_published_or_compacted_is_refused() {
    let reg = registry();
    let hub = Hub::<WatchEvent>::new(0, 2);
    change(&reg, &hub, 1);
    unpublished(&reg, 2);
    assert!(matches!(
        hub.subscribe(&reg, 2),
        Err(SubscribeError::Store(StoreError::Compacted {
            requested: 2,
            ..
        }))
    ));
    hub.publish(&reg, 2);
    assert!(hub.subscribe(&reg, 2).is_ok());
    let small = Mutex::new(reg.lock().unwrap().clone().with_log_capacity(1));
    assert!(matches!(
        hub.subscribe(&small, 0),
        Err(SubscribeError::Store(StoreError::Compacted {
            requested: 0,
            oldest: 1
        }))
    ));
}

#[tokio::test]
async fn an_object_watcher_sees_only_object_changes_in_the_shared_revisions() {
    use crate::objects::{Kind, ObjectKey};
    let reg = registry();
    let hubs = Hubs::new(0, 16);
    let key = ObjectKey {
        kind: Kind::Service,
        namespace: "default".into(),
        name: "web".into(),
    };
    let svc = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}});
    // 1: lease, 2: object put, 3: lease, 4: object delete.
    unpublished(&reg, 1);
    reg.lock().unwrap().put_object(key.clone(), svc).unwrap();
    hubs.publish(&reg, 2);
    let mut objs = Box::pin(hubs.objects.subscribe(&reg, 0).unwrap().into_stream());
    let mut leases = Box::pin(hubs.leases.subscribe(&reg, 0).unwrap().into_stream());
    let first = lines(&objs.next().await.unwrap().unwrap());
    assert_eq!(first[0], serde_json::json!({"heartbeat": 2}));
    assert_eq!(first.len(), 2);
    assert_eq!(first[1]["revision"], 2);
    assert_eq!(first[1]["type"], "put");
    let first = lines(&leases.next().await.unwrap().unwrap());
    assert_eq!(first.len(), 2);
    assert_eq!(first[1]["revision"], 1);
    unpublished(&reg, 2);
    assert!(reg.lock().unwrap().delete_object(&key));
    hubs.publish(&reg, 4);
    let next = lines(&objs.next().await.unwrap().unwrap());
    assert_eq!(next.len(), 1);
    assert_eq!(next[0]["revision"], 4);
    assert_eq!(next[0]["type"], "deleted");
    let next = lines(&leases.next().await.unwrap().unwrap());
    assert_eq!(next.len(), 1);
    assert_eq!(next[0]["revision"], 3);
    // A watch from a revision between two object changes resumes there.
    let sub = hubs.objects.subscribe(&reg, 3).unwrap();
    let first = lines(&Box::pin(sub.into_stream()).next().await.unwrap().unwrap());
    assert_eq!(first.len(), 2);
    assert_eq!(first[1]["revision"], 4);
}
