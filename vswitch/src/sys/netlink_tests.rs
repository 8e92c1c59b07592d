use super::*;
use crate::sys::tap::Tap;
use crate::sys::testutil::{need_root, unique, TestNs};

const MAC: MacAddr = MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x03]);

#[test]
fn check_prefix_and_name() {
    assert!(check_prefix(Ipv4Addr::new(10, 244, 0, 0), 16).is_ok());
    assert!(check_prefix(Ipv4Addr::UNSPECIFIED, 0).is_ok());
    assert!(check_prefix(Ipv4Addr::new(10, 244, 1, 3), 32).is_ok());
    assert!(check_prefix(Ipv4Addr::new(10, 244, 1, 0), 16).is_err());
    assert!(check_prefix(Ipv4Addr::new(1, 0, 0, 0), 0).is_err());
    assert!(check_prefix(Ipv4Addr::new(10, 0, 0, 0), 33).is_err());
    assert!(check_name("eth0").is_ok());
    assert!(check_name("").is_err());
    assert!(check_name("0123456789abcdef").is_err());
    assert!(check_name("a/b").is_err());
}

#[test]
fn refuses_to_block_inside_a_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let e = rt.block_on(async { Netlink::new().unwrap_err() });
    assert!(matches!(e, NetlinkError::Invalid(_)), "{e}");
}

/// The pod set-up: TAP moved and renamed into the pod namespace,
/// configured there, default route via the gateway, lo up.
#[test]
fn move_rename_configure_and_route() {
    if !need_root("netlink::move_rename_configure_and_route") {
        return;
    }
    let host = TestNs::new();
    let pod = TestNs::new();
    let tap = host.ns.run(|| Tap::create("twtap%d")).unwrap().unwrap();
    let old = tap.name().to_owned();
    let created = tap.created_ifindex();
    host.ns
        .run(|| move_link_to_netns(created, &pod.ns, "eth0"))
        .unwrap()
        .unwrap();
    assert_eq!(host.ns.run(|| link_index(&old)).unwrap().unwrap(), None);

    let (index, link, routes, addrs) = pod
        .ns
        .run(|| {
            let nl = Netlink::new().unwrap();
            let cfg = LinkConfig {
                mac: Some(MAC),
                mtu: Some(1450),
                addrs: vec![(Ipv4Addr::new(10, 244, 1, 3), 24)],
                up: true,
            };
            let index = nl.configure_link("eth0", &cfg).unwrap();
            // Idempotent: the same again is fine.
            assert_eq!(nl.configure_link("eth0", &cfg).unwrap(), index);
            nl.set_link_up("lo").unwrap();
            add_default_route_v4(Ipv4Addr::new(10, 244, 1, 1), Some(index)).unwrap();
            // A flannel-style onlink route via a gateway outside the subnet.
            add_route_v4(
                (Ipv4Addr::new(10, 244, 2, 0), 24),
                Some(Ipv4Addr::new(10, 244, 2, 0)),
                Some(index),
                true,
            )
            .unwrap();
            add_route_v4((Ipv4Addr::new(10, 244, 0, 0), 16), None, Some(index), false).unwrap();
            (
                index,
                nl.link("eth0").unwrap().unwrap(),
                nl.routes_v4().unwrap(),
                nl.addresses_v4(index).unwrap(),
            )
        })
        .unwrap();

    assert_eq!(tap.current_name().unwrap(), "eth0");
    assert_eq!(link.index, index);
    assert_eq!((link.mac, link.mtu, link.up), (Some(MAC), Some(1450), true));
    assert_eq!(addrs, vec![(Ipv4Addr::new(10, 244, 1, 3), 24)]);
    let want_default = RouteV4 {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix_len: 0,
        gateway: Some(Ipv4Addr::new(10, 244, 1, 1)),
        oif: Some(index),
        onlink: false,
        protocol: 4, // static: rtnetlink's default
    };
    assert!(routes.contains(&want_default), "{routes:?}");
    assert!(
        routes
            .iter()
            .any(|r| r.dst == Ipv4Addr::new(10, 244, 2, 0) && r.onlink),
        "{routes:?}"
    );
    let shown = pod.ip(&["route", "show"]);
    assert!(shown.contains("default via 10.244.1.1 dev eth0"), "{shown}");
    assert!(
        shown.contains("10.244.2.0/24 via 10.244.2.0 dev eth0"),
        "{shown}"
    );
    assert!(shown.contains("onlink"), "{shown}");
    assert!(shown.contains("10.244.0.0/16 dev eth0"), "{shown}");
    assert!(
        shown.contains("10.244.1.0/24 dev eth0 proto kernel scope link src 10.244.1.3"),
        "{shown}"
    );
    assert!(pod.ip(&["-o", "link", "show", "lo"]).contains("UP"));

    // Routes go away again, whatever their scope.
    pod.ns
        .run(|| {
            delete_route_v4((Ipv4Addr::new(10, 244, 0, 0), 16)).unwrap();
            delete_route_v4((Ipv4Addr::new(10, 244, 2, 0), 24)).unwrap();
            let e = delete_route_v4((Ipv4Addr::new(10, 244, 2, 0), 24)).unwrap_err();
            assert_eq!(e.errno(), Some(libc::ESRCH), "{e}");
        })
        .unwrap();
    let shown = pod.ip(&["route", "show"]);
    assert!(
        !shown.contains("10.244.2.0/24") && !shown.contains("10.244.0.0/16"),
        "{shown}"
    );
}

#[test]
fn move_fails_clearly_when_the_name_is_taken() {
    if !need_root("netlink::move_fails_clearly_when_the_name_is_taken") {
        return;
    }
    let host = TestNs::new();
    let pod = TestNs::new();
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    let tap = host.ns.run(|| Tap::create("twtap%d")).unwrap().unwrap();
    let idx = tap.created_ifindex();
    let e = host
        .ns
        .run(|| move_link_to_netns(idx, &pod.ns, "eth0"))
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, NetlinkError::LinkExists { .. }), "{e}");
    assert!(e.to_string().contains("eth0"), "{e}");
    // Nothing moved.
    let here = host.ns.run(|| link_index(tap.name())).unwrap().unwrap();
    assert_eq!(here, Some(idx));

    // A missing link is the kernel's error, with the errno kept.
    let e = host
        .ns
        .run(|| move_link_to_netns(999_999, &pod.ns, "eth1"))
        .unwrap()
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc::ENODEV), "{e}");
}

#[test]
fn mtu_of_link_with_address_on_a_veth() {
    if !need_root("netlink::mtu_of_link_with_address_on_a_veth") {
        return;
    }
    let t = TestNs::new();
    let a = format!("twva{}", unique());
    let b = format!("twvb{}", unique());
    t.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
    t.ip(&["link", "set", &a, "mtu", "1450"]);
    t.ip(&["addr", "add", "192.168.77.1/24", "dev", &a]);
    t.ip(&["addr", "add", "192.168.78.1/24", "dev", &b]);
    let (found, other, none, gone) =
        t.ns.run(|| {
            let found = mtu_of_link_with_address(Ipv4Addr::new(192, 168, 77, 1)).unwrap();
            let other = mtu_of_link_with_address(Ipv4Addr::new(192, 168, 78, 1)).unwrap();
            let none = mtu_of_link_with_address(Ipv4Addr::new(192, 168, 77, 2)).unwrap();
            delete_link_by_name(&a).unwrap();
            let gone = (link_index(&a).unwrap(), link_index(&b).unwrap());
            (found, other, none, gone)
        })
        .unwrap();
    assert_eq!(found, Some(1450));
    assert_eq!(other, Some(1500));
    assert_eq!(none, None);
    assert_eq!(
        gone,
        (None, None),
        "deleting one end of a veth deletes both"
    );
    t.ns.run(|| {
        let e = delete_link_by_name(&a).unwrap_err();
        assert!(matches!(e, NetlinkError::NoSuchLink(_)), "{e}");
        let e = delete_link(999_999).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENODEV), "{e}");
    })
    .unwrap();
}
