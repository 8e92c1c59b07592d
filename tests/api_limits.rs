//! The local API under abuse (issue 13): a client that exhausts the agent's
//! descriptors, holds too many connections, sends an endless line or
//! nothing at all must not take the API, the CPU or the memory with it.
//! Each test runs a real agent in its own namespace.

// Helpers outside #[test] functions panic on failure too: this is a test crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);

/// A namespace whose loopback holds the node's public address.
fn namespace(prefix: &str) -> Netns {
    let ns = Netns::new(prefix).unwrap();
    ns.ip(&["addr", "add", "192.168.100.1/32", "dev", "lo"])
        .unwrap();
    ns
}

fn config() -> NodeConfig {
    NodeConfig::new("node-a", PUBLIC_IP, subnet(1), "vxlan")
}

fn proc_field(pid: u32, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    text.lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/{file}"))[key.len()..]
        .trim()
        .to_owned()
}

/// Resident memory, KiB.
fn rss_kib(pid: u32) -> u64 {
    let v = proc_field(pid, "status", "VmRSS:");
    v.trim_end_matches("kB").trim().parse().unwrap()
}

/// CPU time used (user + system, all threads), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A connection that never blocks in connect: `None` when the listen queue is full.
fn connect_nonblocking(path: &Path) -> Option<OwnedFd> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &UnixAddr::new(path).unwrap(),
    )
    .ok()?;
    Some(fd)
}

/// `twill status` answers within `within`; the last error otherwise.
fn wait_status(node: &NodeProcess, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        match node.status() {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(format!("{e:#}")),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Reads one line (up to `timeout`); then whether the agent closed the connection.
fn read_reply(s: &UnixStream, timeout: Duration) -> (String, bool) {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)
        .unwrap_or_else(|e| panic!("no reply within {timeout:?}: {e}"));
    let mut rest = [0u8; 64];
    let closed = match r.read(&mut rest) {
        Ok(0) => true,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        _ => false,
    };
    (line, closed)
}

#[test]
fn the_api_survives_fd_exhaustion() {
    if !require_root("the_api_survives_fd_exhaustion") {
        return;
    }
    let ns = namespace("twl-api-fd");
    // soft = hard: raising the soft limit at start cannot help.
    let node = NodeProcess::start_wrapped(
        &twill_bin(),
        &ns,
        config(),
        &["prlimit", "--nofile=256:256", "--"],
        &[],
    )
    .unwrap();
    let pid = node.pid().unwrap();
    assert_eq!(
        proc_field(pid, "limits", "Max open files"),
        "256                  256                  files"
    );
    // Leave the agent 8 descriptors, whatever it uses at rest, so that it
    // runs out below the connection cap too.
    let limit = open_fds(pid) + 8;
    let out = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "prlimit: {out:?}");

    let log_lines = || {
        std::fs::read_to_string(node.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("accept"))
            .count()
    };
    let mut held = Vec::new();
    while held.len() < 200 {
        match connect_nonblocking(node.socket()) {
            Some(fd) => held.push(fd),
            None => break,
        }
    }
    assert!(held.len() >= 100, "only {} connections", held.len());
    std::thread::sleep(Duration::from_millis(500));
    let (cpu0, t0) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let cpu = cpu_ticks(pid) - cpu0;
    let ticks = t0.elapsed().as_secs_f64() * 100.0;
    let lines = log_lines();
    eprintln!(
        "while out of descriptors: {cpu} CPU ticks in {ticks:.0}, {lines} log lines about accept"
    );
    assert!(
        (cpu as f64) < ticks * 0.1,
        "the agent used {cpu} CPU ticks in {ticks:.0} while out of descriptors"
    );
    assert!(lines < 100, "{lines} log lines about accept");

    drop(held);
    wait_status(&node, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("the API did not come back: {e}"));
    drop(node);
}

#[test]
fn an_oversized_request_is_refused_without_buffering_it() {
    if !require_root("an_oversized_request_is_refused_without_buffering_it") {
        return;
    }
    let ns = namespace("twl-api-big");
    let node = NodeProcess::start(&twill_bin(), &ns, config()).unwrap();
    let pid = node.pid().unwrap();
    node.status().unwrap();
    let before = rss_kib(pid);

    let s = UnixStream::connect(node.socket()).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 << 10];
        // 8 MiB, no newline; stops at the first error (the agent closed).
        for _ in 0..128 {
            if w.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let (line, closed) = read_reply(&s, Duration::from_secs(10));
    writer.join().unwrap();
    let after = rss_kib(pid);
    assert!(line.contains("longer than 1048576 bytes"), "{line}");
    assert!(line.contains(r#""ok":false"#), "{line}");
    assert!(closed, "the connection stayed open");
    assert!(
        after < before + 4096,
        "the agent grew from {before} KiB to {after} KiB"
    );
    node.status().unwrap();
    drop(node);
}

#[test]
fn idle_connections_are_closed() {
    if !require_root("idle_connections_are_closed") {
        return;
    }
    let ns = namespace("twl-api-idle");
    let node = NodeProcess::start_args(
        &twill_bin(),
        &ns,
        config(),
        &["--api-idle-timeout-secs", "2"],
    )
    .unwrap();
    // Silent from the start.
    let quiet = UnixStream::connect(node.socket()).unwrap();
    // Silent after one request.
    let mut asked = UnixStream::connect(node.socket()).unwrap();
    asked.write_all(b"{\"op\":\"status\"}\n").unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 256];
    quiet
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = (&quiet).read(&mut buf).unwrap();
    let waited = t0.elapsed();
    assert_eq!(n, 0, "the agent said something to a silent client");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "closed after {waited:?}, not about 2 s"
    );
    let (line, closed) = read_reply(&asked, Duration::from_secs(10));
    assert!(line.contains(r#""ok":true"#), "{line}");
    assert!(closed, "an idle connection stayed open");
    drop(node);
}

/// A client trickling a request line a byte at a time, each byte well
/// within the idle timeout, is cut when the line has not arrived whole
/// within it (a per-read timeout alone would let 64 such clients hold the
/// API for ever).
#[test]
fn a_trickled_request_line_is_cut_at_the_idle_timeout() {
    if !require_root("a_trickled_request_line_is_cut_at_the_idle_timeout") {
        return;
    }
    let ns = namespace("twl-api-trk");
    let node = NodeProcess::start_args(
        &twill_bin(),
        &ns,
        config(),
        &["--api-idle-timeout-secs", "2"],
    )
    .unwrap();
    let mut s = UnixStream::connect(node.socket()).unwrap();
    let t0 = Instant::now();
    let mut cut = None;
    for b in b"{\"op\":\"status\"".iter().cycle().take(40) {
        std::thread::sleep(Duration::from_millis(250));
        if s.write_all(&[*b]).is_err() {
            cut = Some(t0.elapsed());
            break;
        }
    }
    let cut = cut.expect("still open after 10 s of trickling");
    assert!(
        cut >= Duration::from_millis(1500) && cut < Duration::from_secs(6),
        "cut after {cut:?}, not about 2 s"
    );
    drop(node);
}

#[test]
fn connections_beyond_the_cap_are_refused_with_an_error() {
    if !require_root("connections_beyond_the_cap_are_refused_with_an_error") {
        return;
    }
    let ns = namespace("twl-api-cap");
    let node = NodeProcess::start(&twill_bin(), &ns, config()).unwrap();
    let held: Vec<UnixStream> = (0..64)
        .map(|_| UnixStream::connect(node.socket()).unwrap())
        .collect();
    let extra = UnixStream::connect(node.socket()).unwrap();
    let (line, closed) = read_reply(&extra, Duration::from_secs(5));
    assert!(line.contains("too many API connections"), "{line}");
    assert!(line.contains(r#""ok":false"#), "{line}");
    assert!(closed, "the refused connection stayed open");
    let err = node.status().unwrap_err();
    assert!(
        format!("{err:#}").contains("too many API connections"),
        "{err:#}"
    );
    // The held ones still work.
    let mut first = &held[0];
    first.write_all(b"{\"op\":\"status\"}\n").unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(first).read_line(&mut line).unwrap();
    assert!(line.contains(r#""ok":true"#), "{line}");

    drop(held);
    wait_status(&node, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("the API did not take new connections: {e}"));
    drop(node);
}

#[test]
fn the_soft_fd_limit_is_raised_to_the_hard_one() {
    if !require_root("the_soft_fd_limit_is_raised_to_the_hard_one") {
        return;
    }
    let ns = namespace("twl-api-nofile");
    let node = NodeProcess::start_wrapped(
        &twill_bin(),
        &ns,
        config(),
        &["prlimit", "--nofile=256:4096", "--"],
        &[],
    )
    .unwrap();
    let pid = node.pid().unwrap();
    assert_eq!(
        proc_field(pid, "limits", "Max open files"),
        "4096                 4096                 files"
    );
    let log = std::fs::read_to_string(node.log_path()).unwrap();
    assert!(log.contains("raised the open-file limit"), "{log}");
    drop(node);
}
