//! Traffic between lab namespaces, each helper with a deadline and an error
//! that says what was expected: `ping`, a byte-verified TCP transfer and a
//! content-checked UDP exchange.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd;
use crate::netns::Netns;

/// Result of [`ping`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingReport {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Echo replies received.
    pub received: u32,
    /// Average round-trip time in milliseconds.
    pub rtt_avg_ms: f64,
}

/// `ping -c COUNT -i 0.2 -W 2 TO` from inside `from`. Succeeds only when
/// `count` replies arrive before a deadline of `count × 0.2 s + 5 s` (ping keeps
/// sending until then, so a first packet lost to ARP resolution is tolerated).
pub fn ping(from: &Netns, to: Ipv4Addr, count: u32) -> Result<PingReport> {
    let count = count.max(1);
    let deadline = count / 5 + 6;
    let mut c = from.command("ping");
    c.args(["-n", "-q", "-c", &count.to_string(), "-i", "0.2", "-W", "2"])
        .args(["-w", &deadline.to_string(), &to.to_string()]);
    let out = cmd::run_timeout(c, Duration::from_secs(u64::from(deadline) + 5))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "ping {} -> {to}: expected {count} replies within {deadline} s, got: {} {}",
            from.name(),
            summary_line(&text),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_ping(&text).with_context(|| format!("parsing ping output: {text}"))
}

/// `ping -c COUNT -i INTERVAL TO` from inside `from`: the round-trip time
/// of every echo reply, in milliseconds, in the order they came. Fails
/// when fewer than `count` replies arrive.
pub fn ping_rtts(from: &Netns, to: Ipv4Addr, count: u32, interval: Duration) -> Result<Vec<f64>> {
    let count = count.max(1);
    let deadline = (f64::from(count) * interval.as_secs_f64()) as u64 + 6;
    let mut c = from.command("ping");
    c.args(["-n", "-c", &count.to_string()])
        .args(["-i", &format!("{:.3}", interval.as_secs_f64())])
        .args(["-W", "2", "-w", &deadline.to_string(), &to.to_string()]);
    let out = cmd::run_timeout(c, Duration::from_secs(deadline + 5))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rtts: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            l.split("time=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    if rtts.len() < count as usize {
        bail!(
            "ping {} -> {to}: expected {count} replies within {deadline} s, got {}: {} {}",
            from.name(),
            rtts.len(),
            summary_line(&text),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(rtts)
}

/// Succeeds when `to` does NOT answer two pings within 2 s from `from`.
pub fn ping_unanswered(from: &Netns, to: Ipv4Addr) -> Result<()> {
    let mut c = from.command("ping");
    c.args([
        "-n",
        "-q",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "1",
        "-w",
        "2",
        &to.to_string(),
    ]);
    let out = cmd::run_timeout(c, Duration::from_secs(10))?;
    if out.status.success() {
        bail!(
            "{to} answered ping from {} but should not: {}",
            from.name(),
            summary_line(&String::from_utf8_lossy(&out.stdout))
        );
    }
    Ok(())
}

fn summary_line(text: &str) -> &str {
    text.lines()
        .find(|l| l.contains("transmitted"))
        .unwrap_or("(no summary)")
}

fn parse_ping(text: &str) -> Result<PingReport> {
    let summary = summary_line(text);
    let mut nums = summary
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
    let transmitted = nums.next().ok_or_else(|| anyhow!("no transmitted count"))?;
    let received = nums.next().ok_or_else(|| anyhow!("no received count"))?;
    let rtt_avg_ms = text
        .lines()
        .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no rtt line"))?;
    Ok(PingReport {
        transmitted,
        received,
        rtt_avg_ms,
    })
}

/// Result of a TCP transfer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransferReport {
    /// Bytes sent, received and verified.
    pub bytes: usize,
    /// Seconds from the connection being established to the server's acknowledgement.
    pub secs: f64,
    /// `bytes × 8 / secs / 1e9`.
    pub gbit_per_s: f64,
}

/// Limits of [`tcp_transfer_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferOptions {
    /// Bytes to send (fewer if `max_time` ends the transfer first).
    pub bytes: usize,
    /// Stop sending after this long (the bytes sent so far are still verified).
    pub max_time: Option<Duration>,
    /// Fail when no progress is made for this long (connect, read, write).
    pub stall_timeout: Duration,
}

impl TransferOptions {
    /// Exactly `bytes`, failing after 10 s without progress.
    pub fn bytes(bytes: usize) -> TransferOptions {
        TransferOptions {
            bytes,
            max_time: None,
            stall_timeout: Duration::from_secs(10),
        }
    }
}

/// Length of the repeating payload pattern: a prime-ish odd length so that
/// pattern repeats never line up with segment or buffer sizes.
const PATTERN_LEN: usize = (1 << 20) + 13;
const CHUNK: usize = 256 * 1024;

/// The payload pattern: [`PATTERN_LEN`] bytes of xorshift64 output.
fn pattern() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut v = Vec::with_capacity(PATTERN_LEN + 8);
        while v.len() < PATTERN_LEN {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(PATTERN_LEN);
        v
    })
}

/// The pattern's bytes from stream offset `off`, at most `max` of them.
fn pattern_at(off: u64, max: usize) -> &'static [u8] {
    let p = pattern();
    let start = (off % PATTERN_LEN as u64) as usize;
    let n = max.min(PATTERN_LEN - start);
    &p[start..start + n]
}

/// Checks that `data` is the pattern stream at offset `off`.
fn verify(data: &[u8], off: u64) -> Result<()> {
    let mut i = 0;
    while i < data.len() {
        let want = pattern_at(off + i as u64, data.len() - i);
        let got = &data[i..i + want.len()];
        if got != want {
            let k = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
            bail!(
                "payload mismatch at stream byte {}: got {:#04x}, want {:#04x}",
                off + (i + k) as u64,
                got[k],
                want[k]
            );
        }
        i += want.len();
    }
    Ok(())
}

/// Sends `bytes` of a pseudo-random payload over TCP from `client` to a
/// listener on `server_ip` in `server`; the server checks every byte and
/// acknowledges the count. Fails after 10 s without progress.
pub fn tcp_transfer(
    server: &Netns,
    server_ip: Ipv4Addr,
    client: &Netns,
    bytes: usize,
) -> Result<TransferReport> {
    tcp_transfer_with(server, server_ip, client, TransferOptions::bytes(bytes))
}

/// [`tcp_transfer`] with a time cap and a chosen stall timeout.
pub fn tcp_transfer_with(
    server: &Netns,
    server_ip: Ipv4Addr,
    client: &Netns,
    opts: TransferOptions,
) -> Result<TransferReport> {
    let what = format!("TCP {} -> {}:{server_ip}", client.name(), server.name());
    let listener = server
        .run_in(|| TcpListener::bind((server_ip, 0)))?
        .with_context(|| format!("{what}: binding the listener"))?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    let stall = opts.stall_timeout;
    let srv = thread::spawn(move || serve_verify(listener, stall));

    let client_res = (|| -> Result<(usize, Duration)> {
        let to = SocketAddr::from((server_ip, port));
        let mut s = client
            .run_in(|| TcpStream::connect_timeout(&to, stall))?
            .with_context(|| format!("connecting to {to}"))?;
        s.set_write_timeout(Some(stall))?;
        s.set_read_timeout(Some(stall))?;
        let start = Instant::now();
        let mut sent = 0usize;
        while sent < opts.bytes {
            if opts.max_time.is_some_and(|t| start.elapsed() >= t) {
                break;
            }
            let chunk = pattern_at(sent as u64, (opts.bytes - sent).min(CHUNK));
            s.write_all(chunk)
                .with_context(|| format!("sending at byte {sent}"))?;
            sent += chunk.len();
        }
        s.shutdown(Shutdown::Write)?;
        let mut ack = [0u8; 8];
        s.read_exact(&mut ack)
            .context("waiting for the server's acknowledgement")?;
        let acked = u64::from_be_bytes(ack);
        if acked != sent as u64 {
            bail!("server acknowledged {acked} bytes, {sent} were sent");
        }
        Ok((sent, start.elapsed()))
    })();

    match client_res {
        Ok((sent, elapsed)) => {
            let received = srv
                .join()
                .map_err(|_| anyhow!("{what}: server thread panicked"))?
                .with_context(|| format!("{what}: server side"))?;
            if received != sent as u64 {
                bail!("{what}: server verified {received} bytes, {sent} were sent");
            }
            let secs = elapsed.as_secs_f64().max(1e-9);
            Ok(TransferReport {
                bytes: sent,
                secs,
                gbit_per_s: sent as f64 * 8.0 / secs / 1e9,
            })
        }
        Err(e) => {
            // Report the server's view too when it already knows what went wrong.
            let deadline = Instant::now() + Duration::from_secs(1);
            while !srv.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if srv.is_finished() {
                if let Ok(Err(se)) = srv.join() {
                    return Err(e.context(format!("{what}: client side (server: {se:#})")));
                }
            }
            Err(e.context(format!("{what}: client side")))
        }
    }
}

/// Accepts one connection, verifies the pattern stream until EOF and writes
/// back the byte count.
fn serve_verify(listener: TcpListener, stall: Duration) -> Result<u64> {
    let deadline = Instant::now() + stall;
    let mut s = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    bail!("no connection within {stall:?}");
                }
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e).context("accept"),
        }
    };
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(stall))?;
    s.set_write_timeout(Some(stall))?;
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("receiving at byte {off}")),
        };
        verify(&buf[..n], off)?;
        off += n as u64;
    }
    s.write_all(&off.to_be_bytes()).context("acknowledging")?;
    Ok(off)
}

/// A UDP socket bound to `addr` inside `ns`.
pub fn udp_socket(ns: &Netns, addr: SocketAddrV4) -> Result<UdpSocket> {
    ns.run_in(|| UdpSocket::bind(addr))?
        .with_context(|| format!("binding UDP {addr} in {}", ns.name()))
}

/// Datagram `seq` of [`udp_exchange`]: the sequence number, then pattern bytes.
fn datagram(seq: u32) -> Vec<u8> {
    let len = 64 + (seq as usize * 137) % 1136;
    let mut d = Vec::with_capacity(len);
    d.extend_from_slice(&seq.to_be_bytes());
    d.extend_from_slice(pattern_at(u64::from(seq) * 4099, len - 4));
    d
}

/// The answer to a datagram: every byte after the sequence number inverted.
fn answer(mut d: Vec<u8>) -> Vec<u8> {
    for b in d.iter_mut().skip(4) {
        *b = !*b;
    }
    d
}

/// Sends `n` datagrams (64–1199 bytes) from `a_ip` in `a` to `b_ip` in `b`;
/// `b` checks each and answers with a transformed copy that `a` checks. Each
/// datagram is retried up to 5 times (500 ms apart) before the exchange fails.
pub fn udp_exchange(a: &Netns, a_ip: Ipv4Addr, b: &Netns, b_ip: Ipv4Addr, n: u32) -> Result<()> {
    let what = format!("UDP {}:{a_ip} <-> {}:{b_ip}", a.name(), b.name());
    let sa = udp_socket(a, SocketAddrV4::new(a_ip, 0))?;
    let sb = udp_socket(b, SocketAddrV4::new(b_ip, 0))?;
    let b_addr = sb.local_addr()?;
    let a_addr = sa.local_addr()?;
    sb.set_read_timeout(Some(Duration::from_millis(100)))?;
    sa.set_read_timeout(Some(Duration::from_millis(500)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let echo = thread::spawn(move || -> Result<u32> {
        let mut buf = vec![0u8; 2048];
        let mut seen = 0u32;
        while !stop2.load(Ordering::Relaxed) {
            let (len, from) = match sb.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(e) => return Err(e).context("receiving"),
            };
            if from != a_addr {
                bail!("datagram from unexpected sender {from} (want {a_addr})");
            }
            let got = &buf[..len];
            let seq = got
                .get(..4)
                .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
                .ok_or_else(|| anyhow!("runt datagram of {len} bytes"))?;
            if got != datagram(seq).as_slice() {
                bail!("datagram {seq} arrived corrupted ({len} bytes)");
            }
            seen += 1;
            sb.send_to(&answer(got.to_vec()), from)
                .context("answering")?;
        }
        Ok(seen)
    });

    let res = (|| -> Result<()> {
        let mut buf = vec![0u8; 2048];
        for seq in 0..n {
            let d = datagram(seq);
            let want = answer(d.clone());
            let mut ok = false;
            'tries: for _ in 0..5 {
                sa.send_to(&d, b_addr)
                    .with_context(|| format!("sending datagram {seq}"))?;
                let until = Instant::now() + Duration::from_millis(500);
                while Instant::now() < until {
                    let (len, from) = match sa.recv_from(&mut buf) {
                        Ok(x) => x,
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            break
                        }
                        Err(e) => return Err(e).context("receiving the answer"),
                    };
                    let got = &buf[..len];
                    if got.get(..4) != Some(&seq.to_be_bytes()[..]) {
                        continue; // a late answer to an earlier try
                    }
                    if from != b_addr || got != want.as_slice() {
                        bail!("answer to datagram {seq} is wrong (from {from}, {len} bytes)");
                    }
                    ok = true;
                    break 'tries;
                }
            }
            if !ok {
                bail!("no answer to datagram {seq} after 5 tries");
            }
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let echo_res = echo
        .join()
        .map_err(|_| anyhow!("{what}: echo thread panicked"))?;
    match (res, echo_res) {
        (Ok(()), Ok(_)) => Ok(()),
        (Ok(()), Err(e)) => Err(e.context(format!("{what}: receiver side"))),
        (Err(e), Ok(_)) => Err(e.context(what)),
        (Err(e), Err(re)) => Err(e.context(format!("{what} (receiver side: {re:#})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_the_stream_across_pattern_wraps() {
        let off = PATTERN_LEN as u64 - 100;
        let mut data = pattern_at(off, 100).to_vec();
        data.extend_from_slice(pattern_at(0, 300));
        verify(&data, off).unwrap();
    }

    #[test]
    fn verify_reports_the_first_corrupted_byte() {
        let mut data = pattern_at(5000, 4096).to_vec();
        data[1234] ^= 1;
        let e = verify(&data, 5000).unwrap_err().to_string();
        assert!(e.contains("stream byte 6234"), "{e}");
    }

    #[test]
    fn verify_rejects_a_shifted_stream() {
        let data = pattern_at(1, 1000).to_vec();
        assert!(verify(&data, 0).is_err());
    }

    #[test]
    fn parses_iputils_summary() {
        let out = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\n\
                   --- 10.0.0.2 ping statistics ---\n\
                   3 packets transmitted, 3 received, 0% packet loss, time 404ms\n\
                   rtt min/avg/max/mdev = 0.040/0.061/0.090/0.021 ms\n";
        let r = parse_ping(out).unwrap();
        assert_eq!((r.transmitted, r.received), (3, 3));
        assert!((r.rtt_avg_ms - 0.061).abs() < 1e-9);
    }

    #[test]
    fn datagrams_differ_from_their_answers() {
        let d = datagram(7);
        assert!(d.len() >= 64 && d.len() < 1200);
        let a = answer(d.clone());
        assert_eq!(a[..4], d[..4]);
        assert_ne!(a[4..], d[4..]);
    }
}
