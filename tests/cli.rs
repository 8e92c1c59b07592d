//! The command line as a user meets it: bad input gives one clear error and
//! a non-zero exit, without root and without an agent.

// Helpers outside #[test] functions panic on failure too: this is a test crate.
#![allow(clippy::expect_used)]

use std::process::Command;

fn twill(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_twill"))
        .args(args)
        .output()
        .expect("run twill");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("twill-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join("node.json");
    std::fs::write(&p, text).expect("write config");
    p
}

#[test]
fn bad_config_is_one_clear_error() {
    let p = temp_file(
        "typo",
        r#"{"name":"a","public_ip":"192.168.100.1","subnet":"10.244.1.0/24",
            "net_conf":{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}},"peerz":[]}"#,
    );
    let (code, out, err) = twill(&["node", "--config", p.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_dir_all(p.parent().expect("parent"));
    assert_eq!(code, 1, "stderr: {err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("unknown key \"peerz\""), "{err}");
    assert_eq!(err.matches("unknown key").count(), 1, "said once: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn bad_backend_names_the_supported_ones() {
    let p = temp_file(
        "backend",
        r#"{"name":"a","public_ip":"192.168.100.1","subnet":"10.244.1.0/24",
            "net_conf":{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}}"#,
    );
    let (code, _, err) = twill(&["node", "--config", p.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_dir_all(p.parent().expect("parent"));
    assert_eq!(code, 1);
    assert!(
        err.contains("wireguard") && err.contains("vxlan") && err.contains("udp"),
        "{err}"
    );
}

#[test]
fn missing_config_file_and_absent_agent() {
    let (code, _, err) = twill(&["node", "--config", "/nonexistent/twill.json"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /nonexistent/twill.json"), "{err}");
    let (code, _, err) = twill(&["status", "--socket", "/nonexistent/twill.sock"]);
    assert_eq!(code, 1);
    assert!(err.contains("is `twill node` running?"), "{err}");
    let (code, _, err) = twill(&["pod", "detach", "--socket", "/nonexistent/twill.sock"]);
    assert_eq!(code, 1);
    assert!(err.contains("--id ID, or --netns NS"), "{err}");
}

/// `--help` tells the truth: `demo` and `bench` are listed exactly when the
/// binary was built with the lab (feature `lab`), and a build without it
/// says so and refuses them.
#[test]
fn help_lists_the_lab_commands_only_when_built_in() {
    let (code, out, err) = twill(&["--help"]);
    assert_eq!(code, 0, "stderr: {err}");
    let listed = |cmd: &str| {
        out.lines()
            .any(|l| l.trim_start().starts_with(&format!("{cmd} ")))
    };
    assert!(listed("bench-control"), "{out}");
    for cmd in ["demo", "bench"] {
        assert_eq!(listed(cmd), cfg!(feature = "lab"), "{cmd} in:\n{out}");
    }
    if !cfg!(feature = "lab") {
        assert!(out.contains("no network-namespace lab"), "{out}");
        for cmd in ["demo", "bench"] {
            let (code, _, err) = twill(&[cmd, "--duration", "1"]);
            assert_eq!(code, 1, "{err}");
            assert!(
                err.contains("built without the network-namespace lab"),
                "{err}"
            );
        }
    }
}
