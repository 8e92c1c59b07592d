//! The measurements of `twill bench`: the iperf3 server and client runs,
//! the machine's busy CPU time around them, the in-process TCP
//! request/response loop and the loop of short connections. Each runs
//! inside lab namespaces only. Servers bind pod B's address; clients
//! connect to the target (pod B, or a ClusterIP in front of it).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{
    ConnRate, Latency, Paced, Throughput, UdpRate, CONN_PORT, IPERF_PORT, RR_PORT, RR_ROUNDS,
    RR_WARMUP, USER_HZ,
};
use crate::cmd::describe;
use crate::netns::Netns;

/// `iperf3 -s` running in pod B; killed and reaped on drop.
#[derive(Debug)]
pub(super) struct IperfServer {
    child: Child,
}

impl IperfServer {
    pub(super) fn start(
        ns: &Netns,
        ip: Ipv4Addr,
        commands: &mut Vec<String>,
    ) -> Result<IperfServer> {
        let mut c = ns.command("setpriv");
        c.args(["--pdeathsig", "KILL", "--", "iperf3", "-s", "-B"])
            .arg(ip.to_string())
            .args(["-p", &IPERF_PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let what = describe(&c);
        commands.push(what.clone());
        let child = c.spawn().with_context(|| format!("starting `{what}`"))?;
        let mut server = IperfServer { child };
        let deadline = Instant::now() + Duration::from_secs(5);
        let sport = format!("sport = :{IPERF_PORT}");
        loop {
            if let Some(st) = server.child.try_wait()? {
                bail!("`{what}` exited at once ({st})");
            }
            let out = ns.exec("ss", &["-Htln", &sport])?;
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                bail!("`{what}` is not listening after 5 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        // Already gone is fine: the wait reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Busy jiffies (all CPUs) of the `cpu` line of /proc/stat.
fn cpu_busy_jiffies() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow!("no `cpu` line in /proc/stat"))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    Ok(get(0) + get(1) + get(2) + get(5) + get(6) + get(7))
}

/// Runs the iperf3 client in `client` for `secs` seconds with `extra`
/// arguments; returns its JSON and the machine's busy CPU seconds meanwhile.
pub(super) fn iperf(
    client: &Netns,
    ip: Ipv4Addr,
    secs: u64,
    extra: &[&str],
    commands: &mut Vec<String>,
    stop: &AtomicBool,
) -> Result<(Value, f64)> {
    let mut c = client.command("iperf3");
    c.args(["-c", &ip.to_string(), "-p", &IPERF_PORT.to_string()])
        .args(["-t", &secs.to_string(), "--json"])
        .args(extra);
    let what = describe(&c);
    commands.push(what.clone());
    let before = cpu_busy_jiffies()?;
    let (status, stdout, stderr) = run_stoppable(c, Duration::from_secs(secs + 20), stop)
        .with_context(|| format!("running `{what}`"))?;
    let after = cpu_busy_jiffies()?;
    let text = String::from_utf8_lossy(&stdout);
    let v: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "`{what}` printed no JSON: {} {}",
            text.trim(),
            String::from_utf8_lossy(&stderr).trim()
        )
    })?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        bail!("`{what}`: {err}");
    }
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok((v, after.saturating_sub(before) as f64 / USER_HZ))
}

/// Runs `c` to completion with stdout and stderr captured, killing it after
/// `timeout` or as soon as `stop` is set (so that Ctrl-C does not wait for
/// the end of a test).
fn run_stoppable(
    mut c: Command,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<(ExitStatus, Vec<u8>, Vec<u8>)> {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn()?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                // A read error just truncates the output.
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Ok(st);
        }
        let interrupted = stop.load(Ordering::SeqCst);
        if interrupted || Instant::now() >= deadline {
            // Already gone is fine: the wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
            break Err(if interrupted {
                anyhow!("interrupted")
            } else {
                anyhow!("did not finish within {timeout:?} (killed)")
            });
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok((status?, stdout, stderr))
}

fn field(v: &Value, path: &[&str]) -> Result<f64> {
    let mut cur = v;
    for p in path {
        cur = cur
            .get(p)
            .ok_or_else(|| anyhow!("iperf3 JSON has no {}", path.join(".")))?;
    }
    cur.as_f64()
        .ok_or_else(|| anyhow!("iperf3 JSON {} is not a number", path.join(".")))
}

pub(super) fn tcp_result(v: &Value, cpu_busy_s: f64) -> Result<Throughput> {
    let bytes = field(v, &["end", "sum_received", "bytes"])?;
    let seconds = field(v, &["end", "sum_received", "seconds"])?;
    let bps = field(v, &["end", "sum_received", "bits_per_second"])?;
    let gbits = bytes * 8.0 / 1e9;
    Ok(Throughput {
        gbit_per_s: bps / 1e9,
        bytes_received: bytes as u64,
        seconds,
        retransmits: v
            .pointer("/end/sum_sent/retransmits")
            .and_then(Value::as_u64),
        cpu_busy_s,
        cpu_s_per_gbit: if gbits > 0.0 {
            cpu_busy_s / gbits
        } else {
            f64::NAN
        },
    })
}

pub(super) fn udp_result(v: &Value, cpu_busy_s: f64) -> Result<UdpRate> {
    let sent = field(v, &["end", "sum_sent", "packets"])?;
    let sent_s = field(v, &["end", "sum_sent", "seconds"])?;
    // The receiver's view, which iperf3 reports back to the client.
    let total = field(v, &["end", "sum_received", "packets"])?;
    let lost = field(v, &["end", "sum_received", "lost_packets"])?;
    let recv_s = field(v, &["end", "sum_received", "seconds"])?;
    let lost_percent = field(v, &["end", "sum_received", "lost_percent"])?;
    let per_s = |n: f64, s: f64| if s > 0.0 { n / s } else { 0.0 };
    Ok(UdpRate {
        sent_pps: per_s(sent, sent_s),
        received_pps: per_s(total - lost, recv_s),
        lost_packets: lost as u64,
        lost_percent,
        cpu_busy_s,
    })
}

/// 1-byte request, 1-byte response over one TCP connection (TCP_NODELAY),
/// timed per round from the client's write to its read. The server listens
/// on `server_ip`, the client connects to `target`.
/// Paced pings from `client` to `ip`: `count` echo requests `interval`
/// apart (what sparse traffic sees: a health check, a DNS lookup, an RPC
/// now and then), each round trip in µs as ping measured it; and the
/// agents' worker wake-ups per round trip (both nodes; `None` without
/// agents).
pub(super) fn paced(
    client: &Netns,
    ip: Ipv4Addr,
    interval: Duration,
    count: u32,
    nodes: &[crate::NodeProcess],
    commands: &mut Vec<String>,
) -> Result<Paced> {
    commands.push(format!(
        "ping -n -c {count} -i {:.3} {ip} (in pod A); each reply's time=",
        interval.as_secs_f64()
    ));
    let wakeups = || -> Option<u64> {
        nodes
            .iter()
            .map(|n| n.counters().ok().map(|c| c.wakeups))
            .sum()
    };
    let before = wakeups();
    let rtts = crate::ping_rtts(client, ip, count, interval)?;
    let after = wakeups();
    let lat = latency(rtts.iter().map(|ms| ms * 1e3).collect());
    let wakeups_per_rt = match (before, after, nodes.is_empty()) {
        (Some(b), Some(a), false) => Some(a.saturating_sub(b) as f64 / f64::from(count)),
        _ => None,
    };
    Ok(Paced {
        interval_ms: interval.as_secs_f64() * 1e3,
        probes: lat.rounds,
        p50_us: lat.p50_us,
        p99_us: lat.p99_us,
        wakeups_per_rt,
    })
}

pub(super) fn request_response(
    client: &Netns,
    server: &Netns,
    server_ip: Ipv4Addr,
    target: Ipv4Addr,
    stop: &AtomicBool,
) -> Result<Latency> {
    let addr = SocketAddrV4::new(server_ip, RR_PORT);
    let listener = server
        .run_in(move || TcpListener::bind(addr))?
        .with_context(|| format!("binding {addr} in {}", server.name()))?;
    listener.set_nonblocking(true)?;
    let echo = thread::spawn(move || -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e).context("accepting the request/response connection"),
            }
        };
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut b = [0u8; 1];
        loop {
            match s.read(&mut b) {
                Ok(0) => return Ok(()),
                Ok(_) => s.write_all(&b)?,
                Err(e) => return Err(e).context("echo server read"),
            }
        }
    });
    let result = rr_client(client, SocketAddrV4::new(target, RR_PORT), stop);
    // The client's socket is closed by now, so the echo thread sees EOF.
    let served = echo
        .join()
        .map_err(|_| anyhow!("the echo thread panicked"))?;
    let lat = result?;
    served?;
    Ok(lat)
}

fn rr_client(client: &Netns, addr: SocketAddrV4, stop: &AtomicBool) -> Result<Latency> {
    let mut s = client
        .run_in(move || TcpStream::connect_timeout(&SocketAddr::V4(addr), Duration::from_secs(5)))?
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut b = [0u8; 1];
    let mut samples = Vec::with_capacity(RR_ROUNDS);
    for i in 0..RR_WARMUP + RR_ROUNDS {
        if i % 500 == 0 && stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        let t = Instant::now();
        s.write_all(&[i as u8])?;
        s.read_exact(&mut b).context("waiting for the response")?;
        let dt = t.elapsed();
        if b[0] != i as u8 {
            bail!("response {} to request {}", b[0], i as u8);
        }
        if i >= RR_WARMUP {
            samples.push(dt.as_secs_f64() * 1e6);
        }
    }
    Ok(latency(samples))
}

/// New connections per second: for `duration`, the client in `client`
/// connects to `target`, sends 1 byte, reads the 1-byte answer and the
/// server's close, and closes; one connection at a time.
///
/// The server closes first, so TIME_WAIT lands on the server's sockets,
/// where it costs nothing (they share the listening port and a new SYN
/// for a 4-tuple in TIME_WAIT is accepted, the timestamps being newer),
/// and the client, the passive closer, frees its ephemeral port at once:
/// no port exhaustion however many connections the test makes. (SO_LINGER
/// 0 on the client would avoid TIME_WAIT too, but by ending every
/// connection with a RST, which is not how short connections end and
/// would spare the connection table its FIN handling.)
pub(super) fn connection_rate(
    client: &Netns,
    server: &Netns,
    server_ip: Ipv4Addr,
    target: Ipv4Addr,
    duration: Duration,
    stop: &AtomicBool,
) -> Result<ConnRate> {
    let addr = SocketAddrV4::new(server_ip, CONN_PORT);
    let listener = server
        .run_in(move || TcpListener::bind(addr))?
        .with_context(|| format!("binding {addr} in {}", server.name()))?;
    listener.set_nonblocking(true)?;
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let served = s.spawn(|| conn_server(&listener, &done));
        let result = conn_client(client, SocketAddrV4::new(target, CONN_PORT), duration, stop);
        done.store(true, Ordering::SeqCst);
        let served = served
            .join()
            .map_err(|_| anyhow!("the connection server thread panicked"))?;
        let rate = result?;
        served?;
        Ok(rate)
    })
}

/// Accepts connections until `done`: reads 1 byte, answers it, closes.
fn conn_server(listener: &TcpListener, done: &AtomicBool) -> Result<u64> {
    let mut served = 0u64;
    while !done.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("polling the listener"),
        }
        let mut s = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e).context("accepting"),
        };
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut b = [0u8; 1];
        // A client that gave up (its connect timed out) is not the
        // server's failure: the client counts it.
        if matches!(s.read(&mut b), Ok(1)) && s.write_all(&b).is_ok() {
            served += 1;
        }
    }
    Ok(served)
}

fn conn_client(
    client: &Netns,
    addr: SocketAddrV4,
    duration: Duration,
    stop: &AtomicBool,
) -> Result<ConnRate> {
    client.run_in(move || {
        let mut samples = Vec::new();
        let mut failed = 0u64;
        let mut first_error = None;
        let start = Instant::now();
        let mut i = 0u64;
        while start.elapsed() < duration {
            if i % 256 == 0 && stop.load(Ordering::SeqCst) {
                bail!("interrupted");
            }
            let t = Instant::now();
            match one_connection(addr, i as u8) {
                Ok(()) => samples.push(t.elapsed().as_secs_f64() * 1e6),
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("connection {i}: {e:#}"));
                    if failed > 100 && failed * 10 > i {
                        bail!("{failed} of {i} connections failed, first: {first_error:?}");
                    }
                }
            }
            i += 1;
        }
        let seconds = start.elapsed().as_secs_f64();
        let lat = latency(samples);
        Ok(ConnRate {
            conn_per_s: lat.rounds as f64 / seconds,
            completed: lat.rounds as u64,
            failed,
            seconds,
            p50_us: lat.p50_us,
            p99_us: lat.p99_us,
            first_error,
        })
    })?
}

/// Connect, write `b`, read it back, read the server's FIN, close.
fn one_connection(addr: SocketAddrV4, b: u8) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::V4(addr), Duration::from_secs(2))
        .context("connecting")?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(&[b]).context("sending")?;
    let mut got = [0u8; 2];
    s.read_exact(&mut got[..1]).context("reading the answer")?;
    if got[0] != b {
        bail!("answer {} to {b}", got[0]);
    }
    match s.read(&mut got) {
        Ok(0) => Ok(()),
        Ok(n) => bail!("{n} unexpected bytes after the answer"),
        Err(e) => Err(e).context("waiting for the server's close"),
    }
}

pub(super) fn latency(mut samples: Vec<f64>) -> Latency {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let at = |q: f64| {
        if n == 0 {
            return f64::NAN;
        }
        let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        samples[i]
    };
    Latency {
        rounds: n,
        mean_us: if n == 0 {
            f64::NAN
        } else {
            samples.iter().sum::<f64>() / n as f64
        },
        p50_us: at(0.50),
        p99_us: at(0.99),
        max_us: samples.last().copied().unwrap_or(f64::NAN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn latency_percentiles() {
        let l = latency((1..=100).map(f64::from).collect());
        assert_eq!(l.rounds, 100);
        assert!((l.mean_us - 50.5).abs() < 1e-9);
        assert_eq!(l.p50_us, 50.0);
        assert_eq!(l.p99_us, 99.0);
        assert_eq!(l.max_us, 100.0);
    }

    #[test]
    fn iperf_json_is_read_from_the_receiver_side() {
        let v = json!({ "end": {
            "sum_sent": { "bytes": 2_000_000_000u64, "seconds": 1.0, "packets": 1000,
                          "retransmits": 7 },
            "sum_received": { "bytes": 1_250_000_000u64, "seconds": 1.0,
                              "bits_per_second": 1.0e10, "packets": 1000,
                              "lost_packets": 250, "lost_percent": 25.0 } } });
        let t = tcp_result(&v, 5.0).unwrap();
        assert!((t.gbit_per_s - 10.0).abs() < 1e-9);
        assert!((t.cpu_s_per_gbit - 0.5).abs() < 1e-9);
        assert_eq!(t.retransmits, Some(7));
        let u = udp_result(&v, 1.0).unwrap();
        assert!((u.received_pps - 750.0).abs() < 1e-9);
        assert!((u.sent_pps - 1000.0).abs() < 1e-9);
        assert_eq!(u.lost_packets, 250);
    }
}
