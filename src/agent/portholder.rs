//! Who holds a UDP port: read from `/proc/net/udp` (this network
//! namespace's sockets, with their owner uid and inode) and `/proc/*/fd`
//! (which processes have that socket open). For an error message when the
//! tunnel port is taken: while the agent was down, any local user could
//! bind it and receive the pods' tunnel traffic, and the agent must say
//! who did rather than only "address in use".

use std::net::{Ipv4Addr, SocketAddrV4};

/// One socket bound to the port: its owner and the processes holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The socket's owner.
    pub uid: u32,
    /// `(pid, command name)` of each process with the socket open (empty
    /// if `/proc` does not show it, e.g. another PID namespace).
    pub processes: Vec<(u32, String)>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uid {}", self.uid)?;
        for (pid, comm) in &self.processes {
            write!(f, ", pid {pid} ({comm})")?;
        }
        Ok(())
    }
}

/// The sockets of this network namespace bound to `addr`'s port on its
/// address or on every address.
pub fn udp_holders(addr: SocketAddrV4) -> Vec<Holder> {
    let Ok(table) = std::fs::read_to_string("/proc/net/udp") else {
        return Vec::new();
    };
    parse_udp_table(&table, addr)
        .into_iter()
        .map(|(uid, inode)| Holder {
            uid,
            processes: processes_with_socket(inode),
        })
        .collect()
}

/// `(uid, inode)` of each line of a `/proc/net/udp` table bound to `addr`.
fn parse_udp_table(table: &str, addr: SocketAddrV4) -> Vec<(u32, u64)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (ip, port) = f.get(1)?.split_once(':')?;
            // The address is the kernel's __be32 printed as a native u32.
            let ip = Ipv4Addr::from(u32::from_be(u32::from_str_radix(ip, 16).ok()?));
            let port = u16::from_str_radix(port, 16).ok()?;
            let bound = port == addr.port() && (ip == *addr.ip() || ip.is_unspecified());
            bound.then(|| Some((f.get(7)?.parse().ok()?, f.get(9)?.parse().ok()?)))?
        })
        .collect()
}

/// The processes with socket `inode` open.
fn processes_with_socket(inode: u64) -> Vec<(u32, String)> {
    let want = format!("socket:[{inode}]");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()));
        if holds {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            out.push((pid, comm.trim().to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernels_udp_table() {
        // Two sockets on 8472 (192.168.100.1 and 0.0.0.0) and one elsewhere,
        // as a little-endian kernel prints them.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 0164A8C0:2118 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 4242 2 0000000000000000 0
  2: 00000000:2118 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4343 2 0000000000000000 0
  3: 0164A8C0:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4444 2 0000000000000000 0
";
        let a = SocketAddrV4::new(Ipv4Addr::new(192, 168, 100, 1), 8472);
        assert_eq!(parse_udp_table(table, a), vec![(1000, 4242), (0, 4343)]);
        let other = SocketAddrV4::new(Ipv4Addr::new(192, 168, 100, 2), 8472);
        assert_eq!(parse_udp_table(table, other), vec![(0, 4343)]);
    }

    #[test]
    fn finds_this_process_holding_a_socket() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(a) = s.local_addr().unwrap() else {
            panic!("v4")
        };
        let h = udp_holders(a);
        assert!(
            h.iter().any(|h| h
                .processes
                .iter()
                .any(|(pid, _)| *pid == std::process::id())),
            "{h:?}"
        );
    }
}
