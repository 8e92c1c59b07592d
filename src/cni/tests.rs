//! The plugin's answers that need no agent: VERSION, malformed input, and
//! "no agent here".

use super::*;

fn env(pairs: &[(&str, &str)]) -> Env {
    let owned: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Env::from_lookup(move |k| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
}

fn conf(version: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"twill","type":"twill-cni","socket":"/nonexistent/twill-test.sock"}}"#
    )
}

fn error_code(o: &Outcome) -> u64 {
    assert_eq!(o.exit, 1, "{o:?}");
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert!(v["msg"].is_string(), "{v}");
    assert!(v["cniVersion"].is_string(), "{v}");
    v["code"].as_u64().unwrap()
}

const ADD: &[(&str, &str)] = &[
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c1"),
    ("CNI_NETNS", "/run/netns/x"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/opt/cni/bin"),
];

fn without(key: &str) -> Vec<(&'static str, &'static str)> {
    ADD.iter().copied().filter(|(k, _)| *k != key).collect()
}

#[test]
fn version_lists_the_supported_versions() {
    let o = run(
        &env(&[("CNI_COMMAND", "VERSION")]),
        br#"{"cniVersion":"1.1.0"}"#,
    );
    assert_eq!(o.exit, 0);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"cniVersion":"1.1.0",
            "supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})
    );
    // VERSION needs no configuration at all.
    assert_eq!(run(&env(&[("CNI_COMMAND", "VERSION")]), b"").exit, 0);
}

#[test]
fn malformed_invocations_get_the_spec_codes() {
    let c = conf("1.0.0");
    assert_eq!(
        error_code(&run(&env(&without("CNI_COMMAND")), c.as_bytes())),
        4
    );
    assert_eq!(
        error_code(&run(&env(&[("CNI_COMMAND", "BOGUS")]), c.as_bytes())),
        4
    );
    for missing in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        let o = run(&env(&without(missing)), c.as_bytes());
        assert_eq!(error_code(&o), 4, "{missing}");
        assert!(o.stdout.contains(missing), "{}", o.stdout);
    }
    let mut bad_id = without("CNI_CONTAINERID");
    bad_id.push(("CNI_CONTAINERID", "../etc"));
    assert_eq!(error_code(&run(&env(&bad_id), c.as_bytes())), 4);
    let mut bad_args = ADD.to_vec();
    bad_args.push(("CNI_ARGS", "FOO=bar"));
    assert_eq!(error_code(&run(&env(&bad_args), c.as_bytes())), 4);
    assert_eq!(error_code(&run(&env(ADD), b"{not json")), 6);
    assert_eq!(
        error_code(&run(&env(ADD), br#"{"cniVersion":"1.0.0","type":"t"}"#)),
        7
    );
    let o = run(&env(ADD), conf("0.2.0").as_bytes());
    assert_eq!(error_code(&o), 1);
    assert!(
        o.stdout.contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
        "{}",
        o.stdout
    );
    // Commands newer than the configuration's version.
    let check = [("CNI_COMMAND", "CHECK"), ADD[1], ADD[2], ADD[3]];
    assert_eq!(error_code(&run(&env(&check), conf("0.3.1").as_bytes())), 1);
    assert_eq!(
        error_code(&run(
            &env(&[("CNI_COMMAND", "STATUS")]),
            conf("1.0.0").as_bytes()
        )),
        1
    );
    assert_eq!(
        error_code(&run(
            &env(&[("CNI_COMMAND", "GC")]),
            conf("1.0.0").as_bytes()
        )),
        1
    );
    // The error carries the configuration's version.
    let o = run(&env(&without("CNI_IFNAME")), conf("0.4.0").as_bytes());
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["cniVersion"], "0.4.0");
}

#[test]
fn no_agent_is_try_again_and_not_available() {
    let c = conf("1.1.0");
    let o = run(&env(ADD), c.as_bytes());
    assert_eq!(error_code(&o), 11);
    assert!(o.stdout.contains("try again"), "{}", o.stdout);
    let del = [("CNI_COMMAND", "DEL"), ADD[1], ADD[3]];
    assert_eq!(error_code(&run(&env(&del), c.as_bytes())), 11);
    assert_eq!(
        error_code(&run(&env(&[("CNI_COMMAND", "STATUS")]), c.as_bytes())),
        50
    );
    let gc = r#"{"cniVersion":"1.1.0","name":"twill","type":"twill-cni","socket":"/nonexistent/x.sock","cni.dev/valid-attachments":[]}"#;
    assert_eq!(
        error_code(&run(&env(&[("CNI_COMMAND", "GC")]), gc.as_bytes())),
        11
    );
    // GC without the list is refused before anything is asked.
    assert_eq!(
        error_code(&run(&env(&[("CNI_COMMAND", "GC")]), c.as_bytes())),
        7
    );
}
