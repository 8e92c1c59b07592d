//! The underlay UDP sockets that carry VXLAN and flannel-udp traffic:
//! non-blocking, close-on-exec, optionally `SO_REUSEPORT` (one socket per
//! worker on the same port, the kernel spreading flows between them) and
//! with chosen buffer sizes. No forwarding rules here.

use std::io;
use std::net::{SocketAddrV4, UdpSocket};

use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Options of [`bind_udp`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpOptions {
    /// `SO_REUSEPORT`: several sockets (all with it set) share the port.
    pub reuse_port: bool,
    /// Receive buffer in bytes. Set with `SO_RCVBUFFORCE` when the process
    /// may (CAP_NET_ADMIN), so `net.core.rmem_max` does not cap it, else
    /// with `SO_RCVBUF`. The kernel doubles the value for its bookkeeping.
    pub recv_buf: Option<usize>,
    /// Send buffer in bytes, as `recv_buf` (`SO_SNDBUFFORCE`, `SO_SNDBUF`).
    pub send_buf: Option<usize>,
}

/// A non-blocking, close-on-exec IPv4 UDP socket bound to `addr` (port 0
/// picks a free one; see [`local_port`]).
pub fn bind_udp(addr: SocketAddrV4, opts: UdpOptions) -> io::Result<UdpSocket> {
    let ctx = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what} {addr}: {e}"));
    let sock = Socket::new(
        Domain::IPV4,
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )
    .map_err(|e| ctx("socket for", e))?;
    if opts.reuse_port {
        sock.set_reuse_port(true)
            .map_err(|e| ctx("SO_REUSEPORT", e))?;
    }
    if let Some(n) = opts.recv_buf {
        set_buf(&sock, n, Dir::Recv).map_err(|e| ctx(&format!("receive buffer {n}"), e))?;
    }
    if let Some(n) = opts.send_buf {
        set_buf(&sock, n, Dir::Send).map_err(|e| ctx(&format!("send buffer {n}"), e))?;
    }
    sock.bind(&addr.into()).map_err(|e| ctx("bind", e))?;
    Ok(sock.into())
}

/// The port a socket is bound to.
pub fn local_port(sock: &UdpSocket) -> io::Result<u16> {
    Ok(sock.local_addr()?.port())
}

#[derive(Clone, Copy)]
enum Dir {
    Recv,
    Send,
}

fn set_buf(sock: &Socket, n: usize, dir: Dir) -> io::Result<()> {
    let forced = match dir {
        Dir::Recv => setsockopt(sock, sockopt::RcvBufForce, &n),
        Dir::Send => setsockopt(sock, sockopt::SndBufForce, &n),
    };
    match forced {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            let s = SockRef::from(sock);
            match dir {
                Dir::Recv => s.set_recv_buffer_size(n),
                Dir::Send => s.set_send_buffer_size(n),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Most datagrams the kernel takes in one `UDP_SEGMENT` send
/// (`UDP_MAX_SEGMENTS`, 64 before Linux 6.4 and this is what all take).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Most bytes one `UDP_SEGMENT` send may carry (an IPv4 datagram's limit
/// less the IP and UDP headers).
pub const GSO_MAX_BYTES: usize = 65535 - 20 - 8;

/// Sends `buf` to `dst` as datagrams of `seg_len` bytes each (the last may
/// be shorter) in one call, with `UDP_SEGMENT` (UDP GSO, Linux 4.18+): the
/// kernel, or the NIC, cuts the buffer. At most [`GSO_MAX_SEGMENTS`]
/// datagrams and [`GSO_MAX_BYTES`] bytes. A kernel or device that cannot do
/// it answers `EIO` or `EINVAL`; the caller falls back to one send each.
pub fn send_gso(
    sock: &UdpSocket,
    buf: &[u8],
    seg_len: u16,
    dst: SocketAddrV4,
) -> io::Result<usize> {
    send_gso_iov(sock, &[io::IoSlice::new(buf)], seg_len, dst)
}

/// [`send_gso`] of the concatenation of `iov`: the kernel gathers the
/// slices and cuts the whole at every `seg_len` bytes, wherever the slice
/// boundaries fall. So a datagram can be sent as its headers and its
/// payload, each from where it already is (no copy to put them side by
/// side). At most `UIO_MAXIOV` (1024) slices.
pub fn send_gso_iov(
    sock: &UdpSocket,
    iov: &[io::IoSlice<'_>],
    seg_len: u16,
    dst: SocketAddrV4,
) -> io::Result<usize> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrIn};
    use std::os::fd::AsRawFd;
    let cmsg = [ControlMessage::UdpGsoSegments(&seg_len)];
    let addr = SockaddrIn::from(dst);
    sendmsg(sock.as_raw_fd(), iov, &cmsg, MsgFlags::empty(), Some(&addr)).map_err(io::Error::from)
}

/// One datagram to `dst`, gathered from `iov` (e.g. headers and payload
/// kept apart).
pub fn send_iov(sock: &UdpSocket, iov: &[io::IoSlice<'_>], dst: SocketAddrV4) -> io::Result<usize> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrIn};
    use std::os::fd::AsRawFd;
    let none: [ControlMessage<'_>; 0] = [];
    let addr = SockaddrIn::from(dst);
    sendmsg(sock.as_raw_fd(), iov, &none, MsgFlags::empty(), Some(&addr)).map_err(io::Error::from)
}

/// Reusable `sendmmsg` headers (nix's `MultiHeaders`), so that a batch
/// send allocates nothing.
#[derive(Debug)]
pub struct MmsgHeaders(nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrIn>);

// SAFETY: the raw pointers inside `MultiHeaders` point into its own boxed
// storage (the address slots) or are rewritten by every `sendmmsg` call
// before the kernel reads them; nothing else aliases that storage, so
// moving the whole value to another thread (the worker that uses it) is
// sound. It is not `Sync`: only one thread uses it.
unsafe impl Send for MmsgHeaders {}

/// Headers for [`send_many`] batches of up to `n` datagrams.
pub fn mmsg_headers(n: usize) -> MmsgHeaders {
    MmsgHeaders(nix::sys::socket::MultiHeaders::preallocate(n, None))
}

/// Sends datagram `i` (`bufs[i]`) to `dsts[i]` for every `i`, with one
/// `sendmmsg` call. Returns how many the kernel took, in order (it may take
/// fewer than given; an error means it took none).
pub fn send_many(
    sock: &UdpSocket,
    headers: &mut MmsgHeaders,
    bufs: &[[io::IoSlice<'_>; 1]],
    dsts: &[Option<nix::sys::socket::SockaddrIn>],
) -> io::Result<usize> {
    use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    let none: [ControlMessage<'_>; 0] = [];
    let sent = sendmmsg(
        sock.as_raw_fd(),
        &mut headers.0,
        bufs,
        dsts,
        none,
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    Ok(sent.count())
}

/// Turns on `UDP_GRO` (Linux 5.0+): a receive may then return many
/// datagrams of one sender, back to back, with their size in a control
/// message; see [`recv_gro`]. Errors if the kernel does not know it.
pub fn enable_gro(sock: &UdpSocket) -> io::Result<()> {
    setsockopt(sock, sockopt::UdpGroSegment, &true).map_err(io::Error::from)
}

/// One receive on a socket with [`enable_gro`]: the bytes, the sender, and
/// the size of each datagram in `buf` (all but the last have that size;
/// `None` when the kernel returned a single datagram).
/// A truncated receive (`MSG_TRUNC`: `buf` too small) is an
/// `InvalidData` error, never a short datagram.
pub fn recv_gro(
    sock: &UdpSocket,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
) -> io::Result<(usize, SocketAddrV4, Option<usize>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrIn};
    use std::os::fd::AsRawFd;
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn>(sock.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "datagram larger than the receive buffer",
        ));
    }
    let mut seg = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::UdpGroSegments(n) = c {
            seg = usize::try_from(n).ok().filter(|n| *n > 0);
        }
    }
    let from = msg
        .address
        .map(|a| SocketAddrV4::new(a.ip(), a.port()))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "datagram without a sender address",
            )
        })?;
    Ok((msg.bytes, from, seg))
}

/// A control-message buffer big enough for [`recv_gro`].
pub fn gro_cmsg_buffer() -> Vec<u8> {
    nix::cmsg_space!(i32)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCAL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);

    #[test]
    fn binds_non_blocking_and_cloexec() {
        let s = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        let port = local_port(&s).unwrap();
        assert_ne!(port, 0);
        let mut buf = [0u8; 16];
        let e = s.recv_from(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let flags = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn reuse_port_twice_on_the_same_port() {
        let opts = UdpOptions {
            reuse_port: true,
            ..Default::default()
        };
        let a = bind_udp(LOCAL, opts).unwrap();
        let port = local_port(&a).unwrap();
        let at = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let b = bind_udp(at, opts).unwrap();
        assert_eq!(local_port(&b).unwrap(), port);
        let e = bind_udp(at, UdpOptions::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
    }

    #[test]
    fn buffer_sizes_are_applied() {
        let want = 4 << 20;
        let s = bind_udp(
            LOCAL,
            UdpOptions {
                recv_buf: Some(want),
                send_buf: Some(want),
                ..Default::default()
            },
        )
        .unwrap();
        let r = SockRef::from(&s);
        let (rcv, snd) = (r.recv_buffer_size().unwrap(), r.send_buffer_size().unwrap());
        if crate::sys::testutil::is_root() {
            // Forced: the kernel doubles what it was given.
            assert_eq!((rcv, snd), (2 * want, 2 * want));
        } else {
            assert!(rcv > 0 && snd > 0);
        }
    }

    #[test]
    fn gso_send_arrives_as_separate_datagrams() {
        let rx = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, local_port(&rx).unwrap());
        let tx = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        // 3 datagrams of 1000 bytes and one of 500, each filled with its index.
        let mut buf = Vec::new();
        for (i, n) in [1000usize, 1000, 1000, 500].iter().enumerate() {
            buf.extend(std::iter::repeat_n(i as u8, *n));
        }
        assert_eq!(send_gso(&tx, &buf, 1000, to).unwrap(), buf.len());
        rx.set_nonblocking(false).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut got = [0u8; 2000];
        for (i, n) in [1000usize, 1000, 1000, 500].iter().enumerate() {
            let k = rx.recv(&mut got).unwrap();
            assert_eq!(k, *n, "datagram {i}");
            assert!(
                got[..k].iter().all(|b| *b == i as u8),
                "datagram {i} content"
            );
        }
    }

    #[test]
    fn gso_iov_send_is_cut_across_slices() {
        let rx = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, local_port(&rx).unwrap());
        let tx = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        // Datagram i: a 10-byte header "Hi..." and a payload of (i + 1)
        // bytes; the header-payload pairs are the slices, the kernel cuts
        // at every 13 bytes (the last datagram is shorter).
        let hdrs: Vec<[u8; 10]> = (0..4).map(|i| [b'H' + i as u8; 10]).collect();
        let payloads = [vec![1u8; 3], vec![2u8; 3], vec![3u8; 3], vec![4u8; 1]];
        let mut iov = Vec::new();
        for (h, p) in hdrs.iter().zip(&payloads) {
            iov.push(io::IoSlice::new(h));
            iov.push(io::IoSlice::new(p));
        }
        assert_eq!(send_gso_iov(&tx, &iov, 13, to).unwrap(), 3 * 13 + 11);
        assert_eq!(send_iov(&tx, &iov[..2], to).unwrap(), 13);
        rx.set_nonblocking(false).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut got = [0u8; 100];
        for (i, p) in payloads
            .iter()
            .chain(std::iter::once(&payloads[0]))
            .enumerate()
        {
            let k = rx.recv(&mut got).unwrap();
            let h = &hdrs[i % 4];
            assert_eq!(k, h.len() + p.len(), "datagram {i}");
            assert_eq!(&got[..10], h, "header of {i}");
            assert_eq!(&got[10..k], &p[..], "payload of {i}");
        }
    }

    #[test]
    fn gro_receive_returns_segments_and_their_size() {
        let rx = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        enable_gro(&rx).unwrap();
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, local_port(&rx).unwrap());
        let tx = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        let mut buf = Vec::new();
        for (i, n) in [1200usize, 1200, 1200, 700].iter().enumerate() {
            buf.extend(std::iter::repeat_n(i as u8, *n));
        }
        // Sent as one GSO burst, they may come back coalesced (GRO) or one
        // by one: either way every byte arrives, in order, and the reported
        // size cuts them at the right places.
        send_gso(&tx, &buf, 1200, to).unwrap();
        let mut got = Vec::new();
        let mut rbuf = vec![0u8; 65536];
        let mut cmsg = gro_cmsg_buffer();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while got.len() < buf.len() && std::time::Instant::now() < deadline {
            match recv_gro(&rx, &mut rbuf, &mut cmsg) {
                Ok((n, from, seg)) => {
                    assert_eq!(from.port(), local_port(&tx).unwrap());
                    let seg = seg.unwrap_or(n);
                    for d in rbuf[..n].chunks(seg) {
                        let first = d[0];
                        assert!(
                            d.iter().all(|b| *b == first),
                            "a datagram boundary fell inside a chunk"
                        );
                    }
                    got.extend_from_slice(&rbuf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, buf);
    }
}
