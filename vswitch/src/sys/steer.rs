//! CPU-aligned steering (`twill node --steering cpu`): make a packet land on
//! the worker pinned to the CPU that produced it, so that a wake-up is a
//! switch on the same CPU rather than an IPI to a sleeping one.
//!
//! - The tunnel's `SO_REUSEPORT` group picks its socket with a classic BPF
//!   program (`SO_ATTACH_REUSEPORT_CBPF`) that returns the receiving CPU's
//!   worker index; the index selects a socket in bind order, and one at or
//!   past the group's size falls back to the kernel's hash.
//! - A multi-queue TAP picks its queue with an eBPF socket filter
//!   (`TUNSETSTEERINGEBPF`) that returns the sending CPU's worker index for
//!   a flow that starts or paused, and the flow's last queue while it keeps
//!   sending (flowlets, [`tap_program`]); tun takes it modulo the number of
//!   queues (`tun_ebpf_select_queue`). The tunnel side needs no flowlets:
//!   a flow's datagrams all come from the one worker (on one CPU) that
//!   carries it on the sending node, or on a NIC from the RSS queue its
//!   outer UDP ports hash to.
//!   tun holds its own reference to the program (`bpf_prog_get_type` in
//!   `tun_set_ebpf`, dropped when replaced or when the device is freed), so
//!   the fd may be closed once attached; [`TapSteering`] keeps one loaded
//!   program for all of a dataplane's TAPs.
//! - Workers are pinned one per CPU with [`pin_current_thread`].
//!
//! Worker `i` runs on `cpus[i]`. When `cpus` is `0..n` the programs are the
//! minimal "return the CPU" ones; otherwise they map each CPU to its index.
//! No forwarding rule here.

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use super::tap::Tap;

/// The CPUs this process may run on (its affinity mask), ascending.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(io::Error::from)?;
    Ok((0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).map_err(io::Error::from)?;
    // Pid 0: the calling thread (sched_setaffinity is per thread on Linux).
    sched_setaffinity(Pid::from_raw(0), &set).map_err(io::Error::from)
}

/// Whether worker `i` runs on CPU `i` for every worker.
fn identity(cpus: &[usize]) -> bool {
    cpus.iter().enumerate().all(|(i, &c)| i == c)
}

// Classic BPF opcodes (linux/bpf_common.h).
/// `BPF_LD | BPF_W | BPF_ABS` (`BPF_LD` and `BPF_W` are 0).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_RET_A: u16 = 0x06 | 0x10; // BPF_RET | BPF_A
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
const BPF_JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K

/// One classic BPF instruction.
fn cbpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The reuseport program: `ld [SKF_AD_OFF + SKF_AD_CPU]; ret a` when
/// worker `i` runs on CPU `i`; otherwise `jeq #cpu` / `ret #index` per
/// worker and, for a CPU with no worker, an index past the group (hash).
pub fn reuseport_program(cpus: &[usize]) -> Vec<libc::sock_filter> {
    let ld_cpu = cbpf(
        BPF_LD_W_ABS,
        0,
        0,
        (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
    );
    if identity(cpus) {
        return vec![ld_cpu, cbpf(BPF_RET_A, 0, 0, 0)];
    }
    let mut p = vec![ld_cpu];
    for (i, &c) in cpus.iter().enumerate() {
        p.push(cbpf(BPF_JEQ_K, 0, 1, c as u32));
        p.push(cbpf(BPF_RET_K, 0, 0, i as u32));
    }
    p.push(cbpf(BPF_RET_K, 0, 0, u32::MAX));
    p
}

/// `BPF_LDX | BPF_B | BPF_MSH`: `x = 4 * (pkt[k] & 0xf)`.
const BPF_LDX_MSH_B: u16 = 0x01 | 0x10 | 0xa0;
/// `BPF_LD | BPF_H | BPF_IND`: `a = pkt[x + k]` (16 bits).
const BPF_LD_H_IND: u16 = 0x08 | 0x40;
const BPF_AND_K: u16 = 0x04 | 0x50; // BPF_ALU | BPF_AND | BPF_K
const BPF_MOD_K: u16 = 0x04 | 0x90; // BPF_ALU | BPF_MOD | BPF_K
/// The lane program takes the lane as the source port's low bits.
const _: () = assert!(encap::flow::LANES.is_power_of_two());

/// The reuseport program of flow lanes (`--steering flow`): the socket of
/// worker `(sport % LANES) % workers`, where `sport` is the datagram's UDP
/// source port, read at the IPv4 header's length past the network header
/// (`SKF_NET_OFF`: the program sees the data after the UDP header). A
/// twill sender sends a flow from the port of its lane
/// ([`encap::flow::lane`], `udp::bind_lanes`), so this is the worker that
/// the TAP program ([`tap_lane_program`]) gives the flow's other
/// direction; another sender's flow keeps one source port, so it too
/// stays on one worker.
pub fn reuseport_lane_program(workers: usize) -> Vec<libc::sock_filter> {
    let ins = |code, k| cbpf(code, 0, 0, k);
    let net = libc::SKF_NET_OFF as u32;
    vec![
        ins(BPF_LDX_MSH_B, net),
        ins(BPF_LD_H_IND, net),
        ins(BPF_AND_K, (encap::flow::LANES - 1) as u32),
        ins(BPF_MOD_K, workers.max(1) as u32),
        ins(BPF_RET_A, 0),
    ]
}

/// Makes `sock`'s reuseport group choose the socket of each datagram's
/// flow lane (see [`reuseport_lane_program`]); the group's sockets must
/// have been bound in worker order.
pub fn attach_reuseport_lanes(sock: &UdpSocket, workers: usize) -> io::Result<()> {
    attach_reuseport(sock, reuseport_lane_program(workers))
}

/// Makes `sock`'s reuseport group choose the socket of the receiving CPU's
/// worker (see [`reuseport_program`]). The group's sockets must have been
/// bound in worker order, and `sock` must be one of them.
pub fn attach_reuseport_cpu(sock: &UdpSocket, cpus: &[usize]) -> io::Result<()> {
    attach_reuseport(sock, reuseport_program(cpus))
}

/// `SO_ATTACH_REUSEPORT_CBPF` of `prog` on `sock`'s group.
fn attach_reuseport(sock: &UdpSocket, mut prog: Vec<libc::sock_filter>) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "reuseport program too long")
        })?,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: SO_ATTACH_REUSEPORT_CBPF reads one `sock_fprog` of the given
    // size, whose `filter` points at `len` instructions in `prog`, alive
    // for the call; the kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::addr_of!(fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Checks that the reuseport group of `group` delivers what is received on
/// `cpus[i]` to `group[i]`: that its sockets are in bind order and that no
/// other socket (another process's, with the same uid) joined the group
/// ahead of them. The calling thread sends one probe to the group's
/// address from each CPU in turn (a local datagram is received on the
/// sending CPU) and is given its affinity back. Datagrams that arrive
/// meanwhile are discarded: call this before the group carries traffic.
/// `Ok(false)`: a probe did not arrive (a firewall?), nothing is known.
pub fn check_reuseport_order(group: &[UdpSocket], cpus: &[usize]) -> io::Result<bool> {
    let Some(to) = group_addr(group)? else {
        return Ok(true);
    };
    let mine = sched_getaffinity(Pid::from_raw(0)).map_err(io::Error::from)?;
    let from = UdpSocket::bind(std::net::SocketAddrV4::new(*to.ip(), 0))?;
    let result = check_order(group, to, |i, probe| {
        pin_current_thread(cpus[i])?;
        from.send_to(probe, to).map(drop)
    });
    sched_setaffinity(Pid::from_raw(0), &mine).map_err(io::Error::from)?;
    result
}

/// Checks that the reuseport group of `group` delivers a datagram of lane
/// `i` (source port `≡ i` modulo [`encap::flow::LANES`]) to `group[i]`,
/// as [`check_reuseport_order`] does for CPUs: one probe per worker, from
/// a port of its lane.
pub fn check_reuseport_lanes(group: &[UdpSocket]) -> io::Result<bool> {
    let Some(to) = group_addr(group)? else {
        return Ok(true);
    };
    let from = super::udp::bind_lanes(*to.ip(), encap::flow::LANES, Default::default())?;
    check_order(group, to, |i, probe| from[i].send_to(probe, to).map(drop))
}

/// The address the group's sockets are bound to (loopback for the
/// unspecified address); `None` for an empty group.
fn group_addr(group: &[UdpSocket]) -> io::Result<Option<std::net::SocketAddrV4>> {
    let Some(std::net::SocketAddr::V4(mut to)) =
        group.first().map(UdpSocket::local_addr).transpose()?
    else {
        return Ok(None);
    };
    if to.ip().is_unspecified() {
        to.set_ip(std::net::Ipv4Addr::LOCALHOST);
    }
    Ok(Some(to))
}

/// Sends probe `i` with `send(i, probe)` for each socket of `group` and
/// checks that socket `i` receives it.
fn check_order(
    group: &[UdpSocket],
    to: std::net::SocketAddrV4,
    mut send: impl FnMut(usize, &[u8]) -> io::Result<()>,
) -> io::Result<bool> {
    let nonce = std::process::id().to_be_bytes();
    for i in 0..group.len() {
        let probe = [
            b't', b'w', b'p', i as u8, nonce[0], nonce[1], nonce[2], nonce[3],
        ];
        send(i, &probe)?;
        match wait_probe(group, &probe)? {
            Some(at) if at == i => {}
            Some(at) => {
                return Err(io::Error::other(format!(
                    "probe {i} went to socket {at} of the reuseport group on {to}, not to \
                     socket {i}: the group is not in worker order (does another process \
                     share the port?)"
                )))
            }
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// The index of the socket of `group` that receives `probe` within 200 ms.
fn wait_probe(group: &[UdpSocket], probe: &[u8]) -> io::Result<Option<usize>> {
    let end = std::time::Instant::now() + std::time::Duration::from_millis(200);
    let mut buf = [0u8; 64];
    while std::time::Instant::now() < end {
        for (i, s) in group.iter().enumerate() {
            loop {
                match s.recv_from(&mut buf) {
                    Ok((n, _)) if &buf[..n] == probe => return Ok(Some(i)),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    Ok(None)
}

/// One eBPF instruction (`struct bpf_insn`): opcode, destination and
/// source registers in one byte (dst in the low nibble), offset, immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    /// Opcode.
    pub code: u8,
    /// `dst | src << 4`.
    pub regs: u8,
    /// Jump offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

// eBPF opcodes (linux/bpf.h, linux/bpf_common.h).
const BPF_CALL: u8 = 0x05 | 0x80; // BPF_JMP | BPF_CALL
const BPF_EXIT: u8 = 0x05 | 0x90; // BPF_JMP | BPF_EXIT
const BPF_JA: u8 = 0x05; // BPF_JMP | BPF_JA
const BPF_JEQ_IMM: u8 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGT_IMM: u8 = 0x05 | 0x20; // BPF_JMP | BPF_JGT | BPF_K (unsigned)
const BPF_JNE_IMM: u8 = 0x05 | 0x50; // BPF_JMP | BPF_JNE | BPF_K
const BPF_MOV64_IMM: u8 = 0x07 | 0xb0; // BPF_ALU64 | BPF_MOV | BPF_K
const BPF_MOV64_REG: u8 = 0x07 | 0xb0 | 0x08; // BPF_ALU64 | BPF_MOV | BPF_X
const BPF_ADD64_IMM: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
const BPF_SUB64_REG: u8 = 0x07 | 0x10 | 0x08; // BPF_ALU64 | BPF_SUB | BPF_X
const BPF_AND64_IMM: u8 = 0x07 | 0x50; // BPF_ALU64 | BPF_AND | BPF_K
const BPF_LSH64_IMM: u8 = 0x07 | 0x60; // BPF_ALU64 | BPF_LSH | BPF_K
const BPF_XOR64_REG: u8 = 0x07 | 0xa0 | 0x08; // BPF_ALU64 | BPF_XOR | BPF_X
const BPF_MUL32_IMM: u8 = 0x04 | 0x20; // BPF_ALU | BPF_MUL | BPF_K
const BPF_RSH32_IMM: u8 = 0x04 | 0x70; // BPF_ALU | BPF_RSH | BPF_K
const BPF_MOD32_IMM: u8 = 0x04 | 0x90; // BPF_ALU | BPF_MOD | BPF_K
const BPF_RSH64_IMM: u8 = 0x07 | 0x70; // BPF_ALU64 | BPF_RSH | BPF_K
/// Legacy packet loads (`r0 = ntoh(*(size *)(skb->data + imm))`, with
/// `+ src` for IND), allowed in socket filters; r6 must hold the context.
const BPF_LD_ABS_W: u8 = 0x20; // BPF_LD | BPF_ABS | BPF_W
const BPF_LD_ABS_H: u8 = 0x28; // BPF_LD | BPF_ABS | BPF_H
const BPF_LD_ABS_B: u8 = 0x30; // BPF_LD | BPF_ABS | BPF_B
const BPF_LD_IND_W: u8 = 0x40; // BPF_LD | BPF_IND | BPF_W
const BPF_LD_IMM64: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW (two slots)
const BPF_LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const BPF_LDX_DW: u8 = 0x79; // BPF_LDX | BPF_MEM | BPF_DW
const BPF_STX_W: u8 = 0x63; // BPF_STX | BPF_MEM | BPF_W
const BPF_STX_DW: u8 = 0x7b; // BPF_STX | BPF_MEM | BPF_DW
/// `src` of a `BPF_LD_IMM64` whose immediate is a map fd.
const BPF_PSEUDO_MAP_FD: u8 = 1;

const FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const FUNC_KTIME_GET_NS: i32 = 5;
const FUNC_GET_SMP_PROCESSOR_ID: i32 = 8;

/// Slots of the flowlet table: a flow's slot is a hash of its addresses,
/// protocol and ports; flows that share a slot share its flowlet (they
/// keep one queue while either is busy), which is harmless.
pub const FLOWLET_SLOTS_LOG2: u32 = 12;
/// A flowlet table slot: when the flow last sent a frame (ns, monotonic)
/// and the queue it was given.
pub const FLOWLET_VALUE_LEN: u32 = 16;

/// How long a flow must have been idle before its next frame may change
/// queue (follow the CPU it now comes from): longer than a frame may wait
/// in a TAP queue before its worker reads it, so that the frames before
/// have been read when the flow moves and it is not reordered. A worker
/// pinned to a CPU shares it with the pods' threads and may wait a few
/// scheduler slices (3 ms each) under load: with a 1 ms gap a bulk TCP
/// flow still saw 600–700 retransmissions in 4 s (reordered, no drops:
/// TcpExtTCPSACKReorder, DSACKs), with 10 ms none in five of six runs
/// (benches/RESULTS.md). A flow that sends without such a pause (a bulk
/// transfer) keeps its queue.
pub const FLOWLET_GAP_NS: u32 = 10_000_000;

/// A few instructions with symbolic jump targets, resolved by
/// [`Asm::finish`].
struct Asm {
    insns: Vec<BpfInsn>,
    /// (instruction index, label) for every jump to resolve.
    fixups: Vec<(usize, &'static str)>,
    labels: Vec<(&'static str, usize)>,
}

/// eBPF registers used by the program.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;
const R10: u8 = 10;

impl Asm {
    fn new() -> Asm {
        Asm {
            insns: Vec::new(),
            fixups: Vec::new(),
            labels: Vec::new(),
        }
    }
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(BpfInsn {
            code,
            regs: dst | src << 4,
            off,
            imm,
        });
    }
    fn jump(&mut self, code: u8, dst: u8, imm: i32, to: &'static str) {
        self.fixups.push((self.insns.len(), to));
        self.op(code, dst, 0, 0, imm);
    }
    fn label(&mut self, name: &'static str) {
        self.labels.push((name, self.insns.len()));
    }
    fn finish(mut self) -> Vec<BpfInsn> {
        for (at, to) in self.fixups {
            let target = self.labels.iter().find(|(n, _)| *n == to).map(|&(_, i)| i);
            // Labels are the programs' own constants: one missing is a bug
            // here, never input.
            debug_assert!(target.is_some(), "no label {to:?}");
            let target = target.unwrap_or(at + 1);
            // Offsets are relative to the next instruction; programs here
            // are a few dozen instructions.
            self.insns[at].off = (target as i64 - at as i64 - 1) as i16;
        }
        self.insns
    }
}

/// Emits the flow hash of [`encap::flow::symmetric_ipv4`] for the frame
/// in the context (r6), into r8 (32 bits): `(src ^ dst ^ protocol ^
/// (sport ^ dport for TCP and UDP that are not fragments)) ×
/// HASH_MULTIPLIER`. A frame that is not IPv4 jumps to `other`. Uses r0,
/// r1 and r7 (legacy loads clobber r1–r5); a frame too short for a load
/// ends the program with 0, as legacy loads do.
fn emit_flow_hash(a: &mut Asm, other: &'static str) {
    // EtherType, then the IPv4 header after 14 bytes of Ethernet.
    a.op(BPF_LD_ABS_H, 0, 0, 0, 12);
    a.jump(BPF_JNE_IMM, R0, 0x0800, other);
    a.op(BPF_LD_ABS_B, 0, 0, 0, 14);
    a.op(BPF_RSH64_IMM, R0, 0, 0, 4);
    a.jump(BPF_JNE_IMM, R0, 4, other);
    a.op(BPF_LD_ABS_W, 0, 0, 0, 14 + 12);
    a.op(BPF_MOV64_REG, R8, R0, 0, 0);
    a.op(BPF_LD_ABS_W, 0, 0, 0, 14 + 16);
    a.op(BPF_XOR64_REG, R8, R0, 0, 0);
    a.op(BPF_LD_ABS_B, 0, 0, 0, 14 + 9);
    a.op(BPF_XOR64_REG, R8, R0, 0, 0);
    a.jump(BPF_JEQ_IMM, R0, 6, "ports");
    a.jump(BPF_JNE_IMM, R0, 17, "hashed");
    a.label("ports");
    // Flags and fragment offset: MF or an offset, a fragment.
    a.op(BPF_LD_ABS_H, 0, 0, 0, 14 + 6);
    a.op(BPF_AND64_IMM, R0, 0, 0, 0x3fff);
    a.jump(BPF_JNE_IMM, R0, 0, "hashed");
    a.op(BPF_LD_ABS_B, 0, 0, 0, 14);
    a.op(BPF_AND64_IMM, R0, 0, 0, 0x0f);
    a.op(BPF_LSH64_IMM, R0, 0, 0, 2);
    a.op(BPF_MOV64_REG, R7, R0, 0, 0);
    // sport << 16 | dport, then sport ^ dport: the same both ways.
    a.op(BPF_LD_IND_W, 0, R7, 0, 14);
    a.op(BPF_MOV64_REG, R1, R0, 0, 0);
    a.op(BPF_RSH64_IMM, R1, 0, 0, 16);
    a.op(BPF_AND64_IMM, R0, 0, 0, 0xffff);
    a.op(BPF_XOR64_REG, R0, R1, 0, 0);
    a.op(BPF_XOR64_REG, R8, R0, 0, 0);
    a.label("hashed");
    a.op(BPF_MUL32_IMM, R8, 0, 0, encap::flow::HASH_MULTIPLIER as i32);
}

/// The TAP program of flow lanes (`--steering flow`): a frame goes to
/// worker `lane % workers`, where its lane is the top four bits of its
/// flow hash ([`encap::flow::lane`]); a frame that is not IPv4 to worker
/// 0. The tunnel side reads the lane back from the source port
/// ([`reuseport_lane_program`]), so that both directions of a flow meet on
/// one worker.
pub fn tap_lane_program(workers: usize) -> Vec<BpfInsn> {
    let mut a = Asm::new();
    a.op(BPF_MOV64_REG, R6, R1, 0, 0);
    emit_flow_hash(&mut a, "other");
    a.op(BPF_RSH32_IMM, R8, 0, 0, 28);
    a.op(BPF_MOD32_IMM, R8, 0, 0, workers.max(1) as i32);
    a.op(BPF_MOV64_REG, R0, R8, 0, 0);
    a.op(BPF_EXIT, 0, 0, 0, 0);
    a.label("other");
    a.op(BPF_MOV64_IMM, R0, 0, 0, 0);
    a.op(BPF_EXIT, 0, 0, 0, 0);
    a.finish()
}

/// The TAP steering program, with flowlets.
///
/// - The sending CPU's worker index goes to r9: the CPU itself when worker
///   `i` runs on CPU `i` (tun takes the result modulo the queues);
///   otherwise `cpus` maps it, and a CPU with no worker is itself.
/// - A frame that is not IPv4 (ARP) goes to that worker.
/// - An IPv4 frame's flow (addresses, protocol, and for TCP and UDP the
///   ports, unless a fragment) is hashed to a slot of the flowlet table
///   `map_fd` (an array of [`FLOWLET_VALUE_LEN`]-byte values). If the slot
///   saw a frame less than `gap_ns` ago the frame goes to the queue the
///   slot holds; otherwise the slot is given the sending CPU's worker. Its
///   time is set to now in both cases.
///
/// So a flow that pauses follows the CPU that produces it (a request and
/// its reply are handled where they are produced, a wake-up stays on one
/// CPU), while a flow that keeps sending stays on one queue, whichever CPUs
/// its frames come from (TCP segments leave from the sender's CPU and from
/// the one that took the ACK): one worker carries it in order.
///
/// Two CPUs updating one slot at once may both win, and then one frame may
/// take the other queue: a race of nanoseconds, at a flow's start or after
/// a pause, that the kernel does not guard against either.
pub fn tap_program(cpus: &[usize], map_fd: i32, gap_ns: u32) -> Vec<BpfInsn> {
    let mut a = Asm::new();
    a.op(BPF_MOV64_REG, R6, R1, 0, 0);
    a.op(BPF_CALL, 0, 0, 0, FUNC_GET_SMP_PROCESSOR_ID);
    a.op(BPF_MOV64_REG, R9, R0, 0, 0);
    if !identity(cpus) {
        for (i, &c) in cpus.iter().enumerate() {
            a.op(BPF_JNE_IMM, R9, 0, 2, c as i32);
            a.op(BPF_MOV64_IMM, R9, 0, 0, i as i32);
            a.jump(BPF_JA, 0, 0, "have_cpu");
        }
    }
    a.label("have_cpu");
    emit_flow_hash(&mut a, "to_cpu");
    a.op(BPF_RSH32_IMM, R8, 0, 0, (32 - FLOWLET_SLOTS_LOG2) as i32);
    a.op(BPF_STX_W, R10, R8, -4, 0);
    a.op(BPF_MOV64_REG, R2, R10, 0, 0);
    a.op(BPF_ADD64_IMM, R2, 0, 0, -4);
    a.op(BPF_LD_IMM64, R1, BPF_PSEUDO_MAP_FD, 0, map_fd);
    a.op(0, 0, 0, 0, 0);
    a.op(BPF_CALL, 0, 0, 0, FUNC_MAP_LOOKUP_ELEM);
    a.jump(BPF_JEQ_IMM, R0, 0, "to_cpu");
    a.op(BPF_MOV64_REG, R7, R0, 0, 0);
    a.op(BPF_CALL, 0, 0, 0, FUNC_KTIME_GET_NS);
    a.op(BPF_LDX_DW, R1, R7, 0, 0);
    a.op(BPF_STX_DW, R7, R0, 0, 0);
    a.op(BPF_SUB64_REG, R0, R1, 0, 0);
    // The gap as a positive immediate (sign-extended: below 2³¹ ns).
    a.jump(
        BPF_JGT_IMM,
        R0,
        gap_ns.min(i32::MAX as u32) as i32,
        "new_flowlet",
    );
    a.op(BPF_LDX_W, R0, R7, 8, 0);
    a.op(BPF_EXIT, 0, 0, 0, 0);
    a.label("new_flowlet");
    a.op(BPF_STX_W, R7, R9, 8, 0);
    a.label("to_cpu");
    a.op(BPF_MOV64_REG, R0, R9, 0, 0);
    a.op(BPF_EXIT, 0, 0, 0, 0);
    a.finish()
}

/// `BPF_PROG_TYPE_SOCKET_FILTER`: the type tun's steering takes.
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `bpf()` commands.
const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_PROG_LOAD: libc::c_int = 5;

/// The leading fields of `union bpf_attr` for `BPF_MAP_CREATE`, up to
/// `map_name`; the kernel zero-extends a shorter attribute.
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`, up to
/// `prog_name`; the kernel zero-extends a shorter attribute.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// `bpf(cmd, attr)`: the new fd it returns.
fn bpf_fd<T>(cmd: libc::c_int, attr: &T) -> io::Result<OwnedFd> {
    // SAFETY: the commands used here (BPF_MAP_CREATE, BPF_PROG_LOAD) read
    // `size_of::<T>()` bytes of `attr`, which lives for the call; the
    // pointers inside it (instructions, license, log buffer) are built by
    // the callers from live buffers of the lengths they give. The kernel
    // copies what it reads (and writes the log into its buffer); it
    // returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall succeeded, so `fd` is a new descriptor that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Loads `insns` as a socket filter program named `name` (at most 15
/// bytes). A program the kernel refuses is loaded again for the verifier's
/// reasons, which end the error.
fn load_socket_filter(insns: &[BpfInsn], name: &[u8]) -> io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name[..n]);
    let mut log = vec![0u8; 64 * 1024];
    let load = |log_level: u32, log: &mut [u8]| {
        bpf_fd(
            BPF_PROG_LOAD,
            &ProgLoadAttr {
                prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
                insn_cnt: insns.len() as u32,
                insns: insns.as_ptr() as u64,
                license: license.as_ptr() as u64,
                log_level,
                log_size: if log_level == 0 { 0 } else { log.len() as u32 },
                log_buf: if log_level == 0 {
                    0
                } else {
                    log.as_mut_ptr() as u64
                },
                kern_version: 0,
                prog_flags: 0,
                prog_name,
            },
        )
    };
    match load(0, &mut log) {
        Ok(prog) => Ok(prog),
        Err(e)
            if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            let again = load(1, &mut log).err().unwrap_or(e);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            Err(io::Error::new(
                again.kind(),
                format!(
                    "the kernel refused the TAP steering program: {again} ({})",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ),
            ))
        }
        Err(e) => Err(e),
    }
}

/// A loaded TAP steering program, flow lanes' ([`tap_lane_program`]) or
/// CPU steering's ([`tap_program`]) with its flowlet table, attached to any
/// number of multi-queue TAPs with [`TapSteering::attach`] (one program and
/// one table for all: flows are told apart by their addresses).
#[derive(Debug)]
pub struct TapSteering {
    prog: OwnedFd,
    /// The program holds its own reference; kept to show what it uses.
    _flowlets: Option<OwnedFd>,
}

impl TapSteering {
    /// Loads the flow lanes program for `workers` (`bpf(BPF_PROG_LOAD)`;
    /// needs CAP_BPF or CAP_SYS_ADMIN).
    pub fn load_lanes(workers: usize) -> io::Result<TapSteering> {
        Ok(TapSteering {
            prog: load_socket_filter(&tap_lane_program(workers), b"twill_lanes")?,
            _flowlets: None,
        })
    }

    /// Loads the CPU steering program for workers on `cpus` with a flowlet
    /// gap of [`FLOWLET_GAP_NS`] (`bpf(BPF_MAP_CREATE)`,
    /// `bpf(BPF_PROG_LOAD)`; needs CAP_BPF or CAP_SYS_ADMIN).
    pub fn load(cpus: &[usize]) -> io::Result<TapSteering> {
        TapSteering::load_with_gap(cpus, FLOWLET_GAP_NS)
    }

    /// [`TapSteering::load`] with another flowlet gap (tests).
    pub fn load_with_gap(cpus: &[usize], gap_ns: u32) -> io::Result<TapSteering> {
        let mut name = [0u8; 16];
        name[..14].copy_from_slice(b"twill_flowlets");
        let flowlets = bpf_fd(
            BPF_MAP_CREATE,
            &MapCreateAttr {
                map_type: BPF_MAP_TYPE_ARRAY,
                key_size: 4,
                value_size: FLOWLET_VALUE_LEN,
                max_entries: 1 << FLOWLET_SLOTS_LOG2,
                map_flags: 0,
                inner_map_fd: 0,
                numa_node: 0,
                map_name: name,
            },
        )
        .map_err(|e| io::Error::new(e.kind(), format!("creating the flowlet table: {e}")))?;
        let insns = tap_program(cpus, flowlets.as_raw_fd(), gap_ns);
        Ok(TapSteering {
            prog: load_socket_filter(&insns, b"twill_steer")?,
            _flowlets: Some(flowlets),
        })
    }

    /// Makes `tap`'s device (any of its queues) choose the queue of the
    /// sending CPU's worker. The device keeps its own reference to the
    /// program.
    pub fn attach(&self, tap: &Tap) -> io::Result<()> {
        let fd: libc::c_int = self.prog.as_raw_fd();
        // SAFETY: TUNSETSTEERINGEBPF reads one int (a BPF program fd)
        // through the pointer, which points at `fd`, alive for the call.
        let rc = unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNSETSTEERINGEBPF, &fd) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "steer_tests.rs"]
mod tests;
