use super::*;

#[test]
fn commands_and_their_versions() {
    for (s, c) in [
        ("ADD", Command::Add),
        ("DEL", Command::Del),
        ("CHECK", Command::Check),
        ("STATUS", Command::Status),
        ("VERSION", Command::Version),
        ("GC", Command::Gc),
    ] {
        assert_eq!(Command::parse(s), Ok(c));
    }
    for bad in ["add", "INIT", ""] {
        assert_eq!(Command::parse(bad).unwrap_err().code, code::INVALID_ENV);
    }
    assert!(version_at_least("0.4.0", Command::Check.since()));
    assert!(!version_at_least("0.3.1", Command::Check.since()));
    assert!(!version_at_least("1.0.0", Command::Gc.since()));
    assert!(version_at_least("1.1.0", Command::Status.since()));
    assert!(!version_at_least("2.0.0", "0.3.0"));
    assert!(ips_have_version("0.4.0"));
    assert!(!ips_have_version("1.0.0"));
}

#[test]
fn config_parsing() {
    let c = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"twill","type":"twill-cni","socket":"/x.sock","args":{"a":1}}"#)
        .unwrap();
    assert_eq!(c.cni_version, "1.0.0");
    assert_eq!(c.name, "twill");
    assert_eq!(c.kind, "twill-cni");
    assert_eq!(c.socket, PathBuf::from("/x.sock"));
    let d = NetConf::parse(br#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#).unwrap();
    assert_eq!(d.socket, PathBuf::from(DEFAULT_SOCKET));

    let cases: &[(&[u8], u32)] = &[
        (b"{", code::DECODE),
        (b"[1]", code::DECODE),
        (b"", code::DECODE),
        (br#"{"name":"n","type":"t"}"#, code::INCOMPATIBLE_VERSION),
        (
            br#"{"cniVersion":"0.2.0","name":"n","type":"t"}"#,
            code::INCOMPATIBLE_VERSION,
        ),
        (
            br#"{"cniVersion":"9.9.9","name":"n","type":"t"}"#,
            code::INCOMPATIBLE_VERSION,
        ),
        (
            br#"{"cniVersion":1,"name":"n","type":"t"}"#,
            code::INVALID_CONFIG,
        ),
        (
            br#"{"cniVersion":"1.0.0","type":"t"}"#,
            code::INVALID_CONFIG,
        ),
        (
            br#"{"cniVersion":"1.0.0","name":"-x","type":"t"}"#,
            code::INVALID_CONFIG,
        ),
        (
            br#"{"cniVersion":"1.0.0","name":"n"}"#,
            code::INVALID_CONFIG,
        ),
        (
            br#"{"cniVersion":"1.0.0","name":"n","type":"t","socket":7}"#,
            code::INVALID_CONFIG,
        ),
        (
            br#"{"cniVersion":"1.0.0","name":"n","type":"t","socket":""}"#,
            code::INVALID_CONFIG,
        ),
        (
            br#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"type":"host-local"}}"#,
            code::UNSUPPORTED_FIELD,
        ),
    ];
    for (input, want) in cases {
        let e = NetConf::parse(input).unwrap_err();
        assert_eq!(e.code, *want, "{}: {e}", String::from_utf8_lossy(input));
    }
    assert_eq!(error_version(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
    assert_eq!(error_version(br#"{"cniVersion":"0.2.0"}"#), CURRENT_VERSION);
    assert_eq!(error_version(b"nonsense"), CURRENT_VERSION);
}

#[test]
fn error_object_shape() {
    let e = CniError::new(code::TRY_AGAIN, "later");
    assert_eq!(
        e.to_json("0.4.0"),
        serde_json::json!({"cniVersion":"0.4.0","code":11,"msg":"later"})
    );
    assert_eq!(
        e.details("why").to_json("1.1.0"),
        serde_json::json!({"cniVersion":"1.1.0","code":11,"msg":"later","details":"why"})
    );
}

#[test]
fn env_checks() {
    let env = Env::from_lookup(|k| match k {
        "CNI_COMMAND" => Some("ADD".into()),
        "CNI_CONTAINERID" => Some("abc-1.x_y".into()),
        "CNI_IFNAME" => Some("eth0".into()),
        "CNI_NETNS" => Some(String::new()),
        _ => None,
    });
    assert_eq!(env.container_id("ADD"), Ok("abc-1.x_y"));
    assert_eq!(env.ifname("ADD"), Ok("eth0"));
    assert_eq!(env.netns, None, "empty counts as unset");
    for (id, ok) in [
        ("a", true),
        ("0f", true),
        ("-a", false),
        ("a/b", false),
        ("a b", false),
    ] {
        let e = Env {
            container_id: Some(id.into()),
            ..Env::default()
        };
        assert_eq!(e.container_id("ADD").is_ok(), ok, "{id}");
    }
    for (n, ok) in [
        ("net1", true),
        ("abcdefghijklmnop", false),
        ("a:b", false),
        ("..", false),
    ] {
        let e = Env {
            ifname: Some(n.into()),
            ..Env::default()
        };
        assert_eq!(e.ifname("ADD").is_ok(), ok, "{n}");
    }
    let e = Env::default().container_id("DEL").unwrap_err();
    assert_eq!(e.code, code::INVALID_ENV);
    assert!(e.msg.contains("CNI_CONTAINERID"), "{e}");
}

#[test]
fn cni_args() {
    assert_eq!(parse_args(None), Ok(CniArgs::default()));
    assert_eq!(
        parse_args(Some("IP=10.244.1.7")).unwrap().ip,
        Some(Ipv4Addr::new(10, 244, 1, 7))
    );
    // What kubelet's runtimes send: the pod's identity, for NetworkPolicy.
    let k8s = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u;X=y";
    assert_eq!(
        parse_args(Some(k8s)).unwrap().pod,
        Some(crate::api::PodRef::new("default", "web").unwrap())
    );
    for bad in [
        "K8S_POD_NAME=web;",
        "K8S_POD_NAMESPACE=default",
        "K8S_POD_NAMESPACE=Default;K8S_POD_NAME=web",
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=we/b",
        "X=y",
        "IP=10.244.1",
        "IP=fd00::1",
        "novalue",
        "=v",
        "IgnoreUnknown=0;X=1",
    ] {
        assert_eq!(
            parse_args(Some(bad)).unwrap_err().code,
            code::INVALID_ENV,
            "{bad}"
        );
    }
}

#[test]
fn port_security_exceptions_come_from_the_runtime_args() {
    let none = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#).unwrap();
    assert_eq!(
        port_security(&none),
        Ok(crate::api::PortSecurity::default())
    );
    let c = NetConf::parse(
        br#"{"cniVersion":"1.0.0","name":"n","type":"t","args":{"cni":{"portSecurity":
            {"allowedMacs":["0a:58:0a:f4:01:c8"],"allowedIPs":["10.244.1.200/32"]}}}}"#,
    )
    .unwrap();
    let ps = port_security(&c).unwrap();
    assert_eq!(ps.allowed_macs, vec!["0a:58:0a:f4:01:c8".to_owned()]);
    assert_eq!(ps.allowed_ips, vec!["10.244.1.200/32".to_owned()]);
    // A misspelt key is an error naming the place, not an exception lost.
    let bad = NetConf::parse(
        br#"{"cniVersion":"1.0.0","name":"n","type":"t","args":{"cni":{"portSecurity":{"allowedIps":[]}}}}"#,
    )
    .unwrap();
    let e = port_security(&bad).unwrap_err();
    assert_eq!(e.code, code::INVALID_CONFIG);
    assert!(e.msg.contains("args.cni.portSecurity"), "{e}");
}
