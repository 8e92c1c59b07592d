//! Storm control end to end (issue 13): a pod's broadcast storm reached
//! every other pod without limit. Now each pod port may flood 1000
//! broadcasts a second after a burst of 1000: a bystander pod receives at
//! most that, the rest is dropped and counted on the storming pod's port,
//! and traffic between other pods goes on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::*;

const STORM: usize = 20_000;
const MARK: &[u8] = b"twill-storm-test";

#[test]
fn a_pods_broadcast_storm_is_capped_and_bystanders_keep_working() {
    if !require_root("a_pods_broadcast_storm_is_capped_and_bystanders_keep_working") {
        return;
    }
    let c = Cluster::new("vxlan").unwrap();
    let attacker = RawLink::open(c.a1.netns(), "eth0").unwrap();
    let bystander = RawLink::open(c.a2.netns(), "eth0").unwrap();
    let frame = storm_frame(&c);
    let t0 = Instant::now();
    let (received, ping) = std::thread::scope(|s| {
        let counter = s.spawn(|| {
            let mut n = 0usize;
            bystander
                .wait_for(Duration::from_secs(4), |f| {
                    n += usize::from(f.windows(MARK.len()).any(|w| w == MARK));
                    false
                })
                .unwrap();
            n
        });
        // Pods on two nodes keep talking through the storm.
        let pinger = s.spawn(|| ping(c.b1.netns(), c.a2.ip(), 10));
        for _ in 0..STORM {
            attacker.send(&frame).unwrap();
        }
        (counter.join().unwrap(), pinger.join().unwrap())
    });
    let elapsed = t0.elapsed().as_secs_f64();
    let allowed = 1000.0 + 1000.0 * elapsed;
    assert!(
        (received as f64) <= allowed + 50.0,
        "the bystander got {received} of {STORM} broadcasts in {elapsed:.1} s"
    );
    let ping = ping.expect("b1 pings a2 through the storm without loss");
    assert_eq!(ping.received, ping.transmitted);
    let counters = c.node_a.counters().unwrap();
    // Not every frame reaches the switch (the attacker's own queue
    // overflows first); of those that do, all but the allowed are dropped.
    let dropped = counters.drops.storm_control as usize;
    assert!(
        dropped >= 2 * received,
        "storm_control dropped {dropped}, the bystander got {received}"
    );
    let per_port: u64 = counters.ports.iter().map(|p| p.storm_dropped).sum();
    assert_eq!(per_port as usize, dropped, "counted on the storming port");
}

/// The measurement: during a broadcast storm from one pod, a
/// bystander's round trip across nodes stays within twice its idle value
/// (without storm control it grew tenfold: every broadcast reached every
/// pod). The storm is paced at 40,000 frames a second, about what one
/// busy pod sends, so that the sending thread does not take a whole CPU
/// of this machine from the nodes and the measurement is of the switch.
#[test]
fn a_bystanders_latency_stays_within_twice_idle_during_a_storm() {
    if !require_root("a_bystanders_latency_stays_within_twice_idle_during_a_storm") {
        return;
    }
    let c = Cluster::new("vxlan").unwrap();
    let (idle, storm) = bystander_latency(&c, Duration::from_secs(6));
    eprintln!("bystander rtt median: idle {idle:.3} ms, storm {storm:.3} ms");
    // A floor for this shared machine's noise at sub-millisecond values.
    assert!(
        storm <= 2.0 * idle.max(0.1),
        "the bystander's median rtt went from {idle:.3} ms idle to {storm:.3} ms in the storm"
    );
    let dropped = c.node_a.counters().unwrap().drops.storm_control;
    assert!(dropped > 10_000, "storm_control dropped only {dropped}");
}

/// Median round trip b1 → a2 (ms) idle, then while a1 storms for `secs`.
fn bystander_latency(c: &Cluster, secs: Duration) -> (f64, f64) {
    const PACE: usize = 400; // frames per 10 ms
    let count = (secs.as_millis() / 20) as u32;
    let interval = Duration::from_millis(20);
    // Warm up (ARP, MAC learning), then measure idle.
    ping(c.b1.netns(), c.a2.ip(), 2).unwrap();
    let idle = median(ping_rtts(c.b1.netns(), c.a2.ip(), count, interval).unwrap());
    let attacker = RawLink::open(c.a1.netns(), "eth0").unwrap();
    let frame = storm_frame(c);
    let done = std::sync::atomic::AtomicBool::new(false);
    let storm = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                for _ in 0..PACE {
                    // The attacker's queue may be full: that is the storm.
                    let _ = attacker.send(&frame);
                }
                std::thread::sleep(Duration::from_millis(10).saturating_sub(t.elapsed()));
            }
        });
        // Let the burst allowance run out first.
        std::thread::sleep(Duration::from_millis(500));
        let rtts = ping_rtts(c.b1.netns(), c.a2.ip(), count, interval);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        median(rtts.unwrap())
    });
    (idle, storm)
}

/// A broadcast UDP frame from pod a1, marked so that a bystander can
/// count it.
fn storm_frame(c: &Cluster) -> Vec<u8> {
    let src_mac = parse_mac(&c.a1.info().unwrap().mac).unwrap();
    ethernet_udp(
        src_mac,
        [0xff; 6],
        SocketAddrV4::new(c.a1.ip(), 5000),
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 5000),
        MARK,
    )
    .unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
