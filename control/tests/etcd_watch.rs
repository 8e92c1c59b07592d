//! The etcd lease store's watch against a real etcd: events, resuming from
//! a revision, lease expiry, compaction, a stopped and a frozen etcd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant, SystemTime};

use control::store::unix_secs;
use control::{
    AcquireRequest, LeaseAttrs, LeaseEvent, LeaseStore, StoreError, WatchEvent, WatchStream,
};
use futures::StreamExt;
use ipnet::Ipv4Net;
use support::{vxlan, EtcdServer};

const CONF: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

fn req(n: u8, ttl_secs: u64) -> AcquireRequest {
    AcquireRequest {
        attrs: vxlan(n),
        previous: None,
        ttl_secs,
    }
}

/// The next item of `w`, within `secs` seconds.
async fn next(w: &mut WatchStream, secs: u64) -> Result<WatchEvent, StoreError> {
    tokio::time::timeout(Duration::from_secs(secs), w.next())
        .await
        .expect("no watch event in time")
        .expect("the watch stream ended without an error")
}

/// Exactly `n` events of `w`, then nothing more for a moment.
async fn take(w: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next(w, 10).await.unwrap());
    }
    let more = tokio::time::timeout(Duration::from_millis(300), w.next()).await;
    assert!(more.is_err(), "an extra item: {more:?}");
    out
}

/// An event without its expiration (which is read when the event is).
fn ident(e: &WatchEvent) -> (u64, &'static str, Ipv4Net, Option<LeaseAttrs>) {
    match &e.event {
        LeaseEvent::Added { lease } => (e.revision, "added", lease.subnet, Some(lease.attrs)),
        LeaseEvent::Removed { subnet } => (e.revision, "removed", *subnet, None),
    }
}

fn kind(e: &WatchEvent) -> (&'static str, Ipv4Net) {
    match &e.event {
        LeaseEvent::Added { lease } => ("added", lease.subnet),
        LeaseEvent::Removed { subnet } => ("removed", *subnet),
    }
}

#[tokio::test]
async fn watch_reports_changes_and_resumes_from_a_revision() {
    let Some(etcd) = EtcdServer::start("watch") else {
        return;
    };
    let s = etcd.store().await;
    s.put_config(CONF).await.unwrap();
    let snap = s.list().await.unwrap();
    let mut w = s.watch(snap.revision).await.unwrap();

    let a = s.acquire(req(1, 600)).await.unwrap();
    let b = s.acquire(req(2, 600)).await.unwrap();
    let a2 = s.renew(&a, Duration::from_secs(900)).await.unwrap();
    s.release(&a2).await.unwrap();
    // Not subnets: skipped. A value that is no lease: reported removed.
    etcd.etcdctl(&["put", "/coreos.com/network/subnets/junk", "{}"]);
    etcd.etcdctl(&["put", "/coreos.com/network/config", CONF]);
    let bkey = format!("/coreos.com/network/subnets/{}-24", b.subnet.addr());
    etcd.etcdctl(&["put", &bkey, "garbage"]);

    let events = take(&mut w, 5).await;
    let kinds: Vec<_> = events.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            ("added", a.subnet),
            ("added", b.subnet),
            ("added", a.subnet),
            ("removed", a.subnet),
            ("removed", b.subnet),
        ]
    );
    // Expirations come from the key's etcd lease as the event is read: both
    // Added of `a` are read after their etcd lease was replaced (renewal) or
    // revoked (release), so they show as expired; `b`'s lease is live.
    let now = unix_secs(SystemTime::now());
    let exp = |e: &WatchEvent| match &e.event {
        LeaseEvent::Added { lease } => lease.expiration,
        other => panic!("{other:?}"),
    };
    assert!(exp(&events[0]) <= now + 1, "{events:?}");
    assert!(exp(&events[1]).abs_diff(b.expiration) <= 2);
    assert!(exp(&events[2]) <= now + 1, "{events:?}");
    match &events[2].event {
        LeaseEvent::Added { lease } => assert_eq!(lease.attrs, vxlan(1)),
        other => panic!("{other:?}"),
    }
    let revs: Vec<u64> = events.iter().map(|e| e.revision).collect();
    assert!(revs.windows(2).all(|p| p[0] < p[1]), "{revs:?}");
    assert!(revs[0] > snap.revision);

    // Resume after each event: exactly the rest, none repeated or missed.
    for (i, e) in events.iter().enumerate() {
        let mut again = s.watch(e.revision).await.unwrap();
        let rest = take(&mut again, events.len() - 1 - i).await;
        assert_eq!(
            rest.iter().map(ident).collect::<Vec<_>>(),
            events[i + 1..].iter().map(ident).collect::<Vec<_>>(),
            "resumed after {}",
            e.revision
        );
    }
    // From the list's revision: everything.
    let mut all = s.watch(snap.revision).await.unwrap();
    let replay = take(&mut all, 5).await;
    assert_eq!(
        replay.iter().map(ident).collect::<Vec<_>>(),
        events.iter().map(ident).collect::<Vec<_>>()
    );
    // A table from a list plus the watch equals a later list.
    let later = s.list().await.unwrap();
    assert!(later.leases.is_empty());
    assert!(later.revision >= revs[4]);
}

#[tokio::test]
async fn a_short_ttl_expires_and_the_watch_sees_it_removed() {
    let Some(etcd) = EtcdServer::start("expiry") else {
        return;
    };
    let s = etcd.store().await;
    s.put_config(CONF).await.unwrap();
    let rev = s.list().await.unwrap().revision;
    let mut w = s.watch(rev).await.unwrap();
    let t = Instant::now();
    let lease = s.acquire(req(1, 2)).await.unwrap();
    match next(&mut w, 5).await.unwrap().event {
        // Read at once: the expiration is the etcd lease's.
        LeaseEvent::Added { lease: l } => {
            assert_eq!(l.subnet, lease.subnet);
            assert!(
                l.expiration.abs_diff(lease.expiration) <= 1,
                "{l:?} {lease:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let removed = next(&mut w, 10).await.unwrap();
    assert_eq!(
        removed.event,
        LeaseEvent::Removed {
            subnet: lease.subnet
        }
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert!(s.list().await.unwrap().leases.is_empty());
    let err = s.renew(&lease, Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
}

#[tokio::test]
async fn a_compacted_revision_is_reported() {
    let Some(etcd) = EtcdServer::start("compact") else {
        return;
    };
    let s = etcd.store().await;
    s.put_config(CONF).await.unwrap();
    let old = s.list().await.unwrap().revision;
    let a = s.acquire(req(1, 600)).await.unwrap();
    s.renew(&a, Duration::from_secs(600)).await.unwrap();
    let b = s.acquire(req(2, 600)).await.unwrap();
    let now = s.list().await.unwrap().revision;
    etcd.etcdctl(&["compact", &now.to_string()]);

    match s.watch(old).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!(requested, old);
            assert_eq!(oldest, now);
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a watch from a compacted revision was opened"),
    }
    // From the compaction revision on, the watch works.
    let mut w = s.watch(now).await.unwrap();
    s.release(&b).await.unwrap();
    assert_eq!(
        next(&mut w, 5).await.unwrap().event,
        LeaseEvent::Removed { subnet: b.subnet }
    );
    // A revision etcd has never reached (it was replaced): re-list too.
    assert!(matches!(
        s.watch(now + 1000).await.err(),
        Some(StoreError::Compacted { requested, .. }) if requested == now + 1000
    ));
}

#[tokio::test]
async fn a_stopped_etcd_ends_the_watch_and_a_restarted_one_resumes() {
    let Some(mut etcd) = EtcdServer::start("restart") else {
        return;
    };
    let s = etcd.store().await;
    s.put_config(CONF).await.unwrap();
    let rev = s.list().await.unwrap().revision;
    let mut w = s.watch(rev).await.unwrap();
    let a = s.acquire(req(1, 600)).await.unwrap();
    let seen = next(&mut w, 5).await.unwrap();

    etcd.stop();
    let t = Instant::now();
    let err = next(&mut w, 10).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        w.next().await.is_none(),
        "the stream goes on after its error"
    );
    assert!(matches!(
        s.watch(seen.revision).await,
        Err(StoreError::Unavailable(_))
    ));

    etcd.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut w = loop {
        match s.watch(seen.revision).await {
            Ok(w) => break w,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    s.release(&a).await.unwrap();
    assert_eq!(
        next(&mut w, 5).await.unwrap().event,
        LeaseEvent::Removed { subnet: a.subnet }
    );
}

#[tokio::test]
async fn a_frozen_etcd_is_noticed_within_seconds() {
    let Some(etcd) = EtcdServer::start("frozen") else {
        return;
    };
    let s = etcd.store().await;
    s.put_config(CONF).await.unwrap();
    let rev = s.list().await.unwrap().revision;
    let mut w = s.watch(rev).await.unwrap();
    // An idle but healthy etcd answers the progress requests: the stream
    // stays open well past interval + timeout (0.7 s + 0.8 s).
    let idle = tokio::time::timeout(Duration::from_secs(4), w.next()).await;
    assert!(idle.is_err(), "an idle watch ended: {idle:?}");
    let a = s.acquire(req(1, 600)).await.unwrap();
    assert!(matches!(
        next(&mut w, 5).await.unwrap().event,
        LeaseEvent::Added { .. }
    ));

    etcd.pause();
    let t = Instant::now();
    let err = next(&mut w, 10).await.unwrap_err();
    let took = t.elapsed();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let err = s.renew(&a, Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    etcd.resume();
    s.renew(&a, Duration::from_secs(60)).await.unwrap();
}

#[tokio::test]
async fn changes_made_at_once_share_a_revision() {
    let Some(etcd) = EtcdServer::start("batch") else {
        return;
    };
    let s = etcd.store().await;
    s.put_config(CONF).await.unwrap();
    let a = s.acquire(req(1, 600)).await.unwrap();
    let b = s.acquire(req(2, 600)).await.unwrap();
    let rev = s.list().await.unwrap().revision;
    let mut w = s.watch(rev).await.unwrap();
    // The operator wipes the table in one request.
    etcd.etcdctl(&["del", "--prefix", "/coreos.com/network/subnets/"]);
    let events = take(&mut w, 2).await;
    assert_eq!(events[0].revision, events[1].revision);
    assert!(events[0].revision > rev);
    let mut removed: Vec<Ipv4Net> = events.iter().map(|e| kind(e).1).collect();
    removed.sort();
    let mut want = vec![a.subnet, b.subnet];
    want.sort();
    assert_eq!(removed, want);
    // Resuming after that revision yields neither again.
    let mut again = s.watch(events[0].revision).await.unwrap();
    assert!(take(&mut again, 0).await.is_empty());
}
