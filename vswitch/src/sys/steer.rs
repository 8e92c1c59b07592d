//! CPU-aligned steering (`twill node --steering cpu`): make a packet land on
//! the worker pinned to the CPU that produced it, so that a wake-up is a
//! switch on the same CPU rather than an IPI to a sleeping one.
//!
//! - The tunnel's `SO_REUSEPORT` group picks its socket with a classic BPF
//!   program (`SO_ATTACH_REUSEPORT_CBPF`) that returns the receiving CPU's
//!   worker index; the index selects a socket in bind order, and one at or
//!   past the group's size falls back to the kernel's hash.
//! - A multi-queue TAP picks its queue with an eBPF socket filter
//!   (`TUNSETSTEERINGEBPF`) that returns the sending CPU's worker index;
//!   tun takes it modulo the number of queues (`tun_ebpf_select_queue`).
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

/// The reuseport program: `ld [SKF_AD_OFF + SKF_AD_CPU]; ret a` when
/// worker `i` runs on CPU `i`; otherwise `jeq #cpu` / `ret #index` per
/// worker and, for a CPU with no worker, an index past the group (hash).
pub fn reuseport_program(cpus: &[usize]) -> Vec<libc::sock_filter> {
    let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let ld_cpu = ins(
        BPF_LD_W_ABS,
        0,
        0,
        (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
    );
    if identity(cpus) {
        return vec![ld_cpu, ins(BPF_RET_A, 0, 0, 0)];
    }
    let mut p = vec![ld_cpu];
    for (i, &c) in cpus.iter().enumerate() {
        p.push(ins(BPF_JEQ_K, 0, 1, c as u32));
        p.push(ins(BPF_RET_K, 0, 0, i as u32));
    }
    p.push(ins(BPF_RET_K, 0, 0, u32::MAX));
    p
}

/// Makes `sock`'s reuseport group choose the socket of the receiving CPU's
/// worker (see [`reuseport_program`]). The group's sockets must have been
/// bound in worker order, and `sock` must be one of them.
pub fn attach_reuseport_cpu(sock: &UdpSocket, cpus: &[usize]) -> io::Result<()> {
    let mut prog = reuseport_program(cpus);
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many CPUs"))?,
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
    let Some(std::net::SocketAddr::V4(mut to)) =
        group.first().map(UdpSocket::local_addr).transpose()?
    else {
        return Ok(true);
    };
    if to.ip().is_unspecified() {
        to.set_ip(std::net::Ipv4Addr::LOCALHOST);
    }
    let mine = sched_getaffinity(Pid::from_raw(0)).map_err(io::Error::from)?;
    let from = UdpSocket::bind(std::net::SocketAddrV4::new(*to.ip(), 0))?;
    let nonce = std::process::id().to_be_bytes();
    let result = (|| {
        for (i, &cpu) in cpus.iter().enumerate() {
            pin_current_thread(cpu)?;
            let probe = [
                b't', b'w', b'p', i as u8, nonce[0], nonce[1], nonce[2], nonce[3],
            ];
            from.send_to(&probe, to)?;
            match wait_probe(group, &probe)? {
                Some(at) if at == i => {}
                Some(at) => {
                    return Err(io::Error::other(format!(
                        "a datagram received on CPU {cpu} went to socket {at} of the \
                         reuseport group on {to}, not to socket {i}: the group is not in \
                         worker order (does another process share the port?)"
                    )))
                }
                None => return Ok(false),
            }
        }
        Ok(true)
    })();
    sched_setaffinity(Pid::from_raw(0), &mine).map_err(io::Error::from)?;
    result
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

/// `BPF_FUNC_get_smp_processor_id`.
const FUNC_GET_SMP_PROCESSOR_ID: i32 = 8;
const BPF_CALL: u8 = 0x05 | 0x80; // BPF_JMP | BPF_CALL
const BPF_EXIT: u8 = 0x05 | 0x90; // BPF_JMP | BPF_EXIT
const BPF_JNE_K: u8 = 0x05 | 0x50; // BPF_JMP | BPF_JNE | BPF_K
const BPF_MOV64_K: u8 = 0x07 | 0xb0; // BPF_ALU64 | BPF_MOV | BPF_K

/// The TAP steering program: `r0 = bpf_get_smp_processor_id(); exit` when
/// worker `i` runs on CPU `i` (tun takes it modulo the queues); otherwise
/// `if r0 == cpu { r0 = index; exit }` per worker, and the CPU itself for
/// one with no worker.
pub fn tap_program(cpus: &[usize]) -> Vec<BpfInsn> {
    let ins = |code, off, imm| BpfInsn {
        code,
        regs: 0,
        off,
        imm,
    };
    let mut p = vec![ins(BPF_CALL, 0, FUNC_GET_SMP_PROCESSOR_ID)];
    if !identity(cpus) {
        for (i, &c) in cpus.iter().enumerate() {
            p.push(ins(BPF_JNE_K, 2, c as i32));
            p.push(ins(BPF_MOV64_K, 0, i as i32));
            p.push(ins(BPF_EXIT, 0, 0));
        }
    }
    p.push(ins(BPF_EXIT, 0, 0));
    p
}

/// `BPF_PROG_TYPE_SOCKET_FILTER`: the type tun's steering takes.
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// `BPF_PROG_LOAD`.
const BPF_PROG_LOAD: libc::c_int = 5;

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

/// A loaded TAP steering program ([`tap_program`]), attached to any
/// number of multi-queue TAPs with [`TapSteering::attach`].
#[derive(Debug)]
pub struct TapSteering {
    prog: OwnedFd,
}

impl TapSteering {
    /// Loads the program for workers on `cpus` (`bpf(BPF_PROG_LOAD)`;
    /// needs CAP_BPF or CAP_SYS_ADMIN).
    pub fn load(cpus: &[usize]) -> io::Result<TapSteering> {
        let insns = tap_program(cpus);
        let license = c"Apache-2.0";
        let mut name = [0u8; 16];
        name[..11].copy_from_slice(b"twill_steer");
        let attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 0,
            log_size: 0,
            log_buf: 0,
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
        };
        // SAFETY: BPF_PROG_LOAD reads `size` bytes of `attr`, which lives
        // for the call; its pointers name `insn_cnt` instructions in
        // `insns` and a NUL-terminated license, both alive for the call.
        // The kernel copies them; it returns a new fd or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                std::ptr::addr_of!(attr),
                std::mem::size_of::<ProgLoadAttr>() as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall succeeded, so `fd` is a new descriptor that
        // nothing else owns.
        let prog = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        Ok(TapSteering { prog })
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
