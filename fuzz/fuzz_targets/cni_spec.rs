//! The CNI plugin's input parsing (`twill::cni::spec`): the `CNI_*`
//! environment and the network configuration on stdin, as the plugin reads
//! them before it talks to the agent (no I/O here).
//!
//! Input: for each of `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`,
//! `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH` a byte (bit 0: set) and a
//! length-prefixed value (lossy UTF-8, as any string the OS hands over);
//! the rest is stdin.
//!
//! Checked: empty variables read as unset; what the accessors accept obeys
//! the rules they state (container ID and network name per the spec,
//! interface names of 1 to 15 characters without '/', ':' or spaces); a
//! parsed `IP=` re-emitted parses back the same; a parsed configuration has
//! a supported version, a valid name, a non-empty socket, and its JSON
//! re-emitted parses back to the same configuration (floats in the raw
//! object aside, see below); the error version is
//! a supported one (the configuration's when it parses); every error's
//! JSON carries its code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twill::cni::spec::{self, CniError, Command, Env, NetConf, SUPPORTED_VERSIONS};
use twill_fuzz::Reader;

const VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

fn check_error(e: &CniError, version: &str) {
    let v = e.to_json(version);
    assert_eq!(v["code"].as_u64(), Some(u64::from(e.code)), "{v}");
    assert!(!e.msg.is_empty());
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mut vals: Vec<Option<String>> = Vec::new();
    for _ in VARS {
        let set = r.u8() & 1 != 0;
        let v = String::from_utf8_lossy(r.frame()).into_owned();
        vals.push(set.then_some(v));
    }
    let stdin = r.bytes(usize::MAX);
    let env = Env::from_lookup(|k| {
        let i = VARS.iter().position(|v| *v == k)?;
        vals[i].clone()
    });
    for (got, want) in [
        (&env.command, &vals[0]),
        (&env.container_id, &vals[1]),
        (&env.netns, &vals[2]),
        (&env.ifname, &vals[3]),
        (&env.args, &vals[4]),
        (&env.path, &vals[5]),
    ] {
        let want = want.as_ref().filter(|s| !s.is_empty());
        assert_eq!(got.as_ref(), want);
    }

    let version = spec::error_version(stdin);
    assert!(SUPPORTED_VERSIONS.contains(&version.as_str()));
    if let Some(c) = env.command.as_deref() {
        match Command::parse(c) {
            Ok(cmd) => assert!(SUPPORTED_VERSIONS.contains(&cmd.since())),
            Err(e) => check_error(&e, &version),
        }
    }
    match env.container_id("ADD") {
        Ok(id) => assert!(spec::valid_name(id) && env.container_id.as_deref() == Some(id)),
        Err(e) => check_error(&e, &version),
    }
    match env.ifname("ADD") {
        Ok(n) => {
            assert!(!n.is_empty() && n.len() <= 15 && n != "." && n != "..");
            assert!(!n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()));
        }
        Err(e) => check_error(&e, &version),
    }
    match spec::parse_args(env.args.as_deref()) {
        Ok(a) => {
            if let Some(ip) = a.ip {
                assert_eq!(spec::parse_args(Some(&format!("IP={ip}"))), Ok(a));
            }
        }
        Err(e) => check_error(&e, &version),
    }

    match NetConf::parse(stdin) {
        Ok(c) => {
            assert!(SUPPORTED_VERSIONS.contains(&c.cni_version.as_str()));
            assert!(spec::valid_name(&c.name));
            assert!(!c.socket.as_os_str().is_empty());
            assert_eq!(version, c.cni_version);
            let again = serde_json::to_vec(&c.raw).expect("a map serializes");
            let d = NetConf::parse(&again).expect("parse→emit→parse");
            // The typed fields exactly; of the raw object its keys: serde_json
            // (without its float_roundtrip feature) may read a float 1 ULP
            // off, so a re-emitted number can differ (twill only reads the
            // raw object, never emits it).
            assert_eq!(
                (&d.cni_version, &d.name, &d.kind, &d.socket),
                (&c.cni_version, &c.name, &c.kind, &c.socket),
                "parse→emit→parse"
            );
            assert!(d.raw.keys().eq(c.raw.keys()), "parse→emit→parse: keys");
        }
        Err(e) => check_error(&e, &version),
    }
});
