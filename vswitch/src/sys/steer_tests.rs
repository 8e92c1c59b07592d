use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use super::*;
use crate::sys::tap::TapOptions;
use crate::sys::testutil::{need_root, run, TestNs};
use crate::sys::udp::{bind_udp, local_port, UdpOptions};

/// An eBPF instruction as the kernel reads it (little-endian hosts).
fn insn_bytes(i: &BpfInsn) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = i.code;
    b[1] = i.regs;
    b[2..4].copy_from_slice(&i.off.to_le_bytes());
    b[4..8].copy_from_slice(&i.imm.to_le_bytes());
    b
}

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
fn tap_program_returns_the_cpu_when_workers_sit_on_0_to_n() {
    // call bpf_get_smp_processor_id (helper 8); exit
    let bytes: Vec<[u8; 8]> = tap_program(&[0, 1]).iter().map(insn_bytes).collect();
    assert_eq!(
        bytes,
        vec![[0x85, 0, 0, 0, 8, 0, 0, 0], [0x95, 0, 0, 0, 0, 0, 0, 0]]
    );
}

#[test]
fn tap_program_maps_other_cpus_to_their_worker() {
    let bytes: Vec<[u8; 8]> = tap_program(&[1, 3]).iter().map(insn_bytes).collect();
    assert_eq!(
        bytes,
        vec![
            [0x85, 0, 0, 0, 8, 0, 0, 0], // r0 = cpu
            [0x55, 0, 2, 0, 1, 0, 0, 0], // if r0 != 1 goto +2
            [0xb7, 0, 0, 0, 0, 0, 0, 0], // r0 = 0
            [0x95, 0, 0, 0, 0, 0, 0, 0], // exit
            [0x55, 0, 2, 0, 3, 0, 0, 0], // if r0 != 3 goto +2
            [0xb7, 0, 0, 0, 1, 0, 0, 0], // r0 = 1
            [0x95, 0, 0, 0, 0, 0, 0, 0], // exit
            [0x95, 0, 0, 0, 0, 0, 0, 0], // exit (r0 = the cpu)
        ]
    );
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
        let opts = UdpOptions {
            reuse_port: true,
            ..UdpOptions::default()
        };
        let first = bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), opts).unwrap();
        let port = local_port(&first).unwrap();
        let mut group = vec![first];
        for _ in 1..cpus.len() {
            group.push(bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port), opts).unwrap());
        }
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

/// Frames the kernel sends out of a multi-queue TAP from a thread pinned
/// to worker `i`'s CPU are queued on queue `i`.
#[test]
fn tap_queues_frames_on_the_queue_of_the_senders_cpu() {
    if !need_root("tap_queues_frames_on_the_queue_of_the_senders_cpu") {
        return;
    }
    let Some(cpus) = test_cpus() else { return };
    tap_queues_by_cpu(&cpus);
    tap_queues_by_cpu(&cpus.iter().rev().copied().collect::<Vec<_>>());
}

fn tap_queues_by_cpu(cpus: &[usize]) {
    let t = TestNs::new();
    let prog = TapSteering::load(cpus).unwrap();
    t.ns.run(|| {
        let first = Tap::create_with("twsteer%d", TapOptions { multi_queue: true }).unwrap();
        let mut queues = vec![];
        for _ in 1..cpus.len() {
            queues.push(first.open_queue().unwrap());
        }
        queues.insert(0, first);
        // Any queue sets the device's program.
        prog.attach(queues.last().unwrap()).unwrap();
        let name = queues[0].name().to_string();
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
        let sender = UdpSocket::bind("10.77.0.1:0").unwrap();
        let mut buf = vec![0u8; 4096];
        for round in 0..3u8 {
            for (i, &cpu) in cpus.iter().enumerate() {
                pin_current_thread(cpu).unwrap();
                let marker = [0x7e, 0x57, i as u8, round];
                sender.send_to(&marker, "10.77.0.2:9").unwrap();
                let end = Instant::now() + Duration::from_secs(2);
                let mut found = None;
                'wait: while Instant::now() < end {
                    for (q, tap) in queues.iter().enumerate() {
                        while let Ok(n) = tap.read(&mut buf) {
                            if buf[..n].ends_with(&marker) {
                                found = Some(q);
                                break 'wait;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                assert_eq!(found, Some(i), "sent on CPU {cpu}");
            }
        }
    })
    .unwrap();
}
