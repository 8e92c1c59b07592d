use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use super::*;
use crate::sys::tap::TapOptions;
use crate::sys::testutil::{need_root, run, TestNs};
use crate::sys::udp::{bind_udp, local_port, UdpOptions};

fn cbpf(p: &[libc::sock_filter]) -> Vec<(u16, u8, u8, u32)> {
    p.iter().map(|f| (f.code, f.jt, f.jf, f.k)).collect()
}

#[test]
fn bpf_insn_is_the_kernels_8_bytes() {
    assert_eq!(std::mem::size_of::<BpfInsn>(), 8);
    assert_eq!(std::mem::align_of::<BpfInsn>(), 4);
    assert_eq!(std::mem::size_of::<libc::sock_filter>(), 8);
}

#[test]
fn reuseport_program_returns_the_cpu_when_workers_sit_on_0_to_n() {
    // ld [SKF_AD_OFF + SKF_AD_CPU] (0xfffff000 + 36); ret a
    let want = vec![(0x20, 0, 0, 0xffff_f024), (0x16, 0, 0, 0)];
    assert_eq!(cbpf(&reuseport_program(&[0, 1])), want);
    assert_eq!(cbpf(&reuseport_program(&[0, 1, 2, 3])), want);
    assert_eq!(cbpf(&reuseport_program(&[0])), want);
}

#[test]
fn reuseport_program_maps_other_cpus_to_their_worker() {
    // Workers on CPUs 2 and 5: CPU 2 → socket 0, CPU 5 → socket 1, any
    // other CPU → past the group (the kernel's hash).
    assert_eq!(
        cbpf(&reuseport_program(&[2, 5])),
        vec![
            (0x20, 0, 0, 0xffff_f024),
            (0x15, 0, 1, 2),
            (0x06, 0, 0, 0),
            (0x15, 0, 1, 5),
            (0x06, 0, 0, 1),
            (0x06, 0, 0, u32::MAX),
        ]
    );
}

#[test]
fn tap_program_jumps_stay_inside_the_program() {
    for cpus in [vec![0, 1], vec![1, 3], vec![2, 0, 5]] {
        let p = tap_program(&cpus, 3, FLOWLET_GAP_NS);
        for (i, insn) in p.iter().enumerate() {
            let class = insn.code & 0x07;
            let op = insn.code & 0xf0;
            // BPF_JMP, not CALL or EXIT.
            if class == 0x05 && op != 0x80 && op != 0x90 {
                let to = i as i64 + 1 + i64::from(insn.off);
                assert!(
                    to > i as i64 && (to as usize) < p.len(),
                    "{cpus:?}: insn {i} jumps to {to}"
                );
            }
        }
        assert_eq!(p.last().map(|i| i.code), Some(0x95), "ends with exit");
    }
}

/// At most this many workers in the tests below (the machine's CPUs may
/// be more).
fn test_cpus() -> Option<Vec<usize>> {
    let cpus: Vec<usize> = allowed_cpus().unwrap().into_iter().take(4).collect();
    if cpus.len() < 2 {
        eprintln!("!!!!!!!! steering tests need 2 CPUs: SKIPPED !!!!!!!!");
        return None;
    }
    Some(cpus)
}

/// Datagrams sent over loopback from a thread pinned to worker `i`'s CPU
/// arrive on the `i`-th socket bound: the index is the bind order, and the
/// receive runs on the sender's CPU (loopback's backlog is per CPU).
#[test]
fn reuseport_group_delivers_to_the_socket_of_the_senders_cpu() {
    if !need_root("reuseport_group_delivers_to_the_socket_of_the_senders_cpu") {
        return;
    }
    let Some(cpus) = test_cpus() else { return };
    // Worker i on CPU i, then on CPUs in reverse order (the mapping
    // program, through the kernel's checker).
    reuseport_group_by_cpu(&cpus);
    reuseport_group_by_cpu(&cpus.iter().rev().copied().collect::<Vec<_>>());
}

fn reuseport_group_by_cpu(cpus: &[usize]) {
    let t = TestNs::new();
    t.ip(&["link", "set", "lo", "up"]);
    t.ns.run(|| {
        let (group, port) = loopback_group(cpus.len());
        // Attached through the last socket: any member sets the group's.
        attach_reuseport_cpu(group.last().unwrap(), cpus).unwrap();
        assert!(check_reuseport_order(&group, cpus).unwrap());
        // The reverse order is caught.
        let reversed: Vec<usize> = cpus.iter().rev().copied().collect();
        attach_reuseport_cpu(&group[0], &reversed).unwrap();
        let e = check_reuseport_order(&group, cpus).unwrap_err();
        assert!(e.to_string().contains("not in worker order"), "{e}");
        attach_reuseport_cpu(&group[0], cpus).unwrap();
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        for round in 0..3u8 {
            for (i, &cpu) in cpus.iter().enumerate() {
                pin_current_thread(cpu).unwrap();
                sender.send_to(&[i as u8, round], to).unwrap();
                let got = wait_for(&group, Duration::from_secs(2));
                assert_eq!(got, Some((i, vec![i as u8, round])), "sent on CPU {cpu}");
            }
        }
    })
    .unwrap();
}

/// A reuseport group of `n` sockets on a free loopback port (in the
/// calling thread's namespace), in bind order, and the port.
fn loopback_group(n: usize) -> (Vec<UdpSocket>, u16) {
    let opts = UdpOptions {
        reuse_port: true,
        ..UdpOptions::default()
    };
    let first = bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), opts).unwrap();
    let port = local_port(&first).unwrap();
    let mut group = vec![first];
    for _ in 1..n {
        group.push(bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port), opts).unwrap());
    }
    (group, port)
}

/// The first socket of `socks` that has a datagram, and the datagram.
fn wait_for(socks: &[UdpSocket], timeout: Duration) -> Option<(usize, Vec<u8>)> {
    let end = Instant::now() + timeout;
    let mut buf = [0u8; 64];
    while Instant::now() < end {
        for (i, s) in socks.iter().enumerate() {
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Some((i, buf[..n].to_vec()));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// Frames of new flows that the kernel sends out of a multi-queue TAP from
/// a thread pinned to worker `i`'s CPU are queued on queue `i`.
#[test]
fn tap_queues_a_new_flow_on_the_queue_of_the_senders_cpu() {
    if !need_root("tap_queues_a_new_flow_on_the_queue_of_the_senders_cpu") {
        return;
    }
    let Some(cpus) = test_cpus() else { return };
    for cpus in [cpus.clone(), cpus.iter().rev().copied().collect::<Vec<_>>()] {
        let prog = TapSteering::load(&cpus).unwrap();
        with_steered_tap(&prog, cpus.len(), |send, _| {
            for round in 0..3u8 {
                for (i, &cpu) in cpus.iter().enumerate() {
                    pin_current_thread(cpu).unwrap();
                    // A new socket: a new source port, a new flow.
                    let sock = UdpSocket::bind("10.77.0.1:0").unwrap();
                    assert_eq!(send(&sock, i as u8, round), i, "sent on CPU {cpu}");
                }
            }
        });
    }
}

/// A flow that keeps sending keeps the queue of its first frame whatever
/// CPU its next frames come from (so that one worker carries it in
/// order), and follows the CPU again once it paused longer than the gap.
#[test]
fn a_busy_flow_keeps_its_queue_and_an_idle_one_follows_the_cpu() {
    if !need_root("a_busy_flow_keeps_its_queue_and_an_idle_one_follows_the_cpu") {
        return;
    }
    let Some(cpus) = test_cpus() else { return };
    let gap = Duration::from_millis(300);
    let prog = TapSteering::load_with_gap(&cpus, gap.as_nanos() as u32).unwrap();
    with_steered_tap(&prog, cpus.len(), |send, _| {
        let sock = UdpSocket::bind("10.77.0.1:0").unwrap();
        pin_current_thread(cpus[0]).unwrap();
        assert_eq!(send(&sock, 0, 0), 0);
        // Busy: from every other CPU, well within the gap of the last frame.
        for (i, &cpu) in cpus.iter().enumerate().skip(1) {
            pin_current_thread(cpu).unwrap();
            assert_eq!(send(&sock, i as u8, 1), 0, "sent on CPU {cpu} right after");
        }
        // Idle past the gap: the flow moves to the CPU it now comes from.
        let last = cpus.len() - 1;
        std::thread::sleep(gap * 2);
        pin_current_thread(cpus[last]).unwrap();
        assert_eq!(
            send(&sock, last as u8, 2),
            last,
            "sent on CPU {} after a pause",
            cpus[last]
        );
        // And stays there while busy again.
        pin_current_thread(cpus[0]).unwrap();
        assert_eq!(
            send(&sock, 0, 3),
            last,
            "sent on CPU {} right after",
            cpus[0]
        );
        // Another flow is not held by this one's flowlet.
        let other = UdpSocket::bind("10.77.0.1:0").unwrap();
        assert_eq!(send(&other, 0, 4), 0);
    });
}

/// Runs `f` in a fresh namespace with a multi-queue TAP of `queues`
/// queues steered by `prog`, addressed 10.77.0.1/24 with a static
/// neighbour 10.77.0.2. `f` gets a function that sends a marked datagram
/// from a socket to 10.77.0.2:9 and returns the queue it was queued on
/// (frames read on the way are kept), and one that returns the frames
/// read so far with their queues.
fn with_steered_tap(
    prog: &TapSteering,
    queues: usize,
    f: impl FnOnce(&dyn Fn(&UdpSocket, u8, u8) -> usize, &dyn Fn() -> Vec<(usize, Vec<u8>)>) + Send,
) {
    let t = TestNs::new();
    t.ns.run(|| {
        let first = Tap::create_with("twsteer%d", TapOptions { multi_queue: true }).unwrap();
        let mut taps = vec![first];
        for _ in 1..queues {
            taps.push(taps[0].open_queue().unwrap());
        }
        // Any queue sets the device's program.
        prog.attach(taps.last().unwrap()).unwrap();
        let name = taps[0].name().to_string();
        for args in [
            vec!["ip", "addr", "add", "10.77.0.1/24", "dev", &name],
            vec!["ip", "link", "set", &name, "up"],
            vec![
                "ip",
                "neigh",
                "add",
                "10.77.0.2",
                "lladdr",
                "02:00:00:00:00:02",
                "dev",
                &name,
            ],
        ] {
            run(&args);
        }
        let seen = std::sync::Mutex::new(Vec::<(usize, Vec<u8>)>::new());
        // Reads what queue `q` holds into `seen`, until a frame that ends
        // with `marker` (true) or none is left (false).
        let read_queue = |q: usize, marker: Option<&[u8]>| -> bool {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = taps[q].read(&mut buf) {
                let frame = buf
                    .get(crate::sys::tap::VNET_HDR_LEN..n)
                    .unwrap_or_default();
                seen.lock().unwrap().push((q, frame.to_vec()));
                if marker.is_some_and(|m| frame.ends_with(m)) {
                    return true;
                }
            }
            false
        };
        let send = |sock: &UdpSocket, a: u8, b: u8| -> usize {
            let marker = [0x7e, 0x57, a, b];
            sock.send_to(&marker, "10.77.0.2:9").unwrap();
            let end = Instant::now() + Duration::from_secs(2);
            while Instant::now() < end {
                if let Some(q) = (0..taps.len()).find(|&q| read_queue(q, Some(&marker))) {
                    return q;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            panic!("datagram {marker:?} not seen on any queue");
        };
        let drain = || {
            // What is still queued, on every queue.
            for q in 0..taps.len() {
                read_queue(q, None);
            }
            std::mem::take(&mut *seen.lock().unwrap())
        };
        f(&send, &drain);
    })
    .unwrap();
}

/// Every frame the kernel sends out of a TAP steered by the flow lanes
/// program is on the queue that `encap::flow` predicts from the frame
/// itself (the eBPF program and the Rust hash agree): UDP from many
/// source and destination ports, fragments (no ports), ICMP, and whatever
/// else the stack sends (IPv6, to queue 0).
#[test]
fn tap_lane_program_queues_every_frame_on_its_flows_lane() {
    if !need_root("tap_lane_program_queues_every_frame_on_its_flows_lane") {
        return;
    }
    for queues in [2, 3, encap::flow::LANES] {
        let prog = TapSteering::load_lanes(queues).unwrap();
        with_steered_tap(&prog, queues, |send, drain| {
            for sport in (0..48).map(|i| 20000 + i * 37) {
                let sock = UdpSocket::bind(("10.77.0.1", sport)).unwrap();
                for dport in [9, 53, 4789] {
                    sock.send_to(b"lane", ("10.77.0.2", dport)).unwrap();
                }
            }
            // Fragments: more than the MTU, without DF.
            let big = UdpSocket::bind("10.77.0.1:0").unwrap();
            big.send_to(&[7u8; 4000], "10.77.0.2:9").unwrap();
            // Echo requests (nobody answers them).
            let _ = std::process::Command::new("ping")
                .args(["-c", "2", "-i", "0.2", "-W", "0.1", "10.77.0.2"])
                .output();
            // The last datagram marks the end.
            send(&big, 0xee, 0xee);
            let frames = drain();
            let fragments = frames
                .iter()
                .filter(|(_, f)| f.len() > 21 && f[12..14] == [8, 0] && f[20] & 0x3f != 0)
                .count();
            assert!(frames.len() >= 48 * 3 + 2, "{} frames", frames.len());
            assert!(fragments >= 2, "the big datagram was not fragmented");
            let mut used = std::collections::BTreeSet::new();
            for (q, f) in &frames {
                let lane = encap::flow::lane(encap::flow::symmetric_ipv4(&f[14..]));
                assert_eq!(
                    *q,
                    lane % queues,
                    "{queues} queues: frame {:02x?}",
                    &f[..f.len().min(48)]
                );
                used.insert(*q);
            }
            assert_eq!(used.len(), queues, "flows spread over every queue");
        });
    }
}

/// A reuseport group with the flow lanes program delivers a datagram to
/// socket `(source port % LANES) % sockets`, and the order check catches
/// a group that is not in that order.
#[test]
fn reuseport_group_delivers_by_the_source_ports_lane() {
    if !need_root("reuseport_group_delivers_by_the_source_ports_lane") {
        return;
    }
    let t = TestNs::new();
    t.ip(&["link", "set", "lo", "up"]);
    t.ns.run(|| {
        for n in [2usize, 3, 4] {
            let (group, port) = loopback_group(n);
            attach_reuseport_lanes(group.last().unwrap(), n).unwrap();
            assert!(check_reuseport_lanes(&group).unwrap());
            let reversed: Vec<UdpSocket> =
                group.iter().rev().map(|s| s.try_clone().unwrap()).collect();
            let e = check_reuseport_lanes(&reversed).unwrap_err();
            assert!(e.to_string().contains("not in worker order"), "{e}");
            let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
            let lanes = crate::sys::udp::bind_lanes(
                Ipv4Addr::LOCALHOST,
                encap::flow::LANES,
                UdpOptions::default(),
            )
            .unwrap();
            let others: Vec<UdpSocket> = (0..8)
                .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
                .collect();
            for (k, sender) in lanes.iter().chain(&others).enumerate() {
                let sport = local_port(sender).unwrap();
                if k < encap::flow::LANES {
                    assert_eq!(usize::from(sport) % encap::flow::LANES, k, "bind_lanes");
                }
                sender.send_to(&[k as u8], to).unwrap();
                let want = (usize::from(sport) % encap::flow::LANES) % n;
                let got = wait_for(&group, Duration::from_secs(2));
                assert_eq!(
                    got,
                    Some((want, vec![k as u8])),
                    "{n} sockets, source port {sport}"
                );
            }
        }
    })
    .unwrap();
}
