//! The README's first command: `twill demo` builds the controller, two
//! leased nodes and four pods, checks every path, and removes everything.

mod common;

use std::process::Command;

use common::*;

#[test]
fn demo_runs_and_cleans_up() {
    if !require_root("demo_runs_and_cleans_up") {
        return;
    }
    let out = Command::new(twill_bin())
        .args(["demo", "--bytes", "2000000"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "twill demo failed: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "controller twill controller on http://",
        "leased subnet 10.244.",
        "pod a1 -> pod b1      (across nodes)",
        "cleaned up: all namespaces removed",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    assert!(!text.contains("FAILED"), "{text}");
    // Nothing of the demo's is left behind: no namespace it named.
    let built: Vec<&str> = text
        .split_whitespace()
        .filter(|w| w.starts_with("twl-demo-"))
        .collect();
    assert!(
        built.len() >= 7,
        "namespaces not named in the output:\n{text}"
    );
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let names = String::from_utf8_lossy(&left.stdout);
    for ns in built {
        assert!(!names.contains(ns), "{ns} left behind:\n{names}");
    }
}
