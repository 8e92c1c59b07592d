//! Unit tests of the etcd store's pure parts; the store itself is tested
//! against a real etcd in `control/tests/etcd.rs` and `etcd_watch.rs`.

use std::time::{Duration, UNIX_EPOCH};

use tonic::{Code, Status};

use super::conn::{is_compacted, is_future_revision, map_err};
use super::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

#[test]
fn keys_follow_flannels_layout() {
    for prefix in [
        "/coreos.com/network",
        "/coreos.com/network/",
        "/coreos.com/network//",
    ] {
        let k = Keys::new(prefix, DEFAULT_OBJECTS_PREFIX);
        assert_eq!(k.config, "/coreos.com/network/config");
        assert_eq!(k.subnets, "/coreos.com/network/subnets/");
        assert_eq!(
            k.subnet(&net("10.244.1.0/24")),
            "/coreos.com/network/subnets/10.244.1.0-24"
        );
    }
    let k = Keys::new(DEFAULT_ETCD_PREFIX, DEFAULT_OBJECTS_PREFIX);
    assert_eq!(
        k.parse_subnet(b"/coreos.com/network/subnets/10.244.1.0-24"),
        Ok(net("10.244.1.0/24"))
    );
    // A dual-stack key reads as its IPv4 half.
    assert_eq!(
        k.parse_subnet(b"/coreos.com/network/subnets/10.244.1.0-24&fc00:0:0:1::-64"),
        Ok(net("10.244.1.0/24"))
    );
    for bad in [
        &b"/coreos.com/network/subnets/junk"[..],
        b"/coreos.com/network/subnets/10.244.1.0-24/x",
        b"/coreos.com/network/subnets/x/10.244.1.0-24",
        b"/coreos.com/network/config",
        b"/other/subnets/10.244.1.0-24",
        b"/coreos.com/network/subnets/\xff",
    ] {
        assert!(
            k.parse_subnet(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn expiration_is_now_plus_ttl() {
    let now = UNIX_EPOCH + Duration::from_secs(1_000);
    assert_eq!(expiration_at(now, 60), 1_060);
    assert_eq!(expiration_at(now, -1), 1_000);
}

fn status(code: Code, msg: &str) -> etcd_client::Error {
    etcd_client::Error::GRpcStatus(Status::new(code, msg))
}

#[test]
fn errors_map_onto_the_store_errors() {
    let m = |e| map_err("op", &e);
    assert!(matches!(
        m(status(Code::Unavailable, "etcdserver: no leader")),
        StoreError::Unavailable(_)
    ));
    assert!(matches!(
        m(status(Code::Unknown, "transport error")),
        StoreError::Unavailable(_)
    ));
    assert!(matches!(
        m(status(
            Code::InvalidArgument,
            "etcdserver: authentication failed, invalid user ID or password"
        )),
        StoreError::Unauthorized(_)
    ));
    assert!(matches!(
        m(status(
            Code::PermissionDenied,
            "etcdserver: permission denied"
        )),
        StoreError::Unauthorized(_)
    ));
    assert!(matches!(
        m(status(
            Code::InvalidArgument,
            "etcdserver: key is not provided"
        )),
        StoreError::Protocol(_)
    ));
    let e = m(status(
        Code::FailedPrecondition,
        "etcdserver: requested lease not found",
    ));
    assert_eq!(
        e.to_string(),
        "store protocol error: op: etcdserver: requested lease not found (FailedPrecondition)"
    );
    assert!(is_compacted(&status(
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted"
    )));
    assert!(is_future_revision(&status(
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision"
    )));
    assert!(!is_compacted(&status(Code::Unavailable, "compacted")));
}

#[test]
fn lease_values_parse_from_bytes() {
    let v = br#"{"PublicIP":"10.0.0.1","PublicIPv6":null}"#;
    assert_eq!(
        parse_lease_value(v).unwrap().public_ip,
        Ipv4Addr::new(10, 0, 0, 1)
    );
    assert!(parse_lease_value(b"not json").is_err());
    assert!(parse_lease_value(b"\xff\xfe").is_err());
    assert!(parse_lease_value(b"{}").is_err());
}

#[test]
fn object_keys_live_under_their_own_prefix() {
    use crate::objects::{Kind, ObjectKey};
    let key = ObjectKey {
        kind: Kind::Service,
        namespace: "default".into(),
        name: "web".into(),
    };
    for prefix in ["/twill/objects", "/twill/objects/"] {
        let k = Keys::new(DEFAULT_ETCD_PREFIX, prefix);
        assert_eq!(k.objects, "/twill/objects/");
        assert_eq!(k.object(&key), "/twill/objects/services/default/web");
        assert_eq!(
            k.parse_object(b"/twill/objects/services/default/web"),
            Ok(key.clone())
        );
    }
    let k = Keys::new(DEFAULT_ETCD_PREFIX, "/x");
    assert_eq!(k.object(&key), "/x/services/default/web");
    let ns = ObjectKey {
        kind: Kind::Namespace,
        namespace: String::new(),
        name: "prod".into(),
    };
    assert_eq!(k.object(&ns), "/x/namespaces/prod");
    assert_eq!(k.parse_object(b"/x/namespaces/prod"), Ok(ns));
    for bad in [
        &b"/twill/objects/services/default/web"[..],
        b"/x/deployments/default/web",
        b"/x/namespaces/default/web",
        b"/x/services/default",
        b"/x/services/default/web/extra",
        b"/x/services/Default/web",
        b"/xservices/default/web",
        b"\xff",
    ] {
        assert!(
            k.parse_object(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn credentials_do_not_print_the_password() {
    let c = Credentials {
        user: "root".into(),
        password: "hunter2".into(),
    };
    let opts = EtcdOptions {
        credentials: Some(c),
        ..EtcdOptions::default()
    };
    let s = format!("{opts:?}");
    assert!(s.contains("root") && !s.contains("hunter2"), "{s}");
}
